//! A percentage applied per request without randomness: the n-th request (counted per
//! policy) is picked when `floor((n + 1) · p) > floor(n · p)`.
//!
//! Used by fault injection and mirroring. The golden-ratio draws of the region splits are even
//! over the long run but can be one off over a short run (6 of 100 at 5%); these counts are
//! exact over every first N requests (⌊N·p⌋ of them) and never more than one off over any
//! window, so tests and operators see exactly the share they configured.

use std::sync::atomic::{AtomicU64, Ordering};

/// Parts per million in 100%.
pub const MILLION: u64 = 1_000_000;

/// A configured share of requests and how many requests have been counted so far.
#[derive(Debug)]
pub struct Chance {
    /// The share, parts per million (0..=1_000_000).
    ppm: u64,
    seen: AtomicU64,
}

impl Chance {
    /// `percent` is clamped into 0..=100 (the compiler has already refused anything else).
    pub fn from_percent(percent: f64) -> Self {
        let ppm = if percent.is_finite() {
            (percent.clamp(0.0, 100.0) * 10_000.0).round() as u64
        } else {
            0
        };
        Self {
            ppm: ppm.min(MILLION),
            seen: AtomicU64::new(0),
        }
    }

    pub fn percent(&self) -> f64 {
        self.ppm as f64 / 10_000.0
    }

    /// Count one request: whether it is picked.
    pub fn take(&self) -> bool {
        match self.ppm {
            0 => false,
            MILLION => true,
            ppm => picked(self.seen.fetch_add(1, Ordering::Relaxed), ppm),
        }
    }

    /// Whether the next request would be picked, without counting one (for `/explain`).
    pub fn peek(&self) -> bool {
        picked(self.seen.load(Ordering::Relaxed), self.ppm)
    }
}

/// Whether request `n` (0-based) is picked at `ppm` parts per million.
pub fn picked(n: u64, ppm: u64) -> bool {
    let n = u128::from(n);
    let ppm = u128::from(ppm.min(MILLION));
    let million = u128::from(MILLION);
    (n + 1) * ppm / million > n * ppm / million
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_over_every_first_n() {
        let cases: &[(f64, u64, u64)] = &[
            // percent, requests, picked
            (5.0, 100, 5),
            (50.0, 100, 50),
            (10.0, 100, 10),
            (1.0, 100, 1),
            (0.1, 1000, 1),
            (33.3, 1000, 333),
            (99.0, 100, 99),
            (100.0, 100, 100),
            (0.0, 100, 0),
            (25.0, 7, 1),
            (12.5, 8, 1),
        ];
        for (percent, n, want) in cases {
            let chance = Chance::from_percent(*percent);
            let got = (0..*n).filter(|_| chance.take()).count() as u64;
            assert_eq!(got, *want, "{percent}% of {n}");
        }
    }

    #[test]
    fn any_window_is_at_most_one_off() {
        for percent in [1.0, 5.0, 12.5, 33.0, 50.0, 75.0] {
            let ppm = (percent * 10_000.0) as u64;
            for start in [0u64, 17, 999, u64::MAX - 200] {
                let got = (start..start.saturating_add(100))
                    .filter(|n| picked(*n, ppm))
                    .count() as f64;
                assert!(
                    (got - percent).abs() <= 1.0,
                    "{percent}% from {start}: {got}"
                );
            }
        }
    }

    #[test]
    fn out_of_range_percentages_are_clamped() {
        assert_eq!(Chance::from_percent(f64::NAN).percent(), 0.0);
        assert_eq!(Chance::from_percent(-5.0).percent(), 0.0);
        assert_eq!(Chance::from_percent(1e300).percent(), 100.0);
        let all = Chance::from_percent(100.0);
        assert!(all.peek() && all.take());
    }
}
