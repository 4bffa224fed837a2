//! The proxy's one error type and its single mapping to a status and a client message.

use super::*;

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
    #[error("connect to {endpoint} ({region}) failed: {cause}")]
    Connect {
        endpoint: SocketAddr,
        region: String,
        #[source]
        cause: Box<AttemptError>,
    },
    #[error("upstream {endpoint} ({region}) failed: {cause}")]
    Upstream {
        endpoint: SocketAddr,
        region: String,
        #[source]
        cause: Box<AttemptError>,
    },
    #[error("route `{route}`: the rewritten path is not a valid request target")]
    Rewrite { route: String },
    #[error("an injected delay outlasted the route timeout of {after:?}")]
    FaultDelayTimeout { after: Duration },
    #[error("upstream {endpoint} ({region}) did not answer within {after:?}")]
    Timeout {
        endpoint: SocketAddr,
        region: String,
        after: Duration,
    },
}

impl AttemptError {
    /// Whether TLS with the upstream failed: its certificate was not trusted, or it refused
    /// Meridian's (or the lack of one: over TLS 1.3 that comes as an alert on the first read).
    pub fn is_tls(&self) -> bool {
        if matches!(self, Self::Checkout(UpstreamError::Tls { .. })) {
            return true;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(self);
        // Bounded: error chains are short, and a cycle must not hang a request.
        for _ in 0..16 {
            let Some(e) = next else { return false };
            let inner_tls = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
            if inner_tls || e.is::<rustls::Error>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// Why a try against an upstream failed: the cause inside [`ProxyError::Connect`] and
/// [`ProxyError::Upstream`], never returned on its own.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Checkout(#[from] UpstreamError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// A reused connection and then another were found closed.
    #[error("the upstream closed two connections in a row: {0}")]
    ClosedTwice(#[source] ExchangeError),
    #[error("the request body was already sent and cannot be replayed")]
    NotReplayable,
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error(transparent)]
    H2(#[from] crate::upstream::h2_exchange::H2Failure),
    #[error("the WebSocket handshake failed: {0}")]
    WebSocket(#[source] hyper::Error),
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
            Self::Timeout { .. } | Self::FaultDelayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Rewrite { .. } => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::Connect { cause, .. } | Self::Upstream { cause, .. } if cause.is_tls() => {
                "upstream-tls-failure"
            }
            Self::Connect { .. } => "upstream-connect-failure",
            Self::Upstream { .. } => "upstream-reset",
            Self::Timeout { .. } => "upstream-timeout",
            Self::Rewrite { .. } => "rewrite-failed",
            Self::FaultDelayTimeout { .. } => "fault-delay-timeout",
        }
    }

    /// What the client is told: enough to act on, without upstream addresses.
    pub(super) fn client_message(&self) -> String {
        match self {
            Self::Connect { region, cause, .. } | Self::Upstream { region, cause, .. }
                if cause.is_tls() =>
            {
                format!(
                    "TLS with an upstream in {region} failed (its certificate, or the client certificate it asks for)"
                )
            }
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
        let mut response = Response::new(made_body(Bytes::from(body)));
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
