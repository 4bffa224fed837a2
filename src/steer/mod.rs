//! Steering: which regions a client may use and in what order, which region takes this request
//! (Envoy priority-load spill), and which endpoint inside it.
//!
//! Pure functions over compiled data and a caller-supplied RNG: no I/O, no clocks, no locks, so
//! every rule is unit-tested here and benchmarked without sockets.

pub mod hash;
pub mod maglev;

use std::fmt;

use crate::config::{LoadBalancer, SteeringMode};
use crate::geo::{ContinentCode, CountryCode, GeoPoint, Location};

pub use crate::geo::RegionId;

/// Regions per table; orders are fixed-size arrays so building one never allocates.
pub const MAX_REGIONS: usize = 64;

/// Regions in preference order, best first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RegionOrder {
    ids: [RegionId; MAX_REGIONS],
    len: u8,
}

impl Default for RegionOrder {
    fn default() -> Self {
        Self {
            ids: [0; MAX_REGIONS],
            len: 0,
        }
    }
}

impl fmt::Debug for RegionOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl RegionOrder {
    pub fn from_slice(ids: &[RegionId]) -> Self {
        let mut order = Self::default();
        for id in ids {
            order.push(*id);
        }
        order
    }

    /// Appends `id` unless present (or full).
    pub fn push(&mut self, id: RegionId) {
        if !self.contains(id) && (self.len as usize) < MAX_REGIONS {
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }

    pub fn contains(&self, id: RegionId) -> bool {
        self.as_slice().contains(&id)
    }

    pub fn as_slice(&self) -> &[RegionId] {
        &self.ids[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    fn retain(&mut self, keep: impl Fn(RegionId) -> bool) {
        let mut kept = Self::default();
        for id in self.as_slice() {
            if keep(*id) {
                kept.push(*id);
            }
        }
        *self = kept;
    }
}

/// A route's steering policy, compiled.
#[derive(Debug, Clone)]
pub struct Steering {
    pub mode: SteeringMode,
    pub overprovisioning: f64,
    // Looked up per request: hashed with foldhash (the keys come from config).
    pub countries: foldhash::HashMap<CountryCode, RegionOrder>,
    pub continents: foldhash::HashMap<ContinentCode, RegionOrder>,
    /// Bit `r` set: region `r` may be used. `None`: no restriction.
    pub only: Option<u64>,
    /// For weighted mode: region → share.
    pub weights: Vec<(RegionId, u32)>,
    /// For failover mode: the same order for every client.
    pub fixed_order: Option<RegionOrder>,
}

impl Default for Steering {
    fn default() -> Self {
        Self {
            mode: SteeringMode::Nearest,
            overprovisioning: crate::config::DEFAULT_OVERPROVISIONING,
            countries: foldhash::HashMap::default(),
            continents: foldhash::HashMap::default(),
            only: None,
            weights: Vec::new(),
            fixed_order: None,
        }
    }
}

/// Where the regions are: degrees, and each region's unit vector on the sphere, computed once
/// when the table compiles so ranking a client takes no trigonometry per region.
#[derive(Debug, Clone, Default)]
pub struct RegionPoints {
    points: Vec<GeoPoint>,
}

impl RegionPoints {
    pub fn new(coords: &[(f64, f64)]) -> Self {
        Self {
            points: coords.iter().map(|c| GeoPoint::new(*c)).collect(),
        }
    }

    /// Where region `id` is.
    pub fn coords(&self, id: RegionId) -> Option<GeoPoint> {
        self.points.get(id as usize).copied()
    }
}

/// Every region ranked by distance from `point`, after the ones already in `order`. Nearer
/// means a larger dot product of the unit vectors (the great-circle distance falls as it
/// grows); ties go to the lower region id.
pub fn extend_by_distance(order: &mut RegionOrder, regions: &RegionPoints, point: &GeoPoint) {
    // An insertion sort straight into `order`: a handful of regions, no scratch array.
    let start = order.len as usize;
    let closeness = |id: RegionId| point.closeness(&regions.points[id as usize]);
    for (id, region) in regions.points.iter().enumerate().take(MAX_REGIONS) {
        let id = id as RegionId;
        let end = order.len as usize;
        if end >= MAX_REGIONS || order.ids[..start].contains(&id) {
            continue;
        }
        let key = point.closeness(region);
        // After every region at least as near: ties keep the lower id (ids come in order).
        let mut at = end;
        while at > start && closeness(order.ids[at - 1]) < key {
            at -= 1;
        }
        order.ids.copy_within(at..end, at + 1);
        order.ids[at] = id;
        order.len += 1;
    }
}

/// The regions this client may use, best first.
///
/// Explicit lists win (a region override, then `countries`, then `continents`); regions they do
/// not name follow by distance, so a list says who comes first without disabling failover
/// (`only` is what forbids regions). With no location at all the instance's own order is used:
/// `local_region` first, then the regions nearest to it.
pub fn region_order(
    steering: &Steering,
    region_coords: &RegionPoints,
    local_order: &RegionOrder,
    location: &Location,
) -> RegionOrder {
    let mut order = if let (SteeringMode::Failover, Some(fixed)) =
        (steering.mode, steering.fixed_order.as_ref())
    {
        *fixed
    } else {
        let explicit = location
            .region
            .map(|r| RegionOrder::from_slice(&[r]))
            .or_else(|| {
                location
                    .country
                    .and_then(|c| steering.countries.get(&c).copied())
            })
            .or_else(|| {
                location
                    .continent
                    .and_then(|c| steering.continents.get(&c).copied())
            });
        let point = location
            .coords
            .or_else(|| location.region.and_then(|r| region_coords.coords(r)));
        match (explicit, point) {
            (Some(mut order), Some(point)) => {
                extend_by_distance(&mut order, region_coords, &point);
                order
            }
            (Some(mut order), None) => {
                for id in local_order.as_slice() {
                    order.push(*id);
                }
                order
            }
            (None, Some(point)) => {
                let mut order = RegionOrder::default();
                extend_by_distance(&mut order, region_coords, &point);
                order
            }
            (None, None) => *local_order,
        }
    };
    if let Some(mask) = steering.only {
        order.retain(|id| mask & (1u64 << id) != 0);
    }
    order
}

/// How healthy a region of a cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionHealth {
    /// Weight of endpoints that are healthy and have weight > 0.
    pub healthy_weight: u64,
    /// Weight of all endpoints.
    pub total_weight: u64,
    /// Number of endpoints, healthy or not.
    pub endpoints: usize,
}

impl RegionHealth {
    /// Healthy share in 0..=1.
    pub fn share(&self) -> f64 {
        if self.total_weight == 0 {
            0.0
        } else {
            self.healthy_weight as f64 / self.total_weight as f64
        }
    }
}

/// The region chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionPick {
    pub region: RegionId,
    /// No region had a healthy endpoint: use every endpoint of this region regardless.
    pub panic: bool,
}

/// Why no region could take the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRegion {
    #[error("the steering policy leaves no region for this client")]
    EmptyOrder,
    #[error("no region in the order has a healthy endpoint")]
    NoHealthy,
    #[error("no region in the order has any endpoint")]
    NoEndpoints,
}

/// Share of traffic each region in `order` takes (Envoy priority load).
///
/// Region k takes `min(healthy_share(k) × overprovisioning, 1)` of what earlier regions left.
/// When even all regions together are less than fully healthy, the load is spread in
/// proportion to their health instead, so all of it still goes somewhere healthy.
pub fn region_loads(
    order: &RegionOrder,
    health: impl Fn(RegionId) -> RegionHealth,
    overprovisioning: f64,
) -> [f64; MAX_REGIONS] {
    let mut capped = [0.0; MAX_REGIONS];
    for (i, id) in order.as_slice().iter().enumerate() {
        capped[i] = (health(*id).share() * overprovisioning).min(1.0);
    }
    loads_of(&capped[..order.len()])
}

/// Each region's share of traffic from its capped healthy share (see [`region_loads`]).
fn loads_of(capped: &[f64]) -> [f64; MAX_REGIONS] {
    let mut loads = [0.0; MAX_REGIONS];
    let total: f64 = capped.iter().sum();
    if total <= 0.0 {
        return loads;
    }
    if total < 1.0 {
        for (load, c) in loads.iter_mut().zip(capped) {
            *load = c / total;
        }
        return loads;
    }
    let mut remaining = 1.0;
    for (load, c) in loads.iter_mut().zip(capped) {
        *load = c.min(remaining);
        remaining -= *load;
    }
    loads
}

/// The `n`th point of the golden-ratio (Weyl) sequence in [0, 1).
///
/// Region splits draw from this sequence, one step per request of a route, rather than from a
/// random source: consecutive points are spread evenly, so a 50/30/20 split or a 30% spill
/// holds closely even over a few hundred requests, yet no pattern of period N arises.
pub fn golden_draw(n: u64) -> f64 {
    const GOLDEN_FIXED_POINT: u64 = 0x9E37_79B9_7F4A_7C15;
    (n.wrapping_mul(GOLDEN_FIXED_POINT) >> 11) as f64 / (1u64 << 53) as f64
}

/// Choose the region for one request; `draw` is uniform in [0, 1) (see [`golden_draw`]).
///
/// `panic_threshold` (0..1): when the order's total healthy share (each region's share ×
/// overprovisioning, capped at 1 overall) falls below it, every endpoint of the first region
/// that has any takes the traffic, healthy or not, rather than failing everything. With 0, a
/// fully unhealthy order is refused instead.
pub fn pick_region(
    steering: &Steering,
    order: &RegionOrder,
    health: impl Fn(RegionId) -> RegionHealth,
    draw: f64,
    panic_threshold: f64,
) -> Result<RegionPick, NoRegion> {
    if order.is_empty() {
        return Err(NoRegion::EmptyOrder);
    }
    // Each region's health is read once (a lock-free load per region).
    let mut capped = [0.0; MAX_REGIONS];
    for (i, id) in order.as_slice().iter().enumerate() {
        capped[i] = (health(*id).share() * steering.overprovisioning).min(1.0);
    }
    let capped = &capped[..order.len()];
    let total_health: f64 = capped.iter().sum::<f64>().min(1.0);
    let healthy = if total_health <= 0.0 || total_health < panic_threshold {
        None
    } else {
        match steering.mode {
            SteeringMode::Nearest => {
                let loads = loads_of(capped);
                let mut r = draw;
                let mut chosen = None;
                for (i, id) in order.as_slice().iter().enumerate() {
                    if loads[i] <= 0.0 {
                        continue;
                    }
                    chosen = Some(*id);
                    if r < loads[i] {
                        break;
                    }
                    r -= loads[i];
                }
                chosen
            }
            SteeringMode::Failover => order
                .as_slice()
                .iter()
                .copied()
                .find(|id| health(*id).healthy_weight > 0),
            SteeringMode::Weighted => pick_weighted(steering, order, &health, draw),
        }
    };
    if let Some(region) = healthy {
        return Ok(RegionPick {
            region,
            panic: false,
        });
    }
    if panic_threshold <= 0.0 {
        return Err(NoRegion::NoHealthy);
    }
    order
        .as_slice()
        .iter()
        .copied()
        .find(|id| health(*id).endpoints > 0)
        .map(|region| RegionPick {
            region,
            panic: true,
        })
        .ok_or(NoRegion::NoEndpoints)
}

fn pick_weighted(
    steering: &Steering,
    order: &RegionOrder,
    health: &impl Fn(RegionId) -> RegionHealth,
    draw: f64,
) -> Option<RegionId> {
    let eligible =
        |id: RegionId, w: u32| w > 0 && order.contains(id) && health(id).healthy_weight > 0;
    let total: u64 = steering
        .weights
        .iter()
        .filter(|(id, w)| eligible(*id, *w))
        .map(|(_, w)| u64::from(*w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = ((draw * total as f64) as u64).min(total - 1);
    for (id, w) in steering.weights.iter().filter(|(id, w)| eligible(*id, *w)) {
        let w = u64::from(*w);
        if r < w {
            return Some(*id);
        }
        r -= w;
    }
    None
}

/// The share of requests each region of `order` takes right now, as [`pick_region`] would
/// distribute them over many draws (for `/explain` and the status page).
pub fn expected_loads(
    steering: &Steering,
    order: &RegionOrder,
    health: impl Fn(RegionId) -> RegionHealth,
    panic_threshold: f64,
) -> [f64; MAX_REGIONS] {
    let mut loads = [0.0; MAX_REGIONS];
    let probe = pick_region(steering, order, &health, 0.0, panic_threshold);
    let Ok(pick) = probe else { return loads };
    let position = |id: RegionId| order.as_slice().iter().position(|r| *r == id);
    if pick.panic || steering.mode == SteeringMode::Failover {
        if let Some(i) = position(pick.region) {
            loads[i] = 1.0;
        }
        return loads;
    }
    match steering.mode {
        SteeringMode::Weighted => {
            let eligible: Vec<(RegionId, u32)> = steering
                .weights
                .iter()
                .copied()
                .filter(|(id, w)| *w > 0 && order.contains(*id) && health(*id).healthy_weight > 0)
                .collect();
            let total: u32 = eligible.iter().map(|(_, w)| w).sum();
            for (id, w) in eligible {
                if let Some(i) = position(id) {
                    loads[i] = f64::from(w) / f64::from(total.max(1));
                }
            }
            loads
        }
        _ => region_loads(order, health, steering.overprovisioning),
    }
}

/// What endpoint picking needs to know about one endpoint.
pub trait Candidate {
    fn weight(&self) -> u32;
    fn is_healthy(&self) -> bool;
    fn in_flight(&self) -> u32;
}

fn usable<C: Candidate>(c: &C, panic: bool) -> bool {
    panic || (c.weight() > 0 && c.is_healthy())
}

/// The endpoints a pick may use: usable and not skipped, with their index.
fn candidates<'a, C: Candidate>(
    endpoints: &'a [C],
    panic: bool,
    skip: &'a dyn Fn(usize) -> bool,
) -> impl Iterator<Item = (usize, &'a C)> + 'a {
    endpoints
        .iter()
        .enumerate()
        .filter(move |(i, e)| usable(*e, panic) && !skip(*i))
}

/// In panic mode every endpoint counts, with equal weight.
fn pick_weight<C: Candidate>(c: &C, panic: bool) -> u64 {
    if panic { 1 } else { u64::from(c.weight()) }
}

fn weighted_draw<C: Candidate>(
    endpoints: &[C],
    panic: bool,
    skip: &dyn Fn(usize) -> bool,
    total: u64,
    rng: &mut fastrand::Rng,
) -> Option<usize> {
    let mut r = rng.u64(0..total);
    for (i, e) in candidates(endpoints, panic, skip) {
        let w = pick_weight(e, panic);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// Choose an endpoint of one region. `rr_schedule`/`rr_cursor` are the region's round-robin
/// state (a precomputed weighted schedule and a counter the caller advances); `skip` names
/// endpoints this request already tried.
pub fn pick_endpoint<C: Candidate>(
    endpoints: &[C],
    lb: LoadBalancer,
    panic: bool,
    rng: &mut fastrand::Rng,
    rr_schedule: &[u32],
    rr_cursor: usize,
    skip: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let total: u64 = candidates(endpoints, panic, skip)
        .map(|(_, e)| pick_weight(e, panic))
        .sum();
    if total == 0 {
        return None;
    }
    match lb {
        LoadBalancer::Random => weighted_draw(endpoints, panic, skip, total, rng),
        LoadBalancer::LeastRequest => {
            let a = weighted_draw(endpoints, panic, skip, total, rng)?;
            let b = weighted_draw(endpoints, panic, skip, total, rng)?;
            // Compare in-flight per unit of weight without dividing: a/wa <= b/wb.
            let load = |i: usize| {
                (
                    u64::from(endpoints[i].in_flight()),
                    pick_weight(&endpoints[i], panic),
                )
            };
            let ((la, wa), (lb_, wb)) = (load(a), load(b));
            Some(if la * wb <= lb_ * wa { a } else { b })
        }
        LoadBalancer::RoundRobin => {
            if panic || rr_schedule.is_empty() {
                let count = candidates(endpoints, panic, skip).count();
                return candidates(endpoints, panic, skip)
                    .nth(rr_cursor % count)
                    .map(|(i, _)| i);
            }
            (0..rr_schedule.len())
                .map(|step| rr_schedule[(rr_cursor + step) % rr_schedule.len()] as usize)
                .find(|i| endpoints.get(*i).is_some_and(|e| usable(e, panic)) && !skip(*i))
        }
    }
}

/// A smooth weighted round-robin schedule (nginx's algorithm): each endpoint appears `weight`
/// times (weights divided by their gcd), spread out rather than in runs.
pub fn round_robin_schedule(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: RegionId = 0;
    const EU: RegionId = 1;
    const AP: RegionId = 2;
    const COORDS: [(f64, f64); 3] = [(38.9, -77.4), (53.3, -6.3), (1.35, 103.8)];

    #[test]
    fn ranking_by_unit_vectors_agrees_with_great_circle_distance() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut random_point = || (rng.f64() * 180.0 - 90.0, rng.f64() * 360.0 - 180.0);
        for _ in 0..200 {
            let regions: Vec<(f64, f64)> = (0..8).map(|_| random_point()).collect();
            let points = RegionPoints::new(&regions);
            for _ in 0..20 {
                let client = random_point();
                let mut order = RegionOrder::default();
                extend_by_distance(&mut order, &points, &GeoPoint::new(client));
                let distances: Vec<f64> = order
                    .as_slice()
                    .iter()
                    .map(|id| crate::geo::distance_km(client, regions[*id as usize]))
                    .collect();
                assert_eq!(order.as_slice().len(), regions.len());
                for pair in distances.windows(2) {
                    assert!(pair[0] <= pair[1] + 1e-6, "{client:?}: {distances:?}");
                }
            }
        }
    }

    #[test]
    fn distance_ties_go_to_the_lower_region_id_after_explicit_ones() {
        // Regions 1 and 3 share a place; 0 is far away; 2 was already named.
        let points = RegionPoints::new(&[(-33.9, 151.2), (53.3, -6.3), (1.3, 103.8), (53.3, -6.3)]);
        let mut order = RegionOrder::from_slice(&[2]);
        extend_by_distance(&mut order, &points, &GeoPoint::new((51.5, -0.1)));
        assert_eq!(order.as_slice(), &[2, 1, 3, 0]);
    }

    fn local() -> RegionOrder {
        RegionOrder::from_slice(&[US, EU, AP])
    }

    fn at(lat: f64, lon: f64) -> Location {
        Location {
            coords: Some(GeoPoint::new((lat, lon))),
            ..Location::default()
        }
    }

    fn health(h: &[(u64, u64, usize)]) -> impl Fn(RegionId) -> RegionHealth + '_ {
        move |id| {
            let (healthy_weight, total_weight, endpoints) = h[id as usize];
            RegionHealth {
                healthy_weight,
                total_weight,
                endpoints,
            }
        }
    }

    #[test]
    fn orders_by_distance_explicit_lists_and_only() {
        let mut s = Steering::default();
        let frankfurt = Location {
            country: CountryCode::parse("DE"),
            continent: ContinentCode::parse("EU"),
            ..at(50.1, 8.7)
        };
        let singapore = at(1.3, 103.8);
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &frankfurt).as_slice(),
            &[EU, US, AP]
        );
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &singapore).as_slice(),
            &[AP, EU, US]
        );
        assert_eq!(
            region_order(
                &s,
                &RegionPoints::new(&COORDS),
                &local(),
                &Location::default()
            )
            .as_slice(),
            &[US, EU, AP]
        );

        s.continents.insert(
            ContinentCode::parse("EU").unwrap(),
            RegionOrder::from_slice(&[AP]),
        );
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &frankfurt).as_slice(),
            &[AP, EU, US]
        );
        s.countries.insert(
            CountryCode::parse("DE").unwrap(),
            RegionOrder::from_slice(&[US]),
        );
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &frankfurt).as_slice(),
            &[US, EU, AP]
        );

        s.only = Some(1 << EU);
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &frankfurt).as_slice(),
            &[EU]
        );
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &singapore).as_slice(),
            &[EU]
        );
    }

    #[test]
    fn region_override_goes_first_then_nearest_to_it() {
        let s = Steering::default();
        let loc = Location {
            region: Some(AP),
            ..Location::default()
        };
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &loc).as_slice(),
            &[AP, EU, US]
        );
    }

    #[test]
    fn failover_uses_fixed_order() {
        let s = Steering {
            mode: SteeringMode::Failover,
            fixed_order: Some(RegionOrder::from_slice(&[AP, US])),
            ..Steering::default()
        };
        assert_eq!(
            region_order(&s, &RegionPoints::new(&COORDS), &local(), &at(50.0, 8.0)).as_slice(),
            &[AP, US]
        );
    }

    #[test]
    fn priority_loads_follow_envoy() {
        let order = local();
        // (healthy share, expected loads) with overprovisioning 1.4
        type Case<'a> = (&'a [(u64, u64, usize)], [f64; 3]);
        let cases: &[Case] = &[
            (&[(10, 10, 1), (10, 10, 1), (10, 10, 1)], [1.0, 0.0, 0.0]),
            // 50% healthy × 1.4 = 70%; the rest spills to the next region
            (&[(5, 10, 1), (10, 10, 1), (10, 10, 1)], [0.7, 0.3, 0.0]),
            (&[(0, 10, 1), (5, 10, 1), (10, 10, 1)], [0.0, 0.7, 0.3]),
            // all weak: normalised by total health (0.14 + 0.14)
            (&[(1, 10, 1), (1, 10, 1), (0, 10, 1)], [0.5, 0.5, 0.0]),
            (&[(0, 10, 1), (0, 0, 0), (0, 10, 1)], [0.0, 0.0, 0.0]),
        ];
        for (h, want) in cases {
            let loads = region_loads(&order, health(h), 1.4);
            for i in 0..3 {
                assert!(
                    (loads[i] - want[i]).abs() < 1e-9,
                    "{h:?}: {:?} want {want:?}",
                    &loads[..3]
                );
            }
        }
    }

    #[test]
    fn spill_is_seen_in_picks() {
        let s = Steering::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let h = [(5, 10, 2), (10, 10, 1), (10, 10, 1)];
        let mut counts = [0; 3];
        for _ in 0..10_000 {
            let pick = pick_region(&s, &local(), health(&h), rng.f64(), 0.5).unwrap();
            assert!(!pick.panic);
            counts[pick.region as usize] += 1;
        }
        assert!((6_700..7_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[2], 0);
    }

    #[test]
    fn failover_and_panic() {
        let s = Steering {
            mode: SteeringMode::Failover,
            ..Steering::default()
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let h = [(0, 10, 1), (1, 10, 1), (10, 10, 1)];
        assert_eq!(
            pick_region(&s, &local(), health(&h), rng.f64(), 0.5)
                .unwrap()
                .region,
            EU
        );
        let dead = [(0, 10, 1), (0, 0, 0), (0, 10, 1)];
        assert_eq!(
            pick_region(
                &s,
                &RegionOrder::from_slice(&[EU, AP]),
                health(&dead),
                rng.f64(),
                0.5
            )
            .unwrap(),
            RegionPick {
                region: AP,
                panic: true
            }
        );
        assert_eq!(
            pick_region(
                &s,
                &RegionOrder::from_slice(&[EU]),
                health(&dead),
                rng.f64(),
                0.5
            ),
            Err(NoRegion::NoEndpoints)
        );
        assert_eq!(
            pick_region(&s, &local(), health(&dead), rng.f64(), 0.0),
            Err(NoRegion::NoHealthy)
        );
        assert_eq!(
            pick_region(&s, &RegionOrder::default(), health(&dead), rng.f64(), 0.5),
            Err(NoRegion::EmptyOrder)
        );
    }

    #[test]
    fn panic_threshold_applies_to_the_whole_order() {
        let s = Steering::default();
        let order = RegionOrder::from_slice(&[US, EU]);
        // 10% × 1.4 = 14% per region, 28% in total
        let weak = [(1, 10, 10), (1, 10, 10), (0, 0, 0)];
        let pick = pick_region(&s, &order, health(&weak), 0.9, 0.5).unwrap();
        assert_eq!(
            pick,
            RegionPick {
                region: US,
                panic: true
            }
        );
        let pick = pick_region(&s, &order, health(&weak), 0.9, 0.2).unwrap();
        assert_eq!(
            pick,
            RegionPick {
                region: EU,
                panic: false
            }
        );
    }

    #[test]
    fn skipped_endpoints_are_not_picked() {
        let mut rng = fastrand::Rng::with_seed(2);
        let eps = [e(1, true, 0), e(1, true, 0)];
        for lb in [
            LoadBalancer::Random,
            LoadBalancer::LeastRequest,
            LoadBalancer::RoundRobin,
        ] {
            for c in 0..20 {
                assert_eq!(
                    pick_endpoint(&eps, lb, false, &mut rng, &[0, 1], c, &|i| i == 0),
                    Some(1)
                );
            }
            assert_eq!(
                pick_endpoint(&eps, lb, false, &mut rng, &[0, 1], 0, &|_| true),
                None
            );
        }
    }

    #[test]
    fn weighted_renormalises_over_healthy_regions() {
        let s = Steering {
            mode: SteeringMode::Weighted,
            weights: vec![(US, 50), (EU, 30), (AP, 20)],
            ..Steering::default()
        };
        let mut rng = fastrand::Rng::with_seed(3);
        let h = [(1, 1, 1), (0, 0, 0), (1, 1, 1)];
        let mut counts = [0; 3];
        for _ in 0..7_000 {
            counts[pick_region(&s, &local(), health(&h), rng.f64(), 0.5)
                .unwrap()
                .region as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        // 50:20 → 5000:2000
        assert!((4_800..5_200).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn golden_draws_are_even() {
        let mut buckets = [0; 10];
        for n in 0..1_000 {
            let d = golden_draw(n);
            assert!((0.0..1.0).contains(&d));
            buckets[(d * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (99..=101).contains(b)),
            "{buckets:?}"
        );
    }

    struct E {
        w: u32,
        up: bool,
        busy: u32,
    }
    impl Candidate for E {
        fn weight(&self) -> u32 {
            self.w
        }
        fn is_healthy(&self) -> bool {
            self.up
        }
        fn in_flight(&self) -> u32 {
            self.busy
        }
    }

    fn e(w: u32, up: bool, busy: u32) -> E {
        E { w, up, busy }
    }

    #[test]
    fn endpoint_picks_honour_weight_health_and_load() {
        let mut rng = fastrand::Rng::with_seed(11);
        let eps = [e(1, true, 0), e(3, true, 0), e(5, false, 0), e(0, true, 0)];
        let mut counts = [0; 4];
        for _ in 0..8_000 {
            let i = pick_endpoint(&eps, LoadBalancer::Random, false, &mut rng, &[], 0, &|_| {
                false
            })
            .unwrap();
            counts[i] += 1;
        }
        assert_eq!(
            (counts[2], counts[3]),
            (0, 0),
            "unhealthy and weight-0 never picked"
        );
        assert!((1_800..2_200).contains(&counts[0]), "{counts:?}");

        // least request: the idle endpoint wins whenever it is one of the two draws
        let busy = [e(1, true, 10), e(1, true, 0)];
        let idle_wins = (0..1_000)
            .filter(|_| {
                pick_endpoint(
                    &busy,
                    LoadBalancer::LeastRequest,
                    false,
                    &mut rng,
                    &[],
                    0,
                    &|_| false,
                ) == Some(1)
            })
            .count();
        assert!(idle_wins > 700, "{idle_wins}");

        // panic: everything counts
        let down = [e(1, false, 0), e(0, false, 0)];
        assert_eq!(
            pick_endpoint(
                &down,
                LoadBalancer::Random,
                false,
                &mut rng,
                &[],
                0,
                &|_| false
            ),
            None
        );
        assert!(
            pick_endpoint(&down, LoadBalancer::Random, true, &mut rng, &[], 0, &|_| {
                false
            })
            .is_some()
        );
    }

    #[test]
    fn round_robin_follows_smooth_weights() {
        let schedule = round_robin_schedule(&[5, 1, 1]);
        assert_eq!(schedule, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(round_robin_schedule(&[2, 4]), vec![1, 0, 1]);
        assert!(round_robin_schedule(&[0, 0]).is_empty());
        let mut rng = fastrand::Rng::with_seed(1);
        let eps = [e(5, true, 0), e(1, false, 0), e(1, true, 0)];
        let picks: Vec<_> = (0..7)
            .map(|c| {
                pick_endpoint(
                    &eps,
                    LoadBalancer::RoundRobin,
                    false,
                    &mut rng,
                    &schedule,
                    c,
                    &|_| false,
                )
                .unwrap()
            })
            .collect();
        assert!(!picks.contains(&1), "unhealthy skipped: {picks:?}");
        assert!(picks.contains(&2));
    }
}
