//! The ranges duration fields take, checked by the table compiler with the field's file and
//! line; the bound is what keeps every deadline built from a config duration on the clock.

use std::time::Duration;

/// The longest value any duration field takes. Deadlines are built by adding config durations
/// to the clock; a day keeps every sum far inside what `Instant` holds (a larger value once
/// passed `check` and then aborted the process on the first connection or request).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The values a duration field accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    /// Timeouts and waits: below a millisecond the timer cannot tell them from zero.
    pub const TIMEOUT: Self = Self::up_to_a_day(Duration::from_millis(1));
    /// Periods of repeating tasks (health checks, outlier sweeps): a floor so they cannot spin.
    pub const PERIOD: Self = Self::up_to_a_day(Duration::from_millis(10));
    /// DNS re-resolution bounds: a floor so a failing name is not asked for in a tight loop.
    pub const DNS_TTL: Self = Self::up_to_a_day(Duration::from_millis(100));
    /// Delays where zero means "none" (drain, health-check jitter).
    pub const DELAY: Self = Self::up_to_a_day(Duration::ZERO);
    /// Listener idle timeouts: shorter would close connections between a client's requests,
    /// longer keeps idle HTTP/2 connections' memory for nothing.
    pub const IDLE: Self = Self {
        min: Duration::from_secs(1),
        max: Duration::from_secs(60 * 60),
    };

    const fn up_to_a_day(min: Duration) -> Self {
        Self {
            min,
            max: MAX_DURATION,
        }
    }

    /// Why `value` (written as `text`) is outside the range, if it is.
    pub fn check(&self, text: &str, value: Duration) -> Result<Duration, String> {
        let too = if value < self.min {
            "short"
        } else if value > self.max {
            "long"
        } else {
            return Ok(value);
        };
        Err(format!(
            "`{text}` is too {too} (this field takes {} to {})",
            show_duration(self.min),
            show_duration(self.max)
        ))
    }
}

/// A range bound as it is written in the config: `0s`, `10ms`, `24h`.
fn show_duration(d: Duration) -> String {
    let (secs, millis) = (d.as_secs(), d.subsec_millis());
    match (secs, millis) {
        (0, 0) => "0s".to_owned(),
        (0, ms) => format!("{ms}ms"),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        (s, ms) => format!("{}ms", s * 1000 + u64::from(ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_ranges_take_both_ends_and_refuse_past_them() {
        let ms = Duration::from_millis;
        let cases = [
            (DurationRange::TIMEOUT, ms(1), true),
            (DurationRange::TIMEOUT, Duration::ZERO, false),
            (DurationRange::TIMEOUT, Duration::from_micros(999), false),
            (DurationRange::TIMEOUT, MAX_DURATION, true),
            (DurationRange::TIMEOUT, MAX_DURATION + ms(1), false),
            (DurationRange::TIMEOUT, Duration::MAX, false),
            (DurationRange::PERIOD, ms(9), false),
            (DurationRange::PERIOD, ms(10), true),
            (DurationRange::DNS_TTL, ms(99), false),
            (DurationRange::DNS_TTL, ms(100), true),
            (DurationRange::DELAY, Duration::ZERO, true),
            (DurationRange::DELAY, Duration::from_secs(u64::MAX), false),
        ];
        for (range, value, ok) in cases {
            assert_eq!(range.check("x", value).is_ok(), ok, "{range:?} {value:?}");
        }
        assert_eq!(
            DurationRange::PERIOD.check("5ms", ms(5)).unwrap_err(),
            "`5ms` is too short (this field takes 10ms to 24h)"
        );
        assert_eq!(
            DurationRange::DELAY
                .check("2d", MAX_DURATION * 2)
                .unwrap_err(),
            "`2d` is too long (this field takes 0s to 24h)"
        );
    }

    #[test]
    fn range_bounds_are_shown_as_written() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (MAX_DURATION, "24h"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(show_duration(d), text);
        }
    }
}
