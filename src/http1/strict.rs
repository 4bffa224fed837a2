//! Strict request-head checks, applied before anything reaches a backend.
//!
//! hyper accepts several framings an edge proxy must refuse (request smuggling vectors): both
//! Content-Length and Transfer-Encoding, codings other than a lone `chunked`, repeated
//! Transfer-Encoding, duplicate Host, an absolute URI that disagrees with Host, and header names
//! that other servers read as framing or forwarding headers once `_` becomes `-`. It also routes
//! by any Host and takes `get` for a method of its own: the authority must be `host[:port]`
//! ([`valid_authority`]) and a method may not have lowercase letters. Pure functions over the
//! parsed head, so every rule is unit-tested; the proxy's handler calls [`check_request`] for
//! every request, HTTP/1.1 and HTTP/2 alike.

use http::{Method, StatusCode, Uri, Version};

use crate::http1::headers::{Known, Present, as_text, plain_length};
use crate::http1::raw_fields::HeadersRef;

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
    #[error(
        "header `{0}` would read as a framing, hop-by-hop or forwarding header on other servers"
    )]
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
    #[error("the Host or :authority is not a valid host[:port]")]
    BadHost,
    #[error("the method has lowercase letters; methods are case-sensitive (`get` is not `GET`)")]
    LowercaseMethod,
    #[error("a tab sets off the value of Content-Length or Transfer-Encoding")]
    TabInFraming,
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
            Self::BadHost => "bad-host",
            _ => "malformed-request",
        }
    }
}

/// Names other servers treat as framing or connection headers, and the forwarding headers
/// Meridian sets (a backend reading `X_Forwarded_For` as `X-Forwarded-For`, as CGI-style
/// servers do, would take an untrusted client's word beside Meridian's own).
const SENSITIVE: [&str; 16] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-meridian-visited",
    "x-meridian-debug",
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
    headers: HeadersRef<'_>,
    present: Present,
) -> Result<(), Malformed> {
    if method == Method::CONNECT {
        return Err(Malformed::Connect);
    }
    // A backend that folds case would serve `get` as the GET Meridian did not judge it to be
    // (retries, route method matches); nginx refuses it too.
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Malformed::LowercaseMethod);
    }
    let uri_len = uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(0)
        + uri.authority().map(|a| a.as_str().len()).unwrap_or(0);
    if uri_len > MAX_URI_BYTES {
        return Err(Malformed::UriTooLong);
    }
    if present.has(Known::Underscore) {
        for (name, _) in headers.iter() {
            if let Some(dashed) = sensitive_with_underscores(name) {
                return Err(Malformed::UnderscoreHeader(dashed));
            }
        }
    }
    // Only the headers that are there are looked up: this runs on every request.
    let (te, more_te) = first_two(headers, present, Known::TransferEncoding);
    if let Some(value) = te {
        if more_te {
            return Err(Malformed::RepeatedTransferEncoding);
        }
        if present.has(Known::ContentLength) && headers.first(Known::ContentLength).is_some() {
            return Err(Malformed::LengthAndChunked);
        }
        let ok = as_text(value).is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !ok || version == Version::HTTP_10 {
            return Err(Malformed::BadTransferEncoding);
        }
    }
    let (length, more_lengths) = first_two(headers, present, Known::ContentLength);
    if let Some(b) = length
        && (plain_length(b).is_none() || more_lengths)
    {
        return Err(Malformed::BadContentLength);
    }
    let (host, more_hosts) = first_two(headers, present, Known::Host);
    if more_hosts {
        return Err(Malformed::RepeatedHost);
    }
    // What the request is routed by: the URI's authority (HTTP/2, absolute-form), else Host.
    let routed_by = match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => host,
    };
    if routed_by.is_some_and(|a| !valid_authority(a)) {
        return Err(Malformed::BadHost);
    }
    // HTTP/1.1 absolute-form: route by the URI authority only if Host says the same.
    if version <= Version::HTTP_11
        && let (Some(authority), Some(host)) = (uri.authority(), host)
        && !host.eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Err(Malformed::HostMismatch);
    }
    Ok(())
}

/// What each byte is in a Host: a name byte (RFC 3986's unreserved characters), a dot, the
/// colon before a port, or none of these. RFC 3986's sub-delims (`,` `;` `!` `$` `&` `'` `(`
/// `)` `*` `+` `=`) and percent-encoding are refused: no DNS name has them, and servers split,
/// decode or compare them differently (`a,b` reads as a list to some), so a Host with them
/// would be read one way here and another way behind.
const HOST_BYTE: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = match c {
            b'.' => DOT,
            b':' => COLON,
            _ if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~') => NAME,
            _ => 0,
        };
        b += 1;
    }
    table
};
const NAME: u8 = 1;
const DOT: u8 = 2;
const COLON: u8 = 3;

/// Whether a Host value or :authority is `host[:port]`: a name of name bytes (see
/// [`HOST_BYTE`]) with no empty label (one final dot allowed), which covers IPv4 addresses, or
/// a bracketed IPv6 address; and a port, when there is a colon, of 1 to 5 digits from 1 to
/// 65535. Userinfo, zone identifiers and IPvFuture are refused. Runs on every request: one
/// pass, no allocation.
pub fn valid_authority(authority: &[u8]) -> bool {
    if let [b'[', rest @ ..] = authority {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let ip = std::str::from_utf8(&rest[..end])
            .is_ok_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        return ip
            && match &rest[end + 1..] {
                [] => true,
                [b':', port @ ..] => valid_port(port),
                _ => false,
            };
    }
    // The byte before the first counts as a dot, so a leading dot is an empty label.
    let mut after_dot = true;
    for (at, &b) in authority.iter().enumerate() {
        match HOST_BYTE[b as usize] {
            NAME => after_dot = false,
            DOT if !after_dot => after_dot = true,
            COLON => return at > 0 && valid_port(&authority[at + 1..]),
            _ => return false,
        }
    }
    !authority.is_empty()
}

/// A port: 1 to 5 digits, from 1 to 65535.
fn valid_port(port: &[u8]) -> bool {
    if port.is_empty() || port.len() > 5 {
        return false;
    }
    let mut value: u32 = 0;
    for &b in port {
        if !b.is_ascii_digit() {
            return false;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    (1..=65535).contains(&value)
}

/// A name that is one of [`SENSITIVE`] once its underscores are dashes, lowercased as
/// received.
fn sensitive_with_underscores(name: &[u8]) -> Option<String> {
    if !name.contains(&b'_') {
        return None;
    }
    let dashed: Vec<u8> = name
        .iter()
        .map(|b| {
            if *b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect();
    SENSITIVE
        .iter()
        .any(|s| s.as_bytes() == dashed)
        .then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The first value of a header and whether another follows (none when it is not present).
#[inline]
fn first_two<'a>(
    headers: HeadersRef<'a>,
    present: Present,
    kind: Known,
) -> (Option<&'a [u8]>, bool) {
    if !present.has(kind) {
        return (None, false);
    }
    let mut values = headers.values(kind);
    let first = values.next();
    (first, first.is_some() && values.next().is_some())
}

/// Content-Length of the request, when given.
pub fn content_length(headers: HeadersRef<'_>) -> Option<u64> {
    headers
        .first(Known::ContentLength)
        .and_then(|v| plain_length(v.trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn check(method: &Method, v: Version, uri: &Uri, h: &HeaderMap) -> Result<(), Malformed> {
        let h = HeadersRef::Map(h);
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
    fn authorities_are_host_and_port() {
        let cases: &[(&[u8], bool)] = &[
            (b"a.test", true),
            (b"A.Test", true),
            (b"a.test.", true),
            (b"a", true),
            (b"localhost:1", true),
            (b"a.test:8080", true),
            (b"a.test:65535", true),
            (b"a.test:080", true),
            (b"a-b_c~d.test", true),
            (b"xn--bcher-kva.example", true),
            (b"127.0.0.1", true),
            (b"127.0.0.1:80", true),
            (b"[::1]", true),
            (b"[::1]:8443", true),
            (b"[2001:db8::1]", true),
            (b"[2001:db8::ffff:1.2.3.4]", true),
            (b"", false),
            (b"a b.test", false),
            (b"a/b.test", false),
            (b"a,b.test", false),
            (b"a?b.test", false),
            (b"a#b.test", false),
            (b"a\\b.test", false),
            (b"a\"b.test", false),
            (b"a'b.test", false),
            (b"a;b.test", false),
            (b"a!b.test", false),
            (b"a{b}.test", false),
            (b"a\tb.test", false),
            (b"a%2eb.test", false),
            (b"\xc3\xa9.test", false),
            (b"a.test\0", false),
            (b"a.test:abc", false),
            (b"a.test:99999", false),
            (b"a.test:65536", false),
            (b"a.test:0", false),
            (b"a.test:00000", false),
            (b"a.test:000080", false),
            (b"a.test:", false),
            (b"a.test:+80", false),
            (b"a.test:-1", false),
            (b"a.test: 80", false),
            (b"a.test:8080:1", false),
            (b":80", false),
            (b"a@b.test", false),
            (b"user:pw@b.test", false),
            (b"..", false),
            (b".", false),
            (b".a.test", false),
            (b"a..b.test", false),
            (b"a.test..", false),
            (b"[::1", false),
            (b"::1", false),
            (b"[::1]x", false),
            (b"[::1]:", false),
            (b"[::1]:99999", false),
            (b"[::1]]", false),
            (b"[]", false),
            (b"[v1.x]", false),
            (b"[1.2.3.4]", false),
            (b"[::1%25eth0]", false),
            (b"[a.test]", false),
        ];
        for (authority, want) in cases {
            assert_eq!(
                valid_authority(authority),
                *want,
                "{}",
                authority.escape_ascii()
            );
        }
    }

    #[test]
    fn hosts_and_methods_are_checked_where_the_request_is_routed() {
        let v11 = Version::HTTP_11;
        let origin: Uri = "/".parse().unwrap();
        let host = |h: &str| head(&[("host", h)]);
        assert_eq!(
            check(&Method::GET, v11, &origin, &host("a.test:99999")),
            Err(Malformed::BadHost)
        );
        assert_eq!(
            check(&Method::GET, v11, &origin, &host("a.test:443")),
            Ok(())
        );
        // HTTP/1.0 may go without Host; one that is there is held to the same.
        assert_eq!(
            check(&Method::GET, Version::HTTP_10, &origin, &HeaderMap::new()),
            Ok(())
        );
        assert_eq!(
            check(&Method::GET, Version::HTTP_10, &origin, &host("a,b")),
            Err(Malformed::BadHost)
        );
        // HTTP/2: the :authority is what counts; a host header beside it is replaced upstream.
        let h2 = Version::HTTP_2;
        let bad: Uri = "http://a.test:0/".parse().unwrap();
        let good: Uri = "http://a.test/".parse().unwrap();
        assert_eq!(
            check(&Method::GET, h2, &bad, &HeaderMap::new()),
            Err(Malformed::BadHost)
        );
        assert_eq!(check(&Method::GET, h2, &good, &host("a b")), Ok(()));
        assert_eq!(
            check(&Method::GET, h2, &origin, &host("a b")),
            Err(Malformed::BadHost)
        );
        for method in ["get", "Get", "post", "purge", "m-search"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                check(&method, v11, &origin, &host("a.test")),
                Err(Malformed::LowercaseMethod),
                "{method}"
            );
        }
        for method in ["GET", "PURGE", "PROPFIND", "M-SEARCH"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(check(&method, v11, &origin, &host("a.test")), Ok(()));
        }
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
                &[("host", "a"), ("X_Forwarded_For", "10.0.0.1")],
                Err(Malformed::UnderscoreHeader("x_forwarded_for".into())),
            ),
            (
                &[("host", "a"), ("x-request_id", "forged")],
                Err(Malformed::UnderscoreHeader("x-request_id".into())),
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
