//! The `geodns` section: an authoritative DNS listener that answers for configured names with
//! the ingress addresses of the regions steering picks for the client.
//!
//! Plain serde structs read by `table::compile::geodns`, which checks every value; nothing on
//! the query path touches these types. (`dns:` is taken by DNS discovery of endpoints.)

use serde::{Deserialize, Serialize};

use super::exact_vec::exact_vec;

pub const DEFAULT_GEODNS_TTL: &str = "30s";
pub const DEFAULT_GEODNS_FAILOVER_TTL: &str = "5s";
pub const DEFAULT_GEODNS_MAX_ANSWERS: u32 = 1;
pub const DEFAULT_GEODNS_TCP_MAX_CONNECTIONS: u32 = 256;
pub const DEFAULT_GEODNS_TCP_IDLE_TIMEOUT: &str = "10s";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GeoDnsConfig {
    /// `ip:port` served over UDP and TCP (port 53 in production).
    pub listen: String,
    /// TTL of A/AAAA answers while the client's first-choice region is up.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// TTL while the client's first-choice region is down (so it comes back quickly).
    #[serde(default = "default_failover_ttl")]
    pub failover_ttl: String,
    /// How many regions, in steering order, go into one answer.
    #[serde(default = "default_max_answers")]
    pub max_answers: u32,
    /// Whose EDNS Client Subnet option is believed.
    #[serde(default)]
    pub client_subnet: ClientSubnetTrust,
    /// TCP connections open at once; more wait to be accepted.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: u32,
    /// A TCP connection with no complete query for this long is closed.
    #[serde(default = "default_tcp_idle_timeout")]
    pub tcp_idle_timeout: String,
    /// Response rate limiting per source subnet over UDP (BIND's and Knot's RRL); off when
    /// absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default, deserialize_with = "exact_vec")]
    pub zones: Vec<ZoneConfig>,
}

/// Answers per second to one source /24 (IPv6: /56) over UDP. Past it, every `slip`-th
/// query gets an empty truncated answer (a real client retries over TCP, which is never
/// limited) and the others none.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RateLimitConfig {
    pub per_second: u32,
    /// Answers a quiet source may send at once (default: two seconds' worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// 0: never answer a limited query.
    #[serde(default = "default_slip")]
    pub slip: u32,
}

/// Which resolvers' EDNS Client Subnet option locates the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSubnetTrust {
    /// Every resolver's (public resolvers send it on their clients' behalf).
    #[default]
    Any,
    /// Only from resolvers inside `geo.trusted_proxies`.
    Trusted,
    /// Never: the resolver's own address locates the client.
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `example.com` (a trailing dot is allowed).
    pub name: String,
    /// Name servers of the zone (NS records at the apex).
    #[serde(default)]
    pub ns: Vec<String>,
    pub soa: SoaConfig,
    /// Names answered from steering: `www` (relative to the zone) or `@` for the apex.
    #[serde(default, deserialize_with = "exact_vec")]
    pub names: Vec<DnsNameConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SoaConfig {
    /// Primary name server (default: the first of `ns`).
    #[serde(default)]
    pub mname: Option<String>,
    /// The zone contact as a name, e.g. `hostmaster.example.com`.
    pub rname: String,
    #[serde(default = "default_serial")]
    pub serial: u32,
    #[serde(default = "default_refresh")]
    pub refresh: String,
    #[serde(default = "default_retry")]
    pub retry: String,
    #[serde(default = "default_expire")]
    pub expire: String,
    /// How long resolvers may cache a negative answer (NXDOMAIN, NODATA).
    #[serde(default = "default_minimum")]
    pub minimum: String,
}

/// One name and what steers it: a route (its steering and clusters) or a cluster (default
/// nearest steering).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DnsNameConfig {
    pub name: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
}

fn default_ttl() -> String {
    DEFAULT_GEODNS_TTL.to_owned()
}
fn default_failover_ttl() -> String {
    DEFAULT_GEODNS_FAILOVER_TTL.to_owned()
}
fn default_max_answers() -> u32 {
    DEFAULT_GEODNS_MAX_ANSWERS
}
fn default_tcp_max_connections() -> u32 {
    DEFAULT_GEODNS_TCP_MAX_CONNECTIONS
}
fn default_tcp_idle_timeout() -> String {
    DEFAULT_GEODNS_TCP_IDLE_TIMEOUT.to_owned()
}
fn default_slip() -> u32 {
    2
}
fn default_serial() -> u32 {
    1
}
fn default_refresh() -> String {
    "1h".to_owned()
}
fn default_retry() -> String {
    "10m".to_owned()
}
fn default_expire() -> String {
    "7d".to_owned()
}
fn default_minimum() -> String {
    "30s".to_owned()
}
