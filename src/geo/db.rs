//! The GeoIP database: a MaxMind DB read fully into memory (never mmapped, so a file rewritten
//! in place cannot change under a running lookup), verified when opened.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::Reader;
use serde::Deserialize;

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
    path: PathBuf,
    /// The file as it was when read (none for data that did not come from a file).
    identity: Option<FileIdentity>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// Only the fields steering needs; the rest of a City record is skipped, not decoded.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<IsoCode<'a>>,
    #[serde(borrow, default)]
    continent: Option<Code<'a>>,
    #[serde(default)]
    location: Option<Coordinates>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Coordinates {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let identity = FileIdentity::of(path);
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut db = Self::from_bytes(bytes, path)?;
        db.identity = identity;
        Ok(db)
    }

    /// Whether `path` still holds the file this database was read from.
    pub fn is_current(&self, path: &Path) -> bool {
        self.path == path && self.identity.is_some() && self.identity == FileIdentity::of(path)
    }

    /// When the database was built (Unix seconds), from its metadata.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// `origin` names the data in messages.
    pub fn from_bytes(bytes: Vec<u8>, origin: &Path) -> Result<Self, GeoError> {
        let invalid = |source| GeoError::Invalid {
            path: origin.to_path_buf(),
            source,
        };
        let reader = Reader::from_source(bytes).map_err(invalid)?;
        reader.verify().map_err(invalid)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reader,
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
        let record: Record<'_> = result.decode().ok()??;
        let country = record
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| record.registered_country.and_then(|c| c.iso_code))
            .and_then(CountryCode::parse);
        let continent = record
            .continent
            .and_then(|c| c.code)
            .and_then(ContinentCode::parse)
            .or_else(|| country.and_then(|c| c.continent()));
        let coords = record
            .location
            .and_then(|l| Some((l.latitude?, l.longitude?)))
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
