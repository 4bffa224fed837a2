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

/// A request head (line 1: authority, line 2: request target, line 3: method, then
/// `name: value` header lines) → the strict checks, then everything the request path does
/// with it before any upstream: route match (query, scheme, port, header conditions), CORS,
/// the redirect Location, the path rewrite, header rules, the steering decision with session
/// affinity keys, and the `grpc-timeout` deadline. Against a fixed table that uses each.
pub fn route_policies(data: &[u8]) {
    static TABLE: std::sync::OnceLock<Option<crate::table::RoutingTable>> =
        std::sync::OnceLock::new();
    let Some(table) = TABLE.get_or_init(policies_table) else {
        return;
    };
    let mut lines = data.split(|b| *b == b'\n');
    let authority = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let Ok(method) = Method::from_bytes(lines.next().unwrap_or(b"GET")) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut map = HeaderMap::new();
    if let Ok(host) = HeaderValue::from_bytes(authority) {
        map.insert(http::header::HOST, host);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            map.append(name, value);
        }
    }
    let headers = crate::http1::raw_fields::HeadersRef::Map(&map);
    let present = crate::http1::headers::Present::of(headers);
    if crate::http1::strict::check_request(&method, Version::HTTP_11, &uri, headers, present)
        .is_err()
    {
        return;
    }
    let Some(authority) = map.get(http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return;
    };
    let host = crate::table::routes::normalize_host(authority);
    for https in [false, true] {
        let facts = crate::route::decision::RequestFacts {
            peer: [127, 0, 0, 1].into(),
            host: &host,
            path: uri.path(),
            query: uri.query(),
            method: &method,
            https,
            authority,
            headers,
            present,
        };
        let Ok((_, route)) = crate::route::decision::find_route(table, &facts) else {
            continue;
        };
        route_policies_of(route, &facts, &map);
        let mut rng = fastrand::Rng::with_seed(7);
        let _ = crate::route::decision::decide_for_route(table, route, &facts, &mut rng, None);
    }
    for value in map.get_all("grpc-timeout") {
        let _ = crate::proxy::grpc::parse_timeout(value.as_bytes());
    }
}

fn route_policies_of(
    route: &crate::table::routes::Route,
    facts: &crate::route::decision::RequestFacts<'_>,
    map: &HeaderMap,
) {
    use crate::table::policies::{answer, cors::CorsVerdict, headers::VarValues, rewrite};
    if let Some(cors) = &route.cors {
        let origin = map.get(http::header::ORIGIN).map(HeaderValue::as_bytes);
        let asks = map.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        match cors.verdict(facts.method, origin, asks) {
            CorsVerdict::Preflight(origin) => drop(cors.preflight(origin)),
            CorsVerdict::Allowed(origin) => drop(cors.answer_headers(origin, None)),
            CorsVerdict::Pass => {}
        }
    }
    let Some(policies) = &route.policies else {
        return;
    };
    if let Some(answer::EdgeAnswer::Redirect(redirect)) = &policies.answer {
        let request = answer::RedirectRequest {
            https: facts.https,
            authority: facts.authority,
            path: facts.path,
            query: facts.query,
        };
        let _ = answer::location(redirect, &route.path, &request);
    }
    if let Some(rule) = policies.rewrite.as_ref().and_then(|r| r.path.as_ref()) {
        let _ = rewrite::rewrite_path(rule, &route.path, facts.path);
    }
    let request_id = map.get("x-request-id");
    let vars = VarValues {
        country: Some("DE"),
        client: Some(facts.peer),
        region: "eu-west-1",
        request_id,
    };
    for rules in [&policies.request_headers, &policies.response_headers]
        .into_iter()
        .flatten()
    {
        let mut headers = map.clone();
        rules.apply(&mut headers, &vars);
    }
}

fn policies_table() -> Option<crate::table::RoutingTable> {
    const CONFIG: &str = r#"local_region: us-east-1
listeners: [{ name: http, bind: "127.0.0.1:0" }]
admin: { bind: null }
access_log: { enabled: false }
geo: { trusted_proxies: [127.0.0.0/8] }
regions:
  us-east-1: { lat: 38.9, lon: -77.4 }
  eu-west-1: { lat: 53.3, lon: -6.3 }
clusters:
  web: { endpoints: { us-east-1: ["127.0.0.1:1"], eu-west-1: ["127.0.0.1:2"] } }
  by-header:
    endpoints: { us-east-1: ["127.0.0.1:3", "127.0.0.1:4"] }
    load_balancer: { consistent_hash: { header: x-user } }
  by-cookie:
    endpoints: { us-east-1: ["127.0.0.1:5", "127.0.0.1:6"] }
    load_balancer: { consistent_hash: { cookie: { name: sid, ttl: 1h, path: / } } }
  by-query:
    endpoints: { us-east-1: ["127.0.0.1:7", "127.0.0.1:8"] }
    load_balancer: { consistent_hash: { query_parameter: user } }
  by-source:
    endpoints: { us-east-1: ["127.0.0.1:9", "127.0.0.1:10"] }
    load_balancer: { consistent_hash: { source_ip: true } }
routes:
  - name: secure
    hosts: ["*"]
    match: { scheme: https, path_prefix: /secure }
    direct_response: { status: 200, body: secure-only }
  - name: beta
    hosts: ["*"]
    match: { query: [{ name: version, exact: beta }, { name: debug, present: true }] }
    redirect: { scheme: https, host: beta.example.com, port: 8443, code: 307 }
  - name: numeric
    hosts: ["*"]
    match: { query: [{ name: id, regex: "^[0-9]+$" }], path_prefix: /items/ }
    redirect: { prefix: /things/ }
  - name: moved
    hosts: ["*"]
    match: { path_prefix: /old/, ignore_case: true }
    redirect: { path: /index.html, code: 302 }
  - name: admin-port
    hosts: ["*"]
    match: { port: 8443, without_headers: [{ name: x-canary, exact: "1" }] }
    cluster: by-header
  - name: service
    hosts: ["*"]
    match: { path_regex: "^/service/([^/]+)(/.*)?$" }
    rewrite: { path_regex: { pattern: "^/service/([^/]+)(/.*)?$", substitution: '\2/instance/\1' } }
    request_headers:
      set: { x-client-country: "%CLIENT_COUNTRY%", x-via: "%REGION% %%" }
      add: { x-client: "%CLIENT_ADDRESS% %REQUEST_ID%" }
      remove: [cookie]
    response_headers: { set: { x-served-from: "%REGION%" } }
    cluster: by-cookie
  - name: tools
    hosts: ["*"]
    match: { path_prefix: /tools/, headers: [{ name: x-tenant, regex: "^[a-z]{1,8}$" }] }
    rewrite: { prefix: /, authority: tools.internal }
    cluster: by-query
  - name: api
    hosts: ["*"]
    match: { path_prefix: / }
    cluster: by-source
    cors:
      allow_origins: [{ exact: "https://example.com" }, { prefix: "https://preview-" }, { regex: "^https://[a-z]+[.]example[.]org$" }]
      allow_methods: [GET, POST]
      allow_headers: [authorization, content-type]
      expose_headers: [x-served-from]
      allow_credentials: true
      max_age: 24h
"#;
    let loaded = crate::config::load_str(CONFIG, Path::new("fuzz-policies.yaml")).ok()?;
    crate::table::compile(&loaded, crate::table::CompileContext::default()).ok()
}

/// An Istio VirtualService/Gateway/DestinationRule document → `meridian import istio`.
pub fn istio_import(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(imported) = crate::config::import::istio(text) {
        let _ = imported.render();
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

/// A GeoIP database file (`geo.database`, an operator's file that may be damaged or hostile) →
/// open and verify, then look addresses up: every answer through the shortcut tables, the
/// table of records decoded at open (or, for a file of too many records, the per-thread record
/// cache) and the cache of recent addresses must be the reader's own, and so must every
/// network prefix (a GeoDNS client-subnet scope).
pub fn geo_database(data: &[u8]) {
    let Ok(db) = crate::geo::GeoDb::from_bytes(data.to_vec(), Path::new("fuzz.mmdb")) else {
        return;
    };
    // Neighbours in one network share a record, found again by its offset.
    let addresses: [std::net::IpAddr; 9] = [
        std::net::Ipv4Addr::new(0, 0, 0, 0).into(),
        std::net::Ipv4Addr::new(198, 51, 100, 7).into(),
        std::net::Ipv4Addr::new(198, 51, 100, 9).into(),
        std::net::Ipv4Addr::new(203, 0, 113, 200).into(),
        std::net::Ipv4Addr::new(10, 9, 8, 7).into(),
        std::net::Ipv4Addr::new(255, 255, 255, 255).into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc633, 0x6407).into(),
    ];
    for ip in addresses {
        let uncached = db.lookup_uncached(ip);
        // Twice: the second answer comes from the cache of recent addresses.
        assert_eq!(db.lookup(ip), uncached, "{ip}");
        assert_eq!(db.lookup(ip), uncached, "{ip}");
        assert_eq!(
            db.network_prefix(ip),
            db.network_prefix_uncached(ip),
            "{ip}"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dns_target_has_a_table_to_answer_from() {
        // Without one every input would return at once and the target would test nothing.
        let table = super::dns_table().unwrap();
        assert!(table.geodns.is_some());
    }

    #[test]
    fn the_policies_target_has_every_policy_to_run() {
        let table = super::policies_table().unwrap();
        let routes = &table.routes.routes;
        assert!(routes.iter().any(|r| r.cors.is_some()));
        assert!(routes.iter().any(|r| r.extra.is_some()));
        let policies: Vec<_> = routes.iter().filter_map(|r| r.policies.as_ref()).collect();
        assert!(policies.iter().any(|p| p.answer.is_some()));
        assert!(policies.iter().any(|p| p.rewrite.is_some()));
        assert!(policies.iter().any(|p| p.request_headers.is_some()));
        // A request the target can route: a known route, a rewrite, every header rule.
        super::route_policies(
            b"a.example.com\n/service/x/y?id=1\nGET\nx-user: u\norigin: https://example.com",
        );
    }
}
