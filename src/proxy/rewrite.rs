//! The upstream request's headers: `x-meridian-visited`, the forwarding headers and the
//! request id.

use super::*;

/// Append our region to the loop guard header; a header from an untrusted peer is dropped.
pub(super) fn set_visited(
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
pub(super) fn joined<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut out: Option<String> = None;
    for v in values {
        let Some(text) = crate::http1::headers::as_text(v) else {
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
pub(super) fn set_forwarding_headers(
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
    crate::http1::headers::push_ip(&mut forwarded_for, peer);
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
pub(super) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Byte by byte: shifting a whole u128 once per digit is slower.
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
    use crate::http1::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};

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
