//! Listeners and lifecycle: bind every socket, run the accept loops, drain on shutdown.
//!
//! `start` takes a compiled table (so validation always happens before any socket is bound)
//! and returns the bound addresses, which lets tests bind `127.0.0.1:0`. Reloads (see
//! `reload`) swap the table and bind or close listeners through the same [`Server`].

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::reload::ReloadStatus;
use crate::send_timeout::SendTimeout;
use crate::server_h2::{H2Limits, UpstreamBound};
use crate::sniff::{FramingLog, Sniffer};
use crate::table::{
    Endpoint, EndpointSet, EndpointSource, ListenerSpec, RoutingTable, TableHandle,
};
use crate::upstream::outlier::Detector;

/// Largest request head hyper will buffer (HTTP/1.1).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most request headers accepted (HTTP/1.1).
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// How often idle HTTP/2 connections are pinged, and how long the answer may take.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long in-flight requests may take to finish after shutdown starts.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (listener `{name}`): {source} (is another process using it?)")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Shared between the admin listener and the lifecycle.
#[derive(Debug, Default)]
pub struct Lifecycle {
    pub draining: AtomicBool,
}

/// A proxy listener in service.
pub(crate) struct ActiveListener {
    pub spec: ListenerSpec,
    pub addr: SocketAddr,
    /// Cancelled when a reload removes the listener.
    pub stop: CancellationToken,
    /// The certificates a TLS listener serves; reloads replace them in place.
    pub tls: Option<Arc<crate::tls::SniResolver>>,
}

/// What reloads change, behind one lock so reloads never interleave.
pub(crate) struct Serving {
    pub listeners: Vec<ActiveListener>,
    /// Cancels the outlier detectors and health checks of the table in service.
    pub control_tasks: CancellationToken,
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
}

/// A started Meridian: its bound addresses and the handles to stop it.
pub struct RunningServer {
    pub server: Arc<Server>,
    pub table: TableHandle,
    /// Listener name → bound address, in config order, as started.
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
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

    /// Serve an already-bound proxy listener until the server stops or a reload removes it.
    pub(crate) fn serve_listener(
        &self,
        spec: ListenerSpec,
        listener: TcpListener,
    ) -> ActiveListener {
        let addr = listener.local_addr().unwrap_or(spec.bind);
        tracing::info!(listener = %spec.name, %addr, "proxy listening");
        let stop = self.shutdown.child_token();
        let builder = Arc::new(proxy_builder(&spec));
        let table = self.table.clone();
        let resolver = spec.tls.as_ref().map(|_| {
            let keys = self
                .table
                .load()
                .tls_keys
                .get(&spec.name)
                .cloned()
                .unwrap_or_default();
            crate::tls::SniResolver::new(keys)
        });
        let acceptor = match (&spec.tls, &resolver) {
            (Some(tls), Some(resolver)) => {
                match crate::tls::server_config(resolver.clone(), tls.min_version) {
                    Ok(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
                    Err(e) => {
                        tracing::error!(listener = %spec.name, error = %e, "TLS setup failed; the listener is not served");
                        let tls = Some(resolver.clone());
                        return ActiveListener {
                            spec,
                            addr,
                            stop,
                            tls,
                        };
                    }
                }
            }
            _ => None,
        };
        let scheme = if acceptor.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let redirect = spec.redirect_https;
        let h2 = H2Limits {
            send_timeout: spec.send_timeout,
            idle_timeout: spec.idle_timeout,
        };
        let own_http1 = OwnHttp1 {
            table: self.table.clone(),
            scheme: scheme.clone(),
            redirect_https: redirect,
            header_read_timeout: spec.header_read_timeout,
            h2,
        };
        let make_service = move |peer: SocketAddr, framing: Option<Arc<FramingLog>>| {
            let table = table.clone();
            let scheme = scheme.clone();
            service_fn(move |req| {
                let framing = framing.clone();
                // Boxed: hyper keeps room for the service future for the whole life of a
                // connection, and the handler's future is several KB; boxed, an idle
                // keep-alive connection holds a pointer instead. Marked upstream-bound, with
                // its answer's body, for the HTTP/2 send deadline (`server_h2`).
                let table = table.clone();
                let scheme = scheme.clone();
                UpstreamBound(crate::server_h1::boxed(move || async move {
                    crate::proxy::handle(
                        table,
                        peer,
                        scheme,
                        redirect,
                        framing,
                        req.map(crate::proxy::ClientBody::Incoming),
                        None,
                    )
                    .await
                    .map(|answer| answer.into_response().map(UpstreamBound))
                }))
            })
        };
        let proxy_protocol = spec.proxy_protocol.then(|| {
            Arc::new(ProxyProtocol {
                table: self.table.clone(),
                timeout: spec.header_read_timeout,
            })
        });
        self.tracker.spawn(accept_loop(
            listener,
            builder,
            make_service,
            stop.clone(),
            self.tracker.clone(),
            ConnectionSetup {
                proxy_protocol,
                tls: acceptor.map(|a| (a, spec.header_read_timeout)),
                sniff: true,
                own_http1: Some(own_http1),
                send_timeout: spec.send_timeout,
                h2: Some(h2),
            },
        ));
        ActiveListener {
            spec,
            addr,
            stop,
            tls: resolver,
        }
    }

    /// Start the outlier detectors, pool reapers and health checks of `table`; they stop when
    /// `token` does.
    pub(crate) fn spawn_control_tasks(&self, table: &RoutingTable, token: &CancellationToken) {
        spawn_control_tasks(table, token, &self.tracker);
    }
}

/// Bind every listener of `table` and start serving it, without a config file to reload.
pub async fn start(table: RoutingTable) -> Result<RunningServer, StartError> {
    start_with(table, None).await
}

/// Bind every listener of `table` and start serving it; `config_path` is what reloads read.
pub async fn start_with(
    table: RoutingTable,
    config_path: Option<PathBuf>,
) -> Result<RunningServer, StartError> {
    let specs = table.listeners.clone();
    let admin_bind = table.admin_bind;
    let metrics = table.metrics.clone();
    metrics.generation.set(table.generation as i64);
    if let Some(db) = &table.geo.database {
        metrics.geoip_build_epoch.set(db.build_epoch() as i64);
    }
    let hash = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            crate::reload::content_hash(&text, &crate::reload::named_files(&table.config))
        }
        None => String::new(),
    };
    let status = ReloadStatus::initial(table.generation, &hash);

    // Bind everything before serving anything, so a failure leaves nothing half-started.
    let mut bound = Vec::new();
    for spec in specs {
        let listener = bind_listener(spec.bind).map_err(|source| StartError::Bind {
            name: spec.name.clone(),
            addr: spec.bind,
            source,
        })?;
        bound.push((spec, listener));
    }
    let admin_listener = match admin_bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
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
            control_tasks: control_tasks.clone(),
            hash,
            refused: None,
        }),
        status: ArcSwap::from_pointee(status),
        shutdown,
        tracker: TaskTracker::new(),
    });
    server.spawn_control_tasks(&server.table.load(), &control_tasks);

    let mut active = Vec::new();
    for (spec, listener) in bound {
        active.push(server.serve_listener(spec, listener));
    }
    let listeners = active
        .iter()
        .map(|l| (l.spec.name.clone(), l.addr))
        .collect();
    server.serving.lock().await.listeners = active;

    let admin = match admin_listener {
        Some(listener) => {
            let addr = listener.local_addr().ok();
            tracing::info!(addr = ?addr, "admin listening");
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            let for_admin = server.clone();
            let make_service = move |peer: SocketAddr, _: Option<Arc<FramingLog>>| {
                let server = for_admin.clone();
                service_fn(move |req| crate::admin::handle(server.clone(), peer, req))
            };
            server.tracker.spawn(accept_loop(
                listener,
                builder,
                make_service,
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
    })
}

/// Serve one connection until it ends or shutdown asks it to finish.
pub(crate) async fn serve_io<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    shutdown: CancellationToken,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    // With upgrades, so WebSocket connections can be handed over after the 101.
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// A TLS connection: handshake, then HTTP/1.1 (Meridian's own loop, when the listener has
/// one) or HTTP/2 as ALPN chose.
#[allow(clippy::too_many_arguments)]
async fn serve_tls<S, B>(
    stream: SendTimeout<tokio::net::TcpStream>,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    timeout: Duration,
    framing: Option<Arc<FramingLog>>,
    own_http1: Option<OwnHttp1>,
    h2_limits: Option<H2Limits>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    shutdown: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => tls_stream,
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    match (own_http1, h2_limits) {
        (_, Some(limits)) if h2 => {
            let io = TokioIo::new(tls_stream);
            crate::server_h2::serve(io, service, limits, shutdown, peer).await
        }
        (Some(own), _) if !h2 => {
            let context = own.context(peer, framing);
            crate::server_h1::serve(tls_stream, context, builder, service, shutdown).await
        }
        _ => {
            let io = TokioIo::new(Sniffer::new(tls_stream, framing));
            serve_io(&builder, io, service, shutdown, peer).await
        }
    }
}

/// Listen backlog of proxy listeners.
const LISTEN_BACKLOG: u32 = 1024;

/// Bind a proxy listener with SO_REUSEPORT, so a reload that changes a listener's settings can
/// open the new socket on the same port before closing the old one.
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One outlier detector and one idle-connection reaper per cluster, and one health-check loop
/// per endpoint.
fn spawn_control_tasks(table: &RoutingTable, shutdown: &CancellationToken, tracker: &TaskTracker) {
    let region_names: Vec<String> = table.regions.iter().map(|r| r.name.clone()).collect();
    let needs_dns = table
        .clusters
        .iter()
        .any(|c| c.regions.iter().any(|s| s.has_dns()));
    let resolver = if needs_dns {
        match crate::discovery::resolver(&table.dns) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!("{e}; endpoints given by name stay empty");
                None
            }
        }
    } else {
        None
    };
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
                let counters = crate::discovery::LookupCounters {
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
                tracker.spawn(crate::discovery::run(
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

/// hyper's HTTP/1.1 server, for the connections Meridian's own loop hands over. HTTP/2
/// connections never come here: they are served by `server_h2`, which holds them to the
/// listener's send and idle deadlines.
fn proxy_builder(spec: &ListenerSpec) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        // Without a timer hyper silently never fires the header read timeout.
        .timer(TokioTimer::new())
        // hyper adds this to the clock unchecked: hold it to the longest a config can set.
        .header_read_timeout(spec.header_read_timeout.min(crate::config::MAX_DURATION))
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    builder
}

/// Where a listener expects a PROXY protocol header: the table (for the trusted peers) and how
/// long the header may take.
pub(crate) struct ProxyProtocol {
    pub table: TableHandle,
    pub timeout: Duration,
}

/// What happens on a new connection before HTTP: PROXY header, TLS, framing watch.
#[derive(Default)]
pub(crate) struct ConnectionSetup {
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
    pub tls: Option<(tokio_rustls::TlsAcceptor, Duration)>,
    /// Watch request heads for Content-Length with Transfer-Encoding (see `sniff`).
    pub sniff: bool,
    /// Serve HTTP/1.1 requests without a body with Meridian's own loop (`server_h1`).
    pub own_http1: Option<OwnHttp1>,
    /// A write to the client blocked this long ends the connection (`send_timeout`).
    pub send_timeout: Duration,
    /// HTTP/2 connections go to `server_h2`, held to these; without, to hyper's own.
    pub h2: Option<H2Limits>,
}

/// What `server_h1` needs of a proxy listener.
#[derive(Clone)]
pub(crate) struct OwnHttp1 {
    pub table: TableHandle,
    pub scheme: Scheme,
    pub redirect_https: Option<u16>,
    pub header_read_timeout: Duration,
    pub h2: H2Limits,
}

impl OwnHttp1 {
    fn context(
        &self,
        peer: SocketAddr,
        framing: Option<Arc<FramingLog>>,
    ) -> crate::server_h1::ConnectionContext {
        crate::server_h1::ConnectionContext {
            table: self.table.clone(),
            peer,
            scheme: self.scheme.clone(),
            redirect_https: self.redirect_https,
            framing,
            header_read_timeout: self.header_read_timeout,
            head_wait: self.header_read_timeout.min(self.h2.idle_timeout),
            h2: self.h2,
            max_head: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
        }
    }
}

async fn accept_loop<F, S, B>(
    listener: TcpListener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    make_service: F,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    setup: ConnectionSetup,
) where
    F: Fn(SocketAddr, Option<Arc<FramingLog>>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let make_service = Arc::new(make_service);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let make_service = make_service.clone();
        let proxy_protocol = setup.proxy_protocol.clone();
        let tls = setup.tls.clone();
        let sniff = setup.sniff;
        let own_http1 = setup.own_http1.clone();
        let send_timeout = setup.send_timeout;
        let h2 = setup.h2;
        let task = async move {
            let mut stream = stream;
            let mut peer = peer;
            if let Some(pp) = proxy_protocol {
                if !pp.table.load().geo.is_trusted(peer.ip()) {
                    tracing::debug!(client = %peer, "PROXY protocol listener: peer not trusted, closed");
                    return;
                }
                match Box::pin(crate::proxy_protocol::read_header(&mut stream, pp.timeout)).await {
                    Ok(Some(client)) => peer = client,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(client = %peer, error = %e, "PROXY protocol header refused, closed");
                        return;
                    }
                }
            }
            let stream = SendTimeout::new(stream, send_timeout);
            let framing = sniff.then(|| Arc::new(FramingLog::default()));
            let service = make_service(peer, framing.clone());
            match tls {
                // Boxed, like the PROXY header read: what only TLS connections hold (the
                // handshake, the TLS session) must not size every connection's task.
                Some((acceptor, timeout)) => {
                    Box::pin(serve_tls(
                        stream, peer, acceptor, timeout, framing, own_http1, h2, builder, service,
                        shutdown,
                    ))
                    .await
                }
                None => match own_http1 {
                    Some(own) => {
                        let context = own.context(peer, framing);
                        crate::server_h1::serve(stream, context, builder, service, shutdown).await
                    }
                    // Boxed: hyper's connection state would otherwise size every connection
                    // task, Meridian's own HTTP/1.1 ones included.
                    None => {
                        Box::pin(serve_io(
                            &builder,
                            TokioIo::new(Sniffer::new(stream, framing)),
                            service,
                            shutdown,
                            peer,
                        ))
                        .await
                    }
                },
            }
        };
        tracker.spawn(task);
    }
}
