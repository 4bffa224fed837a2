//! The status page's JSON over plain HTTP: windowed rates and shares (an idle cluster has rate
//! 0 and no share), where clients land by country and region, each route's mode, live split
//! and region order for a sample client, and a 400 with the reason for a bad sample client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Admin, Backends, DEMO_GEO, get, start_proxy, three_region_config};
use serde_json::Value;

fn status_config() -> String {
    three_region_config(
        "us-east-1",
        Admin::Loopback,
        DEMO_GEO,
        "clusters:
  api:
    endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] }
  spare:
    endpoints: { us-east-1: [\"{US}\"] }
routes:
  - { name: spare, hosts: [\"spare.test\"], cluster: spare }
  - name: split
    hosts: [\"split.test\"]
    cluster: api
    steering: { mode: weighted, weights: { us-east-1: 50, eu-west-1: 30, ap-southeast-1: 20 } }
  - { name: api, hosts: [\"*\"], cluster: api }
",
    )
}

async fn admin(admin: SocketAddr, path: &str) -> (u16, Value) {
    let answer = get(admin, "admin", path, &[]).await;
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status.as_u16(), body)
}

/// Poll `path` until `done` holds (the sampler reads the counters once a second).
async fn wait_for(
    addr: SocketAddr,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = admin(addr, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{path} never showed {what}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'v>(list: &'v Value, key: &str, value: &str) -> &'v Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key}={value} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_is_windowed_and_says_where_clients_land() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(&status_config())).await;
    let (addr, admin_addr) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());

    // Before any traffic: nothing is "100%".
    let idle = wait_for(admin_addr, "/status", "a first sample", |s| {
        s["covered_seconds"].as_u64() >= Some(1)
    })
    .await;
    for region in idle["regions"].as_array().unwrap() {
        assert_eq!(region["requests_per_s"], 0.0, "{region}");
        assert!(region["share"].is_null(), "{region}");
    }

    // Germany (198.51.100.7) lands in eu-west-1, the US (192.0.2.10) in us-east-1.
    for (xff, n, want) in [
        ("198.51.100.7", 9, "eu-west-1"),
        ("192.0.2.10", 3, "us-east-1"),
    ] {
        for _ in 0..n {
            let answer = get(addr, "api.test", "/", &[("x-forwarded-for", xff)]).await;
            assert_eq!((answer.status.as_u16(), answer.region()), (200, want));
        }
    }
    let landing = wait_for(admin_addr, "/status/clients", "12 requests", |c| {
        c["requests"] == 12
    })
    .await;
    let de = &landing["countries"][0];
    assert_eq!(de["country"], "DE", "{landing:#}");
    assert_eq!(de["requests"], 9);
    assert_eq!(de["share"], 0.75);
    assert_eq!(de["regions"][0]["region"], "eu-west-1");
    assert_eq!(de["regions"][0]["share"], 1.0);
    let us = &landing["countries"][1];
    assert_eq!((&us["country"], &us["share"]), (&"US".into(), &0.25.into()));
    assert_eq!(us["regions"][0]["region"], "us-east-1");

    let status = wait_for(admin_addr, "/status", "12 requests", |s| {
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum::<u64>()
            == 12
    })
    .await;
    assert_eq!(
        find(&status["regions"], "region", "eu-west-1")["share"],
        0.75
    );
    assert_eq!(
        find(&status["regions"], "region", "ap-southeast-1")["share"],
        0.0
    );
    let eu_rate = find(&status["regions"], "region", "eu-west-1")["requests_per_s"]
        .as_f64()
        .unwrap();
    assert!(eu_rate > 0.0 && eu_rate <= 9.0, "{eu_rate}");
    // The idle cluster: rate 0, no share, no error rate.
    let spare = find(&status["clusters"], "name", "spare");
    assert_eq!(spare["requests_per_s"], 0.0);
    assert!(spare["regions"][0]["share"].is_null(), "{spare}");
    assert!(spare["regions"][0]["error_rate"].is_null(), "{spare}");
    assert!(spare["endpoints"][0]["error_rate"].is_null(), "{spare}");
    // Every endpoint of api that took tries has an error rate of 0.
    let api = find(&status["clusters"], "name", "api");
    assert_eq!(
        find(&api["endpoints"], "region", "eu-west-1")["error_rate"],
        0.0
    );
    // The chart: 60 five-second points, some eu-west-1 requests in the last ones.
    let points = status["chart"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    let charted: f64 = points
        .iter()
        .filter_map(|p| p["regions"]["eu-west-1"]["requests_per_s"].as_f64())
        .sum();
    assert!((charted * 5.0 - 9.0).abs() < 1e-6, "{charted}");

    // Routes: mode, target, live split.
    let api_route = find(&status["routes"], "name", "api");
    assert_eq!(api_route["mode"], "nearest");
    assert_eq!(api_route["target"]["cluster"], "api");
    assert_eq!(api_route["requests"], 12);
    let eu_split = api_route["split"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["region"] == "eu-west-1")
        .unwrap();
    assert_eq!(eu_split["share"], 0.75);
    let split_route = find(&status["routes"], "name", "split");
    assert_eq!(split_route["mode"], "weighted");
    assert_eq!(split_route["weights"].as_array().unwrap().len(), 3);
    assert!(
        find(&status["routes"], "name", "spare")["split"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A sample client: by country and by address.
    for client in ["DE", "de", "198.51.100.7"] {
        let (code, view) = admin(admin_addr, &format!("/status/routes?client={client}")).await;
        assert_eq!(code, 200, "{client}: {view}");
        assert_eq!(view["client"]["country"], "DE", "{client}");
        let order = &find(&view["routes"], "name", "api")["order"];
        assert_eq!(order["regions"][0], "eu-west-1", "{client}: {order}");
        assert_eq!(order["clusters"][0]["regions"][0]["load"], 1.0);
    }
    let (_, view) = admin(admin_addr, "/status/routes?client=SG").await;
    assert_eq!(
        find(&view["routes"], "name", "api")["order"]["regions"][0],
        "ap-southeast-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sample_client_is_a_400_with_the_reason() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(&status_config())).await;
    let admin_addr = proxy.admin.unwrap();
    let huge = "9".repeat(8_000);
    for (query, reason) in [
        ("client=", "give client="),
        ("client=%20%20", "give client="),
        (
            "client=DEU",
            "neither an IP address nor a two-letter country code",
        ),
        ("client=1.2.3.4.5", "neither"),
        ("client=%3Cscript%3E", "neither"),
        ("client=D%00", "neither"),
        ("client=%FF%FE", "neither"),
        ("client=::ffff:1.2.3.4.5", "neither"),
        (&format!("client={huge}"), "8000 bytes long"),
    ] {
        let (code, body) = admin(admin_addr, &format!("/status/routes?{query}")).await;
        assert_eq!(code, 400, "{query:.40}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(reason), "{query:.40}: {error}");
        assert!(
            error.len() < 200,
            "the answer does not echo a huge value: {error:.80}"
        );
    }
    // No client at all: the routes without an order.
    let (code, body) = admin(admin_addr, "/status/routes").await;
    assert_eq!(code, 200);
    assert!(body["client"].is_null());
    assert!(find(&body["routes"], "name", "api")["order"].is_null());
    // A flood of bad ones changes nothing.
    for _ in 0..200 {
        let (code, _) = admin(admin_addr, "/status/routes?client=%%%").await;
        assert_eq!(code, 400);
    }
    let (code, _) = admin(admin_addr, "/status").await;
    assert_eq!(code, 200);
}
