//! The retry part of the config model: a route's retry policy, its back-off and the
//! per-cluster retry budget (Istio/Envoy meanings). Plain serde structs like `model`.

use serde::{Deserialize, Serialize};

/// Retry policy of a route, Istio/Envoy meanings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetryConfig {
    /// Retries after the first try (total tries = 1 + attempts).
    #[serde(default = "RetryConfig::default_attempts")]
    pub attempts: u32,
    /// Bounds each try strictly; the route timeout bounds them all. Default, with retries on:
    /// an equal share of the route timeout per try (timeout ÷ (1 + attempts)), past which a
    /// try is given up only for a retry that can go; without retries: the route timeout.
    #[serde(default)]
    pub per_try_timeout: Option<String>,
    /// `5xx`, `gateway-error`, `connect-failure`, `reset`, `refused-stream`, `retriable-4xx`,
    /// or status codes such as `503`.
    #[serde(default = "RetryConfig::default_retry_on")]
    pub retry_on: Vec<RetryOnConfig>,
    #[serde(default)]
    pub backoff: BackoffConfig,
    #[serde(default)]
    pub budget: RetryBudgetConfig,
    /// Retry POST, PATCH and other non-idempotent requests even after they reached an upstream.
    #[serde(default)]
    pub retry_non_idempotent: bool,
}

impl RetryConfig {
    fn default_attempts() -> u32 {
        2
    }
    fn default_retry_on() -> Vec<RetryOnConfig> {
        ["connect-failure", "refused-stream", "reset"]
            .iter()
            .map(|s| RetryOnConfig::Condition((*s).to_owned()))
            .chain(std::iter::once(RetryOnConfig::Code(503)))
            .collect()
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: Self::default_attempts(),
            per_try_timeout: None,
            retry_on: Self::default_retry_on(),
            backoff: BackoffConfig::default(),
            budget: RetryBudgetConfig::default(),
            retry_non_idempotent: false,
        }
    }
}

/// A retry condition name or a status code.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RetryOnConfig {
    Code(u16),
    Condition(String),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BackoffConfig {
    #[serde(default = "BackoffConfig::default_base")]
    pub base: String,
    #[serde(default = "BackoffConfig::default_max")]
    pub max: String,
}

impl BackoffConfig {
    fn default_base() -> String {
        "25ms".to_owned()
    }
    fn default_max() -> String {
        "250ms".to_owned()
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Self::default_base(),
            max: Self::default_max(),
        }
    }
}

/// Retries in flight per cluster ≤ max(min_concurrency, percent × active requests); retries
/// of tries that never reached an upstream, or died with an endpoint that has stopped taking
/// connections, are free.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RetryBudgetConfig {
    #[serde(default = "RetryBudgetConfig::default_percent")]
    pub percent: f64,
    #[serde(default = "RetryBudgetConfig::default_min_concurrency")]
    pub min_concurrency: u32,
}

impl RetryBudgetConfig {
    fn default_percent() -> f64 {
        20.0
    }
    fn default_min_concurrency() -> u32 {
        3
    }
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            percent: Self::default_percent(),
            min_concurrency: Self::default_min_concurrency(),
        }
    }
}
