//! The data plane's request handler: decide, rewrite, forward, answer.
//!
//! Every request loads the current table once and finishes on it, even if a reload swaps in
//! another meanwhile. Errors are values of [`ProxyError`], turned into a response in one place;
//! an upstream failure keeps its cause ([`AttemptError`]: the pool's or the exchange's error).
//!
//! The phases: request filters and the decision (`forward`), the upstream request
//! (`rewrite`), the exchange with retries (`attempt`, `replay`), then the response filters
//! and the log (here). Called by `edge`; uses `route` and everything below it, never `edge`
//! or `control`.

mod attempt;
mod client_cert;
mod error;
mod explain;
mod forward;
pub(crate) mod grpc;
mod h2_attempt;
mod policies;
mod redirect;
mod replay;
mod rewrite;
pub mod websocket;

pub use attempt::InFlight;
use attempt::*;
pub use error::{AttemptError, ProxyError};
use explain::*;
use forward::*;
pub use redirect::redirect_to_https;
use replay::*;
use rewrite::*;

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
use hyper::body::Body;
use tokio::time::Instant;

use crate::config::AccessLogFormat;
use crate::geo::{AddrSource, CountryCode};
use crate::http1::body::StreamedBody;
use crate::http1::client::{ExchangeError, Outgoing, UpstreamHead};
use crate::http1::headers::{Known, Present};
use crate::http1::headers::{Overridden, Overrides};
use crate::http1::headers::{
    X_MERIDIAN_DEBUG, X_MERIDIAN_DECISION, X_MERIDIAN_ERROR, X_MERIDIAN_OVERFLOW,
    X_MERIDIAN_REGION, X_REQUEST_ID, strip_hop_by_hop,
};
use crate::http1::raw_fields::{Fields, HeadersRef};
use crate::http1::strict::Malformed;
use crate::route::decision::{
    DecisionError, RequestFacts, RouteDecision, decide_for_route, find_route, retry_target,
};
use crate::steer::RegionId;
use crate::table::retry::{
    AttemptFailure, BudgetVerdict, PerTryTimeout, TryCost, parse_retry_after,
};
use crate::table::routes::ClusterId;
use crate::table::routes::normalize_host;
use crate::table::{Cluster, Endpoint, RoutingTable};
use crate::table::{EndpointState, TableHandle};
use crate::telemetry::access_log::{self, AccessRecord};
use crate::upstream::ClusterStats;
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::{
    Overflow, PooledConn, RequestPermit, UpstreamBody, UpstreamError, UpstreamResponseBody,
};

/// Guards an upstream response body holds until it has been read.
pub type AttemptGuards = (RequestPermit, InFlight);

/// Responses are streamed from an HTTP/1.1 upstream, made by Meridian, or streamed from an
/// HTTP/2 upstream (trailers included). The HTTP/1.1 body comes first: its path matches once.
pub type ProxyBody = Either<
    UpstreamResponseBody<AttemptGuards>,
    Either<Full<Bytes>, crate::upstream::h2_exchange::H2ResponseBody<AttemptGuards>>,
>;

/// A body made by Meridian.
pub fn made_body(bytes: Bytes) -> ProxyBody {
    Either::Right(Either::Left(Full::new(bytes)))
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
    /// The faults injected (the access log's `fault`).
    pub fault: crate::table::policies::fault::FaultKind,
    /// What policies add to the answer, whatever it is; `None` (one pointer) on a route
    /// without them.
    pub additions: Option<Box<AnswerAdditions>>,
    /// A gRPC call's deadline (`grpc-timeout`, capped by the route timeout): it bounds the
    /// response body too.
    pub grpc_deadline: Option<Instant>,
}

/// Headers route policies add to any answer, Meridian's own included.
#[derive(Debug, Default)]
pub struct AnswerAdditions {
    /// The request's `Origin`, when the route's CORS policy allows it: the answer gets the
    /// CORS headers.
    pub cors_origin: Option<HeaderValue>,
    /// A session-affinity cookie Meridian generated.
    pub set_cookie: Option<HeaderValue>,
}

/// The handler's answer (see [`crate::http1::answer::Answer`]) with the proxy's body.
pub type Answer = crate::http1::answer::Answer<ProxyBody>;
pub use crate::http1::answer::ClientBody;

/// What the connection knows about one request: transport facts that travel with it from the
/// listener through the phases, so none of them is a parameter of its own.
pub struct RequestContext {
    /// The client (after the PROXY protocol, when the listener speaks it).
    pub peer: SocketAddr,
    pub scheme: Scheme,
    /// Set on a listener that answers every request with a redirect to this https port.
    pub redirect_https: Option<u16>,
    /// The framing watcher of a connection served by hyper (HTTP/1.1 smuggling defence).
    pub framing: Option<Arc<crate::http1::framing::FramingLog>>,
    /// The head's fields as received, for a request read by Meridian's own HTTP/1.1 loop.
    pub raw: Option<Fields>,
    /// The header telling the upstream about the client's certificate, on a listener that
    /// forwards them (`tls.forward_client_cert`).
    pub client_cert: Option<Arc<crate::tls::client_auth::ForwardedClientCert>>,
}

/// The request handler: always answers, never fails.
pub async fn handle(
    table: TableHandle,
    context: RequestContext,
    req: Request<ClientBody>,
) -> Result<Box<Answer>, Infallible> {
    let mut context = context;
    let peer = context.peer;
    crate::alloc::note_request();
    // Taken for every request, in order, before anything else can return.
    let refused = match req.version() <= http::Version::HTTP_11 {
        true => context.framing.take().and_then(|log| log.next_refusal()),
        false => None,
    };
    if let Some(port) = context.redirect_https {
        let headers = HeadersRef::of(req.headers(), context.raw.as_ref());
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
        .then(|| HeadersRef::of(req.headers(), context.raw.as_ref()).value(Known::Host))
        .flatten();
    let mut trace = Trace::default();
    // Only an HTTP/2 request can be a gRPC call: HTTP/1.1 requests skip the lookup.
    let grpc = req.version() == Version::HTTP_2 && grpc::is_grpc(req.version(), req.headers());
    let mut answer = match forward(&table, &mut context, req, started, &mut trace).await {
        Ok(answer) => answer,
        Err(e) => {
            match e.status() {
                // A delay injected past the timeout was configured to happen: no warning.
                _ if matches!(e, ProxyError::FaultDelayTimeout { .. }) => {
                    tracing::debug!(client = %peer, %method, path = %uri.path(), error = %e, "answered by meridian")
                }
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                    tracing::debug!(client = %peer, %method, path = %uri.path(), error = %e, "answered by meridian")
                }
                _ => {
                    tracing::warn!(client = %peer, %method, path = %uri.path(), error = %e, "answered by meridian")
                }
            }
            if grpc {
                e.into_grpc_response().into()
            } else {
                e.into_response().into()
            }
        }
    };
    if let Some(additions) = trace.additions.take() {
        let AnswerAdditions {
            cors_origin,
            set_cookie,
        } = *additions;
        if let Some(origin) = cors_origin
            && let Some(cors) = trace
                .route
                .and_then(|i| table.routes.routes.get(i))
                .and_then(|r| r.cors.as_deref())
        {
            policies::cors::decorate(cors, origin, &mut answer);
        }
        if let Some(cookie) = set_cookie {
            policies::affinity::add_set_cookie(&mut answer, cookie);
        }
    }
    let elapsed = started.elapsed();
    let status = answer.response.status().as_u16();
    let metrics = match trace.route.and_then(|i| table.routes.routes.get(i)) {
        Some(route) => route.metrics.get(trace.cluster, trace.region),
        None => &table.unrouted_metrics,
    };
    metrics.observe(status, elapsed.as_secs_f64());
    if let Some(region) = trace.region {
        table.metrics.landing.count(trace.country, region);
    }
    if let Some(lines) = &trace.explain
        && !lines.is_empty()
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
            fault: trace.fault.as_str(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        };
        access_log::log(&record, table.access_log);
    }
    Ok(answer)
}
