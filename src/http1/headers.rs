//! Header names Meridian reads or writes, and hop-by-hop stripping.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::raw_fields::{Fields, HeadersRef};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Response: the region that served the request.
pub const X_MERIDIAN_REGION: HeaderName = HeaderName::from_static("x-meridian-region");
/// Regions of the Meridian tiers a request has passed, comma-separated (the loop guard).
pub const X_MERIDIAN_VISITED: HeaderName = HeaderName::from_static("x-meridian-visited");
/// Request from a trusted client: `1` asks for `x-meridian-decision` on the response.
pub const X_MERIDIAN_DEBUG: HeaderName = HeaderName::from_static("x-meridian-debug");
/// Response: why the request went where it went, and each try.
pub const X_MERIDIAN_DECISION: HeaderName = HeaderName::from_static("x-meridian-decision");
/// Response from Meridian itself when a circuit breaker refused the request: which limit.
pub const X_MERIDIAN_OVERFLOW: HeaderName = HeaderName::from_static("x-meridian-overflow");
/// Response from Meridian itself: a short machine-readable reason for an error status.
pub const X_MERIDIAN_ERROR: HeaderName = HeaderName::from_static("x-meridian-error");

/// The name of each kind, in the order of [`Known`] (the last two stand for many names).
static KNOWN_NAMES: [HeaderName; 15] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
    X_MERIDIAN_VISITED,
    X_MERIDIAN_DEBUG,
    header::TE,
    header::EXPECT,
    header::CONNECTION,
    header::CONNECTION,
];

impl Known {
    /// Whether this kind is exactly one header name (so finding a header by its kind is
    /// finding it by name).
    pub fn is_one_name(self) -> bool {
        !matches!(self, Known::HopByHop | Known::Underscore)
    }

    /// Whether headers of this kind are hop-by-hop (see [`HOP_BY_HOP`]).
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::TransferEncoding
                | Known::Connection
                | Known::Upgrade
                | Known::Te
                | Known::HopByHop
        )
    }

    /// The header's name; only for kinds that are one name (see [`Self::is_one_name`]).
    pub fn name(self) -> &'static HeaderName {
        &KNOWN_NAMES[self as usize]
    }
}

/// Which known header `name` (any case) is: a switch on the length, then one comparison.
/// The other hop-by-hop names are all `HopByHop`.
#[inline]
pub fn known(name: &[u8]) -> Option<Known> {
    let is = |k: &str| eq_lowercase(name, k.as_bytes());
    let k = match name.len() {
        2 if is("te") => Known::Te,
        6 if is("expect") => Known::Expect,
        4 if is("host") => Known::Host,
        7 if is("upgrade") => Known::Upgrade,
        10 if is("connection") => Known::Connection,
        10 if is("keep-alive") => Known::HopByHop,
        12 if is("x-request-id") => Known::RequestId,
        14 if is("content-length") => Known::ContentLength,
        15 if is("x-forwarded-for") => Known::ForwardedFor,
        16 if is("proxy-connection") => Known::HopByHop,
        16 if is("x-forwarded-host") => Known::ForwardedHost,
        16 if is("x-meridian-debug") => Known::Debug,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        17 if is("x-forwarded-proto") => Known::ForwardedProto,
        18 if is("proxy-authenticate") => Known::HopByHop,
        18 if is("x-meridian-visited") => Known::Visited,
        19 if is("proxy-authorization") => Known::HopByHop,
        _ => return None,
    };
    Some(k)
}

/// `name` equals `lower` in any case, as `eq_ignore_ascii_case` says, eight bytes at a time:
/// every request classifies each of its header names and each of the answer's, so the byte
/// at a time comparison was a visible part of each proxied request. `lower` is lowercase letters
/// and ASCII below 'a' that is not an uppercase letter (digits, '-', '_', '.': any header
/// name Meridian knows); not '{', '|', '}' or '~', which would match '[', '\\', ']' and '^'.
#[inline(always)]
fn eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(
        lower
            .iter()
            .all(|b| b.is_ascii_lowercase() || (*b < b'a' && !b.is_ascii_uppercase()))
    );
    /// Bit 5 (the ASCII case bit) of each byte of `lower` that is a letter: adding 0x1f
    /// carries a byte into bit 7 exactly when it is 0x61 ('a') or above, and no byte of
    /// ASCII carries into its neighbour. Or-ing it into `name` lowercases the letters only.
    fn case_bits(lower: u64) -> u64 {
        (lower.wrapping_add(0x1f1f_1f1f_1f1f_1f1f) & 0x8080_8080_8080_8080) >> 2
    }
    fn word(bytes: &[u8], at: usize) -> Option<u64> {
        let eight = bytes.get(at..at + 8)?;
        Some(u64::from_le_bytes(eight.try_into().ok()?))
    }
    let n = lower.len();
    if name.len() != n {
        return false;
    }
    if n < 8 {
        return name.iter().zip(lower).all(|(a, b)| {
            let (a, b) = (u64::from(*a), u64::from(*b));
            a | case_bits(b) == b
        });
    }
    let same = |at: usize| match (word(name, at), word(lower, at)) {
        (Some(a), Some(b)) => a | case_bits(b) == b,
        _ => false,
    };
    // Whole words, then the last eight bytes (overlapping the previous word).
    (0..n / 8).all(|i| same(i * 8)) && same(n - 8)
}

/// A Content-Length value as a number when it is plain digits (1 to 19 of them, so it fits
/// a u64): no sign, space or list, which other readers would frame differently.
pub fn plain_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `name: value` and its line end, written into a head (or trailer block) being built.
#[inline]
pub fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `content-length: n` and its line end, written into a head being built.
pub fn put_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A header value as text when it is visible ASCII (and tabs), as `HeaderValue::to_str`
/// requires.
pub fn as_text(value: &[u8]) -> Option<&str> {
    if value.iter().all(|b| (32..127).contains(b) || *b == b'\t') {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// [`strip_hop_by_hop`] for fields as received.
pub fn strip_hop_by_hop_fields(fields: &mut Fields) {
    let named: Vec<Vec<u8>> = fields
        .values_of(Known::Connection)
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| t.trim_ascii().to_vec())
        .filter(|t| !t.is_empty())
        .collect();
    fields.retain(|name| {
        !is_hop_by_hop_name(name) && !named.iter().any(|n| n.eq_ignore_ascii_case(name))
    });
}

/// A request header Meridian reads (or strips), for [`Present`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    RequestId,
    Visited,
    Debug,
    /// `TE` (hop-by-hop).
    Te,
    Expect,
    /// Any hop-by-hop header (Connection, Upgrade, Transfer-Encoding and TE included).
    HopByHop,
    /// Any name with an underscore (see `strict`).
    Underscore,
}

/// Which of the headers Meridian reads a request carries, found in one pass over its names.
///
/// Most requests carry a handful of headers and few of Meridian's; a lookup by name hashes
/// and probes the map, so the request path asks the map only for what is there.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Present(u16);

impl Present {
    /// Every bit set: for callers that did not look (each lookup is then made).
    pub const ALL: Self = Self(u16::MAX);

    pub fn of(headers: HeadersRef<'_>) -> Self {
        if let HeadersRef::Raw(fields) = headers
            && let Some(present) = fields.present()
        {
            return present;
        }
        let mut present = Self::default();
        for (name, _) in headers.iter() {
            present.add(name, known(name));
        }
        present
    }

    /// Record a header of this name, of the kind [`known`] says.
    pub fn add(&mut self, name: &[u8], kind: Option<Known>) {
        let mut set = |k: Known| self.0 |= 1 << k as u16;
        match kind {
            Some(k) => {
                set(k);
                if k.is_hop_by_hop() {
                    set(Known::HopByHop);
                }
            }
            None => {
                if name.contains(&b'_') {
                    set(Known::Underscore);
                }
            }
        }
    }

    pub fn has(self, known: Known) -> bool {
        self.0 & (1 << known as u16) != 0
    }
}

/// Append an address as text: IPv4 by hand (every request writes one into X-Forwarded-For,
/// and the generic formatter is far slower for so short a text), IPv6 by its `Display`.
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A header Meridian sets on every request on its way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overridden {
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    RequestId,
    Visited,
    /// For HTTP/2 clients and requests without one: the authority the request was routed by.
    Host,
}

static OVERRIDDEN: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REQUEST_ID,
    X_MERIDIAN_VISITED,
    header::HOST,
];

/// The headers Meridian sets upstream. They replace the client's headers of the same names
/// and are written after them by the upstream HTTP/1.1 writer, so the client's header map is
/// never changed for them (inserting into it cost more than the rest of the header work).
#[derive(Debug, Default, Clone)]
pub struct Overrides([Option<HeaderValue>; 6]);

impl Overrides {
    pub fn set(&mut self, which: Overridden, value: HeaderValue) {
        self.0[which as usize] = Some(value);
    }

    /// Take a header back out (the request id, for the client's answer, once the request was
    /// sent: moved rather than copied).
    pub fn take(&mut self, which: Overridden) -> Option<HeaderValue> {
        self.0[which as usize].take()
    }

    /// The value set for `which`, if any.
    pub fn get(&self, which: Overridden) -> Option<&HeaderValue> {
        self.0[which as usize].as_ref()
    }

    /// Whether a client's header of this kind (see [`known`]) is replaced.
    pub fn replaces_kind(&self, kind: Option<Known>) -> bool {
        let slot = match kind {
            Some(Known::ForwardedFor) => Overridden::ForwardedFor,
            Some(Known::ForwardedProto) => Overridden::ForwardedProto,
            Some(Known::ForwardedHost) => Overridden::ForwardedHost,
            Some(Known::RequestId) => Overridden::RequestId,
            Some(Known::Visited) => Overridden::Visited,
            Some(Known::Host) => Overridden::Host,
            _ => return false,
        };
        self.0[slot as usize].is_some()
    }

    /// The headers set, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        OVERRIDDEN
            .iter()
            .zip(&self.0)
            .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
    }

    /// Put them into a header map (for requests sent by other means).
    pub fn apply(self, headers: &mut HeaderMap) {
        for (name, value) in OVERRIDDEN.iter().zip(self.0) {
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
        }
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy credentials meant for us. `Trailer` is not among them: it announces the trailer
/// fields of a chunked response, which are passed on.
const HOP_COUNT: usize = 8;
static HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Where `name` is in [`HOP_BY_HOP`], if it is a hop-by-hop header. A string match compiles
/// to a length switch and one comparison; most names fall through at the length.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "transfer-encoding" => Some(6),
        "upgrade" => Some(7),
        _ => None,
    }
}

/// Whether a header name as received (any case) is one of [`HOP_BY_HOP`].
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    known(name).is_some_and(Known::is_hop_by_hop)
}

/// Remove hop-by-hop headers, including every header the Connection header names.
///
/// One pass over the names present finds what to remove; most messages carry at most a
/// `Connection` header, so this costs a scan instead of a lookup per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_content_length_reads_back_as_the_same_number() {
        for n in [0, 7, 512, 1_000_000_007, 999_999_999_999_999_999] {
            let mut out = b"x: 1\r\n".to_vec();
            put_content_length(&mut out, n);
            let line = out.strip_prefix(b"x: 1\r\ncontent-length: ".as_slice());
            let digits = line.and_then(|l| l.strip_suffix(b"\r\n".as_slice()));
            assert_eq!(digits.and_then(plain_length), Some(n), "{out:?}");
        }
    }

    #[test]
    fn present_headers_are_found_in_one_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x_custom", HeaderValue::from_static("1"));
        let p = Present::of(HeadersRef::Map(&h));
        for k in [
            Known::Host,
            Known::ForwardedFor,
            Known::HopByHop,
            Known::Underscore,
        ] {
            assert!(p.has(k), "{k:?}");
        }
        for k in [
            Known::Connection,
            Known::RequestId,
            Known::Visited,
            Known::ContentLength,
        ] {
            assert!(!p.has(k), "{k:?}");
        }
        assert!(Present::ALL.has(Known::Debug));
        assert_eq!(Present::of(HeadersRef::Map(&HeaderMap::new())), Present(0));
    }

    #[test]
    fn each_kind_that_is_one_name_is_known_by_it() {
        use Known::*;
        let kinds = [
            Host,
            ContentLength,
            TransferEncoding,
            Connection,
            Upgrade,
            ForwardedFor,
            ForwardedProto,
            ForwardedHost,
            RequestId,
            Visited,
            Debug,
            Te,
            Expect,
        ];
        for kind in kinds {
            assert!(kind.is_one_name());
            assert_eq!(
                known(kind.name().as_str().as_bytes()),
                Some(kind),
                "{kind:?}"
            );
            let upper = kind.name().as_str().to_ascii_uppercase();
            assert_eq!(known(upper.as_bytes()), Some(kind), "{kind:?}");
        }
        assert!(!HopByHop.is_one_name() && !Underscore.is_one_name());
    }

    #[test]
    fn lowercase_comparison_agrees_with_eq_ignore_ascii_case() {
        let names = [
            "te",
            "host",
            "expect",
            "upgrade",
            "x-request-id",
            "content-length",
            "x-forwarded-for",
            "proxy-connection",
            "x-meridian-visited",
            "proxy-authorization",
            "a1_b.c-d!e#f$g%h&i'j*k+l^m`n@z",
        ];
        for lower in names {
            let lower = lower.as_bytes();
            assert!(eq_lowercase(lower, lower));
            assert!(eq_lowercase(&lower.to_ascii_uppercase(), lower));
            assert!(!eq_lowercase(&lower[1..], lower));
            // Every byte value at every position, in a name of the same length.
            for at in 0..lower.len() {
                let mut name = lower.to_vec();
                for b in 0..=255u8 {
                    name[at] = b;
                    assert_eq!(
                        eq_lowercase(&name, lower),
                        name.eq_ignore_ascii_case(lower),
                        "{:?} against {:?}",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(lower)
                    );
                }
            }
        }
    }

    #[test]
    fn text_values_are_those_header_values_give_as_text() {
        for b in 0..=255u8 {
            let bytes = [b'a', b, b'z'];
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            assert_eq!(as_text(&bytes), value.to_str().ok(), "byte {b}");
        }
    }

    #[test]
    fn hop_by_hop_names_are_known_in_any_case() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name.as_str().as_bytes()), "{name}");
            assert!(
                is_hop_by_hop_name(name.as_str().to_uppercase().as_bytes()),
                "{name}"
            );
        }
        for name in ["trailer", "content-length", "tee", "upgrade-insecure"] {
            assert!(!is_hop_by_hop_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "198.51.100.7",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut out = String::from("x, ");
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x, {ip}"));
        }
    }

    #[test]
    fn each_override_replaces_its_own_header_only() {
        use Overridden::*;
        for (i, which) in [
            ForwardedFor,
            ForwardedProto,
            ForwardedHost,
            RequestId,
            Visited,
            Host,
        ]
        .into_iter()
        .enumerate()
        {
            let mut o = Overrides::default();
            o.set(which, HeaderValue::from_static("v"));
            for (j, name) in OVERRIDDEN.iter().enumerate() {
                assert_eq!(
                    o.replaces_kind(known(name.as_str().as_bytes())),
                    i == j,
                    "{which:?} / {name}"
                );
            }
            assert_eq!(
                o.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                [&OVERRIDDEN[i]]
            );
        }
    }

    #[test]
    fn the_index_names_the_same_header() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop_index(&header::HOST), None);
    }

    #[test]
    fn strips_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }
}
