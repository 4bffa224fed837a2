//! Fault injection (Istio's `fault`): a delay, an abort, or both, each on its own share of
//! requests. What a request gets is [`Fault::draw`]; the proxy (`proxy/policies/fault.rs`)
//! waits and answers.

use std::time::Duration;

use http::StatusCode;
use prometheus::IntCounter;

use super::chance::Chance;

#[derive(Debug)]
pub struct Fault {
    pub delay: Option<(Duration, Chance)>,
    pub abort: Option<(StatusCode, Chance)>,
    /// `meridian_faults_total{route, kind="delay"}` and `{kind="abort"}`.
    pub delayed: IntCounter,
    pub aborted: IntCounter,
}

/// What one request was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drawn {
    pub delay: Option<Duration>,
    pub abort: Option<StatusCode>,
}

impl Drawn {
    pub fn kind(&self) -> FaultKind {
        match (self.delay.is_some(), self.abort.is_some()) {
            (false, false) => FaultKind::None,
            (true, false) => FaultKind::Delay,
            (false, true) => FaultKind::Abort,
            (true, true) => FaultKind::Both,
        }
    }
}

/// The access log's `fault` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FaultKind {
    #[default]
    None,
    Delay,
    Abort,
    Both,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Delay => "delay",
            Self::Abort => "abort",
            Self::Both => "both",
        }
    }
}

impl Fault {
    /// One phrase for `meridian check` and `/explain`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((delay, chance)) = &self.delay {
            parts.push(format!("delay {delay:?} on {}%", chance.percent()));
        }
        if let Some((status, chance)) = &self.abort {
            parts.push(format!(
                "abort {} on {}%",
                status.as_u16(),
                chance.percent()
            ));
        }
        format!("fault: {}", parts.join(", "))
    }

    /// Count one request against each fault's share (each has its own count, as Envoy draws
    /// them independently) and say which apply.
    pub fn draw(&self) -> Drawn {
        Drawn {
            delay: self
                .delay
                .as_ref()
                .filter(|(_, chance)| chance.take())
                .map(|(d, _)| *d),
            abort: self
                .abort
                .as_ref()
                .filter(|(_, chance)| chance.take())
                .map(|(s, _)| *s),
        }
    }

    /// What the next request would be given, without counting it (for `/explain`).
    pub fn peek(&self) -> Drawn {
        Drawn {
            delay: self
                .delay
                .as_ref()
                .filter(|(_, c)| c.peek())
                .map(|(d, _)| *d),
            abort: self
                .abort
                .as_ref()
                .filter(|(_, c)| c.peek())
                .map(|(s, _)| *s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(delay: Option<f64>, abort: Option<f64>) -> Fault {
        let m = crate::telemetry::metrics::Metrics::new();
        Fault {
            delay: delay.map(|p| (Duration::from_secs(2), Chance::from_percent(p))),
            abort: abort.map(|p| (StatusCode::SERVICE_UNAVAILABLE, Chance::from_percent(p))),
            delayed: m.faults.with_label_values(&["r", "delay"]),
            aborted: m.faults.with_label_values(&["r", "abort"]),
        }
    }

    #[test]
    fn draws_over_a_hundred_requests() {
        // delay percent, abort percent → (delay only, abort only, both, none) of 100
        let cases = [
            (Some(10.0), Some(5.0), (5, 0, 5, 90)),
            (Some(100.0), None, (100, 0, 0, 0)),
            (None, Some(50.0), (0, 50, 0, 50)),
            (Some(0.0), Some(0.0), (0, 0, 0, 100)),
            (None, None, (0, 0, 0, 100)),
            (Some(100.0), Some(100.0), (0, 0, 100, 0)),
        ];
        for (delay, abort, want) in cases {
            let f = fault(delay, abort);
            let mut got = (0, 0, 0, 0);
            for _ in 0..100 {
                let peeked = f.peek();
                let drawn = f.draw();
                assert_eq!(peeked, drawn, "peek agrees with the draw");
                match drawn.kind() {
                    FaultKind::Delay => got.0 += 1,
                    FaultKind::Abort => got.1 += 1,
                    FaultKind::Both => got.2 += 1,
                    FaultKind::None => got.3 += 1,
                }
            }
            assert_eq!(got, want, "delay {delay:?} abort {abort:?}");
        }
    }

    #[test]
    fn kinds_name_the_log_field() {
        let d = Some(Duration::from_millis(1));
        let a = Some(StatusCode::IM_A_TEAPOT);
        for (delay, abort, want) in [
            (None, None, "none"),
            (d, None, "delay"),
            (None, a, "abort"),
            (d, a, "both"),
        ] {
            assert_eq!(Drawn { delay, abort }.kind().as_str(), want);
        }
    }
}
