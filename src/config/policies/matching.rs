//! A route's `match` block: path, headers, methods, and the Istio HTTPMatchRequest extras
//! (query parameters, scheme, port, headers that must not match, case-insensitive paths).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MatchConfig {
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Compare `path_exact` and `path_prefix` (and `path_regex`) without regard to case.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_case: bool,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
    /// The route matches only if none of these matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<HeaderMatchConfig>,
    /// Query parameters, each matched against its decoded value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<HeaderMatchConfig>,
    /// `http` or `https`: the scheme the client used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The port the client addressed (from Host or the authority; 80 or 443 by scheme when
    /// it names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Allowed methods; empty allows all.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// A header (or query parameter) match: at most one of `exact`, `prefix`, `regex`, `present`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HeaderMatchConfig {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be there (the default when no value match is given);
    /// `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}
