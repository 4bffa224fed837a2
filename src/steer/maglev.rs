//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, with Envoy's weighted fill): the
//! lookup table of one cluster's endpoints in one region, and the pick of a request's hash key.
//!
//! The table is built from every member of the region, healthy or not, when the table compiles
//! and when DNS changes the members; never per request. A pick is one hash lookup. When the
//! endpoint a key lands on cannot take traffic (ejected, failing health checks, or already
//! tried), the key walks its own probe sequence to other slots of the same table: so only the
//! keys of that endpoint move, every other key stays where it was, and a recovered endpoint
//! gets its own keys back. Built by `upstream::endpoints` (one table per member list), read by
//! `route::decision` through it.

use super::hash::{next_probe, xxh64};
use super::{Candidate, usable};

/// The table size Envoy and Istio use by default: a prime, so every permutation is a cycle.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Largest table accepted: 4 MB of slots per cluster and region, about 130 ms to build (50
/// endpoints, release build); reloads that leave the members alone reuse the table.
pub const MAX_TABLE_SIZE: u32 = 1_000_003;
/// Smallest table accepted: below that, slots are too coarse to spread even a few endpoints.
pub const MIN_TABLE_SIZE: u32 = 101;
/// Probes a key makes along its sequence before the rendezvous fallback; with half the
/// endpoints down, 16 probes all miss once in 65,536 keys.
const MAX_PROBES: usize = 16;

/// Whether `n` is prime (table sizes must be: `skip` then walks every slot).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// One region's lookup table: slot → endpoint index (in the member list it was built from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Vec<u32>,
    /// Each endpoint's name hash, by index: the rendezvous fallback ranks endpoints by it.
    ids: Vec<u64>,
}

impl MaglevTable {
    /// Build the table for endpoints named `names` (stable names: `ip:port`) with `weights`;
    /// `size` is a prime. Endpoints of weight 0 get no slot. Deterministic: the same names and
    /// weights give the same table in any order and in any process.
    pub fn build(names: &[String], weights: &[u32], size: u32) -> Self {
        let ids: Vec<u64> = names.iter().map(|n| xxh64(n.as_bytes(), 0)).collect();
        let m = u64::from(size.max(2));
        struct Entry {
            index: u32,
            offset: u64,
            skip: u64,
            next: u64,
            weight: u64,
            target: u64,
        }
        let mut entries: Vec<Entry> = names
            .iter()
            .zip(weights)
            .enumerate()
            .filter(|(_, (_, w))| **w > 0)
            .map(|(i, (name, w))| Entry {
                index: i as u32,
                offset: xxh64(name.as_bytes(), 0) % m,
                skip: xxh64(name.as_bytes(), 1) % (m - 1) + 1,
                next: 0,
                weight: u64::from(*w),
                target: 0,
            })
            .collect();
        // Fill order decides who takes a contested slot: by name, not by member order, so
        // DNS answers in another order build the same table.
        entries.sort_by(|a, b| names[a.index as usize].cmp(&names[b.index as usize]));
        let max_weight = entries.iter().map(|e| e.weight).max().unwrap_or(0);
        let mut slots = vec![u32::MAX; m as usize];
        if entries.is_empty() {
            return Self {
                slots: Vec::new(),
                ids,
            };
        }
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for e in entries.iter_mut() {
                if filled == m {
                    break;
                }
                // An endpoint of the largest weight takes a slot every round, one of a third of
                // it every third round: slots end up in proportion to weight.
                if iteration * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                // Walks a full cycle at most (m is prime), and a free slot remains.
                loop {
                    let c = ((e.offset + e.skip * e.next) % m) as usize;
                    e.next += 1;
                    if slots[c] == u32::MAX {
                        slots[c] = e.index;
                        break;
                    }
                }
                filled += 1;
            }
            iteration += 1;
        }
        Self { slots, ids }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The endpoint for hash key `hash`: its slot's endpoint if that one can take the request,
    /// else the first usable one along the key's probe sequence, else the usable endpoint that
    /// ranks highest for the key (rendezvous). `skip` names endpoints already tried.
    pub fn pick<C: Candidate>(
        &self,
        endpoints: &[C],
        hash: u64,
        panic: bool,
        skip: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let takes = |i: usize| endpoints.get(i).is_some_and(|e| usable(e, panic)) && !skip(i);
        let m = self.slots.len() as u64;
        let mut h = hash;
        for _ in 0..MAX_PROBES {
            let i = self.slots[(h % m) as usize] as usize;
            if takes(i) {
                return Some(i);
            }
            h = next_probe(h);
        }
        (0..endpoints.len().min(self.ids.len()))
            .filter(|i| takes(*i) && endpoints[*i].weight() > 0)
            .max_by_key(|i| next_probe(hash ^ self.ids[*i]))
    }

    /// Slots held by endpoint `index`.
    pub fn slots_of(&self, index: usize) -> usize {
        self.slots.iter().filter(|s| **s as usize == index).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Ep {
        weight: u32,
        healthy: bool,
    }

    impl Candidate for Ep {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn is_healthy(&self) -> bool {
            self.healthy
        }
        fn in_flight(&self) -> u32 {
            0
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect()
    }

    fn eps(weights: &[u32]) -> Vec<Ep> {
        weights
            .iter()
            .map(|w| Ep {
                weight: *w,
                healthy: true,
            })
            .collect()
    }

    fn key(i: u64) -> u64 {
        xxh64(format!("user-{i}").as_bytes(), 0)
    }

    fn pick_all(table: &MaglevTable, eps: &[Ep], keys: u64) -> Vec<usize> {
        (0..keys)
            .map(|k| table.pick(eps, key(k), false, &|_| false).unwrap())
            .collect()
    }

    #[test]
    fn table_sizes_must_be_prime() {
        for (n, prime) in [
            (0, false),
            (1, false),
            (2, true),
            (101, true),
            (65_536, false),
            (65_537, true),
            (1_000_003, true),
            (1_000_001, false),
        ] {
            assert_eq!(is_prime(n), prime, "{n}");
        }
        assert!(is_prime(DEFAULT_TABLE_SIZE) && is_prime(MAX_TABLE_SIZE));
        assert!(is_prime(MIN_TABLE_SIZE));
    }

    #[test]
    fn keys_spread_in_proportion_to_weight() {
        // (weights, allowed deviation of each share from its target, relative)
        let cases: [(&[u32], f64); 4] = [
            (&[1, 1, 1, 1, 1], 0.05),
            (&[1, 2, 3], 0.05),
            (&[10, 10, 1], 0.10),
            (&[1; 20], 0.10),
        ];
        for (weights, tolerance) in cases {
            let table = MaglevTable::build(&names(weights.len()), weights, DEFAULT_TABLE_SIZE);
            let total: u32 = weights.iter().sum();
            let keys = 100_000;
            let mut counts = vec![0u64; weights.len()];
            for i in pick_all(&table, &eps(weights), keys) {
                counts[i] += 1;
            }
            for (i, w) in weights.iter().enumerate() {
                let want = f64::from(*w) / f64::from(total);
                let slots = table.slots_of(i) as f64 / table.len() as f64;
                assert!(
                    (slots - want).abs() <= want * 0.01 + 1e-4,
                    "{weights:?}: slots of {i}: {slots} want {want}"
                );
                let got = counts[i] as f64 / keys as f64;
                assert!(
                    (got - want).abs() <= want * tolerance,
                    "{weights:?}: keys of {i}: {got} want {want}"
                );
            }
        }
    }

    #[test]
    fn the_same_endpoints_build_the_same_table_in_any_order() {
        let n = names(7);
        let weights = [1, 2, 1, 3, 1, 1, 2];
        let a = MaglevTable::build(&n, &weights, DEFAULT_TABLE_SIZE);
        assert_eq!(a, MaglevTable::build(&n, &weights, DEFAULT_TABLE_SIZE));
        // Reversed member order: every key still reaches the same endpoint name.
        let rn: Vec<String> = n.iter().rev().cloned().collect();
        let rw: Vec<u32> = weights.iter().rev().copied().collect();
        let b = MaglevTable::build(&rn, &rw, DEFAULT_TABLE_SIZE);
        let (ea, eb) = (eps(&weights), eps(&rw));
        for k in 0..10_000 {
            let x = a.pick(&ea, key(k), false, &|_| false).unwrap();
            let y = b.pick(&eb, key(k), false, &|_| false).unwrap();
            assert_eq!(n[x], rn[y], "key {k}");
        }
    }

    #[test]
    fn an_unusable_endpoint_moves_only_its_own_keys() {
        let weights = [1; 5];
        let table = MaglevTable::build(&names(5), &weights, DEFAULT_TABLE_SIZE);
        let mut endpoints = eps(&weights);
        let before = pick_all(&table, &endpoints, 10_000);
        endpoints[2].healthy = false;
        let after = pick_all(&table, &endpoints, 10_000);
        let mut moved_to = [0u64; 5];
        for (b, a) in before.iter().zip(&after) {
            if *b == 2 {
                assert_ne!(*a, 2, "a key stayed on the ejected endpoint");
                moved_to[*a] += 1;
            } else {
                assert_eq!(b, a, "a key that was not on the ejected endpoint moved");
            }
        }
        // Its keys spread over the others, not onto one neighbour.
        let moved: u64 = moved_to.iter().sum();
        assert!(moved > 1_500, "{moved}");
        for (i, m) in moved_to.iter().enumerate().filter(|(i, _)| *i != 2) {
            assert!(
                *m as f64 > moved as f64 * 0.15,
                "endpoint {i} got {m} of {moved}"
            );
        }
        // Back in service, it gets exactly its keys back.
        endpoints[2].healthy = true;
        assert_eq!(pick_all(&table, &endpoints, 10_000), before);
    }

    #[test]
    fn rebuilding_without_an_endpoint_disrupts_few_other_keys() {
        // When DNS drops a member the table is rebuilt: Maglev then moves a few keys between
        // endpoints that stayed (the paper's "minimal disruption"); bound it.
        let n = names(10);
        let weights = [1; 10];
        let full = MaglevTable::build(&n, &weights, DEFAULT_TABLE_SIZE);
        let before = pick_all(&full, &eps(&weights), 10_000);
        let mut fewer_names = n.clone();
        fewer_names.remove(4);
        let fewer = MaglevTable::build(&fewer_names, &weights[..9], DEFAULT_TABLE_SIZE);
        let after = pick_all(&fewer, &eps(&weights[..9]), 10_000);
        let mut disrupted = 0;
        for (b, a) in before.iter().zip(&after) {
            if *b != 4 && n[*b] != fewer_names[*a] {
                disrupted += 1;
            }
        }
        // Measured: 31 of 10,000 (0.3%).
        assert!(
            disrupted <= 100,
            "{disrupted} of 10,000 keys moved (bound: 1%)"
        );
    }

    #[test]
    fn every_way_out_is_bounded() {
        let weights = [1; 4];
        let table = MaglevTable::build(&names(4), &weights, MIN_TABLE_SIZE);
        let mut endpoints = eps(&weights);
        for e in &mut endpoints[..3] {
            e.healthy = false;
        }
        // One usable endpoint of four: every key finds it, by probes or the fallback.
        for k in 0..10_000 {
            assert_eq!(table.pick(&endpoints, key(k), false, &|_| false), Some(3));
        }
        // Panic mode uses every endpoint again: the key's own slot.
        let own = table.pick(&eps(&weights), key(1), false, &|_| false);
        assert_eq!(table.pick(&endpoints, key(1), true, &|_| false), own);
        // Nothing usable, or everything already tried: no endpoint.
        endpoints[3].healthy = false;
        assert_eq!(table.pick(&endpoints, key(1), false, &|_| false), None);
        assert_eq!(table.pick(&eps(&weights), key(1), false, &|_| true), None);
        // An empty table (no endpoint of weight above 0) picks nothing.
        let empty = MaglevTable::build(&names(2), &[0, 0], DEFAULT_TABLE_SIZE);
        assert!(empty.is_empty());
        assert_eq!(empty.pick(&eps(&[0, 0]), key(1), true, &|_| false), None);
    }

    #[test]
    fn a_retry_skipping_the_tried_endpoint_is_deterministic_too() {
        let weights = [1; 3];
        let table = MaglevTable::build(&names(3), &weights, DEFAULT_TABLE_SIZE);
        let endpoints = eps(&weights);
        for k in 0..1_000 {
            let first = table.pick(&endpoints, key(k), false, &|_| false).unwrap();
            let second = table.pick(&endpoints, key(k), false, &|i| i == first);
            assert!(second.is_some_and(|s| s != first));
            assert_eq!(
                second,
                table.pick(&endpoints, key(k), false, &|i| i == first)
            );
        }
    }
}
