//! The per-request routing decision: client address → location → route → region order →
//! region (spill) → endpoint. A pure function of the table and the request head, shared by the
//! proxy and the benchmark.

use std::net::IpAddr;
use std::sync::Arc;

use http::Method;

use crate::geo::{AddrSource, Location};
use crate::http1::headers::{Known, Present};
use crate::http1::raw_fields::HeadersRef;
use crate::steer::{self, NoRegion, RegionId, RegionOrder};
use crate::table::routes::{MatchRequest, Route, RouteTarget};

use super::split;
use crate::table::{Cluster, Endpoint, RoutingTable};

/// What the decision needs from a request.
pub struct RequestFacts<'a> {
    pub peer: IpAddr,
    /// Normalised host (see [`crate::table::routes::normalize_host`]).
    pub host: &'a str,
    pub path: &'a str,
    /// The query string (after `?`), if any.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    /// The client used TLS.
    pub https: bool,
    /// Host or authority as sent (route `port` matches read it).
    pub authority: &'a str,
    pub headers: HeadersRef<'a>,
    /// Which headers Meridian reads are in `headers` ([`Present::ALL`] to look for each).
    pub present: Present,
}

/// Where a request goes and why.
#[derive(Debug)]
pub struct RouteDecision<'t> {
    pub client: IpAddr,
    pub client_source: AddrSource,
    pub location: Location,
    pub route: &'t Route,
    pub cluster: &'t Cluster,
    pub cluster_id: crate::table::routes::ClusterId,
    pub order: RegionOrder,
    pub region: RegionId,
    pub panic: bool,
    pub endpoint: Arc<Endpoint>,
    /// The hash key, when the cluster has session affinity and the request carried one
    /// (boxed: a decision is moved on every request, affinity or not).
    pub affinity: Option<Box<super::affinity::HashedKey>>,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("no route for host `{host}` and path `{path}`")]
    NoRoute { host: String, path: String },
    #[error(
        "route `{route}`: no endpoint of cluster `{cluster}` can take the request in regions [{regions}]: {reason}"
    )]
    NoEndpoint {
        route: String,
        cluster: String,
        regions: String,
        reason: NoRegion,
    },
    #[error(
        "region loop guard: the request already passed Meridian in [{visited}] ({hops} hops, at most {max} allowed) and no other region remains"
    )]
    RegionLoop {
        visited: String,
        hops: usize,
        max: u32,
    },
}

/// Regions named by a trusted `x-meridian-visited` header: each Meridian that forwards a
/// request appends its own `local_region`, and no later Meridian sends it back to one of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Visited {
    /// Entries in the header (known region or not): the tiers passed so far.
    pub hops: usize,
    /// Bit `r` set: region `r` was visited.
    pub mask: u64,
}

impl Visited {
    pub fn from_headers(table: &RoutingTable, headers: HeadersRef<'_>) -> Self {
        let mut visited = Self::default();
        for value in headers.values(crate::http1::headers::Known::Visited) {
            let Some(text) = crate::http1::headers::as_text(value) else {
                continue;
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                visited.hops += 1;
                if let Some(id) = table.regions.iter().position(|r| r.name == name) {
                    visited.mask |= 1u64 << id;
                }
            }
        }
        visited
    }

    pub fn contains(&self, region: RegionId) -> bool {
        self.mask & (1u64 << region) != 0
    }
}

pub fn decide<'t>(
    table: &'t RoutingTable,
    facts: &RequestFacts<'_>,
    rng: &mut fastrand::Rng,
) -> Result<RouteDecision<'t>, DecisionError> {
    let (_, route) = find_route(table, facts)?;
    decide_for_route(table, route, facts, rng, None)
}

/// The first route that matches the request.
pub fn find_route<'t>(
    table: &'t RoutingTable,
    facts: &RequestFacts<'_>,
) -> Result<(usize, &'t Route), DecisionError> {
    table
        .routes
        .find(
            facts.host,
            &MatchRequest {
                path: facts.path,
                query: facts.query,
                method: facts.method,
                headers: facts.headers,
                https: facts.https,
                authority: facts.authority,
            },
        )
        .ok_or_else(|| DecisionError::NoRoute {
            host: facts.host.to_owned(),
            path: facts.path.to_owned(),
        })
}

/// Decide for a matched route. `draw` fixes the region-split draw (for `/explain`, which must
/// not advance the route's sequence); `None` takes the route's next one.
pub fn decide_for_route<'t>(
    table: &'t RoutingTable,
    route: &'t Route,
    facts: &RequestFacts<'_>,
    rng: &mut fastrand::Rng,
    draw: Option<f64>,
) -> Result<RouteDecision<'t>, DecisionError> {
    let forwarded_for = facts
        .present
        .has(Known::ForwardedFor)
        .then(|| {
            facts
                .headers
                .values(crate::http1::headers::Known::ForwardedFor)
        })
        .into_iter()
        .flatten();
    let (client, client_source) = table.geo.client_addr(facts.peer, forwarded_for);
    let location = table.geo.locate(client);
    let mut order = steer::region_order(
        &route.steering,
        &table.region_coords,
        &table.local_order,
        &location,
    );
    // Only a trusted peer's hop header counts: anyone else could use it to block regions.
    let visited = if facts.present.has(Known::Visited) && table.geo.is_trusted(facts.peer) {
        Visited::from_headers(table, facts.headers)
    } else {
        Visited::default()
    };
    if visited.hops > 0 {
        let before = order;
        order = steer::RegionOrder::default();
        for id in before
            .as_slice()
            .iter()
            .filter(|id| !visited.contains(**id))
        {
            order.push(*id);
        }
        if visited.hops > table.max_region_hops as usize || (order.is_empty() && !before.is_empty())
        {
            let names: Vec<&str> = table
                .regions
                .iter()
                .enumerate()
                .filter(|(i, _)| visited.contains(*i as RegionId))
                .map(|(_, r)| r.name.as_str())
                .collect();
            return Err(DecisionError::RegionLoop {
                visited: names.join(", "),
                hops: visited.hops,
                max: table.max_region_hops,
            });
        }
    }
    // A single cluster costs nothing here; a split takes one point of the route's sequence
    // for the cluster and the rest of it (rescaled) for the region inside that cluster.
    let (cluster_id, region_draw) = match &route.target {
        // A route that answers at the edge has no cluster: the proxy answers it before this.
        RouteTarget::Edge => (usize::MAX, draw.unwrap_or(0.0)),
        RouteTarget::Cluster(id) => (*id, draw.unwrap_or_else(|| route.next_draw())),
        RouteTarget::Weighted { clusters, .. } => {
            let split_draw = draw.unwrap_or_else(|| route.next_draw());
            let up = |id| cluster_is_up(table, id, &order);
            match split::pick_cluster(clusters, up, split_draw) {
                Some(pick) => (pick.cluster, pick.draw),
                None => (usize::MAX, split_draw),
            }
        }
    };
    let Some(cluster) = table.clusters.get(cluster_id) else {
        return Err(no_endpoint(
            table,
            route,
            "?",
            &order,
            NoRegion::NoEndpoints,
        ));
    };
    let pick = steer::pick_region(
        &route.steering,
        &order,
        |r| cluster.health(r),
        region_draw,
        cluster.panic_threshold,
    )
    .map_err(|reason| no_endpoint(table, route, &cluster.name, &order, reason))?;
    let set = cluster.regions.get(pick.region as usize);
    let (endpoint, affinity) = match cluster.affinity.as_deref() {
        None => (
            set.and_then(|set| set.pick(cluster.load_balancer, pick.panic, rng, &|_| false)),
            None,
        ),
        Some(a) => {
            let (endpoint, key) = super::affinity::pick(
                a,
                cluster,
                set,
                facts.headers,
                facts.query,
                client,
                pick.panic,
                rng,
            );
            (endpoint, key.map(Box::new))
        }
    };
    let endpoint = endpoint
        .ok_or_else(|| no_endpoint(table, route, &cluster.name, &order, NoRegion::NoEndpoints))?;
    Ok(RouteDecision {
        client,
        client_source,
        location,
        route,
        cluster,
        cluster_id,
        order,
        region: pick.region,
        panic: pick.panic,
        endpoint,
        affinity,
    })
}

/// Whether `cluster` has a healthy endpoint in a region of `order` (the regions this request
/// may use): a split leaves out clusters that have none.
fn cluster_is_up(table: &RoutingTable, cluster: usize, order: &RegionOrder) -> bool {
    table.clusters.get(cluster).is_some_and(|c| {
        order
            .as_slice()
            .iter()
            .any(|r| c.health(*r).healthy_weight > 0)
    })
}

fn no_endpoint(
    table: &RoutingTable,
    route: &Route,
    cluster: &str,
    order: &RegionOrder,
    reason: NoRegion,
) -> DecisionError {
    DecisionError::NoEndpoint {
        route: route.name.clone(),
        cluster: cluster.to_owned(),
        regions: crate::table::region_names(table, order),
        reason,
    }
}

/// Where a retry goes: an untried endpoint of the same region if it has one (Envoy's
/// previous-hosts rule), else the first later region in the order that has one (Istio's
/// retryRemoteLocalities).
pub fn retry_target(
    cluster: &Cluster,
    order: &RegionOrder,
    region: RegionId,
    panic: bool,
    tried: &[Arc<Endpoint>],
    rng: &mut fastrand::Rng,
) -> Option<(RegionId, Arc<Endpoint>)> {
    let already_tried = |e: &Arc<Endpoint>| tried.iter().any(|t| Arc::ptr_eq(t, e));
    let same = cluster
        .regions
        .get(region as usize)
        .and_then(|set| set.pick(cluster.load_balancer, panic, rng, &already_tried));
    if let Some(endpoint) = same {
        return Some((region, endpoint));
    }
    let position = order
        .as_slice()
        .iter()
        .position(|r| *r == region)
        .unwrap_or(0);
    // A region whose peer is down is out of steering for retries too.
    let later = order.as_slice().iter().skip(position + 1);
    later.filter(|r| !cluster.peer_down(**r)).find_map(|next| {
        cluster
            .regions
            .get(*next as usize)
            .and_then(|set| set.pick(cluster.load_balancer, false, rng, &already_tried))
            .map(|endpoint| (*next, endpoint))
    })
}
