//! The admin status page in a real headless browser (Debian's chromium, driven through
//! chromedriver's WebDriver API): every region and endpoint is shown with its state, and the
//! page updates by itself when an endpoint goes down. Screenshots are kept as test artifacts.
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
use common::{Backends, Client, start_proxy};
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
            "--window-size=1280,900",
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
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_every_region_and_follows_endpoint_health() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: \"127.0.0.1:0\" }
access_log: { enabled: false }
{REGIONS}
clusters:
  api:
    endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] }
    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
",
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..10 {
        assert_eq!(client.get("a.test", "/", &[]).await.status, 200);
    }

    let driver = Driver::start().await;
    let url = format!("http://{}/", proxy.admin.unwrap());
    driver
        .session(Method::POST, "/url", json!({ "url": url }))
        .await;
    let all = [backends.us.addr, backends.eu.addr, backends.ap.addr].map(|a| a.to_string());
    driver
        .wait_for("all endpoints healthy", |states| {
            all.iter()
                .all(|a| states.iter().any(|(e, s)| e == a && s == "healthy"))
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
    assert_eq!(regions, ["ap-southeast-1", "eu-west-1", "us-east-1"]);
    let generation = driver
        .script("return document.getElementById('generation').textContent;")
        .await;
    assert_eq!(generation, "1");
    driver.screenshot("status-page.png").await;

    // eu-west-1's endpoint fails its health checks: the open page turns it "down" on its own.
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
    let states = driver.endpoint_states().await;
    assert!(
        states
            .iter()
            .filter(|(e, _)| *e != eu)
            .all(|(_, s)| s == "healthy"),
        "{states:?}"
    );
    let card = driver
        .script("return document.querySelector('[data-region=\"eu-west-1\"]').innerText;")
        .await;
    assert!(
        card.as_str().unwrap().contains("0%"),
        "healthy share shown: {card}"
    );
    driver.screenshot("status-page-eu-down.png").await;
    let _ = driver.session(Method::DELETE, "", Value::Null).await;
}
