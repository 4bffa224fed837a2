//! The admin status page in a real headless browser (Debian's chromium, driven through
//! chromedriver's WebDriver API): every region and endpoint with its state, figures over the
//! recent window (an idle cluster shows 0/s, never 100%), the chart, the routes with the
//! order for a sample client, where clients land, and a killed endpoint turning red on its
//! own. Screenshots are kept in target/status-page/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::process::require_program;
use common::{Admin, Backends, Client, DEMO_GEO, start_proxy, three_region_config};
use http::Method;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
    _profile: tempfile::TempDir,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(addr: SocketAddr, method: Method, path: &str, body: Value) -> Value {
    let mut client = Client::connect(addr, None).await;
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let answer = client
        .request_with_body(
            method,
            "127.0.0.1",
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await;
    let value: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    assert!(
        answer.status.is_success(),
        "webdriver {path}: {} {}",
        answer.status,
        answer.body
    );
    value["value"].clone()
}

impl Driver {
    async fn start() -> Self {
        let chromedriver = require_program(CHROMEDRIVER, "chromium-driver");
        let chromium = require_program(CHROMIUM, "chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().unwrap();
        let mut driver = Self {
            child,
            addr,
            _profile: profile,
            session: String::new(),
        };
        // Ready when /status says so.
        let started = Instant::now();
        loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                drop(stream);
                let status = call(addr, Method::GET, "/status", Value::Null).await;
                if status["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2200",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!(
            "--user-data-dir={}",
            driver._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let session = call(
            addr,
            Method::POST,
            "/session",
            json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": chromium, "args": args }
            }}}),
        )
        .await;
        driver.session = session["sessionId"].as_str().unwrap().to_owned();
        driver
    }

    async fn session(&self, method: Method, path: &str, body: Value) -> Value {
        call(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    async fn script(&self, script: &str) -> Value {
        self.session(
            Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.session(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.parent().unwrap_or(&tmp).join("status-page");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot saved to {}", path.display());
        path
    }

    /// Endpoint address → state as the page shows it.
    async fn endpoint_states(&self) -> Vec<(String, String)> {
        let v = self
            .script("return Array.from(document.querySelectorAll('li[data-endpoint]')).map(e => [e.dataset.endpoint, e.dataset.state]);")
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_owned(),
                    pair[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn wait_for(&self, what: &str, mut done: impl FnMut(&[(String, String)]) -> bool) {
        let started = Instant::now();
        loop {
            let states = self.endpoint_states().await;
            if done(&states) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "page never showed {what}: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll a script until `done` holds for its value.
    async fn wait_script(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let value = self.script(script).await;
            if done(&value) {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "page never showed {what}: {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Type `value` into the sample-client box and submit it.
    async fn ask_order_for(&self, value: &str) {
        let script = format!(
            "const input = document.getElementById('client'); input.value = {}; document.getElementById('client-form').requestSubmit();",
            json!(value)
        );
        self.script(&script).await;
    }
}

fn config() -> String {
    three_region_config(
        "us-east-1",
        Admin::Loopback,
        DEMO_GEO,
        "clusters:
  api:
    endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] }
    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }
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

/// The share figures of every region card, in page order.
const SHARES: &str = "return Array.from(document.querySelectorAll('section.card[data-region]')).map(c => c.closest('.cards').previousElementSibling.dataset.cluster + '/' + c.dataset.region + ' ' + c.querySelector('[data-figure=share] b').textContent).sort();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_tells_the_truth() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(&config())).await;
    let addr = proxy.proxy_addr().unwrap();

    let driver = Driver::start().await;
    let url = format!("http://{}/", proxy.admin.unwrap());
    driver
        .session(Method::POST, "/url", json!({ "url": url }))
        .await;
    let all = [backends.us.addr, backends.eu.addr, backends.ap.addr].map(|a| a.to_string());
    driver
        .wait_for("all endpoints healthy", |states| {
            all.iter().all(|a| {
                states
                    .iter()
                    .filter(|(e, s)| e == a && s == "healthy")
                    .count()
                    >= 1
            })
        })
        .await;
    let regions = driver
        .script("return Array.from(document.querySelectorAll('[data-region] h3')).map(h => h.textContent);")
        .await;
    let mut regions: Vec<&str> = regions
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    regions.sort();
    assert_eq!(
        regions,
        ["ap-southeast-1", "eu-west-1", "us-east-1", "us-east-1"]
    );
    let generation = driver
        .script("return document.getElementById('generation').textContent;")
        .await;
    assert_eq!(generation, "1");

    // Idle: 0/s everywhere and no share at all, least of all "100%".
    let shares = driver.script(SHARES).await;
    assert_eq!(
        shares,
        json!([
            "api/ap-southeast-1 –",
            "api/eu-west-1 –",
            "api/us-east-1 –",
            "spare/us-east-1 –"
        ]),
        "idle shares"
    );
    let idle = driver
        .script("return [document.getElementById('total-rate').textContent, document.querySelector('[data-cluster=spare]').textContent];")
        .await;
    assert_eq!(idle[0], "0/s");
    assert_eq!(idle[1], "cluster spare · 0/s");
    driver.screenshot("idle.png").await;

    // Germany (198.51.100.7) lands in eu-west-1, the US (192.0.2.10) in us-east-1.
    for (xff, n, want) in [
        ("198.51.100.7", 9, "eu-west-1"),
        ("192.0.2.10", 3, "us-east-1"),
    ] {
        let mut client = Client::connect(addr, None).await;
        for _ in 0..n {
            let answer = client
                .get("api.test", "/", &[("x-forwarded-for", xff)])
                .await;
            assert_eq!((answer.status.as_u16(), answer.region()), (200, want));
        }
    }
    let landing = driver
        .wait_script(
            "where clients land",
            "return Array.from(document.querySelectorAll('#landing tr[data-country]')).map(r => [r.dataset.country, r.dataset.region, r.cells[1].textContent]);",
            |rows| rows.as_array().is_some_and(|r| r.len() == 2),
        )
        .await;
    assert_eq!(
        landing,
        json!([["DE", "eu-west-1", "75%"], ["US", "us-east-1", "25%"]])
    );
    // The cluster cards: shares over the window, the idle cluster still "–".
    let shares = driver
        .wait_script("the window's shares", SHARES, |s| {
            s[1] == "api/eu-west-1 75%"
        })
        .await;
    assert_eq!(
        shares,
        json!([
            "api/ap-southeast-1 0%",
            "api/eu-west-1 75%",
            "api/us-east-1 25%",
            "spare/us-east-1 –"
        ])
    );
    // The chart: 60 points per line, a line for requests and one for errors per region, and
    // eu-west-1's requests line off the floor.
    let chart = driver
        .wait_script(
            "the chart",
            "const svg = document.getElementById('chart'); const eu = svg.querySelector('polyline[data-region=\"eu-west-1\"][data-series=requests]'); return [svg.dataset.points, svg.querySelectorAll('polyline').length, eu.getAttribute('points').split(' ').length, Math.min(...eu.getAttribute('points').split(' ').map(p => +p.split(',')[1])), Math.max(...eu.getAttribute('points').split(' ').map(p => +p.split(',')[1]))];",
            |c| c[3].as_f64() < c[4].as_f64(),
        )
        .await;
    assert_eq!(chart[0], "60");
    assert_eq!(chart[1], 6);
    assert_eq!(chart[2], 60);

    // Routes: each mode, the live split, and the order for a sample client.
    let modes = driver
        .script("return Array.from(document.querySelectorAll('#routes tr[data-route]')).map(r => [r.dataset.route, r.querySelector('[data-mode]').dataset.mode]);")
        .await;
    assert_eq!(
        modes,
        json!([
            ["spare", "nearest"],
            ["split", "weighted"],
            ["api", "nearest"]
        ])
    );
    let split = driver
        .script(
            "return document.querySelector('#routes tr[data-route=api] [data-split]').textContent;",
        )
        .await;
    assert!(
        split.as_str().unwrap().contains("api/eu-west-1 75%"),
        "{split}"
    );
    driver.ask_order_for("DE").await;
    let order = driver
        .wait_script(
            "the order for DE",
            "return document.querySelector('#routes tr[data-route=api] [data-order]').dataset.order;",
            |o| o != "",
        )
        .await;
    assert_eq!(order, "eu-west-1,us-east-1,ap-southeast-1");
    driver.ask_order_for("203.0.113.9").await;
    driver
        .wait_script(
            "the order for a Singapore address",
            "return document.querySelector('#routes tr[data-route=api] [data-order]').dataset.order;",
            |o| o.as_str().is_some_and(|o| o.starts_with("ap-southeast-1")),
        )
        .await;
    driver.screenshot("status-page.png").await;
    // Garbage in the box: the reason, and the last good client stays.
    driver.ask_order_for("DE'; <b>x</b>").await;
    let error = driver
        .wait_script(
            "the sample client's error",
            "return document.getElementById('client-error').textContent;",
            |e| e != "",
        )
        .await;
    assert_eq!(
        error,
        "`DE'; <b>x</b>` is neither an IP address nor a two-letter country code"
    );
    let order = driver
        .script("return document.querySelector('#routes tr[data-route=api] [data-order]').dataset.order;")
        .await;
    assert!(
        order.as_str().unwrap().starts_with("ap-southeast-1"),
        "the last good client's order stays: {order}"
    );

    // eu-west-1's endpoint fails requests, then its health checks: its row turns red on its
    // own, with its error rate over the window (not "100% ok").
    backends.eu.control.status.store(503, Ordering::SeqCst);
    let mut client = Client::connect(addr, None).await;
    for _ in 0..4 {
        client
            .get("api.test", "/", &[("x-forwarded-for", "198.51.100.7")])
            .await;
    }
    backends
        .eu
        .control
        .health_status
        .store(503, Ordering::SeqCst);
    let eu = backends.eu.addr.to_string();
    driver
        .wait_for("eu-west-1 down", |states| {
            states.iter().any(|(e, s)| *e == eu && s == "down")
        })
        .await;
    let row_script = format!(
        "const li = document.querySelector('li[data-endpoint=\"{eu}\"]'); return [li.className, getComputedStyle(li).backgroundColor, getComputedStyle(li.querySelector('.badge')).backgroundColor, li.dataset.errorRate, li.textContent];"
    );
    let row = driver
        .wait_script("eu-west-1's errors", &row_script, |r| {
            r[3].as_str()
                .is_some_and(|e| e.parse::<f64>().is_ok_and(|e| e > 0.0))
        })
        .await;
    assert_eq!(row[0], "endpoint bad", "{row}");
    assert_eq!(row[1], "rgb(253, 226, 224)", "{row}");
    assert_eq!(row[2], "rgb(179, 38, 30)", "{row}");
    let text = row[4].as_str().unwrap();
    assert!(text.contains("% errors") && !text.contains(" ok"), "{text}");
    let others = driver
        .script("return Array.from(document.querySelectorAll('li.bad')).length;")
        .await;
    assert_eq!(others, 1, "only eu-west-1's row is red");
    let card = driver
        .script("return document.querySelector('[data-region=\"eu-west-1\"] [data-figure=healthy]').innerText;")
        .await;
    assert!(
        card.as_str().unwrap().starts_with("0%"),
        "healthy share shown: {card}"
    );
    let path = driver.screenshot("status-page-eu-down.png").await;
    assert!(std::fs::metadata(path).unwrap().len() > 10_000);
    let _ = driver.session(Method::DELETE, "", Value::Null).await;
}
