//! Shared test harness: real regional backends and a real Meridian on 127.0.0.1:0, and a
//! client that can connect from any 127.x source address.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meridian::config;
use meridian::demo::RegionBackend;
use meridian::server::{self, RunningServer};
use meridian::table;
use tokio::net::{TcpSocket, TcpStream};

pub mod dns;
pub mod process;

pub const REGIONS_YAML: &str = "regions:
  us-east-1:      { lat: 38.9, lon: -77.4 }
  eu-west-1:      { lat: 53.3, lon: -6.3 }
  ap-southeast-1: { lat: 1.35, lon: 103.8 }
";

/// Where a test config puts the admin API.
#[derive(Clone, Copy)]
pub enum Admin {
    /// On 127.0.0.1:0 (the test reads the bound address from the server).
    Loopback,
    /// None: `admin: { bind: null }`.
    Off,
}

/// The geo section most end-to-end configs use: the demo GeoIP database (`{DB}`, for
/// [`Backends::fill`]), and 127.0.0.1 trusted to name the client in `X-Forwarded-For`.
pub const DEMO_GEO: &str = "geo: { database: \"{DB}\", trusted_proxies: [\"127.0.0.1/32\"] }\n";

/// The config skeleton the end-to-end tests share: `local_region`, one HTTP listener on
/// 127.0.0.1:0, the admin API, the access log off, `geo` (whole YAML lines, or "" for none), the
/// three regions of [`REGIONS_YAML`], then `rest` (clusters, routes and whatever else the test
/// is about). Placeholders in the parts (`{US}`, `{EU}`, `{AP}`, `{DB}`) are left for
/// [`Backends::fill`].
pub fn three_region_config(local_region: &str, admin: Admin, geo: &str, rest: &str) -> String {
    let admin = match admin {
        Admin::Loopback => "\"127.0.0.1:0\"",
        Admin::Off => "null",
    };
    format!(
        "local_region: {local_region}
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: {admin} }}
access_log: {{ enabled: false }}
{geo}{REGIONS_YAML}{rest}"
    )
}

pub fn demo_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/geoip/demo-city.mmdb")
}

/// One backend per region, each answering with its region name.
pub struct Backends {
    pub us: RegionBackend,
    pub eu: RegionBackend,
    pub ap: RegionBackend,
}

impl Backends {
    pub async fn start() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            us: RegionBackend::start("us-east-1", any).await.unwrap(),
            eu: RegionBackend::start("eu-west-1", any).await.unwrap(),
            ap: RegionBackend::start("ap-southeast-1", any).await.unwrap(),
        }
    }

    /// Fill `{US}`, `{EU}`, `{AP}` and `{DB}` in a config template.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{US}", &self.us.addr.to_string())
            .replace("{EU}", &self.eu.addr.to_string())
            .replace("{AP}", &self.ap.addr.to_string())
            .replace("{DB}", &demo_db().display().to_string())
            .replace("{REGIONS}", REGIONS_YAML)
    }

    pub fn hits(&self) -> [u64; 3] {
        [self.us.hits(), self.eu.hits(), self.ap.hits()]
    }
}

/// Compile `yaml` and start Meridian (listener and admin on 127.0.0.1:0).
pub async fn start_proxy(yaml: &str) -> RunningServer {
    let mut loaded = config::load_str(yaml, Path::new("test.yaml")).unwrap();
    quiet(&mut loaded);
    let table = match table::compile(&loaded, table::CompileContext::default()) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    server::start(table).await.unwrap()
}

/// The access log writes to the process's stdout from its own thread, past the test
/// harness's capture: keep it off unless a test asks for it.
pub fn quiet(loaded: &mut config::LoadedConfig) {
    if !loaded.lines.contains_key("access_log") {
        loaded.config_mut().access_log.enabled = false;
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn region(&self) -> &str {
        self.headers
            .get("x-meridian-region")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A keep-alive HTTP/1.1 client connection, optionally from a chosen local address.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(proxy: SocketAddr, from: Option<IpAddr>) -> Self {
        let stream = match from {
            Some(ip) => {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(ip, 0)).unwrap();
                socket.connect(proxy).await.unwrap()
            }
            None => TcpStream::connect(proxy).await.unwrap(),
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    pub async fn request(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.request_with_body(method, host, path, headers, Bytes::new())
            .await
    }

    pub async fn request_with_body(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.request(Method::GET, host, path, headers).await
    }
}

/// One GET on a fresh connection.
pub async fn get(proxy: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    Client::connect(proxy, None)
        .await
        .get(host, path, headers)
        .await
}

/// Send `bytes` on a fresh connection and read until the server closes it (at most 5 s):
/// what arrived, and whether the close came within the 5 s.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await
    .is_ok_and(|read| read.is_ok());
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Every duration field of the config: its YAML path and the smallest value it accepts
/// (`0s` where zero means "none").
pub const DURATION_FIELDS: &[(&str, &str)] = &[
    ("drain_delay", "0s"),
    ("drain_timeout", "0s"),
    ("listeners[0].header_read_timeout", "1ms"),
    ("listeners[0].send_timeout", "1ms"),
    ("dns.min_ttl", "100ms"),
    ("dns.max_ttl", "100ms"),
    ("clusters.api.connect_timeout", "1ms"),
    ("clusters.api.connection_pool.idle_timeout", "1ms"),
    ("clusters.api.outlier_detection.interval", "10ms"),
    ("clusters.api.outlier_detection.base_ejection_time", "1ms"),
    ("clusters.api.outlier_detection.max_ejection_time", "1ms"),
    ("clusters.api.health_check.interval", "10ms"),
    ("clusters.api.health_check.timeout", "1ms"),
    ("clusters.api.health_check.jitter", "0s"),
    ("routes[0].timeout", "1ms"),
    ("routes[0].body_idle_timeout", "1ms"),
    ("routes[0].response_idle_timeout", "1ms"),
    ("routes[0].retries.per_try_timeout", "1ms"),
    ("routes[0].retries.backoff.base", "1ms"),
    ("routes[0].retries.backoff.max", "1ms"),
    ("routes[0].fault.delay.fixed", "1ms"),
    ("routes[0].cors.max_age", "0s"),
];

/// The longest value any duration field accepts.
pub const LONGEST_DURATION: &str = "24h";

/// A config that sets every duration field (each on a line of its own) to `value(path)`, with
/// one cluster of `endpoint` in us-east-1 and the admin listener on `admin`; also the line of
/// each field, by path.
pub fn durations_config(
    endpoint: &str,
    admin: &str,
    value: impl Fn(&str) -> String,
) -> (String, std::collections::HashMap<&'static str, usize>) {
    let template = format!(
        "local_region: us-east-1
drain_delay: <drain_delay>
drain_timeout: <drain_timeout>
listeners:
  - name: http
    bind: \"127.0.0.1:0\"
    header_read_timeout: <listeners[0].header_read_timeout>
    send_timeout: <listeners[0].send_timeout>
admin: {{ bind: {admin} }}
access_log: {{ enabled: false }}
dns:
  min_ttl: <dns.min_ttl>
  max_ttl: <dns.max_ttl>
{REGIONS_YAML}clusters:
  api:
    connect_timeout: <clusters.api.connect_timeout>
    endpoints: {{ us-east-1: [\"{endpoint}\"] }}
    connection_pool:
      idle_timeout: <clusters.api.connection_pool.idle_timeout>
    outlier_detection:
      interval: <clusters.api.outlier_detection.interval>
      base_ejection_time: <clusters.api.outlier_detection.base_ejection_time>
      max_ejection_time: <clusters.api.outlier_detection.max_ejection_time>
    health_check:
      path: /healthz
      interval: <clusters.api.health_check.interval>
      timeout: <clusters.api.health_check.timeout>
      jitter: <clusters.api.health_check.jitter>
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
    timeout: <routes[0].timeout>
    body_idle_timeout: <routes[0].body_idle_timeout>
    response_idle_timeout: <routes[0].response_idle_timeout>
    retries:
      per_try_timeout: <routes[0].retries.per_try_timeout>
      backoff:
        base: <routes[0].retries.backoff.base>
        max: <routes[0].retries.backoff.max>
    fault:
      delay:
        fixed: <routes[0].fault.delay.fixed>
        percent: 0
    cors:
      allow_origins: [{{ exact: \"*\" }}]
      max_age: <routes[0].cors.max_age>
"
    );
    let mut lines = std::collections::HashMap::new();
    let mut text = String::new();
    for (number, line) in template.lines().enumerate() {
        let mut line = line.to_owned();
        for (path, _) in DURATION_FIELDS {
            let marker = format!("<{path}>");
            if line.contains(&marker) {
                line = line.replace(&marker, &value(path));
                lines.insert(*path, number + 1);
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    assert_eq!(lines.len(), DURATION_FIELDS.len(), "every field placed");
    (text, lines)
}
