//! What a route does to a request besides forwarding it: rewrite the path or authority,
//! answer at the edge with a redirect or a fixed response, and header rules on the request
//! and the response. Envoy's and Istio's meanings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `rewrite:` the path (`prefix` or `path_regex`) and the authority sent upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RewriteConfig {
    /// Replaces the matched path prefix (with `path_exact`: the whole path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Every match of `pattern` replaced by `substitution` (`\1` names a capture group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<RegexRewriteConfig>,
    /// The Host (HTTP/2 :authority) sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegexRewriteConfig {
    pub pattern: String,
    pub substitution: String,
}

/// `redirect:` answered at the edge with a Location built from the request and these.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RedirectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replaces the matched path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
}

/// `direct_response:` a fixed answer from the edge.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DirectResponseConfig {
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `request_headers:` / `response_headers:` — removed first, then set, then added.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct HeaderRulesConfig {
    /// Replace any value the header had.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append a value, keeping any there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}
