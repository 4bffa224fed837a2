//! The GeoIP database: a MaxMind DB read fully into memory (never mmapped, so a file rewritten
//! in place cannot change under a running lookup), verified when opened.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;

use super::{ContinentCode, CountryCode, Location, LocationSource};

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
        Ok(Self {
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
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
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
            .or_else(|| continent.map(|c| c.centre()));
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
