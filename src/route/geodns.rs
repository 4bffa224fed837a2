//! Which regions a DNS answer names: the client's region order from the same steering code the
//! HTTP decision uses (country and continent lists, distance, `only`), narrowed to regions with
//! ingress addresses of the asked family, then picked one by one with the same spill, weights
//! and health as `steer::pick_region`, up to `max_answers`.
//!
//! A pure function of the table, the client's location and a draw fixed by the client's subnet
//! (so a resolver's cache sees one answer per subnet). Used by `dns` and the admin API's
//! explain.

use crate::geo::Location;
use crate::steer::{self, RegionHealth, RegionId, RegionOrder};
use crate::table::RoutingTable;
use crate::table::geodns::{DnsTarget, Family, GeoDns};

/// The regions chosen for one answer, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnsPick {
    /// The client's regions that have addresses of the family, best first.
    pub order: RegionOrder,
    /// The regions to answer with, in order (at most `max_answers`).
    pub regions: RegionOrder,
    /// The client's first-choice region is down (or every region is): the short TTL applies.
    pub failover: bool,
    /// No region had a healthy endpoint: the first region of the order is named regardless.
    pub panic: bool,
}

/// How up `region` is for `target`, as HTTP steering sees it: the endpoints of its clusters
/// there, with health checks, outlier ejections (and anything else that marks endpoints down)
/// already applied. A split route's clusters add up.
pub fn region_health(table: &RoutingTable, target: &DnsTarget, region: RegionId) -> RegionHealth {
    let mut sum = RegionHealth::default();
    for id in &target.clusters {
        if let Some(cluster) = table.clusters.get(*id) {
            let h = cluster.health(region);
            sum.healthy_weight += h.healthy_weight;
            sum.total_weight += h.total_weight;
            sum.endpoints += h.endpoints;
        }
    }
    sum
}

/// A subnet's fixed point in [0, 1), standing in for the per-request draw of HTTP steering.
pub fn subnet_draw(key: u64) -> f64 {
    (key >> 11) as f64 / (1u64 << 53) as f64
}

/// The regions to answer with for a client at `location` (see the module doc).
pub fn pick_regions(
    table: &RoutingTable,
    geodns: &GeoDns,
    target: &DnsTarget,
    location: &Location,
    family: Family,
    draw: f64,
) -> DnsPick {
    pick_with(table, geodns, target, location, family, draw, |r| {
        region_health(table, target, r)
    })
}

/// [`pick_regions`] with the health of each region given (for tests and explain).
pub fn pick_with(
    table: &RoutingTable,
    geodns: &GeoDns,
    target: &DnsTarget,
    location: &Location,
    family: Family,
    draw: f64,
    health: impl Fn(RegionId) -> RegionHealth,
) -> DnsPick {
    let full = steer::region_order(
        &target.steering,
        &table.region_coords,
        &table.local_order,
        location,
    );
    let mut order = RegionOrder::default();
    for id in full.as_slice() {
        if geodns
            .ingress
            .get(*id as usize)
            .is_some_and(|i| i.has(family))
        {
            order.push(*id);
        }
    }
    let mut regions = RegionOrder::default();
    let mut remaining = order;
    let mut panic = false;
    while regions.len() < geodns.max_answers {
        // Each further region is what steering would pick if the ones already named were gone.
        let Ok(pick) = steer::pick_region(
            &target.steering,
            &remaining,
            &health,
            draw,
            target.panic_threshold,
        ) else {
            break;
        };
        if pick.panic {
            break;
        }
        regions.push(pick.region);
        let before = remaining;
        remaining = RegionOrder::default();
        for id in before.as_slice().iter().filter(|id| **id != pick.region) {
            remaining.push(*id);
        }
    }
    // Nothing is up: name the client's first region anyway (a DNS answer with no address
    // helps nobody), with the short TTL so the answer changes as soon as a region recovers.
    if regions.is_empty()
        && let Some(first) = order.as_slice().first()
    {
        regions.push(*first);
        panic = true;
    }
    let first_down = order
        .as_slice()
        .first()
        .is_none_or(|first| health(*first).healthy_weight == 0);
    DnsPick {
        order,
        regions,
        failover: first_down || panic,
        panic,
    }
}
