//! Route policies on the request path: answers given at the edge (redirect, direct
//! response), the path and authority rewrite and request header rules applied to the
//! upstream request, and response header rules applied to the answer.
//!
//! Called from `proxy::forward` only for a route whose `policies` is set; the compiled rules
//! and their pure parts live in `table::policies`. CORS, fault and mirror have a file each,
//! each called from the phase it belongs to only when the route has it.

pub mod affinity;
pub(super) mod cors;
pub(super) mod fault;
pub(super) mod mirror;

use super::*;

use crate::route::decision::RequestFacts;
use crate::table::policies::RoutePolicies;
use crate::table::policies::answer::{self, EdgeAnswer, RedirectRequest};
use crate::table::policies::headers::{HeaderRules, VarValues};
use crate::table::policies::rewrite::rewrite_path;
use crate::table::routes::Route;

/// The answer of a route that answers at the edge: nothing is sent upstream.
pub(super) fn answer_at_edge(
    table: &RoutingTable,
    route: &Route,
    policies: &RoutePolicies,
    edge: &EdgeAnswer,
    facts: &RequestFacts<'_>,
    trace: &mut Trace,
) -> Box<Answer> {
    let mut response = match edge {
        EdgeAnswer::Redirect(r) => {
            let location = answer::location(
                r,
                &route.path,
                &RedirectRequest {
                    https: facts.https,
                    authority: facts.authority,
                    path: facts.path,
                    query: facts.query,
                },
            );
            if let Some(lines) = &mut trace.explain {
                lines.push(format!(
                    "route {}: redirect {} to {location}",
                    route.name,
                    r.code.as_u16()
                ));
            }
            let mut response = Response::new(crate::proxy::made_body(Bytes::new()));
            match HeaderValue::from_str(&location) {
                Ok(value) => {
                    *response.status_mut() = r.code;
                    response.headers_mut().insert(header::LOCATION, value);
                }
                // Only a request target the strict checks let through is copied into it, so
                // this is not expected; answer without pointing anywhere.
                Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
            }
            response
        }
        EdgeAnswer::Direct { status, body } => {
            if let Some(lines) = &mut trace.explain {
                lines.push(format!(
                    "route {}: direct response {}",
                    route.name,
                    status.as_u16()
                ));
            }
            let mut response = Response::new(crate::proxy::made_body(body.clone()));
            *response.status_mut() = *status;
            if !body.is_empty() {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            response
        }
    };
    if let Some(rules) = &policies.response_headers {
        let local = &table.regions[table.local_region as usize].name;
        let (client, country) = if rules.uses_client() {
            let forwarded_for = facts
                .present
                .has(Known::ForwardedFor)
                .then(|| facts.headers.values(Known::ForwardedFor))
                .into_iter()
                .flatten();
            let (client, _) = table.geo.client_addr(facts.peer, forwarded_for);
            (Some(client), table.geo.locate(client).country)
        } else {
            (None, None)
        };
        let vars = VarValues {
            country: country.as_ref().map(|c| c.as_str()),
            client,
            region: local,
            request_id: None,
        };
        rules.apply(response.headers_mut(), &vars);
    }
    response.into()
}

/// Rewrite the path and authority and apply the request header rules to the upstream request.
/// The request's fields, when read by Meridian's own loop, move into the header map first.
pub(super) fn before_upstream(
    route: &Route,
    policies: &RoutePolicies,
    parts: &mut http::request::Parts,
    raw: &mut Option<Fields>,
    overrides: &mut Overrides,
    vars: &VarValues<'_>,
    trace: &mut Trace,
) -> Result<(), ProxyError> {
    if let Some(rewrite) = &policies.rewrite {
        if let Some(rule) = &rewrite.path {
            let mut target = rewrite_path(rule, &route.path, parts.uri.path());
            if let Some(query) = parts.uri.query() {
                target.push('?');
                target.push_str(query);
            }
            if let Some(lines) = &mut trace.explain {
                lines.push(format!("rewritten path {target}"));
            }
            parts.uri = match Uri::try_from(target) {
                Ok(uri) if uri.path().starts_with('/') => uri,
                _ => {
                    return Err(ProxyError::Rewrite {
                        route: route.name.clone(),
                    });
                }
            };
        }
        if let Some(authority) = &rewrite.authority {
            if let Some(lines) = &mut trace.explain {
                lines.push(format!(
                    "rewritten authority {}",
                    authority.to_str().unwrap_or_default()
                ));
            }
            overrides.set(Overridden::Host, authority.clone());
        }
    }
    if let Some(rules) = &policies.request_headers {
        if let Some(fields) = raw.take() {
            fields.merge_into(&mut parts.headers);
        }
        rules.apply(&mut parts.headers, vars);
    }
    Ok(())
}

/// Response header rules on a proxied answer: the upstream's fields join the answer's map
/// first, so a rule sees (and may remove or add to) what the upstream said.
pub(super) fn on_response(answer: &mut Answer, rules: &HeaderRules, vars: &VarValues<'_>) {
    let upstream = std::mem::take(&mut answer.upstream);
    if !upstream.is_empty() {
        upstream.merge_into(answer.response.headers_mut());
    }
    rules.apply(answer.response.headers_mut(), vars);
}
