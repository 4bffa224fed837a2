//! Every record of a GeoIP database decoded once, when [`GeoDb`](super::GeoDb) opens the
//! file: after the tree walk, a new client's place is a read from this table instead of a
//! decode of its record (city names in several languages to skip, from cold memory).
//!
//! A City database maps millions of networks to a few hundred thousand records, so the table
//! is small beside the file: 24 bytes per record and at most 4 more of index.

use super::{ContinentCode, CountryCode, GeoPoint, Location};

/// One decoded record, keyed by its offset in the data section.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    /// Degrees; NaN when the record gives no point.
    lat: f64,
    lon: f64,
    offset: u32,
    /// `[0, 0]` for none: codes are letters.
    country: [u8; 2],
    continent: [u8; 2],
}

impl Entry {
    fn new(offset: u32, location: Option<Location>) -> Self {
        let location = location.unwrap_or_default();
        let (lat, lon) = location
            .coords
            .map_or((f64::NAN, f64::NAN), |p| p.degrees());
        Self {
            lat,
            lon,
            offset,
            country: location.country.map_or([0; 2], CountryCode::raw),
            continent: location.continent.map_or([0; 2], ContinentCode::raw),
        }
    }

    /// What [`GeoDb::locate`](super::GeoDb) gave for the record: nothing when it found neither
    /// a country, a continent nor a point.
    fn location(&self) -> Option<Location> {
        let country = (self.country != [0; 2]).then(|| CountryCode::from_raw(self.country));
        let continent = (self.continent != [0; 2]).then(|| ContinentCode::from_raw(self.continent));
        let coords = (!self.lat.is_nan()).then(|| GeoPoint::new((self.lat, self.lon)));
        Location::from_database(country, continent, coords)
    }
}

/// Records as they are decoded, in any order.
#[derive(Default)]
pub struct RecordTableBuilder {
    /// Compact from the start: a decoded [`Location`] is three times an entry's size.
    entries: Vec<Entry>,
}

impl RecordTableBuilder {
    /// Add the record at `offset`; `None` when the offset does not fit 32 bits, which no
    /// MaxMind DB's pointers reach. A record pushed twice is held once.
    pub fn push(&mut self, offset: usize, location: Option<Location>) -> Option<()> {
        self.entries
            .push(Entry::new(u32::try_from(offset).ok()?, location));
        Some(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The decoded records of one database, sorted by offset, with an index of where each run
/// of offsets starts so a lookup reads one index slot and then, on average, about one entry.
pub struct RecordTable {
    entries: Box<[Entry]>,
    /// `starts[b]`: the first entry whose offset, shifted right by `shift`, is at least `b`;
    /// one slot more than there are runs, so every run has an end.
    starts: Box<[u32]>,
    shift: u32,
}

impl std::fmt::Debug for RecordTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTable")
            .field("records", &self.entries.len())
            .field("shift", &self.shift)
            .finish_non_exhaustive()
    }
}

impl RecordTable {
    /// The most a record costs: its entry and an index slot.
    pub const BYTES_PER_RECORD: usize = std::mem::size_of::<Entry>() + 4;

    /// The table of the records pushed into `builder`.
    pub fn new(builder: RecordTableBuilder) -> Option<Self> {
        let mut entries = builder.entries;
        entries.sort_unstable_by_key(|e| e.offset);
        entries.dedup_by_key(|e| e.offset);
        let count = u32::try_from(entries.len()).ok()?;
        let last = entries.last().map_or(0, |e| e.offset);
        // Runs of 2^shift bytes of data section, about as many runs as records.
        let mut shift = 0;
        while (u64::from(last) >> shift) + 1 > u64::from(count.max(1)) {
            shift += 1;
        }
        let runs = (u64::from(last) >> shift) as usize + 1;
        let mut starts = Vec::with_capacity(runs + 1);
        let mut next = 0usize;
        for run in 0..=runs {
            while next < entries.len()
                && ((u64::from(entries[next].offset) >> shift) as usize) < run
            {
                next += 1;
            }
            starts.push(next as u32);
        }
        Some(Self {
            entries: entries.into_boxed_slice(),
            starts: starts.into_boxed_slice(),
            shift,
        })
    }

    /// `Some(place)` for a record in the table (`Some(None)`: a record that gives no place),
    /// `None` for an offset the table does not hold.
    pub fn get(&self, offset: usize) -> Option<Option<Location>> {
        let offset = u32::try_from(offset).ok()?;
        let run = (u64::from(offset) >> self.shift) as usize;
        let start = *self.starts.get(run)? as usize;
        let end = *self.starts.get(run + 1)? as usize;
        self.entries
            .get(start..end)?
            .iter()
            .find(|e| e.offset == offset)
            .map(Entry::location)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries) + std::mem::size_of_val(&*self.starts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::LocationSource;

    fn place(country: &str, point: Option<(f64, f64)>) -> Option<Location> {
        Some(Location {
            country: CountryCode::parse(country),
            continent: CountryCode::parse(country).and_then(|c| c.continent()),
            coords: point.map(GeoPoint::new),
            region: None,
            source: LocationSource::Database,
        })
    }

    fn table_of(records: Vec<(usize, Option<Location>)>) -> Option<RecordTable> {
        let mut builder = RecordTableBuilder::default();
        for (offset, location) in records {
            builder.push(offset, location)?;
        }
        RecordTable::new(builder)
    }

    #[test]
    fn entries_are_24_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 24);
    }

    #[test]
    fn every_record_answers_exactly_and_others_are_absent() {
        let mut rng = fastrand::Rng::with_seed(3);
        // Irregular offsets, dense in places and sparse in others, as in a data section.
        let mut offset = 0usize;
        let mut records = Vec::new();
        for i in 0..5000 {
            offset += if i % 100 == 0 {
                rng.usize(1..100_000)
            } else {
                rng.usize(1..80)
            };
            let location = match i % 4 {
                0 => place(
                    "DE",
                    Some((rng.f64() * 180.0 - 90.0, rng.f64() * 360.0 - 180.0)),
                ),
                1 => place("JP", None),
                2 => None,
                _ => Some(Location {
                    continent: ContinentCode::parse("SA"),
                    source: LocationSource::Database,
                    ..Location::default()
                }),
            };
            records.push((offset, location));
        }
        let mut shuffled = records.clone();
        rng.shuffle(&mut shuffled);
        let table = table_of(shuffled).unwrap();
        assert_eq!(table.len(), records.len());
        // About one run per record: a lookup scans few entries.
        assert!(table.starts.len() <= records.len() + 1, "{table:?}");
        assert!(table.bytes() <= records.len() * RecordTable::BYTES_PER_RECORD + 4);
        let longest = table.starts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(longest <= 64, "{longest}");
        for (offset, location) in &records {
            assert_eq!(table.get(*offset), Some(*location), "{offset}");
        }
        let held: std::collections::HashSet<_> = records.iter().map(|r| r.0).collect();
        for probe in (0..offset + 1000).step_by(7) {
            if !held.contains(&probe) {
                assert_eq!(table.get(probe), None, "{probe}");
            }
        }
        assert_eq!(table.get(usize::MAX), None);
        assert_eq!(table.get(u32::MAX as usize), None);
    }

    #[test]
    fn small_and_degenerate_tables() {
        let empty = table_of(Vec::new()).unwrap();
        assert_eq!(empty.get(0), None);
        let one = table_of(vec![(0, place("FR", Some((48.8, 2.3))))]).unwrap();
        assert_eq!(one.get(0), Some(place("FR", Some((48.8, 2.3)))));
        assert_eq!(one.get(1), None);
        // The largest offset 32 bits hold, and one beyond.
        let far = table_of(vec![(7, None), (u32::MAX as usize, place("US", None))]);
        let far = far.unwrap();
        assert_eq!(far.get(u32::MAX as usize), Some(place("US", None)));
        assert_eq!(far.get(7), Some(None));
        assert!(table_of(vec![(u32::MAX as usize + 1, None)]).is_none());
        let lone_far = table_of(vec![(u32::MAX as usize, None)]).unwrap();
        assert_eq!(lone_far.get(u32::MAX as usize), Some(None));
        assert_eq!(lone_far.get(0), None);
        // An offset given twice is held once.
        let twice = table_of(vec![(5, None), (5, None)]).unwrap();
        assert_eq!(twice.len(), 1);
    }
}
