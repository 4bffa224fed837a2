//! One try against an HTTP/2 upstream (cluster protocols `http2`, `h2c`, `auto`): admission,
//! a stream from the pool, the request, the response head. A stream the upstream refused
//! unprocessed (GOAWAY, REFUSED_STREAM) goes again on another connection within the try, as
//! a stale HTTP/1.1 keep-alive connection does. Called by `attempt::try_once`.

use super::*;
use crate::upstream::h2_exchange::{self, H2Answer, H2Failure, H2ResponseBody, PumpEnd};
use crate::upstream::pool::H2Checkout;

/// Streams sent in one try: the first, and one more for each refused unprocessed.
const SENDS_PER_TRY: usize = 3;

/// What an HTTP/2 try came to; `Http1` gives the body back for the HTTP/1.1 pool (`auto`,
/// and the endpoint chose HTTP/1.1).
pub(super) enum H2Tried {
    Tried(Tried),
    Http1(UpstreamBody),
}

pub(super) async fn try_once_h2(
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    request: Outgoing<'_>,
    body: UpstreamBody,
    replay_limit: u64,
) -> H2Tried {
    let permit = match cluster.pool.admit() {
        Ok(permit) => permit,
        Err(overflow) => return H2Tried::Tried(Tried::Refused(overflow)),
    };
    let in_flight = InFlight::new(&endpoint.state);
    let tls = cluster.pool.tls.is_some();
    let mut body = body;
    let mut last: Option<H2Failure> = None;
    for _ in 0..SENDS_PER_TRY {
        let stream = match cluster.pool.checkout_h2(endpoint.address).await {
            Ok(H2Checkout::Stream(stream)) => stream,
            Ok(H2Checkout::Http1) => return H2Tried::Http1(body),
            Err(UpstreamError::Overflow(o)) => return H2Tried::Tried(Tried::Refused(o)),
            Err(e) => {
                return H2Tried::Tried(Tried::Failed {
                    failure: AttemptFailure::ConnectFailure,
                    cause: e.into(),
                    unsent: Some(body),
                });
            }
        };
        let head = upstream_request(request, tls, &body);
        match h2_exchange::exchange(stream, head, body, replay_limit).await {
            Ok(answer) => {
                return H2Tried::Tried(Tried::AnsweredH2(Box::new(answer), (permit, in_flight)));
            }
            Err((failure @ (H2Failure::NotSent(_) | H2Failure::Refused(_)), Some(again))) => {
                tracing::debug!(endpoint = %endpoint.address, error = %failure, "sending the stream again on another connection");
                body = again;
                last = Some(failure);
            }
            Err((failure @ H2Failure::Refused(_), None)) => {
                return H2Tried::Tried(Tried::Failed {
                    failure: AttemptFailure::RefusedStream,
                    cause: AttemptError::H2(failure),
                    unsent: None,
                });
            }
            Err((failure, again)) => {
                // Given back whole: a retry may send it again if the policy allows.
                return H2Tried::Tried(Tried::Failed {
                    failure: AttemptFailure::Reset,
                    cause: AttemptError::H2(failure),
                    unsent: again,
                });
            }
        }
    }
    H2Tried::Tried(Tried::Failed {
        failure: AttemptFailure::RefusedStream,
        cause: match last {
            Some(failure) => AttemptError::H2(failure),
            None => AttemptError::NotReplayable,
        },
        unsent: Some(body),
    })
}

/// The request head as it goes upstream over HTTP/2: the authority routed by, the client's
/// end-to-end headers with Meridian's overrides, `te: trailers` for a gRPC call (gRPC servers
/// may insist on it; it was stripped as hop-by-hop), and a Content-Length only for a body
/// held whole.
fn upstream_request(request: Outgoing<'_>, tls: bool, body: &UpstreamBody) -> http::Request<()> {
    let Outgoing {
        parts,
        headers,
        overrides,
    } = request;
    let authority = overrides
        .get(Overridden::Host)
        .cloned()
        .or_else(|| headers.value(Known::Host));
    let mut uri = http::uri::Builder::new().scheme(if tls { "https" } else { "http" });
    if let Some(authority) = authority.as_ref().and_then(|a| a.to_str().ok()) {
        uri = uri.authority(authority);
    }
    let uri = uri
        .path_and_query(
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .build()
        .unwrap_or_else(|_| parts.uri.clone());
    let mut out = http::Request::new(());
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_2;
    let map = out.headers_mut();
    let mut grpc = false;
    for (name, value, kind) in headers.iter_known() {
        let skipped = match kind {
            Some(Known::Host | Known::ContentLength | Known::TransferEncoding | Known::Expect) => {
                true
            }
            Some(k) => k.is_hop_by_hop() || overrides.replaces_kind(Some(k)),
            None => crate::http1::headers::is_hop_by_hop_name(name),
        };
        if skipped {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if name == header::CONTENT_TYPE {
            grpc |= super::grpc::is_grpc_content_type(value.as_bytes());
        }
        map.append(name, value);
    }
    for (name, value) in overrides.iter() {
        if *name != header::HOST {
            map.insert(name.clone(), value.clone());
        }
    }
    if grpc {
        map.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Either::Left(bytes) = body
        && !bytes.is_empty()
    {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    out
}

/// The upstream's HTTP/2 answer for the client: its head as is, its body streamed with its
/// trailers (bounded by a gRPC call's deadline when it has one).
pub(super) fn h2_response(
    answer: H2Answer,
    guards: AttemptGuards,
    response_idle: Duration,
    deadline: Option<Instant>,
) -> Box<Answer> {
    let H2Answer {
        response,
        stream,
        pump,
    } = answer;
    let (parts, recv) = response.into_parts();
    let body = H2ResponseBody::new(recv, stream, pump, guards, response_idle, deadline);
    let mut response = Response::from_parts(parts, Either::Right(Either::Right(body)));
    // The client's side decides its own framing; HTTP/1.1 clients get chunked bodies.
    *response.version_mut() = Version::HTTP_11;
    Box::new(Answer {
        response,
        upstream: Default::default(),
        region: None,
        request_id: None,
    })
}

/// What a trailers-only gRPC answer says, for retries: the `grpc-status` of an answer that
/// ended with its head, when not OK.
pub(super) fn grpc_failure(answer: &H2Answer) -> Option<u8> {
    if !answer.response.body().is_end_stream() {
        return None;
    }
    super::grpc::status_in(answer.response.headers()).filter(|code| *code != 0)
}

/// The request body back from an answer that will be retried: whole, when it was streamed to
/// its end within the replay limit (a gRPC call's single message, typically). The client's
/// end of stream normally comes right behind its last message, so the pump is given a moment
/// to see it; a client still streaming keeps its body, and the answer is not retried.
pub(super) async fn sent_body(answer: &mut H2Answer) -> Option<UpstreamBody> {
    let pump = answer.pump.as_mut()?;
    match tokio::time::timeout(PUMP_GRACE, pump).await {
        Ok(Ok(PumpEnd::Complete(Some(bytes)))) => {
            answer.pump = None;
            Some(Either::Left(bytes))
        }
        Ok(_) => {
            answer.pump = None;
            None
        }
        Err(_) => None,
    }
}

/// How long a retry waits for the request body's end to be seen (see [`sent_body`]).
const PUMP_GRACE: Duration = Duration::from_millis(50);
