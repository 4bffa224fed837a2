//! The GeoIP database: a MaxMind DB read fully into memory (never mmapped, so a file rewritten
//! in place cannot change under a running lookup), verified when opened, its record layout
//! settled then (see `layout`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{MaxMindDbError, Reader, WithinOptions};

use super::layout::{FieldMap, FieldProblem, Layout, LayoutProblem};
use super::{ContinentCode, CountryCode, GeoPoint, Location, LocationSource};

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

/// Size and modification time of a database file: when both are unchanged, a reload keeps
/// the database already in memory instead of reading and verifying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
}

impl FileIdentity {
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// An opened, verified GeoIP database.
pub struct GeoDb {
    /// Tells databases apart in the per-thread cache of recent lookups.
    id: u64,
    reader: Reader<Vec<u8>>,
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
        let reader = Reader::from_source(bytes).map_err(invalid)?;
        verify(&reader).map_err(invalid)?;
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
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reader,
            layout,
            path: origin.to_path_buf(),
            identity: None,
        })
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
        let location = self.lookup_uncached(ip);
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
    pub fn network_prefix(&self, ip: IpAddr) -> Option<u8> {
        let ip = ip.to_canonical();
        let result = self.reader.lookup(ip).ok()?;
        let network = result.network().ok()?;
        // An IPv4 address answered from above the IPv4 subtree has no IPv4 prefix to give.
        (network.is_ipv4() == ip.is_ipv4()).then(|| network.prefix())
    }

    /// [`lookup`](Self::lookup) without the cache: the database is read every time.
    pub fn lookup_uncached(&self, ip: IpAddr) -> Option<Location> {
        let result = self.reader.lookup(ip.to_canonical()).ok()?;
        let place = self.layout.decode(&result)?;
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
        if country.is_none() && continent.is_none() && coords.is_none() {
            return None;
        }
        Some(Location {
            country,
            continent,
            coords,
            region: None,
            source: LocationSource::Database,
        })
    }
}

/// The crate's full verification, unless the metadata leaves the description or database type
/// empty (as some redistributed databases do, and the crate refuses): then the same walk of the
/// search tree and the data it points to, without those two metadata checks.
fn verify(reader: &Reader<Vec<u8>>) -> Result<(), MaxMindDbError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn db(country: &str) -> GeoDb {
        let fixture = format!(
            "description: t\nnetworks:\n  - {{ cidr: 198.51.100.0/24, country: {country}, lat: 1.0, lon: 2.0 }}\n"
        );
        let bytes = crate::geo::fixture::build(&fixture, Path::new("t.yaml")).unwrap();
        GeoDb::from_bytes(bytes, Path::new("t.mmdb")).unwrap()
    }

    #[test]
    fn recent_lookups_never_answer_for_another_database_or_address() {
        let (de, fr) = (db("DE"), db("FR"));
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
}
