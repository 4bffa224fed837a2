//! The GeoDNS listener: one UDP socket and one TCP listener on the same address, served on the
//! control runtime. Each query reads the table in service when it arrives, so a reload is seen
//! by the next query and none is dropped across it.
//!
//! Bounded by construction: UDP queries are answered one at a time in the receive loop (a flood
//! queues in the kernel's socket buffer, not in memory here); TCP connections are capped by a
//! semaphore, and each read and write has the idle deadline, so a stalled peer holds a slot
//! for at most that long.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::rate_limit::{RateLimiter, Verdict, slip_reply};
use super::wire::{Transport, handle};
use crate::table::{RoutingTable, TableHandle};

/// Queries one TCP connection may send before it is closed (RFC 7766 lets servers close).
pub const MAX_QUERIES_PER_CONNECTION: usize = 1000;
/// A UDP datagram larger than this is not a query Meridian answers (it is read cut, so fails
/// to parse and gets FORMERR).
const UDP_READ_BUFFER: usize = 4096;
/// Tries at finding a port free for both UDP and TCP when the config asks for port 0.
const PORT_TRIES: usize = 32;

/// Bound sockets, not yet served.
#[derive(Debug)]
pub struct DnsSockets {
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
    pub addr: SocketAddr,
}

/// A served listener: where, and how to stop it.
#[derive(Debug)]
pub struct DnsListener {
    /// The address as configured (port 0 in tests): a reload that keeps it keeps the sockets.
    pub configured: SocketAddr,
    /// Where it is bound.
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    /// TCP connection slots, resized by a reload that changes `tcp_max_connections`.
    slots: Arc<Semaphore>,
    tcp_limit: usize,
}

impl DnsListener {
    /// Allow `limit` TCP connections from now on: more slots at once, fewer as open
    /// connections close (the surplus is taken out of circulation when it comes free).
    pub fn set_tcp_limit(&mut self, limit: usize, tracker: &TaskTracker) {
        if limit > self.tcp_limit {
            self.slots.add_permits(limit - self.tcp_limit);
        } else if limit < self.tcp_limit {
            let surplus = u32::try_from(self.tcp_limit - limit).unwrap_or(u32::MAX);
            let (slots, stop) = (self.slots.clone(), self.stop.clone());
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    taken = slots.acquire_many_owned(surplus) => {
                        if let Ok(taken) = taken {
                            taken.forget();
                        }
                    }
                }
            });
        }
        self.tcp_limit = limit;
    }
}

/// Bind UDP and TCP on `addr`; port 0 picks one port free for both.
pub fn bind(addr: SocketAddr) -> io::Result<DnsSockets> {
    if addr.port() != 0 {
        return bind_pair(addr);
    }
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no port free for UDP and TCP");
    for _ in 0..PORT_TRIES {
        match bind_pair(addr) {
            Ok(sockets) => return Ok(sockets),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn bind_pair(addr: SocketAddr) -> io::Result<DnsSockets> {
    let udp = std::net::UdpSocket::bind(addr)?;
    let addr = udp.local_addr()?;
    let tcp = std::net::TcpListener::bind(addr)?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok(DnsSockets { udp, tcp, addr })
}

/// Serve `sockets` on the calling runtime until `parent` is cancelled or the listener's own
/// `stop` is.
pub fn serve(
    table: &TableHandle,
    configured: SocketAddr,
    sockets: DnsSockets,
    tracker: &TaskTracker,
    parent: &CancellationToken,
) -> io::Result<DnsListener> {
    let stop = parent.child_token();
    let udp = UdpSocket::from_std(sockets.udp)?;
    let tcp = TcpListener::from_std(sockets.tcp)?;
    tracker.spawn(udp_loop(udp, table.clone(), stop.clone()));
    let tcp_limit = table
        .load()
        .geodns
        .as_ref()
        .map_or(1, |g| g.tcp_max_connections);
    let slots = Arc::new(Semaphore::new(tcp_limit));
    tracker.spawn(tcp_loop(
        tcp,
        slots.clone(),
        table.clone(),
        stop.clone(),
        tracker.clone(),
    ));
    tracing::info!(addr = %sockets.addr, "GeoDNS listening (UDP and TCP)");
    Ok(DnsListener {
        configured,
        addr: sockets.addr,
        stop,
        slots,
        tcp_limit,
    })
}

async fn udp_loop(socket: UdpSocket, table: TableHandle, stop: CancellationToken) {
    let mut buffer = vec![0u8; UDP_READ_BUFFER];
    let mut limiter: Option<RateLimiter> = None;
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buffer) => r,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            // An ICMP error from an earlier send surfaces here; the socket is still good.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let reply = {
            let table = table.load();
            let packet = buffer.get(..len).unwrap_or_default();
            match limit(&mut limiter, &table, peer.ip()) {
                Verdict::Answer => handle(&table, packet, peer.ip(), Transport::Udp),
                refused => {
                    table
                        .metrics
                        .dns_queries
                        .with_label_values(&["", "other", "RATE_LIMITED", ""])
                        .inc();
                    (refused == Verdict::Slip)
                        .then(|| slip_reply(packet))
                        .flatten()
                }
            }
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The rate limiter's verdict on a query from `source` (always `Answer` when the table has no
/// rate limit; a changed limit starts a fresh table).
fn limit(limiter: &mut Option<RateLimiter>, table: &RoutingTable, source: IpAddr) -> Verdict {
    let Some(settings) = table.geodns.as_deref().and_then(|g| g.rate_limit) else {
        *limiter = None;
        return Verdict::Answer;
    };
    let current = match limiter {
        Some(l) if l.settings == settings => l,
        _ => limiter.insert(RateLimiter::new(settings)),
    };
    current.check(source, tokio::time::Instant::now())
}

async fn tcp_loop(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    table: TableHandle,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        // Take a slot before accepting: past the limit, connections wait in the backlog.
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("GeoDNS TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (table, stop) = (table.clone(), stop.clone());
        tracker.spawn(async move {
            connection(stream, table, stop).await;
            drop(slot);
        });
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2) until the peer closes, stalls past the idle
/// deadline, sends [`MAX_QUERIES_PER_CONNECTION`], or the listener stops.
async fn connection(mut stream: TcpStream, table: TableHandle, stop: CancellationToken) {
    let Ok(peer) = stream.peer_addr() else { return };
    let idle = table
        .load()
        .geodns
        .as_ref()
        .map_or(Duration::from_secs(10), |g| g.tcp_idle_timeout);
    for _ in 0..MAX_QUERIES_PER_CONNECTION {
        let mut length = [0u8; 2];
        if !within(idle, &stop, stream.read_exact(&mut length)).await {
            return;
        }
        let length = usize::from(u16::from_be_bytes(length));
        if length == 0 {
            return;
        }
        let mut packet = vec![0u8; length];
        if !within(idle, &stop, stream.read_exact(&mut packet)).await {
            return;
        }
        let reply = handle(&table.load(), &packet, peer.ip(), Transport::Tcp);
        let Some(reply) = reply else { return };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !within(idle, &stop, stream.write_all(&framed)).await {
            return;
        }
    }
}

/// Whether `io` finished without error inside `idle` and before `stop`.
async fn within<T>(
    idle: Duration,
    stop: &CancellationToken,
    io: impl Future<Output = io::Result<T>>,
) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        r = tokio::time::timeout_at(crate::deadline::from_now(idle), io) => matches!(r, Ok(Ok(_))),
    }
}
