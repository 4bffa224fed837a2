//! The compiled, immutable routing table and the handle it is published through.
//!
//! The control path builds a whole new table from a config (collecting every problem in one
//! pass) and swaps it in through `ArcSwap`; the request path only ever loads the current one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::uri::Authority;
use ipnet::IpNet;
use regex::Regex;
use tokio::sync::mpsc;

use crate::config::{
    AccessLogFormat, ClusterConfig, Config, ConfigError, HealthCheckConfig, ListenerTlsConfig,
    LoadBalancer, LoadedConfig, OutlierDetectionConfig, Problems, RetryConfig, RetryOnConfig,
    RouteConfig, StatusRangeConfig, SteeringConfig, SteeringMode, YamlPath,
};
use crate::geo::{
    ContinentCode, CountryCode, GeoDb, GeoOverride, GeoPoint, GeoResolver, Location, LocationSource,
};
use crate::metrics::{Metrics, RequestMetrics};
use crate::retry::RetryPolicy;
use crate::routes::{
    ClusterId, HeaderMatch, HeaderValueMatch, HostPattern, PathMatch, Route, RouteMetrics,
    RouteSet, RouteTarget,
};
use crate::steer::{self, Candidate, MAX_REGIONS, RegionHealth, RegionId, RegionOrder, Steering};
use crate::tls::{MinVersion, TlsSpec};
use crate::upstream::ClusterStats;
use crate::upstream::health::HealthPolicy;
use crate::upstream::outlier::{OutlierPolicy, Report, Reporter};
use crate::upstream::pool::{ClusterPool, PoolLimits};

/// Largest endpoint weight accepted.
pub const MAX_ENDPOINT_WEIGHT: u32 = 10_000;

/// The current table, shared by every listener.
pub type TableHandle = Arc<ArcSwap<RoutingTable>>;

#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub coords: (f64, f64),
    /// The region name as a response header value, built once.
    pub header: HeaderValue,
}

/// What the control path learns about an endpoint; kept in an `Arc` so it can outlive a table.
///
/// The request path reads the flags and bumps `in_flight`; the outlier detector and health
/// checker own every other write.
#[derive(Debug)]
pub struct EndpointState {
    pub in_flight: AtomicU32,
    /// The active health checks' verdict (healthy until they say otherwise).
    pub healthy: AtomicBool,
    /// Taken out of rotation by outlier detection.
    pub ejected: AtomicBool,
    /// Times ejected; the next ejection lasts base × (this + 1).
    pub ejections: AtomicU32,
    pub consecutive_5xx: AtomicU32,
    pub consecutive_gateway_errors: AtomicU32,
    /// A failure was seen since the detector's last sweep.
    pub failed_since_sweep: AtomicBool,
    ejected_until: Mutex<Option<tokio::time::Instant>>,
    /// Tries sent to this endpoint, and those that failed (5xx or no response).
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Recent success rate in basis points (0–10000), an exponentially weighted average.
    pub success_rate: AtomicU32,
}

impl Default for EndpointState {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_errors: AtomicU32::new(0),
            failed_since_sweep: AtomicBool::new(false),
            ejected_until: Mutex::new(None),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            success_rate: AtomicU32::new(10_000),
        }
    }
}

impl EndpointState {
    /// Record one try's outcome for the admin API (the outlier detector has its own view).
    pub fn record_outcome(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let sample: u32 = if ok { 10_000 } else { 0 };
        // Weight 1/16: about the last few dozen tries.
        let _ = self
            .success_rate
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(((i64::from(r) * 15 + i64::from(sample)) / 16) as u32)
            });
    }

    pub fn ejected_until(&self) -> Option<tokio::time::Instant> {
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_ejected_until(&self, until: Option<tokio::time::Instant>) {
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// `ip:port` for the upstream URI, built once.
    pub authority: Authority,
    pub weight: u32,
    pub region: RegionId,
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    pub fn new(
        address: SocketAddr,
        weight: u32,
        region: RegionId,
        state: Arc<EndpointState>,
    ) -> Self {
        Self {
            address,
            // An ip:port is always a valid authority.
            authority: Authority::try_from(address.to_string().as_str())
                .unwrap_or_else(|_| Authority::from_static("invalid")),
            weight,
            region,
            state,
        }
    }

    /// Takes traffic: weight above zero, passing health checks, not ejected.
    pub fn is_usable(&self) -> bool {
        self.weight > 0
            && self.state.healthy.load(Ordering::Relaxed)
            && !self.state.ejected.load(Ordering::Relaxed)
    }
}

impl Candidate for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed) && !self.state.ejected.load(Ordering::Relaxed)
    }
    fn in_flight(&self) -> u32 {
        self.state.in_flight.load(Ordering::Relaxed)
    }
}

pub use crate::endpoints::{EndpointSet, EndpointSource, Members};

/// DNS discovery settings, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

pub struct Cluster {
    pub name: String,
    pub load_balancer: LoadBalancer,
    /// Indexed by `RegionId`; empty sets for regions the cluster does not run in.
    pub regions: Vec<Arc<EndpointSet>>,
    /// Fraction (0..1) of healthy share below which the order goes into panic; 0: never.
    pub panic_threshold: f64,
    pub pool: Arc<ClusterPool>,
    pub stats: Arc<ClusterStats>,
    /// Where attempts report their outcome (to the outlier detector).
    pub reporter: Reporter,
    /// The detector's end of the channel, taken by whoever starts the control tasks.
    pub reports: Mutex<Option<mpsc::Receiver<Report>>>,
    pub outlier: Option<OutlierPolicy>,
    pub health_check: Option<Arc<HealthPolicy>>,
    /// Requests (with all their tries) in flight against this cluster, for the retry budget.
    pub active_requests: AtomicUsize,
    /// Retries in flight against this cluster (for the retry budget).
    pub active_retries: AtomicUsize,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("load_balancer", &self.load_balancer)
            .field("regions", &self.regions)
            .finish()
    }
}

impl Cluster {
    /// The endpoint at `address`, in any region.
    pub fn endpoint(&self, address: SocketAddr) -> Option<Arc<Endpoint>> {
        self.regions.iter().find_map(|set| {
            set.members()
                .endpoints
                .iter()
                .find(|e| e.address == address)
                .cloned()
        })
    }

    pub fn health(&self, region: RegionId) -> RegionHealth {
        self.regions
            .get(region as usize)
            .map(|set| set.health())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub name: String,
    pub bind: SocketAddr,
    pub header_read_timeout: Duration,
    /// A write to the client blocked this long ends the connection.
    pub send_timeout: Duration,
    pub proxy_protocol: bool,
    pub tls: Option<TlsSpec>,
    /// Redirect everything to https on this port.
    pub redirect_https: Option<u16>,
}

#[derive(Debug)]
pub struct RoutingTable {
    /// Increases by one with every table published.
    pub generation: u64,
    pub regions: Vec<Region>,
    /// Region coordinates, indexed by `RegionId` (kept apart for the distance ranking loop).
    pub region_coords: steer::RegionPoints,
    pub local_region: RegionId,
    /// `local_region` first, then the others by distance from it: the order for clients whose
    /// location is unknown.
    pub local_order: RegionOrder,
    pub clusters: Vec<Cluster>,
    pub routes: RouteSet,
    pub geo: GeoResolver,
    pub listeners: Vec<ListenerSpec>,
    pub admin_bind: Option<SocketAddr>,
    /// Bearer token the admin API requires, when configured.
    pub admin_token: Option<String>,
    /// Meridian tiers a request may already have passed.
    pub max_region_hops: u32,
    pub dns: DnsSettings,
    /// Certificates of each TLS listener, by listener name.
    pub tls_keys: HashMap<String, Vec<Arc<rustls::sign::CertifiedKey>>>,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Requests Meridian answered before a route matched (label route="").
    pub unrouted_metrics: RequestMetrics,
    pub access_log: AccessLogFormat,
    /// Geo lookup counters by source (override, geoip, unknown), resolved once.
    pub geo_lookups: [prometheus::IntCounter; 3],
    /// The config this table was compiled from (shown by `/config`).
    pub config: Arc<Config>,
}

impl RoutingTable {
    /// Count where a client's location came from.
    pub fn count_geo_lookup(&self, source: LocationSource) {
        let i = match source {
            LocationSource::Override => 0,
            LocationSource::Database => 1,
            LocationSource::Unknown => 2,
        };
        self.geo_lookups[i].inc();
    }

    pub fn region_name(&self, id: RegionId) -> &str {
        self.regions
            .get(id as usize)
            .map(|r| r.name.as_str())
            .unwrap_or("?")
    }
}

/// What a compile may reuse and where it reports.
pub struct CompileContext<'a> {
    pub generation: u64,
    pub metrics: Arc<Metrics>,
    /// The table in service: endpoint state, pools and the GeoIP database carry over from it
    /// for everything that is unchanged.
    pub previous: Option<&'a RoutingTable>,
    /// Used instead of opening `geo.database` (the demo ships its data in the binary).
    pub database: Option<Arc<GeoDb>>,
}

impl Default for CompileContext<'_> {
    fn default() -> Self {
        Self {
            generation: 1,
            metrics: Arc::new(Metrics::new()),
            previous: None,
            database: None,
        }
    }
}

/// Compile a parsed config into a table, reporting every problem at once with its line.
/// This is exactly what `meridian check` runs.
pub fn compile(
    loaded: &LoadedConfig,
    context: CompileContext<'_>,
) -> Result<RoutingTable, ConfigError> {
    let mut c = Compiler {
        tls_keys: HashMap::new(),
        problems: loaded.problems.clone(),
        config: &loaded.config,
        regions: HashMap::new(),
        metrics: context.metrics.clone(),
        previous: context.previous,
    };
    let table = c.table(context.generation, context.database, loaded.config.clone());
    if c.problems.is_empty() {
        // `table` is always Some when nothing was reported.
        if let Some(table) = table {
            return Ok(table);
        }
    }
    Err(ConfigError::invalid(
        &loaded.source,
        c.problems.with_lines(&loaded.lines),
    ))
}

/// Read, parse and compile a config file.
pub fn load(path: &Path, context: CompileContext<'_>) -> Result<RoutingTable, ConfigError> {
    compile(&crate::config::load_file(path)?, context)
}

struct Compiler<'a> {
    /// Certificates loaded per TLS listener.
    tls_keys: HashMap<String, Vec<Arc<rustls::sign::CertifiedKey>>>,
    problems: Problems,
    config: &'a Config,
    regions: HashMap<&'a str, RegionId>,
    metrics: Arc<Metrics>,
    previous: Option<&'a RoutingTable>,
}

/// Metric label values shared by every route's handles: made once per compile, not per route.
struct MetricLabels {
    /// Cluster names by `ClusterId`.
    clusters: Vec<Arc<str>>,
    /// Region names by `RegionId`.
    regions: Vec<Arc<str>>,
    /// The empty label (no cluster or no region chosen).
    none: Arc<str>,
}

impl MetricLabels {
    fn new(config: &Config, ids: &HashMap<&str, ClusterId>) -> Self {
        let none: Arc<str> = Arc::from("");
        let mut clusters = vec![none.clone(); ids.len()];
        for (name, id) in ids {
            if let Some(slot) = clusters.get_mut(*id) {
                *slot = Arc::from(*name);
            }
        }
        Self {
            clusters,
            regions: config
                .regions
                .keys()
                .map(|r| Arc::from(r.as_str()))
                .collect(),
            none,
        }
    }
}

fn root() -> YamlPath {
    YamlPath::root()
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<'a> Compiler<'a> {
    fn table(
        &mut self,
        generation: u64,
        database: Option<Arc<GeoDb>>,
        config: Arc<Config>,
    ) -> Option<RoutingTable> {
        let regions = self.regions();
        let local_region = self.local_region();
        let listeners = self.listeners();
        let (admin_bind, admin_token) = self.admin();
        let geo = self.geo(database);
        let (clusters, cluster_ids) = self.clusters(regions.len());
        let routes = self.routes(&cluster_ids);
        let dns = self.dns();
        let drain_delay = self.drain_duration("drain_delay", &self.config.drain_delay.clone());
        let drain_timeout =
            self.drain_duration("drain_timeout", &self.config.drain_timeout.clone());
        if !self.problems.is_empty() {
            return None;
        }
        let coords: Vec<(f64, f64)> = regions.iter().map(|r| r.coords).collect();
        let region_coords = steer::RegionPoints::new(&coords);
        let local_region = local_region?;
        let mut local_order = RegionOrder::from_slice(&[local_region]);
        if let Some(home) = region_coords.coords(local_region) {
            steer::extend_by_distance(&mut local_order, &region_coords, &home);
        }
        Some(RoutingTable {
            generation,
            regions,
            region_coords,
            local_region,
            local_order,
            clusters,
            routes,
            geo,
            listeners,
            admin_bind,
            admin_token,
            max_region_hops: self.config.max_region_hops,
            dns,
            tls_keys: std::mem::take(&mut self.tls_keys),
            drain_delay,
            drain_timeout,
            unrouted_metrics: RequestMetrics::new(&self.metrics, "", "", ""),
            metrics: self.metrics.clone(),
            access_log: self.config.access_log.format(),
            geo_lookups: ["override", "geoip", "unknown"]
                .map(|source| self.metrics.geo_lookups.with_label_values(&[source])),
            config,
        })
    }

    fn duration(&mut self, at: YamlPath, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.problems.at(at, "must be longer than zero");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problems.at(
                    at,
                    format!("`{text}` is not a duration ({e}); write e.g. 500ms, 3s, 1m"),
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, at: YamlPath, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problems.at(at, format!("`{text}` is not an ip:port address (e.g. 10.0.1.10:8000 or [2001:db8::1]:8000)"));
                None
            }
        }
    }

    /// `ip:port`, or `name:port` for DNS discovery.
    fn endpoint_source(&mut self, at: YamlPath, text: &str, weight: u32) -> Option<EndpointSource> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Some(EndpointSource::Fixed { address, weight });
        }
        let parsed = text
            .rsplit_once(':')
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
            .filter(|(name, port)| *port > 0 && is_dns_name(name));
        match parsed {
            Some((name, port)) => Some(EndpointSource::Dns {
                name: name.trim_end_matches('.').to_ascii_lowercase(),
                port,
                weight,
            }),
            None => {
                self.problems.at(
                    at,
                    format!(
                        "`{text}` is neither ip:port nor name:port (e.g. 10.0.1.10:8000, [2001:db8::1]:8000 or api.eu-west-1.svc.cluster.local:8000)"
                    ),
                );
                None
            }
        }
    }

    /// A drain duration; zero is allowed (no delay).
    fn drain_duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.problems
                    .at(root().key(key), format!("`{text}` is not a duration ({e})"));
                Duration::ZERO
            }
        }
    }

    fn dns(&mut self) -> DnsSettings {
        let at = root().key("dns");
        let d = &self.config.dns;
        let mut nameservers = Vec::new();
        for (i, ns) in d.nameservers.iter().enumerate() {
            let parsed = ns.parse::<SocketAddr>().ok().or_else(|| {
                ns.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(addr) => nameservers.push(addr),
                None => self.problems.at(
                    at.key("nameservers").index(i),
                    format!("`{ns}` is not ip or ip:port"),
                ),
            }
        }
        let min_ttl = self
            .duration(at.key("min_ttl"), &d.min_ttl)
            .unwrap_or(Duration::from_secs(5));
        let max_ttl = self
            .duration(at.key("max_ttl"), &d.max_ttl)
            .unwrap_or(Duration::from_secs(300));
        if min_ttl > max_ttl {
            self.problems
                .at(at.key("min_ttl"), "min_ttl is longer than max_ttl");
        }
        DnsSettings {
            nameservers,
            min_ttl,
            max_ttl,
        }
    }

    fn region_ref(&mut self, at: YamlPath, name: &str) -> Option<RegionId> {
        let found = self.regions.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = self.config.regions.keys().map(String::as_str).collect();
            self.problems.at(
                at,
                format!("unknown region `{name}`; regions are: {}", known.join(", ")),
            );
        }
        found
    }

    fn region_list(&mut self, at: YamlPath, names: &[String]) -> RegionOrder {
        let mut order = RegionOrder::default();
        for (i, name) in names.iter().enumerate() {
            if let Some(id) = self.region_ref(at.index(i), name) {
                order.push(id);
            }
        }
        order
    }

    fn regions(&mut self) -> Vec<Region> {
        let at = root().key("regions");
        if self.config.regions.is_empty() {
            self.problems.at(
                at.clone(),
                "at least one region is required (name → { lat, lon })",
            );
        }
        if self.config.regions.len() > MAX_REGIONS {
            self.problems.at(
                at.clone(),
                format!("at most {MAX_REGIONS} regions are supported"),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, (name, region)) in self.config.regions.iter().enumerate() {
            let here = at.key(name.clone());
            if !is_valid_name(name) {
                self.problems.at(
                    here.clone(),
                    format!("region name `{name}` may only use letters, digits, '-', '_' and '.'"),
                );
            }
            if !(-90.0..=90.0).contains(&region.lat) {
                self.problems.at(
                    here.key("lat"),
                    format!("latitude {} is outside -90..90", region.lat),
                );
            }
            if !(-180.0..=180.0).contains(&region.lon) {
                self.problems.at(
                    here.key("lon"),
                    format!("longitude {} is outside -180..180", region.lon),
                );
            }
            self.regions.insert(name.as_str(), i as RegionId);
            out.push(Region {
                name: name.clone(),
                coords: (region.lat, region.lon),
                header: HeaderValue::from_str(name).unwrap_or(HeaderValue::from_static("invalid")),
            });
        }
        out
    }

    fn local_region(&mut self) -> Option<RegionId> {
        match &self.config.local_region {
            Some(name) => self.region_ref(root().key("local_region"), name),
            None => {
                self.problems.at(
                    root(),
                    "local_region is required: the region this instance runs in, used first for clients whose location is unknown",
                );
                None
            }
        }
    }

    fn listeners(&mut self) -> Vec<ListenerSpec> {
        let at = root().key("listeners");
        if self.config.listeners.is_empty() {
            self.problems.at(
                at.clone(),
                "at least one listener is required, e.g. [{ name: http, bind: \"0.0.0.0:8080\" }]",
            );
        }
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in self.config.listeners.iter().enumerate() {
            let here = at.index(i);
            if !is_valid_name(&l.name) {
                self.problems.at(
                    here.key("name"),
                    format!(
                        "listener name `{}` may only use letters, digits, '-', '_' and '.'",
                        l.name
                    ),
                );
            }
            if !names.insert(l.name.as_str()) {
                self.problems.at(
                    here.key("name"),
                    format!("listener name `{}` is used twice", l.name),
                );
            }
            let bind = self.socket_addr(here.key("bind"), &l.bind);
            if let Some(b) = bind
                && b.port() != 0
                && !binds.insert(b)
            {
                self.problems.at(
                    here.key("bind"),
                    format!("{b} is bound by another listener"),
                );
            }
            let timeout = self.duration(here.key("header_read_timeout"), &l.header_read_timeout);
            let send_timeout = self.duration(here.key("send_timeout"), &l.send_timeout);
            if let (Some(bind), Some(header_read_timeout), Some(send_timeout)) =
                (bind, timeout, send_timeout)
            {
                let tls = l
                    .tls
                    .as_ref()
                    .and_then(|t| self.listener_tls(here.key("tls"), &l.name, t));
                if l.redirect_https && l.tls.is_some() {
                    self.problems.at(
                        here.key("redirect_https"),
                        "a TLS listener cannot redirect to https: it is https",
                    );
                }
                out.push(ListenerSpec {
                    name: l.name.clone(),
                    bind,
                    header_read_timeout,
                    send_timeout,
                    proxy_protocol: l.proxy_protocol,
                    tls,
                    redirect_https: l.redirect_https.then(|| l.https_port.unwrap_or(443)),
                });
            }
        }
        out
    }

    /// Load a listener's certificates now, so a broken file fails the config (or the reload).
    fn listener_tls(
        &mut self,
        at: YamlPath,
        listener: &str,
        t: &ListenerTlsConfig,
    ) -> Option<TlsSpec> {
        if t.certificates.is_empty() {
            self.problems.at(
                at.key("certificates"),
                "list at least one { cert, key } pair",
            );
            return None;
        }
        let min_version = match t.min_version.as_deref() {
            None | Some("1.2") => MinVersion::Tls12,
            Some("1.3") => MinVersion::Tls13,
            Some(other) => {
                self.problems.at(
                    at.key("min_version"),
                    format!("`{other}` is not \"1.2\" or \"1.3\""),
                );
                MinVersion::Tls12
            }
        };
        let mut keys = Vec::new();
        for (i, c) in t.certificates.iter().enumerate() {
            match crate::tls::load_pair(&c.cert, &c.key) {
                Ok(key) => keys.push(key),
                Err(e) => self.problems.at(at.key("certificates").index(i), e),
            }
        }
        self.tls_keys.insert(listener.to_owned(), keys);
        Some(TlsSpec {
            certificates: t
                .certificates
                .iter()
                .map(|c| (c.cert.clone(), c.key.clone()))
                .collect(),
            min_version,
        })
    }

    fn admin(&mut self) -> (Option<SocketAddr>, Option<String>) {
        let at = root().key("admin");
        let token = match &self.config.admin.token_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
                Ok(_) => {
                    self.problems
                        .at(at.key("token_file"), format!("{} is empty", path.display()));
                    None
                }
                Err(e) => {
                    self.problems.at(
                        at.key("token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            },
            None => None,
        };
        let Some(bind) = self.config.admin.bind.as_deref() else {
            return (None, token);
        };
        let addr = self.socket_addr(at.key("bind"), bind);
        if let Some(a) = addr
            && !a.ip().is_loopback()
            && self.config.admin.token_file.is_none()
        {
            self.problems.at(
                at.key("bind"),
                format!("{a} is reachable from other hosts: set admin.token_file to a file holding a bearer token"),
            );
        }
        (addr, token)
    }

    fn geo(&mut self, database: Option<Arc<GeoDb>>) -> GeoResolver {
        let at = root().key("geo");
        let mut trusted = Vec::new();
        for (i, t) in self.config.geo.trusted_proxies.iter().enumerate() {
            match parse_net(t) {
                Some(net) => trusted.push(net),
                None => self.problems.at(
                    at.key("trusted_proxies").index(i),
                    format!("`{t}` is not a CIDR or IP address"),
                ),
            }
        }
        let mut overrides = Vec::new();
        for (i, o) in self.config.geo.overrides.iter().enumerate() {
            let here = at.key("overrides").index(i);
            let net = parse_net(&o.cidr);
            if net.is_none() {
                self.problems
                    .at(here.key("cidr"), format!("`{}` is not a CIDR", o.cidr));
            }
            let mut location = Location {
                source: LocationSource::Override,
                ..Location::default()
            };
            match (&o.country, &o.region) {
                (Some(country), None) => match CountryCode::parse(country) {
                    Some(code) => {
                        location.country = Some(code);
                        location.continent = code.continent();
                        location.coords = location.continent.map(|c| GeoPoint::new(c.centre()));
                    }
                    None => self.problems.at(
                        here.key("country"),
                        format!("`{country}` is not a two-letter country code"),
                    ),
                },
                (None, Some(region)) => {
                    location.region = self.region_ref(here.key("region"), region)
                }
                _ => self
                    .problems
                    .at(here.clone(), "give exactly one of `country` or `region`"),
            }
            match (o.lat, o.lon) {
                (Some(lat), Some(lon))
                    if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
                {
                    location.coords = Some(GeoPoint::new((lat, lon)));
                }
                (None, None) => {}
                _ => self.problems.at(
                    here.clone(),
                    "lat and lon go together, within -90..90 and -180..180",
                ),
            }
            if let Some(net) = net {
                overrides.push(GeoOverride { net, location });
            }
        }
        let database = match (database, &self.config.geo.database) {
            (Some(db), _) => Some(db),
            (None, Some(path)) => match self.current_database(path) {
                Some(db) => Some(db),
                None => match GeoDb::open(path) {
                    Ok(db) => Some(Arc::new(db)),
                    Err(e) => {
                        self.problems.at(at.key("database"), e.to_string());
                        None
                    }
                },
            },
            (None, None) => None,
        };
        GeoResolver::new(trusted, overrides, database)
    }

    /// The previous table's database, if it was read from this very file.
    fn current_database(&self, path: &Path) -> Option<Arc<GeoDb>> {
        self.previous
            .and_then(|t| t.geo.database.clone())
            .filter(|db| db.is_current(path))
    }

    fn clusters(&mut self, region_count: usize) -> (Vec<Cluster>, HashMap<&'a str, ClusterId>) {
        let at = root().key("clusters");
        let mut out = Vec::new();
        let mut ids = HashMap::new();
        let before: HashMap<&str, &Cluster> = self
            .previous
            .map(|t| t.clusters.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        for (name, cluster) in &self.config.clusters {
            let here = at.key(name.clone());
            if !is_valid_name(name) {
                self.problems.at(
                    here.clone(),
                    format!("cluster name `{name}` may only use letters, digits, '-', '_' and '.'"),
                );
            }
            let connect_timeout = self
                .duration(here.key("connect_timeout"), &cluster.connect_timeout)
                .unwrap_or(Duration::from_secs(1));
            let previous = before.get(name.as_str()).copied();
            let mut sources: Vec<Vec<EndpointSource>> =
                (0..region_count).map(|_| Vec::new()).collect();
            let mut seen = HashSet::new();
            for (region_name, endpoints) in &cluster.endpoints {
                let region_at = here.key("endpoints").key(region_name.clone());
                let Some(region) = self.region_ref(region_at.clone(), region_name) else {
                    continue;
                };
                for (i, e) in endpoints.iter().enumerate() {
                    let ep_at = region_at.index(i);
                    if e.weight > MAX_ENDPOINT_WEIGHT {
                        self.problems.at(
                            ep_at.key("weight"),
                            format!(
                                "weight {} is above the maximum {MAX_ENDPOINT_WEIGHT}",
                                e.weight
                            ),
                        );
                    }
                    let Some(source) = self.endpoint_source(ep_at.clone(), &e.address, e.weight)
                    else {
                        continue;
                    };
                    if !seen.insert(e.address.to_ascii_lowercase()) {
                        self.problems.at(
                            ep_at,
                            format!("{} is listed twice in cluster `{name}`", e.address),
                        );
                        continue;
                    }
                    if let Some(list) = sources.get_mut(region as usize) {
                        list.push(source);
                    }
                }
            }
            let regions: Vec<Arc<EndpointSet>> = sources
                .into_iter()
                .enumerate()
                .map(|(region, sources)| {
                    let before = previous
                        .and_then(|c| c.regions.get(region))
                        .map(|s| s.as_ref());
                    // Health, ejection and load of an endpoint survive a reload.
                    let state_of = |address: SocketAddr| {
                        previous
                            .and_then(|c| c.endpoint(address))
                            .map(|e| e.state.clone())
                    };
                    Arc::new(EndpointSet::new(
                        region as RegionId,
                        sources,
                        before,
                        &state_of,
                    ))
                })
                .collect();
            let pool = self.connection_pool(&here, cluster, connect_timeout, previous);
            let outlier = self.outlier(here.key("outlier_detection"), &cluster.outlier_detection);
            let health_check = cluster
                .health_check
                .as_ref()
                .and_then(|h| self.health_check(here.key("health_check"), h));
            if !(0.0..=100.0).contains(&cluster.panic_threshold) {
                self.problems.at(
                    here.key("panic_threshold"),
                    format!("{} is outside 0..100 (percent)", cluster.panic_threshold),
                );
            }
            let stats = Arc::new(ClusterStats::new(&self.metrics, name));
            let (reporter, reports) = match outlier {
                Some(_) => {
                    let (reporter, reports) = Reporter::channel(stats.clone());
                    (reporter, Some(reports))
                }
                None => (Reporter::disabled(stats.clone()), None),
            };
            ids.insert(name.as_str(), out.len());
            out.push(Cluster {
                name: name.clone(),
                load_balancer: cluster.load_balancer,
                regions,
                panic_threshold: cluster.panic_threshold / 100.0,
                pool,
                stats,
                reporter,
                reports: Mutex::new(reports),
                outlier,
                health_check,
                active_requests: AtomicUsize::new(0),
                active_retries: AtomicUsize::new(0),
            });
        }
        (out, ids)
    }

    fn connection_pool(
        &mut self,
        here: &YamlPath,
        cluster: &ClusterConfig,
        connect_timeout: Duration,
        previous: Option<&Cluster>,
    ) -> Arc<ClusterPool> {
        let c = &cluster.connection_pool;
        let at = here.key("connection_pool");
        for (key, value) in [
            ("max_connections", c.max_connections),
            ("max_pending_requests", c.max_pending_requests),
            ("max_requests", c.max_requests),
        ] {
            if value == 0 && key != "max_pending_requests" {
                self.problems.at(at.key(key), "must be at least 1");
            }
        }
        let idle_timeout = self
            .duration(at.key("idle_timeout"), &c.idle_timeout)
            .unwrap_or(Duration::from_secs(60));
        let limits = PoolLimits {
            max_connections: c.max_connections as usize,
            max_pending_requests: c.max_pending_requests as usize,
            max_requests: c.max_requests as usize,
            max_requests_per_connection: c.max_requests_per_connection,
            idle_timeout,
            connect_timeout,
            max_idle_per_endpoint: c.max_idle_per_endpoint as usize,
        };
        let tls_spec = cluster.tls.as_ref().map(|t| crate::tls::UpstreamTlsSpec {
            sni: t.sni.clone(),
            ca_file: t.ca_file.clone(),
        });
        // Unchanged limits and TLS keep the pool, and with it its open connections and counts.
        if let Some(p) = previous
            && *p.pool.limits() == limits
            && p.pool.tls.as_ref().map(|t| &t.spec) == tls_spec.as_ref()
        {
            return p.pool.clone();
        }
        let tls = match tls_spec.map(crate::tls::UpstreamTls::new) {
            Some(Ok(tls)) => Some(Arc::new(tls)),
            Some(Err(e)) => {
                self.problems.at(here.key("tls"), e);
                None
            }
            None => None,
        };
        ClusterPool::with_tls(limits, tls)
    }

    fn outlier(&mut self, at: YamlPath, o: &OutlierDetectionConfig) -> Option<OutlierPolicy> {
        for (key, value) in [
            ("max_ejection_percent", o.max_ejection_percent),
            ("min_health_percent", o.min_health_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                self.problems
                    .at(at.key(key), format!("{value} is outside 0..100 (percent)"));
            }
        }
        let interval = self.duration(at.key("interval"), &o.interval);
        let base = self.duration(at.key("base_ejection_time"), &o.base_ejection_time);
        let max = self.duration(at.key("max_ejection_time"), &o.max_ejection_time);
        if o.enabled && o.consecutive_5xx == 0 && o.consecutive_gateway_errors == 0 {
            self.problems.at(
                at.clone(),
                "set consecutive_5xx or consecutive_gateway_errors above 0, or enabled: false",
            );
        }
        let (interval, base_ejection_time, max_ejection_time) = (interval?, base?, max?);
        o.enabled.then_some(OutlierPolicy {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway_errors: o.consecutive_gateway_errors,
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: o.max_ejection_percent,
            min_health_percent: o.min_health_percent,
        })
    }

    fn health_check(&mut self, at: YamlPath, h: &HealthCheckConfig) -> Option<Arc<HealthPolicy>> {
        if !h.path.starts_with('/') {
            self.problems
                .at(at.key("path"), format!("`{}` must start with '/'", h.path));
        }
        for (key, value) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            if value == 0 {
                self.problems.at(at.key(key), "must be at least 1");
            }
        }
        let mut expected = Vec::new();
        for (i, range) in h.expected_statuses.iter().enumerate() {
            match parse_status_range(range) {
                Some(r) => expected.push(r),
                None => self.problems.at(
                    at.key("expected_statuses").index(i),
                    "write a status (200) or a range (\"200-399\") within 100..599",
                ),
            }
        }
        let interval = self.duration(at.key("interval"), &h.interval);
        let timeout = self.duration(at.key("timeout"), &h.timeout);
        let jitter = match &h.jitter {
            Some(j) => self.duration(at.key("jitter"), j),
            None => Some(Duration::ZERO),
        };
        Some(Arc::new(HealthPolicy {
            path: h.path.clone(),
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            expected_statuses: expected,
            jitter: jitter?,
            host: h.host.clone(),
        }))
    }

    fn retries(&mut self, at: YamlPath, r: &RetryConfig) -> RetryPolicy {
        let mut policy = RetryPolicy::none();
        policy.attempts = r.attempts;
        policy.retry_non_idempotent = r.retry_non_idempotent;
        if r.attempts > 10 {
            self.problems.at(
                at.key("attempts"),
                format!("{} retries is more than the maximum of 10", r.attempts),
            );
        }
        policy.per_try_timeout = r
            .per_try_timeout
            .as_ref()
            .and_then(|t| self.duration(at.key("per_try_timeout"), t));
        for (i, condition) in r.retry_on.iter().enumerate() {
            match condition {
                RetryOnConfig::Code(code) if (100..=599).contains(code) => policy.on_statuses.push(*code),
                RetryOnConfig::Condition(name) if policy.enable(name) => {}
                RetryOnConfig::Condition(name) if name.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)) => {
                    policy.on_statuses.push(name.parse().unwrap_or(503));
                }
                other => self.problems.at(
                    at.key("retry_on").index(i),
                    format!(
                        "unknown retry condition {other:?}; use 5xx, gateway-error, connect-failure, reset, \
                         refused-stream, retriable-4xx or a status code"
                    ),
                ),
            }
        }
        if let Some(base) = self.duration(at.key("backoff").key("base"), &r.backoff.base) {
            policy.backoff_base = base;
        }
        if let Some(max) = self.duration(at.key("backoff").key("max"), &r.backoff.max) {
            policy.backoff_max = max;
        }
        if !(0.0..=100.0).contains(&r.budget.percent) {
            self.problems.at(
                at.key("budget").key("percent"),
                format!("{} is outside 0..100", r.budget.percent),
            );
        }
        policy.budget_percent = r.budget.percent;
        policy.budget_min_concurrency = r.budget.min_concurrency;
        policy
    }

    fn routes(&mut self, clusters: &HashMap<&'a str, ClusterId>) -> RouteSet {
        let at = root().key("routes");
        if self.config.routes.is_empty() {
            self.problems
                .at(at.clone(), "at least one route is required");
        }
        let mut names = HashSet::with_capacity(self.config.routes.len());
        let mut routes = Vec::with_capacity(self.config.routes.len());
        let mut hosts = Vec::with_capacity(self.config.routes.len());
        let labels = MetricLabels::new(self.config, clusters);
        for (i, r) in self.config.routes.iter().enumerate() {
            let here = at.index(i);
            if r.name.is_empty() {
                self.problems.at(
                    here.key("name"),
                    "a route needs a name (it labels metrics and logs)",
                );
            } else if !names.insert(r.name.as_str()) {
                self.problems.at(
                    here.key("name"),
                    format!("route name `{}` is used twice", r.name),
                );
            }
            let host_patterns = self.hosts(here.key("hosts"), &r.hosts);
            let path = self.path_match(&here, r);
            let headers = self.header_matches(&here, r);
            let methods = self.methods(&here, r);
            let target = self.target(&here, r, clusters);
            let steering = self.steering(here.key("steering"), &r.steering);
            let timeout = self.duration(here.key("timeout"), &r.timeout);
            let retries = self.retries(here.key("retries"), &r.retries);
            let body_idle_timeout = self
                .duration(here.key("body_idle_timeout"), &r.body_idle_timeout)
                .unwrap_or(Duration::from_secs(30));
            let response_idle_timeout = self
                .duration(here.key("response_idle_timeout"), &r.response_idle_timeout)
                .unwrap_or(Duration::from_secs(60));
            if let (Some(path), Some(target), Some(timeout)) = (path, target, timeout) {
                let metrics = self.route_metrics(&r.name, &target, &labels);
                routes.push(Route {
                    metrics,
                    name: r.name.clone(),
                    path,
                    headers,
                    methods,
                    target,
                    steering,
                    timeout,
                    retries,
                    max_replay_body: r.max_replay_body,
                    max_body: r.max_body,
                    body_idle_timeout,
                    response_idle_timeout,
                    requests: Default::default(),
                });
                hosts.push(host_patterns);
            }
        }
        RouteSet::new(routes, hosts)
    }

    /// Request metric handles for every cluster and region this route can send to.
    fn route_metrics(
        &self,
        route: &str,
        target: &RouteTarget,
        labels: &MetricLabels,
    ) -> RouteMetrics {
        let ids: Vec<ClusterId> = match target {
            RouteTarget::Cluster(id) => vec![*id],
            RouteTarget::Weighted { clusters, .. } => clusters.iter().map(|(id, _)| *id).collect(),
        };
        let route: Arc<str> = route.into();
        let label = |id: ClusterId| labels.clusters.get(id).unwrap_or(&labels.none).clone();
        let per_cluster = ids
            .into_iter()
            .map(|id| {
                let per_region = labels
                    .regions
                    .iter()
                    .map(|region| {
                        RequestMetrics::new(&self.metrics, route.clone(), label(id), region.clone())
                    })
                    .collect();
                (
                    id,
                    per_region,
                    RequestMetrics::new(
                        &self.metrics,
                        route.clone(),
                        label(id),
                        labels.none.clone(),
                    ),
                )
            })
            .collect();
        RouteMetrics {
            per_cluster,
            no_cluster: RequestMetrics::new(
                &self.metrics,
                route,
                labels.none.clone(),
                labels.none.clone(),
            ),
        }
    }

    fn hosts(&mut self, at: YamlPath, hosts: &[String]) -> Vec<HostPattern> {
        if hosts.is_empty() {
            self.problems
                .at(at.clone(), "list at least one host (`*` matches any host)");
        }
        let mut out = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let body = h.strip_prefix("*.").unwrap_or(h);
            let ok = h == "*"
                || (!body.is_empty()
                    && body.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                    }));
            if ok {
                out.push(HostPattern::parse(h));
            } else {
                self.problems.at(
                    at.index(i),
                    format!(
                        "`{h}` is not a host name; use `api.example.com`, `*.example.com` or `*`"
                    ),
                );
            }
        }
        out
    }

    fn regex(&mut self, at: YamlPath, text: &str) -> Option<Regex> {
        match Regex::new(text) {
            Ok(re) => Some(re),
            Err(e) => {
                self.problems
                    .at(at, format!("invalid regular expression: {e}"));
                None
            }
        }
    }

    fn path_match(&mut self, here: &YamlPath, r: &RouteConfig) -> Option<PathMatch> {
        let m = &r.matches;
        let at = here.key("match");
        let given = [
            m.path_exact.is_some(),
            m.path_prefix.is_some(),
            m.path_regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            self.problems.at(
                at.clone(),
                "give at most one of path_exact, path_prefix, path_regex",
            );
            return None;
        }
        for (key, value) in [
            ("path_exact", &m.path_exact),
            ("path_prefix", &m.path_prefix),
        ] {
            if let Some(v) = value
                && !v.starts_with('/')
            {
                self.problems
                    .at(at.key(key), format!("`{v}` must start with '/'"));
                return None;
            }
        }
        Some(match (&m.path_exact, &m.path_prefix, &m.path_regex) {
            (Some(p), _, _) => PathMatch::Exact(p.clone()),
            (_, Some(p), _) => PathMatch::Prefix(p.clone()),
            (_, _, Some(re)) => PathMatch::Regex(self.regex(at.key("path_regex"), re)?),
            _ => PathMatch::Any,
        })
    }

    fn header_matches(&mut self, here: &YamlPath, r: &RouteConfig) -> Vec<HeaderMatch> {
        let mut out = Vec::new();
        for (i, h) in r.matches.headers.iter().enumerate() {
            let at = here.key("match").key("headers").index(i);
            let Ok(name) = http::HeaderName::from_bytes(h.name.as_bytes()) else {
                self.problems.at(
                    at.key("name"),
                    format!("`{}` is not a valid header name", h.name),
                );
                continue;
            };
            let value = match (&h.exact, &h.prefix, &h.regex, h.present) {
                (Some(v), None, None, None) => HeaderValueMatch::Exact(v.clone()),
                (None, Some(v), None, None) => HeaderValueMatch::Prefix(v.clone()),
                (None, None, Some(re), None) => match self.regex(at.key("regex"), re) {
                    Some(re) => HeaderValueMatch::Regex(re),
                    None => continue,
                },
                (None, None, None, Some(false)) => HeaderValueMatch::Absent,
                (None, None, None, _) => HeaderValueMatch::Present,
                _ => {
                    self.problems
                        .at(at, "give at most one of exact, prefix, regex, present");
                    continue;
                }
            };
            out.push(HeaderMatch { name, value });
        }
        out
    }

    fn methods(&mut self, here: &YamlPath, r: &RouteConfig) -> Vec<http::Method> {
        let mut out = Vec::new();
        for (i, m) in r.matches.methods.iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => out.push(method),
                Err(_) => self.problems.at(
                    here.key("match").key("methods").index(i),
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        out
    }

    fn cluster_ref(
        &mut self,
        at: YamlPath,
        name: &str,
        clusters: &HashMap<&'a str, ClusterId>,
    ) -> Option<ClusterId> {
        let found = clusters.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = self.config.clusters.keys().map(String::as_str).collect();
            self.problems.at(
                at,
                format!(
                    "unknown cluster `{name}`; clusters are: {}",
                    known.join(", ")
                ),
            );
        }
        found
    }

    fn target(
        &mut self,
        here: &YamlPath,
        r: &RouteConfig,
        clusters: &HashMap<&'a str, ClusterId>,
    ) -> Option<RouteTarget> {
        match (&r.cluster, r.clusters.is_empty()) {
            (Some(name), true) => Some(RouteTarget::Cluster(self.cluster_ref(
                here.key("cluster"),
                name,
                clusters,
            )?)),
            (None, false) => {
                let mut out = Vec::new();
                let mut total = 0u64;
                for (i, wc) in r.clusters.iter().enumerate() {
                    let at = here.key("clusters").index(i);
                    if let Some(id) = self.cluster_ref(at.key("name"), &wc.name, clusters) {
                        out.push((id, wc.weight));
                        total += u64::from(wc.weight);
                    }
                }
                if total == 0 {
                    self.problems.at(
                        here.key("clusters"),
                        "cluster weights must add up to more than zero",
                    );
                    return None;
                }
                Some(RouteTarget::Weighted {
                    clusters: out,
                    total,
                })
            }
            _ => {
                self.problems.at(
                    here.clone(),
                    "give exactly one of `cluster` or `clusters` (a weighted list)",
                );
                None
            }
        }
    }

    fn steering(&mut self, at: YamlPath, s: &SteeringConfig) -> Steering {
        if !(s.overprovisioning >= 1.0 && s.overprovisioning <= 10.0) {
            self.problems.at(
                at.key("overprovisioning"),
                format!("{} is outside 1.0..10.0", s.overprovisioning),
            );
        }
        let mut countries = foldhash::HashMap::default();
        for (code, regions) in &s.countries {
            let here = at.key("countries").key(code.clone());
            match CountryCode::parse(code) {
                Some(c) => {
                    countries.insert(c, self.region_list(here, regions));
                }
                None => self
                    .problems
                    .at(here, format!("`{code}` is not a two-letter country code")),
            }
        }
        let mut continents = foldhash::HashMap::default();
        for (code, regions) in &s.continents {
            let here = at.key("continents").key(code.clone());
            match ContinentCode::parse(code) {
                Some(c) => {
                    continents.insert(c, self.region_list(here, regions));
                }
                None => self.problems.at(
                    here,
                    format!("`{code}` is not a continent code (AF AN AS EU NA OC SA)"),
                ),
            }
        }
        let only = (!s.only.is_empty()).then(|| {
            let order = self.region_list(at.key("only"), &s.only);
            order
                .as_slice()
                .iter()
                .fold(0u64, |mask, id| mask | (1u64 << id))
        });
        let mut weights = Vec::new();
        for (name, weight) in &s.weights {
            if let Some(id) = self.region_ref(at.key("weights").key(name.clone()), name) {
                weights.push((id, *weight));
            }
        }
        match s.mode {
            SteeringMode::Weighted if weights.iter().all(|(_, w)| *w == 0) => {
                self.problems.at(at.key("weights"), "mode weighted needs weights, e.g. {us-east-1: 50, eu-west-1: 30, ap-southeast-1: 20}");
            }
            SteeringMode::Weighted => {}
            _ if !s.weights.is_empty() => {
                self.problems.at(
                    at.key("weights"),
                    "weights only apply with `mode: weighted`",
                );
            }
            _ => {}
        }
        if s.mode != SteeringMode::Failover && !s.order.is_empty() {
            self.problems
                .at(at.key("order"), "order only applies with `mode: failover`");
        }
        let fixed_order =
            (!s.order.is_empty()).then(|| self.region_list(at.key("order"), &s.order));
        Steering {
            mode: s.mode,
            overprovisioning: s.overprovisioning,
            countries,
            continents,
            only,
            weights,
            fixed_order,
        }
    }
}

/// A DNS host name: dot-separated labels of letters, digits and '-', not all digits.
fn is_dns_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `204` or `"200-399"` as an inclusive range.
fn parse_status_range(range: &StatusRangeConfig) -> Option<(u16, u16)> {
    let (lo, hi) = match range {
        StatusRangeConfig::Code(c) => (*c, *c),
        StatusRangeConfig::Text(t) => match t.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let c = t.trim().parse().ok()?;
                (c, c)
            }
        },
    };
    (100 <= lo && lo <= hi && hi <= 599).then_some((lo, hi))
}

/// A CIDR, or a bare address meaning just that address.
fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// Region names of an order, for messages: `eu-west-1, us-east-1`.
pub fn region_names(table: &RoutingTable, order: &RegionOrder) -> String {
    let names: Vec<&str> = order
        .as_slice()
        .iter()
        .map(|id| table.region_name(*id))
        .collect();
    names.join(", ")
}
