//! Thread-per-core end to end: several worker threads, each with its own listener sockets
//! and upstream connections, behind one table. New connections spread over the workers; a
//! reload, a drain and keep-alive reuse hold on every worker; a port held elsewhere fails the
//! start; `--worker-threads` is range-checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backends, Client, get};
use meridian::server::{self, RunningServer};
use meridian::worker::Workers;
use meridian::{config, reload, table};

const WORKERS: usize = 2;

/// Compile `path` and serve it on `workers` worker threads, as `meridian run` does (the test's
/// runtime is the control thread).
async fn start_on_workers(path: &Path, workers: usize) -> RunningServer {
    let mut loaded = config::load_file(path).unwrap();
    common::quiet(&mut loaded);
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    let workers = Arc::new(Workers::start(workers, None).unwrap());
    server::start_on(table, Some(path.to_path_buf()), workers)
        .await
        .unwrap()
}

/// Write `yaml` as a config file in a new temporary directory.
fn config_file(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// One listener (plus `extra`), the admin API, and one cluster with an endpoint per region;
/// the route sends everything to `region`.
fn config(backends: &Backends, region: &str, extra: &str) -> String {
    backends.fill(&format!(
        "
local_region: us-east-1
listeners:
  - {{ name: http, bind: \"127.0.0.1:0\" }}
{extra}admin: {{ bind: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [\"{{EU}}\"], ap-southeast-1: [\"{{AP}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, steering: {{ only: [{region}] }} }}
"
    ))
}

/// One cluster of the single endpoint `upstream`, with `pool` as its connection_pool.
fn single_upstream_config(upstream: SocketAddr, pool: &str) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: \"127.0.0.1:0\" }}
access_log: {{ enabled: false }}
{regions}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{upstream}\"] }}
    connection_pool: {{ {pool} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
        regions = common::REGIONS_YAML
    )
}

/// `meridian_worker_connections_total` per worker, from the admin API.
async fn accepted_per_worker(admin: SocketAddr, workers: usize) -> Vec<u64> {
    let text = get(admin, "admin", "/metrics", &[]).await.body;
    (0..workers)
        .map(|w| {
            let prefix = format!("meridian_worker_connections_total{{worker=\"{w}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |v| v.trim().parse().unwrap())
        })
        .collect()
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// `n` GETs, each on a new connection: the regions that answered, in order.
async fn new_connections(proxy: SocketAddr, n: usize, path: &str) -> Vec<String> {
    let mut regions = Vec::with_capacity(n);
    for _ in 0..n {
        let answer = get(proxy, "api.example.com", path, &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        regions.push(answer.region().to_owned());
    }
    regions
}

/// An upstream that answers 200 to everything (after `delay`) and counts the connections it
/// accepted.
struct CountingUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl CountingUpstream {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            connections,
            requests,
        }
    }
}

#[tokio::test]
async fn new_connections_spread_over_every_worker() {
    let backends = Backends::start().await;
    let (_dir, path) = config_file(&config(&backends, "us-east-1", ""));
    let running = start_on_workers(&path, WORKERS).await;
    assert_eq!(running.server.worker_count(), WORKERS);
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());

    let regions = new_connections(proxy, 200, "/").await;
    assert!(regions.iter().all(|r| r == "us-east-1"), "{regions:?}");
    let accepted = accepted_per_worker(admin, WORKERS).await;
    assert_eq!(accepted.iter().sum::<u64>(), 200, "{accepted:?}");
    // SO_REUSEPORT hashes each connection's addresses: all 200 on one worker would mean the
    // other serves nothing (odds 2^-199 otherwise).
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    assert_eq!(backends.us.hits(), 200);
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_reload_applies_on_every_worker() {
    let backends = Backends::start().await;
    let (_dir, path) = config_file(&config(&backends, "us-east-1", ""));
    let running = start_on_workers(&path, WORKERS).await;
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());
    let regions = new_connections(proxy, 20, "/").await;
    assert!(regions.iter().all(|r| r == "us-east-1"), "{regions:?}");

    // The route moves to eu-west-1 and a second listener appears.
    std::fs::write(
        &path,
        config(
            &backends,
            "eu-west-1",
            "  - { name: extra, bind: \"127.0.0.1:0\" }\n",
        ),
    )
    .unwrap();
    let result = running.server.reload(reload::Trigger::Admin).await.unwrap();
    assert_eq!(result, reload::ReloadResult::Applied);
    let listeners = running.server.listener_addrs().await;
    assert_eq!(listeners.len(), 2, "{listeners:?}");
    assert_eq!(listeners[0].1, proxy, "the kept listener keeps its port");
    let extra = listeners[1].1;

    // Every worker serves the new route on the kept listener...
    let before = accepted_per_worker(admin, WORKERS).await;
    let regions = new_connections(proxy, 100, "/").await;
    assert!(regions.iter().all(|r| r == "eu-west-1"), "{regions:?}");
    let after = accepted_per_worker(admin, WORKERS).await;
    let spread = delta(&after, &before);
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    // ...and accepts on the new listener.
    let regions = new_connections(extra, 100, "/").await;
    assert!(regions.iter().all(|r| r == "eu-west-1"), "{regions:?}");
    let spread = delta(&accepted_per_worker(admin, WORKERS).await, &after);
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    assert_eq!(spread.iter().sum::<u64>(), 100);

    // A reload that removes it closes it on every worker.
    std::fs::write(&path, config(&backends, "eu-west-1", "")).unwrap();
    let result = running.server.reload(reload::Trigger::Admin).await.unwrap();
    assert_eq!(result, reload::ReloadResult::Applied);
    // (Each worker closes its socket when it next runs: wait for 20 refusals in a row.)
    let waiting = Instant::now();
    let mut refused = 0;
    while refused < 20 {
        if tokio::net::TcpStream::connect(extra).await.is_err() {
            refused += 1;
        } else {
            refused = 0;
            assert!(
                waiting.elapsed() < Duration::from_secs(5),
                "the removed listener still accepts on some worker"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_drain_finishes_in_flight_requests_on_every_worker_and_closes() {
    let backends = Backends::start().await;
    let (_dir, path) = config_file(&config(&backends, "us-east-1", ""));
    let running = start_on_workers(&path, WORKERS).await;
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());

    // Slow requests, one per connection, until every worker holds at least one at the
    // upstream.
    let mut in_flight = Vec::new();
    for started in 1..=64u64 {
        in_flight.push(tokio::spawn(async move {
            let mut client = Client::connect(proxy, None).await;
            client.get("api.example.com", "/delay/700", &[]).await
        }));
        let waiting = Instant::now();
        while backends.us.hits() < started {
            assert!(waiting.elapsed() < Duration::from_secs(5), "never reached");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if accepted_per_worker(admin, WORKERS)
            .await
            .iter()
            .all(|&n| n > 0)
        {
            break;
        }
    }
    let accepted = accepted_per_worker(admin, WORKERS).await;
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");

    let started = Instant::now();
    running.server.shutdown(Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the drain waited for its timeout instead of the requests"
    );
    for request in in_flight {
        let answer = tokio::time::timeout(Duration::from_secs(1), request)
            .await
            .expect("the request had not finished when the drain did")
            .unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.region(), "us-east-1");
    }
    // Every worker's socket is closed.
    for _ in 0..20 {
        assert!(
            tokio::net::TcpStream::connect(proxy).await.is_err(),
            "a worker still accepts after the drain"
        );
    }
}

#[tokio::test]
async fn each_worker_reuses_its_own_upstream_connections() {
    let upstream = CountingUpstream::start(Duration::ZERO).await;
    let (_dir, path) = config_file(&single_upstream_config(upstream.addr, ""));
    let running = start_on_workers(&path, WORKERS).await;
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());

    // 200 clients one after the other, each on a new connection.
    new_connections(proxy, 200, "/").await;
    let accepted = accepted_per_worker(admin, WORKERS).await;
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 200);
    // One keep-alive connection per worker: each reuses the one it opened.
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        WORKERS as u64,
        "one upstream connection per worker"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_worker_at_max_connections_borrows_another_workers_idle_connection() {
    let upstream = CountingUpstream::start(Duration::ZERO).await;
    let (_dir, path) = config_file(&single_upstream_config(upstream.addr, "max_connections: 1"));
    let running = start_on_workers(&path, WORKERS).await;
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());

    new_connections(proxy, 100, "/").await;
    let accepted = accepted_per_worker(admin, WORKERS).await;
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 100);
    assert_eq!(
        upstream.connections.load(Ordering::SeqCst),
        1,
        "the one connection allowed served both workers"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_port_held_by_another_socket_fails_the_start_in_process() {
    let backends = Backends::start().await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = config(&backends, "us-east-1", "").replace(
        "name: http, bind: \"127.0.0.1:0\"",
        &format!("name: http, bind: \"127.0.0.1:{port}\""),
    );
    let (_dir, path) = config_file(&yaml);
    let loaded = config::load_file(&path).unwrap();
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    let workers = Arc::new(Workers::start(WORKERS, None).unwrap());
    let Err(e) = server::start_on(table, Some(path.clone()), workers).await else {
        panic!("started on a port another socket holds");
    };
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (listener `http`)"
        )),
        "{text}"
    );
    drop(held);
}

/// The binary, with `args` after `run -c <config>`; returns (exit code, stderr), or panics
/// when it is still running after 10 s.
fn run_binary(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "-c"])
        .arg(config)
        .args(args)
        .env("MERIDIAN_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meridian run {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[tokio::test]
async fn a_port_held_by_another_process_fails_the_start_clearly() {
    let backends = Backends::start().await;
    // This test process holds the port (without SO_REUSEPORT); `meridian run` is the other.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let yaml = config(&backends, "us-east-1", "").replace(
        "name: http, bind: \"127.0.0.1:0\"",
        &format!("name: http, bind: \"127.0.0.1:{port}\""),
    );
    let (_dir, path) = config_file(&yaml);
    let (code, stderr) =
        tokio::task::spawn_blocking(move || run_binary(&path, &["--worker-threads", "2"]))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (listener `http`)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("is another process using it?"), "{stderr}");
    drop(held);
}

#[tokio::test]
async fn worker_threads_out_of_range_or_malformed_are_refused() {
    let backends = Backends::start().await;
    let (_dir, path) = config_file(&config(&backends, "us-east-1", ""));
    for bad in ["1025", "100000", "18446744073709551616", "-1", "two", ""] {
        let path = path.clone();
        let (code, stderr) = tokio::task::spawn_blocking(move || {
            run_binary(&path, &[format!("--worker-threads={bad}").as_str()])
        })
        .await
        .unwrap();
        assert_eq!(code, Some(2), "--worker-threads {bad:?}: {stderr}");
        assert!(stderr.contains("--worker-threads"), "{bad:?}: {stderr}");
    }
}

#[tokio::test]
async fn worker_threads_zero_runs_one_worker() {
    let backends = Backends::start().await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (proxy, admin) = (free(), free());
    let yaml = config(&backends, "us-east-1", "")
        .replace(
            "name: http, bind: \"127.0.0.1:0\"",
            &format!("name: http, bind: \"{proxy}\""),
        )
        .replace(
            "admin: { bind: \"127.0.0.1:0\" }",
            &format!("admin: {{ bind: \"{admin}\" }}"),
        );
    let (_dir, path) = config_file(&yaml);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["run", "--worker-threads", "0", "-c"])
        .arg(&path)
        .env("MERIDIAN_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let regions = new_connections(proxy, 20, "/").await;
    assert!(regions.iter().all(|r| r == "us-east-1"));
    let text = get(admin, "admin", "/metrics", &[]).await.body;
    assert!(
        text.contains("meridian_worker_connections_total{worker=\"0\"} 20"),
        "{text}"
    );
    assert!(!text.contains("meridian_worker_connections_total{worker=\"1\"}"));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn max_connections_holds_for_the_cluster_across_workers_under_a_flood() {
    // Slow answers keep every worker's requests waiting on the cluster's four connections.
    let upstream = CountingUpstream::start(Duration::from_millis(10)).await;
    let (_dir, path) = config_file(&single_upstream_config(
        upstream.addr,
        "max_connections: 4, max_pending_requests: 1000",
    ));
    let running = start_on_workers(&path, WORKERS).await;
    let (proxy, admin) = (running.proxy_addr().unwrap(), running.admin.unwrap());

    let clients: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(proxy, None).await;
                for _ in 0..5 {
                    let answer = client.get("api.example.com", "/", &[]).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let accepted = accepted_per_worker(admin, WORKERS).await;
    assert_eq!(accepted.iter().sum::<u64>(), 100);
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 500);
    let opened = upstream.connections.load(Ordering::SeqCst);
    assert!(
        opened <= 4,
        "{opened} upstream connections: max_connections is per worker, not per cluster"
    );
    running.shutdown(Duration::from_secs(5)).await;
}
