//! What a route's CORS, fault and mirror policies would do with a request, for the admin
//! `/explain` and `meridian check`. Reads the policies' counts without moving them.

use http::Method;
use serde_json::{Value, json};

use super::cors::CorsVerdict;
use crate::http1::raw_fields::HeadersRef;
use crate::table::RoutingTable;
use crate::table::routes::{Route, RouteSet};

/// `/explain`'s `policies` object for a request like this one on `route`: `null` fields for
/// policies the route does not have.
pub fn describe(
    table: &RoutingTable,
    route: &Route,
    method: &Method,
    headers: HeadersRef<'_>,
) -> Value {
    let cors = route.cors.as_ref().map(|cors| {
        let origin = headers.values_named(&http::header::ORIGIN).next();
        let request_method = headers
            .values_named(&http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .next()
            .is_some();
        match cors.verdict(method, origin, request_method) {
            CorsVerdict::Preflight(_) => "preflight answered at the edge",
            CorsVerdict::Allowed(_) => "origin allowed: CORS headers added",
            CorsVerdict::Pass if origin.is_some() => "origin not allowed: no CORS headers",
            CorsVerdict::Pass => "no Origin: no CORS headers",
        }
    });
    let fault = route.fault.as_ref().map(|fault| {
        let next = fault.peek();
        json!({
            "delay": fault.delay.as_ref().map(|(d, c)| json!({ "fixed": format!("{d:?}"), "percent": c.percent() })),
            "abort": fault.abort.as_ref().map(|(s, c)| json!({ "status": s.as_u16(), "percent": c.percent() })),
            "next_request": next.kind().as_str(),
        })
    });
    let mirrors = route.mirrors.as_ref().map(|mirrors| {
        mirrors
            .iter()
            .map(|m| {
                json!({
                    "cluster": table.clusters.get(m.cluster).map(|c| c.name.as_str()),
                    "percent": m.chance.percent(),
                    "max_in_flight": m.max_in_flight,
                    "next_request": if m.chance.peek() { "mirrored" } else { "not mirrored" },
                })
            })
            .collect::<Vec<_>>()
    });
    json!({ "cors": cors, "fault": fault, "mirrors": mirrors })
}

/// `meridian check`'s count of routes with each policy, or nothing when none has any.
pub fn summary(routes: &RouteSet) -> Option<String> {
    let count = |has: fn(&Route) -> bool| routes.routes.iter().filter(|r| has(r)).count();
    let counts = [
        ("CORS", count(|r| r.cors.is_some())),
        ("fault", count(|r| r.fault.is_some())),
        ("mirror", count(|r| r.mirrors.is_some())),
    ];
    let named: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} with {name}"))
        .collect();
    (!named.is_empty()).then(|| format!("routes with policies: {}", named.join(", ")))
}
