//! Compiled route policies: the extra match conditions (`matching`), path and authority
//! rewrites (`rewrite`), answers given at the edge (`answer`: redirect and direct response)
//! and header rules (`headers`).
//!
//! Built by `table::compile::policies`; read by `table::routes` while matching and by
//! `proxy::policies` on the request path. A route without any holds `None`, so a request on it
//! checks one pointer and does nothing else.

pub mod answer;
pub mod headers;
pub mod matching;
pub mod rewrite;

use crate::table::routes::{PathMatch, Route};
use answer::EdgeAnswer;
use headers::HeaderRules;
use rewrite::Rewrite;

/// What a route does besides forwarding a request unchanged.
#[derive(Debug, Default)]
pub struct RoutePolicies {
    pub rewrite: Option<Rewrite>,
    /// Set: the route answers itself and never reaches a cluster.
    pub answer: Option<EdgeAnswer>,
    pub request_headers: Option<HeaderRules>,
    pub response_headers: Option<HeaderRules>,
}

impl RoutePolicies {
    pub fn is_empty(&self) -> bool {
        self.rewrite.is_none()
            && self.answer.is_none()
            && self.request_headers.is_none()
            && self.response_headers.is_none()
    }

    /// One phrase per policy, for `meridian check` and logs.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(r) = &self.rewrite {
            out.push(r.describe());
        }
        if let Some(a) = &self.answer {
            out.push(a.describe());
        }
        if let Some(h) = &self.request_headers {
            out.push(format!("request headers {}", h.describe()));
        }
        if let Some(h) = &self.response_headers {
            out.push(format!("response headers {}", h.describe()));
        }
        out
    }
}

/// What a route does beyond plain matching and forwarding, one phrase each: its extra match
/// conditions and its policies (empty for a plain route). Shown by `meridian check`.
pub fn route_summary(route: &Route) -> Vec<String> {
    let mut out = Vec::new();
    if matches!(
        route.path,
        PathMatch::ExactIgnoreCase(_) | PathMatch::PrefixIgnoreCase(_)
    ) {
        out.push("path ignores case".to_owned());
    }
    if let Some(extra) = &route.extra {
        out.extend(extra.describe());
    }
    if let Some(policies) = &route.policies {
        out.extend(policies.summary());
    }
    out
}
