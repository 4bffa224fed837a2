//! End to end: consistent-hash session affinity against several real backends in one region:
//! a key stays on its endpoint, an ejected endpoint's keys (and only those) move, cookies are
//! generated and honoured, source addresses follow trusted X-Forwarded-For, steering still
//! picks the region; abuse (huge keys, many keys, bad config values).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Answer, Client, REGIONS_YAML, start_proxy};
use meridian::demo::RegionBackend;
use meridian::server::RunningServer;
use meridian::{config, table};

/// Backends named `ep0`, `ep1`, …: each answers with its name in `x-backend-region`.
async fn backends(prefix: &str, n: usize) -> Vec<RegionBackend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            RegionBackend::start(&format!("{prefix}{i}"), "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    out
}

fn list(backends: &[RegionBackend]) -> String {
    let addrs: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("[{}]", addrs.join(", "))
}

/// One cluster `api` with `us` endpoints in us-east-1 (and `eu` in eu-west-1), hashing by
/// `load_balancer`; failing endpoints are ejected at their first 5xx.
fn config(load_balancer: &str, us: &[RegionBackend], eu: &[RegionBackend], geo: &str) -> String {
    let eu = if eu.is_empty() {
        String::new()
    } else {
        format!(", eu-west-1: {}", list(eu))
    };
    format!(
        "local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{geo}
{REGIONS_YAML}clusters:
  api:
    load_balancer: {load_balancer}
    endpoints: {{ us-east-1: {}{eu} }}
    outlier_detection: {{ consecutive_5xx: 1, max_ejection_percent: 100, base_ejection_time: 60s, interval: 60s }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, retries: {{ attempts: 0 }} }}
",
        list(us)
    )
}

fn served_by(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.headers["x-backend-region"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ejected(proxy: &RunningServer, index: usize) -> bool {
    let table = proxy.table.load();
    let us = table
        .regions
        .iter()
        .position(|r| r.name == "us-east-1")
        .unwrap();
    table.clusters[0].regions[us].members().endpoints[index]
        .state
        .ejected
        .load(Ordering::SeqCst)
}

/// Where each of `keys` lands (by header `x-user`).
async fn placement(client: &mut Client, keys: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in keys {
        let answer = client.get("a.test", "/", &[("x-user", key)]).await;
        out.insert(key.clone(), served_by(&answer));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stays_on_its_endpoint_and_only_an_ejected_endpoints_keys_move() {
    let eps = backends("ep", 4).await;
    let proxy = start_proxy(&config(
        "{ consistent_hash: { header: x-user } }",
        &eps,
        &[],
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let before = placement(&mut client, &keys).await;
    let used: BTreeSet<&String> = before.values().collect();
    assert_eq!(used.len(), 4, "60 keys reach every endpoint: {before:?}");

    // One key, 200 requests: one endpoint, every time.
    let home = before["user-0"].clone();
    for _ in 0..200 {
        let answer = client.get("a.test", "/", &[("x-user", "user-0")]).await;
        assert_eq!(served_by(&answer), home);
    }
    let victim = eps.iter().position(|b| b.region == home).unwrap();
    assert_eq!(
        eps[victim].hits(),
        200 + before.values().filter(|e| **e == home).count() as u64
    );

    // The endpoint fails once and is ejected.
    eps[victim].control.status.store(503, Ordering::SeqCst);
    let failed = client.get("a.test", "/", &[("x-user", "user-0")]).await;
    assert_eq!(failed.status, 503);
    eventually("ejection", || ejected(&proxy, victim)).await;

    let after = placement(&mut client, &keys).await;
    let mut moved = 0;
    for key in &keys {
        if before[key] == home {
            assert_ne!(after[key], home, "{key} stayed on the ejected endpoint");
            moved += 1;
        } else {
            assert_eq!(
                after[key], before[key],
                "{key} moved though its endpoint is fine"
            );
        }
    }
    assert!(moved >= 1);
    // And the moved key is as sticky at its new place.
    let new_home = after["user-0"].clone();
    for _ in 0..50 {
        let answer = client.get("a.test", "/", &[("x-user", "user-0")]).await;
        assert_eq!(served_by(&answer), new_home);
    }
    assert_eq!(
        eps[victim].hits(),
        201 + before.values().filter(|e| **e == home).count() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_picks_the_region_and_the_hash_picks_inside_it() {
    let us = backends("us", 3).await;
    let eu = backends("eu", 3).await;
    // 127.0.0.2 is in Europe; everyone else has no location (local region us-east-1).
    let geo = "geo: { overrides: [{ cidr: \"127.0.0.2/32\", region: eu-west-1 }] }";
    let proxy = start_proxy(&config(
        "{ consistent_hash: { header: x-user } }",
        &us,
        &eu,
        geo,
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let mut from_us = Client::connect(addr, None).await;
    let mut from_eu = Client::connect(addr, Some("127.0.0.2".parse().unwrap())).await;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let us_places = placement(&mut from_us, &keys).await;
    let eu_places = placement(&mut from_eu, &keys).await;
    assert!(
        us_places.values().all(|e| e.starts_with("us")),
        "{us_places:?}"
    );
    assert!(
        eu_places.values().all(|e| e.starts_with("eu")),
        "{eu_places:?}"
    );
    assert_eq!(us_places.values().collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(eu_places.values().collect::<BTreeSet<_>>().len(), 3);
    // Stable inside each region.
    assert_eq!(placement(&mut from_eu, &keys).await, eu_places);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cookie_is_generated_set_and_then_honoured() {
    let eps = backends("ep", 4).await;
    let proxy = start_proxy(&config(
        "{ consistent_hash: { cookie: { name: sid, ttl: 1h, path: / } } }",
        &eps,
        &[],
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut homes = BTreeSet::new();
    for _ in 0..40 {
        let first = client.get("a.test", "/", &[]).await;
        let home = served_by(&first);
        homes.insert(home.clone());
        let cookies: Vec<&str> = first
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let (pair, attributes) = cookies[0].split_once(';').unwrap();
        assert_eq!(attributes, " Max-Age=3600; Path=/; HttpOnly");
        assert!(pair.starts_with("sid=") && pair.len() == 4 + 32, "{pair}");
        // Sent back (among other cookies), it keeps the session on its endpoint, and no new
        // cookie is set.
        let jar = format!("theme=dark; {pair}");
        for _ in 0..5 {
            let next = client.get("a.test", "/", &[("cookie", &jar)]).await;
            assert_eq!(served_by(&next), home);
            assert!(next.headers.get("set-cookie").is_none());
        }
    }
    assert!(homes.len() >= 3, "new sessions spread: {homes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meridians_own_error_answer_carries_the_generated_cookie_too() {
    // Nothing listens on the endpoint: Meridian answers 503 itself.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let yaml = format!(
        "local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}clusters:
  api:
    load_balancer: {{ consistent_hash: {{ cookie: {{ name: sid, ttl: 0s }} }} }}
    endpoints: {{ us-east-1: [\"{dead}\"] }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, retries: {{ attempts: 0 }} }}
"
    );
    let proxy = start_proxy(&yaml).await;
    let answer = common::get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert!(answer.status.is_server_error(), "{answer:?}");
    assert!(answer.headers.contains_key("x-meridian-error"));
    let cookie = answer.headers["set-cookie"].to_str().unwrap();
    // ttl 0s: a session cookie, no Max-Age.
    assert!(
        cookie.starts_with("sid=") && cookie.ends_with("; HttpOnly"),
        "{cookie}"
    );
    assert!(!cookie.contains("Max-Age"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_hashes_the_client_a_trusted_proxy_names() {
    let eps = backends("ep", 4).await;
    // 127.0.0.9 is a trusted proxy; 127.0.0.1 is not.
    let geo = "geo: { trusted_proxies: [\"127.0.0.9/32\"] }";
    let proxy = start_proxy(&config(
        "{ consistent_hash: { source_ip: true } }",
        &eps,
        &[],
        geo,
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let mut trusted = Client::connect(addr, Some("127.0.0.9".parse().unwrap())).await;
    let mut places = BTreeMap::new();
    for i in 0..40 {
        let xff = format!("198.51.100.{i}");
        let first = served_by(
            &trusted
                .get("a.test", "/", &[("x-forwarded-for", &xff)])
                .await,
        );
        for _ in 0..5 {
            let again = trusted
                .get("a.test", "/", &[("x-forwarded-for", &xff)])
                .await;
            assert_eq!(served_by(&again), first, "{xff}");
        }
        places.insert(xff, first);
    }
    assert!(
        places.values().collect::<BTreeSet<_>>().len() >= 3,
        "{places:?}"
    );
    // An untrusted peer cannot choose its key: whatever it claims, it is 127.0.0.1.
    let mut untrusted = Client::connect(addr, Some("127.0.0.1".parse::<IpAddr>().unwrap())).await;
    let own = served_by(&untrusted.get("a.test", "/", &[]).await);
    for xff in places.keys() {
        let answer = untrusted
            .get("a.test", "/", &[("x-forwarded-for", xff)])
            .await;
        assert_eq!(served_by(&answer), own);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_keys_and_its_absence_falls_back_to_the_policy() {
    let eps = backends("ep", 4).await;
    let proxy = start_proxy(&config(
        "{ policy: round_robin, consistent_hash: { query_parameter: user } }",
        &eps,
        &[],
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for user in ["alice", "bob", "carol"] {
        let path = format!("/cart?x=1&user={user}");
        let home = served_by(&client.get("a.test", &path, &[]).await);
        for _ in 0..20 {
            assert_eq!(served_by(&client.get("a.test", &path, &[]).await), home);
        }
    }
    // No key: round robin, so four requests in a row reach all four endpoints.
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        seen.insert(served_by(&client.get("a.test", "/cart?x=1", &[]).await));
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debug_header_names_the_hash_key() {
    let eps = backends("ep", 2).await;
    let geo = "geo: { trusted_proxies: [\"127.0.0.0/8\"] }";
    let proxy = start_proxy(&config(
        "{ consistent_hash: { header: x-user } }",
        &eps,
        &[],
        geo,
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let with = client
        .get("a.test", "/", &[("x-user", "a"), ("x-meridian-debug", "1")])
        .await;
    let decision = with.headers["x-meridian-decision"].to_str().unwrap();
    let hash = format!("hash header x-user #{:016x}", meridian_hash(b"a"));
    assert!(decision.contains(&hash), "{decision}");
    let without = client
        .get("a.test", "/", &[("x-meridian-debug", "1")])
        .await;
    let decision = without.headers["x-meridian-decision"].to_str().unwrap();
    assert!(decision.contains("hash header x-user absent"), "{decision}");
}

fn meridian_hash(bytes: &[u8]) -> u64 {
    meridian::steer::hash::xxh64(bytes, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_many_keys_are_just_keys() {
    let eps = backends("ep", 4).await;
    let proxy = start_proxy(&config(
        "{ consistent_hash: { header: x-user } }",
        &eps,
        &[],
        "",
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    // A key as long as the head allows: hashed like any other, and sticky.
    let long = "k".repeat(60 * 1024);
    let home = served_by(&client.get("a.test", "/", &[("x-user", &long)]).await);
    for _ in 0..5 {
        let again = client.get("a.test", "/", &[("x-user", &long)]).await;
        assert_eq!(served_by(&again), home);
    }
    // A 64 KB value passes the head limit: refused before any decision or backend.
    let hits: u64 = eps.iter().map(|b| b.hits()).sum();
    let huge = "k".repeat(64 * 1024);
    let mut fresh = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let refused = fresh.get("a.test", "/", &[("x-user", &huge)]).await;
    assert_eq!(refused.status, 431);
    assert_eq!(eps.iter().map(|b| b.hits()).sum::<u64>(), hits);
    // 2,000 distinct keys: all served, spread over every endpoint.
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..2_000 {
        let key = format!("session-{i}");
        *counts
            .entry(served_by(
                &client.get("a.test", "/", &[("x-user", &key)]).await,
            ))
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    for (endpoint, n) in &counts {
        assert!(
            (350..=650).contains(n),
            "{endpoint}: {n} of 2000 ({counts:?})"
        );
    }
}

/// Compile `load_balancer` for one cluster; the error text when refused.
fn compile_error(load_balancer: &str) -> Option<String> {
    let yaml = format!(
        "local_region: us-east-1
{REGIONS_YAML}clusters:
  api:
    load_balancer: {load_balancer}
    endpoints: {{ us-east-1: [\"127.0.0.1:9\"] }}
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
routes: [{{ name: api, hosts: [\"*\"], cluster: api }}]
"
    );
    let loaded = match config::load_str(&yaml, Path::new("affinity.yaml")) {
        Ok(l) => l,
        Err(e) => return Some(e.to_string()),
    };
    table::compile(&loaded, table::CompileContext::default())
        .err()
        .map(|e| e.to_string())
}

#[test]
fn bad_affinity_values_are_refused_with_their_line_and_field() {
    // The load_balancer value sits on line 8.
    let at = "affinity.yaml:8: clusters.api.load_balancer";
    let cases: [(&str, Option<&str>); 17] = [
        (
            "{ consistent_hash: { header: x-user, table_size: 184467440737095516150 } }",
            Some("consistent_hash.table_size: invalid type"),
        ),
        ("round_robin", None),
        ("{ consistent_hash: { header: x-user } }", None),
        (
            "{ consistent_hash: { header: x-user, table_size: 1000003 } }",
            None,
        ),
        (
            "{ consistent_hash: { header: x-user, table_size: 1000033 } }",
            Some("consistent_hash.table_size: 1000033 is not a prime from 101 to 1000003"),
        ),
        (
            "{ consistent_hash: { header: x-user, table_size: 99999999999 } }",
            Some("consistent_hash.table_size: 99999999999 is not a prime"),
        ),
        (
            "{ consistent_hash: { header: x-user, table_size: 65536 } }",
            Some("consistent_hash.table_size: 65536 is not a prime"),
        ),
        (
            "{ consistent_hash: { header: x-user, table_size: 97 } }",
            Some("consistent_hash.table_size: 97 is not a prime from 101"),
        ),
        (
            "{ consistent_hash: {} }",
            Some(
                "consistent_hash: name exactly one hash key (header, cookie, source_ip: true or query_parameter); 0 given",
            ),
        ),
        (
            "{ consistent_hash: { header: a, source_ip: true } }",
            Some(
                "consistent_hash: name exactly one hash key (header, cookie, source_ip: true or query_parameter); 2 given",
            ),
        ),
        (
            "{ consistent_hash: { header: \"bad header\" } }",
            Some("consistent_hash.header: `bad header` is not a header name"),
        ),
        (
            "{ consistent_hash: { cookie: { name: \"a;b\" } } }",
            Some("consistent_hash.cookie.name: `a;b` is not a cookie name"),
        ),
        (
            "{ consistent_hash: { cookie: { name: s, ttl: 401d } } }",
            Some("consistent_hash.cookie.ttl: `401d` is too long (this field takes 0s to 9600h)"),
        ),
        (
            "{ consistent_hash: { cookie: { name: s, ttl: soon } } }",
            Some("consistent_hash.cookie.ttl: `soon` is not a duration"),
        ),
        (
            "{ consistent_hash: { cookie: { name: s, ttl: 1h, path: \"/a;b\" } } }",
            Some("consistent_hash.cookie.path: `/a;b` is not a cookie path"),
        ),
        (
            "{ consistent_hash: { query_parameter: \"a=b\" } }",
            Some("consistent_hash.query_parameter: `a=b` is not a query parameter name"),
        ),
        (
            "{ consistent_hash: { header: x, ring: 3 } }",
            Some("consistent_hash.ring: unknown field"),
        ),
    ];
    for (value, want) in cases {
        let got = compile_error(value);
        match want {
            None => assert!(got.is_none(), "{value}: {got:?}"),
            Some(want) => {
                let got = got.unwrap_or_else(|| panic!("{value} must be refused"));
                let want = format!("{at}.{want}");
                assert!(got.contains(&want), "{value}:\nwant {want}\ngot  {got}");
            }
        }
    }
}

async fn admin(
    addr: std::net::SocketAddr,
    method: http::Method,
    path: &str,
) -> (u16, serde_json::Value) {
    let mut client = Client::connect(addr, None).await;
    let answer = client.request(method, "admin", path, &[]).await;
    (
        answer.status.as_u16(),
        serde_json::from_str(&answer.body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_table_and_admin_and_check_show_the_affinity() {
    let eps = backends("ep", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let good = config("{ consistent_hash: { header: x-user } }", &eps, &[], "")
        .replace("admin: { bind: null }", "admin: { bind: \"127.0.0.1:0\" }");
    std::fs::write(&path, &good).unwrap();

    // meridian check names the key.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c", path.to_str().unwrap()])
        .env("MERIDIAN_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "cluster api: consistent hash on header x-user, maglev table 65537 (else least_request)"
        ),
        "{stdout}"
    );

    let mut loaded = config::load_file(&path).unwrap();
    common::quiet(&mut loaded);
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    let proxy = meridian::server::start_with(table, Some(path.clone()))
        .await
        .unwrap();
    let (addr, admin_addr) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let mut client = Client::connect(addr, None).await;
    let keys: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let before = placement(&mut client, &keys).await;

    // /config shows the map form, /clusters the compiled affinity, /explain the key.
    let (_, config_json) = admin(admin_addr, http::Method::GET, "/config").await;
    let text = config_json.to_string();
    assert!(
        text.contains(r#""consistent_hash":{"header":"x-user","table_size":65537}"#),
        "{text}"
    );
    let (_, clusters) = admin(admin_addr, http::Method::GET, "/clusters").await;
    assert_eq!(
        clusters["clusters"][0]["affinity"],
        "consistent hash on header x-user, maglev table 65537"
    );
    let (_, explained) = admin(
        admin_addr,
        http::Method::GET,
        "/explain?ip=127.0.0.1&host=a.test&path=/&header=x-user:u0",
    )
    .await;
    assert_eq!(
        explained["hash_key"],
        format!("hash header x-user #{:016x}", meridian_hash(b"u0"))
    );
    assert_eq!(
        explained["endpoint"].as_str().unwrap(),
        eps.iter()
            .find(|b| b.region == before["u0"])
            .unwrap()
            .addr
            .to_string()
    );

    // A table size that is no prime: refused with its line, and the old table keeps serving.
    std::fs::write(
        &path,
        good.replace("header: x-user }", "header: x-user, table_size: 65536 }"),
    )
    .unwrap();
    let (status, body) = admin(admin_addr, http::Method::POST, "/reload").await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("meridian.yaml:11: clusters.api.load_balancer.consistent_hash.table_size: 65536 is not a prime"),
        "{error}"
    );
    assert_eq!(placement(&mut client, &keys).await, before);

    // A valid change applies: another table size places keys anew, and they stick there.
    std::fs::write(
        &path,
        good.replace("header: x-user }", "header: x-user, table_size: 101 }"),
    )
    .unwrap();
    let (status, body) = admin(admin_addr, http::Method::POST, "/reload").await;
    assert_eq!(status, 200, "{body}");
    let after = placement(&mut client, &keys).await;
    assert_eq!(placement(&mut client, &keys).await, after);
}
