//! The data plane's request handler: decide, rewrite, forward, answer.
//!
//! Every request loads the current table once and finishes on it, even if a reload swaps in
//! another meanwhile. Errors are values of [`ProxyError`], turned into a response in one place.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::decision::{DecisionError, RequestFacts, decide};
use crate::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_MERIDIAN_ERROR, X_MERIDIAN_REGION,
    X_REQUEST_ID, strip_hop_by_hop,
};
use crate::routes::normalize_host;
use crate::table::{EndpointState, TableHandle};

/// Responses are either streamed from the upstream or made by Meridian.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Why Meridian answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no Host header or authority")]
    MissingHost,
    #[error("the Host header is not valid: {0:?}")]
    BadHost(HeaderValue),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("connect to {endpoint} ({region}) failed: {source}")]
    Connect {
        endpoint: SocketAddr,
        region: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("upstream {endpoint} ({region}) failed: {source}")]
    Upstream {
        endpoint: SocketAddr,
        region: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("upstream {endpoint} ({region}) did not answer within the route timeout of {after:?}")]
    Timeout {
        endpoint: SocketAddr,
        region: String,
        after: Duration,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHost | Self::BadHost(_) => StatusCode::BAD_REQUEST,
            Self::Decision(DecisionError::NoRoute { .. }) => StatusCode::NOT_FOUND,
            Self::Decision(DecisionError::NoEndpoint { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Short reason for the `x-meridian-error` header and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHost => "missing-host",
            Self::BadHost(_) => "bad-host",
            Self::Decision(DecisionError::NoRoute { .. }) => "no-route",
            Self::Decision(DecisionError::NoEndpoint { .. }) => "no-healthy-endpoint",
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
        response
    }
}

/// Counts a request against an endpoint while it is outstanding.
struct InFlight(Arc<EndpointState>);

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

/// The hyper service body: always answers, never fails.
pub async fn handle(
    table: TableHandle,
    peer: SocketAddr,
    scheme: Scheme,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    Ok(match forward(table, peer, scheme, req).await {
        Ok(response) => response,
        Err(e) => {
            match e.status() {
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                    tracing::debug!(client = %peer, %method, %path, error = %e, "answered by meridian")
                }
                _ => {
                    tracing::warn!(client = %peer, %method, %path, error = %e, "answered by meridian")
                }
            }
            e.into_response()
        }
    })
}

fn request_host(req: &Request<Incoming>) -> Result<String, ProxyError> {
    // HTTP/2 and absolute-form requests carry the authority in the URI; it wins.
    if let Some(authority) = req.uri().authority() {
        return Ok(authority.as_str().to_owned());
    }
    let value = req
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::MissingHost)?;
    value
        .to_str()
        .map(str::to_owned)
        .map_err(|_| ProxyError::BadHost(value.clone()))
}

async fn forward(
    table: TableHandle,
    peer: SocketAddr,
    scheme: Scheme,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let table = table.load_full();
    let raw_host = request_host(&req)?;
    let host = normalize_host(&raw_host);
    let mut rng = fastrand::Rng::new();
    let decision = decide(
        &table,
        &RequestFacts {
            peer: peer.ip(),
            host: &host,
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        },
        &mut rng,
    )?;
    let endpoint = decision.endpoint;
    let region = &table.regions[decision.region as usize];
    tracing::debug!(
        client = %decision.client,
        client.country = ?decision.location.country.map(|c| c.to_string()),
        route = %decision.route.name,
        region = %region.name,
        endpoint = %endpoint.address,
        panic = decision.panic,
        "routing"
    );

    let peer_trusted = table.geo.is_trusted(peer.ip());
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let request_id = set_forwarding_headers(
        &mut parts.headers,
        peer.ip(),
        peer_trusted,
        &scheme,
        &raw_host,
    );
    if !parts.headers.contains_key(header::HOST) {
        // An HTTP/2 request goes upstream as HTTP/1.1, which needs a Host header.
        if let Ok(value) = HeaderValue::from_str(&raw_host) {
            parts.headers.insert(header::HOST, value);
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.authority.clone());
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::MissingHost)?;
    parts.version = Version::HTTP_11;

    let in_flight = InFlight::new(&endpoint.state);
    let timeout = decision.route.timeout;
    let sent = tokio::time::timeout(
        timeout,
        decision
            .cluster
            .client
            .request(Request::from_parts(parts, body)),
    )
    .await;
    drop(in_flight);
    let response = match sent {
        Err(_) => {
            return Err(ProxyError::Timeout {
                endpoint: endpoint.address,
                region: region.name.clone(),
                after: timeout,
            });
        }
        Ok(Err(source)) if source.is_connect() => {
            return Err(ProxyError::Connect {
                endpoint: endpoint.address,
                region: region.name.clone(),
                source,
            });
        }
        Ok(Err(source)) => {
            return Err(ProxyError::Upstream {
                endpoint: endpoint.address,
                region: region.name.clone(),
                source,
            });
        }
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(X_MERIDIAN_REGION, region.header.clone());
    parts.headers.insert(X_REQUEST_ID, request_id);
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// Set X-Forwarded-For/-Proto/-Host and x-request-id; returns the request id.
///
/// What a trusted proxy in front of us said is kept (and the peer appended to
/// X-Forwarded-For); what an untrusted client said is replaced, so nothing behind Meridian is
/// misled by a forged header.
fn set_forwarding_headers(
    headers: &mut http::HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    scheme: &Scheme,
    raw_host: &str,
) -> HeaderValue {
    let peer_text = peer.to_canonical().to_string();
    let forwarded_for = if peer_trusted {
        let earlier: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if earlier.is_empty() {
            peer_text
        } else {
            format!("{}, {peer_text}", earlier.join(", "))
        }
    } else {
        peer_text
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = if *scheme == Scheme::HTTPS {
            "https"
        } else {
            "http"
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(peer_trusted && headers.contains_key(X_FORWARDED_HOST))
        && let Ok(value) = HeaderValue::from_str(raw_host)
    {
        headers.insert(X_FORWARDED_HOST, value);
    }
    let kept_id = headers
        .get(X_REQUEST_ID)
        .filter(|v| peer_trusted && !v.is_empty() && v.len() <= 128)
        .cloned();
    let id = kept_id.unwrap_or_else(new_request_id);
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 128 random bits as 32 hex digits.
fn new_request_id() -> HeaderValue {
    let text = format!("{:032x}", fastrand::u128(..));
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_trust_only_trusted_peers() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "198.51.100.7".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        h.insert(X_REQUEST_ID, "abc".parse().unwrap());
        let mut trusted = h.clone();
        let id = set_forwarding_headers(&mut trusted, peer, true, &Scheme::HTTP, "api.example.com");
        assert_eq!(trusted[X_FORWARDED_FOR], "198.51.100.7, 10.0.0.1");
        assert_eq!(trusted[X_FORWARDED_PROTO], "https");
        assert_eq!(trusted[X_FORWARDED_HOST], "api.example.com");
        assert_eq!(id, "abc");

        let mut untrusted = h;
        let id = set_forwarding_headers(
            &mut untrusted,
            peer,
            false,
            &Scheme::HTTP,
            "api.example.com",
        );
        assert_eq!(untrusted[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(untrusted[X_FORWARDED_PROTO], "http");
        assert_ne!(id, "abc");
        assert_eq!(id.len(), 32);
    }
}
