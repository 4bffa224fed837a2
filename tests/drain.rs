//! Graceful drain of the real binary: SIGTERM while slow requests run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::signal;
use common::{Backends, Client, get};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The process and the directory holding its config, both cleaned up when dropped.
struct Running(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until readiness reports the drain (the signal has been handled), bounded.
async fn wait_until_draining(admin: std::net::SocketAddr) {
    let started = Instant::now();
    loop {
        if get(admin, "admin", "/readyz", &[]).await.status == 503 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The process's exit status, waited for off the runtime.
async fn wait_for_exit(mut running: Running) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || running.0.wait())
        .await
        .unwrap()
        .unwrap()
}

/// Start `meridian run` on free ports and wait until its admin port accepts; returns
/// (process, proxy, admin).
async fn start(
    backends: &Backends,
    drain: &str,
) -> (Running, std::net::SocketAddr, std::net::SocketAddr) {
    let (running, proxy, admin) = launch(backends, drain);
    let started = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "meridian did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (running, proxy, admin)
}

/// Spawn `meridian run` on free ports without waiting; returns (process, proxy, admin).
fn launch(
    backends: &Backends,
    drain: &str,
) -> (Running, std::net::SocketAddr, std::net::SocketAddr) {
    let (proxy, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(
        &path,
        backends.fill(&format!(
            "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:{proxy}\" }}]
admin: {{ bind: \"127.0.0.1:{admin}\" }}
access_log: {{ enabled: false }}
{drain}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
"
        )),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "-c"])
        .arg(&path)
        .env("MERIDIAN_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (proxy, admin) = (
        std::net::SocketAddr::from(([127, 0, 0, 1], proxy)),
        std::net::SocketAddr::from(([127, 0, 0, 1], admin)),
    );
    (Running(child, dir), proxy, admin)
}

/// A SIGTERM as soon as the process accepts connections drains and exits 0: the signal is
/// listened for before anything is served, so it never meets the default action (ending the
/// process undrained).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_drains() {
    let backends = Backends::start().await;
    // Several starts: the gap between serving and listening for the signal was narrow.
    for attempt in 0..5 {
        let (running, _, admin) = launch(&backends, "drain_delay: 0s\ndrain_timeout: 1s");
        let started = Instant::now();
        // No sleep between tries: the signal goes out as soon as the port accepts.
        while std::net::TcpStream::connect(admin).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "meridian did not start"
            );
        }
        signal(running.0.id(), libc::SIGTERM).unwrap();
        let exit = wait_for_exit(running).await;
        assert!(exit.success(), "start {attempt}: {exit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_every_started_request_finish() {
    let backends = Backends::start().await;
    let (running, proxy, admin) = start(&backends, "drain_delay: 1s\ndrain_timeout: 3s").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut client = Client::connect(proxy, None).await;
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                statuses.push(
                    client
                        .get("a.test", "/delay/400", &[])
                        .await
                        .status
                        .as_u16(),
                );
            }
            statuses
        }));
    }
    // Let every loop get a slow request in flight.
    let started = Instant::now();
    while backends.us.hits() < 4 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(running.0.id(), libc::SIGTERM).unwrap();
    let signalled = Instant::now();
    stop.store(true, Ordering::SeqCst);

    // Ready turns 503 as soon as the signal is handled; listeners still accept during
    // drain_delay.
    wait_until_draining(admin).await;
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_ok(),
        "still accepting during drain_delay"
    );

    for l in loops {
        let statuses = l.await.unwrap();
        assert!(!statuses.is_empty());
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let exit = wait_for_exit(running).await;
    assert!(exit.success(), "{exit:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "exit within drain_timeout + 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let backends = Backends::start().await;
    let (running, proxy, admin) = start(&backends, "drain_delay: 5s\ndrain_timeout: 30s").await;
    let slow = tokio::spawn(async move {
        let mut client = Client::connect(proxy, None).await;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            client.get("a.test", "/delay/20000", &[]),
        )
        .await;
    });
    let started = Instant::now();
    while backends.us.hits() < 1 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(running.0.id(), libc::SIGTERM).unwrap();
    wait_until_draining(admin).await;
    let second = Instant::now();
    signal(running.0.id(), libc::SIGTERM).unwrap();
    let exit = wait_for_exit(running).await;
    assert!(exit.success());
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    slow.abort();
}
