//! DNS discovery: endpoints written as `name:port` are resolved (A and AAAA) at start and again
//! when the answer's TTL runs out, clamped to `[min_ttl, max_ttl]`.
//!
//! One task per name and endpoint set, owned by the table in service. A failed lookup keeps the
//! last addresses (logged and counted); a name that never resolved leaves its region without
//! those endpoints, so steering treats the region as unhealthy instead of refusing the config.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

use crate::upstream::endpoints::{DnsSettings, Endpoint, EndpointSet, EndpointSource};
use crate::upstream::error::UpstreamError;

/// A resolver for `settings`: the configured nameservers, or the system's. Its cache is off:
/// each lookup asks the server, so TTL changes are seen when we re-resolve.
pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, UpstreamError> {
    let mut builder = if settings.nameservers.is_empty() {
        Resolver::builder_tokio().map_err(|e| UpstreamError::Resolver(Box::new(e)))?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder
        .build()
        .map_err(|e| UpstreamError::Resolver(Box::new(e)))
}

/// Counters for one cluster's lookups.
#[derive(Debug, Clone)]
pub struct LookupCounters {
    pub ok: IntCounter,
    pub failed: IntCounter,
}

/// Resolve source `index` of `set` until `shutdown`, calling `joined` for endpoints that join.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    resolver: Arc<TokioResolver>,
    set: Arc<EndpointSet>,
    index: usize,
    settings: DnsSettings,
    cluster: String,
    counters: LookupCounters,
    joined: impl Fn(Vec<Arc<Endpoint>>),
    shutdown: CancellationToken,
) {
    let Some(EndpointSource::Dns { name, port, .. }) = set.sources.get(index).cloned() else {
        return;
    };
    // Fully qualified, so no search domains are tried (ndots).
    let fqdn = format!("{name}.");
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = resolver.lookup_ip(fqdn.as_str()) => result,
        };
        let wait = match result {
            Ok(lookup) => {
                counters.ok.inc();
                let addresses: Vec<IpAddr> = lookup.iter().map(|ip| ip.to_canonical()).collect();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                if addresses.is_empty() {
                    tracing::warn!(%cluster, %name, "DNS answer without addresses; keeping the last ones");
                } else {
                    let added = set.set_resolved(index, addresses.clone());
                    if !added.is_empty() {
                        tracing::info!(%cluster, %name, port, ?addresses, "DNS endpoints changed");
                    }
                    joined(added);
                }
                ttl.clamp(settings.min_ttl, settings.max_ttl)
            }
            Err(e) => {
                counters.failed.inc();
                tracing::warn!(%cluster, %name, error = %e, "DNS lookup failed; keeping the last addresses");
                settings.min_ttl
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
