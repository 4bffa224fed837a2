//! The Prometheus files operators deploy (docker/prometheus), loaded into a real Prometheus:
//! two edges (Meridian binaries for us-east-1 and eu-west-1, each with real backends), a
//! regional Prometheus scraping each with the shipped prometheus.yml and alerts.yml, and a
//! global Prometheus federating both with the shipped federation.yml. The global view must
//! keep both the edge that took a request (`edge_region`) and the region that served it
//! (`region`). Only the addresses, paths and intervals are templated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Loopback addresses of this test's own, so ports picked free stay free.
const HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 29, 0, 1));

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind(SocketAddr::new(HOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Replace `from` with `to`, failing when the shipped file no longer has `from`: the test
/// must load the files operators deploy, not a copy that drifted from them.
fn template(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped file lacks `{from}`");
    text.replace(from, to)
}

/// Child processes, killed when the test ends however it ends.
#[derive(Default)]
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn spawn(&mut self, name: &str, command: &mut Command, log_dir: &Path) {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.0.push((name.to_owned(), child));
    }

    /// Fail with the process's log if it has exited.
    fn check_running(&mut self, log_dir: &Path) {
        for (name, child) in &mut self.0 {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(log_dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                panic!("{name} exited ({status}):\n{log}");
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET (the peer closes after the body): status, headers, body.
fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!("GET {path} HTTP/1.0\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

/// Poll `probe` until it answers `Ok`, up to `limit`; fail naming `what` and the last `Err`
/// (what was seen instead).
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::new();
    for _ in 0..10_000 {
        match probe() {
            Ok(value) => return value,
            Err(seen) => last = seen,
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last seen: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: gave up polling; last seen: {last}");
}

/// `query` on a Prometheus's HTTP API: the result vector.
fn query(prometheus: SocketAddr, query: &str) -> Vec<Value> {
    let mut encoded = String::new();
    for byte in query.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let Some((200, _, body)) = http_get(prometheus, &format!("/api/v1/query?query={encoded}"), &[])
    else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap();
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// (edge_region, region) → value of each series in `result`.
fn by_edge_and_region(result: &[Value]) -> BTreeMap<(String, String), f64> {
    result
        .iter()
        .map(|series| {
            let label = |name: &str| series["metric"][name].as_str().unwrap_or("").to_owned();
            let value = series["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            ((label("edge_region"), label("region")), value)
        })
        .collect()
}

fn ready(prometheus: SocketAddr) -> Result<(), String> {
    match http_get(prometheus, "/-/ready", &[]) {
        Some((200, _, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

fn start_prometheus(
    processes: &mut Processes,
    binary: &Path,
    name: &str,
    config: &str,
    dir: &Path,
) -> SocketAddr {
    let listen = free_addr();
    let config_file = dir.join(format!("{name}.yml"));
    std::fs::write(&config_file, config).unwrap();
    processes.spawn(
        name,
        Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join(name).display()))
            .arg(format!("--web.listen-address={listen}")),
        dir,
    );
    listen
}

#[test]
fn global_prometheus_keeps_the_edge_and_the_upstream_region() {
    let prometheus = common::process::require_program("prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "federation-test-token").unwrap();
    let mut processes = Processes::default();

    // Backends, one per region, shared by both edges.
    let backends: Vec<(&str, SocketAddr)> = ["us-east-1", "eu-west-1", "ap-southeast-1"]
        .into_iter()
        .map(|region| (region, free_addr()))
        .collect();
    for (region, addr) in &backends {
        processes.spawn(
            &format!("backend-{region}"),
            Command::new(env!("CARGO_BIN_EXE_meridian"))
                .args(["backend", "--region", region, "--listen"])
                .arg(addr.to_string()),
            logs,
        );
    }

    // Two edges: the same cluster, each Meridian in its own region.
    let mut edges = Vec::new();
    for edge in ["us-east-1", "eu-west-1"] {
        let (listen, admin) = (free_addr(), free_addr());
        let config = format!(
            "local_region: {edge}
listeners:
  - {{ name: http, bind: \"{listen}\" }}
admin: {{ bind: \"{admin}\", token_file: \"{token}\" }}
access_log: {{ enabled: false }}
geo:
  database: \"{db}\"
  trusted_proxies: [\"127.0.0.0/8\"]
{regions}clusters:
  api:
    endpoints:
      us-east-1: [\"{us}\"]
      eu-west-1: [\"{eu}\"]
      ap-southeast-1: [\"{ap}\"]
routes:
  - {{ name: api, hosts: [\"api.example.com\"], cluster: api }}
",
            token = token.display(),
            db = common::demo_db().display(),
            regions = common::REGIONS_YAML,
            us = backends[0].1,
            eu = backends[1].1,
            ap = backends[2].1,
        );
        let file = dir.path().join(format!("meridian-{edge}.yaml"));
        std::fs::write(&file, config).unwrap();
        processes.spawn(
            &format!("meridian-{edge}"),
            Command::new(env!("CARGO_BIN_EXE_meridian"))
                .args(["run", "--worker-threads", "1", "--config"])
                .arg(&file),
            logs,
        );
        edges.push((edge, listen, admin));
    }
    for (edge, _, admin) in &edges {
        wait_for(
            &format!("meridian {edge} ready"),
            Duration::from_secs(30),
            || {
                processes.check_running(logs);
                let auth = [("authorization", "Bearer federation-test-token")];
                match http_get(*admin, "/readyz", &auth) {
                    Some((200, _, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        );
    }
    for (region, addr) in &backends {
        wait_for(
            &format!("backend {region}"),
            Duration::from_secs(30),
            || {
                processes.check_running(logs);
                TcpStream::connect(addr).map_err(|e| e.to_string())
            },
        );
    }

    // Traffic: clients from the demo GeoIP ranges, each served by its nearest region.
    let us_client = "192.0.2.10";
    let eu_client = "198.51.100.10";
    let ap_client = "203.0.113.10";
    let plan = [
        (0, us_client, "us-east-1", 5),
        (0, eu_client, "eu-west-1", 3),
        (1, eu_client, "eu-west-1", 4),
        (1, ap_client, "ap-southeast-1", 2),
    ];
    let mut expected = BTreeMap::new();
    for (edge, client, region, count) in plan {
        let (edge_name, listen, _) = edges[edge];
        for _ in 0..count {
            let headers = [("host", "api.example.com"), ("x-forwarded-for", client)];
            let (status, head, _) = http_get(listen, "/", &headers).unwrap();
            assert_eq!(status, 200, "{edge_name} from {client}: {head}");
            let served = format!("x-meridian-region: {region}");
            assert!(head.to_ascii_lowercase().contains(&served), "{head}");
        }
        expected.insert((edge_name.to_owned(), region.to_owned()), f64::from(count));
    }

    // Regional Prometheus servers with the shipped prometheus.yml and alerts.yml.
    let shipped = std::fs::read_to_string(repo("docker/prometheus/prometheus.yml")).unwrap();
    let mut regional = Vec::new();
    for (edge, _, admin) in &edges {
        let mut config = template(
            &shipped,
            "scrape_interval: 15s",
            "scrape_interval: 1s\n  evaluation_interval: 1s",
        );
        config = template(
            &config,
            "edge_region: us-east-1",
            &format!("edge_region: {edge}"),
        );
        config = template(
            &config,
            "/etc/prometheus/alerts.yml",
            &repo("docker/prometheus/alerts.yml").display().to_string(),
        );
        config = template(
            &config,
            "/etc/prometheus/admin-token",
            &token.display().to_string(),
        );
        config = template(&config, "meridian:9901", &admin.to_string());
        let name = format!("prometheus-{edge}");
        regional.push(start_prometheus(
            &mut processes,
            &prometheus,
            &name,
            &config,
            dir.path(),
        ));
    }

    // The global one with the shipped federation.yml; ap-southeast-1's Prometheus is absent
    // (its target stays down), the other two are the regional ones above.
    let mut federation = std::fs::read_to_string(repo("docker/prometheus/federation.yml")).unwrap();
    federation = format!("global:\n  scrape_interval: 1s\n{federation}");
    federation = template(
        &federation,
        "prometheus.us-east-1.example.internal:9090",
        &regional[0].to_string(),
    );
    federation = template(
        &federation,
        "prometheus.eu-west-1.example.internal:9090",
        &regional[1].to_string(),
    );
    federation = template(
        &federation,
        "prometheus.ap-southeast-1.example.internal:9090",
        &free_addr().to_string(),
    );
    let global = start_prometheus(
        &mut processes,
        &prometheus,
        "global",
        &federation,
        dir.path(),
    );

    for addr in regional.iter().chain([&global]) {
        wait_for(
            &format!("prometheus {addr} ready"),
            Duration::from_secs(60),
            || {
                processes.check_running(logs);
                ready(*addr)
            },
        );
    }

    // Every (edge, upstream region) pair arrives at the global Prometheus with its count.
    let requests = wait_for(
        "federated http_requests_total",
        Duration::from_secs(60),
        || {
            processes.check_running(logs);
            let seen = by_edge_and_region(&query(global, "http_requests_total{route=\"api\"}"));
            if seen == expected {
                Ok(seen)
            } else {
                Err(format!("{seen:?}, want {expected:?}"))
            }
        },
    );
    assert_eq!(requests.len(), 4, "{requests:?}");
    let durations = by_edge_and_region(&query(
        global,
        "http_request_duration_seconds_count{route=\"api\"}",
    ));
    assert_eq!(durations, expected, "the histogram keeps both regions too");

    // The regional scrape itself is up, labelled with its edge.
    let up = wait_for("federated up", Duration::from_secs(30), || {
        let up = by_edge_and_region(&query(global, "up{job=\"meridian\"}"));
        if up.len() == 2 {
            Ok(up)
        } else {
            Err(format!("{up:?}"))
        }
    });
    for (edge, _, _) in &edges {
        assert_eq!(
            up.get(&((*edge).to_owned(), String::new())),
            Some(&1.0),
            "{up:?}"
        );
    }

    // The SLO recording rules evaluate on a regional Prometheus.
    let p99 = wait_for("recorded p99", Duration::from_secs(30), || {
        let result = query(
            regional[0],
            "edge_region_region:http_request_duration_seconds:p99_5m",
        );
        if result.len() == 2 {
            Ok(by_edge_and_region(&result))
        } else {
            Err(format!("{result:?}"))
        }
    });
    let regions: Vec<&str> = p99.keys().map(|(_, region)| region.as_str()).collect();
    assert_eq!(regions, ["eu-west-1", "us-east-1"], "{p99:?}");
}
