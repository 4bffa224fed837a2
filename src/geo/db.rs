//! The GeoIP database: a MaxMind DB read fully into memory (never mmapped, so a file rewritten
//! in place cannot change under a running lookup), verified when opened, its record layout
//! settled then (see `layout`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{LookupResult, MaxMindDbError, Reader, WithinOptions};

use super::layout::{FieldMap, FieldProblem, Layout, LayoutProblem};
use super::records::{RecordTable, RecordTableBuilder};
use super::shortcut::{Record, TreeShortcut};
use super::{ContinentCode, CountryCode, GeoPoint, Location};

/// Why a GeoIP database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read GeoIP database {}: {source} (check geo.database)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a valid MaxMind DB: {source} (use a GeoIP2/GeoLite2 City or Country .mmdb, \
         or build one with `meridian geo build`)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    #[error(
        "{}: cannot tell how its records are laid out (the first has fields {}): map them with \
         geo.fields (country, continent, latitude, longitude)",
        path.display(),
        keys.join(", ")
    )]
    UnknownLayout { path: PathBuf, keys: Vec<String> },
    #[error(
        "{}: field `{}`{} holds {} at {}, not {}",
        path.display(),
        problem.field,
        problem.setting.map(|s| format!(" ({s})")).unwrap_or_default(),
        problem.found,
        problem.network,
        problem.expected
    )]
    FieldType {
        path: PathBuf,
        /// Boxed: errors stay small on the Ok path.
        problem: Box<FieldProblem>,
    },
}

/// Size, modification time and inode of a database file: when all are unchanged, a reload
/// keeps the database already in memory instead of reading and verifying it again. The inode
/// tells apart a file renamed over the old one (as `geoipupdate` does) even when it has the
/// same size and was written within the filesystem clock's tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
    /// Device and inode number.
    pub inode: (u64, u64),
}

impl FileIdentity {
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

/// The file's bytes, shared by the crate's reader and the shortcut tables' walks.
#[derive(Clone)]
struct FileBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Addresses per table whose shortcut walk is checked against the crate's when a database
/// opens.
const SHORTCUT_CHECKS: u32 = 4096;

/// An opened, verified GeoIP database.
pub struct GeoDb {
    /// Tells databases apart in the per-thread cache of recent lookups.
    id: u64,
    reader: Reader<FileBytes>,
    file: FileBytes,
    /// Lookups start 16 levels down the tree (none where a table could not be built, and no
    /// IPv6 table for an IPv4-only database).
    ipv4: Option<TreeShortcut>,
    ipv6: Option<TreeShortcut>,
    /// Every record decoded (none when the table would take more than half the file's size:
    /// lookups then decode, keeping recent records per thread).
    records: Option<RecordTable>,
    /// Settled when the file was opened: a lookup only matches on it.
    layout: Layout,
    path: PathBuf,
    /// The file as it was when read (none for data that did not come from a file).
    identity: Option<FileIdentity>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .field("layout", &self.layout.name())
            .finish()
    }
}

impl GeoDb {
    /// Open a database whose layout is detected from its records.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        Self::open_with(path, None)
    }

    /// Open a database; `fields` (from `geo.fields`) says where the place is in its records.
    pub fn open_with(path: &Path, fields: Option<&FieldMap>) -> Result<Self, GeoError> {
        let identity = FileIdentity::of(path);
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut db = Self::from_bytes_with(bytes, path, fields)?;
        db.identity = identity;
        Ok(db)
    }

    /// Whether `path` still holds the file this database was read from, read with `fields`.
    pub fn is_current(&self, path: &Path, fields: Option<&FieldMap>) -> bool {
        let same_layout = match (&self.layout, fields) {
            (Layout::Fields(mine), Some(wanted)) => mine == wanted,
            (Layout::Fields(_), None) | (_, Some(_)) => false,
            (_, None) => true,
        };
        same_layout
            && self.path == path
            && self.identity.is_some()
            && self.identity == FileIdentity::of(path)
    }

    /// 4 for a database of IPv4 networks only, 6 for one that also holds IPv6.
    pub fn ip_version(&self) -> u16 {
        self.reader.metadata().ip_version
    }

    /// Whether IPv4 and IPv6 lookups start from a shortcut table (see `shortcut`).
    pub fn has_shortcuts(&self) -> (bool, bool) {
        (self.ipv4.is_some(), self.ipv6.is_some())
    }

    /// `geoip2`, `flat` or `fields`: how records are read.
    pub fn layout_name(&self) -> &'static str {
        self.layout.name()
    }

    /// When the database was built (Unix seconds), from its metadata.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// `origin` names the data in messages; the layout is detected.
    pub fn from_bytes(bytes: Vec<u8>, origin: &Path) -> Result<Self, GeoError> {
        Self::from_bytes_with(bytes, origin, None)
    }

    pub fn from_bytes_with(
        bytes: Vec<u8>,
        origin: &Path,
        fields: Option<&FieldMap>,
    ) -> Result<Self, GeoError> {
        let invalid = |source| GeoError::Invalid {
            path: origin.to_path_buf(),
            source,
        };
        let file = FileBytes(Arc::new(bytes));
        let reader = Reader::from_source(file.clone()).map_err(invalid)?;
        verify(&reader).map_err(invalid)?;
        let (ipv4, ipv6) = shortcuts(&reader, file.as_ref());
        let layout = Layout::settle(&reader, fields).map_err(|problem| match problem {
            LayoutProblem::Unknown { keys } => GeoError::UnknownLayout {
                path: origin.to_path_buf(),
                keys,
            },
            LayoutProblem::Field(problem) => GeoError::FieldType {
                path: origin.to_path_buf(),
                problem: Box::new(problem),
            },
        })?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut db = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reader,
            file,
            ipv4,
            ipv6,
            records: None,
            layout,
            path: origin.to_path_buf(),
            identity: None,
        };
        db.records = db.record_table(db.file.0.len() / 2 / RecordTable::BYTES_PER_RECORD);
        Ok(db)
    }

    /// Every record the tree points to, decoded: `None` when there are more than `budget`
    /// (half the file's size in table bytes: a file of many tiny records), or the tree cannot
    /// be walked.
    fn record_table(&self, budget: usize) -> Option<RecordTable> {
        // A tree of N nodes has at most 2N leaves.
        let limit = usize::try_from(self.reader.metadata().node_count)
            .ok()?
            .saturating_mul(3);
        let mut seen = foldhash::HashSet::default();
        let mut records = RecordTableBuilder::default();
        for (i, result) in self
            .reader
            .networks(WithinOptions::default())
            .ok()?
            .enumerate()
        {
            let result = result.ok()?;
            if i > limit {
                return None;
            }
            if let Some(offset) = result.offset()
                && seen.insert(offset)
            {
                if records.len() >= budget {
                    return None;
                }
                records.push(offset, self.locate(&result))?;
            }
        }
        RecordTable::new(records)
    }

    /// How many records were decoded when the database opened, and the bytes they take
    /// (`None`: too many to hold, so lookups decode).
    pub fn decoded_records(&self) -> Option<(usize, usize)> {
        self.records.as_ref().map(|t| (t.len(), t.bytes()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Country, continent and coordinates of `ip`, if the database has a record for it.
    ///
    /// Answers from a small per-thread cache of recent lookups when it can: a client on a
    /// keep-alive connection sends many requests from one address, and decoding its record
    /// again each time is most of a lookup's cost.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let ip = ip.to_canonical();
        let slot = recent_slot(ip);
        let cached = RECENT.with_borrow(|recent| {
            recent
                .get(slot)
                .and_then(|entry| entry.filter(|e| e.0 == self.id && e.1 == ip))
        });
        if let Some((_, _, location)) = cached {
            return location;
        }
        let location = self.lookup_record(ip);
        RECENT.with_borrow_mut(|recent| {
            if recent.is_empty() {
                *recent = vec![None; RECENT_SLOTS];
            }
            recent[slot] = Some((self.id, ip, location));
        });
        location
    }

    /// The prefix length of the database network holding `ip` (found or not): every address
    /// in it gets the same answer, which is what a DNS client-subnet scope says.
    /// Walked from the shortcut tables when the database has them.
    pub fn network_prefix(&self, ip: IpAddr) -> Option<u8> {
        let ip = ip.to_canonical();
        let (shortcut, address) = self.shortcut_for(ip);
        if let Some(shortcut) = shortcut {
            return shortcut.network(self.file.as_ref(), address)?.1;
        }
        self.network_prefix_uncached(ip)
    }

    /// [`network_prefix`](Self::network_prefix) by the crate's walk from the root (the
    /// reference the shortcut tables are checked against).
    #[doc(hidden)]
    pub fn network_prefix_uncached(&self, ip: IpAddr) -> Option<u8> {
        let ip = ip.to_canonical();
        let result = self.reader.lookup(ip).ok()?;
        let network = result.network().ok()?;
        // An IPv4 address answered from above the IPv4 subtree has no IPv4 prefix to give.
        (network.is_ipv4() == ip.is_ipv4()).then(|| network.prefix())
    }

    /// The search tree walked for `ip` (already canonical), then its record: from the table
    /// of records decoded at open, else from the per-thread cache of decoded records when an
    /// address in any network sharing that record was looked up recently, else decoded and
    /// remembered.
    fn lookup_record(&self, ip: IpAddr) -> Option<Location> {
        let (offset, found) = self.record(ip)?;
        if let Some(location) = self.records.as_ref().and_then(|t| t.get(offset)) {
            return location;
        }
        if let Some(location) = RECORDS.with_borrow(|records| records.get(self.id, offset)) {
            return location;
        }
        // The crate's decoder starts only from its own lookup, so a record not held is found
        // twice: the shortcut's table cannot be handed to it.
        let result = match found {
            Some(result) => result,
            None => self.reader.lookup(ip).ok()?,
        };
        let location = self.locate(&result);
        RECORDS.with_borrow_mut(|records| records.put(self.id, offset, location));
        location
    }

    /// The offset of `ip`'s record in the data section (`None`: no record), by a shortcut
    /// table when there is one, else by the crate's lookup, which is then returned for
    /// decoding.
    /// The shortcut table for `ip`'s family (if the database has one) and `ip` as its bits.
    #[inline]
    fn shortcut_for(&self, ip: IpAddr) -> (Option<&TreeShortcut>, u128) {
        match ip {
            IpAddr::V4(v4) => (self.ipv4.as_ref(), u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (self.ipv6.as_ref(), u128::from(v6)),
        }
    }

    fn record(&self, ip: IpAddr) -> Option<(usize, Option<LookupResult<'_, FileBytes>>)> {
        let (shortcut, address) = self.shortcut_for(ip);
        if let Some(shortcut) = shortcut {
            return match shortcut.record(self.file.as_ref(), address)? {
                Record::Data(offset) => Some((offset, None)),
                Record::None => None,
            };
        }
        let result = self.reader.lookup(ip).ok()?;
        // No data: nothing to decode in any layout.
        Some((result.offset()?, Some(result)))
    }

    /// Where `ip`'s record is, with nothing decoded: the tree walk a new client pays (for the
    /// benchmarks).
    #[doc(hidden)]
    pub fn record_offset(&self, ip: IpAddr) -> Option<usize> {
        self.record(ip.to_canonical()).map(|(offset, _)| offset)
    }

    /// [`lookup`](Self::lookup) without either cache: the tree is walked and the record
    /// decoded every time.
    pub fn lookup_uncached(&self, ip: IpAddr) -> Option<Location> {
        let result = self.reader.lookup(ip.to_canonical()).ok()?;
        self.locate(&result)
    }

    /// The location a looked-up record gives: a function of the database and the record's
    /// offset alone, which is what lets [`RecordCache`] share it between addresses.
    fn locate(&self, result: &LookupResult<'_, FileBytes>) -> Option<Location> {
        let place = self.layout.decode(result)?;
        let country = place.country.and_then(CountryCode::parse);
        let continent = place
            .continent
            .and_then(ContinentCode::parse)
            .or_else(|| country.and_then(|c| c.continent()));
        let coords = place
            .latitude
            .zip(place.longitude)
            .filter(|(lat, lon)| (-90.0..=90.0).contains(lat) && (-180.0..=180.0).contains(lon))
            .or_else(|| continent.map(|c| c.centre()))
            .map(GeoPoint::new);
        Location::from_database(country, continent, coords)
    }
}

/// The crate's full verification, unless the metadata leaves the description or database type
/// empty (as some redistributed databases do, and the crate refuses): then the same walk of the
/// search tree and the data it points to, without those two metadata checks.
fn verify(reader: &Reader<FileBytes>) -> Result<(), MaxMindDbError> {
    let m = reader.metadata();
    if !m.description.is_empty() && !m.database_type.is_empty() {
        return reader.verify();
    }
    // A tree of N nodes has at most 2N leaves: more means a cycle.
    let limit = (m.node_count as usize).saturating_mul(3);
    let mut seen = std::collections::HashSet::new();
    let options = WithinOptions::default().include_networks_without_data();
    for (i, result) in reader.networks(options)?.enumerate() {
        if i > limit {
            return Err(MaxMindDbError::invalid_database(
                "search tree appears to have a cycle",
            ));
        }
        let result = result?;
        if let Some(offset) = result.offset()
            && seen.insert(offset)
        {
            result.decode::<serde::de::IgnoredAny>()?;
        }
    }
    Ok(())
}

/// The shortcut tables of a verified database, each kept only if it finds the same record as
/// the crate's walk for addresses spread over its whole address space.
fn shortcuts(
    reader: &Reader<FileBytes>,
    file: &[u8],
) -> (Option<TreeShortcut>, Option<TreeShortcut>) {
    let m = reader.metadata();
    let Ok(nodes) = usize::try_from(m.node_count) else {
        return (None, None);
    };
    let agrees = |shortcut: &TreeShortcut, ip: IpAddr, address: u128| {
        let theirs = reader
            .lookup(ip)
            .ok()
            .map(|r| r.offset().map_or(Record::None, Record::Data));
        shortcut.record(file, address) == theirs
    };
    // An odd multiplier spreads the checks over the bits below a table's 16 too.
    let spread = |i: u32| u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    let ipv4 = TreeShortcut::ipv4(file, nodes, m.record_size, m.ip_version).filter(|s| {
        (0..SHORTCUT_CHECKS).all(|i| {
            let ip = (spread(i) >> 96) as u32;
            agrees(s, std::net::Ipv4Addr::from(ip).into(), u128::from(ip))
        })
    });
    let ipv6 = TreeShortcut::ipv6(file, nodes, m.record_size, m.ip_version).filter(|s| {
        (0..SHORTCUT_CHECKS).all(|i| {
            // Half of them in 2000::/3, where addresses are handed out.
            let mut ip = spread(i);
            if i % 2 == 0 {
                ip = (ip >> 3) | (1 << 125);
            }
            agrees(s, std::net::Ipv6Addr::from(ip).into(), ip)
        })
    });
    (ipv4, ipv6)
}

/// Recent lookups per thread: direct-mapped by address, keyed by database and address.
const RECENT_SLOTS: usize = 256;

type RecentLookup = Option<(u64, IpAddr, Option<Location>)>;

thread_local! {
    static RECENT: RefCell<Vec<RecentLookup>> = const { RefCell::new(Vec::new()) };
}

/// The cache slot of an address (Fibonacci hashing of its bits).
fn recent_slot(ip: IpAddr) -> usize {
    let bits = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64)
        }
    };
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % RECENT_SLOTS
}

/// Decoded records per thread, for a database with too many records to decode them all when
/// it opens. Networks share records (a record per place), so new client addresses often lead
/// to a record decoded moments ago; decoding one again (walking past city names in several
/// languages, then the trigonometry of its point) costs more than the tree walk.
/// 4,096 slots of 80 bytes: 320 KiB per worker thread at most, allocated on first use.
const RECORD_SLOT_BITS: u32 = 12;
const RECORD_SLOTS: usize = 1 << RECORD_SLOT_BITS;

/// A decoded record, keyed by the database that holds it (its id, never reused, so a reloaded
/// database never answers from its predecessor's records) and its offset in the data section.
#[derive(Clone, Copy)]
struct RecordSlot {
    /// 0 for an empty slot: database ids start at 1.
    db: u64,
    offset: usize,
    location: Option<Location>,
}

const EMPTY_RECORD: RecordSlot = RecordSlot {
    db: 0,
    offset: 0,
    location: None,
};

/// Direct-mapped by offset: a new record evicts the one in its slot, so the cache never holds
/// more than [`RECORD_SLOTS`] records, and a lookup is one probe.
struct RecordCache {
    /// Allocated on a thread's first miss: threads that never locate anyone pay nothing.
    slots: Vec<RecordSlot>,
}

impl RecordCache {
    const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// Fibonacci hashing of the offset: records sit at irregular, mostly even offsets.
    fn slot(offset: usize) -> usize {
        ((offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - RECORD_SLOT_BITS)) as usize
    }

    /// `Some(location)` when the record of database `db` at `offset` is held.
    fn get(&self, db: u64, offset: usize) -> Option<Option<Location>> {
        let slot = self.slots.get(Self::slot(offset))?;
        (slot.db == db && slot.offset == offset).then_some(slot.location)
    }

    fn put(&mut self, db: u64, offset: usize, location: Option<Location>) {
        if self.slots.is_empty() {
            self.slots = vec![EMPTY_RECORD; RECORD_SLOTS];
        }
        if let Some(slot) = self.slots.get_mut(Self::slot(offset)) {
            *slot = RecordSlot {
                db,
                offset,
                location,
            };
        }
    }
}

thread_local! {
    static RECORDS: RefCell<RecordCache> = const { RefCell::new(RecordCache::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of one network, 198.51.100.0/24, in `country`.
    fn database_bytes(country: &str) -> Vec<u8> {
        let fixture = format!(
            "description: t\nnetworks:\n  - {{ cidr: 198.51.100.0/24, country: {country}, lat: 1.0, lon: 2.0 }}\n"
        );
        crate::geo::fixture::build(&fixture, Path::new("t.yaml")).unwrap()
    }

    fn db(country: &str) -> GeoDb {
        GeoDb::from_bytes(database_bytes(country), Path::new("t.mmdb")).unwrap()
    }

    #[test]
    fn recent_lookups_never_answer_for_another_database_or_address() {
        let (de, fr) = (db("DE"), db("FR"));
        // Lookups here take the shortcut tables.
        assert_eq!(de.has_shortcuts(), (true, true));
        assert_eq!(fr.has_shortcuts(), (true, true));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let country = |db: &GeoDb, ip| db.lookup(ip).and_then(|l| l.country).map(|c| c.to_string());
        for _ in 0..2 {
            assert_eq!(country(&de, ip).as_deref(), Some("DE"));
            assert_eq!(country(&fr, ip).as_deref(), Some("FR"));
        }
        assert_eq!(de.lookup(ip), de.lookup_uncached(ip));
        // Not in the database: remembered as unknown, and other addresses are still read.
        let elsewhere: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(de.lookup(elsewhere), None);
        assert_eq!(de.lookup(elsewhere), None);
        assert_eq!(
            country(&de, "198.51.100.200".parse().unwrap()).as_deref(),
            Some("DE")
        );
        // An IPv4-mapped IPv6 address is the same client.
        assert_eq!(
            country(&de, "::ffff:198.51.100.7".parse().unwrap()).as_deref(),
            Some("DE")
        );
    }

    fn offset_of(db: &GeoDb, ip: IpAddr) -> usize {
        db.reader.lookup(ip).unwrap().offset().unwrap()
    }

    #[test]
    fn record_cache_hits_misses_and_evicts() {
        let mut cache = RecordCache::new();
        let here = Some(Location {
            country: CountryCode::parse("DE"),
            ..Location::default()
        });
        assert_eq!(cache.get(1, 96), None);
        cache.put(1, 96, here);
        assert_eq!(cache.get(1, 96), Some(here));
        // Another offset, or the same offset in another database, is a miss.
        assert_eq!(cache.get(1, 97), None);
        assert_eq!(cache.get(2, 96), None);
        // A record known to be empty is a hit too.
        cache.put(1, 200, None);
        assert_eq!(cache.get(1, 200), Some(None));

        // Far more records than slots: never more than RECORD_SLOTS held, and a record
        // evicts the one in its slot.
        for offset in 0..RECORD_SLOTS * 8 {
            cache.put(3, offset, here);
        }
        assert_eq!(cache.slots.len(), RECORD_SLOTS);
        let held = (0..RECORD_SLOTS * 8)
            .filter(|o| cache.get(3, *o).is_some())
            .count();
        assert!(held <= RECORD_SLOTS && held > RECORD_SLOTS / 2, "{held}");
        let first = (0..RECORD_SLOTS * 8)
            .find(|o| cache.get(3, *o).is_some())
            .unwrap();
        let rival = (first + 1..usize::MAX)
            .find(|o| RecordCache::slot(*o) == RecordCache::slot(first))
            .unwrap();
        cache.put(3, rival, None);
        assert_eq!(cache.get(3, first), None);
        assert_eq!(cache.get(3, rival), Some(None));
    }

    #[test]
    fn a_file_renamed_over_is_never_current_even_with_the_same_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        let write = |country: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, database_bytes(country)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("DE");
        let de = GeoDb::open(&path).unwrap();
        assert!(de.is_current(&path, None));
        let before = FileIdentity::of(&path).unwrap();
        write("FR");
        let after = FileIdentity::of(&path).unwrap();
        // The same size; the time may well be the same tick.
        assert_eq!(before.len, after.len);
        assert_ne!(before, after);
        assert!(!de.is_current(&path, None));
        assert!(GeoDb::open(&path).unwrap().is_current(&path, None));
    }

    #[test]
    fn records_decoded_at_open_answer_without_the_per_thread_cache() {
        let de = db("DE");
        // One record, and its index slots.
        let (records, bytes) = de.decoded_records().unwrap();
        assert_eq!(records, 1);
        assert!(bytes <= RecordTable::BYTES_PER_RECORD + 4, "{bytes}");
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let offset = offset_of(&de, ip);
        let answer = de.lookup_record(ip);
        assert_eq!(answer.and_then(|l| l.country), CountryCode::parse("DE"));
        assert_eq!(answer, de.lookup_uncached(ip));
        // Answered from the table: nothing was decoded into the thread's cache.
        assert_eq!(RECORDS.with_borrow(|r| r.get(de.id, offset)), None);
        assert_eq!(de.lookup_record("203.0.113.9".parse().unwrap()), None);
        // More records than the budget: no table.
        assert!(de.record_table(0).is_none());
        assert_eq!(de.record_table(1).map(|t| t.len()), Some(1));
    }

    #[test]
    fn decoded_records_are_reused_and_never_cross_databases() {
        // Databases whose records were too many to decode at open.
        let (mut de, mut fr) = (db("DE"), db("FR"));
        de.records = None;
        fr.records = None;
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        // The same shape: the record sits at the same offset in both, as in a reloaded file.
        let offset = offset_of(&de, ip);
        assert_eq!(offset, offset_of(&fr, ip));
        let country = |l: Option<Location>| l.and_then(|l| l.country).map(|c| c.to_string());

        assert_eq!(country(de.lookup_record(ip)).as_deref(), Some("DE"));
        let held = RECORDS.with_borrow(|r| r.get(de.id, offset));
        assert_eq!(held, Some(de.lookup_uncached(ip)));
        // The other database (a reload's successor) decodes its own record.
        assert_eq!(country(fr.lookup_record(ip)).as_deref(), Some("FR"));
        assert_eq!(country(de.lookup_record(ip)).as_deref(), Some("DE"));

        // Another address in a network sharing the record answers from the cache: planted
        // here, so the answer shows where it came from.
        let planted = Some(Location {
            country: CountryCode::parse("JP"),
            ..Location::default()
        });
        RECORDS.with_borrow_mut(|r| r.put(de.id, offset, planted));
        let neighbour: IpAddr = "198.51.100.200".parse().unwrap();
        assert_eq!(de.lookup_record(neighbour), planted);
        assert_eq!(country(fr.lookup_record(neighbour)).as_deref(), Some("FR"));
        // An address with no record never reaches the cache.
        assert_eq!(de.lookup_record("203.0.113.9".parse().unwrap()), None);
    }
}
