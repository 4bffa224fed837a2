//! Deadlines and waits built from configured durations, without overflow.
//!
//! Validation bounds every duration field (see [`crate::config::DurationRange`]), but the
//! arithmetic does not lean on it: tables built in code skip validation, and `Instant + Duration`
//! panics where a sum leaves the clock's range. Used by every timer that adds a configured
//! duration to the clock or scales one: the route deadline, idle and send timeouts, request-head
//! reads, outlier ejections and sweeps, health-check and retry waits.

use std::time::Duration;

use tokio::time::Instant;

/// The farthest a deadline is put: it never comes in a process's life, every platform's clock
/// holds it, and it is where tokio's own `sleep` caps its waits.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + wait`, capped at a deadline that never comes, so no wait can leave the clock's range.
pub fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(FAR_FUTURE)).unwrap_or(now)
}

/// The deadline `wait` from now.
pub fn from_now(wait: Duration) -> Instant {
    after(Instant::now(), wait)
}

/// `d × share` for a share in [0, 1] (a random draw for jitter), never above `d`: the float
/// product of a long duration can round past what a `Duration` holds.
pub fn fraction(d: Duration, share: f64) -> Duration {
    if share.is_nan() || share <= 0.0 {
        return Duration::ZERO;
    }
    if share >= 1.0 {
        return d;
    }
    Duration::try_from_secs_f64(d.as_secs_f64() * share)
        .unwrap_or(d)
        .min(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_the_clock_saturates_instead_of_panicking() {
        let now = Instant::now();
        for wait in [
            Duration::from_secs(u64::MAX),
            Duration::MAX,
            Duration::from_secs(i64::MAX as u64),
        ] {
            assert_eq!(after(now, wait), now + FAR_FUTURE, "{wait:?}");
        }
    }

    #[test]
    fn a_deadline_in_range_is_the_plain_sum() {
        let now = Instant::now();
        for wait in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
        ] {
            assert_eq!(after(now, wait), now + wait);
        }
        let soon = from_now(Duration::from_secs(1));
        assert!(soon > Instant::now() && soon <= Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn a_fraction_never_exceeds_the_whole() {
        let cases = [
            (Duration::MAX, 0.999_999_999_9),
            (Duration::MAX, 1.0),
            (Duration::from_secs(u64::MAX), 0.999_999_999_9),
            (Duration::from_secs(10), 0.5),
            (Duration::from_secs(10), 0.0),
            (Duration::from_secs(10), f64::NAN),
            (Duration::from_secs(10), -1.0),
            (Duration::from_secs(10), 7.0),
        ];
        for (d, share) in cases {
            let part = fraction(d, share);
            assert!(part <= d, "{d:?} × {share}");
        }
        assert_eq!(
            fraction(Duration::from_secs(10), 0.5),
            Duration::from_secs(5)
        );
        assert_eq!(fraction(Duration::from_secs(10), f64::NAN), Duration::ZERO);
    }
}
