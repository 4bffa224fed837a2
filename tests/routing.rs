//! End to end: route matching by host, path, header and method; 404 from Meridian itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backends, Client, start_proxy};
use http::Method;

/// Each route sends to a cluster that only runs in one region, so the serving region names
/// the route that matched.
const ROUTES: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  us: { endpoints: { us-east-1: [\"{US}\"] } }
  eu: { endpoints: { eu-west-1: [\"{EU}\"] } }
  ap: { endpoints: { ap-southeast-1: [\"{AP}\"] } }
routes:
  - name: canary
    hosts: [\"api.example.com\"]
    match: { headers: [{ name: x-canary, exact: \"on\" }] }
    cluster: ap
  - name: writes
    hosts: [\"api.example.com\"]
    match: { methods: [POST, put] }
    cluster: ap
  - name: health
    hosts: [\"api.example.com\"]
    match: { path_exact: /health }
    cluster: eu
  - name: versioned
    hosts: [\"*.example.com\"]
    match: { path_regex: \"^/v[0-9]+/\" }
    cluster: eu
  - name: api
    hosts: [\"api.example.com\", \"*.api.example.com\"]
    match: { path_prefix: /api/ }
    cluster: us
  - name: static
    hosts: [\"*\"]
    match: { path_prefix: /static/ }
    cluster: ap
";

#[tokio::test]
async fn first_matching_route_wins() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ROUTES)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;

    // host, path, request headers, status, serving region
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("api.example.com", "/health", &[], 200, "eu-west-1"),
        ("api.example.com", "/health/x", &[], 404, ""),
        ("api.example.com", "/api/users", &[], 200, "us-east-1"),
        ("API.Example.COM:8080", "/api/users", &[], 200, "us-east-1"),
        ("eu.api.example.com", "/api/users", &[], 200, "us-east-1"),
        ("a.b.api.example.com", "/api/users", &[], 200, "us-east-1"),
        ("api.example.com", "/v2/users", &[], 200, "eu-west-1"),
        ("www.example.com", "/v1/", &[], 200, "eu-west-1"),
        ("example.com", "/v1/", &[], 404, ""),
        (
            "api.example.com",
            "/api/users",
            &[("x-canary", "on")],
            200,
            "ap-southeast-1",
        ),
        (
            "api.example.com",
            "/api/users",
            &[("x-canary", "off")],
            200,
            "us-east-1",
        ),
        (
            "anything.test",
            "/static/app.js",
            &[],
            200,
            "ap-southeast-1",
        ),
        ("anything.test", "/api/users", &[], 404, ""),
        ("www.example.com", "/api/users", &[], 404, ""),
    ];
    for (host, path, headers, status, region) in cases {
        let answer = client.get(host, path, headers).await;
        assert_eq!(
            (answer.status.as_u16(), answer.region()),
            (*status, *region),
            "{host}{path} {headers:?}: {}",
            answer.body
        );
        if *status == 404 {
            assert_eq!(answer.headers["x-meridian-error"], "no-route");
        }
    }
    let answer = client
        .request(Method::PUT, "api.example.com", "/api/users", &[])
        .await;
    assert_eq!(answer.region(), "ap-southeast-1", "method match");
    let answer = client
        .request(Method::DELETE, "api.example.com", "/api/users", &[])
        .await;
    assert_eq!(answer.region(), "us-east-1");
}

#[tokio::test]
async fn unmatched_host_is_answered_by_meridian_and_never_forwarded() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ROUTES)).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for host in ["evil.test", "127.0.0.1", &backends.us.addr.to_string()] {
        let answer = client.get(host, "/api/x", &[]).await;
        assert_eq!(answer.status, 404, "{host}");
        assert!(answer.body.contains("no route for host"), "{}", answer.body);
    }
    assert_eq!(backends.hits(), [0, 0, 0], "Meridian is not an open proxy");
}
