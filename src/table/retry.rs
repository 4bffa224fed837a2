//! Retry policy: which failures are retried, how long to back off, and the budget that keeps
//! retries from amplifying an outage. Pure functions; the proxy's attempt loop applies them.

use std::time::Duration;

use http::Method;

/// What an attempt came to, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// Could not connect: nothing reached the upstream.
    ConnectFailure,
    /// The upstream refused the stream before reading it (HTTP/2 REFUSED_STREAM).
    RefusedStream,
    /// The connection broke after the request was (maybe) sent.
    Reset,
    /// No response head within the per-try timeout.
    PerTryTimeout,
    /// A response with this status.
    Status(u16),
    /// A gRPC trailers-only answer (HTTP 200) with this `grpc-status` (not 0).
    Grpc(u8),
}

impl AttemptFailure {
    /// Whether the request may have been seen by the upstream.
    pub fn reached_upstream(&self) -> bool {
        !matches!(self, Self::ConnectFailure | Self::RefusedStream)
    }
}

/// What a failed try cost the upstreams, which decides whether retrying it draws on the
/// budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryCost {
    /// No running upstream holds any work for it: it never reached one (connect failure,
    /// refused stream), or the endpoint it reached has stopped taking connections since, and
    /// the try died with it.
    Nothing,
    /// A running upstream may have worked on it: a response, a per-try timeout, or a reset
    /// from an endpoint that still takes connections.
    Work,
}

/// The retry budget's answer for one retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetVerdict {
    /// Admitted without drawing on the budget: the failed try cost nothing.
    Free,
    /// Admitted within the budget.
    Within,
    /// Refused: as many requests are retrying as the budget allows.
    Exhausted,
}

/// How long one try may run before the attempt loop stops waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerTryTimeout {
    /// Set in the config (Istio's `perTryTimeout`): a try that runs this long fails.
    Strict(Duration),
    /// The default while retries are on: a try that runs this long is given up only for a
    /// retry that can go now; otherwise it keeps the rest of the route timeout.
    MoveOn(Duration),
}

impl PerTryTimeout {
    /// How long after the try's start.
    pub fn after(&self) -> Duration {
        match self {
            Self::Strict(d) | Self::MoveOn(d) => *d,
        }
    }
}

/// A route's retry policy, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub attempts: u32,
    pub per_try_timeout: Option<PerTryTimeout>,
    pub on_5xx: bool,
    pub on_gateway_error: bool,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_refused_stream: bool,
    pub on_retriable_4xx: bool,
    pub on_statuses: Vec<u16>,
    /// gRPC status codes retried (bit n: code n): Istio's `cancelled`, `deadline-exceeded`,
    /// `internal`, `resource-exhausted` and `unavailable`.
    pub on_grpc: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_percent: f64,
    pub budget_min_concurrency: u32,
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            on_5xx: false,
            on_gateway_error: false,
            on_connect_failure: true,
            on_reset: true,
            on_refused_stream: true,
            on_retriable_4xx: false,
            on_statuses: vec![503],
            on_grpc: 0,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20.0,
            budget_min_concurrency: 3,
            retry_non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// Set a `retry_on` condition by name; false if the name is unknown.
    pub fn enable(&mut self, condition: &str) -> bool {
        match condition {
            "5xx" => self.on_5xx = true,
            "gateway-error" => self.on_gateway_error = true,
            "connect-failure" => self.on_connect_failure = true,
            "reset" => self.on_reset = true,
            "refused-stream" => self.on_refused_stream = true,
            "retriable-4xx" => self.on_retriable_4xx = true,
            name => match grpc_condition(name) {
                Some(code) => self.on_grpc |= 1 << code,
                None => return false,
            },
        }
        true
    }

    /// A policy with no conditions enabled (the config lists what it wants).
    pub fn none() -> Self {
        Self {
            on_connect_failure: false,
            on_reset: false,
            on_refused_stream: false,
            on_statuses: Vec::new(),
            ..Self::default()
        }
    }

    /// Whether `failure` is one this policy retries, before budget and idempotency.
    pub fn covers(&self, failure: AttemptFailure) -> bool {
        match failure {
            AttemptFailure::ConnectFailure => self.on_connect_failure,
            AttemptFailure::RefusedStream => self.on_refused_stream,
            AttemptFailure::Reset => self.on_reset,
            // A try that timed out is a gateway error (504) to the retry logic, and an upstream
            // that did not answer at all to `reset`, as in Envoy.
            AttemptFailure::PerTryTimeout => self.on_5xx || self.on_gateway_error || self.on_reset,
            AttemptFailure::Status(code) => {
                (self.on_5xx && (500..=599).contains(&code))
                    || (self.on_gateway_error && matches!(code, 502..=504))
                    || (self.on_retriable_4xx && code == 409)
                    || self.on_statuses.contains(&code)
            }
            AttemptFailure::Grpc(code) => code < 32 && self.on_grpc & (1 << code) != 0,
        }
    }

    /// Whether a request with `method` that failed with `failure` may be sent again.
    pub fn may_retry(
        &self,
        failure: AttemptFailure,
        method: &Method,
        body_replayable: bool,
    ) -> bool {
        if !self.covers(failure) {
            return false;
        }
        if failure.reached_upstream() {
            // Sent once already: only safe to repeat if the method is idempotent (or the route
            // says so), and only if we still have the body to send again.
            body_replayable && (self.retry_non_idempotent || is_idempotent(method))
        } else {
            true
        }
    }

    /// Wait before retry `n` (1-based): random in [0, (2^n − 1) × base], capped; a
    /// `Retry-After` from the upstream is honoured up to the cap.
    pub fn backoff(
        &self,
        n: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.backoff_max);
        }
        let factor = (1u64 << n.min(20)) - 1;
        let ceiling = self
            .backoff_base
            .saturating_mul(factor as u32)
            .min(self.backoff_max);
        crate::deadline::fraction(ceiling, rng.f64())
    }

    /// Requests that may be retrying at once while `active_requests` are in flight against
    /// the cluster: `budget_percent` of them, rounded down, but never fewer than
    /// `budget_min_concurrency`.
    pub fn budget_limit(&self, active_requests: usize) -> usize {
        // The cast saturates, and a share that is not a number counts as none.
        let share = (active_requests as f64 * self.budget_percent / 100.0).floor() as usize;
        share.max(self.budget_min_concurrency as usize)
    }

    /// The retry budget's answer for retrying a try that cost `cost`, with `active_requests`
    /// requests in flight against the cluster and `others_retrying` requests other than the
    /// asking one retrying. A try that cost nothing is retried free; one that did is retried
    /// only while the retrying requests, the asking one included, stay within
    /// [`Self::budget_limit`]. So upstreams that are still running see at most the requests
    /// plus that many retries, however many tries died with a dead endpoint.
    pub fn budget(
        &self,
        cost: TryCost,
        active_requests: usize,
        others_retrying: usize,
    ) -> BudgetVerdict {
        match cost {
            TryCost::Nothing => BudgetVerdict::Free,
            TryCost::Work if others_retrying < self.budget_limit(active_requests) => {
                BudgetVerdict::Within
            }
            TryCost::Work => BudgetVerdict::Exhausted,
        }
    }
}

/// The gRPC status code of an Istio `retryOn` gRPC condition.
pub fn grpc_condition(name: &str) -> Option<u8> {
    Some(match name {
        "cancelled" => 1,
        "deadline-exceeded" => 4,
        "resource-exhausted" => 8,
        "internal" => 13,
        "unavailable" => 14,
        _ => return None,
    })
}

/// The per-try timeout of a route that sets none: the first try and every retry get an
/// equal share of the route timeout, so an upstream that hangs (a stopped process whose
/// kernel still accepts) leaves time for the retries. Without retries the route timeout
/// alone bounds the one try.
pub fn default_per_try_timeout(route_timeout: Duration, attempts: u32) -> Option<PerTryTimeout> {
    (attempts > 0).then(|| PerTryTimeout::MoveOn(route_timeout / attempts.saturating_add(1)))
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured).
pub fn parse_retry_after(value: Option<&[u8]>) -> Option<Duration> {
    let secs: u64 = std::str::from_utf8(value?).ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_idempotency() {
        let mut p = RetryPolicy::none();
        assert!(!p.covers(AttemptFailure::ConnectFailure));
        for c in ["gateway-error", "connect-failure", "retriable-4xx"] {
            assert!(p.enable(c));
        }
        assert!(!p.enable("sometimes"));
        assert!(p.covers(AttemptFailure::Status(503)));
        assert!(!p.covers(AttemptFailure::Status(500)));
        assert!(p.covers(AttemptFailure::Status(409)));
        assert!(p.covers(AttemptFailure::PerTryTimeout));
        assert!(!p.covers(AttemptFailure::Reset));

        // POST that reached the upstream: not again. Refused at connect: yes.
        assert!(!p.may_retry(AttemptFailure::Status(503), &Method::POST, true));
        assert!(p.may_retry(AttemptFailure::ConnectFailure, &Method::POST, false));
        assert!(p.may_retry(AttemptFailure::Status(503), &Method::GET, true));
        assert!(
            !p.may_retry(AttemptFailure::Status(503), &Method::GET, false),
            "body gone"
        );
        p.retry_non_idempotent = true;
        assert!(p.may_retry(AttemptFailure::Status(503), &Method::POST, true));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..200 {
            assert!(p.backoff(1, None, &mut rng) <= Duration::from_millis(25));
            assert!(p.backoff(2, None, &mut rng) <= Duration::from_millis(75));
            assert!(p.backoff(9, None, &mut rng) <= Duration::from_millis(250));
        }
        let longest = (0..200)
            .map(|_| p.backoff(3, None, &mut rng))
            .max()
            .unwrap();
        assert!(longest > Duration::from_millis(100), "{longest:?}");
        assert_eq!(
            p.backoff(1, Some(Duration::from_secs(5)), &mut rng),
            Duration::from_millis(250)
        );
        assert_eq!(
            p.backoff(1, Some(Duration::from_millis(10)), &mut rng),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn budget_has_a_floor_and_a_share_and_charges_only_work() {
        use BudgetVerdict::{Exhausted, Free, Within};
        use TryCost::{Nothing, Work};
        // (percent, min_concurrency, cost, active requests, others retrying, verdict)
        let cases: &[(f64, u32, TryCost, usize, usize, BudgetVerdict)] = &[
            // The floor rules while the share is smaller.
            (20.0, 3, Work, 1, 0, Within),
            (20.0, 3, Work, 1, 2, Within),
            (20.0, 3, Work, 1, 3, Exhausted),
            (20.0, 3, Work, 6, 2, Within),
            (20.0, 3, Work, 6, 3, Exhausted),
            // 20 % of 14 is 2.8: rounded down, so the floor of 3 still rules.
            (20.0, 3, Work, 14, 3, Exhausted),
            // The share rules once it is larger.
            (20.0, 3, Work, 100, 19, Within),
            (20.0, 3, Work, 100, 20, Exhausted),
            // Thirty requests whose tries all broke at once: 6 may retry on the budget...
            (20.0, 3, Work, 30, 5, Within),
            (20.0, 3, Work, 30, 6, Exhausted),
            // ...and every one whose try died with its endpoint retries free, at any load.
            (20.0, 3, Nothing, 30, 6, Free),
            (20.0, 3, Nothing, 30, 29, Free),
            (20.0, 3, Nothing, 1, 1_000, Free),
            // No share, no floor: nothing retries on the budget.
            (0.0, 0, Work, 1_000, 0, Exhausted),
            (0.0, 0, Nothing, 1_000, 0, Free),
            (0.0, 2, Work, 1_000, 1, Within),
            (0.0, 2, Work, 1_000, 2, Exhausted),
            (100.0, 0, Work, 10, 9, Within),
            (100.0, 0, Work, 10, 10, Exhausted),
            // Extremes neither overflow nor panic.
            (100.0, u32::MAX, Work, usize::MAX, usize::MAX - 1, Within),
            (f64::NAN, 3, Work, 100, 3, Exhausted),
        ];
        for &(percent, floor, cost, active, others, want) in cases {
            let p = RetryPolicy {
                budget_percent: percent,
                budget_min_concurrency: floor,
                ..RetryPolicy::default()
            };
            assert_eq!(
                p.budget(cost, active, others),
                want,
                "{percent}% floor {floor}, {cost:?}, {active} active, {others} others retrying"
            );
        }
    }

    #[test]
    fn per_try_timeout_defaults_to_an_equal_share_of_the_route_timeout() {
        let s = Duration::from_secs;
        let move_on = |d| Some(PerTryTimeout::MoveOn(d));
        let cases = [
            (s(15), 2, move_on(s(5))),
            (s(3), 3, move_on(Duration::from_millis(750))),
            (s(3), 0, None),
            (s(1), 10, move_on(Duration::from_nanos(90_909_090))),
            (s(1), u32::MAX, move_on(Duration::ZERO)),
        ];
        for (route, attempts, want) in cases {
            assert_eq!(
                default_per_try_timeout(route, attempts),
                want,
                "{route:?} {attempts}"
            );
        }
    }

    #[test]
    fn a_per_try_timeout_is_retried_on_reset_as_on_gateway_errors() {
        let mut p = RetryPolicy::none();
        assert!(!p.covers(AttemptFailure::PerTryTimeout));
        p.enable("reset");
        assert!(p.covers(AttemptFailure::PerTryTimeout));
        assert!(RetryPolicy::default().covers(AttemptFailure::PerTryTimeout));
        assert!(
            !RetryPolicy::default().may_retry(AttemptFailure::PerTryTimeout, &Method::POST, true),
            "it may have reached the upstream"
        );
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after(Some(b" 2")), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(Some(b"Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }

    #[test]
    fn grpc_conditions_cover_their_codes_only() {
        let cases: &[(&str, u8)] = &[
            ("cancelled", 1),
            ("deadline-exceeded", 4),
            ("resource-exhausted", 8),
            ("internal", 13),
            ("unavailable", 14),
        ];
        for &(name, code) in cases {
            let mut p = RetryPolicy::none();
            assert!(p.enable(name), "{name}");
            for other in 0..=40u8 {
                assert_eq!(
                    p.covers(AttemptFailure::Grpc(other)),
                    other == code,
                    "{name} and grpc-status {other}"
                );
            }
            // A gRPC condition says nothing about HTTP statuses.
            assert!(!p.covers(AttemptFailure::Status(503)));
        }
        let mut p = RetryPolicy::none();
        assert!(!p.enable("unknown"));
        assert!(!p.covers(AttemptFailure::Grpc(14)));
        // Reached the upstream: only idempotent calls, or those the route allows, go again.
        assert!(p.enable("unavailable"));
        assert!(!p.may_retry(AttemptFailure::Grpc(14), &Method::POST, true));
        p.retry_non_idempotent = true;
        assert!(p.may_retry(AttemptFailure::Grpc(14), &Method::POST, true));
        assert!(!p.may_retry(AttemptFailure::Grpc(14), &Method::POST, false));
    }
}
