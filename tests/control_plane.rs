//! End to end: hot reload under load, ConfigMap-style symlink swaps, bad configs, state kept
//! across reloads, Prometheus text, explain and the debug header, the admin token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Admin, Backends, Client, DEMO_GEO, get, three_region_config};
use http::Method;
use meridian::server::{self, RunningServer};
use meridian::{config, reload, table};

/// Wait (bounded) until `condition` holds.
async fn eventually(what: &str, limit: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Start Meridian from a config file, as `meridian run` does.
async fn start_from(path: &Path) -> RunningServer {
    let mut loaded = config::load_file(path).unwrap();
    common::quiet(&mut loaded);
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    server::start_with(table, Some(path.to_path_buf()))
        .await
        .unwrap()
}

async fn admin_post(admin: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut client = Client::connect(admin, None).await;
    let answer = client.request(Method::POST, "admin", path, &[]).await;
    (
        answer.status.as_u16(),
        serde_json::from_str(&answer.body).unwrap_or_default(),
    )
}

async fn admin_json(admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(admin, "admin", path, &[]).await.body).unwrap()
}

fn config_only(backends: &Backends, region: &str) -> String {
    let rest = format!(
        "clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [\"{{EU}}\"], ap-southeast-1: [\"{{AP}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, steering: {{ only: [{region}] }} }}
"
    );
    backends.fill(&three_region_config(
        "us-east-1",
        Admin::Loopback,
        "",
        &rest,
    ))
}

/// Write atomically (write a temporary file, rename it over), as config tooling does.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let versions = [
        config_only(&backends, "us-east-1"),
        config_only(&backends, "eu-west-1"),
    ];
    std::fs::write(&path, &versions[0]).unwrap();
    let proxy = start_from(&path).await;
    let addr = proxy.proxy_addr().unwrap();
    let admin = proxy.admin.unwrap();

    // Clients hammer the proxy while the config flips 100 times.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut loads = Vec::new();
    for _ in 0..4 {
        let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
        loads.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, None).await;
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                let answer = client.get("a.test", "/", &[]).await;
                match (answer.status.as_u16(), answer.region()) {
                    (200, "us-east-1") => seen[0].fetch_add(1, Ordering::SeqCst),
                    (200, "eu-west-1") => seen[1].fetch_add(1, Ordering::SeqCst),
                    _ => failures.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    let mut probe = Client::connect(addr, None).await;
    for i in 0..100 {
        let want = i % 2;
        write_atomically(&path, &versions[want]);
        let (status, body) = admin_post(admin, "/reload").await;
        assert_eq!(
            (status, body["result"].as_str()),
            (200, Some("applied")),
            "{body}"
        );
        let region = probe.get("a.test", "/", &[]).await;
        let expect = ["us-east-1", "eu-west-1"][want];
        assert_eq!(region.region(), expect, "reload {i} took effect");
    }
    stop.store(true, Ordering::SeqCst);
    for l in loads {
        l.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "failed requests during reloads"
    );
    assert!(
        seen[0].load(Ordering::SeqCst) > 0 && seen[1].load(Ordering::SeqCst) > 0,
        "both versions served"
    );
    let config = admin_json(admin, "/config").await;
    assert_eq!(config["generation"], 101);
    assert_eq!(
        proxy.server.listener_addrs().await[0].1,
        addr,
        "the listener was never rebound"
    );
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Kubernetes layout: meridian.yaml -> ..data/meridian.yaml, ..data -> ..2026_v1
    let mount = dir.path();
    let v1 = mount.join("..2026_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(
        v1.join("meridian.yaml"),
        config_only(&backends, "us-east-1"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_v1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/meridian.yaml", mount.join("meridian.yaml")).unwrap();
    let path = mount.join("meridian.yaml");
    let proxy = start_from(&path).await;
    // Only file events can trigger here: the poll is an hour away.
    reload::spawn_watchers(proxy.server.clone(), Duration::from_secs(3600));
    let addr = proxy.proxy_addr().unwrap();
    assert_eq!(get(addr, "a.test", "/", &[]).await.region(), "us-east-1");

    let v2 = mount.join("..2026_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(
        v2.join("meridian.yaml"),
        config_only(&backends, "eu-west-1"),
    )
    .unwrap();
    // The atomic swap kubelet does: a new symlink renamed over `..data`.
    std::os::unix::fs::symlink("..2026_v2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();

    // The reload's record is written last, after the swap and the count.
    eventually("the reload recorded", Duration::from_secs(10), async || {
        proxy.server.reload_status().last.is_some()
    })
    .await;
    assert_eq!(get(addr, "a.test", "/", &[]).await.region(), "eu-west-1");
    let status = proxy.server.reload_status();
    assert_eq!(status.generation, 2);
    assert_eq!(
        status.last.as_ref().unwrap().trigger,
        reload::Trigger::FileChange
    );
    let reloads = |result: &str| {
        proxy
            .server
            .metrics
            .reloads
            .with_label_values(&[result, "file_change"])
            .get()
    };
    assert_eq!((reloads("applied"), reloads("failed")), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_set_off_another() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, config_only(&backends, "us-east-1")).unwrap();
    let proxy = start_from(&path).await;
    reload::spawn_watchers(proxy.server.clone(), Duration::from_secs(3600));
    let addr = proxy.proxy_addr().unwrap();
    let reloads = |result: &str| {
        proxy
            .server
            .metrics
            .reloads
            .with_label_values(&[result, "file_change"])
            .get()
    };

    write_atomically(&path, &config_only(&backends, "eu-west-1"));
    // Counted after the swap: once counted, the new table serves.
    eventually("the reload counted", Duration::from_secs(10), async || {
        reloads("applied") == 1
    })
    .await;
    assert_eq!(get(addr, "a.test", "/", &[]).await.region(), "eu-west-1");
    // Reading the file, as the reload itself and an operator's `cat` do, is not a change.
    assert!(!std::fs::read_to_string(&path).unwrap().is_empty());
    // Nothing signals "no reload happened": watch for several debounce periods instead.
    let watch = Instant::now();
    while watch.elapsed() < reload::DEBOUNCE * 5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            (reloads("applied"), reloads("unchanged"), reloads("failed")),
            (1, 0, 0),
            "a reload ran without a change"
        );
    }
}

#[tokio::test]
async fn a_bad_config_never_replaces_a_good_one() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, config_only(&backends, "eu-west-1")).unwrap();
    let proxy = start_from(&path).await;
    let (addr, admin) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let mut client = Client::connect(addr, None).await;
    assert_eq!(client.get("a.test", "/", &[]).await.region(), "eu-west-1");

    let bad = config_only(&backends, "eu-west-1").replace("cluster: api", "cluster: apii");
    write_atomically(&path, &bad);
    let (status, body) = admin_post(admin, "/reload").await;
    assert_eq!(status, 422, "{body}");
    // Traffic is unaffected, on the same connection and on new ones.
    assert_eq!(client.get("a.test", "/", &[]).await.region(), "eu-west-1");
    assert_eq!(get(addr, "a.test", "/", &[]).await.region(), "eu-west-1");
    let config = admin_json(admin, "/config").await;
    assert_eq!(config["generation"], 1);
    let last = &config["last_reload"];
    assert_eq!(last["result"], "failed");
    let bad_line = 1 + bad.lines().position(|l| l.contains("apii")).unwrap();
    let problem = &last["problems"][0];
    assert_eq!(problem["line"], bad_line, "{last}");
    assert_eq!(problem["path"], "routes[0].cluster");
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains(&format!("meridian.yaml:{bad_line}:")),
        "{last}"
    );
    let metrics = get(admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains("meridian_config_reloads_total{result=\"failed\",trigger=\"admin\"} 1"),
        "{metrics}"
    );

    // A later valid file is applied.
    write_atomically(&path, &config_only(&backends, "ap-southeast-1"));
    assert_eq!(admin_post(admin, "/reload").await.0, 200);
    assert_eq!(
        client.get("a.test", "/", &[]).await.region(),
        "ap-southeast-1"
    );
    let config = admin_json(admin, "/config").await;
    assert_eq!(
        (
            config["generation"].as_u64(),
            config["last_reload"]["result"].as_str()
        ),
        (Some(2), Some("applied"))
    );
}

#[tokio::test]
async fn endpoint_state_survives_a_reload_that_leaves_its_cluster_alone() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let base = config_only(&backends, "eu-west-1");
    std::fs::write(&path, &base).unwrap();
    let proxy = start_from(&path).await;
    let state = |proxy: &RunningServer| {
        let t = proxy.table.load();
        let eu = t
            .regions
            .iter()
            .position(|r| r.name == "eu-west-1")
            .unwrap();
        t.clusters[0].regions[eu].members().endpoints[0]
            .state
            .clone()
    };
    let before = state(&proxy);
    before.healthy.store(false, Ordering::SeqCst);
    before.ejected.store(true, Ordering::SeqCst);
    before.ejections.store(3, Ordering::SeqCst);

    // Add a route elsewhere; cluster api is untouched.
    let changed = base + "  - { name: extra, hosts: [\"extra.test\"], cluster: api }\n";
    write_atomically(&path, &changed);
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    let after = state(&proxy);
    assert!(
        Arc::ptr_eq(&before, &after),
        "the endpoint keeps its state object"
    );
    assert!(!after.healthy.load(Ordering::SeqCst) && after.ejected.load(Ordering::SeqCst));
    assert_eq!(after.ejections.load(Ordering::SeqCst), 3);
    assert_eq!(proxy.table.load().generation, 2);

    // Rewriting the same content (a `touch`) is not a reload for the watchers and the poll.
    let same = std::fs::read_to_string(&path).unwrap();
    write_atomically(&path, &same);
    for trigger in [reload::Trigger::FileChange, reload::Trigger::Poll] {
        assert_eq!(
            proxy.server.reload(trigger).await.unwrap(),
            reload::ReloadResult::Unchanged
        );
    }
    assert_eq!(proxy.table.load().generation, 2);
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// `name{labels} value` lines of the Prometheus text format.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = body
                    .split("\",")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l
                            .split_once("=\"")
                            .unwrap_or_else(|| panic!("bad label in {line}"));
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

#[tokio::test]
async fn metrics_count_known_traffic() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(
        &path,
        config_only(&backends, "eu-west-1").replace("hosts: [\"*\"]", "hosts: [\"a.test\"]"),
    )
    .unwrap();
    let proxy = start_from(&path).await;
    let (addr, admin) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let mut client = Client::connect(addr, None).await;
    for _ in 0..5 {
        assert_eq!(client.get("a.test", "/", &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client.get("b.test", "/", &[]).await.status, 404);
    }
    let samples = parse_prometheus(&get(admin, "admin", "/metrics", &[]).await.body);
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
                    && ls.len() == labels.len()
            })
            .map(|(_, _, v)| *v)
    };
    let ok = [
        ("route", "api"),
        ("cluster", "api"),
        ("region", "eu-west-1"),
        ("code", "200"),
    ];
    assert_eq!(find("http_requests_total", &ok), Some(5.0));
    assert_eq!(find("http_request_duration_seconds_count", &ok), Some(5.0));
    let not_found = [
        ("route", ""),
        ("cluster", ""),
        ("region", ""),
        ("code", "404"),
    ];
    assert_eq!(find("http_requests_total", &not_found), Some(2.0));
    assert_eq!(
        find(
            "meridian_upstream_attempts_total",
            &[("cluster", "api"), ("outcome", "response")]
        ),
        Some(5.0)
    );
    assert_eq!(find("meridian_config_generation", &[]), Some(1.0));
    assert_eq!(
        find("meridian_geo_lookups_total", &[("result", "unknown")]),
        Some(5.0)
    );
    assert!(
        samples
            .iter()
            .all(|(_, labels, _)| labels.iter().all(|(k, _)| k != "client" && k != "ip"))
    );
}

#[tokio::test]
async fn explain_and_the_debug_header_agree_with_where_requests_go() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let text = backends.fill(&three_region_config(
        "us-east-1",
        Admin::Loopback,
        DEMO_GEO,
        "clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] } }
routes:
  - { name: api, hosts: [\"api.test\"], cluster: api }
",
    ));
    std::fs::write(&path, text).unwrap();
    let proxy = start_from(&path).await;
    let (addr, admin) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    for (ip, region, country) in [
        ("198.51.100.7", "eu-west-1", "DE"),
        ("203.0.113.9", "ap-southeast-1", "SG"),
        ("192.0.2.10", "us-east-1", "US"),
    ] {
        let explained = admin_json(admin, &format!("/explain?ip={ip}&host=api.test&path=/x")).await;
        let answer = get(
            addr,
            "api.test",
            "/echo",
            &[("x-forwarded-for", ip), ("x-meridian-debug", "1")],
        )
        .await;
        assert_eq!(explained["region"], answer.region(), "{explained}");
        assert_eq!(explained["region"], region);
        assert_eq!(explained["client"]["country"], country);
        assert_eq!(explained["client"]["location_source"], "geoip");
        assert_eq!(explained["order"][0]["region"], region);
        assert_eq!(explained["order"][0]["load"], 1.0);
        let backend = match region {
            "us-east-1" => backends.us.addr,
            "eu-west-1" => backends.eu.addr,
            _ => backends.ap.addr,
        };
        assert_eq!(explained["endpoint"], backend.to_string());
        let decision = answer.headers["x-meridian-decision"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            decision.contains(&format!(
                "client {ip} via x-forwarded-for country {country}"
            )),
            "{decision}"
        );
        assert!(
            decision.contains(&format!("region {region}; endpoint {backend}")),
            "{decision}"
        );
        assert!(
            decision.contains(&format!("try 1: {backend} in {region} -> 200")),
            "{decision}"
        );
        assert!(
            answer.json()["headers"].get("x-meridian-debug").is_none(),
            "never forwarded"
        );
    }
    let unknown = admin_json(admin, "/explain?ip=10.1.2.3&host=nowhere.test").await;
    assert!(
        unknown["result"].as_str().unwrap().contains("no route"),
        "{unknown}"
    );
}

#[tokio::test]
async fn debug_header_from_an_untrusted_client_is_ignored_and_stripped() {
    let backends = Backends::start().await;
    let proxy = common::start_proxy(&backends.fill(&three_region_config(
        "us-east-1",
        Admin::Off,
        "geo: { trusted_proxies: [\"10.0.0.0/8\"] }\n",
        "clusters:
  api: { endpoints: { us-east-1: [\"{US}\"] } }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
",
    )))
    .await;
    let answer = get(
        proxy.proxy_addr().unwrap(),
        "a.test",
        "/echo",
        &[("x-meridian-debug", "1")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.headers.get("x-meridian-decision").is_none());
    assert!(answer.json()["headers"].get("x-meridian-debug").is_none());
}

#[tokio::test]
async fn admin_off_loopback_requires_the_token() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file: PathBuf = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let path = dir.path().join("meridian.yaml");
    let text = config_only(&backends, "us-east-1").replace(
        "admin: { bind: \"127.0.0.1:0\" }",
        &format!(
            "admin: {{ bind: \"0.0.0.0:0\", token_file: \"{}\" }}",
            token_file.display()
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let proxy = start_from(&path).await;
    // Reach it over loopback only.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.admin.unwrap().port()));
    // Probes stay open for kubelet.
    assert_eq!(get(admin, "admin", "/readyz", &[]).await.status, 200);
    assert_eq!(get(admin, "admin", "/healthz", &[]).await.status, 200);
    for path in ["/metrics", "/config", "/clusters", "/"] {
        let answer = get(admin, "admin", path, &[]).await;
        assert_eq!(answer.status, 401, "{path}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        let wrong = get(admin, "admin", path, &[("authorization", "Bearer nope")]).await;
        assert_eq!(wrong.status, 401);
        let right = get(
            admin,
            "admin",
            path,
            &[("authorization", "Bearer s3cret-token")],
        )
        .await;
        assert_eq!(right.status, 200, "{path}");
    }

    // Without a token file, a non-loopback admin bind is a config error.
    let open = config_only(&backends, "us-east-1").replace(
        "admin: { bind: \"127.0.0.1:0\" }",
        "admin: { bind: \"0.0.0.0:0\" }",
    );
    let err = table::compile(
        &config::load_str(&open, Path::new("open.yaml")).unwrap(),
        table::CompileContext::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("admin.bind: 0.0.0.0:0 is reachable from other hosts"),
        "{err}"
    );
}

#[tokio::test]
async fn reload_binds_added_listeners_and_closes_removed_ones() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let one = config_only(&backends, "eu-west-1");
    std::fs::write(&path, &one).unwrap();
    let proxy = start_from(&path).await;
    let first = proxy.proxy_addr().unwrap();
    let two = one.replace(
        "listeners: [{ name: http, bind: \"127.0.0.1:0\" }]",
        "listeners: [{ name: http, bind: \"127.0.0.1:0\" }, { name: second, bind: \"127.0.0.1:0\" }]",
    );
    write_atomically(&path, &two);
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    let listeners = proxy.server.listener_addrs().await;
    assert_eq!(listeners.len(), 2);
    assert_eq!(
        listeners[0],
        ("http".to_owned(), first),
        "the unchanged listener keeps its socket"
    );
    let second = listeners[1].1;
    assert_eq!(get(second, "a.test", "/", &[]).await.region(), "eu-west-1");

    write_atomically(&path, &one);
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    assert_eq!(
        proxy.server.listener_addrs().await,
        vec![("http".to_owned(), first)]
    );
    eventually(
        "the removed listener closed",
        Duration::from_secs(5),
        async || tokio::net::TcpStream::connect(second).await.is_err(),
    )
    .await;
    assert_eq!(get(first, "a.test", "/", &[]).await.region(), "eu-west-1");
}

#[tokio::test]
async fn a_new_geoip_database_is_picked_up_and_a_broken_one_refused() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    let build = |country: &str, lat: f64, lon: f64| {
        let fixture = format!(
            "description: test\nnetworks:\n  - {{ cidr: 198.51.100.0/24, country: {country}, lat: {lat}, lon: {lon} }}\n"
        );
        meridian::geo::fixture::build(&fixture, Path::new("fixture.yaml")).unwrap()
    };
    std::fs::write(&db, build("DE", 50.1, 8.7)).unwrap();
    let path = dir.path().join("meridian.yaml");
    let text = backends
        .fill(&three_region_config(
            "us-east-1",
            Admin::Off,
            "geo: { database: \"DB\", trusted_proxies: [\"127.0.0.1/32\"] }\n",
            "clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] } }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
",
        ))
        .replace("\"DB\"", &format!("\"{}\"", db.display()));
    std::fs::write(&path, text).unwrap();
    let proxy = start_from(&path).await;
    reload::spawn_watchers(proxy.server.clone(), Duration::from_secs(3600));
    let addr = proxy.proxy_addr().unwrap();
    let from = [("x-forwarded-for", "198.51.100.7")];
    assert_eq!(get(addr, "a.test", "/", &from).await.region(), "eu-west-1");

    // Replace the database (write beside it, rename over): the watcher reloads it.
    let tmp = dir.path().join("city.mmdb.tmp");
    std::fs::write(&tmp, build("SG", 1.3, 103.8)).unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    eventually(
        "the new database in service",
        Duration::from_secs(10),
        async || get(addr, "a.test", "/", &from).await.region() == "ap-southeast-1",
    )
    .await;

    // A broken database is refused; the one in memory keeps serving.
    std::fs::write(&tmp, b"not a database").unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    let err = proxy
        .server
        .reload(reload::Trigger::Admin)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("geo.database"), "{err}");
    assert_eq!(
        get(addr, "a.test", "/", &from).await.region(),
        "ap-southeast-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_refuse_durations_outside_their_range() {
    const HUGE: &str = "18446744073709551615s";
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let endpoint = backends.us.addr.to_string();
    let config = |value: &dyn Fn(&str) -> String| {
        common::durations_config(&endpoint, "\"127.0.0.1:0\"", value)
    };
    std::fs::write(&path, config(&|_| "1s".to_owned()).0).unwrap();
    let proxy = start_from(&path).await;
    let (addr, admin) = (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let mut client = Client::connect(addr, None).await;
    assert_eq!(client.get("a.test", "/", &[]).await.region(), "us-east-1");

    let mut refused = 0;
    for (field, min) in common::DURATION_FIELDS {
        let zero = (*min != "0s").then_some("0s");
        for bad in std::iter::once(HUGE).chain(zero) {
            let (text, lines) = config(&|p| if p == *field { bad } else { "1s" }.to_owned());
            write_atomically(&path, &text);
            let (status, body) = admin_post(admin, "/reload").await;
            assert_eq!(status, 422, "{field}: {bad} must be refused: {body}");
            refused += 1;
            let error = body["error"].as_str().unwrap();
            let want = format!("meridian.yaml:{}: {field}: `{bad}` is too", lines[field]);
            assert!(error.contains(&want), "missing `{want}` in {error}");
            // The table in service keeps serving, on the open connection and on new ones.
            assert_eq!(client.get("a.test", "/", &[]).await.region(), "us-east-1");
            assert_eq!(get(addr, "a.test", "/", &[]).await.region(), "us-east-1");
        }
    }
    let config_json = admin_json(admin, "/config").await;
    assert_eq!(config_json["generation"], 1);
    let metrics = get(admin, "admin", "/metrics", &[]).await.body;
    assert!(
        metrics.contains(&format!(
            "meridian_config_reloads_total{{result=\"failed\",trigger=\"admin\"}} {refused}"
        )),
        "{metrics}"
    );

    // The longest value of every field is applied and serves.
    write_atomically(&path, &config(&|_| common::LONGEST_DURATION.to_owned()).0);
    let (status, body) = admin_post(admin, "/reload").await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    // The listener's timeouts changed, so it was replaced.
    let addr = proxy.server.listener_addrs().await[0].1;
    let mut client = Client::connect(addr, None).await;
    for _ in 0..3 {
        assert_eq!(client.get("a.test", "/", &[]).await.region(), "us-east-1");
    }
}
