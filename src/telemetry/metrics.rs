//! Prometheus metrics: every name in one place, one registry per process.
//!
//! Handles used on the request path are resolved when a table is compiled (per route, cluster
//! and region; per status code on first use, then cached), never looked up per request. Label
//! sets are bounded by the config: no client address is ever a label.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const UPSTREAM_ATTEMPTS_TOTAL: &str = "meridian_upstream_attempts_total";
pub const RETRIES_TOTAL: &str = "meridian_retries_total";
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "meridian_retry_budget_exhausted_total";
pub const EJECTIONS_TOTAL: &str = "meridian_ejections_total";
pub const EJECTIONS_REFUSED_TOTAL: &str = "meridian_ejections_refused_total";
pub const OUTCOME_REPORTS_DROPPED_TOTAL: &str = "meridian_outcome_reports_dropped_total";
pub const HEALTH_TRANSITIONS_TOTAL: &str = "meridian_health_transitions_total";
pub const ENDPOINT_HEALTHY: &str = "meridian_endpoint_healthy";
pub const OVERFLOWS_TOTAL: &str = "meridian_circuit_breaker_overflows_total";
pub const CONFIG_RELOADS_TOTAL: &str = "meridian_config_reloads_total";
pub const CONFIG_GENERATION: &str = "meridian_config_generation";
pub const GEO_LOOKUPS_TOTAL: &str = "meridian_geo_lookups_total";
pub const GEOIP_BUILD_EPOCH_SECONDS: &str = "meridian_geoip_build_epoch_seconds";
pub const DNS_LOOKUPS_TOTAL: &str = "meridian_dns_lookups_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "meridian_tls_handshakes_total";
pub const WORKER_CONNECTIONS_TOTAL: &str = "meridian_worker_connections_total";
pub const FAULTS_TOTAL: &str = "meridian_faults_total";
pub const MIRROR_REQUESTS_TOTAL: &str = "meridian_mirror_requests_total";
pub const PEER_UP: &str = "meridian_peer_up";
pub const PEER_PROBES_TOTAL: &str = "meridian_peer_probes_total";
pub const DNS_QUERIES_TOTAL: &str = "meridian_dns_queries_total";

/// Request duration buckets, seconds: 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The process's metric families.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub attempts: IntCounterVec,
    pub retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounterVec,
    pub ejections: IntCounterVec,
    pub ejections_refused: IntCounterVec,
    pub reports_dropped: IntCounterVec,
    pub health_transitions: IntCounterVec,
    pub endpoint_healthy: IntGaugeVec,
    pub overflows: IntCounterVec,
    pub reloads: IntCounterVec,
    pub generation: IntGauge,
    pub geo_lookups: IntCounterVec,
    pub geoip_build_epoch: IntGauge,
    pub dns_lookups: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
    pub worker_connections: IntCounterVec,
    pub faults: IntCounterVec,
    pub mirror_requests: IntCounterVec,
    pub peer_up: IntGaugeVec,
    pub peer_probes: IntCounterVec,
    /// GeoDNS queries; labels bounded by the config (zone "" outside the zones, type "other"
    /// past A, AAAA, SOA, NS and ANY).
    pub dns_queries: IntCounterVec,
    /// Requests by (client country, serving region), for the status page.
    pub landing: super::landing::Landing,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    // The names and label sets are constants checked by the unit test below.
    unreachable!("metric {name} is malformed: {e}")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let request_labels = ["route", "cluster", "region", "code"];
        let requests = counter(
            &registry,
            HTTP_REQUESTS_TOTAL,
            "HTTP requests answered.",
            &request_labels,
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                HTTP_REQUEST_DURATION_SECONDS,
                "Time from request to response head, seconds.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &request_labels,
        )
        .unwrap_or_else(|e| unreachable_metric(HTTP_REQUEST_DURATION_SECONDS, e));
        let _ = registry.register(Box::new(duration.clone()));
        let endpoint_healthy = IntGaugeVec::new(
            Opts::new(
                ENDPOINT_HEALTHY,
                "1 when the endpoint takes traffic (healthy, not ejected, weight > 0).",
            ),
            &["cluster", "region", "endpoint"],
        )
        .unwrap_or_else(|e| unreachable_metric(ENDPOINT_HEALTHY, e));
        let _ = registry.register(Box::new(endpoint_healthy.clone()));
        let generation = IntGauge::new(
            CONFIG_GENERATION,
            "Generation of the routing table in service.",
        )
        .unwrap_or_else(|e| unreachable_metric(CONFIG_GENERATION, e));
        let _ = registry.register(Box::new(generation.clone()));
        let geoip_build_epoch = IntGauge::new(
            GEOIP_BUILD_EPOCH_SECONDS,
            "Build time of the GeoIP database in use (Unix seconds).",
        )
        .unwrap_or_else(|e| unreachable_metric(GEOIP_BUILD_EPOCH_SECONDS, e));
        let _ = registry.register(Box::new(geoip_build_epoch.clone()));
        let peer_up = IntGaugeVec::new(
            Opts::new(
                PEER_UP,
                "1 while the region's peer Meridian answers its probes; 0: the region is out of steering.",
            ),
            &["region"],
        )
        .unwrap_or_else(|e| unreachable_metric(PEER_UP, e));
        let _ = registry.register(Box::new(peer_up.clone()));
        Self {
            requests,
            duration,
            attempts: counter(
                &registry,
                UPSTREAM_ATTEMPTS_TOTAL,
                "Tries sent upstream, by outcome.",
                &["cluster", "outcome"],
            ),
            retries: counter(&registry, RETRIES_TOTAL, "Retries sent.", &["cluster"]),
            retry_budget_exhausted: counter(
                &registry,
                RETRY_BUDGET_EXHAUSTED_TOTAL,
                "Retries refused by the retry budget.",
                &["cluster"],
            ),
            ejections: counter(
                &registry,
                EJECTIONS_TOTAL,
                "Endpoints ejected by outlier detection.",
                &["cluster"],
            ),
            ejections_refused: counter(
                &registry,
                EJECTIONS_REFUSED_TOTAL,
                "Ejections not made because of max_ejection_percent or min_health_percent.",
                &["cluster"],
            ),
            reports_dropped: counter(
                &registry,
                OUTCOME_REPORTS_DROPPED_TOTAL,
                "Outcome reports dropped because the detector was behind.",
                &["cluster"],
            ),
            health_transitions: counter(
                &registry,
                HEALTH_TRANSITIONS_TOTAL,
                "Health check verdict changes.",
                &["cluster"],
            ),
            endpoint_healthy,
            overflows: counter(
                &registry,
                OVERFLOWS_TOTAL,
                "Requests refused by a circuit breaker.",
                &["cluster", "limit"],
            ),
            reloads: counter(
                &registry,
                CONFIG_RELOADS_TOTAL,
                "Config reloads by result and by what asked for them.",
                &["result", "trigger"],
            ),
            generation,
            geo_lookups: counter(
                &registry,
                GEO_LOOKUPS_TOTAL,
                "Client locations by source.",
                &["result"],
            ),
            geoip_build_epoch,
            dns_lookups: counter(
                &registry,
                DNS_LOOKUPS_TOTAL,
                "DNS lookups of endpoint names, by result.",
                &["cluster", "result"],
            ),
            tls_handshakes: counter(
                &registry,
                TLS_HANDSHAKES_TOTAL,
                "TLS handshakes completed, by whether they resumed a session.",
                &["listener", "resumed"],
            ),
            worker_connections: counter(
                &registry,
                WORKER_CONNECTIONS_TOTAL,
                "Client connections accepted on proxy listeners, by worker thread.",
                &["worker"],
            ),
            faults: counter(
                &registry,
                FAULTS_TOTAL,
                "Faults injected, by kind (delay, abort).",
                &["route", "kind"],
            ),
            mirror_requests: counter(
                &registry,
                MIRROR_REQUESTS_TOTAL,
                "Mirror copies: sent (answered), failed, dropped (over max_in_flight), skipped (body not replayable).",
                &["route", "cluster", "result"],
            ),
            peer_up,
            peer_probes: counter(
                &registry,
                PEER_PROBES_TOTAL,
                "Probes of peer Meridians, by result (up: 2xx, status: another status, error, timeout).",
                &["region", "result"],
            ),
            dns_queries: counter(
                &registry,
                DNS_QUERIES_TOTAL,
                "GeoDNS queries answered, by zone, query type, response code and first region named.",
                &["zone", "type", "rcode", "region"],
            ),
            landing: super::landing::Landing::new(),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A TLS listener's handshake counters, resolved when it starts.
#[derive(Debug, Clone)]
pub struct HandshakeMetrics {
    full: IntCounter,
    resumed: IntCounter,
}

impl HandshakeMetrics {
    pub fn new(metrics: &Metrics, listener: &str) -> Self {
        Self {
            full: metrics
                .tls_handshakes
                .with_label_values(&[listener, "false"]),
            resumed: metrics
                .tls_handshakes
                .with_label_values(&[listener, "true"]),
        }
    }

    /// Count a completed handshake.
    pub fn count(&self, resumed: bool) {
        if resumed {
            self.resumed.inc()
        } else {
            self.full.inc()
        }
    }
}

/// Request counters and histograms of one (route, cluster, region): a handle per status code,
/// created on first use and cached.
///
/// A table holds one per route, cluster and region the route can send to, and in a large config
/// most of them never see a request: the handles by code are allocated with the first one, and
/// the labels are shared with the other handles of the same route, cluster or region.
pub struct RequestMetrics {
    labels: [Arc<str>; 3],
    by_code: OnceLock<Box<[OnceLock<CodeHandles>]>>,
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestMetrics").field(&self.labels).finish()
    }
}

/// The counter and histogram of one status code.
type CodeHandles = (IntCounter, Histogram);

const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 599;

impl RequestMetrics {
    pub fn new(
        metrics: &Metrics,
        route: impl Into<Arc<str>>,
        cluster: impl Into<Arc<str>>,
        region: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            labels: [route.into(), cluster.into(), region.into()],
            by_code: OnceLock::new(),
            requests: metrics.requests.clone(),
            duration: metrics.duration.clone(),
        }
    }

    pub fn observe(&self, code: u16, seconds: f64) {
        let code = code.clamp(FIRST_CODE, LAST_CODE);
        let by_code = self
            .by_code
            .get_or_init(|| (FIRST_CODE..=LAST_CODE).map(|_| OnceLock::new()).collect());
        let Some(slot) = by_code.get(usize::from(code - FIRST_CODE)) else {
            return;
        };
        let (count, histogram) = slot.get_or_init(|| {
            let code = code.to_string();
            let [route, cluster, region] = &self.labels;
            let values = [&**route, &**cluster, &**region, code.as_str()];
            (
                self.requests.with_label_values(&values),
                self.duration.with_label_values(&values),
            )
        });
        count.inc();
        histogram.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_register_and_render() {
        let m = Metrics::new();
        let r = RequestMetrics::new(&m, "api", "api", "eu-west-1");
        r.observe(200, 0.01);
        r.observe(200, 0.02);
        r.observe(503, 0.5);
        crate::upstream::ClusterStats::new(&m, "api").retries.inc();
        m.reloads.with_label_values(&["applied", "signal"]).inc();
        HandshakeMetrics::new(&m, "https").count(true);
        m.worker_connections.with_label_values(&["1"]).inc();
        m.peer_up.with_label_values(&["eu-west-1"]).set(1);
        m.peer_probes
            .with_label_values(&["eu-west-1", "timeout"])
            .inc();
        let text = m.render();
        assert!(
            text.contains(
                r#"http_requests_total{cluster="api",code="200",region="eu-west-1",route="api"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"http_request_duration_seconds_count{cluster="api",code="503",region="eu-west-1",route="api"} 1"#));
        assert!(text.contains(r#"meridian_retries_total{cluster="api"} 1"#));
        assert!(text.contains(r#"meridian_peer_up{region="eu-west-1"} 1"#));
        assert!(
            text.contains(r#"meridian_peer_probes_total{region="eu-west-1",result="timeout"} 1"#)
        );
        assert!(
            text.contains(r#"meridian_config_reloads_total{result="applied",trigger="signal"} 1"#)
        );
        assert!(
            text.contains(r#"meridian_tls_handshakes_total{listener="https",resumed="true"} 1"#)
        );
        assert!(
            text.contains(r#"meridian_tls_handshakes_total{listener="https",resumed="false"} 0"#)
        );
        assert!(text.contains(r#"meridian_worker_connections_total{worker="1"} 1"#));
    }
}
