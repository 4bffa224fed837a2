//! The table compiler: a parsed config in, a whole [`RoutingTable`] or every problem (with its
//! line) out. Split by domain: regions and geo, listeners, clusters, routes.

mod affinity;
mod clusters;
mod cors;
mod fault;
mod geo_db;
mod geodns;
mod listeners;
mod mirror;
mod mtls;
mod peers;
mod policies;
mod protocol;
mod regions;
mod routes;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use ipnet::IpNet;
use regex::Regex;

use crate::config::{
    ClusterConfig, Config, ConfigError, DurationRange, HealthCheckConfig, ListenerTlsConfig,
    LoadedConfig, OutlierDetectionConfig, Problems, RetryConfig, RetryOnConfig, RouteConfig,
    StatusRangeConfig, SteeringConfig, SteeringMode, YamlPath,
};
use crate::geo::{
    ContinentCode, CountryCode, GeoDb, GeoOverride, GeoPoint, GeoResolver, Location, LocationSource,
};
use crate::steer::{self, MAX_REGIONS, RegionId, RegionOrder, Steering};
use crate::table::retry::{PerTryTimeout, RetryPolicy, default_per_try_timeout};
use crate::table::routes::{
    ClusterId, HeaderMatch, HeaderValueMatch, HostPattern, PathMatch, Route, RouteMetrics,
    RouteSet, RouteTarget,
};
use crate::telemetry::metrics::{Metrics, RequestMetrics};
use crate::tls::tickets::SessionTickets;
use crate::tls::{MinVersion, TlsSpec};
use crate::upstream::ClusterStats;
use crate::upstream::health::HealthPolicy;
use crate::upstream::outlier::{OutlierPolicy, Reporter};
use crate::upstream::pool::{ClusterPool, PoolLimits};

use super::*;

/// What a compile may reuse and where it reports.
pub struct CompileContext<'a> {
    pub generation: u64,
    pub metrics: Arc<Metrics>,
    /// The table in service: endpoint state, pools and the GeoIP database carry over from it
    /// for everything that is unchanged.
    pub previous: Option<&'a RoutingTable>,
    /// Used instead of opening `geo.database` (the demo ships its data in the binary).
    pub database: Option<Arc<GeoDb>>,
}

impl Default for CompileContext<'_> {
    fn default() -> Self {
        Self {
            generation: 1,
            metrics: Arc::new(Metrics::new()),
            previous: None,
            database: None,
        }
    }
}

/// Compile a parsed config into a table, reporting every problem at once with its line.
/// This is exactly what `meridian check` runs.
pub fn compile(
    loaded: &LoadedConfig,
    context: CompileContext<'_>,
) -> Result<RoutingTable, ConfigError> {
    let mut c = Compiler {
        tls_keys: HashMap::new(),
        tls_tickets: HashMap::new(),
        mtls: Default::default(),
        problems: loaded.problems.clone(),
        config: &loaded.config,
        regions: HashMap::new(),
        metrics: context.metrics.clone(),
        previous: context.previous,
    };
    let table = c.table(context.generation, context.database, loaded.config.clone());
    if let Some(region) = &loaded.local_region_from_env {
        c.problems.replace_at(&root().key("local_region"), |p| {
            crate::config::Problem::environment(
                crate::config::LOCAL_REGION_ENV,
                region,
                &format!("{} (it overrides the file's local_region)", p.message),
            )
        });
    }
    if c.problems.is_empty() {
        // `table` is always Some when nothing was reported.
        if let Some(table) = table {
            return Ok(table);
        }
    }
    Err(ConfigError::invalid(
        &loaded.source,
        c.problems.with_lines(&loaded.lines),
    ))
}

/// Read, parse and compile a config file.
pub fn load(path: &Path, context: CompileContext<'_>) -> Result<RoutingTable, ConfigError> {
    compile(&crate::config::load_file(path)?, context)
}

struct Compiler<'a> {
    /// Certificates loaded per TLS listener.
    tls_keys: HashMap<String, Vec<Arc<rustls::sign::CertifiedKey>>>,
    /// Session ticket keys made per TLS listener that issues tickets.
    tls_tickets: HashMap<String, Arc<dyn rustls::server::ProducesTickets>>,
    /// Client CAs and kept pools' client configs loaded for mutual TLS.
    mtls: crate::table::mtls::MutualTls,
    problems: Problems,
    config: &'a Config,
    regions: HashMap<&'a str, RegionId>,
    metrics: Arc<Metrics>,
    previous: Option<&'a RoutingTable>,
}

pub(super) fn root() -> YamlPath {
    YamlPath::root()
}

pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<'a> Compiler<'a> {
    pub(super) fn table(
        &mut self,
        generation: u64,
        database: Option<Arc<GeoDb>>,
        config: Arc<Config>,
    ) -> Option<RoutingTable> {
        let regions = self.regions();
        let local_region = self.local_region();
        let listeners = self.listeners();
        let (admin_bind, admin_token) = self.admin();
        let geo = self.geo(database);
        let (mut clusters, cluster_ids) = self.clusters(regions.len());
        let peers = self.peers(regions.len());
        for cluster in &mut clusters {
            cluster.peers = peers.as_ref().map(|p| p.view.clone());
        }
        let routes = self.routes(&cluster_ids);
        let geodns = self.geodns(&routes, &cluster_ids, &clusters);
        let dns = self.dns();
        let drain_delay = self.drain_duration("drain_delay", &self.config.drain_delay.clone());
        let drain_timeout =
            self.drain_duration("drain_timeout", &self.config.drain_timeout.clone());
        if !self.problems.is_empty() {
            return None;
        }
        let coords: Vec<(f64, f64)> = regions.iter().map(|r| r.coords).collect();
        let region_coords = steer::RegionPoints::new(&coords);
        let local_region = local_region?;
        let mut local_order = RegionOrder::from_slice(&[local_region]);
        if let Some(home) = region_coords.coords(local_region) {
            steer::extend_by_distance(&mut local_order, &region_coords, &home);
        }
        Some(RoutingTable {
            generation,
            regions,
            region_coords,
            local_region,
            local_order,
            clusters,
            routes,
            geo,
            listeners,
            admin_bind,
            admin_token,
            max_region_hops: self.config.max_region_hops,
            dns,
            peers,
            geodns,
            tls_keys: std::mem::take(&mut self.tls_keys),
            tls_tickets: std::mem::take(&mut self.tls_tickets),
            mtls: std::mem::take(&mut self.mtls),
            drain_delay,
            drain_timeout,
            unrouted_metrics: RequestMetrics::new(&self.metrics, "", "", ""),
            metrics: self.metrics.clone(),
            access_log: self.config.access_log.format(),
            geo_lookups: ["override", "geoip", "unknown"]
                .map(|source| self.metrics.geo_lookups.with_label_values(&[source])),
            config,
        })
    }

    /// A duration field: parsed, and inside the field's documented range.
    pub(super) fn duration(
        &mut self,
        at: YamlPath,
        text: &str,
        range: DurationRange,
    ) -> Option<Duration> {
        match humantime::parse_duration(text).map(|d| range.check(text, d)) {
            Ok(Ok(d)) => Some(d),
            Ok(Err(message)) => {
                self.problems.at(at, message);
                None
            }
            Err(e) => {
                self.problems.at(
                    at,
                    format!("`{text}` is not a duration ({e}); write e.g. 500ms, 3s, 1m"),
                );
                None
            }
        }
    }

    pub(super) fn socket_addr(&mut self, at: YamlPath, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problems.at(at, format!("`{text}` is not an ip:port address (e.g. 10.0.1.10:8000 or [2001:db8::1]:8000)"));
                None
            }
        }
    }

    /// A drain duration; zero is allowed (no delay).
    pub(super) fn drain_duration(&mut self, key: &str, text: &str) -> Duration {
        self.duration(root().key(key), text, DurationRange::DELAY)
            .unwrap_or(Duration::ZERO)
    }
}
