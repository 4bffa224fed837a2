//! Lifecycle: bind every socket, start the listeners and the control tasks (outlier detectors,
//! health checks, peer probes, DNS discovery), drain on shutdown.
//!
//! `start` takes a compiled table (so validation always happens before any socket is bound)
//! and returns the bound addresses, which lets tests bind `127.0.0.1:0`. Reloads (see
//! `reload`) swap the table and bind or close listeners through the same [`Server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::ControlError;
use crate::control::reload::ReloadStatus;
use crate::edge::listen::{ActiveListener, ConnectionSetup, accept_loop, bind_listeners};
use crate::http1::framing::FramingLog;
use crate::table::{
    Endpoint, EndpointSet, EndpointSource, ListenerSpec, RoutingTable, TableHandle,
};
use crate::telemetry::metrics::Metrics;
use crate::upstream::outlier::Detector;
use crate::worker::Workers;

/// How long in-flight requests may take to finish after shutdown starts.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared between the admin listener and the lifecycle.
#[derive(Debug, Default)]
pub struct Lifecycle {
    pub draining: AtomicBool,
}

/// What reloads change, behind one lock so reloads never interleave.
pub(crate) struct Serving {
    pub listeners: Vec<ActiveListener>,
    /// Cancels the outlier detectors and health checks of the table in service.
    pub control_tasks: CancellationToken,
    /// The GeoDNS listener, when the table has one.
    pub dns: Option<crate::dns::server::DnsListener>,
    /// Content hash of the config (and the files it names) in service.
    pub hash: String,
    /// Content hash of the last config refused since then: watchers do not refuse it again.
    pub refused: Option<String>,
}

/// A running Meridian: the table in service, its listeners, and everything reload needs.
pub struct Server {
    pub table: TableHandle,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// The config file reloads read; `None` for a table built in code (the demo, tests).
    pub config_path: Option<PathBuf>,
    pub(crate) serving: tokio::sync::Mutex<Serving>,
    pub(crate) status: ArcSwap<ReloadStatus>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// The runtimes proxy listeners are served on, one socket per listener on each.
    pub(crate) workers: Arc<Workers>,
    /// The status page's recent window, filled by the status sampler.
    pub(crate) window: Arc<crate::control::status::StatusWindow>,
}

/// A started Meridian: its bound addresses and the handles to stop it.
pub struct RunningServer {
    pub server: Arc<Server>,
    pub table: TableHandle,
    /// Listener name → bound address, in config order, as started.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    /// Where the GeoDNS listener is bound (UDP and TCP), as started.
    pub dns: Option<SocketAddr>,
    pub lifecycle: Arc<Lifecycle>,
}

impl RunningServer {
    /// The first proxy listener's address.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.listeners.first().map(|(_, a)| *a)
    }

    /// Stop accepting, let in-flight requests finish (up to `drain_timeout`), then return.
    pub async fn shutdown(self, drain_timeout: Duration) {
        self.server.shutdown(drain_timeout).await;
    }
}

impl Server {
    /// Proxy listeners now in service: name → address.
    pub async fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        let serving = self.serving.lock().await;
        serving
            .listeners
            .iter()
            .map(|l| (l.spec.name.clone(), l.addr))
            .collect()
    }

    /// Where the GeoDNS listener now in service is bound.
    pub async fn dns_addr(&self) -> Option<SocketAddr> {
        self.serving.lock().await.dns.as_ref().map(|l| l.addr)
    }

    /// Stop accepting, let in-flight requests finish (up to `drain_timeout`), then return.
    pub async fn shutdown(&self, drain_timeout: Duration) {
        self.lifecycle.draining.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?drain_timeout,
                "drain timeout reached; closing remaining connections"
            );
        }
    }

    /// How many workers serve the proxy listeners.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Serve an already-bound proxy listener (one socket per worker, see
    /// [`Server::bind_listener`]) until the server stops or a reload removes it.
    pub(crate) fn serve_listener(
        &self,
        spec: ListenerSpec,
        sockets: Vec<std::net::TcpListener>,
    ) -> ActiveListener {
        crate::edge::listen::serve_listener(
            &self.table,
            &self.shutdown,
            &self.tracker,
            &self.workers,
            spec,
            sockets,
        )
    }

    /// Bind one socket of `spec` per worker; a failure on any names the listener.
    pub(crate) fn bind_listener(
        &self,
        spec: &ListenerSpec,
    ) -> Result<Vec<std::net::TcpListener>, ControlError> {
        bind_for(spec, &self.workers)
    }

    /// Start the outlier detectors, pool reapers and health checks of `table`; they stop when
    /// `token` does.
    pub(crate) fn spawn_control_tasks(&self, table: &RoutingTable, token: &CancellationToken) {
        spawn_control_tasks(table, token, &self.tracker);
    }
}

/// Bind every listener of `table` and start serving it, without a config file to reload.
pub async fn start(table: RoutingTable) -> Result<RunningServer, ControlError> {
    start_with(table, None).await
}

/// Bind every listener of `table` and start serving it on the calling runtime alone;
/// `config_path` is what reloads read.
pub async fn start_with(
    table: RoutingTable,
    config_path: Option<PathBuf>,
) -> Result<RunningServer, ControlError> {
    start_on(table, config_path, Arc::new(Workers::current())).await
}

fn bind_for(
    spec: &ListenerSpec,
    workers: &Workers,
) -> Result<Vec<std::net::TcpListener>, ControlError> {
    bind_listeners(spec.bind, workers.len()).map_err(|source| ControlError::Bind {
        name: spec.name.clone(),
        addr: spec.bind,
        source,
    })
}

/// Bind every listener of `table` once per worker and serve each socket on its worker; the
/// admin API and the control tasks (health checks, outlier detectors, DNS discovery, pool
/// reapers) run on the calling runtime. `config_path` is what reloads read.
pub async fn start_on(
    table: RoutingTable,
    config_path: Option<PathBuf>,
    workers: Arc<Workers>,
) -> Result<RunningServer, ControlError> {
    let specs = table.listeners.clone();
    let admin_bind = table.admin_bind;
    let metrics = table.metrics.clone();
    metrics.generation.set(table.generation as i64);
    if let Some(epoch) = table.geo.oldest_build_epoch() {
        metrics.geoip_build_epoch.set(epoch as i64);
    }
    let hash = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            crate::control::reload::content_hash(
                &text,
                &crate::control::reload::named_files(&table.config),
            )
        }
        None => String::new(),
    };
    let status = ReloadStatus::initial(table.generation, &hash);

    // Bind everything before serving anything, so a failure leaves nothing half-started.
    let mut bound = Vec::new();
    for spec in specs {
        let sockets = bind_for(&spec, &workers)?;
        bound.push((spec, sockets));
    }
    let dns_sockets = crate::control::geodns::bind(&table)?;
    let admin_listener = match admin_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ControlError::Bind {
                    name: "admin".into(),
                    addr,
                    source,
                })?,
        ),
        None => None,
    };

    let shutdown = CancellationToken::new();
    let control_tasks = shutdown.child_token();
    let server = Arc::new(Server {
        table: Arc::new(ArcSwap::from_pointee(table)),
        lifecycle: Arc::new(Lifecycle::default()),
        metrics,
        config_path,
        serving: tokio::sync::Mutex::new(Serving {
            listeners: Vec::new(),
            dns: None,
            control_tasks: control_tasks.clone(),
            hash,
            refused: None,
        }),
        status: ArcSwap::from_pointee(status),
        shutdown,
        tracker: TaskTracker::new(),
        workers,
        window: Arc::default(),
    });
    server.spawn_control_tasks(&server.table.load(), &control_tasks);
    server.tracker.spawn(crate::control::status::sampler::run(
        server.table.clone(),
        server.window.clone(),
        server.shutdown.clone(),
    ));

    let mut active = Vec::new();
    for (spec, listener) in bound {
        active.push(server.serve_listener(spec, listener));
    }
    let listeners = active
        .iter()
        .map(|l| (l.spec.name.clone(), l.addr))
        .collect();
    let dns = dns_sockets.and_then(|(configured, sockets)| {
        crate::control::geodns::serve(&server, configured, sockets)
    });
    let dns_addr = dns.as_ref().map(|l| l.addr);
    {
        let mut serving = server.serving.lock().await;
        serving.listeners = active;
        serving.dns = dns;
    }

    let admin = match admin_listener {
        Some(listener) => {
            let addr = listener.local_addr().ok();
            tracing::info!(addr = ?addr, "admin listening");
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            let for_admin = server.clone();
            let make_service = move |peer: SocketAddr, _: Option<Arc<FramingLog>>, _| {
                let server = for_admin.clone();
                service_fn(move |req| crate::control::admin::handle(server.clone(), peer, req))
            };
            server.tracker.spawn(accept_loop(
                listener,
                builder,
                Arc::new(make_service),
                server.shutdown.clone(),
                server.tracker.clone(),
                ConnectionSetup::default(),
            ));
            addr
        }
        None => None,
    };
    Ok(RunningServer {
        table: server.table.clone(),
        lifecycle: server.lifecycle.clone(),
        server,
        listeners,
        admin,
        dns: dns_addr,
    })
}

/// One outlier detector and one idle-connection reaper per cluster, one health-check loop per
/// endpoint, and one probe loop per peer.
fn spawn_control_tasks(table: &RoutingTable, shutdown: &CancellationToken, tracker: &TaskTracker) {
    let region_names: Vec<String> = table.regions.iter().map(|r| r.name.clone()).collect();
    let needs_dns = table
        .clusters
        .iter()
        .any(|c| c.regions.iter().any(|s| s.has_dns()));
    let resolver = if needs_dns {
        match crate::upstream::discovery::resolver(&table.dns) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("{e}; endpoints given by name stay empty");
                None
            }
        }
    } else {
        None
    };
    // One probe loop per peer; a reload cancels them with the rest (the state stays).
    if let Some(peers) = &table.peers {
        for peer in &peers.list {
            tracker.spawn(crate::upstream::peers::run(
                peer.clone(),
                peers.policy,
                shutdown.clone(),
            ));
        }
    }
    for cluster in &table.clusters {
        tracker.spawn(cluster.pool.clone().reap(shutdown.clone()));
        let reports = cluster
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(policy), Some(reports)) = (cluster.outlier.clone(), reports) {
            let detector = Detector::new(
                policy,
                cluster.name.clone(),
                cluster.regions.clone(),
                region_names.clone(),
                cluster.stats.clone(),
                tokio::time::Instant::now(),
            );
            tracker.spawn(detector.run(reports, shutdown.clone()));
        }
        // Health checks for the members of now, and for members DNS adds later.
        let check = {
            let (policy, name, stats) = (
                cluster.health_check.clone(),
                cluster.name.clone(),
                cluster.stats.clone(),
            );
            let (tracker, shutdown) = (tracker.clone(), shutdown.clone());
            let tls = cluster.pool.tls.clone();
            move |set: &Arc<EndpointSet>, endpoints: Vec<Arc<Endpoint>>| {
                let Some(policy) = &policy else { return };
                for endpoint in endpoints {
                    tracker.spawn(crate::upstream::health::run(
                        endpoint,
                        set.clone(),
                        policy.clone(),
                        name.clone(),
                        stats.clone(),
                        tls.clone(),
                        shutdown.clone(),
                    ));
                }
            }
        };
        for set in &cluster.regions {
            check(set, set.members().endpoints.clone());
            let Some(resolver) = &resolver else { continue };
            for (index, source) in set.sources.iter().enumerate() {
                if !matches!(source, EndpointSource::Dns { .. }) {
                    continue;
                }
                let counters = crate::upstream::discovery::LookupCounters {
                    ok: table
                        .metrics
                        .dns_lookups
                        .with_label_values(&[cluster.name.as_str(), "ok"]),
                    failed: table
                        .metrics
                        .dns_lookups
                        .with_label_values(&[cluster.name.as_str(), "failed"]),
                };
                let for_joined = (set.clone(), check.clone());
                tracker.spawn(crate::upstream::discovery::run(
                    resolver.clone(),
                    set.clone(),
                    index,
                    table.dns.clone(),
                    cluster.name.clone(),
                    counters,
                    move |joined| (for_joined.1)(&for_joined.0, joined),
                    shutdown.clone(),
                ));
            }
        }
    }
}
