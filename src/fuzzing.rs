//! Entry points for fuzzing the parsers that face untrusted input. The cargo-fuzz targets in
//! `fuzz/` call these, and `tests/fuzz_corpus.rs` replays the seed corpora through them on
//! stable Rust, so CI guards every input that ever mattered. None may panic, whatever the bytes.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

/// Config text → load and compile (without touching files or the network).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut loaded) = crate::config::load_str(text, Path::new("fuzz.yaml")) {
        // No file may be read while fuzzing.
        let config = loaded.config_mut();
        config.geo.database = None;
        config.admin.token_file = None;
        let _ = crate::table::compile(&loaded, crate::table::CompileContext::default());
    }
}

/// X-Forwarded-For values (one per line) from a trusted peer.
pub fn forwarded_for(data: &[u8]) {
    let resolver = crate::geo::GeoResolver::new(
        vec![
            "127.0.0.0/8"
                .parse()
                .unwrap_or_else(|_| ipnet::IpNet::default()),
        ],
        Vec::new(),
        None,
    );
    let values: Vec<HeaderValue> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();
    let _ = resolver.client_addr(
        [127, 0, 0, 1].into(),
        values.iter().map(http::HeaderValue::as_bytes),
    );
}

/// A PROXY protocol header.
pub fn proxy_header(data: &[u8]) {
    let _ = crate::edge::proxy_protocol::source(data);
}

/// An HTTP/1.1 request head → the strict checks.
pub fn request_head(data: &[u8]) {
    let data = bytes::Bytes::copy_from_slice(data);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(&data) else {
        return;
    };
    let (Some(method), Some(path), Some(version)) = (request.method, request.path, request.version)
    else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = path.parse::<Uri>() else { return };
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut map = HeaderMap::new();
    for h in request.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(name, value);
        }
    }
    // The same head as Meridian's own HTTP/1.1 loop keeps it: fields as received.
    let mut fields =
        crate::http1::raw_fields::Fields::with_capacity(data.clone(), request.headers.len());
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        fields.push_known(name, h.value, crate::http1::headers::known(name));
    }
    // Looking only at the headers found present must judge exactly as looking at all, and
    // the fields exactly as the map.
    let headers = crate::http1::raw_fields::HeadersRef::Map(&map);
    let raw = crate::http1::raw_fields::HeadersRef::Raw(&fields);
    let present = crate::http1::headers::Present::of(headers);
    assert_eq!(present, crate::http1::headers::Present::of(raw));
    let judged = crate::http1::strict::check_request(&method, version, &uri, headers, present);
    let all = crate::http1::headers::Present::ALL;
    assert_eq!(
        judged,
        crate::http1::strict::check_request(&method, version, &uri, headers, all)
    );
    assert_eq!(
        judged,
        crate::http1::strict::check_request(&method, version, &uri, raw, present)
    );
    let _ = crate::table::routes::normalize_host(
        map.get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(""),
    );
}

/// An upstream's answer (head, interim heads, chunked or delimited body) → Meridian's
/// HTTP/1.1 response reader, as if to a GET and to a HEAD.
pub fn upstream_response(data: &[u8]) {
    let _ = crate::http1::client::read_answer_from(data, false);
    let _ = crate::http1::client::read_answer_from(data, true);
}
