//! The admin listener: health, readiness, metrics, effective config, cluster state, explained
//! routing, reload, and the status page.
//!
//! Reads the table in service and the server's reload status; writes only through
//! `Server::reload`. When a token is configured every request must carry it as a bearer token.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

mod explain_dns;
mod explain_policies;

use crate::control::lifecycle::Server;
use crate::control::reload::Trigger;
use crate::control::status;
use crate::route::decision::{RequestFacts, decide_for_route, find_route};
use crate::steer;
use crate::table::routes::normalize_host;
use crate::table::{Endpoint, RoutingTable};

/// The status page, served from the binary.
const STATUS_PAGE: &str = include_str!("status.html");

pub async fn handle(
    server: Arc<Server>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let table = server.table.load_full();
    // Probes reveal nothing and kubelet cannot hold a secret: they need no token.
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if let Some(token) = &table.admin_token
        && !probe
        && !authorized(req.headers(), token)
    {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (admin.token_file)\n".into(),
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    let draining = server.lifecycle.draining.load(Ordering::SeqCst);
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") if draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into()),
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n".into()),
        (&Method::GET, "/metrics") => {
            set_endpoint_gauges(&server, &table);
            let mut r = text(StatusCode::OK, server.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/config") => json_response(StatusCode::OK, config_view(&server, &table)),
        (&Method::GET, "/clusters") => json_response(StatusCode::OK, clusters_view(&table)),
        (&Method::GET, "/explain") => {
            let (status, body) = explain(&table, req.uri().query().unwrap_or(""));
            json_response(status, body)
        }
        (&Method::GET, "/status") => json_response(
            StatusCode::OK,
            server.window.read(|ring| status::view::status(&table, ring)),
        ),
        (&Method::GET, "/status/clients") => json_response(
            StatusCode::OK,
            server.window.read(status::view::clients),
        ),
        (&Method::GET, "/status/routes") => {
            let (status, body) = status_routes(&server, &table, req.uri().query().unwrap_or(""));
            json_response(status, body)
        }
        (&Method::POST, "/reload") => match server.reload(Trigger::Admin).await {
            Ok(result) => json_response(
                StatusCode::OK,
                json!({ "result": result.as_str(), "generation": server.table.load().generation }),
            ),
            Err(e) => {
                let status = match e {
                    crate::control::ControlError::NoConfigFile => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                json_response(status, json!({ "result": "failed", "error": e.to_string(), "status": server.reload_status().as_ref() }))
            }
        },
        (&Method::GET, "/") => {
            let mut r = text(StatusCode::OK, STATUS_PAGE.into());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            r
        }
        (_, "/reload") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n".into()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /healthz, /readyz, /metrics, /config, /clusters, /explain, /status, /status/clients, /status/routes, POST /reload\n".into(),
        ),
    })
}

/// Endpoint health as gauges, read from the table at scrape time (endpoints a reload removed
/// disappear from the output).
fn set_endpoint_gauges(server: &Server, table: &RoutingTable) {
    let gauge = &server.metrics.endpoint_healthy;
    gauge.reset();
    for cluster in &table.clusters {
        for (region, set) in cluster.regions.iter().enumerate() {
            let region = table.region_name(region as steer::RegionId);
            for e in set.members().endpoints.iter() {
                let address = e.address.to_string();
                gauge
                    .with_label_values(&[cluster.name.as_str(), region, address.as_str()])
                    .set(i64::from(e.is_usable()));
            }
        }
    }
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn config_view(server: &Server, table: &RoutingTable) -> Value {
    let status = server.reload_status();
    json!({
        "generation": table.generation,
        "hash": status.hash,
        "source": server.config_path.as_ref().map(|p| p.display().to_string()),
        "loaded_at": status.loaded_at,
        "last_reload": status.last,
        "config": table.config.as_ref(),
    })
}

fn endpoint_view(e: &Endpoint) -> Value {
    let s = &e.state;
    let ejected = s.ejected.load(Ordering::Relaxed);
    let healthy = s.healthy.load(Ordering::Relaxed);
    let remaining_ms = if ejected {
        s.ejected_until().map(|t| {
            t.saturating_duration_since(tokio::time::Instant::now())
                .as_millis() as u64
        })
    } else {
        None
    };
    let state = if ejected {
        "ejected"
    } else if !healthy {
        "down"
    } else if e.weight == 0 {
        "drained"
    } else {
        "healthy"
    };
    json!({
        "address": e.address.to_string(),
        "weight": e.weight,
        "state": state,
        "healthy": healthy,
        "ejected": ejected,
        "ejection_remaining_ms": remaining_ms,
        "times_ejected": s.ejections.load(Ordering::Relaxed),
        "in_flight": s.in_flight.load(Ordering::Relaxed),
        "requests": s.requests.load(Ordering::Relaxed),
        "errors": s.errors.load(Ordering::Relaxed),
        "success_rate": f64::from(s.success_rate.load(Ordering::Relaxed)) / 10_000.0,
    })
}

fn clusters_view(table: &RoutingTable) -> Value {
    let clusters: Vec<Value> = table
        .clusters
        .iter()
        .map(|c| {
            let regions: Vec<Value> = c
                .regions
                .iter()
                .enumerate()
                .filter(|(_, set)| !set.sources.is_empty())
                .map(|(id, set)| {
                    let h = set.health();
                    json!({
                        "region": table.region_name(id as steer::RegionId),
                        "healthy_share": h.share(),
                        "endpoints": set.members().endpoints.iter().map(|e| endpoint_view(e)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let s = &c.stats;
            json!({
                "name": c.name,
                "load_balancer": c.load_balancer,
                "affinity": c.affinity.as_ref().map(|a| a.describe()),
                "regions": regions,
                "active_requests": c.active_requests.load(Ordering::Relaxed),
                "stats": {
                    "tries": s.attempts(),
                    "tries_without_response": s.local_failures(),
                    "retries": s.retries.get(),
                    "retry_budget_exhausted": s.retry_budget_exhausted.get(),
                    "overflow_max_requests": s.overflow_max_requests.get(),
                    "overflow_max_pending_requests": s.overflow_max_pending_requests.get(),
                    "ejections": s.ejections.get(),
                    "ejections_refused": s.ejections_refused.get(),
                },
            })
        })
        .collect();
    json!({
        "generation": table.generation,
        "local_region": table.region_name(table.local_region),
        "regions": table.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "clusters": clusters,
        "peers": peers_view(table),
    })
}

/// Each peer, and whether its region is in steering (an empty list without peers).
fn peers_view(table: &RoutingTable) -> Value {
    let peers = table.peers.iter().flat_map(|p| p.list.iter());
    let peers: Vec<Value> = peers
        .map(|p| {
            let up = p.state.is_up();
            json!({
                "region": p.region_name,
                "url": &*p.target.url,
                "up": up,
                "probes": {
                    "up": p.probes.up.get(),
                    "status": p.probes.status.get(),
                    "error": p.probes.error.get(),
                    "timeout": p.probes.timeout.get(),
                },
            })
        })
        .collect();
    Value::Array(peers)
}

/// `GET /status/routes?client=<IP or country>`: every route's mode and live split, and the
/// region order a client like that would get; 400 with the reason for anything else.
fn status_routes(server: &Server, table: &RoutingTable, query: &str) -> (StatusCode, Value) {
    let client = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "client")
        .map(|(_, v)| v.into_owned());
    let client = match client.as_deref().map(status::view::parse_sample_client) {
        None => None,
        Some(Ok(client)) => Some(client),
        Some(Err(error)) => return (StatusCode::BAD_REQUEST, json!({ "error": error })),
    };
    let view = server
        .window
        .read(|ring| status::view::routes(table, ring, client));
    (StatusCode::OK, view)
}

/// `GET /explain?ip=&host=&path=&query=&scheme=&method=&header=name:value`: what a request
/// like that would do now, without sending it (and what the route's policies would change).
/// With `name=` it explains a GeoDNS answer instead (see `explain_dns`).
fn explain(table: &RoutingTable, query: &str) -> (StatusCode, Value) {
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        params
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    if params.contains_key("name") {
        return explain_dns::explain(table, &params);
    }
    let first = |k: &str| params.get(k).and_then(|v| v.first()).map(String::as_str);
    let Some(ip) = first("ip").and_then(|ip| ip.parse::<IpAddr>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            json!({ "error": "give ip=<client address>, e.g. /explain?ip=198.51.100.7&host=api.example.com&path=/" }),
        );
    };
    let raw_host = first("host").unwrap_or("");
    let host = normalize_host(raw_host);
    // `path=/cart?user=42` (encoded) carries a query too.
    let (path, query) = match first("path").unwrap_or("/").split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (first("path").unwrap_or("/"), None),
    };
    let method = first("method")
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for h in params.get("header").into_iter().flatten() {
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    let facts = RequestFacts {
        peer: ip,
        host: &host,
        path,
        query: first("query").or(query),
        method: &method,
        https: first("scheme").is_some_and(|s| s.eq_ignore_ascii_case("https")),
        authority: raw_host,
        headers: crate::http1::raw_fields::HeadersRef::Map(&headers),
        present: crate::http1::headers::Present::of(crate::http1::raw_fields::HeadersRef::Map(
            &headers,
        )),
    };
    let location = table.geo.locate(ip);
    let client = json!({
        "ip": ip.to_string(),
        "location_source": location.source.as_str(),
        "country": location.country.map(|c| c.to_string()),
        "continent": location.continent.map(|c| c.to_string()),
        "coordinates": location.coords.map(|p| p.degrees()).map(|(lat, lon)| json!({ "lat": lat, "lon": lon })),
        "region_override": location.region.map(|r| table.region_name(r).to_owned()),
    });
    let (_, route) = match find_route(table, &facts) {
        Ok(found) => found,
        Err(e) => {
            return (
                StatusCode::OK,
                json!({ "client": client, "route": null, "result": e.to_string() }),
            );
        }
    };
    let mut policies = explain_policies::view(table, route, &facts);
    if route.cors.is_some() || route.fault.is_some() || route.mirrors.is_some() {
        let more = crate::table::policies::explain::describe(table, route, &method, facts.headers);
        let view = policies.get_or_insert_with(|| json!({}));
        for key in ["cors", "fault", "mirrors"] {
            view[key] = more[key].clone();
        }
    }
    if explain_policies::answers_at_edge(route) {
        return (
            StatusCode::OK,
            json!({ "client": client, "route": route.name, "policies": policies, "result": "answered at the edge" }),
        );
    }
    let mut rng = fastrand::Rng::new();
    let decision = decide_for_route(table, route, &facts, &mut rng, Some(fastrand::f64()));
    let cluster_view = |cluster: &crate::table::Cluster, order: &steer::RegionOrder| {
        let loads = steer::expected_loads(
            &route.steering,
            order,
            |r| cluster.health(r),
            cluster.panic_threshold,
        );
        order
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut view = json!({
                    "region": table.region_name(*r),
                    "healthy_share": cluster.health(*r).share(),
                    "load": loads[i],
                });
                if cluster.peer_down(*r) {
                    view["dropped"] = json!("its peer Meridian is down");
                }
                view
            })
            .collect::<Vec<_>>()
    };
    match decision {
        Ok(d) => (
            StatusCode::OK,
            json!({
                "client": client,
                "route": route.name,
                "cluster": d.cluster.name,
                "order": cluster_view(d.cluster, &d.order),
                "region": table.region_name(d.region),
                "panic": d.panic,
                "endpoint": d.endpoint.address.to_string(),
                "policies": policies,
                "hash_key": d.cluster.affinity.as_deref().map(|a| crate::route::affinity::explain(a, d.affinity.as_deref())),
                "result": "routed",
            }),
        ),
        Err(e) => (
            StatusCode::OK,
            json!({ "client": client, "route": route.name, "policies": policies, "result": e.to_string() }),
        ),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(&h, "s3cret"));
    }
}
