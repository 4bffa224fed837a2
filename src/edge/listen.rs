//! Listeners: bind a socket, run its accept loop, and set each connection up (PROXY protocol,
//! TLS, the framing watcher, the send timeout) before Meridian's own HTTP/1.1 loop or hyper
//! serves it. The lifecycle (`control::lifecycle`) decides which listeners run.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge::h2::{H2Limits, UpstreamBound};
use crate::edge::send_timeout::SendTimeout;
use crate::http1::framing::{FramingLog, Sniffer};
use crate::http1::handoff::HandedOff;
use crate::table::{ListenerSpec, TableHandle};
use crate::telemetry::metrics::HandshakeMetrics;
use crate::tls::client_auth::{ClientVerifier, ForwardedClientCert};
use crate::tls::tickets::TicketKeys;
use crate::worker::Workers;

/// Largest request head hyper will buffer (HTTP/1.1).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most request headers accepted (HTTP/1.1).
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// How often idle HTTP/2 connections are pinged, and how long the answer may take.
pub const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A proxy listener in service.
pub(crate) struct ActiveListener {
    pub spec: ListenerSpec,
    pub addr: SocketAddr,
    /// Cancelled when a reload removes the listener.
    pub stop: CancellationToken,
    /// The certificates a TLS listener serves; reloads replace them in place.
    pub tls: Option<Arc<crate::tls::SniResolver>>,
    /// The session ticket keys a TLS listener issues tickets with; reloads replace them in
    /// place.
    pub tickets: Option<Arc<TicketKeys>>,
    /// The client certificate verifier of a listener with `client_ca`; reloads replace its
    /// CAs in place.
    pub client_ca: Option<Arc<ClientVerifier>>,
}

/// A TLS listener's acceptor and its handshake counters.
pub(crate) struct TlsAccept {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshakes: HandshakeMetrics,
    /// The header that forwards a client's certificate, when the listener has one.
    pub forward_client_cert: Option<http::HeaderName>,
}

/// The client certificate header of a connection, made once after its handshake (the
/// certificate's subject and names are parsed here, not per request).
fn forwarded_client_cert(
    header: &http::HeaderName,
    session: &rustls::ServerConnection,
) -> Arc<ForwardedClientCert> {
    let value = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| crate::tls::client_auth::xfcc_value(der));
    Arc::new(ForwardedClientCert {
        header: header.clone(),
        value,
    })
}

/// Serve an already-bound proxy listener until the server stops or a reload removes it: one
/// accept loop per worker, each on its own socket of the listener (`sockets[i]` on worker
/// `i`, see [`bind_listeners`]). Certificates, ticket keys and the table are shared.
pub(crate) fn serve_listener(
    handle: &TableHandle,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    workers: &Workers,
    spec: ListenerSpec,
    sockets: Vec<std::net::TcpListener>,
) -> ActiveListener {
    let addr = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(spec.bind);
    tracing::info!(listener = %spec.name, %addr, "proxy listening");
    let stop = shutdown.child_token();
    let builder = Arc::new(proxy_builder(&spec));
    let table = handle.clone();
    let resolver = spec.tls.as_ref().map(|_| {
        let keys = handle
            .load()
            .tls_keys
            .get(&spec.name)
            .cloned()
            .unwrap_or_default();
        crate::tls::SniResolver::new(keys)
    });
    // The table's ticketer, shared with any other socket serving this listener from the same
    // table, so a ticket issued on one resumes on another.
    let tickets = handle
        .load()
        .tls_tickets
        .get(&spec.name)
        .cloned()
        .map(TicketKeys::new);
    let client_auth = spec.tls.as_ref().and_then(|t| t.client_auth.as_ref());
    let client_ca = client_auth.and_then(|auth| {
        let loaded = handle.load().mtls.client_cas.get(&spec.name).cloned()?;
        Some(ClientVerifier::new(auth.required, loaded))
    });
    let acceptor = match (&spec.tls, &resolver) {
        (Some(tls), Some(resolver)) => {
            let ticketer = tickets
                .clone()
                .map(|t| t as Arc<dyn rustls::server::ProducesTickets>);
            // Fail closed: a listener that asks for client certificates is never served
            // without its verifier (a compiled table always has one).
            let config = match (client_auth, &client_ca) {
                (Some(_), None) => Err(rustls::Error::General(
                    "no client CA was loaded for the listener".into(),
                )),
                _ => crate::tls::server_config(
                    resolver.clone(),
                    tls.min_version,
                    ticketer,
                    client_ca.clone(),
                ),
            };
            match config {
                Ok(config) => Some(Arc::new(TlsAccept {
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                    handshakes: HandshakeMetrics::new(&handle.load().metrics, &spec.name),
                    forward_client_cert: client_auth.and_then(|a| a.forward_header.clone()),
                })),
                Err(e) => {
                    tracing::error!(listener = %spec.name, error = %e, "TLS setup failed; the listener is not served");
                    let tls = Some(resolver.clone());
                    return ActiveListener {
                        spec,
                        addr,
                        stop,
                        tls,
                        tickets,
                        client_ca,
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
        table: handle.clone(),
        scheme: scheme.clone(),
        redirect_https: redirect,
        header_read_timeout: spec.header_read_timeout,
        h2,
    };
    let make_service = move |peer: SocketAddr,
                             framing: Option<Arc<FramingLog>>,
                             client_cert: Option<Arc<ForwardedClientCert>>| {
        let table = table.clone();
        let scheme = scheme.clone();
        service_fn(move |req| {
            let framing = framing.clone();
            let client_cert = client_cert.clone();
            // Boxed: hyper keeps room for the service future for the whole life of a
            // connection, and the handler's future is several KB; boxed, an idle
            // keep-alive connection holds a pointer instead. Marked upstream-bound, with
            // its answer's body, for the HTTP/2 send deadline (`edge::h2`).
            let table = table.clone();
            let scheme = scheme.clone();
            UpstreamBound(crate::http1::server::boxed(move || async move {
                crate::proxy::handle(
                    table,
                    crate::proxy::RequestContext {
                        peer,
                        scheme,
                        redirect_https: redirect,
                        framing,
                        raw: None,
                        client_cert,
                    },
                    req.map(crate::proxy::ClientBody::Incoming),
                )
                .await
                .map(|answer| answer.into_response().map(UpstreamBound))
            }))
        })
    };
    let proxy_protocol = spec.proxy_protocol.then(|| {
        Arc::new(ProxyProtocol {
            table: handle.clone(),
            timeout: spec.header_read_timeout,
        })
    });
    let setup = ConnectionSetup {
        proxy_protocol,
        tls: acceptor.map(|a| (a, spec.header_read_timeout)),
        sniff: true,
        own_http1: Some(own_http1),
        send_timeout: spec.send_timeout,
        h2: Some(h2),
        accepted: None,
    };
    let make_service = Arc::new(make_service);
    let per_worker = handle.load().metrics.worker_connections.clone();
    for (index, socket) in sockets.into_iter().enumerate() {
        let setup = ConnectionSetup {
            accepted: Some(per_worker.with_label_values(&[index.to_string().as_str()])),
            ..setup.clone()
        };
        let (builder, make_service) = (builder.clone(), make_service.clone());
        let (stop, loops) = (stop.clone(), tracker.clone());
        let name = spec.name.clone();
        // Registered with the worker's own reactor: the socket is polled by that thread only.
        let serve = async move {
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    accept_loop(listener, builder, make_service, stop, loops, setup).await
                }
                Err(e) => {
                    tracing::error!(listener = %name, worker = index, error = %e, "cannot serve the listener on this worker")
                }
            }
        };
        tracker.spawn_on(serve, workers.handle(index));
    }
    ActiveListener {
        spec,
        addr,
        stop,
        tls: resolver,
        tickets,
        client_ca,
    }
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
async fn serve_tls<F, S, B>(
    stream: SendTimeout<tokio::net::TcpStream>,
    peer: SocketAddr,
    tls: Arc<TlsAccept>,
    timeout: Duration,
    framing: Option<Arc<FramingLog>>,
    own_http1: Option<OwnHttp1>,
    h2_limits: Option<H2Limits>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    make_service: Arc<F>,
    shutdown: CancellationToken,
) where
    F: Fn(SocketAddr, Option<Arc<FramingLog>>, Option<Arc<ForwardedClientCert>>) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let tls_stream = match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
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
    let session = tls_stream.get_ref().1;
    tls.handshakes
        .count(session.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
    let h2 = session.alpn_protocol() == Some(b"h2");
    // Only on a listener that forwards client certificates: the others pay nothing.
    let client_cert = tls
        .forward_client_cert
        .as_ref()
        .map(|header| forwarded_client_cert(header, session));
    let service = make_service(peer, framing.clone(), client_cert.clone());
    match (own_http1, h2_limits) {
        (_, Some(limits)) if h2 => {
            let io = TokioIo::new(tls_stream);
            crate::edge::h2::serve(io, service, limits, shutdown, peer).await
        }
        (Some(own), _) if !h2 => {
            own.serve(
                tls_stream,
                peer,
                framing,
                client_cert,
                builder,
                service,
                shutdown,
            )
            .await
        }
        _ => {
            let io = TokioIo::new(Sniffer::new(tls_stream, framing));
            serve_io(&builder, io, service, shutdown, peer).await
        }
    }
}

/// Listen backlog of proxy listeners.
const LISTEN_BACKLOG: u32 = 1024;

/// Bind `count` (at least 1) sockets of a proxy listener on `addr`, one per worker, all with
/// SO_REUSEPORT: the kernel spreads new connections over them, so each worker accepts its
/// own, and a reload that changes a listener's settings can open the new sockets on the same
/// port before closing the old ones. Port 0 picks one port, which the others then share. A
/// port held by another process (without SO_REUSEPORT) fails the first bind. The sockets
/// are non-blocking and not yet registered with any runtime: each worker registers its own.
pub(crate) fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut sockets: Vec<std::net::TcpListener> = Vec::with_capacity(count.max(1));
    let mut at = addr;
    for _ in 0..count.max(1) {
        let socket = bind_one(at)?;
        at = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    Ok(socket.into())
}

/// hyper's HTTP/1.1 server, for the connections Meridian's own loop hands over. HTTP/2
/// connections never come here: they are served by `edge::h2`, which holds them to the
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
#[derive(Default, Clone)]
pub(crate) struct ConnectionSetup {
    pub proxy_protocol: Option<Arc<ProxyProtocol>>,
    pub tls: Option<(Arc<TlsAccept>, Duration)>,
    /// Watch request heads for Content-Length with Transfer-Encoding (see `sniff`).
    pub sniff: bool,
    /// Serve HTTP/1.1 requests without a body with Meridian's own loop (`server_h1`).
    pub own_http1: Option<OwnHttp1>,
    /// A write to the client blocked this long ends the connection (`send_timeout`).
    pub send_timeout: Duration,
    /// HTTP/2 connections go to `edge::h2`, held to these; without, to hyper's own.
    pub h2: Option<H2Limits>,
    /// Counts the connections this accept loop takes (its worker's
    /// `meridian_worker_connections_total`); the admin listener counts none.
    pub accepted: Option<IntCounter>,
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
    /// Serve a connection with Meridian's own HTTP/1.1 loop, which hands it to hyper
    /// (`service`) at the first request it does not take itself.
    #[allow(clippy::too_many_arguments)]
    async fn serve<I, S, B>(
        self,
        io: I,
        peer: SocketAddr,
        framing: Option<Arc<FramingLog>>,
        client_cert: Option<Arc<ForwardedClientCert>>,
        builder: Arc<auto::Builder<TokioExecutor>>,
        service: S,
        shutdown: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let context = crate::http1::server::ConnectionContext {
            peer,
            framing,
            header_read_timeout: self.header_read_timeout,
            head_wait: self.header_read_timeout.min(self.h2.idle_timeout),
            max_head: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
        };
        let OwnHttp1 {
            table,
            scheme,
            redirect_https,
            h2,
            ..
        } = self;
        let handler = move |request, fields| {
            crate::proxy::handle(
                table.clone(),
                crate::proxy::RequestContext {
                    peer,
                    scheme: scheme.clone(),
                    redirect_https,
                    // Requests taken here carry no Transfer-Encoding: nothing to watch.
                    framing: None,
                    raw: Some(fields),
                    client_cert: client_cert.clone(),
                },
                request,
            )
        };
        let stop = shutdown.clone();
        let hand_off = move |handed: HandedOff<I>| async move {
            match handed {
                HandedOff::Http1(io) => serve_io(&builder, io, service, stop, peer).await,
                HandedOff::Http2(io) => {
                    Box::pin(crate::edge::h2::serve(io, service, h2, stop, peer)).await
                }
            }
        };
        crate::http1::server::serve(io, context, handler, hand_off, shutdown).await
    }
}

pub(crate) async fn accept_loop<F, S, B>(
    listener: TcpListener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    make_service: Arc<F>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    setup: ConnectionSetup,
) where
    F: Fn(SocketAddr, Option<Arc<FramingLog>>, Option<Arc<ForwardedClientCert>>) -> S
        + Send
        + Sync
        + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
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
        if let Some(accepted) = &setup.accepted {
            accepted.inc();
        }
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
                match Box::pin(crate::edge::proxy_protocol::read_header(
                    &mut stream,
                    pp.timeout,
                ))
                .await
                {
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
            match tls {
                // Boxed, like the PROXY header read: what only TLS connections hold (the
                // handshake, the TLS session) must not size every connection's task.
                Some((acceptor, timeout)) => {
                    Box::pin(serve_tls(
                        stream,
                        peer,
                        acceptor,
                        timeout,
                        framing,
                        own_http1,
                        h2,
                        builder,
                        make_service,
                        shutdown,
                    ))
                    .await
                }
                None => match own_http1 {
                    Some(own) => {
                        let service = make_service(peer, framing.clone(), None);
                        own.serve(stream, peer, framing, None, builder, service, shutdown)
                            .await
                    }
                    // Boxed: hyper's connection state would otherwise size every connection
                    // task, Meridian's own HTTP/1.1 ones included.
                    None => {
                        let service = make_service(peer, framing.clone(), None);
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
