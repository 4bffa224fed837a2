//! End to end: route policies against real backends that echo what they got — path and
//! authority rewrites, redirects and direct responses answered at the edge, request and
//! response header rules, the extra match conditions; and configs that must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{Client, get, start_proxy};
use http::{Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian::server::{self, RunningServer};
use meridian::{config, table};
use tokio::net::TcpListener;

/// A backend that answers every request with JSON of the request target, Host and every
/// header value it received, and adds `x-upstream: echo` and `x-drop-me: 1` to its answer.
struct Echo {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                            for (k, v) in req.headers() {
                                headers
                                    .entry(k.as_str().to_owned())
                                    .or_default()
                                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                            }
                            let target = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let body = serde_json::json!({ "target": target, "headers": headers });
                            let mut response =
                                Response::new(Full::new(Bytes::from(body.to_string())));
                            response
                                .headers_mut()
                                .insert("x-upstream", "echo".parse().unwrap());
                            response
                                .headers_mut()
                                .insert("x-drop-me", "1".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// What the echo backend reports: the request target and the values of one header.
fn target(answer: &common::Answer) -> String {
    answer.json()["target"].as_str().unwrap_or("").to_owned()
}

fn seen(answer: &common::Answer, name: &str) -> Vec<String> {
    answer.json()["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn config(echo: &Echo, routes: &str) -> String {
    format!(
        "local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
geo:
  trusted_proxies: [\"127.0.0.1/32\"]
  overrides: [{{ cidr: 127.0.0.0/8, country: DE }}]
{}
clusters:
  echo: {{ endpoints: {{ us-east-1: [\"{}\"] }} }}
routes:
{routes}",
        common::REGIONS_YAML,
        echo.addr
    )
}

#[tokio::test]
async fn rewritten_paths_and_authority_reach_the_backend() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: api
    hosts: ["*"]
    match: { path_prefix: /api/ }
    rewrite: { prefix: /v2/, authority: "internal.test:8080" }
    cluster: echo
  - name: old
    hosts: ["*"]
    match: { path_exact: /old, ignore_case: true }
    rewrite: { prefix: /new/place }
    cluster: echo
  - name: service
    hosts: ["*"]
    match: { path_prefix: /service/ }
    rewrite: { path_regex: { pattern: "^/service/([^/]+)(/.*)$", substitution: "\\2/instance/\\1" } }
    cluster: echo
  - name: plain
    hosts: ["*"]
    cluster: echo
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut client = Client::connect(addr, None).await;
    // target sent, target the backend saw, Host it saw
    let cases = [
        (
            "/api/users?x=1&y=2",
            "/v2/users?x=1&y=2",
            "internal.test:8080",
        ),
        ("/OLD?q", "/new/place?q", "a.test"),
        ("/service/foo/v1/api", "/v1/api/instance/foo", "a.test"),
        ("/untouched?k=v", "/untouched?k=v", "a.test"),
    ];
    for (sent, want, host) in cases {
        let answer = client.get("a.test", sent, &[]).await;
        assert_eq!(answer.status, 200, "{sent}: {}", answer.body);
        assert_eq!(target(&answer), want, "{sent}");
        assert_eq!(seen(&answer, "host"), [host], "{sent}");
        // X-Forwarded-Host keeps what the client asked for.
        assert_eq!(seen(&answer, "x-forwarded-host"), ["a.test"], "{sent}");
    }
    // With a body the request takes hyper's path: same rewrite.
    let answer = client
        .request_with_body(
            Method::POST,
            "a.test",
            "/api/items",
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(target(&answer), "/v2/items");
    assert_eq!(seen(&answer, "host"), ["internal.test:8080"]);
    assert_eq!(echo.hits(), 5);
}

#[tokio::test]
async fn redirects_and_direct_responses_are_answered_at_the_edge() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: moved
    hosts: ["*"]
    match: { path_prefix: /old/ }
    redirect: { prefix: /new/ }
  - name: secure
    hosts: ["*"]
    match: { path_prefix: /login }
    redirect: { scheme: https, host: login.example.com, code: 308 }
  - name: elsewhere
    hosts: ["*"]
    match: { path_exact: /docs }
    redirect: { host: docs.example.com, port: 8443, path: /index.html, code: 302 }
  - name: maintenance
    hosts: ["*"]
    match: { path_prefix: /maintenance }
    direct_response: { status: 503, body: "down for maintenance\n" }
    response_headers: { set: { x-served-by: "%REGION%", retry-after: "120" } }
  - name: empty
    hosts: ["*"]
    match: { path_exact: /teapot }
    direct_response: { status: 418 }
  - name: plain
    hosts: ["*"]
    cluster: echo
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let cases = [
        (
            "a.test:8080",
            "/old/x?q=1",
            301,
            "http://a.test:8080/new/x?q=1",
        ),
        (
            "a.test",
            "/login?next=/",
            308,
            "https://login.example.com/login?next=/",
        ),
        (
            "a.test",
            "/docs",
            302,
            "http://docs.example.com:8443/index.html",
        ),
    ];
    for (host, path, status, location) in cases {
        let answer = client.get(host, path, &[]).await;
        assert_eq!(answer.status, status, "{path}");
        assert_eq!(answer.headers["location"], location, "{path}");
    }
    let answer = client.get("a.test", "/maintenance/now", &[]).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body, "down for maintenance\n");
    assert_eq!(answer.headers["x-served-by"], "us-east-1");
    assert_eq!(answer.headers["retry-after"], "120");
    assert!(answer.headers.get("x-meridian-error").is_none());
    let answer = client.get("a.test", "/teapot", &[]).await;
    assert_eq!(answer.status, 418);
    assert_eq!(answer.body, "");
    // A path as long as a request target may be is carried into the Location whole.
    let long = format!("/old/{}", "a".repeat(8 * 1024 - 16));
    let answer = client.get("a.test", &long, &[]).await;
    assert_eq!(answer.status, 301);
    let location = answer.headers["location"].to_str().unwrap();
    assert_eq!(location.len(), "http://a.test".len() + long.len());
    assert!(location.ends_with(&"a".repeat(8 * 1024 - 16)));
    // Nothing was proxied; the plain route still is.
    assert_eq!(echo.hits(), 0);
    assert_eq!(client.get("a.test", "/other", &[]).await.status, 200);
    assert_eq!(echo.hits(), 1);
}

#[tokio::test]
async fn header_rules_change_the_request_and_the_response() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: rules
    hosts: ["*"]
    cluster: echo
    request_headers:
      remove: [x-secret]
      set: { x-set: fixed, x-client: "%CLIENT_ADDRESS% in %CLIENT_COUNTRY%", x-rid: "%REQUEST_ID%", x-region: "%REGION%" }
      add: { x-add: two }
    response_headers:
      remove: [x-drop-me]
      set: { x-served-from: "%REGION%", x-rid: "%REQUEST_ID%" }
      add: { x-upstream: meridian }
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let sent = [
        ("x-secret", "s3cret"),
        ("x-set", "from-client"),
        ("x-add", "one"),
    ];
    for body in [Bytes::new(), Bytes::from_static(b"payload")] {
        let answer = client
            .request_with_body(Method::POST, "a.test", "/", &sent, body)
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(seen(&answer, "x-secret").is_empty());
        assert_eq!(seen(&answer, "x-set"), ["fixed"]);
        assert_eq!(seen(&answer, "x-add"), ["one", "two"]);
        assert_eq!(seen(&answer, "x-client"), ["127.0.0.1 in DE"]);
        assert_eq!(seen(&answer, "x-region"), ["us-east-1"]);
        let id = seen(&answer, "x-request-id");
        assert_eq!(id.len(), 1);
        assert_eq!(seen(&answer, "x-rid"), id);
        // The response: the upstream's header removed, one set, one added beside its own.
        assert!(answer.headers.get("x-drop-me").is_none());
        assert_eq!(answer.headers["x-served-from"], "us-east-1");
        assert_eq!(answer.headers["x-rid"], id[0].as_str());
        assert_eq!(answer.headers["x-request-id"], id[0].as_str());
        let upstream: Vec<_> = answer.headers.get_all("x-upstream").iter().collect();
        assert_eq!(upstream, ["echo", "meridian"]);
    }
    assert_eq!(echo.hits(), 2);
}

#[tokio::test]
async fn query_scheme_port_absent_headers_and_case_select_routes() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: secure-only
    hosts: ["*"]
    match: { scheme: https }
    direct_response: { status: 200, body: secure-only }
  - name: beta
    hosts: ["*"]
    match: { query: [{ name: version, exact: beta }, { name: debug, present: true }] }
    direct_response: { status: 200, body: beta }
  - name: numeric
    hosts: ["*"]
    match: { query: [{ name: id, regex: "^[0-9]+$" }] }
    direct_response: { status: 200, body: numeric }
  - name: admin-port
    hosts: ["*"]
    match: { port: 9090 }
    direct_response: { status: 200, body: admin-port }
  - name: not-canary
    hosts: ["*"]
    match: { path_prefix: /canary, without_headers: [{ name: x-canary, exact: "1" }] }
    direct_response: { status: 200, body: not-canary }
  - name: shouting
    hosts: ["*"]
    match: { path_prefix: /Loud/, ignore_case: true }
    direct_response: { status: 200, body: shouting }
  - name: rest
    hosts: ["*"]
    cluster: echo
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    // host, path, headers, route that answers ("" for the backend)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("a.test", "/?version=beta&debug", &[], "beta"),
        ("a.test", "/?debug=1&version=beta", &[], "beta"),
        ("a.test", "/?version=beta", &[], ""),
        ("a.test", "/?version=betamax&debug", &[], ""),
        ("a.test", "/?id=42", &[], "numeric"),
        ("a.test", "/?id=42x", &[], ""),
        ("a.test:9090", "/", &[], "admin-port"),
        ("a.test:9091", "/", &[], ""),
        ("a.test", "/canary", &[], "not-canary"),
        ("a.test", "/canary", &[("x-canary", "0")], "not-canary"),
        ("a.test", "/canary", &[("x-canary", "1")], ""),
        ("a.test", "/LOUD/x", &[], "shouting"),
        ("a.test", "/loud/x", &[], "shouting"),
        ("a.test", "/loudx", &[], ""),
    ];
    let mut proxied = 0;
    for (host, path, headers, want) in cases {
        let answer = client.get(host, path, headers).await;
        assert_eq!(answer.status, 200, "{host}{path}");
        if want.is_empty() {
            proxied += 1;
            assert_eq!(target(&answer), *path, "{host}{path} reached the backend");
        } else {
            assert_eq!(answer.body, *want, "{host}{path} {headers:?}");
        }
    }
    // A flood of parameters before the ones that count: still matched, still answered.
    let flood: String = (0..1000).map(|i| format!("p{i}=&")).collect();
    let answer = client
        .get("a.test", &format!("/?{flood}version=beta&debug"), &[])
        .await;
    assert_eq!(answer.body, "beta");
    assert_eq!(echo.hits(), proxied);
}

#[tokio::test]
async fn the_debug_header_names_the_policies_that_applied() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: moved
    hosts: ["*"]
    match: { path_prefix: /old/ }
    redirect: { prefix: /new/ }
  - name: api
    hosts: ["*"]
    rewrite: { prefix: /v2/, authority: internal.test }
    cluster: echo
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let debug = [("x-meridian-debug", "1")];
    let answer = client.get("a.test", "/old/x", &debug).await;
    let decision = answer.headers["x-meridian-decision"].to_str().unwrap();
    assert!(
        decision.contains("route moved: redirect 301 to http://a.test/new/x"),
        "{decision}"
    );
    let answer = client.get("a.test", "/users", &debug).await;
    let decision = answer.headers["x-meridian-decision"].to_str().unwrap();
    assert!(decision.contains("rewritten path /v2/users"), "{decision}");
    assert!(
        decision.contains("rewritten authority internal.test"),
        "{decision}"
    );
    assert_eq!(target(&answer), "/v2/users");
}

/// Compile `routes` with a cluster around them; the problems as (path, line, message).
fn problems(routes: &str) -> Vec<(String, Option<usize>, String)> {
    let yaml = format!(
        "local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
{}
clusters:
  echo: {{ endpoints: {{ us-east-1: [\"127.0.0.1:1\"] }} }}
routes:
{routes}",
        common::REGIONS_YAML
    );
    let loaded = config::load_str(&yaml, Path::new("bad.yaml")).unwrap();
    match table::compile(&loaded, table::CompileContext::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems()
            .into_iter()
            .map(|p| {
                (
                    p.path.map(|p| p.to_string()).unwrap_or_default(),
                    p.line,
                    p.message,
                )
            })
            .collect(),
    }
}

#[test]
fn bad_policies_are_refused_with_field_and_line() {
    let huge_regex = "a".repeat(100 * 1024);
    let huge_path = format!("/{}", "p".repeat(100 * 1024));
    let huge_body = "b".repeat(100 * 1024);
    // route body (after name and hosts, each on its own line 2 of the route), path, message
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "request_headers: { set: { x-a: \"one\\r\\nx-b: two\" } }".into(),
            "routes[0].request_headers.set.x-a",
            "not a valid header value",
        ),
        (
            "response_headers: { add: { x-a: \"a\\nb\" } }".into(),
            "routes[0].response_headers.add.x-a",
            "not a valid header value",
        ),
        (
            "request_headers: { set: { x-a: \"%COUNTRY%\" } }".into(),
            "routes[0].request_headers.set.x-a",
            "unknown variable %COUNTRY%",
        ),
        (
            "request_headers: { set: { connection: close } }".into(),
            "routes[0].request_headers.set.connection",
            "hop-by-hop",
        ),
        (
            "request_headers: { remove: [transfer-encoding] }".into(),
            "routes[0].request_headers.remove[0]",
            "hop-by-hop",
        ),
        (
            "request_headers: { set: { host: other } }".into(),
            "routes[0].request_headers.set.host",
            "rewrite.authority",
        ),
        (
            "response_headers: { set: { content-length: \"5\" } }".into(),
            "routes[0].response_headers.set.content-length",
            "framing",
        ),
        (
            format!("match: {{ path_regex: \"{huge_regex}\" }}"),
            "routes[0].match.path_regex",
            "more than the limit",
        ),
        (
            format!("match: {{ query: [{{ name: q, regex: \"{huge_regex}\" }}] }}"),
            "routes[0].match.query[0].regex",
            "more than the limit",
        ),
        (
            "match: { path_regex: \"(a{1000}){1000}\" }".into(),
            "routes[0].match.path_regex",
            "compiles to more than",
        ),
        (
            "rewrite: { path_regex: { pattern: \"^/(a)\", substitution: \"/\\\\2\" } }".into(),
            "routes[0].rewrite.path_regex.substitution",
            "capture group",
        ),
        (
            "match: { path_regex: \"^/x\" }\n    rewrite: { prefix: /y }".into(),
            "routes[0].rewrite.prefix",
            "path_regex",
        ),
        (
            format!("redirect: {{ path: \"{huge_path}\" }}"),
            "routes[0].redirect.path",
            "longer than the limit",
        ),
        (
            "redirect: { code: 305 }".into(),
            "routes[0].redirect.code",
            "not a redirect code",
        ),
        (
            "redirect: { host: \"a.test:80\" }".into(),
            "routes[0].redirect.host",
            "not a host name",
        ),
        (
            "redirect: { scheme: ftp }".into(),
            "routes[0].redirect.scheme",
            "not http or https",
        ),
        (
            "direct_response: { status: 99 }".into(),
            "routes[0].direct_response.status",
            "200..599",
        ),
        (
            format!("direct_response: {{ status: 200, body: \"{huge_body}\" }}"),
            "routes[0].direct_response.body",
            "more than the limit",
        ),
        (
            "match: { scheme: ftp }".into(),
            "routes[0].match.scheme",
            "http or https",
        ),
        (
            "match: { port: 70000 }".into(),
            "routes[0].match.port",
            "not a port",
        ),
        (
            "rewrite: { authority: \"bad host\" }".into(),
            "routes[0].rewrite.authority",
            "host[:port]",
        ),
    ];
    for (body, path, message) in &cases {
        let routes = format!("  - name: r\n    hosts: [\"*\"]\n    cluster: echo\n    {body}\n");
        let found = problems(&routes);
        assert!(
            found
                .iter()
                .any(|(p, line, m)| p == path && line.is_some() && m.contains(message)),
            "{path}: want {message:?}, got {found:?}"
        );
    }
    // An edge answer needs no cluster, and refuses one.
    let edge = "  - name: r\n    hosts: [\"*\"]\n    redirect: { code: 308 }\n";
    assert_eq!(problems(edge), Vec::new());
    let both = "  - name: r\n    hosts: [\"*\"]\n    cluster: echo\n    direct_response: { status: 200 }\n";
    let found = problems(both);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "routes[0].cluster");
    assert_eq!(found[0].1, Some(13));
    // Still no cluster at all is refused for a proxied route.
    let none = "  - name: r\n    hosts: [\"*\"]\n    rewrite: { prefix: /x }\n";
    assert!(!problems(none).is_empty());
}

#[tokio::test]
async fn a_reload_with_a_bad_policy_keeps_the_old_table() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let good = config(
        &echo,
        r#"
  - name: moved
    hosts: ["*"]
    redirect: { path: /elsewhere }
    response_headers: { set: { x-policy: good } }
"#,
    )
    .replace("admin: { bind: null }", "admin: { bind: \"127.0.0.1:0\" }");
    std::fs::write(&path, &good).unwrap();
    let proxy = start_from(&path).await;
    let (addr, admin) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let answer = get(addr, "a.test", "/x", &[]).await;
    assert_eq!(answer.headers["location"], "http://a.test/elsewhere");

    let bad = good.replace("x-policy: good", "x-policy: \"bad\\r\\nx-injected: 1\"");
    std::fs::write(&path, &bad).unwrap();
    let mut client = Client::connect(admin, None).await;
    let reload = client.request(Method::POST, "admin", "/reload", &[]).await;
    assert_eq!(reload.status, 422, "{}", reload.body);
    assert!(
        reload.body.contains("response_headers.set.x-policy"),
        "{}",
        reload.body
    );
    let answer = get(addr, "a.test", "/x", &[]).await;
    assert_eq!(answer.headers["location"], "http://a.test/elsewhere");
    assert_eq!(answer.headers["x-policy"], "good");
    assert!(answer.headers.get("x-injected").is_none());
    assert_eq!(echo.hits(), 0);
}

async fn start_from(path: &Path) -> RunningServer {
    let mut loaded = config::load_file(path).unwrap();
    common::quiet(&mut loaded);
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    server::start_with(table, Some(path.to_path_buf()))
        .await
        .unwrap()
}

/// `meridian check` lists each route's policies; the admin API's `/config` shows them as
/// written and `/explain` says what they would do to a request.
#[tokio::test]
async fn check_config_and_explain_show_the_policies() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: moved
    hosts: ["*"]
    match: { path_prefix: /old/, query: [{ name: v, exact: "1" }] }
    redirect: { prefix: /new/, code: 308 }
  - name: api
    hosts: ["*"]
    match: { path_prefix: /api/, ignore_case: true }
    rewrite: { prefix: /v2/, authority: internal.test }
    request_headers: { set: { x-a: "1" }, remove: [x-b] }
    cluster: echo
  - name: plain
    hosts: ["*"]
    request_headers: {}
    response_headers: { set: {} }
    cluster: echo
"#,
    )
    .replace("admin: { bind: null }", "admin: { bind: \"127.0.0.1:0\" }");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains("route moved: query v = 1; redirect 308 prefix /new/"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "route api: path ignores case; rewrite prefix /v2/, rewrite authority internal.test; request headers remove x-b, set x-a"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("route plain"), "{stdout}");

    let proxy = start_from(&path).await;
    let admin = proxy.admin.unwrap();
    let json = |path: &'static str| async move {
        serde_json::from_str::<serde_json::Value>(&get(admin, "admin", path, &[]).await.body)
            .unwrap()
    };
    let config = json("/config").await;
    let routes = &config["config"]["routes"];
    assert_eq!(routes[0]["redirect"]["code"], 308);
    assert_eq!(routes[1]["rewrite"]["authority"], "internal.test");
    assert_eq!(routes[1]["request_headers"]["remove"][0], "x-b");
    assert!(routes[2].get("rewrite").is_none(), "{}", routes[2]);
    // Empty rule sets are no policy at all: nothing to do per request.
    assert!(
        table::load(&path, table::CompileContext::default())
            .unwrap()
            .routes
            .routes[2]
            .policies
            .is_none()
    );

    let explained = json("/explain?ip=127.0.0.1&host=a.test:8080&path=/old/x&query=v%3D1").await;
    assert_eq!(explained["route"], "moved", "{explained}");
    assert_eq!(explained["result"], "answered at the edge");
    assert_eq!(
        explained["policies"]["answer"]["location"],
        "http://a.test:8080/new/x?v=1"
    );
    let explained = json("/explain?ip=127.0.0.1&host=a.test&path=/API/users").await;
    assert_eq!(explained["result"], "routed", "{explained}");
    assert_eq!(explained["policies"]["rewritten_path"], "/v2/users");
    assert_eq!(
        explained["policies"]["rewritten_authority"],
        "internal.test"
    );
    let explained = json("/explain?ip=127.0.0.1&host=a.test&path=/other").await;
    assert_eq!(explained["route"], "plain");
    assert!(explained["policies"].is_null(), "{explained}");
    assert_eq!(echo.hits(), 0);
}

/// Over HTTP/2 (h2c) the authority comes from `:authority`: the rewrite still replaces it,
/// the path is rewritten, and header rules apply both ways.
#[tokio::test]
async fn policies_apply_to_http2_requests() {
    let echo = Echo::start().await;
    let yaml = config(
        &echo,
        r#"
  - name: api
    hosts: ["*"]
    match: { path_prefix: /api/ }
    rewrite: { prefix: /v2/, authority: internal.test }
    request_headers: { set: { x-region: "%REGION%" } }
    response_headers: { set: { x-served-from: "%REGION%" }, remove: [x-drop-me] }
    cluster: echo
"#,
    );
    let proxy = start_proxy(&yaml).await;
    let tcp = tokio::net::TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let request = Request::get("http://a.test/api/users?page=2")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-from"], "us-east-1");
    assert!(response.headers().get("x-drop-me").is_none());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let seen: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(seen["target"], "/v2/users?page=2");
    assert_eq!(seen["headers"]["host"][0], "internal.test");
    assert_eq!(seen["headers"]["x-region"][0], "us-east-1");
    assert_eq!(echo.hits(), 1);
}
