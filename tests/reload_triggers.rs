//! What sets off a reload of the real binary, and how each is counted: a refused file left in
//! a busy directory, the same refused content written again, and SIGHUP; and that a reload
//! slow to read and compile leaves the admin API answering meanwhile. The binary logs to a
//! file beside its config, as a process with its output redirected next to its config does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../benches/common/big_config.rs"]
mod big_config;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backends, get};

/// How long any one wait for the binary may take.
const PATIENCE: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The process and the directory holding its config and log, cleaned up when dropped.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn config(&self) -> PathBuf {
        self.dir.path().join("meridian.yaml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meridian.log")).unwrap_or_default()
    }

    /// `meridian_config_reloads_total` summed over the series with this result (and trigger).
    async fn reloads(&self, result: &str, trigger: Option<&str>) -> u64 {
        let text = get(self.admin, "admin", "/metrics", &[]).await.body;
        count_reloads(&text, result, trigger)
    }
}

fn count_reloads(metrics: &str, result: &str, trigger: Option<&str>) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("meridian_config_reloads_total{"))
        .filter(|l| l.contains(&format!("result=\"{result}\"")))
        .filter(|l| trigger.is_none_or(|t| l.contains(&format!("trigger=\"{t}\""))))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn config(backends: &Backends, proxy: u16, admin: u16, region: &str) -> String {
    backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:{proxy}\" }}]
admin: {{ bind: \"127.0.0.1:{admin}\" }}
access_log: {{ enabled: false }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [\"{{EU}}\"], ap-southeast-1: [\"{{AP}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, steering: {{ only: [{region}] }} }}
"
    ))
}

/// Write beside and rename over, as config tooling does.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Start `meridian run` serving us-east-1, logging at info to `meridian.log` beside its config.
async fn start(backends: &Backends) -> (Running, u16, u16) {
    let (proxy, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, config(backends, proxy, admin, "us-east-1")).unwrap();
    let log = std::fs::File::create(dir.path().join("meridian.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "-c"])
        .arg(&path)
        .env("MERIDIAN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let running = Running {
        child,
        dir,
        proxy: std::net::SocketAddr::from(([127, 0, 0, 1], proxy)),
        admin: std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
    };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(running.admin).await.is_err() {
        assert!(started.elapsed() < PATIENCE, "meridian did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (running, proxy, admin)
}

/// Wait (bounded) until `condition` holds.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_is_refused_once_however_busy_its_directory() {
    let backends = Backends::start().await;
    let (running, proxy, admin) = start(&backends).await;
    assert_eq!(
        get(running.proxy, "a.test", "/", &[]).await.region(),
        "us-east-1"
    );
    let bad = config(&backends, proxy, admin, "us-east-1").replace("cluster: api", "cluster: apii");
    write_atomically(&running.config(), &bad);
    eventually("the broken file refused", async || {
        running.reloads("failed", Some("file_change")).await == 1
    })
    .await;

    // Another process writes beside the config, many times; Meridian logs there too.
    let neighbour = running.dir.path().join("app.log");
    for i in 0..50 {
        std::fs::write(&neighbour, format!("line {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same refused content written again is looked at, and not refused a second time.
    write_atomically(&running.config(), &bad);
    eventually("the rewrite seen as unchanged", async || {
        let failed = running.reloads("failed", None).await;
        assert_eq!(failed, 1, "failed reloads climbed to {failed}");
        running.reloads("unchanged", Some("file_change")).await >= 1
    })
    .await;
    assert_eq!(
        running.log().matches("config reload failed").count(),
        1,
        "{}",
        running.log()
    );
    assert_eq!(
        get(running.proxy, "a.test", "/", &[]).await.region(),
        "us-east-1",
        "the table in service keeps serving"
    );

    // A good file is applied as usual.
    write_atomically(
        &running.config(),
        &config(&backends, proxy, admin, "eu-west-1"),
    );
    eventually("the good file applied", async || {
        running.reloads("applied", Some("file_change")).await == 1
    })
    .await;
    assert_eq!(
        get(running.proxy, "a.test", "/", &[]).await.region(),
        "eu-west-1"
    );
    assert_eq!(running.reloads("failed", None).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_counted_as_a_signal() {
    let backends = Backends::start().await;
    let (running, _, _) = start(&backends).await;
    assert!(
        Command::new("kill")
            .args(["-HUP", &running.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // The reload's record is written last, after the swap and the count.
    let config = async || -> serde_json::Value {
        serde_json::from_str(&get(running.admin, "admin", "/config", &[]).await.body).unwrap()
    };
    eventually("the signalled reload", async || {
        !config().await["last_reload"].is_null()
    })
    .await;
    let config = config().await;
    assert_eq!(config["last_reload"]["trigger"], "signal", "{config}");
    assert_eq!(config["last_reload"]["result"], "applied", "{config}");
    assert_eq!(
        config["generation"], 2,
        "SIGHUP reloads even when nothing changed"
    );
    assert_eq!(running.reloads("applied", Some("signal")).await, 1);
    let metrics = get(running.admin, "admin", "/metrics", &[]).await.body;
    assert_eq!(
        count_reloads(&metrics, "applied", None)
            + count_reloads(&metrics, "failed", None)
            + count_reloads(&metrics, "unchanged", None),
        1,
        "only the signal reloaded: {metrics}"
    );
}

/// A reload's reading, parsing and compiling run off the control runtime: while a config with
/// 20,000 routes is read and compiled (over a second in a debug build), `/healthz` on the
/// admin API, which runs there, keeps answering in a fraction of that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reload_leaves_the_admin_api_answering() {
    let backends = Backends::start().await;
    let (running, proxy, admin) = start(&backends).await;
    let big = big_config::config_yaml(20_000, 1)
        .replace(
            "admin: { bind: null }",
            &format!("admin: {{ bind: \"127.0.0.1:{admin}\" }}"),
        )
        .replace(
            "bind: \"127.0.0.1:0\"",
            &format!("bind: \"127.0.0.1:{proxy}\""),
        );
    assert!(
        big.contains(&format!("127.0.0.1:{admin}")) && big.contains(&format!("127.0.0.1:{proxy}"))
    );

    let written = Instant::now();
    write_atomically(&running.config(), &big);
    let mut slowest = Duration::ZERO;
    let mut answers = 0;
    loop {
        let asked = Instant::now();
        let health = get(running.admin, "admin", "/healthz", &[]).await;
        assert_eq!(health.status, 200, "{}", health.body);
        slowest = slowest.max(asked.elapsed());
        answers += 1;
        if running.reloads("applied", Some("file_change")).await == 1 {
            break;
        }
        assert_eq!(
            running.reloads("failed", None).await,
            0,
            "{}",
            running.log()
        );
        assert!(
            written.elapsed() < PATIENCE * 3,
            "the large config was not applied in {:?}",
            PATIENCE * 3
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = written.elapsed();
    eprintln!("reload took {took:?}; {answers} /healthz answers, the slowest in {slowest:?}");
    // Below this the test could not tell a blocked control runtime from a free one.
    assert!(
        took >= Duration::from_millis(600),
        "the reload took only {took:?}: make the config larger for this test to mean anything"
    );
    assert!(answers >= 5, "{answers} answers while the reload ran");
    assert!(
        slowest < took / 3,
        "/healthz waited {slowest:?} during a reload of {took:?}: the control runtime was held"
    );
    let config: serde_json::Value =
        serde_json::from_str(&get(running.admin, "admin", "/config", &[]).await.body).unwrap();
    assert_eq!(config["generation"], 2, "{config}");
}
