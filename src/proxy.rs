//! The data plane's request handler: decide, rewrite, forward, answer.
//!
//! Every request loads the current table once and finishes on it, even if a reload swaps in
//! another meanwhile. Errors are values of [`ProxyError`], turned into a response in one place.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::access_log::{self, AccessRecord};
use crate::body::StreamedBody;
use crate::config::AccessLogFormat;
use crate::decision::{
    DecisionError, RequestFacts, RouteDecision, decide_for_route, find_route, retry_target,
};
use crate::fields::{Fields, HeadersRef};
use crate::geo::{AddrSource, CountryCode};
use crate::headers::{Known, Present};
use crate::headers::{Overridden, Overrides};
use crate::headers::{
    X_MERIDIAN_DEBUG, X_MERIDIAN_DECISION, X_MERIDIAN_ERROR, X_MERIDIAN_OVERFLOW,
    X_MERIDIAN_REGION, X_REQUEST_ID, strip_hop_by_hop,
};
use crate::retry::{AttemptFailure, BudgetVerdict, PerTryTimeout, TryCost, parse_retry_after};
use crate::routes::ClusterId;
use crate::routes::normalize_host;
use crate::steer::RegionId;
use crate::strict::Malformed;
use crate::table::{Cluster, Endpoint, RoutingTable};
use crate::table::{EndpointState, TableHandle};
use crate::upstream::ClusterStats;
use crate::upstream::h1::{ExchangeError, Outgoing, UpstreamHead};
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::{
    CheckoutError, Overflow, PooledConn, RequestPermit, UpstreamBody, UpstreamResponseBody,
};

/// Guards an upstream response body holds until it has been read.
pub type AttemptGuards = (RequestPermit, InFlight);

/// Responses are either streamed from the upstream or made by Meridian.
pub type ProxyBody = Either<UpstreamResponseBody<AttemptGuards>, Full<Bytes>>;

/// Why Meridian answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no Host header or authority")]
    MissingHost,
    #[error("the request body could not be read: {0}")]
    BadBody(#[source] hyper::Error),
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("cluster `{cluster}` is at its {} limit", .overflow.as_str())]
    Overflow { cluster: String, overflow: Overflow },
    #[error("connect to {endpoint} ({region}) failed: {detail}")]
    Connect {
        endpoint: SocketAddr,
        region: String,
        detail: String,
    },
    #[error("upstream {endpoint} ({region}) failed: {detail}")]
    Upstream {
        endpoint: SocketAddr,
        region: String,
        detail: String,
    },
    #[error("upstream {endpoint} ({region}) did not answer within {after:?}")]
    Timeout {
        endpoint: SocketAddr,
        region: String,
        after: Duration,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHost | Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::Malformed(m) => m.status(),
            Self::Decision(DecisionError::NoRoute { .. }) => StatusCode::NOT_FOUND,
            Self::Decision(DecisionError::NoEndpoint { .. } | DecisionError::RegionLoop { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short reason for the `x-meridian-error` header and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHost => "missing-host",
            Self::BadBody(_) => "bad-body",
            Self::Malformed(m) => m.code(),
            Self::Decision(DecisionError::NoRoute { .. }) => "no-route",
            Self::Decision(DecisionError::NoEndpoint { .. }) => "no-healthy-endpoint",
            Self::Decision(DecisionError::RegionLoop { .. }) => "region-loop",
            Self::Overflow { .. } => "overflow",
            Self::Connect { .. } => "upstream-connect-failure",
            Self::Upstream { .. } => "upstream-reset",
            Self::Timeout { .. } => "upstream-timeout",
        }
    }

    /// What the client is told: enough to act on, without upstream addresses.
    fn client_message(&self) -> String {
        match self {
            Self::Connect { region, .. } => format!("could not connect to an upstream in {region}"),
            Self::Upstream { region, .. } => {
                format!("the upstream in {region} failed before answering")
            }
            Self::Timeout { region, after, .. } => {
                format!("the upstream in {region} did not answer within {after:?}")
            }
            other => other.to_string(),
        }
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let body = format!("meridian: {}\n", self.client_message());
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(X_MERIDIAN_ERROR, HeaderValue::from_static(self.code()));
        if let Self::Overflow { overflow, .. } = &self {
            headers.insert(
                X_MERIDIAN_OVERFLOW,
                HeaderValue::from_static(overflow.as_str()),
            );
        }
        // After a framing error nothing more on this connection can be trusted.
        if matches!(
            self,
            Self::Malformed(_) | Self::BadBody(_) | Self::MissingHost
        ) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Counts a request against an endpoint while it is outstanding.
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    fn new(state: &Arc<EndpointState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What happened to one request: for metrics, the access log and `x-meridian-decision`.
#[derive(Debug, Default)]
pub struct Trace {
    pub route: Option<usize>,
    pub cluster: Option<ClusterId>,
    pub region: Option<RegionId>,
    pub endpoint: Option<SocketAddr>,
    pub client: Option<IpAddr>,
    pub country: Option<CountryCode>,
    pub tries: u32,
    pub request_id: Option<HeaderValue>,
    /// Set when a trusted client asked for `x-meridian-debug`: the decision, then each try.
    pub explain: Option<Vec<String>>,
}

/// The handler's answer: the response and, for a proxied one, the upstream's header fields
/// as received (see `fields`). They come before the response's own headers, which replace
/// upstream fields of the same name.
pub struct Answer {
    pub response: Response<ProxyBody>,
    pub upstream: Fields,
    /// `x-meridian-region` and `x-request-id` of a proxied answer: kept out of the map so
    /// the common answer needs none (they replace upstream fields of their names).
    pub region: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
}

/// Answers travel boxed: a few hundred bytes that would otherwise be copied at every layer
/// they pass on the way from the upstream exchange to the client's socket.
impl From<Response<ProxyBody>> for Box<Answer> {
    fn from(response: Response<ProxyBody>) -> Self {
        Box::new(Answer {
            response,
            upstream: Fields::default(),
            region: None,
            request_id: None,
        })
    }
}

impl Answer {
    /// One response with every header in its map, for hyper to write.
    pub fn into_response(self: Box<Self>) -> Response<ProxyBody> {
        let Self {
            mut response,
            upstream,
            region,
            request_id,
        } = *self;
        let headers = response.headers_mut();
        if let Some(region) = region {
            headers.insert(X_MERIDIAN_REGION, region);
        }
        if let Some(id) = request_id {
            headers.insert(X_REQUEST_ID, id);
        }
        if !upstream.is_empty() {
            upstream.merge_into(headers);
        }
        response
    }

    /// Whether a field of the upstream's answer gives way to a header Meridian sets.
    pub fn replaces(&self, name: &[u8]) -> bool {
        (self.region.is_some() && name.eq_ignore_ascii_case(X_MERIDIAN_REGION.as_str().as_bytes()))
            || (self.request_id.is_some()
                && name.eq_ignore_ascii_case(X_REQUEST_ID.as_str().as_bytes()))
            || self
                .response
                .headers()
                .keys()
                .any(|own| own.as_str().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// A client request's body: hyper's, or none at all (requests read by `server_h1`, which
/// takes only requests without one).
pub enum ClientBody {
    Incoming(Incoming),
    /// Read whole by Meridian's own HTTP/1.1 loop (a small Content-Length body).
    Full(Bytes),
    Empty,
}

/// The request handler: always answers, never fails.
pub async fn handle(
    table: TableHandle,
    peer: SocketAddr,
    scheme: Scheme,
    redirect_https: Option<u16>,
    framing: Option<Arc<crate::sniff::FramingLog>>,
    req: Request<ClientBody>,
    raw: Option<Fields>,
) -> Result<Box<Answer>, Infallible> {
    crate::alloc::note_request();
    // Taken for every request, in order, before anything else can return.
    let refused = match req.version() <= http::Version::HTTP_11 {
        true => framing.and_then(|log| log.next_refusal()),
        false => None,
    };
    if let Some(port) = redirect_https {
        let headers = HeadersRef::of(req.headers(), raw.as_ref());
        return Ok(redirect_to_https(req.uri(), headers, port).into());
    }
    if let Some(malformed) = refused {
        tracing::debug!(client = %peer, error = %malformed, "request framing refused");
        return Ok(ProxyError::Malformed(malformed).into_response().into());
    }
    let started = Instant::now();
    // Every request finishes on the table it started with, whatever reloads happen meanwhile.
    let table = table.load_full();
    let method = req.method().clone();
    let uri = req.uri().clone();
    // Only the access log needs it afterwards.
    let host = (table.access_log != AccessLogFormat::Off)
        .then(|| HeadersRef::of(req.headers(), raw.as_ref()).value(Known::Host))
        .flatten();
    let mut trace = Trace::default();
    let mut answer = match forward(&table, peer, scheme, req, raw, started, &mut trace).await {
        Ok(answer) => answer,
        Err(e) => {
            match e.status() {
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                    tracing::debug!(client = %peer, %method, path = %uri.path(), error = %e, "answered by meridian")
                }
                _ => {
                    tracing::warn!(client = %peer, %method, path = %uri.path(), error = %e, "answered by meridian")
                }
            }
            e.into_response().into()
        }
    };
    let elapsed = started.elapsed();
    let status = answer.response.status().as_u16();
    let metrics = match trace.route.and_then(|i| table.routes.routes.get(i)) {
        Some(route) => route.metrics.get(trace.cluster, trace.region),
        None => &table.unrouted_metrics,
    };
    metrics.observe(status, elapsed.as_secs_f64());
    if let Some(lines) = &trace.explain
        && let Ok(value) = HeaderValue::from_str(&lines.join("; "))
    {
        answer
            .response
            .headers_mut()
            .insert(X_MERIDIAN_DECISION, value);
    }
    if table.access_log != AccessLogFormat::Off {
        let route = trace.route.and_then(|i| table.routes.routes.get(i));
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                host.as_ref()
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let record = AccessRecord {
            request_id: trace
                .request_id
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            client: trace.client.unwrap_or(peer.ip()).to_string(),
            country: trace.country.as_ref().map(|c| c.as_str()).unwrap_or("-"),
            method: method.as_str(),
            host: &host,
            path: uri.path(),
            status,
            route: route.map(|r| r.name.as_str()).unwrap_or(""),
            region: trace.region.map(|r| table.region_name(r)).unwrap_or(""),
            endpoint: trace.endpoint.map(|e| e.to_string()).unwrap_or_default(),
            attempts: trace.tries,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        };
        access_log::log(&record, table.access_log);
    }
    Ok(answer)
}

/// A plain listener with `redirect_https`: 308 to the same URL over https.
pub fn redirect_to_https(uri: &Uri, headers: HeadersRef<'_>, port: u16) -> Response<ProxyBody> {
    // The Location is built from the client's Host: one that is not `host[:port]` could
    // point it anywhere.
    let authority = match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => headers.first(Known::Host),
    };
    if !authority.is_some_and(crate::strict::valid_authority) {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    }
    let host = uri
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            headers
                .first(Known::Host)
                .and_then(crate::headers::as_text)
                .map(|h| normalize_host(h).into_owned())
        })
        .unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    match HeaderValue::from_str(&location) {
        Ok(value) if !host.is_empty() => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, value);
        }
        _ => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

/// An HTTP/1.1 WebSocket handshake: GET with `Connection: upgrade` and `Upgrade: websocket`.
/// Every other upgrade (h2c included) is stripped as a hop-by-hop header, never forwarded.
fn is_websocket(parts: &http::request::Parts, headers: HeadersRef<'_>) -> bool {
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
fn request_host(
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

async fn forward(
    table: &RoutingTable,
    peer: SocketAddr,
    scheme: Scheme,
    req: Request<ClientBody>,
    mut raw: Option<Fields>,
    started: Instant,
    trace: &mut Trace,
) -> Result<Box<Answer>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let headers = HeadersRef::of(&parts.headers, raw.as_ref());
    let present = Present::of(headers);
    crate::strict::check_request(&parts.method, parts.version, &parts.uri, headers, present)?;
    let raw_host = request_host(parts.version, &parts.uri, headers)?;
    let host = normalize_host(raw_host.to_str().unwrap_or_default());
    let mut rng = fastrand::Rng::new();
    let facts = RequestFacts {
        peer: peer.ip(),
        host: &host,
        path: parts.uri.path(),
        method: &parts.method,
        headers,
        present,
    };
    let (route_index, route) = find_route(table, &facts)?;
    trace.route = Some(route_index);
    let decision = decide_for_route(table, route, &facts, &mut rng, None)?;
    trace.cluster = Some(decision.cluster_id);
    trace.region = Some(decision.region);
    trace.client = Some(decision.client);
    trace.country = decision.location.country;
    table.count_geo_lookup(decision.location.source);
    let peer_trusted = table.geo.is_trusted(peer.ip());
    if peer_trusted && present.has(Known::Debug) && headers.first(Known::Debug) == Some(b"1") {
        trace.explain = Some(vec![explain_decision(table, &decision)]);
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
            Some(fields) => crate::headers::strip_hop_by_hop_fields(fields),
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
    let headers = HeadersRef::of(&parts.headers, raw.as_ref());
    let mut overrides = Overrides::default();
    set_forwarding_headers(
        &mut overrides,
        headers,
        present,
        peer.ip(),
        peer_trusted,
        &scheme,
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
    if table.access_log != AccessLogFormat::Off {
        trace.request_id = overrides.get(Overridden::RequestId).cloned();
    }
    if let Some(client_upgrade) = client_upgrade {
        trace.tries = 1;
        trace.endpoint = Some(decision.endpoint.address);
        let request_id = overrides.get(Overridden::RequestId).cloned();
        overrides.apply(&mut parts.headers);
        let mut response = Box::pin(crate::websocket::forward(
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
    let deadline = crate::deadline::after(started, route.timeout);
    // In a block of its own: the exchange borrows the overrides until it is dropped.
    let (mut answer, region) = {
        let exchange = async {
            let body = ReplayBody::new(
                body,
                headers,
                route.max_replay_body,
                route.max_body,
                route.body_idle_timeout,
            )
            .await?;
            let request = Outgoing {
                parts: &parts,
                headers,
                overrides: &overrides,
            };
            attempts(table, &decision, request, body, &mut rng, trace).await
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
    Ok(answer)
}

/// A request body that can be sent more than once when small enough.
enum ReplayBody {
    Buffered(Bytes),
    /// Read whole on the way in (Meridian's own HTTP/1.1 loop reads small bodies so) but
    /// past the route's replay limit: sent at most once, as a streamed body is; `None` once
    /// sent. The limit decides what is replayed, not how the body happened to be read.
    Once(Option<Bytes>),
    /// Streamed from the client; `None` once sent.
    Streaming(Option<StreamedBody>, Arc<AtomicBool>),
}

impl ReplayBody {
    /// Buffer the body when it fits in `replay_limit` — read whole before anything is sent, so
    /// a broken chunked framing never reaches a backend — otherwise stream it, refusing
    /// anything past `max_body` (at once when Content-Length says so).
    async fn new(
        body: ClientBody,
        headers: HeadersRef<'_>,
        replay_limit: u64,
        max_body: u64,
        body_idle: Duration,
    ) -> Result<Self, ProxyError> {
        let mut body = match body {
            ClientBody::Empty => return Ok(Self::Buffered(Bytes::new())),
            ClientBody::Full(bytes) if bytes.len() as u64 > max_body => {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            ClientBody::Full(bytes) if bytes.len() as u64 > replay_limit => {
                return Ok(Self::Once(Some(bytes)));
            }
            ClientBody::Full(bytes) => return Ok(Self::Buffered(bytes)),
            ClientBody::Incoming(body) => body,
        };
        if body.is_end_stream() {
            return Ok(Self::Buffered(Bytes::new()));
        }
        if let Some(n) = crate::strict::content_length(headers) {
            if n > max_body {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            if n <= replay_limit {
                let collected = body.collect().await.map_err(ProxyError::BadBody)?;
                return Ok(Self::Buffered(collected.to_bytes()));
            }
            return Ok(Self::streaming(StreamedBody::new(
                None, body, max_body, body_idle,
            )));
        }
        // Chunked: read up to the replay limit first.
        let mut read = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ProxyError::BadBody)?;
            if let Ok(data) = frame.into_data() {
                read.extend_from_slice(&data);
            }
            if read.len() as u64 > max_body {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            if read.len() as u64 > replay_limit {
                return Ok(Self::streaming(StreamedBody::new(
                    Some(read.freeze()),
                    body,
                    max_body,
                    body_idle,
                )));
            }
        }
        Ok(Self::Buffered(read.freeze()))
    }

    fn streaming(body: StreamedBody) -> Self {
        let exceeded = body.exceeded.clone();
        Self::Streaming(Some(body), exceeded)
    }

    /// The body for the next attempt, if there still is one to send.
    fn next(&mut self) -> Option<UpstreamBody> {
        match self {
            Self::Buffered(bytes) => Some(Either::Left(bytes.clone())),
            Self::Once(bytes) => bytes.take().map(Either::Left),
            Self::Streaming(body, _) => body.take().map(Either::Right),
        }
    }

    fn replayable(&self) -> bool {
        matches!(
            self,
            Self::Buffered(_) | Self::Once(Some(_)) | Self::Streaming(Some(_), _)
        )
    }

    /// Whether the streamed body was cut off at the route's limit.
    fn exceeded(&self) -> bool {
        matches!(self, Self::Streaming(_, flag) if flag.load(Ordering::Relaxed))
    }

    /// Give an unsent body back (nothing reached the upstream).
    fn restore(&mut self, body: UpstreamBody) {
        match (self, body) {
            (Self::Streaming(slot, _), Either::Right(streamed)) => *slot = Some(streamed),
            (Self::Once(slot), Either::Left(bytes)) => *slot = Some(bytes),
            _ => {}
        }
    }
}

/// One attempt's result.
enum Tried {
    Answered(UpstreamHead, PooledConn, AttemptGuards),
    Failed {
        failure: AttemptFailure,
        detail: String,
        /// The body, when it was never sent.
        unsent: Option<UpstreamBody>,
    },
    Refused(Overflow),
}

impl Tried {
    fn summary(&self) -> String {
        match self {
            Self::Answered(head, _, _) => head.status.as_u16().to_string(),
            Self::Failed { failure, .. } => format!("{failure:?}"),
            Self::Refused(overflow) => format!("overflow {}", overflow.as_str()),
        }
    }
}

/// The `x-meridian-decision` summary of a routing decision (same facts as `/explain`).
fn explain_decision(table: &RoutingTable, d: &RouteDecision<'_>) -> String {
    let order: Vec<String> = d
        .order
        .as_slice()
        .iter()
        .map(|r| {
            format!(
                "{}={:.0}%",
                table.region_name(*r),
                d.cluster.health(*r).share() * 100.0
            )
        })
        .collect();
    format!(
        "client {} via {} country {} continent {} location {}; route {} cluster {}; order {}; region {}{}; endpoint {}",
        d.client,
        match d.client_source {
            AddrSource::Peer => "peer",
            AddrSource::ForwardedFor => "x-forwarded-for",
        },
        d.location
            .country
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.location
            .continent
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        d.location.source.as_str(),
        d.route.name,
        d.cluster.name,
        order.join(","),
        table.region_name(d.region),
        if d.panic { " (panic)" } else { "" },
        d.endpoint.address,
    )
}

/// Try, and retry within the route's policy: other endpoints first, then later regions.
async fn attempts(
    table: &RoutingTable,
    decision: &RouteDecision<'_>,
    request: Outgoing<'_>,
    mut body: ReplayBody,
    rng: &mut fastrand::Rng,
    trace: &mut Trace,
) -> Result<(Box<Answer>, RegionId), ProxyError> {
    let route = decision.route;
    let cluster = decision.cluster;
    let policy = &route.retries;
    let mut region = decision.region;
    let mut endpoint = decision.endpoint.clone();
    let mut tried: Vec<Arc<Endpoint>> = Vec::new();
    let mut retries = 0u32;
    let _active = Counted::new(&cluster.active_requests);
    // Taken at the first retry and kept until the request ends: a request that is retrying
    // counts against the budget for as long as it lasts, so retries of retries stay bounded.
    let mut retry_slot: Option<Counted<'_>> = None;
    loop {
        let Some(attempt_body) = body.next() else {
            return Err(ProxyError::Upstream {
                endpoint: endpoint.address,
                region: table.region_name(region).to_owned(),
                detail: "the request body was already sent and cannot be replayed".into(),
            });
        };
        trace.tries += 1;
        trace.endpoint = Some(endpoint.address);
        trace.region = Some(region);
        let tried_now = {
            let exchange = try_once(cluster, &endpoint, request, attempt_body);
            // In a block: a try given up is dropped, with its connection and permits, before
            // the next one starts.
            tokio::pin!(exchange);
            match policy.per_try_timeout {
                None => exchange.await,
                Some(limit) => match tokio::time::timeout(limit.after(), exchange.as_mut()).await {
                    Ok(tried) => tried,
                    Err(_) => {
                        // The default deadline only moves a request on: with nowhere to go,
                        // the try keeps the rest of the route timeout.
                        let give_up_try = match limit {
                            PerTryTimeout::Strict(_) => true,
                            PerTryTimeout::MoveOn(_) => {
                                retries < policy.attempts
                                    && policy.may_retry(
                                        AttemptFailure::PerTryTimeout,
                                        &request.parts.method,
                                        body.replayable(),
                                    )
                                    && retry_could_go(
                                        decision,
                                        region,
                                        &tried,
                                        &endpoint,
                                        retry_slot.is_some(),
                                        rng,
                                    )
                            }
                        };
                        if give_up_try {
                            Tried::Failed {
                                failure: AttemptFailure::PerTryTimeout,
                                detail: format!("no answer within {:?}", limit.after()),
                                unsent: None,
                            }
                        } else {
                            exchange.await
                        }
                    }
                },
            }
        };
        if let Some(lines) = &mut trace.explain {
            lines.push(format!(
                "try {}: {} in {} -> {}",
                trace.tries,
                endpoint.address,
                table.region_name(region),
                tried_now.summary()
            ));
        }
        let (failure, retry_after, last) = match tried_now {
            Tried::Refused(overflow) => {
                ClusterStats::bump(match overflow {
                    Overflow::MaxRequests => &cluster.stats.overflow_max_requests,
                    Overflow::MaxPendingRequests => &cluster.stats.overflow_max_pending_requests,
                });
                tracing::info!(cluster = %cluster.name, limit = overflow.as_str(), "circuit breaker overflow");
                return Err(ProxyError::Overflow {
                    cluster: cluster.name.clone(),
                    overflow,
                });
            }
            Tried::Answered(response, conn, guards) => {
                let status = response.status.as_u16();
                cluster.stats.attempts_response.inc();
                endpoint.state.record_outcome(status < 500);
                cluster.reporter.report(&endpoint, Outcome::Status(status));
                let failure = AttemptFailure::Status(status);
                if !policy.covers(failure) {
                    return Ok((
                        stream_response(response, conn, guards, route.response_idle_timeout),
                        region,
                    ));
                }
                let retry_after = parse_retry_after(response.fields.get("retry-after"));
                (failure, retry_after, Last::Response(response, conn, guards))
            }
            Tried::Failed {
                failure,
                detail,
                unsent,
            } => {
                if body.exceeded() {
                    return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                        limit: route.max_body,
                    }));
                }
                cluster.reporter.report(&endpoint, Outcome::LocalFailure);
                endpoint.state.record_outcome(false);
                match failure {
                    AttemptFailure::PerTryTimeout => cluster.stats.attempts_timeout.inc(),
                    AttemptFailure::Reset | AttemptFailure::Status(_) => {
                        cluster.stats.attempts_reset.inc()
                    }
                    AttemptFailure::ConnectFailure | AttemptFailure::RefusedStream => {
                        cluster.stats.attempts_connect_failure.inc()
                    }
                }
                if let Some(unsent) = unsent {
                    body.restore(unsent);
                }
                (failure, None, Last::Error(failure, detail))
            }
        };
        let give_up = retries >= policy.attempts
            || !policy.may_retry(failure, &request.parts.method, body.replayable());
        let next = if give_up {
            None
        } else {
            // Only a request that retries pays for remembering what it tried.
            tried.push(endpoint.clone());
            retry_target(
                cluster,
                &decision.order,
                region,
                decision.panic,
                &tried,
                rng,
            )
        };
        let Some((next_region, next_endpoint)) = next else {
            return last.finish(table, region, &endpoint, route);
        };
        let verdict = admit_retry(cluster, policy, failure, &endpoint, &mut retry_slot).await;
        if verdict == BudgetVerdict::Exhausted {
            ClusterStats::bump(&cluster.stats.retry_budget_exhausted);
            tracing::info!(cluster = %cluster.name, route = %route.name, "retry budget exhausted: not retrying");
            return last.finish(table, region, &endpoint, route);
        }
        drop(last);
        retries += 1;
        ClusterStats::bump(&cluster.stats.retries);
        tracing::debug!(
            cluster = %cluster.name, route = %route.name, retry = retries, ?failure, budget = ?verdict,
            from = %endpoint.address, to = %next_endpoint.address, region = %table.region_name(next_region),
            "retrying"
        );
        tokio::time::sleep(policy.backoff(retries, retry_after, rng)).await;
        region = next_region;
        endpoint = next_endpoint.clone();
    }
}

/// What the last attempt left, for the client when no retry follows.
// Lives on the stack for one attempt; boxing the common case would cost more than it saves.
#[allow(clippy::large_enum_variant)]
enum Last {
    Response(UpstreamHead, PooledConn, AttemptGuards),
    Error(AttemptFailure, String),
}

impl Last {
    fn finish(
        self,
        table: &RoutingTable,
        region: RegionId,
        endpoint: &Endpoint,
        route: &crate::routes::Route,
    ) -> Result<(Box<Answer>, RegionId), ProxyError> {
        let (per_try_timeout, response_idle) =
            (route.retries.per_try_timeout, route.response_idle_timeout);
        let region_name = table.region_name(region).to_owned();
        match self {
            Self::Response(response, conn, guards) => Ok((
                stream_response(response, conn, guards, response_idle),
                region,
            )),
            Self::Error(AttemptFailure::ConnectFailure | AttemptFailure::RefusedStream, detail) => {
                Err(ProxyError::Connect {
                    endpoint: endpoint.address,
                    region: region_name,
                    detail,
                })
            }
            Self::Error(AttemptFailure::PerTryTimeout, _) => Err(ProxyError::Timeout {
                endpoint: endpoint.address,
                region: region_name,
                after: per_try_timeout.map(|t| t.after()).unwrap_or_default(),
            }),
            Self::Error(_, detail) => Err(ProxyError::Upstream {
                endpoint: endpoint.address,
                region: region_name,
                detail,
            }),
        }
    }
}

/// The upstream's response, its body streamed through and its connection returned to the
/// pool once read.
fn stream_response(
    head: UpstreamHead,
    conn: PooledConn,
    guards: AttemptGuards,
    response_idle: Duration,
) -> Box<Answer> {
    let UpstreamHead {
        status,
        version,
        fields,
        framing,
    } = head;
    let mut response = Response::new(Either::Left(UpstreamResponseBody::new(
        framing,
        conn,
        guards,
        response_idle,
    )));
    *response.status_mut() = status;
    *response.version_mut() = version;
    Box::new(Answer {
        response,
        upstream: fields,
        region: None,
        request_id: None,
    })
}

/// Whether a retry could go now from a try against `endpoint` in `region` that is past its
/// default per-try deadline: there is an endpoint this request has not tried, and room in
/// the retry budget (read, not taken: the retry takes its place once decided).
fn retry_could_go(
    decision: &RouteDecision<'_>,
    region: RegionId,
    tried: &[Arc<Endpoint>],
    endpoint: &Arc<Endpoint>,
    slot_held: bool,
    rng: &mut fastrand::Rng,
) -> bool {
    let cluster = decision.cluster;
    let retrying = cluster.active_retries.load(Ordering::Relaxed);
    let others = if slot_held {
        retrying.saturating_sub(1)
    } else {
        retrying
    };
    let room = decision.route.retries.budget(
        TryCost::Work,
        cluster.active_requests.load(Ordering::Relaxed),
        others,
    ) != BudgetVerdict::Exhausted;
    if !room {
        return false;
    }
    let mut seen = tried.to_vec();
    seen.push(endpoint.clone());
    retry_target(cluster, &decision.order, region, decision.panic, &seen, rng).is_some()
}

/// Ask the retry budget whether the request may retry the try that failed with `failure`
/// against `endpoint`; when it may, the request takes its place among those retrying (once,
/// kept until it ends), in the same step as the budget is read, so requests that fail
/// together cannot all pass on one reading.
///
/// A reset the budget would refuse costs one look at its endpoint: when it no longer takes
/// connections it died with the try, nothing running holds the request, and the retry is
/// free like that of a try that never left. All the requests a killed endpoint held reset at
/// the same moment, far more of them than a budget sized for steady failures admits.
async fn admit_retry<'c>(
    cluster: &'c Cluster,
    policy: &crate::retry::RetryPolicy,
    failure: AttemptFailure,
    endpoint: &Endpoint,
    slot: &mut Option<Counted<'c>>,
) -> BudgetVerdict {
    let cost = if failure.reached_upstream() {
        TryCost::Work
    } else {
        TryCost::Nothing
    };
    let verdict = take_retry_place(cluster, policy, cost, slot);
    if verdict == BudgetVerdict::Exhausted
        && failure == AttemptFailure::Reset
        && cluster.pool.refuses_connections(endpoint.address).await
    {
        return take_retry_place(cluster, policy, TryCost::Nothing, slot);
    }
    verdict
}

/// The budget's verdict on a retry that cost `cost`, taking the request's place among those
/// retrying when admitted and it holds none yet.
fn take_retry_place<'c>(
    cluster: &'c Cluster,
    policy: &crate::retry::RetryPolicy,
    cost: TryCost,
    slot: &mut Option<Counted<'c>>,
) -> BudgetVerdict {
    let active = cluster.active_requests.load(Ordering::Relaxed);
    if slot.is_some() {
        // Already counted among those retrying: the others are the rest.
        let others = cluster
            .active_retries
            .load(Ordering::Relaxed)
            .saturating_sub(1);
        return policy.budget(cost, active, others);
    }
    let mut verdict = BudgetVerdict::Exhausted;
    let taken =
        cluster
            .active_retries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |others| {
                verdict = policy.budget(cost, active, others);
                (verdict != BudgetVerdict::Exhausted).then_some(others + 1)
            });
    if taken.is_ok() {
        *slot = Some(Counted(&cluster.active_retries));
    }
    verdict
}

/// Holds one unit of a gauge (active requests, retries in flight) while alive.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt: admission, a pooled connection, the request, the response head.
async fn try_once(
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    request: Outgoing<'_>,
    body: UpstreamBody,
) -> Tried {
    let permit = match cluster.pool.admit() {
        Ok(permit) => permit,
        Err(overflow) => return Tried::Refused(overflow),
    };
    let in_flight = InFlight::new(&endpoint.state);
    // RFC 9110 §9.2.2: a request the upstream closed on without answering may be sent again
    // automatically only when repeating it is harmless.
    let idempotent = request.parts.method.is_idempotent();
    let exchange = async {
        let mut body = body;
        // A reused keep-alive connection may have been closed by the upstream meanwhile; if
        // the request did not get through on it, send it once more on a fresh connection.
        for _ in 0..2 {
            let mut conn = match cluster.pool.checkout(endpoint.address).await {
                Ok(conn) => conn,
                Err(CheckoutError::Overflow(o)) => return Err(Err(o)),
                Err(e) => {
                    return Err(Ok((
                        AttemptFailure::ConnectFailure,
                        e.to_string(),
                        Some(body),
                    )));
                }
            };
            conn.start_request();
            match conn.conn.exchange(request, body).await {
                Ok(response) => return Ok((response, conn)),
                Err((e, again)) => {
                    let reused = conn.reused;
                    conn.discard();
                    let stale = reused
                        && match e {
                            ExchangeError::NotSent(_) => true,
                            ExchangeError::ClosedBeforeAnswer => idempotent,
                            _ => false,
                        };
                    match again {
                        Some(unsent) if stale => body = unsent,
                        Some(unsent) if matches!(e, ExchangeError::NotSent(_)) => {
                            return Err(Ok((
                                AttemptFailure::ConnectFailure,
                                e.to_string(),
                                Some(unsent),
                            )));
                        }
                        _ => return Err(Ok((AttemptFailure::Reset, e.to_string(), None))),
                    }
                }
            }
        }
        Err(Ok((
            AttemptFailure::Reset,
            "the upstream closed two connections in a row".into(),
            None,
        )))
    };
    match exchange.await {
        Ok((response, conn)) => Tried::Answered(response, conn, (permit, in_flight)),
        Err(Err(overflow)) => Tried::Refused(overflow),
        Err(Ok((failure, detail, unsent))) => Tried::Failed {
            failure,
            detail,
            unsent,
        },
    }
}

/// Append our region to the loop guard header; a header from an untrusted peer is dropped.
fn set_visited(
    overrides: &mut Overrides,
    headers: HeadersRef<'_>,
    peer_trusted: bool,
    local_region: &HeaderValue,
) {
    let earlier = if peer_trusted {
        joined(headers.values(Known::Visited))
    } else {
        None
    };
    let value = match earlier {
        // Nothing before us (the common case): the region's prebuilt value, no allocation.
        None => local_region.clone(),
        Some(mut list) => {
            list.push_str(", ");
            list.push_str(local_region.to_str().unwrap_or_default());
            HeaderValue::from_str(&list).unwrap_or_else(|_| local_region.clone())
        }
    };
    overrides.set(Overridden::Visited, value);
}

/// Header values joined with ", ", or `None` when there are none (or none is text).
fn joined<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out: Option<String> = None;
    for v in values {
        let Some(text) = crate::headers::as_text(v) else {
            continue;
        };
        match &mut out {
            Some(list) => {
                list.push_str(", ");
                list.push_str(text);
            }
            None => {
                let mut list = String::with_capacity(text.len() + 32);
                list.push_str(text);
                out = Some(list);
            }
        }
    }
    out
}

/// Set X-Forwarded-For/-Proto/-Host and x-request-id.
///
/// What a trusted proxy in front of us said is kept (and the peer appended to
/// X-Forwarded-For); what an untrusted client said is replaced, so nothing behind Meridian is
/// misled by a forged header.
fn set_forwarding_headers(
    overrides: &mut Overrides,
    headers: HeadersRef<'_>,
    present: Present,
    peer: IpAddr,
    peer_trusted: bool,
    scheme: &Scheme,
    raw_host: &HeaderValue,
) {
    let peer = peer.to_canonical();
    let mut forwarded_for = if peer_trusted && present.has(Known::ForwardedFor) {
        joined(headers.values(Known::ForwardedFor)).map(|mut list| {
            list.push_str(", ");
            list
        })
    } else {
        None
    }
    .unwrap_or_default();
    crate::headers::push_ip(&mut forwarded_for, peer);
    // SAFETY: visible ASCII only (what a HeaderValue may hold): values taken as text
    // (`joined` keeps only those), ", " and an address; not checked a second time.
    let value = unsafe { HeaderValue::from_maybe_shared_unchecked(Bytes::from(forwarded_for)) };
    overrides.set(Overridden::ForwardedFor, value);
    if !(peer_trusted
        && present.has(Known::ForwardedProto)
        && headers.first(Known::ForwardedProto).is_some())
    {
        let proto = if *scheme == Scheme::HTTPS {
            "https"
        } else {
            "http"
        };
        overrides.set(Overridden::ForwardedProto, HeaderValue::from_static(proto));
    }
    if !(peer_trusted
        && present.has(Known::ForwardedHost)
        && headers.first(Known::ForwardedHost).is_some())
    {
        overrides.set(Overridden::ForwardedHost, raw_host.clone());
    }
    let kept_id = (peer_trusted && present.has(Known::RequestId))
        .then(|| headers.value(Known::RequestId))
        .flatten()
        .filter(|v| !v.is_empty() && v.len() <= 128);
    overrides.set(
        Overridden::RequestId,
        kept_id.unwrap_or_else(new_request_id),
    );
}

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Byte by byte: shifting a u128 once per digit costs twice as much.
    let bytes = fastrand::u128(..).to_be_bytes();
    let mut text = [0u8; 32];
    for (pair, byte) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // SAFETY: hex digits only, which a HeaderValue may hold; not checked a second time.
    unsafe { HeaderValue::from_maybe_shared_unchecked(Bytes::copy_from_slice(&text)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

    #[test]
    fn request_ids_are_128_random_bits_in_lowercase_hex() {
        fastrand::seed(7);
        let ids: Vec<HeaderValue> = (0..64).map(|_| new_request_id()).collect();
        fastrand::seed(7);
        let first = fastrand::u128(..);
        assert_eq!(ids[0].to_str().unwrap(), format!("{first:032x}"));
        for id in &ids {
            let text = id.to_str().unwrap();
            assert_eq!(text.len(), 32, "{text}");
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn forwarding_headers_trust_only_trusted_peers() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "198.51.100.7".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        h.insert(X_REQUEST_ID, "abc".parse().unwrap());
        let host = HeaderValue::from_static("api.example.com");
        let forward = |h: &http::HeaderMap, trusted: bool| {
            let mut overrides = Overrides::default();
            set_forwarding_headers(
                &mut overrides,
                HeadersRef::Map(h),
                Present::of(HeadersRef::Map(h)),
                peer,
                trusted,
                &Scheme::HTTP,
                &host,
            );
            let id = overrides.get(Overridden::RequestId).cloned().unwrap();
            let mut sent = h.clone();
            overrides.apply(&mut sent);
            (sent, id)
        };
        let (trusted, id) = forward(&h, true);
        assert_eq!(trusted[X_FORWARDED_FOR], "198.51.100.7, 10.0.0.1");
        assert_eq!(trusted[X_FORWARDED_PROTO], "https");
        assert_eq!(trusted[X_FORWARDED_HOST], "api.example.com");
        assert_eq!(id, "abc");

        let (untrusted, id) = forward(&h, false);
        assert_eq!(untrusted[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(untrusted[X_FORWARDED_PROTO], "http");
        assert_ne!(id, "abc");
        assert_eq!(id.len(), 32);
    }
}
