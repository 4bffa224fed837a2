//! gRPC on the request path: which requests are gRPC calls, their `grpc-timeout` deadline
//! (capped by the route timeout), and Meridian's own failures as gRPC statuses, answered
//! trailers-only (HTTP 200, `grpc-status` and `grpc-message` in the head) so that a gRPC
//! client can read them. Used by the handler (`handle`), `forward` and the HTTP/2 tries.
//!
//! Only HTTP/2 requests are looked at: gRPC needs HTTP/2 trailers, so an HTTP/1.1 request is
//! never a gRPC call here, and HTTP/1.1 traffic pays nothing for this.

use super::*;

/// The longest `grpc-timeout` value: eight digits (gRPC's HTTP/2 protocol spec).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Whether a content type is gRPC's (`application/grpc`, `application/grpc+proto`, …).
pub(super) fn is_grpc_content_type(value: &[u8]) -> bool {
    value.len() >= 16
        && value[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(value.get(16), None | Some(b'+' | b';'))
}

/// Whether a request is a gRPC call: HTTP/2 with a gRPC content type.
pub(super) fn is_grpc(version: Version, headers: &http::HeaderMap) -> bool {
    version == Version::HTTP_2
        && headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// A `grpc-timeout` value (`TimeoutValue TimeoutUnit`: 1 to 8 digits, then one of
/// `H M S m u n`); `None` when malformed, which leaves the call to the route timeout.
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > MAX_TIMEOUT_DIGITS {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How long a call may take: its `grpc-timeout`, capped by the route timeout. `None` when it
/// is not a gRPC call or sets no (well-formed) timeout shorter than the route's.
pub(super) fn call_timeout(
    version: Version,
    headers: HeadersRef<'_>,
    route_timeout: Duration,
) -> Option<Duration> {
    if version != Version::HTTP_2 {
        return None;
    }
    let value = headers.values_named(&GRPC_TIMEOUT).next()?;
    // Only a gRPC call gets a gRPC deadline (and DEADLINE_EXCEEDED trailers).
    if !headers
        .values_named(&header::CONTENT_TYPE)
        .next()
        .is_some_and(is_grpc_content_type)
    {
        return None;
    }
    parse_timeout(value)
        .map(|t| t.min(route_timeout))
        .filter(|t| *t < route_timeout)
}

/// The deadline of the response head: the route timeout from `started`, or the call's
/// `grpc-timeout` when shorter. A gRPC deadline is kept in `trace` for the response body,
/// which it bounds too.
pub(super) fn deadline(
    started: Instant,
    route_timeout: Duration,
    version: Version,
    headers: HeadersRef<'_>,
    trace: &mut Trace,
) -> Instant {
    match call_timeout(version, headers, route_timeout) {
        None => crate::deadline::after(started, route_timeout),
        Some(timeout) => {
            let at = crate::deadline::after(started, timeout);
            trace.grpc_deadline = Some(at);
            at
        }
    }
}

pub(super) static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// The `grpc-status` of an answer's head (a trailers-only answer carries it there).
pub(super) fn status_in(headers: &http::HeaderMap) -> Option<u8> {
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?;
    value.parse::<u8>().ok()
}

/// gRPC status codes Meridian answers with.
pub(super) mod code {
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
}

impl ProxyError {
    /// The gRPC status that says the same as [`ProxyError::status`] to a gRPC client.
    pub fn grpc_status(&self) -> u8 {
        match self {
            Self::MissingHost | Self::BadBody(_) | Self::Malformed(_) | Self::Rewrite { .. } => {
                code::INTERNAL
            }
            Self::Decision(DecisionError::NoRoute { .. }) => code::UNIMPLEMENTED,
            Self::Decision(DecisionError::NoEndpoint { .. } | DecisionError::RegionLoop { .. }) => {
                code::UNAVAILABLE
            }
            Self::Overflow { .. } => code::RESOURCE_EXHAUSTED,
            Self::Connect { .. } | Self::Upstream { .. } => code::UNAVAILABLE,
            Self::Timeout { .. } | Self::FaultDelayTimeout { .. } => code::DEADLINE_EXCEEDED,
        }
    }

    /// The answer for a gRPC client: HTTP 200, trailers-only, with `grpc-status` and a
    /// percent-encoded `grpc-message`; `x-meridian-error` as for any client.
    pub fn into_grpc_response(self) -> Response<ProxyBody> {
        let message = percent_encode(&format!("meridian: {}", self.client_message()));
        let mut response = Response::new(made_body(Bytes::new()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            GRPC_STATUS.clone(),
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert(GRPC_MESSAGE.clone(), value);
        }
        headers.insert(X_MERIDIAN_ERROR, HeaderValue::from_static(self.code()));
        if let Self::Overflow { overflow, .. } = &self {
            headers.insert(
                X_MERIDIAN_OVERFLOW,
                HeaderValue::from_static(overflow.as_str()),
            );
        }
        response
    }
}

/// `grpc-message` encoding: printable ASCII but `%` as is, every other byte as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_by_the_spec_and_nothing_else() {
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"1H", Some(Duration::from_secs(3600))),
            (b"2M", Some(Duration::from_secs(120))),
            (b"3S", Some(Duration::from_secs(3))),
            (b"250m", Some(Duration::from_millis(250))),
            (b"7u", Some(Duration::from_micros(7))),
            (b"9n", Some(Duration::from_nanos(9))),
            (b"0m", Some(Duration::ZERO)),
            // Eight digits is the most; the largest is far beyond any route timeout.
            (b"99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            (b"123456789S", None),
            (b"", None),
            (b"S", None),
            (b"10", None),
            (b"10s", None),
            (b"10x", None),
            (b"-1S", None),
            (b"1 S", None),
            (b"1.5S", None),
            (b"\xff\xffS", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_timeout(value),
                *want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn call_timeout_is_capped_by_the_route_and_only_for_http2() {
        let route = Duration::from_secs(15);
        let grpc = Some("application/grpc");
        // Version, content type, grpc-timeout, the call's timeout.
        type Case = (
            Version,
            Option<&'static str>,
            Option<&'static str>,
            Option<Duration>,
        );
        let cases: &[Case] = &[
            (
                Version::HTTP_2,
                grpc,
                Some("100m"),
                Some(Duration::from_millis(100)),
            ),
            (Version::HTTP_2, grpc, Some("99999999H"), None),
            (Version::HTTP_2, grpc, Some("15S"), None),
            (Version::HTTP_2, grpc, Some("bogus"), None),
            (Version::HTTP_2, grpc, None, None),
            (Version::HTTP_11, grpc, Some("100m"), None),
            // Not a gRPC call: the header means nothing.
            (Version::HTTP_2, Some("text/plain"), Some("100m"), None),
            (Version::HTTP_2, None, Some("100m"), None),
        ];
        for &(version, content_type, value, want) in cases {
            let mut map = http::HeaderMap::new();
            if let Some(v) = value {
                map.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static(v));
            }
            if let Some(v) = content_type {
                map.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            }
            let headers = HeadersRef::of(&map, None);
            assert_eq!(
                call_timeout(version, headers, route),
                want,
                "{version:?} {content_type:?} {value:?}"
            );
        }
    }

    #[test]
    fn grpc_content_types() {
        let cases: &[(&[u8], bool)] = &[
            (b"application/grpc", true),
            (b"application/grpc+proto", true),
            (b"Application/GRPC+json", true),
            (b"application/grpc;charset=utf-8", true),
            (b"application/grpc-web", false),
            (b"application/grpcx", false),
            (b"application/json", false),
            (b"", false),
        ];
        for &(value, want) in cases {
            assert_eq!(
                is_grpc_content_type(value),
                want,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn meridian_failures_map_to_grpc_statuses() {
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        let cases: Vec<(ProxyError, u8)> = vec![
            (
                ProxyError::Overflow {
                    cluster: "c".into(),
                    overflow: Overflow::MaxRequests,
                },
                code::RESOURCE_EXHAUSTED,
            ),
            (
                ProxyError::Timeout {
                    endpoint: addr,
                    region: "r".into(),
                    after: Duration::from_secs(1),
                },
                code::DEADLINE_EXCEEDED,
            ),
            (
                ProxyError::Connect {
                    endpoint: addr,
                    region: "r".into(),
                    cause: Box::new(AttemptError::NotReplayable),
                },
                code::UNAVAILABLE,
            ),
            (ProxyError::MissingHost, code::INTERNAL),
        ];
        for (error, want) in cases {
            assert_eq!(error.grpc_status(), want, "{error}");
            let response = error.into_grpc_response();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(status_in(response.headers()), Some(want));
            assert!(response.body().is_end_stream(), "trailers-only");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }
}
