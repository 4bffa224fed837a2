//! One request past the handler's entry: request filters (strict checks, route match), the
//! decision, the upstream request, then the exchange (`attempt`) or the WebSocket splice.

use super::*;
use crate::table::policies::cors::CorsVerdict;

use crate::table::policies::headers::VarValues;

/// An HTTP/1.1 WebSocket handshake: GET with `Connection: upgrade` and `Upgrade: websocket`.
/// Every other upgrade (h2c included) is stripped as a hop-by-hop header, never forwarded.
pub(super) fn is_websocket(parts: &http::request::Parts, headers: HeadersRef<'_>) -> bool {
    let has_token = |kind: Known, token: &str| {
        headers.values(kind).any(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    parts.method == http::Method::GET
        && parts.version == Version::HTTP_11
        && has_token(Known::Connection, "upgrade")
        && has_token(Known::Upgrade, "websocket")
}

/// The request's host as a header value (cheap to clone: it shares the request's bytes).
pub(super) fn request_host(
    version: Version,
    uri: &Uri,
    headers: HeadersRef<'_>,
) -> Result<HeaderValue, ProxyError> {
    // HTTP/2 and absolute-form requests carry the authority in the URI; it wins. An
    // HTTP/1.1 request must carry Host all the same (RFC 9112 §3.2); strict checks have
    // made sure the two agree.
    if let Some(authority) = uri.authority() {
        if version == Version::HTTP_11 && headers.first(Known::Host).is_none() {
            return Err(ProxyError::MissingHost);
        }
        return HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::MissingHost);
    }
    // The strict checks have held it to `host[:port]`: nothing more to look at.
    headers.value(Known::Host).ok_or(ProxyError::MissingHost)
}

pub(super) async fn forward(
    table: &RoutingTable,
    context: &mut RequestContext,
    req: Request<ClientBody>,
    started: Instant,
    trace: &mut Trace,
) -> Result<Box<Answer>, ProxyError> {
    // Borrowed, not moved: the context stays in the handler's future, so this (larger) one
    // does not carry a second copy of it.
    let mut raw = context.raw.take();
    let client_cert = context.client_cert.take();
    let peer = context.peer;
    let scheme = &context.scheme;
    let (mut parts, body) = req.into_parts();
    let headers = HeadersRef::of(&parts.headers, raw.as_ref());
    let present = Present::of(headers);
    crate::http1::strict::check_request(
        &parts.method,
        parts.version,
        &parts.uri,
        headers,
        present,
    )?;
    let raw_host = request_host(parts.version, &parts.uri, headers)?;
    let authority = raw_host.to_str().unwrap_or_default();
    let host = normalize_host(authority);
    let mut rng = fastrand::Rng::new();
    let facts = RequestFacts {
        peer: peer.ip(),
        host: &host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        method: &parts.method,
        // A string compare: `Scheme`'s own comparison costs more, on every request.
        https: scheme.as_str() == "https",
        authority,
        headers,
        present,
    };
    let (route_index, route) = find_route(table, &facts)?;
    trace.route = Some(route_index);
    let peer_trusted = table.geo.is_trusted(peer.ip());
    if peer_trusted && present.has(Known::Debug) && headers.first(Known::Debug) == Some(b"1") {
        trace.explain = Some(Vec::new());
    }
    // Policies that may answer at the edge, before any upstream is chosen.
    if let Some(cors) = &route.cors {
        match policies::cors::verdict(cors, &parts.method, headers) {
            CorsVerdict::Preflight(origin) => return Ok(policies::cors::preflight(cors, origin)),
            // Whatever answers from here on (Meridian's own included) gets the CORS headers.
            CorsVerdict::Allowed(origin) => {
                trace.additions.get_or_insert_default().cors_origin = Some(origin);
            }
            CorsVerdict::Pass => {}
        }
    }
    if let Some(fault) = &route.fault
        // Boxed: its timer would otherwise grow every request's future, fault or not.
        && let Some(answer) = Box::pin(policies::fault::inject(fault, route, started, trace)).await?
    {
        return Ok(answer);
    }
    if let Some(policies) = &route.policies
        && let Some(edge) = &policies.answer
    {
        return Ok(policies::answer_at_edge(
            table, route, policies, edge, &facts, trace,
        ));
    }
    let decision = decide_for_route(table, route, &facts, &mut rng, None)?;
    trace.cluster = Some(decision.cluster_id);
    trace.region = Some(decision.region);
    trace.client = Some(decision.client);
    trace.country = decision.location.country;
    table.count_geo_lookup(decision.location.source);
    if let Some(cookie) = decision
        .affinity
        .as_ref()
        .and_then(|k| k.set_cookie.as_ref())
    {
        trace.additions.get_or_insert_default().set_cookie = Some(cookie.clone());
    }
    if let Some(lines) = &mut trace.explain {
        lines.insert(0, explain_decision(table, &decision));
    }
    tracing::debug!(
        client = %decision.client,
        client.country = ?decision.location.country.map(|c| c.to_string()),
        route = %decision.route.name,
        region = %table.region_name(decision.region),
        endpoint = %decision.endpoint.address,
        panic = decision.panic,
        "routing"
    );

    // Only hyper's requests can upgrade (the own HTTP/1.1 loop hands those to hyper).
    let websocket = present.has(Known::Upgrade) && raw.is_none() && is_websocket(&parts, headers);
    let client_upgrade = websocket
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    if present.has(Known::HopByHop) {
        match raw.as_mut() {
            Some(fields) => crate::http1::headers::strip_hop_by_hop_fields(fields),
            None => strip_hop_by_hop(&mut parts.headers),
        }
    }
    if present.has(Known::Debug) {
        match raw.as_mut() {
            Some(fields) => fields
                .retain(|name| !name.eq_ignore_ascii_case(X_MERIDIAN_DEBUG.as_str().as_bytes())),
            None => {
                parts.headers.remove(X_MERIDIAN_DEBUG);
            }
        }
    }
    if let Some(client_cert) = &client_cert {
        super::client_cert::forward(client_cert, &mut parts.headers, &mut raw);
    }
    let headers = HeadersRef::of(&parts.headers, raw.as_ref());
    let mut overrides = Overrides::default();
    set_forwarding_headers(
        &mut overrides,
        headers,
        present,
        peer.ip(),
        peer_trusted,
        scheme,
        &raw_host,
    );
    set_visited(
        &mut overrides,
        headers,
        peer_trusted && present.has(Known::Visited),
        &table.regions[table.local_region as usize].header,
    );
    // A Host the Connection header named was stripped with the hop-by-hop headers.
    let host_sent = present.has(Known::Host)
        && !(present.has(Known::HopByHop) && headers.first(Known::Host).is_none());
    if parts.version == Version::HTTP_2 || !host_sent {
        // HTTP/2 goes upstream as HTTP/1.1: Host is the :authority we routed by, whatever a
        // `host` header said.
        overrides.set(Overridden::Host, raw_host.clone());
    }
    if let Some(policies) = &decision.route.policies {
        let request_id = overrides.get(Overridden::RequestId).cloned();
        let vars = VarValues {
            country: decision.location.country.as_ref().map(|c| c.as_str()),
            client: Some(decision.client),
            region: &table.regions[decision.region as usize].name,
            request_id: request_id.as_ref(),
        };
        policies::before_upstream(
            decision.route,
            policies,
            &mut parts,
            &mut raw,
            &mut overrides,
            &vars,
            trace,
        )?;
    }
    let headers = HeadersRef::of(&parts.headers, raw.as_ref());
    if table.access_log != AccessLogFormat::Off {
        trace.request_id = overrides.get(Overridden::RequestId).cloned();
    }
    if let Some(client_upgrade) = client_upgrade {
        trace.tries = 1;
        trace.endpoint = Some(decision.endpoint.address);
        let request_id = overrides.get(Overridden::RequestId).cloned();
        overrides.apply(&mut parts.headers);
        let mut response = Box::pin(crate::proxy::websocket::forward(
            &table.regions[decision.region as usize].name,
            &decision,
            parts,
            client_upgrade,
        ))
        .await?;
        response.headers_mut().insert(
            X_MERIDIAN_REGION,
            table.regions[decision.region as usize].header.clone(),
        );
        if let Some(id) = request_id {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        return Ok(response.into());
    }
    let route = decision.route;
    let deadline = super::grpc::deadline(started, route.timeout, parts.version, headers, trace);
    // In a block of its own: the exchange borrows the overrides until it is dropped.
    let (mut answer, region) = {
        let exchange = async {
            // The body is declared in a block that ends before the tries are awaited, so the
            // exchange keeps no second slot for it (a moved-from local otherwise keeps one).
            let tries = {
                let body = ReplayBody::new(
                    body,
                    headers,
                    route.max_replay_body,
                    route.max_body,
                    route.body_idle_timeout,
                    decision.cluster.pool.h2().is_some(),
                )
                .await?;
                if let Some(mirrors) = &route.mirrors {
                    let original = policies::mirror::Original {
                        parts: &parts,
                        raw: raw.as_ref(),
                        overrides: &overrides,
                        host: &raw_host,
                    };
                    policies::mirror::send(
                        table, &decision, mirrors, &original, &body, &mut rng, trace,
                    );
                }
                let request = Outgoing {
                    parts: &parts,
                    headers,
                    overrides: &overrides,
                };
                attempts(table, &decision, request, body, &mut rng, trace)
            };
            tries.await
        };
        // Pinned where it is: handing the (large) future to the timeout by value would copy it.
        tokio::pin!(exchange);
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ProxyError::Timeout {
                    endpoint: decision.endpoint.address,
                    region: table.region_name(decision.region).to_owned(),
                    after: route.timeout,
                });
            }
        }
    };
    // Hop-by-hop fields were left out when the head was read.
    answer.region = Some(table.regions[region as usize].header.clone());
    answer.request_id = overrides.take(Overridden::RequestId);
    if let Some(rules) = route
        .policies
        .as_ref()
        .and_then(|p| p.response_headers.as_ref())
    {
        let request_id = answer.request_id.clone();
        let vars = VarValues {
            country: decision.location.country.as_ref().map(|c| c.as_str()),
            client: Some(decision.client),
            region: &table.regions[region as usize].name,
            request_id: request_id.as_ref(),
        };
        policies::on_response(&mut answer, rules, &vars);
    }
    Ok(answer)
}
