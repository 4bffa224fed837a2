//! `fault:` on a route: injected delays and aborts, with Istio's `fault` field meanings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FaultConfig {
    #[serde(default)]
    pub delay: Option<FaultDelayConfig>,
    #[serde(default)]
    pub abort: Option<FaultAbortConfig>,
}

/// Hold the request this long before it goes on (within the route's timeout).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FaultDelayConfig {
    pub fixed: String,
    /// Share of requests delayed, 0..100.
    #[serde(default = "super::default_percent")]
    pub percent: f64,
}

/// Answer the request with this status at the edge, never proxying it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FaultAbortConfig {
    pub status: u16,
    /// Share of requests aborted, 0..100.
    #[serde(default = "super::default_percent")]
    pub percent: f64,
}
