//! Request mirroring (Istio's `mirror`/`mirrors`): which requests are copied to which
//! cluster, and the bound on copies in flight. The proxy (`proxy/policies/mirror.rs`) sends
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus::IntCounter;

use super::chance::Chance;
use crate::table::routes::ClusterId;

#[derive(Debug)]
pub struct Mirror {
    pub cluster: ClusterId,
    pub chance: Chance,
    /// Copies to this cluster in flight at once, at most.
    pub max_in_flight: usize,
    /// Shared by every mirror of the same cluster in one table.
    pub in_flight: Arc<AtomicUsize>,
    /// Copies sent so far: the index into the region-split sequence of the mirror's own picks
    /// (the route's sequence stays the primary's).
    pub draws: AtomicU64,
    pub metrics: MirrorMetrics,
}

/// `meridian_mirror_requests_total{route, cluster, result}`.
#[derive(Debug)]
pub struct MirrorMetrics {
    pub sent: IntCounter,
    pub failed: IntCounter,
    pub dropped: IntCounter,
    pub skipped: IntCounter,
}

/// One copy's place among those in flight to its cluster; given back when dropped.
#[derive(Debug)]
pub struct MirrorSlot(Arc<AtomicUsize>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mirror {
    /// A place for one more copy, unless `max_in_flight` are already out.
    pub fn slot(&self) -> Option<MirrorSlot> {
        let max = self.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| MirrorSlot(self.in_flight.clone()))
    }

    /// The draw for the next copy's region pick (see [`crate::steer::golden_draw`]).
    pub fn next_draw(&self) -> f64 {
        crate::steer::golden_draw(self.draws.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(max: usize) -> Mirror {
        let m = crate::telemetry::metrics::Metrics::new();
        let c = |r: &str| m.mirror_requests.with_label_values(&["r", "c", r]);
        Mirror {
            cluster: 0,
            chance: Chance::from_percent(100.0),
            max_in_flight: max,
            in_flight: Arc::default(),
            draws: AtomicU64::new(0),
            metrics: MirrorMetrics {
                sent: c("sent"),
                failed: c("failed"),
                dropped: c("dropped"),
                skipped: c("skipped"),
            },
        }
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        for max in [1usize, 3, 64] {
            let m = mirror(max);
            let held: Vec<MirrorSlot> = (0..max * 2).filter_map(|_| m.slot()).collect();
            assert_eq!(held.len(), max);
            assert!(m.slot().is_none());
            drop(held);
            assert_eq!(m.in_flight.load(Ordering::Relaxed), 0);
            assert!(m.slot().is_some());
        }
    }
}
