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

/// A GeoDNS packet → the listener's whole query path (parse, answer, encode) over UDP and
/// TCP, against a fixed table with the demo GeoIP data. A UDP reply never exceeds the largest
/// payload Meridian sends.
pub fn dns_query(data: &[u8]) {
    static TABLE: std::sync::OnceLock<Option<crate::table::RoutingTable>> =
        std::sync::OnceLock::new();
    let Some(table) = TABLE.get_or_init(dns_table) else {
        return;
    };
    for resolver in [
        std::net::IpAddr::from([198, 51, 100, 53]),
        std::net::IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x53]),
    ] {
        use crate::dns::wire::{Transport, handle};
        if let Some(reply) = handle(table, data, resolver, Transport::Udp) {
            assert!(reply.len() <= usize::from(crate::dns::answer::MAX_UDP_PAYLOAD));
        }
        let _ = handle(table, data, resolver, Transport::Tcp);
    }
}

fn dns_table() -> Option<crate::table::RoutingTable> {
    const CONFIG: &str = "local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
access_log: { enabled: false }
regions:
  us-east-1: { lat: 38.9, lon: -77.4, ingress: [192.0.2.10, \"2001:db8::10\"] }
  eu-west-1: { lat: 53.3, lon: -6.3, ingress: [198.51.100.10] }
clusters:
  web: { endpoints: { us-east-1: [\"127.0.0.1:1\"], eu-west-1: [\"127.0.0.1:2\"] } }
routes:
  - { name: web, hosts: [\"*\"], cluster: web }
geodns:
  listen: \"127.0.0.1:0\"
  max_answers: 2
  zones:
    - name: example.com
      ns: [ns1.example.com]
      soa: { rname: hostmaster.example.com }
      names: [{ name: www, route: web }, { name: '@', cluster: web }, { name: a.b, route: web }]
";
    let loaded = crate::config::load_str(CONFIG, Path::new("fuzz-dns.yaml")).ok()?;
    let database = crate::geo::GeoDb::from_bytes(
        include_bytes!("../config/geoip/demo-city.mmdb").to_vec(),
        Path::new("demo-city.mmdb"),
    )
    .ok()
    .map(std::sync::Arc::new);
    let context = crate::table::CompileContext {
        database,
        ..Default::default()
    };
    crate::table::compile(&loaded, context).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dns_target_has_a_table_to_answer_from() {
        // Without one every input would return at once and the target would test nothing.
        let table = super::dns_table().unwrap();
        assert!(table.geodns.is_some());
    }
}
