//! The config file's shape: plain serde structs, defaults named as constants.
//!
//! Written by the YAML loader, read once by the table compiler; nothing on the request path
//! touches these types.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;
pub const DEFAULT_ROUTE_TIMEOUT: &str = "15s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "1s";
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port` to listen on.
    pub bind: String,
    /// How long a client may take to send the request head.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminConfig {
    /// `ip:port` of the admin listener; `null` turns it off.
    #[serde(default = "default_admin_bind")]
    pub bind: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: default_admin_bind(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GeoConfig {
    /// A MaxMind DB (GeoIP2/GeoLite2 City or Country, or compatible). Relative paths are taken
    /// from the working directory.
    #[serde(default)]
    pub database: Option<PathBuf>,
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
    pub load_balancer: LoadBalancer,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Region name → endpoints in that region.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Vec<EndpointConfig>>,
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
    /// Bounds the whole request until the response head arrives.
    #[serde(default = "default_route_timeout")]
    pub timeout: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MatchConfig {
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
    /// Allowed methods; empty allows all.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HeaderMatchConfig {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: the header must be there (the default when no value match is given);
    /// `false`: it must be absent.
    #[serde(default)]
    pub present: Option<bool>,
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
    /// When no region has a healthy endpoint, send to every endpoint of the first region that
    /// has any (`true`) or answer 503 (`false`).
    #[serde(default = "default_true")]
    pub panic_routing: bool,
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
            panic_routing: true,
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
fn default_endpoint_weight() -> u32 {
    DEFAULT_ENDPOINT_WEIGHT
}
fn default_true() -> bool {
    true
}
