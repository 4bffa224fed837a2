//! `/explain`'s account of a matched route's policies: the answer it would give at the edge
//! (redirect with its Location, or direct response), or the path and authority it would send
//! upstream. Used by the admin API's `explain`.

use serde_json::{Value, json};

use crate::route::decision::RequestFacts;
use crate::table::policies::answer::{self, EdgeAnswer, RedirectRequest};
use crate::table::policies::rewrite::rewrite_path;
use crate::table::routes::Route;

/// The policies part of an explanation; `None` for a route without any.
pub(super) fn view(
    table: &crate::table::RoutingTable,
    route: &Route,
    facts: &RequestFacts<'_>,
) -> Option<Value> {
    let summary = crate::table::policies::route_summary(table, route);
    let policies = route.policies.as_ref();
    if summary.is_empty() {
        return None;
    }
    let mut out = json!({ "applied": summary });
    if let Some(edge) = policies.and_then(|p| p.answer.as_ref()) {
        out["answer"] = match edge {
            EdgeAnswer::Redirect(r) => json!({
                "redirect": r.code.as_u16(),
                "location": answer::location(r, &route.path, &RedirectRequest {
                    https: facts.https,
                    authority: facts.authority,
                    path: facts.path,
                    query: facts.query,
                }),
            }),
            EdgeAnswer::Direct { status, body } => {
                json!({ "direct_response": status.as_u16(), "body_bytes": body.len() })
            }
        };
    }
    if let Some(rewrite) = policies.and_then(|p| p.rewrite.as_ref()) {
        if let Some(rule) = &rewrite.path {
            out["rewritten_path"] = json!(rewrite_path(rule, &route.path, facts.path));
        }
        if let Some(authority) = &rewrite.authority {
            out["rewritten_authority"] = json!(authority.to_str().unwrap_or_default());
        }
    }
    Some(out)
}

/// Whether the route answers at the edge (then no upstream decision is made).
pub(super) fn answers_at_edge(route: &Route) -> bool {
    route.policies.as_ref().is_some_and(|p| p.answer.is_some())
}
