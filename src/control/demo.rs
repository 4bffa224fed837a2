//! `meridian demo`: three regional backends in-process, the proxy in front of them, the
//! bundled demo GeoIP data, and curl lines that show the steering.
//!
//! The backends are real HTTP servers on `127.0.0.1:0`; tests use them as upstreams too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, EndpointConfig};
use crate::control::ControlError;
use crate::control::lifecycle::{self as server, RunningServer};
use crate::geo::GeoDb;
use crate::table;

/// The demo config; its endpoints are replaced by the in-process backends.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.yaml");
/// The demo GeoIP database, built from `config/geoip/demo-fixture.yaml`.
pub const DEMO_GEOIP: &[u8] = include_bytes!("../../config/geoip/demo-city.mmdb");
/// The regions the demo runs backends for.
pub const DEMO_REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-1"];

/// How a [`RegionBackend`] behaves and what it saw; shared so tests can steer it live and a
/// restarted backend keeps its counters.
#[derive(Debug, Default)]
pub struct BackendControl {
    /// Requests answered, health checks not included.
    pub hits: AtomicU64,
    /// `GET /healthz` requests answered.
    pub health_hits: AtomicU64,
    /// When non-zero, every request but `/healthz` gets this status.
    pub status: AtomicU16,
    /// When non-zero, `/healthz` answers this status (else 200).
    pub health_status: AtomicU16,
    /// Delay before answering any request but `/healthz`, in milliseconds.
    pub delay_ms: AtomicU64,
}

/// A backend that answers every request with its region name.
///
/// `GET /echo` answers with JSON of the region, method, path and request headers, so tests can
/// see what reached the upstream; `/delay/<ms>` answers after that many milliseconds;
/// `/healthz` is for health checks. [`BackendControl`] makes it fail or slow down.
pub struct RegionBackend {
    pub region: String,
    pub addr: SocketAddr,
    pub control: Arc<BackendControl>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl RegionBackend {
    pub async fn start(region: &str, bind: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(region, bind, Arc::default()).await
    }

    /// Start (or restart, on the same address) with the given control.
    pub async fn start_with(
        region: &str,
        bind: SocketAddr,
        control: Arc<BackendControl>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let region_name = region.to_owned();
        let (stop, conns, shared) = (shutdown.clone(), tracker.clone(), control.clone());
        tracker.spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let region = region_name.clone();
                let stop = stop.clone();
                let control = shared.clone();
                conns.spawn(async move {
                    let service =
                        service_fn(move |req| answer(region.clone(), control.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    // Stopping drops the connection mid-request, like a crashed server.
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(Self {
            region: region.to_owned(),
            addr,
            control,
            shutdown,
            tracker,
        })
    }

    pub fn hits(&self) -> u64 {
        self.control.hits.load(Ordering::Relaxed)
    }

    /// Stop at once: the listener closes and open connections are dropped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

async fn answer(
    region: String,
    control: Arc<BackendControl>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        control.health_hits.fetch_add(1, Ordering::Relaxed);
        let status = match control.health_status.load(Ordering::Relaxed) {
            0 => StatusCode::OK,
            code => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
        *response.status_mut() = status;
        return Ok(response);
    }
    control.hits.fetch_add(1, Ordering::Relaxed);
    let delay = control.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(ms) = req
        .uri()
        .path()
        .strip_prefix("/delay/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let body = if req.uri().path() == "/echo" {
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let received = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::json!({
            "region": region,
            "method": method,
            "path": path,
            "headers": headers,
            "body": String::from_utf8_lossy(&received),
        })
        .to_string()
    } else {
        format!(
            "Hello from {region} ({} {})\n",
            req.method(),
            req.uri().path()
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = HeaderValue::from_str(&region) {
        response.headers_mut().insert("x-backend-region", v);
    }
    let status = control.status.load(Ordering::Relaxed);
    if status != 0 {
        *response.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(response)
}

/// What the demo's weighted line shows: the route's 50/30/20 split draws from a fixed
/// sequence, so any 100 requests in a row land within a request or two of it.
pub const WEIGHTED_SPLIT: &str = "about 50 us-east-1, 30 eu-west-1, 20 ap-southeast-1";

/// The running demo.
pub struct Demo {
    pub server: RunningServer,
    pub backends: Vec<RegionBackend>,
}

/// The demo's routing table, with `endpoints` (region, address) as cluster `demo`.
pub fn demo_table(
    listen: SocketAddr,
    admin: SocketAddr,
    endpoints: &[(String, SocketAddr)],
) -> Result<table::RoutingTable, ControlError> {
    let mut loaded = config::load_str(DEMO_CONFIG, Path::new("config/demo.yaml"))?;
    let config = loaded.config_mut();
    config.listeners.truncate(1);
    if let Some(l) = config.listeners.first_mut() {
        l.bind = listen.to_string();
    }
    config.admin.bind = Some(admin.to_string());
    if let Some(cluster) = config.clusters.get_mut("demo") {
        cluster.endpoints = endpoints
            .iter()
            .map(|(region, addr)| {
                let endpoint = EndpointConfig {
                    address: addr.to_string(),
                    weight: 1,
                };
                (region.clone(), vec![endpoint])
            })
            .collect();
    }
    let db = GeoDb::from_bytes(
        DEMO_GEOIP.to_vec(),
        Path::new("config/geoip/demo-city.mmdb"),
    )?;
    let context = table::CompileContext {
        database: Some(Arc::new(db)),
        ..Default::default()
    };
    Ok(table::compile(&loaded, context)?)
}

/// Start the backends and the proxy.
pub async fn start(listen: SocketAddr, admin: SocketAddr) -> Result<Demo, ControlError> {
    let mut backends = Vec::new();
    for region in DEMO_REGIONS {
        let backend = RegionBackend::start(region, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(ControlError::DemoBackend)?;
        backends.push(backend);
    }
    let endpoints: Vec<(String, SocketAddr)> = backends
        .iter()
        .map(|b| (b.region.clone(), b.addr))
        .collect();
    let table = demo_table(listen, admin, &endpoints)?;
    let server = server::start(table).await?;
    Ok(Demo { server, backends })
}

impl Demo {
    /// What to paste into a terminal, with what each line should show.
    pub fn instructions(&self) -> String {
        let proxy = self
            .server
            .proxy_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let admin = self.server.admin.map(|a| a.to_string()).unwrap_or_default();
        let url = format!("http://{proxy}/");
        let lines = [
            (
                format!("curl -H 'X-Forwarded-For: 192.0.2.10' {url}"),
                "client in the US",
                "us-east-1",
            ),
            (
                format!("curl -H 'X-Forwarded-For: 198.51.100.7' {url}"),
                "client in Germany",
                "eu-west-1",
            ),
            (
                format!("curl -H 'X-Forwarded-For: 203.0.113.9' {url}"),
                "client in Singapore",
                "ap-southeast-1",
            ),
            (
                format!("curl -H 'X-Forwarded-For: 2001:db8:3::1' {url}"),
                "client in France (IPv6)",
                "eu-west-1",
            ),
            (
                format!("curl -H 'X-Forwarded-For: 2001:db8:1::1' {url}"),
                "client in Japan (IPv6)",
                "ap-southeast-1",
            ),
            (
                format!("curl {url}"),
                "unknown location: local_region first",
                "us-east-1",
            ),
            (
                format!("curl -H 'Host: eu.demo.local' -H 'X-Forwarded-For: 203.0.113.9' {url}"),
                "route with only: [eu-west-1], even from Singapore",
                "eu-west-1",
            ),
            (
                format!("curl -s -H 'Host: weighted.demo.local' '{url}?[1-100]' | sort | uniq -c"),
                "route with weights 50/30/20, 100 requests",
                WEIGHTED_SPLIT,
            ),
            (
                format!(
                    "curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'Host: unknown.example' {url}"
                ),
                "no route for this host",
                "404",
            ),
        ];
        let mut out = format!(
            "Meridian demo is running.\n  proxy  http://{proxy}/\n  admin  http://{admin}/\n  backends:"
        );
        for b in &self.backends {
            out.push_str(&format!(" {}={}", b.region, b.addr));
        }
        out.push_str("\n\nTry (each line ends with what it should show):\n");
        for (cmd, what, expect) in lines {
            out.push_str(&format!("  {cmd}    # {what} → {expect}\n"));
        }
        out.push_str("\nPress Ctrl-C to stop.");
        out
    }

    pub async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(5)).await;
        for b in self.backends {
            b.stop().await;
        }
    }
}
