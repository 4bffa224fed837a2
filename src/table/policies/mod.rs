//! Compiled route policies: the extra match conditions (`matching`), path and authority
//! rewrites (`rewrite`), answers given at the edge (`answer`: redirect and direct response),
//! header rules (`headers`), CORS (`cors`), fault injection (`fault`) and mirroring
//! (`mirror`), with the exact per-request percentages the last two draw (`chance`).
//!
//! Built by `table::compile::policies`; read by `table::routes` while matching and by
//! `proxy::policies` on the request path. A route without any holds `None`, so a request on it
//! checks one pointer and does nothing else.

pub mod affinity;
pub mod answer;
pub mod chance;
pub mod cors;
pub mod explain;
pub mod fault;
pub mod headers;
pub mod matching;
pub mod mirror;
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
pub fn route_summary(table: &crate::table::RoutingTable, route: &Route) -> Vec<String> {
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
    if let Some(cors) = &route.cors {
        out.push(cors.describe());
    }
    if let Some(fault) = &route.fault {
        out.push(fault.describe());
    }
    for m in route.mirrors.iter().flatten() {
        out.push(format!(
            "mirror {}% to {} (at most {} in flight)",
            m.chance.percent(),
            table
                .clusters
                .get(m.cluster)
                .map_or("?", |c| c.name.as_str()),
            m.max_in_flight
        ));
    }
    out
}
