//! Strict request-head checks, applied before anything reaches a backend.
//!
//! hyper accepts several framings an edge proxy must refuse (request smuggling vectors): both
//! Content-Length and Transfer-Encoding, codings other than a lone `chunked`, repeated
//! Transfer-Encoding, duplicate Host, an absolute URI that disagrees with Host, and header names
//! that other servers read as framing headers once `_` becomes `-`. A pure function over the
//! parsed head, so every rule is unit-tested.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri, Version};

use crate::headers::{Known, Present};

/// Longest request target accepted (bytes).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("both Content-Length and Transfer-Encoding are present")]
    LengthAndChunked,
    #[error("Transfer-Encoding must be exactly `chunked`")]
    BadTransferEncoding,
    #[error("Transfer-Encoding is repeated")]
    RepeatedTransferEncoding,
    #[error("Content-Length is repeated or not a number")]
    BadContentLength,
    #[error("header `{0}` would read as a framing or hop-by-hop header on other servers")]
    UnderscoreHeader(String),
    #[error("Host is repeated")]
    RepeatedHost,
    #[error("the absolute URI's authority and the Host header disagree")]
    HostMismatch,
    #[error("the request target is longer than {MAX_URI_BYTES} bytes")]
    UriTooLong,
    #[error("the body is longer than the route allows ({limit} bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("CONNECT is not served: Meridian is not a forward proxy")]
    Connect,
}

impl Malformed {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::UriTooLong => "uri-too-long",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::Connect => "method-not-allowed",
            _ => "malformed-request",
        }
    }
}

/// Names other servers treat as framing or connection headers.
const SENSITIVE: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Check a request head. `uri_len` is the length of the request target as received.
pub fn check_request(
    method: &Method,
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    present: Present,
) -> Result<(), Malformed> {
    if method == Method::CONNECT {
        return Err(Malformed::Connect);
    }
    let uri_len = uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(0)
        + uri.authority().map(|a| a.as_str().len()).unwrap_or(0);
    if uri_len > MAX_URI_BYTES {
        return Err(Malformed::UriTooLong);
    }
    for name in headers.keys().filter(|_| present.has(Known::Underscore)) {
        let n = name.as_str();
        if n.contains('_') {
            let dashed = n.replace('_', "-");
            if SENSITIVE.contains(&dashed.as_str()) {
                return Err(Malformed::UnderscoreHeader(n.to_owned()));
            }
        }
    }
    // Iterators, not collected lists, and only for headers that are there: this runs on every
    // request.
    let mut te = present
        .has(Known::TransferEncoding)
        .then(|| headers.get_all(header::TRANSFER_ENCODING).iter())
        .into_iter()
        .flatten();
    if let Some(value) = te.next() {
        if te.next().is_some() {
            return Err(Malformed::RepeatedTransferEncoding);
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Malformed::LengthAndChunked);
        }
        let ok = value
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !ok || version == Version::HTTP_10 {
            return Err(Malformed::BadTransferEncoding);
        }
    }
    let mut lengths = present
        .has(Known::ContentLength)
        .then(|| headers.get_all(header::CONTENT_LENGTH).iter())
        .into_iter()
        .flatten();
    if let Some(value) = lengths.next() {
        let b = value.as_bytes();
        let digits = !b.is_empty() && b.len() <= 19 && b.iter().all(u8::is_ascii_digit);
        if !digits || lengths.next().is_some() {
            return Err(Malformed::BadContentLength);
        }
    }
    let mut hosts = present
        .has(Known::Host)
        .then(|| headers.get_all(header::HOST).iter())
        .into_iter()
        .flatten();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Malformed::RepeatedHost);
    }
    // HTTP/1.1 absolute-form: route by the URI authority only if Host says the same.
    if version <= Version::HTTP_11
        && let (Some(authority), Some(host)) = (uri.authority(), host)
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(Malformed::HostMismatch);
    }
    Ok(())
}

/// Content-Length of the request, when given.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &Method, v: Version, uri: &Uri, h: &HeaderMap) -> Result<(), Malformed> {
        let known = check_request(method, v, uri, h, Present::of(h));
        assert_eq!(known, check_request(method, v, uri, h, Present::ALL));
        known
    }
    use http::HeaderName;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let uri: Uri = "/".parse().unwrap();
        let v11 = Version::HTTP_11;
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<(), Malformed>);
        let cases: &[Case] = &[
            (
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(Malformed::LengthAndChunked),
            ),
            (
                &[("host", "a"), ("transfer-encoding", "identity, chunked")],
                Err(Malformed::BadTransferEncoding),
            ),
            (
                &[("host", "a"), ("transfer-encoding", "chunked, chunked")],
                Err(Malformed::BadTransferEncoding),
            ),
            (
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(Malformed::RepeatedTransferEncoding),
            ),
            (
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("content-length", "5"),
                ],
                Err(Malformed::BadContentLength),
            ),
            (
                &[("host", "a"), ("content-length", "abc")],
                Err(Malformed::BadContentLength),
            ),
            (
                &[("host", "a"), ("content-length", "+5")],
                Err(Malformed::BadContentLength),
            ),
            (
                &[("host", "a"), ("content-length", "5, 5")],
                Err(Malformed::BadContentLength),
            ),
            (
                &[("host", "a"), ("content_length", "5")],
                Err(Malformed::UnderscoreHeader("content_length".into())),
            ),
            (
                &[("host", "a"), ("transfer_encoding", "chunked")],
                Err(Malformed::UnderscoreHeader("transfer_encoding".into())),
            ),
            (
                &[("host", "a"), ("host", "b")],
                Err(Malformed::RepeatedHost),
            ),
            (&[("host", "a"), ("transfer-encoding", "Chunked")], Ok(())),
            (&[("host", "a"), ("x_custom_thing", "1")], Ok(())),
            (&[("host", "a"), ("content-length", "0")], Ok(())),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                &check(&Method::POST, v11, &uri, &head(pairs)),
                want,
                "{pairs:?}"
            );
        }
        let abs: Uri = "http://a.test/x".parse().unwrap();
        assert_eq!(
            check(&Method::GET, v11, &abs, &head(&[("host", "b.test")])),
            Err(Malformed::HostMismatch)
        );
        assert_eq!(
            check(&Method::GET, v11, &abs, &head(&[("host", "A.test")])),
            Ok(())
        );
        let long: Uri = format!("/{}", "a".repeat(MAX_URI_BYTES)).parse().unwrap();
        assert_eq!(
            check(&Method::GET, v11, &long, &head(&[("host", "a")])),
            Err(Malformed::UriTooLong)
        );
        assert_eq!(
            check(
                &Method::POST,
                Version::HTTP_10,
                &uri,
                &head(&[("transfer-encoding", "chunked")])
            ),
            Err(Malformed::BadTransferEncoding)
        );
    }
}
