//! Upstream connections: per-cluster pools of keep-alive HTTP/1.1 connections (and, for
//! clusters with an HTTP/2 protocol, multiplexed HTTP/2 ones: `pool_h2.rs`) with Istio's
//! connectionPool limits as circuit breakers.
//!
//! A checkout reuses an idle connection to the endpoint, opens a new one while the cluster is
//! under `max_connections`, or waits — but only while fewer than `max_pending_requests` wait;
//! past that the caller gets an overflow at once, never an unbounded queue. A connection goes
//! back to the pool when its response body has been read to the end. Idle connections are
//! closed by the pool's reaper ([`ClusterPool::reap`], a control task of the server) once
//! they have idled `idle_timeout`, or as soon as the upstream closes them.
//!
//! The limits count across every worker thread (they are atomics and semaphores), but idle
//! connections are kept per worker (`crate::worker`): a request reuses a connection its own
//! thread opened, whose socket that thread's runtime polls, and goes back to the set of the
//! worker that opened it. A worker with none idle while the cluster is at `max_connections`
//! borrows another worker's idle connection to the endpoint rather than wait or fail.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Waker;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::UpstreamProtocol;
use crate::http1::client::{self as h1, Connection};

pub use crate::http1::body::UpstreamBody;
pub use crate::upstream::error::UpstreamError;
use crate::upstream::error::server_name;
use crate::upstream::idle::{IdleConn, IdleConns, ReaperSignal, Watch};
pub use crate::upstream::response_body::{ResponseIdle, UpstreamResponseBody};

/// The limits of one cluster's pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_pending_requests: usize,
    pub max_requests: usize,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle connections kept per endpoint; more are closed as they come back.
    pub max_idle_per_endpoint: usize,
}

/// Which limit refused a request: the value of `x-meridian-overflow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    MaxRequests,
    MaxPendingRequests,
}

impl Overflow {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MaxRequests => "max_requests",
            Self::MaxPendingRequests => "max_pending_requests",
        }
    }
}

/// A connection's place under `max_connections`. Giving it up, however the connection ends
/// (released past the idle cap, discarded, or dropped with a request that was given up),
/// wakes the checkouts waiting for one.
pub(super) struct ConnSlot {
    permit: Option<OwnedSemaphorePermit>,
    released: Arc<Notify>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        // The place is free before anyone is told.
        self.permit.take();
        self.released.notify_waiters();
    }
}

/// One cluster's connections and limits.
pub struct ClusterPool {
    limits: PoolLimits,
    /// TLS to the upstreams, when the cluster asks for it.
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
    connections: Arc<Semaphore>,
    requests: Arc<Semaphore>,
    pending: AtomicUsize,
    /// One set per worker, made on first use (`crate::worker::count` long).
    idle: OnceLock<Box<[Mutex<IdleConns>]>>,
    /// Signalled when a connection goes idle or closes, for waiting checkouts.
    released: Arc<Notify>,
    reaper: Arc<ReaperSignal>,
    /// HTTP/2 connections: `None` for an `http1` cluster.
    h2: Option<H2Conns>,
}

impl std::fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPool")
            .field("limits", &self.limits)
            .finish()
    }
}

/// A connection checked out for one request.
pub struct PooledConn {
    /// Boxed once when the connection opens: requests and answers move a pointer, not the
    /// connection's state.
    pub conn: Box<Connection>,
    /// Whether this connection served a request before (a failure on it may be a stale
    /// keep-alive connection rather than a sick endpoint).
    pub reused: bool,
    slot: ConnSlot,
    watch: Watch,
    uses: u32,
    addr: SocketAddr,
    /// The worker whose idle set the connection goes back to: the one that opened it.
    home: usize,
    pool: Arc<ClusterPool>,
}

/// Held for as long as a request is outstanding against the cluster (`max_requests`).
pub struct RequestPermit(#[allow(dead_code)] OwnedSemaphorePermit);

struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClusterPool {
    pub fn new(limits: PoolLimits) -> Arc<Self> {
        Self::with_tls(limits, None)
    }

    pub fn with_tls(limits: PoolLimits, tls: Option<Arc<crate::tls::UpstreamTls>>) -> Arc<Self> {
        Self::with_protocol(limits, tls, UpstreamProtocol::Http1)
    }

    /// A pool speaking `protocol` to its endpoints (TLS as `tls` says).
    pub fn with_protocol(
        limits: PoolLimits,
        tls: Option<Arc<crate::tls::UpstreamTls>>,
        protocol: UpstreamProtocol,
    ) -> Arc<Self> {
        Arc::new(Self {
            h2: H2Conns::new(protocol, tls.as_deref()),
            tls,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            requests: Arc::new(Semaphore::new(limits.max_requests.max(1))),
            pending: AtomicUsize::new(0),
            idle: OnceLock::new(),
            released: Arc::new(Notify::new()),
            reaper: Arc::new(ReaperSignal::default()),
            limits,
        })
    }

    /// Close idle connections once they have idled `idle_timeout`, and those the upstream
    /// closed (or sent anything unasked) as soon as that happens, so none waits in CLOSE-WAIT
    /// for a checkout that may never come. Sleeps until the oldest idle connection expires or
    /// an idle socket turns readable; a sweep reads each idle connection's time and [`Watch`]
    /// flag under the pool's lock, and probes only the sockets that turned readable. Runs
    /// until `shutdown`; a reload starts another for the pools it keeps.
    pub async fn reap(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = self.sweep();
            let expiry = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // A wake this task may have taken goes to the reaper that follows it.
                    self.reaper.0.notify_one();
                    return;
                }
                () = self.reaper.0.notified() => {}
                () = expiry => {}
            }
        }
    }

    /// Close the idle connections that expired or are no longer open, and say when the next
    /// of those kept expires. The closed ones are dropped after the lock is let go.
    fn sweep(&self) -> Option<Instant> {
        let now = Instant::now();
        let timeout = self.limits.idle_timeout;
        let mut closed = Vec::new();
        let mut next: Option<Instant> = None;
        for set in self.idle_sets() {
            // This set's own next expiry: a set left with nothing must be told to wake the
            // reaper when a connection goes idle in it (an extra wake at worst, when another
            // set keeps the reaper's timer armed).
            let mut set_next: Option<Instant> = None;
            let mut idle = set.lock().unwrap_or_else(|e| e.into_inner());
            idle.by_addr.retain(|_, list| {
                // Round once, in place: the kept keep their order.
                for _ in 0..list.len() {
                    let Some(mut conn) = list.pop_front() else {
                        break;
                    };
                    // Readable is not always closed: TLS may have had a record of its own
                    // to read (a session ticket). A connection still open is watched again.
                    if now.duration_since(conn.since) < timeout
                        && (!conn.watch.fired() || conn.watch.arm(&mut conn.conn))
                    {
                        list.push_back(conn);
                    } else {
                        closed.push(conn);
                    }
                }
                // Oldest first: the front expires first.
                if let Some(first) = list.front() {
                    let at = first.since + timeout;
                    set_next = Some(set_next.map_or(at, |n| n.min(at)));
                }
                // An endpoint with nothing idle is not kept (discovery may have removed it).
                !list.is_empty()
            });
            idle.reaper_unarmed = set_next.is_none();
            if let Some(at) = set_next {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if !closed.is_empty() {
            tracing::debug!(
                closed = closed.len(),
                "idle upstream connections closed (expired or closed by the upstream)"
            );
        }
        next
    }

    /// The per-worker idle sets, made on first use.
    fn idle_sets(&self) -> &[Mutex<IdleConns>] {
        self.idle.get_or_init(|| {
            (0..crate::worker::count())
                .map(|_| Mutex::new(IdleConns::default()))
                .collect()
        })
    }

    /// Worker `worker`'s idle set (wrapping: every index names one).
    fn idle_set(&self, worker: usize) -> &Mutex<IdleConns> {
        let sets = self.idle_sets();
        &sets[worker % sets.len()]
    }

    /// Idle connections kept now, over every worker.
    pub fn idle_connections(&self) -> usize {
        self.idle_sets()
            .iter()
            .map(|set| {
                let idle = set.lock().unwrap_or_else(|e| e.into_inner());
                idle.by_addr.values().map(VecDeque::len).sum::<usize>()
            })
            .sum()
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// The protocol the pool speaks to its endpoints.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.h2
            .as_ref()
            .map_or(UpstreamProtocol::Http1, H2Conns::protocol)
    }

    /// Requests outstanding against the cluster right now.
    pub fn active_requests(&self) -> usize {
        self.limits.max_requests.max(1) - self.requests.available_permits()
    }

    pub fn open_connections(&self) -> usize {
        self.limits.max_connections.max(1) - self.connections.available_permits()
    }

    /// Claim a request slot, or say which limit is full.
    pub fn admit(&self) -> Result<RequestPermit, Overflow> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map(RequestPermit)
            .map_err(|_| Overflow::MaxRequests)
    }

    /// Whether `addr` has stopped taking connections: one TCP connect (no TLS, nothing sent,
    /// closed at once) was refused, failed or did not finish within the connect timeout. It
    /// takes a place under `max_connections` while it lasts; with none free the answer is no,
    /// as it is whenever the endpoint might still be running.
    pub async fn refuses_connections(&self, addr: SocketAddr) -> bool {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            return false;
        };
        let _slot = ConnSlot {
            permit: Some(permit),
            released: self.released.clone(),
        };
        let connect = TcpStream::connect(addr);
        !matches!(
            tokio::time::timeout(self.limits.connect_timeout, connect).await,
            Ok(Ok(_))
        )
    }

    /// An idle, open connection to `addr` from worker `worker`'s set, dropping closed and
    /// expired ones on the way.
    fn take_idle(&self, worker: usize, addr: SocketAddr) -> Option<IdleConn> {
        let mut idle = self
            .idle_set(worker)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let list = idle.by_addr.get_mut(&addr)?;
        while let Some(mut conn) = list.pop_back() {
            // A socket that turned readable while idle is looked at closer (see `sweep`).
            if conn.since.elapsed() < self.limits.idle_timeout
                && (!conn.watch.fired() || conn.conn.is_open(Waker::noop()))
            {
                return Some(conn);
            }
        }
        None
    }

    /// Close one idle connection to another endpoint, to make room under `max_connections`.
    /// Any worker's: the place under `max_connections` is the cluster's.
    fn evict_idle(&self, except: SocketAddr) -> bool {
        for set in self.idle_sets() {
            let mut idle = set.lock().unwrap_or_else(|e| e.into_inner());
            for (addr, list) in idle.by_addr.iter_mut() {
                if *addr != except && list.pop_front().is_some() {
                    return true;
                }
            }
        }
        false
    }

    /// An idle connection to `addr` in the calling worker's set, ready for a request.
    fn reuse_idle(self: &Arc<Self>, addr: SocketAddr) -> Option<PooledConn> {
        let idle = self.take_idle(crate::worker::index(), addr)?;
        Some(self.checked_out(idle, addr))
    }

    /// An idle connection to `addr` from another worker's set: for when the cluster is at
    /// `max_connections`. Its socket stays with the runtime that opened it, which still
    /// polls it; the connection goes back to that worker's set when released.
    fn borrow_idle(self: &Arc<Self>, addr: SocketAddr) -> Option<PooledConn> {
        let own = crate::worker::index() % self.idle_sets().len();
        (0..self.idle_sets().len())
            .filter(|&worker| worker != own)
            .find_map(|worker| self.take_idle(worker, addr))
            .map(|idle| self.checked_out(idle, addr))
    }

    fn checked_out(self: &Arc<Self>, idle: IdleConn, addr: SocketAddr) -> PooledConn {
        PooledConn {
            conn: idle.conn,
            reused: true,
            slot: idle.slot,
            watch: idle.watch,
            uses: idle.uses,
            addr,
            home: idle.home,
            pool: self.clone(),
        }
    }

    /// A connection to `addr` for one request.
    pub async fn checkout(self: &Arc<Self>, addr: SocketAddr) -> Result<PooledConn, UpstreamError> {
        // Fast path, the common case under load: an idle connection is there.
        if let Some(conn) = self.reuse_idle(addr) {
            return Ok(conn);
        }
        // Boxed: connecting (with its timeouts and TLS handshake) is the largest state of a
        // request, and every request would carry room for it otherwise.
        Box::pin(self.wait_or_connect(addr)).await
    }

    /// A new connection, or an idle one once released when `max_connections` are open.
    async fn wait_or_connect(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<PooledConn, UpstreamError> {
        let mut pending: Option<PendingGuard<'_>> = None;
        loop {
            // Registered before looking again, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(conn) = self.reuse_idle(addr) {
                return Ok(conn);
            }
            let permit = match self.connections.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                // At `max_connections`: another worker's idle connection to the endpoint
                // serves without a new one; else close an idle one elsewhere to make room.
                Err(_) => {
                    if let Some(conn) = self.borrow_idle(addr) {
                        return Ok(conn);
                    }
                    if self.evict_idle(addr) {
                        self.connections.clone().try_acquire_owned().ok()
                    } else {
                        None
                    }
                }
            };
            if let Some(permit) = permit {
                return self.connect(addr, permit).await;
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

    async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<PooledConn, UpstreamError> {
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
        let stream = match &self.tls {
            None => h1::Stream::Plain(stream),
            Some(tls) => {
                let name = server_name(tls, addr)?;
                let handshake = tls.connector().connect(name, stream);
                match tokio::time::timeout(after, handshake).await {
                    Err(_) => return Err(UpstreamError::ConnectTimeout { addr, after }),
                    Ok(Err(source)) => return Err(UpstreamError::Tls { addr, source }),
                    Ok(Ok(stream)) => h1::Stream::Tls(Box::new(stream)),
                }
            }
        };
        Ok(PooledConn {
            conn: Box::new(Connection::new(stream)),
            reused: false,
            slot,
            watch: Watch::new(&self.reaper),
            uses: 0,
            addr,
            home: crate::worker::index(),
            pool: self.clone(),
        })
    }
}

impl PooledConn {
    /// Count a request on this connection.
    pub fn start_request(&mut self) {
        self.uses += 1;
    }

    /// Put the connection back for reuse, unless it has served its quota, its last exchange
    /// left it unusable or the upstream already closed it. Expired idle connections and those
    /// past the per-endpoint cap are closed on the way.
    pub fn release(self) {
        let pool = self.pool.clone();
        let limit = pool.limits.max_requests_per_connection;
        let spent = limit > 0 && self.uses >= limit;
        let mut conn = self.conn;
        if spent || pool.limits.max_idle_per_endpoint == 0 || !self.watch.arm(&mut conn) {
            return;
        }
        conn.shrink();
        let now = Instant::now();
        let mut idle = pool
            .idle_set(self.home)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if std::mem::take(&mut idle.reaper_unarmed) {
            pool.reaper.0.notify_one();
        }
        let list = idle.by_addr.entry(self.addr).or_default();
        while list
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= pool.limits.idle_timeout)
        {
            list.pop_front();
        }
        while !list.is_empty() && list.len() >= pool.limits.max_idle_per_endpoint {
            list.pop_front();
        }
        list.push_back(IdleConn {
            conn,
            slot: self.slot,
            watch: self.watch,
            uses: self.uses,
            since: now,
            home: self.home,
        });
        // A waiting checkout may take it. (A connection not kept wakes them as its slot
        // drops.)
        pool.released.notify_waiters();
    }

    /// Close the connection (it failed or its state is unknown); its place is given up.
    pub fn discard(self) {
        drop(self);
    }
}

#[path = "pool_h2.rs"]
mod h2_conns;
pub use h2_conns::{H2Checkout, H2Conns, H2Stream};

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
