//! Everything between Meridian and its upstreams: the connection pool with its circuit
//! breakers, passive outlier detection, active health checks, and per-cluster counters.
//!
//! The request path checks connections out of the pool and reports outcomes; control tasks
//! (one detector per cluster, one health loop per endpoint) own every state change.

pub mod health;
pub mod outlier;
pub mod pool;

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters per cluster: what the data path refused, retried or reported, and what the
/// control tasks did. Shown by the admin listener.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub attempts: AtomicU64,
    pub attempt_failures: AtomicU64,
    pub retries: AtomicU64,
    pub retry_budget_exhausted: AtomicU64,
    pub overflow_max_requests: AtomicU64,
    pub overflow_max_pending_requests: AtomicU64,
    pub ejections: AtomicU64,
    pub ejections_refused: AtomicU64,
    pub outcomes_dropped: AtomicU64,
    pub health_transitions: AtomicU64,
}

impl ClusterStats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
