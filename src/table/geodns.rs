//! The compiled GeoDNS section: zones, the names steering answers for, region ingress
//! addresses and the listener's limits.
//!
//! Built by `table::compile::geodns`; read per query by `route::geodns` (which regions) and
//! `dns` (the answer). A table without `geodns` holds `None` and no DNS socket is bound.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{LowerName, Name};

use crate::config::ClientSubnetTrust;
use crate::steer::{RegionId, Steering};
use crate::table::routes::ClusterId;

#[derive(Debug)]
pub struct GeoDns {
    /// Where UDP and TCP are served (the same port for both).
    pub listen: SocketAddr,
    /// Seconds, for A/AAAA answers while the client's first-choice region is up.
    pub ttl: u32,
    /// Seconds, while it is down.
    pub failover_ttl: u32,
    /// Regions per answer, at least 1.
    pub max_answers: usize,
    pub client_subnet: ClientSubnetTrust,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: Duration,
    /// Per-source response rate limit over UDP; `None`: off (no table, no check).
    pub rate_limit: Option<RateLimit>,
    pub zones: Vec<Zone>,
    /// Indexed by `RegionId`: the addresses handed out for each region.
    pub ingress: Vec<Ingress>,
}

/// Response rate limiting, compiled (see `config::RateLimitConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
    pub slip: u32,
}

/// One region's ingress addresses, by family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingress {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Address family of an A (V4) or AAAA (V6) question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Ingress {
    pub fn has(&self, family: Family) -> bool {
        match family {
            Family::V4 => !self.v4.is_empty(),
            Family::V6 => !self.v6.is_empty(),
        }
    }
}

#[derive(Debug)]
pub struct Zone {
    /// The apex as configured (lower case, fully qualified).
    pub apex: Name,
    pub lower: LowerName,
    /// The apex as a metric label: `example.com`.
    pub label: String,
    pub ns: Vec<Name>,
    pub soa: SOA,
    /// TTL of SOA and NS records, and of negative answers (the SOA minimum).
    pub soa_ttl: u32,
    /// Fully qualified lower-case name → what steers it.
    pub names: foldhash::HashMap<LowerName, DnsTarget>,
    /// Names that exist only because a longer configured name sits below them (`b.example.com`
    /// for `a.b.example.com`): they answer NODATA, not NXDOMAIN.
    pub empty_nonterminals: foldhash::HashSet<LowerName>,
}

impl Zone {
    /// Whether `name` is the apex or below it.
    pub fn owns(&self, name: &LowerName) -> bool {
        self.lower.zone_of(name)
    }
}

/// What steers one name: a route's steering over its clusters, or a cluster's with the
/// default (nearest) steering.
#[derive(Debug)]
pub struct DnsTarget {
    /// `route api` or `cluster api`, for explain.
    pub source: String,
    pub steering: Steering,
    /// The clusters whose endpoints say whether a region is up (a split route has several).
    pub clusters: Vec<ClusterId>,
    /// The first cluster's panic threshold, as the HTTP decision uses it.
    pub panic_threshold: f64,
}

/// The zone that owns `name`: the one with the longest apex (zones may nest).
pub fn zone_for<'z>(zones: &'z [Zone], name: &LowerName) -> Option<(usize, &'z Zone)> {
    zones
        .iter()
        .enumerate()
        .filter(|(_, z)| z.owns(name))
        .max_by_key(|(_, z)| z.lower.num_labels())
}

/// Ingress addresses of a region (none for an unknown id).
pub fn ingress_of(geodns: &GeoDns, region: RegionId) -> Option<&Ingress> {
    geodns.ingress.get(region as usize)
}
