//! The HTTP/2 side of a cluster pool (protocols `http2`, `h2c` and `auto`): multiplexed
//! connections per worker and endpoint, under the pool's `max_connections`. A child of
//! `upstream::pool` (it shares the pool's connection places and wake-ups); the proxy's
//! HTTP/2 tries check streams out of it.
//!
//! A connection takes new streams while it has fewer open than the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS, has not served `max_requests_per_connection` and has
//! not been closed or sent GOAWAY. When every connection to the endpoint is full, another is
//! opened within `max_connections`; past that a stream queues on the least busy one (h2
//! opens it once the peer allows), and with none open the checkout waits like an HTTP/1.1
//! one, within `max_pending_requests`. A connection's driver task runs on the worker that
//! opened it, as an HTTP/1.1 connection's socket does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::{ClusterPool, ConnSlot, PendingGuard};
use crate::config::UpstreamProtocol;
use crate::upstream::error::{UpstreamError, server_name};
use crate::upstream::pool::Overflow;

/// Window sizes offered to upstreams: a stream may have this much unread before the
/// upstream waits (back-pressure reaches it past that).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// h2's allowance for the overhead of small DATA frames held unread (each under 256 bytes
/// costs 256 less its size): room for a connection window of 11-byte messages.
const DATA_FRAME_BUDGET: usize = CONNECTION_WINDOW as usize * 24;

/// A pool's HTTP/2 connections.
pub struct H2Conns {
    protocol: UpstreamProtocol,
    /// The ALPN offered over TLS (`h2`; `h2` and `http/1.1` for `auto`); `None` for h2c.
    /// Each new connection takes the cluster's current TLS config (client certificates are
    /// swapped in place on reload) with this ALPN.
    alpn: Option<Vec<Vec<u8>>>,
    /// One set per worker, made on first use.
    sets: OnceLock<Box<[Mutex<ConnsByAddr>]>>,
    /// Endpoints that chose HTTP/1.1 by ALPN (`auto`): served by the HTTP/1.1 pool.
    h1_endpoints: Mutex<foldhash::HashSet<SocketAddr>>,
}

type ConnsByAddr = foldhash::HashMap<SocketAddr, EndpointConns>;

/// One worker's connections to one endpoint.
#[derive(Default)]
struct EndpointConns {
    list: Vec<Arc<H2Conn>>,
    /// Held while a connection to the endpoint is being opened: checkouts that find every
    /// connection full wait for it rather than each opening one, and then see its stream
    /// limit (the peer's SETTINGS are in before a new connection is used).
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// When the last connect to the endpoint from this worker failed.
    failed_at: Option<Instant>,
}

/// One HTTP/2 connection.
pub struct H2Conn {
    send: SendRequest<Bytes>,
    /// Streams checked out and not yet finished.
    active: AtomicUsize,
    /// Streams ever checked out (`max_requests_per_connection`).
    uses: AtomicU32,
    /// The driver ended, or a GOAWAY or error was seen: no new streams.
    closed: Arc<AtomicBool>,
    opened: Instant,
    /// Milliseconds after `opened` when the last stream ended (`u64::MAX`: streams open, or
    /// none yet ended): how long the connection has idled, for `idle_timeout`.
    idle_since: AtomicU64,
    /// Its place under `max_connections`, given up when the last stream and the set let go.
    _slot: ConnSlot,
}

impl H2Conn {
    fn has_room(&self, per_connection: u32) -> bool {
        !self.closed.load(Ordering::Acquire)
            && (per_connection == 0 || self.uses.load(Ordering::Relaxed) < per_connection)
            && self.active.load(Ordering::Relaxed) < self.send.current_max_send_streams().max(1)
    }

    fn usable(&self, per_connection: u32) -> bool {
        !self.closed.load(Ordering::Acquire)
            && (per_connection == 0 || self.uses.load(Ordering::Relaxed) < per_connection)
    }

    /// No stream open, and none for `idle_timeout`: closed when next looked at (dropping
    /// the last handle ends the connection).
    fn idled_out(&self, idle_timeout: Duration) -> bool {
        let since = self.idle_since.load(Ordering::Relaxed);
        since != u64::MAX
            && self.active.load(Ordering::Relaxed) == 0
            && self
                .opened
                .elapsed()
                .saturating_sub(Duration::from_millis(since))
                >= idle_timeout
    }
}

/// One stream's claim on a connection, held until its response ends.
pub struct H2Stream {
    conn: Arc<H2Conn>,
    /// The connection carried streams before this one.
    pub reused: bool,
}

impl H2Stream {
    fn claim(conn: &Arc<H2Conn>) -> Self {
        conn.active.fetch_add(1, Ordering::Relaxed);
        conn.idle_since.store(u64::MAX, Ordering::Relaxed);
        let before = conn.uses.fetch_add(1, Ordering::Relaxed);
        Self {
            conn: conn.clone(),
            reused: before > 0,
        }
    }

    /// A handle to open the stream with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.conn.send.clone()
    }

    /// The connection refused a stream or failed: it takes no more.
    pub fn close_connection(&self) {
        self.conn.closed.store(true, Ordering::Release);
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        if self.conn.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            let idle =
                u64::try_from(self.conn.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            self.conn.idle_since.store(idle, Ordering::Relaxed);
        }
    }
}

/// What a checkout found for the endpoint.
pub enum H2Checkout {
    Stream(H2Stream),
    /// `auto`, and the endpoint chose HTTP/1.1: use the HTTP/1.1 pool.
    Http1,
}

impl H2Conns {
    pub(super) fn new(
        protocol: UpstreamProtocol,
        tls: Option<&crate::tls::UpstreamTls>,
    ) -> Option<Self> {
        let alpn: Vec<Vec<u8>> = match protocol {
            UpstreamProtocol::Http1 => return None,
            UpstreamProtocol::H2c => Vec::new(),
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        let alpn = match (protocol, tls) {
            (UpstreamProtocol::H2c, _) | (_, None) => None,
            (_, Some(_)) => Some(alpn),
        };
        Some(Self {
            protocol,
            alpn,
            sets: OnceLock::new(),
            h1_endpoints: Mutex::new(foldhash::HashSet::default()),
        })
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    fn sets(&self) -> &[Mutex<ConnsByAddr>] {
        self.sets.get_or_init(|| {
            (0..crate::worker::count())
                .map(|_| Mutex::new(ConnsByAddr::default()))
                .collect()
        })
    }

    fn set(&self, worker: usize) -> &Mutex<ConnsByAddr> {
        let sets = self.sets();
        &sets[worker % sets.len()]
    }

    fn speaks_h1(&self, addr: SocketAddr) -> bool {
        self.protocol == UpstreamProtocol::Auto
            && self
                .h1_endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&addr)
    }

    /// A stream on a connection of worker `worker` to `addr` with room for one, dropping
    /// connections that take no more streams on the way.
    fn take_stream(
        &self,
        worker: usize,
        addr: SocketAddr,
        per_connection: u32,
        idle_timeout: Duration,
    ) -> Option<H2Stream> {
        let mut set = self.set(worker).lock().unwrap_or_else(|e| e.into_inner());
        let list = &mut set.get_mut(&addr)?.list;
        list.retain(|c| c.usable(per_connection) && !c.idled_out(idle_timeout));
        let found = list.iter().find(|c| c.has_room(per_connection))?;
        Some(H2Stream::claim(found))
    }

    /// The least busy usable connection to `addr` on any worker, full or not: for when no
    /// other can be opened (h2 holds the stream until the peer allows it).
    fn least_busy(&self, addr: SocketAddr, per_connection: u32) -> Option<H2Stream> {
        let mut best: Option<Arc<H2Conn>> = None;
        for set in self.sets() {
            let set = set.lock().unwrap_or_else(|e| e.into_inner());
            for conn in set.get(&addr).into_iter().flat_map(|e| e.list.iter()) {
                if conn.usable(per_connection)
                    && best.as_ref().is_none_or(|b| {
                        conn.active.load(Ordering::Relaxed) < b.active.load(Ordering::Relaxed)
                    })
                {
                    best = Some(conn.clone());
                }
            }
        }
        best.map(|c| H2Stream::claim(&c))
    }

    /// Drop the connections that take no more streams, from every worker's set; whether any
    /// was dropped.
    fn purge(&self, per_connection: u32) -> bool {
        let mut dropped = false;
        for set in self.sets() {
            let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
            for endpoint in set.values_mut() {
                let before = endpoint.list.len();
                endpoint.list.retain(|c| c.usable(per_connection));
                dropped |= endpoint.list.len() != before;
            }
        }
        dropped
    }

    /// The lock held while opening a connection to `addr` from worker `worker`.
    fn connecting(&self, worker: usize, addr: SocketAddr) -> Arc<tokio::sync::Mutex<()>> {
        let mut set = self.set(worker).lock().unwrap_or_else(|e| e.into_inner());
        set.entry(addr).or_default().connecting.clone()
    }

    /// Whether a connect to `addr` from worker `worker` failed after `since`.
    fn failed_since(&self, worker: usize, addr: SocketAddr, since: Instant) -> bool {
        let set = self.set(worker).lock().unwrap_or_else(|e| e.into_inner());
        set.get(&addr)
            .and_then(|e| e.failed_at)
            .is_some_and(|at| at >= since)
    }

    fn connect_failed(&self, worker: usize, addr: SocketAddr) {
        let mut set = self.set(worker).lock().unwrap_or_else(|e| e.into_inner());
        set.entry(addr).or_default().failed_at = Some(Instant::now());
    }

    /// Open connections to `addr` (every worker), for tests and the status page.
    pub fn open_to(&self, addr: SocketAddr) -> usize {
        self.sets()
            .iter()
            .map(|set| {
                let set = set.lock().unwrap_or_else(|e| e.into_inner());
                set.get(&addr)
                    .map(|e| {
                        e.list
                            .iter()
                            .filter(|c| !c.closed.load(Ordering::Acquire))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl ClusterPool {
    /// The pool's HTTP/2 connections, for a cluster whose protocol is not `http1`.
    pub fn h2(&self) -> Option<&H2Conns> {
        self.h2.as_ref()
    }

    /// A stream to `addr`: on an open connection with room, a new connection, or (at
    /// `max_connections`) queued on the least busy one.
    pub async fn checkout_h2(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<H2Checkout, UpstreamError> {
        let Some(h2) = self.h2.as_ref() else {
            return Ok(H2Checkout::Http1);
        };
        if h2.speaks_h1(addr) {
            return Ok(H2Checkout::Http1);
        }
        let per_connection = self.limits.max_requests_per_connection;
        if let Some(stream) = h2.take_stream(
            crate::worker::index(),
            addr,
            per_connection,
            self.limits.idle_timeout,
        ) {
            return Ok(H2Checkout::Stream(stream));
        }
        Box::pin(self.h2_wait_or_connect(h2, addr)).await
    }

    async fn h2_wait_or_connect(
        self: &Arc<Self>,
        h2: &H2Conns,
        addr: SocketAddr,
    ) -> Result<H2Checkout, UpstreamError> {
        let per_connection = self.limits.max_requests_per_connection;
        let worker = crate::worker::index();
        let idle_timeout = self.limits.idle_timeout;
        let mut pending: Option<PendingGuard<'_>> = None;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(stream) = h2.take_stream(worker, addr, per_connection, idle_timeout) {
                return Ok(H2Checkout::Stream(stream));
            }
            let permit = match self.connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Closed connections still hold their places until looked at.
                    if h2.purge(per_connection) {
                        continue;
                    }
                    if let Some(stream) = h2.least_busy(addr, per_connection) {
                        return Ok(H2Checkout::Stream(stream));
                    }
                    if self.evict_idle(addr) {
                        self.connections.clone().try_acquire_owned().ok()
                    } else {
                        None
                    }
                }
            };
            if let Some(permit) = permit {
                // One connect at a time per endpoint and worker: the connection another
                // checkout opened meanwhile may have room, and a connect that just failed
                // is not tried again by each request that waited for it (against an
                // endpoint that drops packets, each would wait out connect_timeout in turn).
                let asked = Instant::now();
                let connecting = h2.connecting(worker, addr);
                let _connecting = connecting.lock().await;
                if let Some(stream) = h2.take_stream(worker, addr, per_connection, idle_timeout) {
                    return Ok(H2Checkout::Stream(stream));
                }
                if h2.failed_since(worker, addr, asked) {
                    return Err(UpstreamError::Connect {
                        addr,
                        source: std::io::Error::other(
                            "a connect to this endpoint failed while this request waited for it",
                        ),
                    });
                }
                let connected = self.connect_h2(h2, addr, permit).await;
                if connected.is_err() {
                    h2.connect_failed(worker, addr);
                }
                return connected;
            }
            if pending.is_none() {
                if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limits.max_pending_requests {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                    return Err(UpstreamError::Overflow(Overflow::MaxPendingRequests));
                }
                pending = Some(PendingGuard(&self.pending));
            }
            released.await;
        }
    }

    async fn connect_h2(
        self: &Arc<Self>,
        h2: &H2Conns,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<H2Checkout, UpstreamError> {
        let slot = ConnSlot {
            permit: Some(permit),
            released: self.released.clone(),
        };
        let after = self.limits.connect_timeout;
        let stream = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr, after }),
            Ok(Err(source)) => return Err(UpstreamError::Connect { addr, source }),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let send = match (&h2.alpn, &self.tls) {
            (Some(alpn), Some(tls)) => {
                let name = server_name(tls, addr)?;
                let mut config = (**tls.connector().config()).clone();
                config.alpn_protocols.clone_from(alpn);
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let tls_stream =
                    match tokio::time::timeout(after, connector.connect(name, stream)).await {
                        Err(_) => return Err(UpstreamError::ConnectTimeout { addr, after }),
                        Ok(Err(source)) => return Err(UpstreamError::Tls { addr, source }),
                        Ok(Ok(s)) => s,
                    };
                if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    if h2.protocol == UpstreamProtocol::Auto {
                        h2.h1_endpoints
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(addr);
                        tracing::debug!(%addr, "upstream chose HTTP/1.1 by ALPN");
                        return Ok(H2Checkout::Http1);
                    }
                    return Err(UpstreamError::NoH2 { addr });
                }
                handshake(tls_stream, addr, after).await?
            }
            _ => handshake(stream, addr, after).await?,
        };
        let conn = Arc::new(H2Conn {
            send: send.0,
            active: AtomicUsize::new(0),
            uses: AtomicU32::new(0),
            closed: send.1,
            opened: Instant::now(),
            idle_since: AtomicU64::new(u64::MAX),
            _slot: slot,
        });
        let stream = H2Stream::claim(&conn);
        h2.set(crate::worker::index())
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr)
            .or_default()
            .list
            .push(conn);
        // Checkouts waiting for a place may use the new connection's streams.
        self.released.notify_waiters();
        Ok(H2Checkout::Stream(stream))
    }
}

/// The HTTP/2 handshake on `io`, with its connection driven by a task on this worker; the
/// flag is set when the connection ends.
async fn handshake<T>(
    io: T,
    addr: SocketAddr,
    after: Duration,
) -> Result<(SendRequest<Bytes>, Arc<AtomicBool>), UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Flow control bounds the bytes an upstream may have buffered here; this bounds
        // the frames. gRPC servers send each small message as a DATA frame of its own, and
        // a window of them must fit while the client reads slowly.
        .data_frame_budget(DATA_FRAME_BUDGET)
        .enable_push(false)
        .handshake::<_, Bytes>(io);
    let (send, mut connection) = match tokio::time::timeout(after, handshake).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout { addr, after }),
        Ok(Err(source)) => return Err(UpstreamError::H2Handshake { addr, source }),
        Ok(Ok(pair)) => pair,
    };
    let ping = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
        flag.store(true, Ordering::Release);
    });
    // The peer's SETTINGS come before its answer to a PING: once answered, the stream limit
    // is the peer's, not h2's guess, and checkouts can trust it.
    if let Some(mut ping) = ping {
        match tokio::time::timeout(after, ping.ping(h2::Ping::opaque())).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout { addr, after }),
            Ok(Err(source)) => return Err(UpstreamError::H2Handshake { addr, source }),
            Ok(Ok(_)) => {}
        }
    }
    Ok((send, closed))
}
