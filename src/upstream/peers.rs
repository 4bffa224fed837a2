//! Peer probes: the other regions' Meridian instances, each probed with a GET of its readiness
//! URL every `interval` on a task of its own (on the control runtime, beside the health checks),
//! and the per-region verdict steering reads.
//!
//! The verdict lives in a [`PeerState`] that outlives a table: a reload that keeps a peer's
//! region and URL keeps its state, so a reload neither brings back a region that is down nor
//! drops one that is up. A new peer starts *up*: until probes prove it down its region is
//! steered to as before, so starting (or reloading) an instance never blackholes a region that
//! is serving. The cost is that a region already dead when this instance starts takes
//! `unhealthy_threshold` probes to drop out, as if it had just died.
//!
//! Built by `table::compile::peers`; `table::Cluster::health` reads [`PeerView`] (one atomic
//! load per region, and only when peers are configured); `control` spawns [`run`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::steer::RegionId;
use crate::upstream::error::UpstreamError;

/// How peers are probed, compiled from `peer_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Whether a peer's region is up, as this instance's probes last decided. Shared by every table
/// that keeps the peer.
#[derive(Debug)]
pub struct PeerState {
    up: AtomicBool,
}

impl Default for PeerState {
    /// Up until proven down (see the module comment).
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
        }
    }
}

impl PeerState {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Where a peer is probed: a parsed `http(s)://host:port/path`.
#[derive(Debug)]
pub struct PeerTarget {
    /// The URL as configured, for logs and the status page.
    pub url: Arc<str>,
    /// A name or an address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `host:port` as written, for the Host header.
    pub authority: String,
    pub path: String,
    /// For `https` URLs: the system's roots, the host as server name.
    pub tls: Option<Arc<crate::tls::UpstreamTls>>,
}

/// Probe counters by result, resolved once per table.
#[derive(Debug, Clone)]
pub struct ProbeCounters {
    pub up: IntCounter,
    pub status: IntCounter,
    pub error: IntCounter,
    pub timeout: IntCounter,
}

impl ProbeCounters {
    /// The `result` label values, in field order.
    pub const RESULTS: [&str; 4] = ["up", "status", "error", "timeout"];
}

/// One peer, compiled.
#[derive(Debug)]
pub struct Peer {
    pub region: RegionId,
    pub region_name: String,
    pub target: PeerTarget,
    pub state: Arc<PeerState>,
    /// `meridian_peer_up{region}`.
    pub up_gauge: IntGauge,
    /// `meridian_peer_probes_total{region, result}`.
    pub probes: ProbeCounters,
}

/// Which regions have a peer and whether it is up, indexed by `RegionId`.
#[derive(Debug, Default)]
pub struct PeerView {
    by_region: Box<[Option<Arc<PeerState>>]>,
}

impl PeerView {
    pub fn new(regions: usize, peers: &[Arc<Peer>]) -> Self {
        let mut by_region = vec![None; regions];
        for peer in peers {
            if let Some(slot) = by_region.get_mut(peer.region as usize) {
                *slot = Some(peer.state.clone());
            }
        }
        Self {
            by_region: by_region.into_boxed_slice(),
        }
    }

    /// False only for a region whose peer is down; a region without a peer (the local one
    /// among them) is always up here.
    pub fn is_up(&self, region: RegionId) -> bool {
        match self.by_region.get(region as usize) {
            Some(Some(state)) => state.is_up(),
            _ => true,
        }
    }
}

/// A table's peers: the policy, every peer, and the view steering reads.
#[derive(Debug)]
pub struct Peers {
    pub policy: PeerPolicy,
    pub list: Vec<Arc<Peer>>,
    pub view: Arc<PeerView>,
}

/// After a reload: drop the `meridian_peer_up` series of regions that no longer have a peer,
/// so a removed peer does not stay on dashboards as up or down for ever.
pub fn forget_removed(
    metrics: &crate::telemetry::metrics::Metrics,
    old: Option<&Peers>,
    new: Option<&Peers>,
) {
    let Some(old) = old else { return };
    let kept = |region: &str| new.is_some_and(|n| n.list.iter().any(|p| p.region_name == region));
    for peer in old.list.iter().filter(|p| !kept(&p.region_name)) {
        let _ = metrics
            .peer_up
            .remove_label_values(&[peer.region_name.as_str()]);
    }
}

/// What one probe found.
#[derive(Debug)]
pub enum Probe {
    /// A 2xx answer.
    Up(u16),
    /// Any other status (a redirect is not followed: a peer that moved is not ready).
    Status(u16),
    /// No answer: connect, TLS or HTTP failed.
    Error(UpstreamError),
    /// No answer head within the timeout.
    Timeout,
}

impl Probe {
    pub fn from_status(status: u16) -> Self {
        if (200..300).contains(&status) {
            Self::Up(status)
        } else {
            Self::Status(status)
        }
    }

    pub fn passed(&self) -> bool {
        matches!(self, Self::Up(_))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Up(s) | Self::Status(s) => write!(f, "status {s}"),
            Self::Error(e) => write!(f, "{e}"),
            Self::Timeout => f.write_str("no answer within the timeout"),
        }
    }
}

/// Consecutive probe results of one peer: the verdict changes only after
/// `unhealthy_threshold` failures or `healthy_threshold` passes in a row (hysteresis).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    passes: u32,
    failures: u32,
}

impl Streak {
    /// Record one probe; returns the new verdict when it changes.
    pub fn record(&mut self, passed: bool, up: bool, policy: &PeerPolicy) -> Option<bool> {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            (!up && self.passes >= policy.healthy_threshold).then_some(true)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            (up && self.failures >= policy.unhealthy_threshold).then_some(false)
        }
    }
}

/// Probe `peer` until `shutdown`; the first probe goes out at once.
pub async fn run(peer: Arc<Peer>, policy: PeerPolicy, shutdown: CancellationToken) {
    let target = &peer.target;
    run_with(&peer, &policy, || probe_once(target), shutdown).await;
}

/// [`run`] with the probe given (tests script it under paused time). Each probe is bounded by
/// `policy.timeout`, so a peer that accepts and never answers holds the task for that long.
pub async fn run_with<F, Fut>(
    peer: &Peer,
    policy: &PeerPolicy,
    mut probe: F,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Probe>,
{
    let mut streak = Streak::default();
    peer.up_gauge.set(i64::from(peer.state.is_up()));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = tokio::time::timeout(policy.timeout, probe()) => result.unwrap_or(Probe::Timeout),
        };
        let counter = match &result {
            Probe::Up(_) => &peer.probes.up,
            Probe::Status(_) => &peer.probes.status,
            Probe::Error(_) => &peer.probes.error,
            Probe::Timeout => &peer.probes.timeout,
        };
        counter.inc();
        if let Some(up) = streak.record(result.passed(), peer.state.is_up(), policy) {
            peer.state.set(up);
            peer.up_gauge.set(i64::from(up));
            if up {
                tracing::info!(region = %peer.region_name, url = %peer.target.url, "peer up: region back in steering");
            } else {
                tracing::warn!(region = %peer.region_name, url = %peer.target.url, last = %result, "peer down: region dropped from steering");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.interval) => {}
        }
    }
}

/// One probe: connect, GET, read the answer's head. The body is never read and the connection
/// is dropped with the answer, so a peer sending an endless body costs one read buffer.
pub async fn probe_once(target: &PeerTarget) -> Probe {
    match get_status(target).await {
        Ok(status) => Probe::from_status(status),
        Err(e) => Probe::Error(e),
    }
}

fn failed<E>(target: &PeerTarget, what: &'static str) -> impl FnOnce(E) -> UpstreamError + use<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let url = target.url.clone();
    move |source| UpstreamError::PeerProbe {
        url,
        what,
        source: Box::new(source),
    }
}

async fn get_status(target: &PeerTarget) -> Result<u16, UpstreamError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(failed(target, "connect"))?;
    let _ = stream.set_nodelay(true);
    match &target.tls {
        None => exchange(target, stream).await,
        Some(tls) => {
            // `tls.sni` when set, else the URL's host (a name or an address).
            let name = tls.spec.sni.as_ref().unwrap_or(&target.host);
            let name = rustls_pki_types::ServerName::try_from(name.clone())
                .map_err(failed(target, "server name"))?;
            let stream = tls
                .connector()
                .connect(name, stream)
                .await
                .map_err(failed(target, "TLS"))?;
            exchange(target, stream).await
        }
    }
}

async fn exchange<I>(target: &PeerTarget, io: I) -> Result<u16, UpstreamError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(failed(target, "HTTP"))?;
    let request = Request::get(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(header::USER_AGENT, "meridian-peer-probe")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(failed(target, "request"))?;
    // The connection is driven here, not spawned: it ends with this function.
    let mut connection = std::pin::pin!(connection);
    let mut response = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        response = &mut response => response,
        ended = &mut connection => match ended {
            // Closed after the answer (we asked for `connection: close`): the answer, if
            // one came, is waiting; if none came, this is an error at once.
            Ok(()) => response.await,
            Err(e) => return Err(failed(target, "HTTP")(e)),
        },
    };
    response
        .map(|r| r.status().as_u16())
        .map_err(failed(target, "HTTP"))
}

#[cfg(test)]
#[path = "peers_tests.rs"]
mod tests;
