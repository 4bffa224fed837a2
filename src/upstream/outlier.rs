//! Passive outlier detection: eject endpoints that keep failing, Istio/Envoy field meanings.
//!
//! The request path reports each attempt's outcome through a bounded channel with `try_send`
//! (a full channel drops the report and counts it; requests never wait). One detector task per
//! cluster owns every ejection decision and writes them to the endpoints' shared state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ClusterStats;
use crate::deadline;
use crate::upstream::endpoints::{Endpoint, EndpointSet};

/// Reports waiting for the detector before new ones are dropped.
pub const OUTCOME_CHANNEL_CAPACITY: usize = 4096;

/// The detector's settings, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierPolicy {
    pub consecutive_5xx: u32,
    /// 0: off.
    pub consecutive_gateway_errors: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Percent of a region's endpoints that may be ejected at once.
    pub max_ejection_percent: f64,
    /// Percent healthy below which a region sees no new ejections.
    pub min_health_percent: f64,
}

/// What one attempt against an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// Connect failure, reset or timeout: counted as a 503, like Envoy's local-origin errors.
    LocalFailure,
}

impl Outcome {
    fn is_5xx(&self) -> bool {
        match self {
            Self::Status(code) => *code >= 500,
            Self::LocalFailure => true,
        }
    }

    fn is_gateway_error(&self) -> bool {
        matches!(self, Self::Status(502..=504) | Self::LocalFailure)
    }
}

/// One report from the request path.
#[derive(Debug, Clone)]
pub struct Report {
    pub endpoint: Arc<Endpoint>,
    pub outcome: Outcome,
}

/// The request path's end of the channel.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `None` when outlier detection is off: outcomes go nowhere.
    tx: Option<mpsc::Sender<Report>>,
    stats: Arc<ClusterStats>,
}

impl Reporter {
    pub fn channel(stats: Arc<ClusterStats>) -> (Self, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(OUTCOME_CHANNEL_CAPACITY);
        (
            Self {
                tx: Some(tx),
                stats,
            },
            rx,
        )
    }

    pub fn disabled(stats: Arc<ClusterStats>) -> Self {
        Self { tx: None, stats }
    }

    /// Never waits: a full (or closed) channel drops the report and counts it.
    pub fn report(&self, endpoint: &Arc<Endpoint>, outcome: Outcome) {
        let Some(tx) = &self.tx else { return };
        let report = Report {
            endpoint: endpoint.clone(),
            outcome,
        };
        if tx.try_send(report).is_err() {
            ClusterStats::bump(&self.stats.outcomes_dropped);
        }
    }
}

/// The detector for one cluster.
pub struct Detector {
    policy: OutlierPolicy,
    cluster: String,
    /// The cluster's endpoint sets by region (their members may change through DNS), for the
    /// per-region ejection limits.
    regions: Vec<Arc<EndpointSet>>,
    region_names: Vec<String>,
    stats: Arc<ClusterStats>,
    next_sweep: Instant,
}

impl Detector {
    pub fn new(
        policy: OutlierPolicy,
        cluster: String,
        regions: Vec<Arc<EndpointSet>>,
        region_names: Vec<String>,
        stats: Arc<ClusterStats>,
        now: Instant,
    ) -> Self {
        let next_sweep = deadline::after(now, policy.interval);
        Self {
            policy,
            cluster,
            regions,
            region_names,
            stats,
            next_sweep,
        }
    }

    /// Record one outcome; ejects the endpoint when a consecutive-error threshold is reached
    /// and the region's limits allow it. Returns whether it was ejected now.
    pub fn record(&mut self, endpoint: &Arc<Endpoint>, outcome: Outcome, now: Instant) -> bool {
        let state = &endpoint.state;
        if !outcome.is_5xx() {
            state.consecutive_5xx.store(0, Ordering::Relaxed);
            state.consecutive_gateway_errors.store(0, Ordering::Relaxed);
            return false;
        }
        state.failed_since_sweep.store(true, Ordering::Relaxed);
        let fives = state.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let gateway = if outcome.is_gateway_error() {
            state
                .consecutive_gateway_errors
                .fetch_add(1, Ordering::Relaxed)
                + 1
        } else {
            state.consecutive_gateway_errors.store(0, Ordering::Relaxed);
            0
        };
        let tripped = (self.policy.consecutive_5xx > 0 && fives >= self.policy.consecutive_5xx)
            || (self.policy.consecutive_gateway_errors > 0
                && gateway >= self.policy.consecutive_gateway_errors);
        if !tripped || state.ejected.load(Ordering::Relaxed) {
            return false;
        }
        self.try_eject(endpoint, now)
    }

    fn try_eject(&mut self, endpoint: &Arc<Endpoint>, now: Instant) -> bool {
        let region = endpoint.region as usize;
        let region_name = self
            .region_names
            .get(region)
            .map(String::as_str)
            .unwrap_or("?");
        let members = self
            .regions
            .get(region)
            .map(|set| set.members().endpoints.clone())
            .unwrap_or_default();
        let total = members.len().max(1);
        let ejected = members
            .iter()
            .filter(|e| e.state.ejected.load(Ordering::Relaxed))
            .count();
        let healthy = members.iter().filter(|e| e.is_usable()).count();
        // Envoy's rule: at least one endpoint may always be ejected, whatever the percentage,
        // so a region of one or two endpoints can still be taken out of rotation.
        let allowed =
            ((total as f64 * self.policy.max_ejection_percent / 100.0).floor() as usize).max(1);
        let healthy_percent = healthy as f64 * 100.0 / total as f64;
        if ejected >= allowed || healthy_percent < self.policy.min_health_percent {
            ClusterStats::bump(&self.stats.ejections_refused);
            tracing::warn!(
                cluster = %self.cluster, region = %region_name, endpoint = %endpoint.address,
                ejected, allowed, healthy_percent,
                "outlier not ejected: max_ejection_percent or min_health_percent reached"
            );
            return false;
        }
        let state = &endpoint.state;
        let times = state.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = self.policy.base_ejection_time.saturating_mul(times).min(
            self.policy
                .max_ejection_time
                .max(self.policy.base_ejection_time),
        );
        state.set_ejected_until(Some(deadline::after(now, length)));
        state.ejected.store(true, Ordering::Relaxed);
        state.consecutive_5xx.store(0, Ordering::Relaxed);
        state.consecutive_gateway_errors.store(0, Ordering::Relaxed);
        ClusterStats::bump(&self.stats.ejections);
        tracing::warn!(
            cluster = %self.cluster, region = %region_name, endpoint = %endpoint.address,
            ejection = times, duration = ?length, "endpoint ejected"
        );
        true
    }

    /// Return endpoints whose ejection ended; once per interval, lower the multiplier of
    /// endpoints that stayed quiet.
    pub fn sweep(&mut self, now: Instant) {
        for endpoint in self.endpoints() {
            let state = &endpoint.state;
            if state.ejected.load(Ordering::Relaxed)
                && state.ejected_until().is_some_and(|t| t <= now)
            {
                state.ejected.store(false, Ordering::Relaxed);
                state.set_ejected_until(None);
                tracing::info!(cluster = %self.cluster, endpoint = %endpoint.address, "ejection ended");
            }
        }
        if now >= self.next_sweep {
            for endpoint in self.endpoints() {
                let state = &endpoint.state;
                let failed = state.failed_since_sweep.swap(false, Ordering::Relaxed);
                if !failed && !state.ejected.load(Ordering::Relaxed) {
                    let _ =
                        state
                            .ejections
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            });
                }
            }
            self.next_sweep = deadline::after(now, self.policy.interval);
        }
    }

    /// Every endpoint now in the cluster.
    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.regions
            .iter()
            .flat_map(|set| set.members().endpoints.clone())
            .collect()
    }

    /// When the detector next has something to do.
    pub fn next_deadline(&self) -> Instant {
        self.endpoints()
            .iter()
            .filter(|e| e.state.ejected.load(Ordering::Relaxed))
            .filter_map(|e| e.state.ejected_until())
            .fold(self.next_sweep, Instant::min)
    }

    /// The detector task: reports in, ejections out, until `shutdown`.
    pub async fn run(mut self, mut reports: mpsc::Receiver<Report>, shutdown: CancellationToken) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                report = reports.recv() => match report {
                    Some(r) => {
                        self.record(&r.endpoint, r.outcome, Instant::now());
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => self.sweep(Instant::now()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::endpoints::EndpointState;

    fn endpoint(port: u16, region: u8) -> Arc<Endpoint> {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        Arc::new(Endpoint::new(
            address,
            1,
            region,
            Arc::new(EndpointState::default()),
        ))
    }

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: 3,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50.0,
            min_health_percent: 0.0,
        }
    }

    fn detector(policy: OutlierPolicy, regions: Vec<Vec<Arc<Endpoint>>>) -> Detector {
        let names = (0..regions.len()).map(|i| format!("r{i}")).collect();
        let sets = regions
            .into_iter()
            .enumerate()
            .map(|(i, eps)| Arc::new(EndpointSet::fixed(i as u8, eps)))
            .collect();
        Detector::new(
            policy,
            "api".into(),
            sets,
            names,
            Arc::default(),
            Instant::now(),
        )
    }

    fn ejected(e: &Arc<Endpoint>) -> bool {
        e.state.ejected.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_5xx_for_growing_lengths() {
        let a = endpoint(1, 0);
        let b = endpoint(2, 0);
        let mut d = detector(policy(), vec![vec![a.clone(), b.clone()]]);
        let t0 = Instant::now();
        assert!(!d.record(&a, Outcome::Status(503), t0));
        assert!(!d.record(&a, Outcome::Status(500), t0));
        // a success in between resets the count
        d.record(&a, Outcome::Status(200), t0);
        d.record(&a, Outcome::Status(503), t0);
        d.record(&a, Outcome::LocalFailure, t0);
        assert!(!ejected(&a));
        assert!(d.record(&a, Outcome::Status(503), t0));
        assert!(ejected(&a));
        assert_eq!(
            d.next_deadline(),
            t0 + Duration::from_secs(10),
            "the sweep comes first"
        );

        // first ejection: 30s
        tokio::time::advance(Duration::from_secs(29)).await;
        d.sweep(Instant::now());
        assert!(ejected(&a));
        tokio::time::advance(Duration::from_secs(1)).await;
        d.sweep(Instant::now());
        assert!(!ejected(&a), "back after base_ejection_time");

        // second ejection right away: 60s
        let t1 = Instant::now();
        for _ in 0..3 {
            d.record(&a, Outcome::Status(502), t1);
        }
        assert!(ejected(&a));
        assert_eq!(a.state.ejected_until(), Some(t1 + Duration::from_secs(60)));
        assert!(!ejected(&b));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_length_is_capped_and_multiplier_decays() {
        let a = endpoint(1, 0);
        let mut p = policy();
        p.max_ejection_time = Duration::from_secs(45);
        let mut d = detector(p, vec![vec![a.clone()]]);
        a.state.ejections.store(5, Ordering::Relaxed);
        let now = Instant::now();
        for _ in 0..3 {
            d.record(&a, Outcome::Status(500), now);
        }
        assert_eq!(a.state.ejected_until(), Some(now + Duration::from_secs(45)));
        tokio::time::advance(Duration::from_secs(45)).await;
        d.sweep(Instant::now());
        assert!(!ejected(&a));
        // quiet intervals lower the multiplier (6 after this ejection)
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(10)).await;
            d.sweep(Instant::now());
        }
        assert_eq!(a.state.ejections.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_is_per_region_and_allows_one() {
        let r0: Vec<_> = (1..=4).map(|p| endpoint(p, 0)).collect();
        let r1 = vec![endpoint(9, 1)];
        let mut p = policy();
        p.max_ejection_percent = 10.0;
        let mut d = detector(p, vec![r0.clone(), r1.clone()]);
        let now = Instant::now();
        for e in r0.iter().chain(r1.iter()) {
            for _ in 0..3 {
                d.record(e, Outcome::LocalFailure, now);
            }
        }
        // 10% of 4 is 0, but one may always go; the single endpoint of r1 may go too.
        assert_eq!(r0.iter().filter(|e| ejected(e)).count(), 1);
        assert!(ejected(&r1[0]));
        assert!(ClusterStats::get(&d.stats.ejections_refused) >= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_threshold_ignores_plain_500s() {
        let a = endpoint(1, 0);
        let mut p = policy();
        p.consecutive_5xx = 0;
        p.consecutive_gateway_errors = 2;
        let mut d = detector(p, vec![vec![a.clone()]]);
        let now = Instant::now();
        d.record(&a, Outcome::Status(500), now);
        d.record(&a, Outcome::Status(500), now);
        assert!(!ejected(&a));
        d.record(&a, Outcome::Status(504), now);
        assert!(d.record(&a, Outcome::LocalFailure, now));
    }

    #[tokio::test(start_paused = true)]
    async fn min_health_percent_stops_ejections() {
        let eps: Vec<_> = (1..=2).map(|p| endpoint(p, 0)).collect();
        let mut p = policy();
        p.max_ejection_percent = 100.0;
        p.min_health_percent = 60.0;
        let mut d = detector(p, vec![eps.clone()]);
        let now = Instant::now();
        for e in &eps {
            for _ in 0..3 {
                d.record(e, Outcome::Status(503), now);
            }
        }
        // after the first ejection only 50% are healthy, below 60%: the second stays
        assert_eq!(eps.iter().filter(|e| ejected(e)).count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_and_sweep_times_past_the_clock_saturate() {
        let a = endpoint(1, 0);
        let mut p = policy();
        p.interval = Duration::MAX;
        p.base_ejection_time = Duration::from_secs(u64::MAX);
        p.max_ejection_time = Duration::MAX;
        let mut d = detector(p, vec![vec![a.clone()]]);
        // Ejected many times before: base × times is past any clock too.
        a.state.ejections.store(7, Ordering::Relaxed);
        let now = Instant::now();
        for _ in 0..3 {
            d.record(&a, Outcome::Status(503), now);
        }
        assert!(ejected(&a));
        let until = a.state.ejected_until().unwrap();
        assert!(until > now + Duration::from_secs(86_400 * 365), "{until:?}");
        tokio::time::advance(Duration::from_secs(86_400)).await;
        d.sweep(Instant::now());
        assert!(ejected(&a), "still ejected a day later");
        assert!(d.next_deadline() > Instant::now());
    }

    #[tokio::test]
    async fn reporter_never_blocks() {
        let stats = Arc::new(ClusterStats::default());
        let (reporter, _rx) = Reporter::channel(stats.clone());
        let e = endpoint(1, 0);
        for _ in 0..OUTCOME_CHANNEL_CAPACITY + 10 {
            reporter.report(&e, Outcome::Status(200));
        }
        assert_eq!(ClusterStats::get(&stats.outcomes_dropped), 10);
    }
}
