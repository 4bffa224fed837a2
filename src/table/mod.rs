//! The compiled, immutable routing table and the handle it is published through.
//!
//! The control path builds a whole new table from a config (collecting every problem in one
//! pass) and swaps it in through `ArcSwap`; the request path only ever loads the current one.
//!
//! Layer: uses `upstream` (the runtime state a table hands on across reloads: endpoint state,
//! pools, outlier reporters), `steer`, `telemetry`, `geo`, `tls`, `http1` and `config`.
//! Read by `route`, `proxy`, `edge` and `control`; built by `compile`, which only `control`
//! (and `meridian check`) calls.

pub mod compile;
pub mod geodns;
pub mod mtls;
pub mod policies;
pub mod retry;
pub mod routes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::mpsc;

use crate::config::{AccessLogFormat, Config, LoadBalancer};
use crate::geo::{GeoResolver, LocationSource};
use crate::steer::{self, RegionHealth, RegionId, RegionOrder};
use crate::table::routes::RouteSet;
use crate::telemetry::metrics::{Metrics, RequestMetrics};
use crate::tls::TlsSpec;
use crate::upstream::ClusterStats;
use crate::upstream::health::HealthPolicy;
use crate::upstream::outlier::{OutlierPolicy, Report, Reporter};
use crate::upstream::pool::ClusterPool;

pub use compile::{CompileContext, compile, load};

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

pub use crate::upstream::endpoints::{
    DnsSettings, Endpoint, EndpointSet, EndpointSource, EndpointState, Members,
};

pub struct Cluster {
    pub name: String,
    /// How endpoints are picked (with `affinity`: for requests without a hash key).
    pub load_balancer: LoadBalancer,
    /// Consistent-hash session affinity; `None`: the pick is `load_balancer` alone.
    pub affinity: Option<Box<policies::affinity::Affinity>>,
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
    /// The table's peer view when `peers` are configured: a region whose peer is down counts
    /// as having no healthy endpoint. `None`: no peers, nothing more to read.
    pub peers: Option<Arc<crate::upstream::peers::PeerView>>,
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

    /// How healthy `region` is for steering. A region whose peer Meridian is down counts as
    /// if all its endpoints were unhealthy (so it drops out, and panic mode may still use it).
    pub fn health(&self, region: RegionId) -> RegionHealth {
        let health = self
            .regions
            .get(region as usize)
            .map(|set| set.health())
            .unwrap_or_default();
        if self.peer_down(region) {
            return RegionHealth {
                healthy_weight: 0,
                ..health
            };
        }
        health
    }

    /// Whether `region` is out of steering because its peer is down.
    pub fn peer_down(&self, region: RegionId) -> bool {
        self.peers.as_ref().is_some_and(|p| !p.is_up(region))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub name: String,
    pub bind: SocketAddr,
    pub header_read_timeout: Duration,
    /// A write to the client blocked this long ends the connection (over HTTP/2, an answer
    /// waiting this long on the client's flow-control window resets its stream).
    pub send_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
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
    /// Other regions' Meridian instances and their probes; `None` when none are configured.
    pub peers: Option<Arc<crate::upstream::peers::Peers>>,
    /// The GeoDNS listener's zones and ingress addresses; `None`: no DNS listener.
    pub geodns: Option<Box<geodns::GeoDns>>,
    /// Certificates of each TLS listener, by listener name.
    pub tls_keys: HashMap<String, Vec<Arc<rustls::sign::CertifiedKey>>>,
    /// Session ticket keys of each TLS listener that issues tickets, by listener name: made
    /// anew by every compile, so a reload rotates them.
    pub tls_tickets: HashMap<String, Arc<dyn rustls::server::ProducesTickets>>,
    /// Mutual TLS files loaded by this compile, swapped in by a reload.
    pub mtls: mtls::MutualTls,
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

    /// Whether `region`'s peer is up (true for regions without a peer): what DNS answers and
    /// anything else outside a cluster ask.
    pub fn peer_up(&self, region: RegionId) -> bool {
        self.peers.as_ref().is_none_or(|p| p.view.is_up(region))
    }

    pub fn region_name(&self, id: RegionId) -> &str {
        self.regions
            .get(id as usize)
            .map(|r| r.name.as_str())
            .unwrap_or("?")
    }
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
