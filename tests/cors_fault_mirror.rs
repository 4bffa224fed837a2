//! End to end: the CORS, fault and mirror route policies against real backends, with their
//! metrics, the debug header and the config problems they report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backends, Client, get, start_proxy};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meridian::{config, table};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A mirror backend: reports the Host of every request it gets, and answers at once or never.
struct MirrorBackend {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    hosts: mpsc::UnboundedReceiver<(String, String)>,
}

impl MirrorBackend {
    async fn start(stall: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let (tx, hosts) = mpsc::unbounded_channel();
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, counted) = (tx.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, counted) = (tx.clone(), counted.clone());
                        async move {
                            counted.fetch_add(1, Ordering::SeqCst);
                            let host = req
                                .headers()
                                .get("host")
                                .map(|h| h.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let _ = tx.send((host, String::from_utf8_lossy(&body).into_owned()));
                            if stall {
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"from the mirror\n",
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, hits, hosts }
    }

    /// The next request's (Host, body), waiting at most 5 s.
    async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(5), self.hosts.recv())
            .await
            .expect("the mirror got no copy within 5 s")
            .unwrap()
    }
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn config(backends: &Backends, mirror: SocketAddr, routes: &str) -> String {
    backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: \"127.0.0.1:0\" }}
geo: {{ trusted_proxies: [\"127.0.0.1/32\"] }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
  shadow: {{ endpoints: {{ us-east-1: [\"{mirror}\"] }}, outlier_detection: {{ enabled: false }} }}
routes:
{routes}"
    ))
}

async fn metrics(admin: SocketAddr) -> String {
    get(admin, "admin", "/metrics", &[]).await.body
}

/// The value of the series `series` (its name and labels as Prometheus renders them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Wait (at most 5 s) until `series` reads `want`.
async fn wait_for(admin: SocketAddr, series: &str, want: f64) {
    let started = Instant::now();
    loop {
        let text = metrics(admin).await;
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const CORS_ROUTE: &str = "  - name: web
    hosts: [\"*\"]
    cluster: api
    cors:
      allow_origins:
        - exact: https://app.example.com
        - prefix: https://dev-
        - regex: \"https://[a-z]+\\\\.partner\\\\.test\"
      allow_methods: [GET, POST, PUT]
      allow_headers: [x-token, content-type]
      expose_headers: [x-trace]
      max_age: 24h
      allow_credentials: true
";

#[tokio::test]
async fn cors_preflight_is_answered_at_the_edge() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&config(&backends, dead_addr().await, CORS_ROUTE)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for origin in [
        "https://app.example.com",
        "https://dev-7.example.com",
        "https://shop.partner.test",
    ] {
        let answer = client
            .request(
                Method::OPTIONS,
                "api.example.com",
                "/orders",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "PUT"),
                    ("access-control-request-headers", "x-token"),
                ],
            )
            .await;
        assert_eq!(answer.status, 200, "{origin}");
        let h = |n: &str| {
            answer
                .headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(h("access-control-allow-origin").as_deref(), Some(origin));
        assert_eq!(
            h("access-control-allow-methods").as_deref(),
            Some("GET,POST,PUT")
        );
        assert_eq!(
            h("access-control-allow-headers").as_deref(),
            Some("x-token,content-type")
        );
        assert_eq!(h("access-control-max-age").as_deref(), Some("86400"));
        assert_eq!(
            h("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(h("vary").as_deref(), Some("Origin"));
        assert_eq!(answer.body, "");
    }
    assert_eq!(backends.hits(), [0, 0, 0], "no preflight reached a backend");

    // A preflight from an origin the policy does not allow is proxied like any OPTIONS.
    for origin in ["https://evil.test", "https://shop.partner.test.evil.test"] {
        let answer = client
            .request(
                Method::OPTIONS,
                "api.example.com",
                "/orders",
                &[("origin", origin), ("access-control-request-method", "PUT")],
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.region(), "us-east-1");
        assert!(answer.headers.get("access-control-allow-origin").is_none());
    }
    assert_eq!(backends.hits(), [2, 0, 0]);
}

#[tokio::test]
async fn cors_headers_only_for_allowed_origins() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&config(&backends, dead_addr().await, CORS_ROUTE)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;

    let allowed = client
        .get(
            "api.example.com",
            "/echo",
            &[("origin", "https://app.example.com")],
        )
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json()["region"], "us-east-1");
    let h = |n: &str| {
        allowed
            .headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        h("access-control-expose-headers").as_deref(),
        Some("x-trace")
    );
    assert_eq!(h("vary").as_deref(), Some("Origin"));
    // Preflight-only headers stay off an actual answer.
    assert!(h("access-control-allow-methods").is_none());

    // A disallowed origin, no origin, and a huge origin: no CORS headers, and each goes on.
    let huge = format!("https://{}.test", "a".repeat(16 * 1024));
    let cases: [&[(&str, &str)]; 3] = [
        &[("origin", "https://evil.test")],
        &[],
        &[("origin", huge.as_str())],
    ];
    for headers in cases {
        let answer = client.get("api.example.com", "/", headers).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.region(), "us-east-1");
        assert!(answer.headers.get("access-control-allow-origin").is_none());
        assert!(answer.headers.get("vary").is_none());
    }
    assert_eq!(backends.hits(), [4, 0, 0]);

    // A flood of preflights is answered at the edge, every one.
    for _ in 0..300 {
        let answer = client
            .request(
                Method::OPTIONS,
                "api.example.com",
                "/",
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "GET"),
                ],
            )
            .await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(backends.hits(), [4, 0, 0]);
}

#[tokio::test]
async fn full_abort_answers_at_the_edge() {
    let backends = Backends::start().await;
    let routes = "  - name: broken
    hosts: [\"*\"]
    cluster: api
    fault: { abort: { status: 418 } }
";
    let proxy = start_proxy(&config(&backends, dead_addr().await, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..20 {
        let answer = client.get("api.example.com", "/", &[]).await;
        assert_eq!(answer.status, 418);
        assert_eq!(answer.headers["x-meridian-error"], "fault-abort");
    }
    assert_eq!(backends.hits(), [0, 0, 0]);
    let text = metrics(proxy.admin.unwrap()).await;
    assert_eq!(
        sample(
            &text,
            r#"meridian_faults_total{kind="abort",route="broken"}"#
        ),
        Some(20.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{cluster="",code="418",region="",route="broken"}"#
        ),
        Some(20.0)
    );
}

#[tokio::test]
async fn half_abort_is_exact_over_a_hundred() {
    let backends = Backends::start().await;
    let routes = "  - name: flaky
    hosts: [\"*\"]
    cluster: api
    fault: { abort: { status: 503, percent: 50 } }
";
    let proxy = start_proxy(&config(&backends, dead_addr().await, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut aborted = 0;
    for _ in 0..100 {
        let answer = client.get("api.example.com", "/", &[]).await;
        match answer.status.as_u16() {
            503 => aborted += 1,
            200 => assert_eq!(answer.region(), "us-east-1"),
            other => panic!("status {other}"),
        }
    }
    assert_eq!(aborted, 50);
    assert_eq!(backends.hits(), [50, 0, 0]);
    let text = metrics(proxy.admin.unwrap()).await;
    assert_eq!(
        sample(
            &text,
            r#"meridian_faults_total{kind="abort",route="flaky"}"#
        ),
        Some(50.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"meridian_faults_total{kind="delay",route="flaky"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn delays_hold_requests_within_the_route_timeout() {
    let backends = Backends::start().await;
    let routes = "  - name: slow
    hosts: [slow.test]
    cluster: api
    fault: { delay: { fixed: 300ms } }
  - name: too-slow
    hosts: [too-slow.test]
    cluster: api
    timeout: 200ms
    fault: { delay: { fixed: 30s }, abort: { status: 500 } }
";
    let proxy = start_proxy(&config(&backends, dead_addr().await, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;

    let started = Instant::now();
    let answer = client.get("slow.test", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.region(), "us-east-1");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // The delay outlasts the route timeout: 504 at the deadline, never proxied or aborted.
    let started = Instant::now();
    let answer = client.get("too-slow.test", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 504);
    assert_eq!(answer.headers["x-meridian-error"], "fault-delay-timeout");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(backends.hits(), [1, 0, 0]);
    let text = metrics(proxy.admin.unwrap()).await;
    assert_eq!(
        sample(&text, r#"meridian_faults_total{kind="delay",route="slow"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"meridian_faults_total{kind="delay",route="too-slow"}"#
        ),
        Some(1.0)
    );
}

const MIRROR_ROUTE: &str = "  - name: api
    hosts: [\"*\"]
    cluster: api
    timeout: 1s
    mirror: { cluster: shadow, max_in_flight: 4 }
";

#[tokio::test]
async fn mirror_gets_a_shadow_copy_and_the_client_the_primary_answer() {
    let backends = Backends::start().await;
    let mut mirror = MirrorBackend::start(false).await;
    let proxy = start_proxy(&config(&backends, mirror.addr, MIRROR_ROUTE)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let answer = client
        .request_with_body(
            Method::POST,
            "api.example.com:8080",
            "/echo",
            &[],
            Bytes::from_static(b"order 66"),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["region"], "us-east-1");
    assert_eq!(answer.json()["body"], "order 66");
    assert_eq!(answer.json()["headers"]["host"], "api.example.com:8080");
    let (host, body) = mirror.next().await;
    assert_eq!(host, "api.example.com-shadow:8080");
    assert_eq!(body, "order 66");
    wait_for(
        proxy.admin.unwrap(),
        r#"meridian_mirror_requests_total{cluster="shadow",result="sent",route="api"}"#,
        1.0,
    )
    .await;
    assert_eq!(backends.hits(), [1, 0, 0]);
    assert_eq!(mirror.hits.load(Ordering::SeqCst), 1);

    // A body past max_replay_body is not copied: skipped, and counted.
    let big = Bytes::from(vec![b'x'; 128 * 1024]);
    let answer = client
        .request_with_body(Method::POST, "api.example.com", "/echo", &[], big)
        .await;
    assert_eq!(answer.status, 200);
    let text = metrics(proxy.admin.unwrap()).await;
    assert_eq!(
        sample(
            &text,
            r#"meridian_mirror_requests_total{cluster="shadow",result="skipped",route="api"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn dead_and_stalled_mirrors_cost_the_client_nothing() {
    for stalled in [false, true] {
        let backends = Backends::start().await;
        let mut stalled_backend = None;
        let mirror = if stalled {
            let b = MirrorBackend::start(true).await;
            let addr = b.addr;
            stalled_backend = Some(b);
            addr
        } else {
            dead_addr().await
        };
        let proxy = start_proxy(&config(&backends, mirror, MIRROR_ROUTE)).await;
        let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
        for _ in 0..3 {
            let started = Instant::now();
            let answer = client.get("api.example.com", "/", &[]).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.region(), "us-east-1");
            // The mirror's own deadline is the route's 1 s: the client never waits for it.
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "stalled {stalled}"
            );
        }
        if let Some(b) = &mut stalled_backend {
            b.next().await;
        }
        wait_for(
            proxy.admin.unwrap(),
            r#"meridian_mirror_requests_total{cluster="shadow",result="failed",route="api"}"#,
            3.0,
        )
        .await;
        assert_eq!(backends.hits(), [3, 0, 0]);
    }
}

#[tokio::test]
async fn mirror_copies_past_max_in_flight_are_dropped() {
    let backends = Backends::start().await;
    let mut mirror = MirrorBackend::start(true).await;
    let routes = "  - name: api
    hosts: [\"*\"]
    cluster: api
    timeout: 10s
    mirrors: [{ cluster: shadow, max_in_flight: 4 }]
";
    let proxy = start_proxy(&config(&backends, mirror.addr, routes)).await;
    let admin = proxy.admin.unwrap();
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..50 {
        let answer = client.get("api.example.com", "/", &[]).await;
        assert_eq!(answer.status, 200);
    }
    for _ in 0..4 {
        mirror.next().await;
    }
    let text = metrics(admin).await;
    let count = |result: &str| {
        sample(
            &text,
            &format!(
                r#"meridian_mirror_requests_total{{cluster="shadow",result="{result}",route="api"}}"#
            ),
        )
    };
    assert_eq!(count("dropped"), Some(46.0));
    assert_eq!(count("sent"), Some(0.0));
    assert_eq!(mirror.hits.load(Ordering::SeqCst), 4);
    assert_eq!(backends.hits(), [50, 0, 0]);
}

#[tokio::test]
async fn mirror_percent_is_exact() {
    let backends = Backends::start().await;
    let mut mirror = MirrorBackend::start(false).await;
    let routes = "  - name: api
    hosts: [\"*\"]
    cluster: api
    mirrors: [{ cluster: shadow, percent: 10 }]
";
    let proxy = start_proxy(&config(&backends, mirror.addr, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..100 {
        assert_eq!(client.get("api.example.com", "/", &[]).await.status, 200);
    }
    for _ in 0..10 {
        mirror.next().await;
    }
    wait_for(
        proxy.admin.unwrap(),
        r#"meridian_mirror_requests_total{cluster="shadow",result="sent",route="api"}"#,
        10.0,
    )
    .await;
    assert_eq!(mirror.hits.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn debug_header_says_which_policies_applied() {
    let backends = Backends::start().await;
    let mirror = MirrorBackend::start(false).await;
    let routes = "  - name: api
    hosts: [\"*\"]
    cluster: api
    fault: { abort: { status: 503, percent: 50 } }
    mirror: { cluster: shadow, percent: 50 }
";
    let proxy = start_proxy(&config(&backends, mirror.addr, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let answer = client
            .get("api.example.com", "/", &[("x-meridian-debug", "1")])
            .await;
        let decision = answer.headers["x-meridian-decision"]
            .to_str()
            .unwrap()
            .to_owned();
        seen.push((answer.status.as_u16(), decision));
    }
    // The first request of a 50% share is not picked, the second is.
    assert_eq!(seen[0].0, 200);
    assert!(seen[0].1.contains("fault: none"), "{}", seen[0].1);
    assert!(
        seen[0].1.contains("mirror shadow: not drawn"),
        "{}",
        seen[0].1
    );
    assert!(seen[0].1.contains("route api cluster api"), "{}", seen[0].1);
    assert_eq!(seen[1].0, 503);
    assert!(seen[1].1.contains("fault: abort 503"), "{}", seen[1].1);
    assert!(
        !seen[1].1.contains("mirror"),
        "an aborted request is not mirrored"
    );
    // The mirror's share counts only requests that reach it: its second is picked.
    assert_eq!(seen[2].0, 200);
    assert!(seen[2].1.contains("fault: none"), "{}", seen[2].1);
    assert!(seen[2].1.contains("mirror shadow: sent"), "{}", seen[2].1);
}

/// Each bad policy field: (route fragment, line of the problem within it, message part).
const BAD_POLICIES: &[(&str, usize, &str)] = &[
    (
        "cors: { allow_origins: [{ exact: a, prefix: b }] }",
        0,
        "cors.allow_origins[0]: give exactly one of exact, prefix",
    ),
    (
        "cors:\n      allow_origins: [{ regex: \"(\" }]",
        1,
        "cors.allow_origins[0].regex: invalid regular expression",
    ),
    (
        "cors: { allow_origins: [] }",
        0,
        "cors.allow_origins: list the allowed origins",
    ),
    (
        "cors:\n      allow_origins: [{ exact: \"*\" }]\n      allow_headers: [\"bad header\"]",
        2,
        "cors.allow_headers[0]: `bad header` is not a header name",
    ),
    (
        "cors:\n      allow_origins: [{ exact: \"*\" }]\n      max_age: forever",
        2,
        "cors.max_age: `forever` is not a duration",
    ),
    (
        "cors:\n      allow_origins: [{ exact: \"*\" }]\n      allow_methods: [\"G E T\"]",
        2,
        "cors.allow_methods[0]: `G E T` is not an HTTP method",
    ),
    ("fault: {}", 0, "fault: give a delay"),
    (
        "fault:\n      abort: { status: 99 }",
        1,
        "fault.abort.status: 99 is not a status",
    ),
    (
        "fault:\n      abort: { status: 503, percent: 150 }",
        1,
        "fault.abort.percent: 150 is outside 0..100",
    ),
    (
        "fault:\n      delay: { fixed: 2 parsecs }",
        1,
        "fault.delay.fixed: `2 parsecs` is not a duration",
    ),
    (
        "fault:\n      delay: { fixed: 999999999h }",
        1,
        "fault.delay.fixed",
    ),
    (
        "fault:\n      delay: { fixed: 1s, percent: -1 }",
        1,
        "fault.delay.percent: -1 is outside 0..100",
    ),
    (
        "mirror: { cluster: nowhere }",
        0,
        "mirror.cluster: unknown cluster `nowhere`",
    ),
    (
        "mirrors:\n      - { cluster: shadow }\n      - { cluster: shadow, max_in_flight: 0 }",
        2,
        "mirrors[1].max_in_flight: 0 is outside 1..100000",
    ),
    (
        "mirrors:\n      - { cluster: shadow, max_in_flight: 99999999 }",
        1,
        "mirrors[0].max_in_flight: 99999999 is outside",
    ),
    (
        "mirrors:\n      - { cluster: shadow, precent: 5 }",
        1,
        "unknown field `precent`",
    ),
];

#[tokio::test]
async fn bad_policy_fields_are_reported_with_their_line() {
    let backends = Backends::start().await;
    for (fragment, offset, message) in BAD_POLICIES {
        let routes =
            format!("  - name: api\n    hosts: [\"*\"]\n    cluster: api\n    {fragment}\n");
        let text = config(&backends, "127.0.0.1:9".parse().unwrap(), &routes);
        let first = text
            .lines()
            .position(|l| l.contains(fragment.lines().next().unwrap()));
        let line = first.unwrap() + 1 + offset;
        let result = config::load_str(&text, Path::new("test.yaml"))
            .map_err(|e| e.to_string())
            .and_then(|loaded| {
                table::compile(&loaded, table::CompileContext::default())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        let error = result.expect_err(fragment);
        assert!(
            error.contains(&format!("test.yaml:{line}: routes[0].{message}"))
                || (message.starts_with("unknown")
                    && error.contains(&format!("test.yaml:{line}:"))
                    && error.contains(message)),
            "{fragment}:\n{error}"
        );
    }
}

const ALL_POLICIES: &str = "  - name: api
    hosts: [\"*\"]
    cluster: api
    cors: { allow_origins: [{ exact: \"https://app.example.com\" }], allow_methods: [GET] }
    fault: { abort: { status: 503, percent: 50 }, delay: { fixed: 1ms, percent: 100 } }
    mirror: { cluster: shadow, percent: 100 }
";

#[tokio::test]
async fn explain_and_config_show_the_policies() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&config(&backends, dead_addr().await, ALL_POLICIES)).await;
    let admin = proxy.admin.unwrap();
    let explain = get(
        admin,
        "admin",
        "/explain?ip=127.0.0.1&host=api.example.com&path=/&method=OPTIONS\
         &header=origin:https://app.example.com&header=access-control-request-method:GET",
        &[],
    )
    .await
    .json();
    let policies = &explain["policies"];
    assert_eq!(
        policies["cors"], "preflight answered at the edge",
        "{explain}"
    );
    assert_eq!(policies["fault"]["abort"]["status"], 503);
    assert_eq!(policies["fault"]["abort"]["percent"], 50.0);
    assert_eq!(policies["fault"]["delay"]["fixed"], "1ms");
    // The first request of a 50% share is not aborted; the delay is on every request.
    assert_eq!(policies["fault"]["next_request"], "delay");
    assert_eq!(policies["mirrors"][0]["cluster"], "shadow");
    assert_eq!(policies["mirrors"][0]["next_request"], "mirrored");
    let other = get(
        admin,
        "admin",
        "/explain?ip=127.0.0.1&host=api.example.com&path=/&header=origin:https://evil.test",
        &[],
    )
    .await
    .json();
    assert_eq!(
        other["policies"]["cors"],
        "origin not allowed: no CORS headers"
    );
    // /explain does not move the shares: a real request still gets the first draw.
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    assert_eq!(client.get("api.example.com", "/", &[]).await.status, 200);
    let after = get(admin, "admin", "/explain?ip=127.0.0.1&host=a&path=/", &[])
        .await
        .json();
    assert_eq!(after["policies"]["fault"]["next_request"], "both");

    let effective = get(admin, "admin", "/config", &[]).await.json();
    let route = &effective["config"]["routes"][0];
    assert_eq!(
        route["cors"]["allow_origins"][0]["exact"], "https://app.example.com",
        "{effective}"
    );
    assert_eq!(route["fault"]["abort"]["status"], 503);
    assert_eq!(route["mirrors"][0]["cluster"], "shadow");
    assert_eq!(route["mirrors"][0]["max_in_flight"], 64);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `meridian check` names the policies; `meridian run` logs the fault of each request in both
/// access log formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_counts_and_access_log_shows_faults() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    for format in ["text", "json"] {
        let (proxy, admin) = (free_port(), free_port());
        let text = config(&backends, dead_addr().await, ALL_POLICIES)
            .replace(
                "bind: \"127.0.0.1:0\" }]",
                &format!("bind: \"127.0.0.1:{proxy}\" }}]"),
            )
            .replace(
                "admin: { bind: \"127.0.0.1:0\" }",
                &format!(
                    "admin: {{ bind: \"127.0.0.1:{admin}\" }}\naccess_log: {{ format: {format} }}"
                ),
            );
        let path = dir.path().join(format!("{format}.yaml"));
        std::fs::write(&path, &text).unwrap();

        let check = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            stdout.contains("routes with policies: 1 with CORS, 1 with fault, 1 with mirror"),
            "{stdout}"
        );

        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["run", "-c"])
            .arg(&path)
            .env("MERIDIAN_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        let started = Instant::now();
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "meridian did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], proxy)), None).await;
        // 100% delay, 50% abort: the first request is delayed, the second delayed and aborted.
        assert_eq!(
            client.get("api.example.com", "/first", &[]).await.status,
            200
        );
        assert_eq!(
            client.get("api.example.com", "/second", &[]).await.status,
            503
        );
        let mut logged = Vec::new();
        while logged.len() < 2 {
            let line = tokio::time::timeout(Duration::from_secs(5), lines.recv())
                .await
                .expect("no access log line within 5 s")
                .unwrap();
            logged.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        match format {
            "text" => {
                assert!(
                    logged[0].contains("/first 200") && logged[0].ends_with(" fault=delay"),
                    "{logged:?}"
                );
                assert!(
                    logged[1].contains("/second 503") && logged[1].ends_with(" fault=both"),
                    "{logged:?}"
                );
            }
            _ => {
                let first: serde_json::Value = serde_json::from_str(&logged[0]).unwrap();
                let second: serde_json::Value = serde_json::from_str(&logged[1]).unwrap();
                assert_eq!(
                    (&first["path"], &first["fault"]),
                    (&"/first".into(), &"delay".into())
                );
                assert_eq!(
                    (&second["status"], &second["fault"]),
                    (&503.into(), &"both".into())
                );
            }
        }
    }
}

/// A reload with a bad policy keeps the table in service, policies and all; a good one swaps
/// them.
#[tokio::test]
async fn bad_policy_reload_keeps_the_old_table() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let routes = |fault: &str| {
        format!("  - name: api\n    hosts: [\"*\"]\n    cluster: api\n    fault: {fault}\n")
    };
    let good = config(
        &backends,
        dead_addr().await,
        &routes("{ abort: { status: 418 } }"),
    );
    std::fs::write(&path, &good).unwrap();
    let mut loaded = config::load_file(&path).unwrap();
    common::quiet(&mut loaded);
    let first = table::compile(&loaded, table::CompileContext::default()).unwrap();
    let proxy = meridian::server::start_with(first, Some(path.clone()))
        .await
        .unwrap();
    let addr = proxy.proxy_addr().unwrap();
    assert_eq!(get(addr, "a.test", "/", &[]).await.status, 418);

    let bad = good.replace(
        "{ abort: { status: 418 } }",
        "{ abort: { status: 418, percent: 1000 } }",
    );
    std::fs::write(&path, &bad).unwrap();
    let error = proxy
        .server
        .reload(meridian::reload::Trigger::Admin)
        .await
        .expect_err("a bad fault percent is refused")
        .to_string();
    assert!(
        error.contains("routes[0].fault.abort.percent: 1000 is outside 0..100"),
        "{error}"
    );
    assert_eq!(
        get(addr, "a.test", "/", &[]).await.status,
        418,
        "the old table serves"
    );
    assert_eq!(backends.hits(), [0, 0, 0]);

    let without = good.replace("    fault: { abort: { status: 418 } }\n", "");
    std::fs::write(&path, &without).unwrap();
    proxy
        .server
        .reload(meridian::reload::Trigger::Admin)
        .await
        .unwrap();
    let answer = get(addr, "a.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.region(), "us-east-1");
}

/// Meridian's own answers to an allowed origin carry the CORS headers too (as Envoy's local
/// replies do), so a browser can read why its request failed.
#[tokio::test]
async fn cors_headers_on_meridians_own_answers() {
    let backends = Backends::start().await;
    let routes = "  - name: aborted
    hosts: [aborted.test]
    cluster: api
    cors: { allow_origins: [{ exact: \"https://app.example.com\" }] }
    fault: { abort: { status: 418 } }
  - name: dead
    hosts: [dead.test]
    cluster: shadow
    retries: { attempts: 0 }
    cors: { allow_origins: [{ exact: \"https://app.example.com\" }] }
";
    let proxy = start_proxy(&config(&backends, dead_addr().await, routes)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for (host, status) in [("aborted.test", 418), ("dead.test", 502)] {
        for (origin, cors) in [
            ("https://app.example.com", true),
            ("https://evil.test", false),
        ] {
            let answer = client.get(host, "/", &[("origin", origin)]).await;
            assert_eq!(answer.status, status, "{host}");
            assert_eq!(
                answer.headers.get("access-control-allow-origin").is_some(),
                cors,
                "{host} {origin}"
            );
        }
    }
    assert_eq!(backends.hits(), [0, 0, 0]);
}

/// A copy goes to the mirror cluster's endpoint in the region the route's steering picks for
/// the client, as the request itself does.
#[tokio::test]
async fn mirror_copies_follow_the_route_steering() {
    let backends = Backends::start().await;
    let mut us_mirror = MirrorBackend::start(false).await;
    let mut eu_mirror = MirrorBackend::start(false).await;
    let text = backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: \"127.0.0.1:0\" }}
geo:
  overrides:
    - {{ cidr: 127.0.0.2/32, region: eu-west-1 }}
    - {{ cidr: 127.0.0.3/32, region: us-east-1 }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [\"{{EU}}\"] }} }}
  shadow: {{ endpoints: {{ us-east-1: [\"{}\"], eu-west-1: [\"{}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, mirror: {{ cluster: shadow }} }}
",
        us_mirror.addr, eu_mirror.addr
    ));
    let proxy = start_proxy(&text).await;
    let addr = proxy.proxy_addr().unwrap();
    for (from, region) in [([127, 0, 0, 2], "eu-west-1"), ([127, 0, 0, 3], "us-east-1")] {
        let mut client = Client::connect(addr, Some(std::net::IpAddr::from(from))).await;
        for _ in 0..5 {
            let answer = client.get("api.example.com", "/", &[]).await;
            assert_eq!(answer.region(), region);
        }
        let mirror = if region == "eu-west-1" {
            &mut eu_mirror
        } else {
            &mut us_mirror
        };
        for _ in 0..5 {
            mirror.next().await;
        }
    }
    assert_eq!(eu_mirror.hits.load(Ordering::SeqCst), 5);
    assert_eq!(us_mirror.hits.load(Ordering::SeqCst), 5);
    assert_eq!(backends.hits(), [5, 5, 0]);
}
