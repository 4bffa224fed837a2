//! Endpoints and their live state (in flight, health, ejection), and the endpoints of one
//! cluster in one region: fixed addresses and DNS names, and the member
//! list the request path picks from.
//!
//! Members live behind an `ArcSwap`: DNS discovery replaces the list when a name's addresses
//! change, requests load whichever list is current. An address that stays keeps its
//! `Endpoint` (and so its health, ejection and load state).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;

use crate::config::LoadBalancer;
use crate::steer::maglev::MaglevTable;
use crate::steer::{self, Candidate, RegionHealth, RegionId};

/// Where a region's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSource {
    Fixed {
        address: SocketAddr,
        weight: u32,
    },
    /// `name:port`, resolved by DNS discovery; every address of the name gets `weight`.
    Dns {
        name: String,
        port: u16,
        weight: u32,
    },
}

/// The endpoints in service, their round-robin schedule and, for a cluster with session
/// affinity, their Maglev table (built here, whenever the members change, never per request).
#[derive(Debug, Default)]
pub struct Members {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub rr_schedule: Vec<u32>,
    pub maglev: Option<Arc<MaglevTable>>,
}

impl Members {
    fn new(endpoints: Vec<Arc<Endpoint>>, hash_table: Option<u32>) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let maglev = hash_table.filter(|_| !endpoints.is_empty()).map(|size| {
            let names: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
            Arc::new(MaglevTable::build(&names, &weights, size))
        });
        Self {
            rr_schedule: steer::round_robin_schedule(&weights),
            endpoints,
            maglev,
        }
    }
}

#[derive(Debug)]
pub struct EndpointSet {
    pub region: RegionId,
    pub sources: Vec<EndpointSource>,
    members: ArcSwap<Members>,
    /// The addresses each DNS source last resolved to (`None`: never resolved).
    resolved: Mutex<Vec<Option<Vec<IpAddr>>>>,
    pub rr_cursor: AtomicUsize,
    /// Maglev table size when the cluster hashes (see [`EndpointSet::with_hash_table`]).
    hash_table: Option<u32>,
}

impl Default for EndpointSet {
    fn default() -> Self {
        Self::fixed(0, Vec::new())
    }
}

impl EndpointSet {
    /// A set of fixed endpoints.
    pub fn fixed(region: RegionId, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let sources = endpoints
            .iter()
            .map(|e| EndpointSource::Fixed {
                address: e.address,
                weight: e.weight,
            })
            .collect();
        Self {
            region,
            sources,
            members: ArcSwap::from_pointee(Members::new(endpoints, None)),
            resolved: Mutex::new(Vec::new()),
            rr_cursor: AtomicUsize::new(0),
            hash_table: None,
        }
    }

    /// A set built from config sources. DNS names start with what `previous` (the same region
    /// of the same cluster in the table being replaced) last resolved them to, so a reload does
    /// not empty a region; `state_of` gives an address its existing state.
    pub fn new(
        region: RegionId,
        sources: Vec<EndpointSource>,
        previous: Option<&EndpointSet>,
        state_of: &dyn Fn(SocketAddr) -> Option<Arc<EndpointState>>,
    ) -> Self {
        let resolved: Vec<Option<Vec<IpAddr>>> = sources
            .iter()
            .map(|s| previous.and_then(|p| p.resolved_for(s)))
            .collect();
        let set = Self {
            region,
            members: ArcSwap::from_pointee(Members::default()),
            resolved: Mutex::new(resolved),
            sources,
            rr_cursor: AtomicUsize::new(0),
            hash_table: None,
        };
        let resolved = set
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        set.members.store(Arc::new(set.build(&resolved, state_of)));
        set
    }

    /// Keep a Maglev table of `size` slots over the members (rebuilt whenever DNS changes
    /// them); `None` keeps none. The table of `previous` (the same region in the table being
    /// replaced) is reused when the size and the members' addresses and weights are the same.
    pub fn with_hash_table(mut self, size: Option<u32>, previous: Option<&EndpointSet>) -> Self {
        if size.is_none() {
            return self;
        }
        self.hash_table = size;
        let endpoints = self.members.load().endpoints.clone();
        let same = |p: &Members| {
            p.endpoints.len() == endpoints.len()
                && p.endpoints
                    .iter()
                    .zip(&endpoints)
                    .all(|(a, b)| a.address == b.address && a.weight == b.weight)
        };
        let reused = previous
            .filter(|p| p.hash_table == size)
            .map(|p| p.members())
            .filter(|p| same(p))
            .and_then(|p| p.maglev.clone());
        let members = match reused {
            Some(maglev) => {
                let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
                Members {
                    rr_schedule: steer::round_robin_schedule(&weights),
                    endpoints,
                    maglev: Some(maglev),
                }
            }
            None => Members::new(endpoints, size),
        };
        self.members.store(Arc::new(members));
        self
    }

    fn resolved_for(&self, source: &EndpointSource) -> Option<Vec<IpAddr>> {
        let i = self.sources.iter().position(|s| s == source)?;
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }

    /// The member list in service now.
    pub fn members(&self) -> arc_swap::Guard<Arc<Members>> {
        self.members.load()
    }

    pub fn contains(&self, endpoint: &Arc<Endpoint>) -> bool {
        self.members()
            .endpoints
            .iter()
            .any(|e| Arc::ptr_eq(e, endpoint))
    }

    /// Whether any source is a DNS name.
    pub fn has_dns(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, EndpointSource::Dns { .. }))
    }

    fn build(
        &self,
        resolved: &[Option<Vec<IpAddr>>],
        state_of: &dyn Fn(SocketAddr) -> Option<Arc<EndpointState>>,
    ) -> Members {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut add = |address: SocketAddr, weight: u32| {
            if endpoints.iter().any(|e| e.address == address) {
                return;
            }
            let state = state_of(address).unwrap_or_default();
            endpoints.push(Arc::new(Endpoint::new(address, weight, self.region, state)));
        };
        for (i, source) in self.sources.iter().enumerate() {
            match source {
                EndpointSource::Fixed { address, weight } => add(*address, *weight),
                EndpointSource::Dns { port, weight, .. } => {
                    for ip in resolved.get(i).cloned().flatten().unwrap_or_default() {
                        add(SocketAddr::new(ip, *port), *weight);
                    }
                }
            }
        }
        Members::new(endpoints, self.hash_table)
    }

    /// Record what DNS source `index` resolved to and replace the members if that changes
    /// them. Returns the endpoints that joined.
    pub fn set_resolved(&self, index: usize, mut addresses: Vec<IpAddr>) -> Vec<Arc<Endpoint>> {
        addresses.sort();
        addresses.dedup();
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        if resolved.get(index).and_then(|r| r.as_ref()) == Some(&addresses) {
            return Vec::new();
        }
        if let Some(slot) = resolved.get_mut(index) {
            *slot = Some(addresses);
        }
        let current = self.members.load_full();
        // Addresses that stay keep their endpoint (and its state); removed ones simply leave
        // the list: requests already holding them finish normally.
        let reuse = |address: SocketAddr| {
            current
                .endpoints
                .iter()
                .find(|e| e.address == address)
                .map(|e| e.state.clone())
        };
        let members = self.build(&resolved, &reuse);
        let joined = members
            .endpoints
            .iter()
            .filter(|e| !current.endpoints.iter().any(|c| c.address == e.address))
            .cloned()
            .collect();
        self.members.store(Arc::new(members));
        joined
    }

    pub fn health(&self) -> RegionHealth {
        let members = self.members();
        let mut h = RegionHealth {
            endpoints: members.endpoints.len(),
            ..RegionHealth::default()
        };
        for e in &members.endpoints {
            h.total_weight += u64::from(e.weight);
            if e.is_usable() {
                h.healthy_weight += u64::from(e.weight);
            }
        }
        h
    }

    /// Pick an endpoint, skipping those `skip` names (already tried by this request).
    pub fn pick(
        &self,
        lb: LoadBalancer,
        panic: bool,
        rng: &mut fastrand::Rng,
        skip: &dyn Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<Arc<Endpoint>> {
        let members = self.members();
        let cursor = if lb == LoadBalancer::RoundRobin {
            self.rr_cursor.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let skip_index = |i: usize| members.endpoints.get(i).is_some_and(skip);
        steer::pick_endpoint(
            &members.endpoints,
            lb,
            panic,
            rng,
            &members.rr_schedule,
            cursor,
            &skip_index,
        )
        .and_then(|i| members.endpoints.get(i).cloned())
    }
}

impl EndpointSet {
    /// The endpoint for hash key `hash` (see [`MaglevTable::pick`]); `None` when the set keeps
    /// no table or nothing can take the request.
    pub fn pick_hashed(
        &self,
        hash: u64,
        panic: bool,
        skip: &dyn Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<Arc<Endpoint>> {
        let members = self.members();
        let skip_index = |i: usize| members.endpoints.get(i).is_some_and(skip);
        members
            .maglev
            .as_ref()?
            .pick(&members.endpoints, hash, panic, &skip_index)
            .and_then(|i| members.endpoints.get(i).cloned())
    }
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

/// DNS discovery settings, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn dns_members_change_and_kept_addresses_keep_their_state() {
        let sources = vec![
            EndpointSource::Fixed {
                address: "127.0.0.9:80".parse().unwrap(),
                weight: 1,
            },
            EndpointSource::Dns {
                name: "api.test".into(),
                port: 8000,
                weight: 2,
            },
        ];
        let set = EndpointSet::new(1, sources.clone(), None, &|_| None);
        assert_eq!(
            set.members().endpoints.len(),
            1,
            "an unresolved name adds nothing"
        );

        let joined = set.set_resolved(1, vec![ip("10.0.0.2"), ip("10.0.0.1")]);
        assert_eq!(joined.len(), 2);
        let kept = set
            .members()
            .endpoints
            .iter()
            .find(|e| e.address.ip() == ip("10.0.0.1"))
            .cloned()
            .unwrap();
        kept.state.healthy.store(false, Ordering::SeqCst);
        assert_eq!(kept.weight, 2);

        assert!(
            set.set_resolved(1, vec![ip("10.0.0.1"), ip("10.0.0.2")])
                .is_empty(),
            "same answer: no change"
        );
        let joined = set.set_resolved(1, vec![ip("10.0.0.1"), ip("10.0.0.3")]);
        assert_eq!(joined.len(), 1);
        let members = set.members();
        let addresses: Vec<String> = members
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["127.0.0.9:80", "10.0.0.1:8000", "10.0.0.3:8000"]
        );
        let same = members
            .endpoints
            .iter()
            .find(|e| e.address.ip() == ip("10.0.0.1"))
            .unwrap();
        assert!(Arc::ptr_eq(&same.state, &kept.state), "state survives");

        // A new set for the same sources (a reload) starts from what was resolved.
        let reloaded = EndpointSet::new(1, sources, Some(&set), &|_| None);
        assert_eq!(reloaded.members().endpoints.len(), 3);
    }

    #[test]
    fn a_hashing_set_rebuilds_its_table_when_dns_changes_the_members() {
        let sources = vec![EndpointSource::Dns {
            name: "api.test".into(),
            port: 80,
            weight: 1,
        }];
        let plain = EndpointSet::new(1, sources.clone(), None, &|_| None);
        assert!(plain.members().maglev.is_none(), "no table unless asked");
        let set = EndpointSet::new(1, sources, None, &|_| None).with_hash_table(Some(101), None);
        assert!(set.members().maglev.is_none(), "no members, no table");
        assert!(set.pick_hashed(7, false, &|_| false).is_none());

        set.set_resolved(0, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let two = set.members();
        let table = two.maglev.as_ref().unwrap();
        assert_eq!(table.len(), 101);
        assert_eq!(table.slots_of(0) + table.slots_of(1), 101);
        let picked = set.pick_hashed(7, false, &|_| false).unwrap();

        // A third address joins: the table now spreads over three, and the key's endpoint
        // is found by address in the new list.
        set.set_resolved(0, vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]);
        let three = set.members();
        let table = three.maglev.as_ref().unwrap();
        assert!((0..3).all(|i| table.slots_of(i) > 20));
        let again = set.pick_hashed(7, false, &|_| false).unwrap();
        assert!(three.endpoints.iter().any(|e| Arc::ptr_eq(e, &again)));
        // Ejecting the key's endpoint moves the key to another member.
        again.state.ejected.store(true, Ordering::SeqCst);
        let moved = set.pick_hashed(7, false, &|_| false).unwrap();
        assert_ne!(moved.address, again.address);
        assert!(["10.0.0.1:80", "10.0.0.2:80"].contains(&picked.address.to_string().as_str()));
    }

    #[test]
    fn a_reload_with_the_same_members_reuses_the_table() {
        let fixed = |a: &str, w| EndpointSource::Fixed {
            address: a.parse().unwrap(),
            weight: w,
        };
        let sources = vec![fixed("10.0.0.1:80", 1), fixed("10.0.0.2:80", 2)];
        let first =
            EndpointSet::new(1, sources.clone(), None, &|_| None).with_hash_table(Some(101), None);
        let table = |s: &EndpointSet| s.members().maglev.clone().unwrap();
        let same = EndpointSet::new(1, sources.clone(), Some(&first), &|_| None)
            .with_hash_table(Some(101), Some(&first));
        assert!(Arc::ptr_eq(&table(&first), &table(&same)));
        let resized = EndpointSet::new(1, sources, Some(&first), &|_| None)
            .with_hash_table(Some(103), Some(&first));
        assert_eq!(table(&resized).len(), 103);
        let reweighted = vec![fixed("10.0.0.1:80", 1), fixed("10.0.0.2:80", 1)];
        let other = EndpointSet::new(1, reweighted, Some(&first), &|_| None)
            .with_hash_table(Some(101), Some(&first));
        assert!(!Arc::ptr_eq(&table(&first), &table(&other)));
        assert_eq!(table(&other).slots_of(0), 51);
    }
}
