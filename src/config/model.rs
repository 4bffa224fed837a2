//! The config file's shape: plain serde structs, defaults named as constants.
//!
//! Written by the YAML loader, read once by the table compiler; nothing on the request path
//! touches these types.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::exact_vec::exact_vec;
use super::policies::{
    DirectResponseConfig, HeaderRulesConfig, MatchConfig, MirrorsConfig, RedirectConfig,
    RewriteConfig,
};
use super::retries::RetryConfig;
use super::tls::{ListenerTlsConfig, UpstreamTlsConfig};

pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;
pub const DEFAULT_ROUTE_TIMEOUT: &str = "15s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "1s";
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_SEND_TIMEOUT: &str = "60s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "5m";
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;
pub const DEFAULT_MAX_REGION_HOPS: u32 = 1;
pub const DEFAULT_MAX_REPLAY_BODY: u64 = 64 * 1024;
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    /// The region this instance runs in: clients with no known location are sent here first.
    #[serde(default)]
    pub local_region: Option<String>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub geo: GeoConfig,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionConfig>,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default, deserialize_with = "exact_vec")]
    pub routes: Vec<RouteConfig>,
    /// How many Meridian tiers a request may already have passed (see `x-meridian-visited`).
    #[serde(default = "default_max_region_hops")]
    pub max_region_hops: u32,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    /// Other regions' Meridian instances, probed so a region whose Meridian is down drops out.
    #[serde(default)]
    pub peers: Vec<super::PeerConfig>,
    #[serde(default)]
    pub peer_check: super::PeerCheckConfig,
    /// The authoritative GeoDNS listener; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geodns: Option<Box<super::geodns::GeoDnsConfig>>,
    /// After SIGTERM: how long listeners keep accepting while /readyz already says 503 (set it
    /// to the load balancer's health-check period).
    #[serde(default = "default_drain_delay")]
    pub drain_delay: String,
    /// Then: how long in-flight requests may take to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
}

/// DNS discovery for endpoints written as `name:port`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DnsConfig {
    /// `ip:port` (or `ip`, port 53) of the nameservers; empty: the system's (/etc/resolv.conf).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Names are re-resolved at their record's TTL, clamped to [min_ttl, max_ttl].
    #[serde(default = "DnsConfig::default_min_ttl")]
    pub min_ttl: String,
    #[serde(default = "DnsConfig::default_max_ttl")]
    pub max_ttl: String,
}

impl DnsConfig {
    fn default_min_ttl() -> String {
        "5s".to_owned()
    }
    fn default_max_ttl() -> String {
        "300s".to_owned()
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: Self::default_min_ttl(),
            max_ttl: Self::default_max_ttl(),
        }
    }
}

/// One line per request on standard output.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AccessLogConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub format: AccessLogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            format: AccessLogFormat::Text,
        }
    }
}

impl AccessLogConfig {
    /// The format in effect (`Off` when disabled).
    pub fn format(&self) -> AccessLogFormat {
        if self.enabled {
            self.format
        } else {
            AccessLogFormat::Off
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    #[default]
    Text,
    Json,
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port` to listen on.
    pub bind: String,
    /// How long a client may take to send the request head.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
    /// How long a write to the client may wait for it to read before the connection ends.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: String,
    /// How long a connection may stay open with no request in progress.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Expect a PROXY protocol v1/v2 header first (from a trusted peer) on every connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
    /// Answer every request with a 308 to the same URL over https (a plain listener only).
    #[serde(default)]
    pub redirect_https: bool,
    /// The port the redirect points to (default 443: left out of the URL).
    #[serde(default)]
    pub https_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminConfig {
    /// `ip:port` of the admin listener; `null` turns it off.
    #[serde(default = "default_admin_bind")]
    pub bind: Option<String>,
    /// A file holding the bearer token the admin API requires; mandatory when `bind` is not a
    /// loopback address.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: default_admin_bind(),
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GeoConfig {
    /// A MaxMind DB (GeoIP2/GeoLite2, DB-IP, IPinfo, ip-location-db, ...), or two: IPv4 then
    /// IPv6. Relative paths are taken from the working directory.
    #[serde(default)]
    pub database: Option<crate::config::geo::GeoDatabaseFiles>,
    /// Where the place is in records of a layout Meridian does not recognise.
    #[serde(default)]
    pub fields: Option<crate::config::geo::GeoFieldsConfig>,
    /// Peers whose X-Forwarded-For is believed, as CIDRs.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// CIDRs mapped straight to a country or a region; they win over the database.
    #[serde(default)]
    pub overrides: Vec<GeoOverrideConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GeoOverrideConfig {
    pub cidr: String,
    /// ISO 3166-1 alpha-2 country code.
    #[serde(default)]
    pub country: Option<String>,
    /// A configured region: clients here go to it first.
    #[serde(default)]
    pub region: Option<String>,
    /// Optional coordinates for distance ranking; without them a country override is placed
    /// at its continent's centre.
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegionConfig {
    pub lat: f64,
    pub lon: f64,
    /// Addresses GeoDNS hands out for this region (its load balancer or Meridian ingress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Power of two random choices, least in-flight requests per weight.
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClusterConfig {
    #[serde(default)]
    pub load_balancer: super::policies::affinity::LoadBalancerConfig,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Region name → endpoints in that region.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Vec<EndpointConfig>>,
    /// When the healthy share of the whole region order falls below this percentage, balance
    /// across every endpoint of the first region instead of failing; 0 turns panic off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: f64,
    #[serde(default)]
    pub connection_pool: ConnectionPoolConfig,
    #[serde(default)]
    pub outlier_detection: OutlierDetectionConfig,
    /// Active health checks; none when absent.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Speak TLS to the endpoints (health checks too).
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// `http1` (default), `http2` (TLS, ALPN h2), `h2c` (prior knowledge) or `auto`.
    #[serde(default)]
    pub protocol: super::UpstreamProtocol,
}

/// Circuit breakers and pooling, as Istio's DestinationRule connectionPool. Per cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConnectionPoolConfig {
    #[serde(default = "ConnectionPoolConfig::default_limit")]
    pub max_connections: u32,
    #[serde(default = "ConnectionPoolConfig::default_limit")]
    pub max_pending_requests: u32,
    #[serde(default = "ConnectionPoolConfig::default_limit")]
    pub max_requests: u32,
    /// 0: unlimited.
    #[serde(default)]
    pub max_requests_per_connection: u32,
    #[serde(default = "ConnectionPoolConfig::default_idle_timeout")]
    pub idle_timeout: String,
    /// Idle keep-alive connections kept per endpoint (0: none, every connection closes
    /// after its request).
    #[serde(default = "ConnectionPoolConfig::default_max_idle")]
    pub max_idle_per_endpoint: u32,
}

impl ConnectionPoolConfig {
    pub const DEFAULT_LIMIT: u32 = 1024;
    fn default_limit() -> u32 {
        Self::DEFAULT_LIMIT
    }
    fn default_idle_timeout() -> String {
        "60s".to_owned()
    }
    pub const DEFAULT_MAX_IDLE: u32 = 128;
    fn default_max_idle() -> u32 {
        Self::DEFAULT_MAX_IDLE
    }
}

impl Default for ConnectionPoolConfig {
    fn default() -> Self {
        Self {
            max_connections: Self::DEFAULT_LIMIT,
            max_pending_requests: Self::DEFAULT_LIMIT,
            max_requests: Self::DEFAULT_LIMIT,
            max_requests_per_connection: 0,
            idle_timeout: Self::default_idle_timeout(),
            max_idle_per_endpoint: Self::DEFAULT_MAX_IDLE,
        }
    }
}

/// Passive outlier detection, Istio field meanings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OutlierDetectionConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Consecutive 5xx answers (connect failures, resets and timeouts count as 503).
    #[serde(default = "OutlierDetectionConfig::default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 and local failures; 0: off.
    #[serde(default)]
    pub consecutive_gateway_errors: u32,
    /// How often ejections are reviewed (ejection multipliers decay once per quiet interval).
    #[serde(default = "OutlierDetectionConfig::default_interval")]
    pub interval: String,
    #[serde(default = "OutlierDetectionConfig::default_base_ejection_time")]
    pub base_ejection_time: String,
    #[serde(default = "OutlierDetectionConfig::default_max_ejection_time")]
    pub max_ejection_time: String,
    /// At most this share of a region's endpoints is ejected at once (at least one may be).
    #[serde(default = "OutlierDetectionConfig::default_max_ejection_percent")]
    pub max_ejection_percent: f64,
    /// No ejections in a region whose healthy share is below this percentage.
    #[serde(default)]
    pub min_health_percent: f64,
}

impl OutlierDetectionConfig {
    fn default_consecutive_5xx() -> u32 {
        5
    }
    fn default_interval() -> String {
        "10s".to_owned()
    }
    fn default_base_ejection_time() -> String {
        "30s".to_owned()
    }
    fn default_max_ejection_time() -> String {
        "300s".to_owned()
    }
    fn default_max_ejection_percent() -> f64 {
        10.0
    }
}

impl Default for OutlierDetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_5xx: Self::default_consecutive_5xx(),
            consecutive_gateway_errors: 0,
            interval: Self::default_interval(),
            base_ejection_time: Self::default_base_ejection_time(),
            max_ejection_time: Self::default_max_ejection_time(),
            max_ejection_percent: Self::default_max_ejection_percent(),
            min_health_percent: 0.0,
        }
    }
}

/// Active health checks: an HTTP GET of `path`, or with `grpc` the gRPC health service.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HealthCheckConfig {
    /// Required for HTTP checks; none for gRPC ones.
    #[serde(default)]
    pub path: String,
    /// Check with `grpc.health.v1.Health/Check` instead of an HTTP GET.
    #[serde(default)]
    pub grpc: Option<super::GrpcHealthCheckConfig>,
    #[serde(default = "HealthCheckConfig::default_interval")]
    pub interval: String,
    #[serde(default = "HealthCheckConfig::default_timeout")]
    pub timeout: String,
    #[serde(default = "HealthCheckConfig::default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "HealthCheckConfig::default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass: numbers or ranges like `"200-399"`.
    #[serde(default = "HealthCheckConfig::default_expected_statuses")]
    pub expected_statuses: Vec<StatusRangeConfig>,
    /// Up to this much random delay is added to each interval, so checks spread out.
    #[serde(default)]
    pub jitter: Option<String>,
    /// Host header of the check (default: the endpoint address).
    #[serde(default)]
    pub host: Option<String>,
}

impl HealthCheckConfig {
    fn default_interval() -> String {
        "5s".to_owned()
    }
    fn default_timeout() -> String {
        "1s".to_owned()
    }
    fn default_healthy_threshold() -> u32 {
        2
    }
    fn default_unhealthy_threshold() -> u32 {
        3
    }
    fn default_expected_statuses() -> Vec<StatusRangeConfig> {
        vec![StatusRangeConfig::Text("200-399".to_owned())]
    }
}

/// `204` or `"200-399"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StatusRangeConfig {
    Code(u16),
    Text(String),
}

/// An endpoint: either `"ip:port"` or `{ address: "ip:port", weight: 2 }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointConfig {
    pub address: String,
    pub weight: u32,
}

#[derive(Deserialize)]
struct EndpointFields {
    address: String,
    #[serde(default = "default_endpoint_weight")]
    weight: u32,
}

impl<'de> Deserialize<'de> for EndpointConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = EndpointConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"ip:port\" or { address: \"ip:port\", weight: N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EndpointConfig {
                    address: v.to_owned(),
                    weight: DEFAULT_ENDPOINT_WEIGHT,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let fields =
                    EndpointFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(EndpointConfig {
                    address: fields.address,
                    weight: fields.weight,
                })
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RouteConfig {
    pub name: String,
    /// Host names; `*.example.com` matches any subdomain, `*` any host.
    pub hosts: Vec<String>,
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// The cluster to send to; or use `clusters` for a weighted split.
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub clusters: Vec<WeightedClusterConfig>,
    #[serde(default)]
    pub steering: SteeringConfig,
    /// Bounds the whole request, retries included, until the response head arrives.
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
    #[serde(default)]
    pub retries: RetryConfig,
    /// Request bodies up to this size are buffered so a retry can replay them; larger ones
    /// stream and are not retried once sent.
    #[serde(default = "default_max_replay_body")]
    pub max_replay_body: u64,
    /// Request bodies above this many bytes are refused with 413 (by Content-Length before
    /// anything is sent; a chunked body is cut off when it passes the limit).
    #[serde(default = "default_max_body")]
    pub max_body: u64,
    /// A streamed request body may pause this long between bytes.
    #[serde(default = "default_body_idle_timeout")]
    pub body_idle_timeout: String,
    /// A response body may pause this long between bytes; then the client's connection is
    /// aborted and the upstream connection discarded.
    #[serde(default = "default_response_idle_timeout")]
    pub response_idle_timeout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Box<RewriteConfig>>,
    /// Answered at the edge (no cluster needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Box<RedirectConfig>>,
    /// Answered at the edge (no cluster needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<Box<DirectResponseConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<Box<HeaderRulesConfig>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<Box<HeaderRulesConfig>>,
    /// Route policies (see `config::policies`).
    #[serde(default)]
    pub cors: Option<super::policies::CorsConfig>,
    #[serde(default)]
    pub fault: Option<super::policies::FaultConfig>,
    #[serde(
        default,
        alias = "mirror",
        skip_serializing_if = "MirrorsConfig::is_empty"
    )]
    pub mirrors: super::policies::MirrorsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WeightedClusterConfig {
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SteeringMode {
    /// Nearest region first, spilling by healthy share × overprovisioning.
    #[default]
    Nearest,
    /// A fixed split across regions (`weights`); unhealthy regions drop out.
    Weighted,
    /// All traffic to the first region in the order that has a healthy endpoint.
    Failover,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SteeringConfig {
    #[serde(default)]
    pub mode: SteeringMode,
    #[serde(default = "default_overprovisioning")]
    pub overprovisioning: f64,
    /// Continent code (AF AN AS EU NA OC SA) → region order.
    #[serde(default)]
    pub continents: BTreeMap<String, Vec<String>>,
    /// Country code → region order; wins over `continents`.
    #[serde(default)]
    pub countries: BTreeMap<String, Vec<String>>,
    /// Never send outside these regions (empty: no restriction).
    #[serde(default)]
    pub only: Vec<String>,
    /// For `weighted`: region → share.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// For `failover`: a fixed region order for every client (empty: the client's order).
    #[serde(default)]
    pub order: Vec<String>,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            mode: SteeringMode::default(),
            overprovisioning: DEFAULT_OVERPROVISIONING,
            continents: BTreeMap::new(),
            countries: BTreeMap::new(),
            only: Vec::new(),
            weights: BTreeMap::new(),
            order: Vec::new(),
        }
    }
}

fn default_admin_bind() -> Option<String> {
    Some(DEFAULT_ADMIN_BIND.to_owned())
}
fn default_overprovisioning() -> f64 {
    DEFAULT_OVERPROVISIONING
}
fn default_route_timeout() -> String {
    DEFAULT_ROUTE_TIMEOUT.to_owned()
}
fn default_connect_timeout() -> String {
    DEFAULT_CONNECT_TIMEOUT.to_owned()
}
fn default_header_read_timeout() -> String {
    DEFAULT_HEADER_READ_TIMEOUT.to_owned()
}
fn default_send_timeout() -> String {
    DEFAULT_SEND_TIMEOUT.to_owned()
}
fn default_idle_timeout() -> String {
    DEFAULT_IDLE_TIMEOUT.to_owned()
}
fn default_endpoint_weight() -> u32 {
    DEFAULT_ENDPOINT_WEIGHT
}
fn default_true() -> bool {
    true
}
fn default_panic_threshold() -> f64 {
    DEFAULT_PANIC_THRESHOLD
}
fn default_max_region_hops() -> u32 {
    DEFAULT_MAX_REGION_HOPS
}
fn default_max_replay_body() -> u64 {
    DEFAULT_MAX_REPLAY_BODY
}
fn default_drain_delay() -> String {
    "0s".to_owned()
}
fn default_drain_timeout() -> String {
    "30s".to_owned()
}
fn default_body_idle_timeout() -> String {
    "30s".to_owned()
}
fn default_response_idle_timeout() -> String {
    "60s".to_owned()
}
fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY
}
