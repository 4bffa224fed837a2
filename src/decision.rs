//! The per-request routing decision: client address → location → route → region order →
//! region (spill) → endpoint. A pure function of the table and the request head, shared by the
//! proxy and the benchmark.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::geo::{AddrSource, Location};
use crate::routes::Route;
use crate::steer::{self, NoRegion, RegionId, RegionOrder};
use crate::table::{Cluster, Endpoint, RoutingTable};

/// What the decision needs from a request.
pub struct RequestFacts<'a> {
    pub peer: IpAddr,
    /// Normalised host (see [`crate::routes::normalize_host`]).
    pub host: &'a str,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Where a request goes and why.
#[derive(Debug)]
pub struct RouteDecision<'t> {
    pub client: IpAddr,
    pub client_source: AddrSource,
    pub location: Location,
    pub route: &'t Route,
    pub cluster: &'t Cluster,
    pub order: RegionOrder,
    pub region: RegionId,
    pub panic: bool,
    pub endpoint: &'t Arc<Endpoint>,
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
}

pub fn decide<'t>(
    table: &'t RoutingTable,
    facts: &RequestFacts<'_>,
    rng: &mut fastrand::Rng,
) -> Result<RouteDecision<'t>, DecisionError> {
    let Some((_, route)) = table
        .routes
        .find(facts.host, facts.path, facts.method, facts.headers)
    else {
        return Err(DecisionError::NoRoute {
            host: facts.host.to_owned(),
            path: facts.path.to_owned(),
        });
    };
    let (client, client_source) = table.geo.client_addr(
        facts.peer,
        facts
            .headers
            .get_all(crate::headers::X_FORWARDED_FOR)
            .iter(),
    );
    let location = table.geo.locate(client);
    let order = steer::region_order(
        &route.steering,
        &table.region_coords,
        &table.local_order,
        &location,
    );
    let cluster_id = route.target.pick(rng);
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
        route.next_draw(),
    )
    .map_err(|reason| no_endpoint(table, route, &cluster.name, &order, reason))?;
    let endpoint = cluster
        .regions
        .get(pick.region as usize)
        .and_then(|set| set.pick(cluster.load_balancer, pick.panic, rng))
        .ok_or_else(|| no_endpoint(table, route, &cluster.name, &order, NoRegion::NoEndpoints))?;
    Ok(RouteDecision {
        client,
        client_source,
        location,
        route,
        cluster,
        order,
        region: pick.region,
        panic: pick.panic,
        endpoint,
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
