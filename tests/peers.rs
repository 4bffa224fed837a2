//! End to end: `peers`. Real Meridian instances on loopback probe each other's admin
//! `/readyz`; a region whose peer is down (drained, killed, stalled, answering garbage or a
//! redirect) leaves steering after the thresholds and comes back after them. Also what the
//! config refuses, and what reloads keep and stop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Admin, Backends, Client, get, start_proxy, three_region_config};
use http::Method;
use meridian::server::{self, RunningServer};
use meridian::{config, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(10);

/// Fast probes: a peer is down after 2 failures (within a second), up after 2 passes.
const FAST_CHECK: &str =
    "peer_check: { interval: 200ms, timeout: 200ms, unhealthy_threshold: 2, healthy_threshold: 2 }";

/// An instance in `local`, with clients 127.0.0.3 placed in eu-west-1 and 127.0.0.5 in
/// ap-southeast-1, and `peers` (YAML lines) appended.
fn instance(backends: &Backends, local: &str, peers: &str) -> String {
    let geo = "geo:
  trusted_proxies: [\"127.0.0.1/32\"]
  overrides:
    - { cidr: 127.0.0.3/32, region: eu-west-1 }
    - { cidr: 127.0.0.5/32, region: ap-southeast-1 }
";
    let rest = format!(
        "clusters:
  api:
    endpoints:
      us-east-1: [\"{{US}}\"]
      eu-west-1: [\"{{EU}}\"]
      ap-southeast-1: [\"{{AP}}\"]
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
{peers}
"
    );
    backends.fill(&three_region_config(local, Admin::Loopback, geo, &rest))
}

fn peers_yaml(peers: &[(&str, String)]) -> String {
    let mut out = format!("{FAST_CHECK}\npeers:\n");
    for (region, url) in peers {
        out.push_str(&format!("  - {{ region: {region}, url: \"{url}\" }}\n"));
    }
    out
}

fn readyz(instance: &RunningServer) -> String {
    format!("http://{}/readyz", instance.admin.unwrap())
}

/// The region that served a client at `from` (127.0.0.3: eu-west-1, 127.0.0.5: ap-southeast-1).
async fn served(proxy: SocketAddr, from: [u8; 4]) -> String {
    let mut client = Client::connect(proxy, Some(from.into())).await;
    let answer = client.get("api.example.com", "/", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.region().to_owned()
}

const EU_CLIENT: [u8; 4] = [127, 0, 0, 3];
const AP_CLIENT: [u8; 4] = [127, 0, 0, 5];

async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(admin, "admin", path, &[]).await.body).unwrap()
}

/// A metric's value (0 when the series is absent).
async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let text = get(admin, "admin", "/metrics", &[]).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

async fn probes(admin: SocketAddr, region: &str, result: &str) -> u64 {
    metric(
        admin,
        &format!("meridian_peer_probes_total{{region=\"{region}\",result=\"{result}\"}}"),
    )
    .await
}

/// The status page's view of one peer.
async fn peer_view(admin: SocketAddr, region: &str) -> serde_json::Value {
    let clusters = admin_json(admin, "/clusters").await;
    clusters["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == region)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {region} in {clusters}"))
}

async fn peer_up(admin: SocketAddr, region: &str) -> bool {
    peer_view(admin, region).await["up"].as_bool().unwrap()
}

/// Wait (bounded) until `condition` holds; returns how long that took.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_whose_peer_is_down_drops_out_and_returns() {
    let backends = Backends::start().await;
    let eu = start_proxy(&instance(&backends, "eu-west-1", "")).await;
    let ap = start_proxy(&instance(&backends, "ap-southeast-1", "")).await;
    let peers = peers_yaml(&[("eu-west-1", readyz(&eu)), ("ap-southeast-1", readyz(&ap))]);
    let us = start_proxy(&instance(&backends, "us-east-1", &peers)).await;
    let (proxy, admin) = (us.proxy_addr().unwrap(), us.admin.unwrap());

    eventually("the first probes", async || {
        probes(admin, "eu-west-1", "up").await >= 2
            && probes(admin, "ap-southeast-1", "up").await >= 2
    })
    .await;
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
    assert_eq!(served(proxy, AP_CLIENT).await, "ap-southeast-1");
    assert_eq!(
        metric(admin, "meridian_peer_up{region=\"eu-west-1\"}").await,
        1
    );

    // eu-west-1's Meridian drains: its /readyz answers 503.
    eu.lifecycle.draining.store(true, Ordering::SeqCst);
    eventually("eu-west-1 down", async || {
        !peer_up(admin, "eu-west-1").await
    })
    .await;
    assert_eq!(
        metric(admin, "meridian_peer_up{region=\"eu-west-1\"}").await,
        0
    );
    assert!(probes(admin, "eu-west-1", "status").await >= 2);
    let eu_hits = backends.eu.hits();
    for _ in 0..5 {
        // Next nearest to Ireland.
        assert_eq!(served(proxy, EU_CLIENT).await, "us-east-1");
    }
    assert_eq!(backends.eu.hits(), eu_hits, "nothing went to eu-west-1");
    assert_eq!(served(proxy, AP_CLIENT).await, "ap-southeast-1");
    let explain = admin_json(admin, "/explain?ip=127.0.0.3&host=api.example.com&path=/").await;
    assert_eq!(explain["region"], "us-east-1", "{explain}");
    let order = explain["order"].as_array().unwrap();
    assert_eq!(order[0]["region"], "eu-west-1", "{explain}");
    assert_eq!(
        order[0]["dropped"], "its peer Meridian is down",
        "{explain}"
    );
    assert!(order[1]["dropped"].is_null(), "{explain}");
    // A trusted proxy's debug request says so too.
    let debug = get(
        proxy,
        "api.example.com",
        "/",
        &[("x-forwarded-for", "127.0.0.3"), ("x-meridian-debug", "1")],
    )
    .await;
    let decision = debug.headers["x-meridian-decision"].to_str().unwrap();
    assert!(
        decision.contains("order eu-west-1=0%(peer down),us-east-1=100%"),
        "{decision}"
    );

    // It is ready again: the region returns after two passes.
    eu.lifecycle.draining.store(false, Ordering::SeqCst);
    eventually("eu-west-1 up", async || peer_up(admin, "eu-west-1").await).await;
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
    assert_eq!(
        metric(admin, "meridian_peer_up{region=\"eu-west-1\"}").await,
        1
    );

    // ap-southeast-1's Meridian dies: connections are refused.
    let ap_url = readyz(&ap);
    ap.shutdown(Duration::ZERO).await;
    eventually("ap-southeast-1 down", async || {
        !peer_up(admin, "ap-southeast-1").await
    })
    .await;
    assert!(probes(admin, "ap-southeast-1", "error").await >= 2);
    // Next nearest to Singapore.
    assert_eq!(served(proxy, AP_CLIENT).await, "eu-west-1");
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
    let view = peer_view(admin, "ap-southeast-1").await;
    assert_eq!(view["url"], ap_url, "{view}");
    assert_eq!(view["up"], false, "{view}");
    // An instance without peers shows none.
    let eu_admin = eu.admin.unwrap();
    assert_eq!(
        admin_json(eu_admin, "/clusters").await["peers"],
        serde_json::json!([])
    );
}

/// What a fake peer does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Accept and never answer.
    Stall,
    /// Answer the request head with these bytes, then close.
    Answer(&'static str),
    /// Answer with the status in `FakePeer::status`, then close.
    Status,
    /// A 200 head announcing a huge body, then body bytes until the reader goes away.
    Endless,
}

/// A TCP server on loopback that plays a peer, counting what it sees.
struct FakePeer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    /// Connections whose reader went away while body bytes were still being sent.
    cut_off: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

impl FakePeer {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = Self {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            open: Arc::default(),
            max_open: Arc::default(),
            cut_off: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let (accepted, open, max_open, cut_off, status) = (
            peer.accepted.clone(),
            peer.open.clone(),
            peer.max_open.clone(),
            peer.cut_off.clone(),
            peer.status.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max_open.fetch_max(now, Ordering::SeqCst);
                let (open, cut_off, status) = (open.clone(), cut_off.clone(), status.clone());
                tokio::spawn(async move {
                    serve(stream, behaviour, &cut_off, &status).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        peer
    }

    fn url(&self) -> String {
        format!("http://{}/readyz", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    cut_off: &AtomicUsize,
    status: &AtomicU16,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the request head (bounded), or until the prober goes away.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match behaviour {
        Behaviour::Stall => {
            // Hold the connection until the prober closes it.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        }
        Behaviour::Answer(bytes) => {
            let _ = stream.write_all(bytes.as_bytes()).await;
        }
        Behaviour::Status => {
            let code = status.load(Ordering::SeqCst);
            let answer =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
        Behaviour::Endless => {
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            // Bounded: 1 GiB, far more than any reader would take.
            for _ in 0..16 * 1024 {
                if stream.write_all(&chunk).await.is_err() {
                    cut_off.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_peer_is_down_after_its_timeouts_and_holds_no_connection() {
    let backends = Backends::start().await;
    let stalled = FakePeer::start(Behaviour::Stall).await;
    let peers = peers_yaml(&[("ap-southeast-1", stalled.url())]);
    let started = Instant::now();
    let us = start_proxy(&instance(&backends, "us-east-1", &peers)).await;
    let (proxy, admin) = (us.proxy_addr().unwrap(), us.admin.unwrap());
    eventually("ap-southeast-1 down", async || {
        !peer_up(admin, "ap-southeast-1").await
    })
    .await;
    // Two probes, each cut at its 200 ms timeout, with an interval between them.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(probes(admin, "ap-southeast-1", "timeout").await >= 2);
    assert_eq!(probes(admin, "ap-southeast-1", "error").await, 0);
    assert_eq!(served(proxy, AP_CLIENT).await, "eu-west-1");
    eventually("more probes", async || stalled.accepted() >= 5).await;
    // Each timed-out probe closed its connection before the next one opened.
    assert!(
        stalled.max_open.load(Ordering::SeqCst) <= 2,
        "open at once: {}",
        stalled.max_open.load(Ordering::SeqCst)
    );
    // Stopping the instance ends the probe loop mid-probe: its connection closes too.
    us.shutdown(Duration::from_secs(5)).await;
    eventually("the last probe's connection closed", async || {
        stalled.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_garbage_and_redirects_are_judged_by_the_head() {
    let backends = Backends::start().await;
    let endless = FakePeer::start(Behaviour::Endless).await;
    let garbage = FakePeer::start(Behaviour::Answer("\u{0}\u{1}garbage\r\n\r\nmore garbage")).await;
    let elsewhere = FakePeer::start(Behaviour::Status).await;
    let redirect_text: &'static str = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {}\r\ncontent-length: 0\r\n\r\n",
            elsewhere.url()
        )
        .into_boxed_str(),
    );
    let redirect = FakePeer::start(Behaviour::Answer(redirect_text)).await;

    let peers = peers_yaml(&[
        ("eu-west-1", endless.url()),
        ("ap-southeast-1", garbage.url()),
    ]);
    let first = start_proxy(&instance(&backends, "us-east-1", &peers)).await;
    let admin = first.admin.unwrap();
    let peers = peers_yaml(&[("eu-west-1", redirect.url())]);
    let second = start_proxy(&instance(&backends, "us-east-1", &peers)).await;
    let admin2 = second.admin.unwrap();

    eventually("garbage judged down", async || {
        !peer_up(admin, "ap-southeast-1").await
    })
    .await;
    eventually("the redirect judged down", async || {
        !peer_up(admin2, "eu-west-1").await
    })
    .await;
    eventually("several endless answers", async || {
        probes(admin, "eu-west-1", "up").await >= 4
    })
    .await;

    // A 200 head is up, however long its body: the prober read the head and hung up.
    assert!(peer_up(admin, "eu-west-1").await);
    assert_eq!(probes(admin, "eu-west-1", "error").await, 0);
    eventually("the endless writers cut off", async || {
        endless.cut_off.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(endless.max_open.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        served(first.proxy_addr().unwrap(), EU_CLIENT).await,
        "eu-west-1"
    );

    // Garbage is an error, not a status.
    assert!(probes(admin, "ap-southeast-1", "error").await >= 2);
    assert_eq!(probes(admin, "ap-southeast-1", "up").await, 0);
    assert_eq!(
        served(first.proxy_addr().unwrap(), AP_CLIENT).await,
        "eu-west-1"
    );

    // A redirect is a status that fails, and is not followed.
    assert!(probes(admin2, "eu-west-1", "status").await >= 2);
    assert_eq!(elsewhere.accepted(), 0, "the redirect was not followed");
    assert_eq!(
        served(second.proxy_addr().unwrap(), EU_CLIENT).await,
        "us-east-1"
    );
}

/// Compile `yaml` as `test.yaml`: the problems, one per line.
fn problems(yaml: &str) -> String {
    let loaded = config::load_str(yaml, Path::new("test.yaml")).unwrap();
    match table::compile(&loaded, table::CompileContext::default()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_peers_are_refused_with_file_line_and_field() {
    const HUGE: &str = "18446744073709551615s";
    let base = &three_region_config(
        "us-east-1",
        Admin::Off,
        "",
        "clusters: { api: { endpoints: { us-east-1: [\"127.0.0.1:9\"] } } }
routes: [{ name: api, hosts: [\"*\"], cluster: api }]
",
    );
    let ok_peer = "  - { region: eu-west-1, url: \"http://127.0.0.1:9901/readyz\" }\n";
    // (peers block, expected `line: field: text`), lines counted from the block's first line.
    type Expected<'a> = &'a [(usize, &'a str, &'a str)];
    let cases: &[(String, Expected)] = &[
        (
            "peers:\n  - { region: mars-1, url: \"http://127.0.0.1:1/\" }\n".into(),
            &[(2, "peers[0].region", "unknown region `mars-1`")],
        ),
        (
            "peers:\n  - { region: us-east-1, url: \"http://127.0.0.1:1/\" }\n".into(),
            &[(2, "peers[0].region", "is local_region")],
        ),
        (
            "peers:\n  - region: eu-west-1\n    url: \"http://127.0.0.1/readyz\"\n".into(),
            &[(3, "peers[0].url", "must name its port")],
        ),
        (
            "peers:\n  - { region: eu-west-1, url: \"ftp://127.0.0.1:21/\" }\n".into(),
            &[(2, "peers[0].url", "must start with http:// or https://")],
        ),
        (
            format!("peers:\n{ok_peer}  - {{ region: eu-west-1, url: \"http://127.0.0.1:2/\" }}\n"),
            &[(3, "peers[1].region", "already has a peer")],
        ),
        (
            "peers:\n  - { region: eu-west-1, url: \"bad\" }\n  - { region: eu-west-1, url: \"http://a:1/\" }\n".into(),
            &[
                (2, "peers[0].url", "must start with http://"),
                (3, "peers[1].region", "already has a peer"),
            ],
        ),
        (
            format!(
                "peers:\n{ok_peer}  - {{ region: ap-southeast-1, url: \"http://127.0.0.1:9901/readyz\" }}\n"
            ),
            &[(3, "peers[1].url", "already another peer's URL")],
        ),
        (
            format!("peer_check:\n  interval: 1ms\n  timeout: {HUGE}\npeers:\n{ok_peer}"),
            &[
                (2, "peer_check.interval", "is too short"),
                (3, "peer_check.timeout", "is too long"),
            ],
        ),
        (
            "peer_check:\n  interval: 1s\n  timeout: 2s\n".into(),
            &[(3, "peer_check.timeout", "longer than the interval")],
        ),
        (
            "peer_check:\n  unhealthy_threshold: 0\n  healthy_threshold: 4294967295\n".into(),
            &[
                (2, "peer_check.unhealthy_threshold", "0 is outside 1..=100"),
                (
                    3,
                    "peer_check.healthy_threshold",
                    "4294967295 is outside 1..=100",
                ),
            ],
        ),
        (
            "peers:\n  - { region: eu-west-1, url: \"http://127.0.0.1:99999/\" }\n".into(),
            &[(2, "peers[0].url", "has a port outside 1..=65535")],
        ),
        (
            "peers:\n  - region: eu-west-1\n    url: \"http://127.0.0.1:9901/\"\n    tls: { ca_file: /x.pem }\n".into(),
            &[(4, "peers[0].tls", "applies to https URLs only")],
        ),
        (
            "peers:\n  - region: eu-west-1\n    url: \"https://127.0.0.1:9901/\"\n    tls:\n      cert: /c.pem\n".into(),
            &[(5, "peers[0].tls.cert", "needs `key` too")],
        ),
        (
            "peers:\n  - region: eu-west-1\n    url: \"https://127.0.0.1:9901/\"\n    tls:\n      ca_file: /nonexistent/ca.pem\n".into(),
            &[(5, "peers[0].tls.ca_file", "/nonexistent/ca.pem")],
        ),
        (
            "peers:\n  - region: eu-west-1\n    url: \"https://127.0.0.1:9901/\"\n    tls:\n      sni: \"bad_name..\"\n".into(),
            &[(5, "peers[0].tls.sni", "`bad_name..` is not a DNS name")],
        ),
    ];
    let base_lines = base.lines().count();
    for (block, want) in cases {
        let got = problems(&format!("{base}{block}"));
        assert_eq!(
            got.matches("test.yaml:").count(),
            want.len(),
            "{block}: {got}"
        );
        for (line, field, text) in *want {
            let prefix = format!("test.yaml:{}: {field}: ", base_lines + line);
            let found = got
                .lines()
                .find(|l| l.contains(&prefix))
                .unwrap_or_else(|| panic!("missing `{prefix}` in:\n{got}"));
            assert!(found.contains(text), "{found}");
        }
    }
    // The valid shape compiles.
    assert_eq!(
        problems(&format!("{base}{FAST_CHECK}\npeers:\n{ok_peer}")),
        ""
    );

    // Hundreds of peers: one problem, not hundreds, and nothing is built.
    let mut many = String::from("peers:\n");
    for i in 0..300 {
        many.push_str(&format!(
            "  - {{ region: eu-west-1, url: \"http://127.0.0.{}:{}/\" }}\n",
            i % 250 + 1,
            9000 + i
        ));
    }
    let got = problems(&format!("{base}{many}"));
    assert!(
        got.contains(&format!(
            "test.yaml:{}: peers: 300 peers; at most 63",
            base_lines + 1
        )),
        "{got}"
    );
    assert_eq!(got.matches("test.yaml:").count(), 1, "{got}");
}

async fn start_from(path: &Path) -> RunningServer {
    let mut loaded = config::load_file(path).unwrap();
    common::quiet(&mut loaded);
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    server::start_with(table, Some(path.to_path_buf()))
        .await
        .unwrap()
}

async fn reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    let mut client = Client::connect(admin, None).await;
    let answer = client.request(Method::POST, "admin", "/reload", &[]).await;
    (
        answer.status.as_u16(),
        serde_json::from_str(&answer.body).unwrap_or_default(),
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_a_kept_peers_state_and_stop_removed_peers_probes() {
    let backends = Backends::start().await;
    let old = FakePeer::start(Behaviour::Status).await;
    let new = FakePeer::start(Behaviour::Status).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let with_peer = |url: String, extra: &str| {
        format!(
            "{}{extra}\n",
            instance(&backends, "us-east-1", &peers_yaml(&[("eu-west-1", url)]))
        )
    };
    std::fs::write(&path, with_peer(old.url(), "")).unwrap();
    let us = start_from(&path).await;
    let (proxy, admin) = (us.proxy_addr().unwrap(), us.admin.unwrap());

    // The old peer goes down.
    old.status.store(503, Ordering::SeqCst);
    eventually("eu-west-1 down", async || {
        !peer_up(admin, "eu-west-1").await
    })
    .await;
    assert_eq!(served(proxy, EU_CLIENT).await, "us-east-1");

    // A reload that keeps the peer keeps its verdict: still down at once, not optimistic again.
    write_atomically(&path, &with_peer(old.url(), "max_region_hops: 2"));
    let (status, body) = reload(admin).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert!(!peer_up(admin, "eu-west-1").await);
    assert_eq!(served(proxy, EU_CLIENT).await, "us-east-1");
    let probed = old.accepted();
    eventually("the kept peer probed again", async || {
        old.accepted() > probed
    })
    .await;

    // A refused config keeps the table in service and its probes.
    write_atomically(
        &path,
        &instance(
            &backends,
            "us-east-1",
            &peers_yaml(&[("eu-west-1", "http://[::1/".into())]),
        ),
    );
    let (status, body) = reload(admin).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("peers[0].url"),
        "{body}"
    );
    let probed = old.accepted();
    eventually("the kept peer still probed", async || {
        old.accepted() > probed
    })
    .await;

    // A reload that points eu-west-1 elsewhere: a new peer (up until proven down), and the
    // removed one's probes stop.
    write_atomically(&path, &with_peer(new.url(), ""));
    let (status, body) = reload(admin).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    let at_reload = old.accepted();
    assert!(peer_up(admin, "eu-west-1").await);
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
    eventually("the new peer probed", async || new.accepted() >= 5).await;
    // At most the one probe that was on its way when the reload cancelled it.
    assert!(
        old.accepted() <= at_reload + 1,
        "the removed peer was probed after the reload: {} > {at_reload} + 1",
        old.accepted()
    );
    assert_eq!(peer_view(admin, "eu-west-1").await["url"], new.url());

    // A reload without peers: none listed, and the region's gauge is gone.
    write_atomically(&path, &instance(&backends, "us-east-1", ""));
    let (status, body) = reload(admin).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(
        admin_json(admin, "/clusters").await["peers"],
        serde_json::json!([])
    );
    let text = get(admin, "admin", "/metrics", &[]).await.body;
    assert!(!text.contains("meridian_peer_up{"), "{text}");
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
}

#[test]
fn a_config_without_peers_builds_nothing_for_them() {
    let base = "local_region: us-east-1
admin: { bind: null }
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
regions: { us-east-1: { lat: 38.9, lon: -77.4 }, eu-west-1: { lat: 53.3, lon: -6.3 } }
clusters: { api: { endpoints: { us-east-1: [\"127.0.0.1:9\"], eu-west-1: [\"127.0.0.1:10\"] } } }
routes: [{ name: api, hosts: [\"*\"], cluster: api }]
";
    let compile = |yaml: &str| {
        let loaded = config::load_str(yaml, Path::new("test.yaml")).unwrap();
        table::compile(&loaded, table::CompileContext::default()).unwrap()
    };
    let plain = compile(base);
    assert!(plain.peers.is_none());
    assert!(plain.clusters.iter().all(|c| c.peers.is_none()));
    assert!(plain.peer_up(1));

    let with = compile(&format!(
        "{base}peers: [{{ region: eu-west-1, url: \"http://127.0.0.1:9901/readyz\" }}]\n"
    ));
    assert_eq!(with.peers.as_ref().unwrap().list.len(), 1);
    assert!(with.clusters.iter().all(|c| c.peers.is_some()));
    assert!(with.peer_up(1), "a new peer starts up");
}

/// A reload keeps a peer's verdict while its region and URL stay, but its TLS follows the new
/// config: `tls` removed means the system's CAs again, not the old file's.
#[test]
fn a_reload_that_drops_a_peers_tls_drops_its_ca() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("peer-ca.pem");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let base = "local_region: us-east-1
admin: { bind: null }
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
regions: { us-east-1: { lat: 38.9, lon: -77.4 }, eu-west-1: { lat: 53.3, lon: -6.3 } }
clusters: { api: { endpoints: { us-east-1: [\"127.0.0.1:9\"] } } }
routes: [{ name: api, hosts: [\"*\"], cluster: api }]
";
    let peer = "peers: [{ region: eu-west-1, url: \"https://127.0.0.1:9901/readyz\"";
    let compile = |yaml: &str, previous: Option<&table::RoutingTable>| {
        let loaded = config::load_str(yaml, Path::new("test.yaml")).unwrap();
        let context = table::CompileContext {
            previous,
            ..Default::default()
        };
        table::compile(&loaded, context).unwrap()
    };
    let ca_of = |t: &table::RoutingTable| {
        let peers = t.peers.as_ref().unwrap();
        let tls = peers.list[0].target.tls.as_ref().expect("https");
        tls.spec.ca_file.clone()
    };
    let with = compile(
        &format!(
            "{base}{peer}, tls: {{ ca_file: \"{}\" }} }}]\n",
            ca_file.display()
        ),
        None,
    );
    assert_eq!(ca_of(&with), Some(ca_file.clone()));
    let without = compile(&format!("{base}{peer} }}]\n"), Some(&with));
    assert_eq!(ca_of(&without), None, "the private CA is gone");
    let again = compile(&format!("{base}{peer} }}]\n"), Some(&without));
    assert_eq!(ca_of(&again), None);
}

/// An https peer is probed with the system's CAs unless its `tls` names others: a peer whose
/// certificate no system root signed is down, and up once `tls.ca_file` trusts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_peer_must_present_a_trusted_certificate() {
    // A TLS peer that answers 200, with a certificate no system root signed.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key.into())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, handshakes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (count_accepted, count_handshakes) = (accepted.clone(), handshakes.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count_accepted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, count_handshakes) = (acceptor.clone(), count_handshakes.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    count_handshakes.fetch_add(1, Ordering::SeqCst);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    let _ = tls.write_all(answer.as_bytes()).await;
                }
            });
        }
    });

    let backends = Backends::start().await;
    let peers = peers_yaml(&[("eu-west-1", format!("https://{addr}/readyz"))]);
    let us = start_proxy(&instance(&backends, "us-east-1", &peers)).await;
    let (proxy, admin) = (us.proxy_addr().unwrap(), us.admin.unwrap());
    eventually("the untrusted peer down", async || {
        !peer_up(admin, "eu-west-1").await
    })
    .await;
    assert!(probes(admin, "eu-west-1", "error").await >= 2);
    assert_eq!(probes(admin, "eu-west-1", "up").await, 0);
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "probes spoke TLS to it"
    );
    assert_eq!(
        handshakes.load(Ordering::SeqCst),
        0,
        "the certificate was refused"
    );
    assert_eq!(served(proxy, EU_CLIENT).await, "us-east-1");

    // The same peer with its certificate as the CA to trust: up, and EU clients go there.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("peer-ca.pem");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let trusting = format!(
        "{FAST_CHECK}\npeers:\n  - {{ region: eu-west-1, url: \"https://{addr}/readyz\", tls: {{ ca_file: \"{}\" }} }}\n",
        ca_file.display()
    );
    let us = start_proxy(&instance(&backends, "us-east-1", &trusting)).await;
    let (proxy, admin) = (us.proxy_addr().unwrap(), us.admin.unwrap());
    eventually("the trusted peer up", async || {
        probes(admin, "eu-west-1", "up").await >= 1
    })
    .await;
    assert!(peer_up(admin, "eu-west-1").await);
    assert!(
        handshakes.load(Ordering::SeqCst) >= 1,
        "handshakes completed"
    );
    assert_eq!(served(proxy, EU_CLIENT).await, "eu-west-1");
}
