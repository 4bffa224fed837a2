//! `cors:` on a route, with Istio's `corsPolicy` field meanings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorsConfig {
    /// Origins allowed to make cross-origin requests; `exact: "*"` allows any origin.
    #[serde(default)]
    pub allow_origins: Vec<StringMatchConfig>,
    /// `Access-Control-Allow-Methods` of a preflight answer.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// `Access-Control-Allow-Headers` of a preflight answer.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// `Access-Control-Expose-Headers` of an allowed request's answer.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer (`Access-Control-Max-Age`).
    #[serde(default)]
    pub max_age: Option<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// One of `exact`, `prefix` or `regex` (anchored: it must match the whole value).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StringMatchConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}
