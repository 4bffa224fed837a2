//! Everything between Meridian and its upstreams: the connection pool with its circuit
//! breakers (HTTP/1.1 and HTTP/2 connections), the HTTP/2 exchange (`h2_exchange`), passive
//! outlier detection, active health checks (HTTP and gRPC), probes of peer Meridians in other
//! regions (`peers`), and per-cluster counters.
//!
//! The request path checks connections out of the pool and reports outcomes; control tasks
//! (one detector per cluster, one health loop per endpoint, one probe loop per peer) own every
//! state change.
//!
//! Errors: [`error::UpstreamError`] is the layer's one error type (pool checkouts, health
//! checks, peer probes, DNS resolver set-up), with I/O, TLS and protocol causes kept as sources.
//!
//! Layer: uses `steer`, `telemetry`, `http1` (the client codec), `tls`, `geo` and `config`;
//! used by `table` (which holds pools and endpoint sets), `route`, `proxy` and `control`.

pub mod discovery;
pub mod endpoints;
pub mod error;
pub mod h2_exchange;
pub mod health;
mod health_grpc;
mod idle;
pub mod outlier;
pub mod peers;
pub mod pool;
mod response_body;

use prometheus::IntCounter;

use crate::telemetry::metrics::Metrics;

/// Counters per cluster: what the data path refused, retried or reported, and what the
/// control tasks did. Prometheus handles resolved once, kept across reloads with the cluster.
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub attempts_response: IntCounter,
    pub attempts_connect_failure: IntCounter,
    pub attempts_reset: IntCounter,
    pub attempts_timeout: IntCounter,
    pub retries: IntCounter,
    pub retry_budget_exhausted: IntCounter,
    pub overflow_max_requests: IntCounter,
    pub overflow_max_pending_requests: IntCounter,
    pub ejections: IntCounter,
    pub ejections_refused: IntCounter,
    pub outcomes_dropped: IntCounter,
    pub health_transitions: IntCounter,
}

impl ClusterStats {
    pub fn new(metrics: &Metrics, cluster: &str) -> Self {
        let one = |vec: &prometheus::IntCounterVec| vec.with_label_values(&[cluster]);
        let attempt = |outcome: &str| metrics.attempts.with_label_values(&[cluster, outcome]);
        let overflow = |limit: &str| metrics.overflows.with_label_values(&[cluster, limit]);
        Self {
            attempts_response: attempt("response"),
            attempts_connect_failure: attempt("connect_failure"),
            attempts_reset: attempt("reset"),
            attempts_timeout: attempt("timeout"),
            retries: one(&metrics.retries),
            retry_budget_exhausted: one(&metrics.retry_budget_exhausted),
            overflow_max_requests: overflow("max_requests"),
            overflow_max_pending_requests: overflow("max_pending_requests"),
            ejections: one(&metrics.ejections),
            ejections_refused: one(&metrics.ejections_refused),
            outcomes_dropped: one(&metrics.reports_dropped),
            health_transitions: one(&metrics.health_transitions),
        }
    }

    /// Tries of every outcome.
    pub fn attempts(&self) -> u64 {
        self.attempts_response.get()
            + self.attempts_connect_failure.get()
            + self.attempts_reset.get()
            + self.attempts_timeout.get()
    }

    /// Tries that failed without a response.
    pub fn local_failures(&self) -> u64 {
        self.attempts_connect_failure.get()
            + self.attempts_reset.get()
            + self.attempts_timeout.get()
    }

    pub fn bump(counter: &IntCounter) {
        counter.inc();
    }

    pub fn get(counter: &IntCounter) -> u64 {
        counter.get()
    }
}

impl Default for ClusterStats {
    /// Counters registered nowhere (tests, tools).
    fn default() -> Self {
        Self::new(&Metrics::new(), "-")
    }
}
