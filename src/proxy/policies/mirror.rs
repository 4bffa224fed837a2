//! Mirroring on the request path: fire-and-forget copies of a buffered request to the route's
//! mirror clusters (see `table::policies::mirror`).
//!
//! A copy never delays or fails the client's request: it is decided without waiting, sent
//! from a task of its own under the route's timeout, and its answer is read and thrown away.
//! Copies in flight per mirror cluster are bounded; past the bound they are dropped.

use crate::proxy::*;
use crate::table::policies::mirror::{Mirror, MirrorSlot};

/// What the client's request looks like upstream, borrowed from the forward phase.
pub(in crate::proxy) struct Original<'r> {
    pub parts: &'r http::request::Parts,
    pub raw: Option<&'r Fields>,
    pub overrides: &'r Overrides,
    /// The Host (or :authority) the request was routed by.
    pub host: &'r HeaderValue,
}

/// Send a copy to each mirror whose share picks this request.
pub(in crate::proxy) fn send(
    table: &RoutingTable,
    decision: &RouteDecision<'_>,
    mirrors: &[Mirror],
    original: &Original<'_>,
    body: &ReplayBody,
    rng: &mut fastrand::Rng,
    trace: &mut Trace,
) {
    for mirror in mirrors {
        let result = send_one(table, decision, mirror, original, body, rng);
        if let Some(lines) = &mut trace.explain {
            let name = table
                .clusters
                .get(mirror.cluster)
                .map(|c| c.name.as_str())
                .unwrap_or("?");
            lines.push(format!("mirror {name}: {result}"));
        }
    }
}

fn send_one(
    table: &RoutingTable,
    decision: &RouteDecision<'_>,
    mirror: &Mirror,
    original: &Original<'_>,
    body: &ReplayBody,
    rng: &mut fastrand::Rng,
) -> &'static str {
    if !mirror.chance.take() {
        return "not drawn";
    }
    // Only a body already held whole can be sent twice without holding up the client's.
    let ReplayBody::Buffered(bytes) = body else {
        mirror.metrics.skipped.inc();
        return "skipped (body not replayable)";
    };
    let Some(slot) = mirror.slot() else {
        mirror.metrics.dropped.inc();
        return "dropped (max_in_flight)";
    };
    let Some(cluster) = table.clusters.get(mirror.cluster) else {
        mirror.metrics.failed.inc();
        return "failed (no cluster)";
    };
    let route = decision.route;
    let endpoint = crate::steer::pick_region(
        &route.steering,
        &decision.order,
        |r| cluster.health(r),
        mirror.next_draw(),
        cluster.panic_threshold,
    )
    .ok()
    .and_then(|pick| {
        cluster.regions.get(pick.region as usize)?.pick(
            cluster.load_balancer,
            pick.panic,
            rng,
            &|_| false,
        )
    });
    let Some(endpoint) = endpoint else {
        mirror.metrics.failed.inc();
        return "failed (no endpoint)";
    };
    let Some(copy) = copy_request(original) else {
        mirror.metrics.failed.inc();
        return "failed (request not copied)";
    };
    let task = Copy {
        pool: cluster.pool.clone(),
        endpoint,
        request: copy,
        body: bytes.clone(),
        response_idle: route.response_idle_timeout,
        slot,
    };
    let (sent, failed) = (mirror.metrics.sent.clone(), mirror.metrics.failed.clone());
    let timeout = route.timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, task.run()).await {
            Ok(true) => sent.inc(),
            _ => failed.inc(),
        }
    });
    "sent"
}

/// The request as the mirror receives it: the client's, with `-shadow` on its host.
struct Request {
    parts: http::request::Parts,
    raw: Option<Fields>,
    overrides: Overrides,
}

fn copy_request(original: &Original<'_>) -> Option<Request> {
    let (mut parts, ()) = http::Request::builder()
        .method(original.parts.method.clone())
        .uri(original.parts.uri.clone())
        .version(original.parts.version)
        .body(())
        .ok()?
        .into_parts();
    parts.headers = original.parts.headers.clone();
    let mut overrides = original.overrides.clone();
    overrides.set(Overridden::Host, shadow_host(original.host)?);
    Some(Request {
        parts,
        raw: original.raw.cloned(),
        overrides,
    })
}

/// Envoy's shadow host: `-shadow` after the host name, before any port.
pub(in crate::proxy) fn shadow_host(host: &HeaderValue) -> Option<HeaderValue> {
    let text = host.to_str().ok()?;
    let (name, port) = match text.rfind(':') {
        // Not inside an IPv6 literal's brackets.
        Some(colon) if !text[colon..].contains(']') => text.split_at(colon),
        _ => (text, ""),
    };
    HeaderValue::from_str(&format!("{name}-shadow{port}")).ok()
}

/// One copy on its way: what its task owns.
struct Copy {
    pool: Arc<crate::upstream::pool::ClusterPool>,
    endpoint: Arc<Endpoint>,
    request: Request,
    body: Bytes,
    response_idle: Duration,
    /// Held until the copy is done (or its task is dropped).
    slot: MirrorSlot,
}

impl Copy {
    /// Send, read the answer through and discard it: whether an answer came.
    async fn run(self) -> bool {
        let Copy {
            pool,
            endpoint,
            request,
            body,
            response_idle,
            slot,
        } = self;
        let _slot = slot;
        // The mirror cluster's own circuit breakers bound what copies may take from it.
        let Ok(permit) = pool.admit() else {
            return false;
        };
        let _in_flight = InFlight::new(&endpoint.state);
        let Ok(mut conn) = pool.checkout(endpoint.address).await else {
            return false;
        };
        conn.start_request();
        let outgoing = Outgoing {
            parts: &request.parts,
            headers: HeadersRef::of(&request.parts.headers, request.raw.as_ref()),
            overrides: &request.overrides,
        };
        let head = match conn.conn.exchange(outgoing, Either::Left(body)).await {
            Ok(head) => head,
            Err(_) => {
                conn.discard();
                return false;
            }
        };
        // Read through so the connection can go back to the pool.
        let answer = UpstreamResponseBody::new(head.framing, conn, permit, response_idle);
        answer.collect().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts() {
        for (host, want) in [
            ("api.example.com", "api.example.com-shadow"),
            ("api.example.com:8080", "api.example.com-shadow:8080"),
            ("127.0.0.1:80", "127.0.0.1-shadow:80"),
            ("[::1]:8080", "[::1]-shadow:8080"),
            ("[::1]", "[::1]-shadow"),
        ] {
            let got = shadow_host(&HeaderValue::from_static(host)).unwrap();
            assert_eq!(got, want, "{host}");
        }
    }
}
