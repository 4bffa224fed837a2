//! Where clients land: requests counted by (client country, region that served them).
//!
//! Written on the request path by `proxy` (one relaxed atomic add per routed request, into a
//! table allocated once per process); read once a second by the status sampler in `control`,
//! which turns the running totals into windowed shares. Bounded by construction: every
//! two-letter code plus "unknown", times the region ids a table can have, so it may be
//! exported without a client-chosen label.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::geo::CountryCode;

/// Every two-letter code (`AA`…`ZZ`), then one slot for clients without a country.
pub const COUNTRY_SLOTS: usize = 26 * 26 + 1;
/// The slot of clients whose country is unknown.
pub const UNKNOWN_COUNTRY: usize = 26 * 26;
/// Region ids counted (`steer::MAX_REGIONS`; a table has no more regions than that).
pub const REGION_SLOTS: usize = 64;

/// Running totals per (country slot, region id). `u32` keeps the table at 173 KB; the sampler
/// reads it every second and takes wrapping differences, so a wrap is harmless.
pub struct Landing {
    counts: Box<[AtomicU32]>,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Landing")
    }
}

impl Default for Landing {
    fn default() -> Self {
        Self::new()
    }
}

/// The slot of a country code (`None` or anything not two ASCII letters: unknown).
pub fn country_slot(country: Option<CountryCode>) -> usize {
    let Some(country) = country else {
        return UNKNOWN_COUNTRY;
    };
    match country.as_str().as_bytes() {
        [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => {
            usize::from(a - b'A') * 26 + usize::from(b - b'A')
        }
        _ => UNKNOWN_COUNTRY,
    }
}

/// The code of a slot: `None` for the unknown slot (or one out of range).
pub fn slot_country(slot: usize) -> Option<String> {
    if slot >= UNKNOWN_COUNTRY {
        return None;
    }
    let letters = [b'A' + (slot / 26) as u8, b'A' + (slot % 26) as u8];
    std::str::from_utf8(&letters).ok().map(str::to_owned)
}

impl Landing {
    pub fn new() -> Self {
        Self {
            counts: (0..COUNTRY_SLOTS * REGION_SLOTS)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    /// Count one request from `country` served by `region`: one relaxed add, nothing else.
    #[inline]
    pub fn count(&self, country: Option<CountryCode>, region: u8) {
        let region = usize::from(region);
        if region < REGION_SLOTS
            && let Some(cell) = self
                .counts
                .get(country_slot(country) * REGION_SLOTS + region)
        {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Copy the running totals, indexed `country_slot * REGION_SLOTS + region`.
    pub fn snapshot(&self, into: &mut Vec<u32>) {
        into.clear();
        into.extend(self.counts.iter().map(|c| c.load(Ordering::Relaxed)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        for (code, slot) in [("AA", 0), ("DE", 3 * 26 + 4), ("ZZ", 675)] {
            let parsed = CountryCode::parse(code);
            assert_eq!(country_slot(parsed), slot, "{code}");
            assert_eq!(slot_country(slot).as_deref(), Some(code));
        }
        assert_eq!(country_slot(None), UNKNOWN_COUNTRY);
        assert_eq!(slot_country(UNKNOWN_COUNTRY), None);
        assert_eq!(slot_country(usize::MAX), None);
    }

    #[test]
    fn counts_by_country_and_region_and_ignores_out_of_range_regions() {
        let landing = Landing::new();
        let de = CountryCode::parse("de");
        landing.count(de, 1);
        landing.count(de, 1);
        landing.count(None, 0);
        landing.count(de, 200);
        let mut totals = Vec::new();
        landing.snapshot(&mut totals);
        assert_eq!(totals.len(), COUNTRY_SLOTS * REGION_SLOTS);
        assert_eq!(totals[country_slot(de) * REGION_SLOTS + 1], 2);
        assert_eq!(totals[UNKNOWN_COUNTRY * REGION_SLOTS], 1);
        assert_eq!(totals.iter().map(|&c| u64::from(c)).sum::<u64>(), 3);
    }
}
