//! Where a client is: its address (socket peer or trusted X-Forwarded-For), then its location
//! from CIDR overrides or the GeoIP database (one file, or one per address family).
//!
//! Built by the table compiler; read on every request. Nothing here does I/O after start-up.
//! Errors: [`GeoError`], loading the database, with the I/O or MaxMind cause as source, or
//! the field whose type does not fit the layout.

mod codes;
mod db;
pub mod fixture;
mod layout;
mod records;
mod shortcut;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

pub use codes::{ContinentCode, CountryCode};
pub use db::{FileIdentity, GeoDb, GeoError};
pub use layout::{FieldMap, FieldPath, MAX_PATH_LEN, MAX_PATH_SEGMENTS};

/// Index of a region in the routing table (a CIDR override may name one).
pub type RegionId = u8;

/// How the client's location was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocationSource {
    /// A `geo.overrides` CIDR matched.
    Override,
    /// The GeoIP database knew the address.
    Database,
    /// Nothing knew it (private address, no database, no record).
    #[default]
    Unknown,
}

impl LocationSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Override => "override",
            Self::Database => "geoip",
            Self::Unknown => "unknown",
        }
    }
}

/// A place on the globe: degrees as given, and its unit vector on the sphere, worked out
/// once (when a GeoIP answer is decoded or the config compiles) so ranking regions by
/// distance for a request takes no trigonometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
    unit: [f64; 3],
}

impl GeoPoint {
    /// The point at (latitude, longitude) in degrees.
    pub fn new((lat, lon): (f64, f64)) -> Self {
        let (sin_lat, cos_lat) = lat.to_radians().sin_cos();
        let (sin_lon, cos_lon) = lon.to_radians().sin_cos();
        Self {
            lat,
            lon,
            unit: [cos_lat * cos_lon, cos_lat * sin_lon, sin_lat],
        }
    }

    /// Latitude and longitude in degrees.
    pub fn degrees(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }

    /// The cosine of the angle between two points: larger is nearer.
    pub fn closeness(&self, other: &GeoPoint) -> f64 {
        let (a, b) = (self.unit, other.unit);
        a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    }
}

/// Where a client is, as far as Meridian knows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Location {
    pub country: Option<CountryCode>,
    pub continent: Option<ContinentCode>,
    pub coords: Option<GeoPoint>,
    /// An override that names a region outright.
    pub region: Option<RegionId>,
    pub source: LocationSource,
}

impl Location {
    /// What a GeoIP record gives: nothing when it names neither a country, a continent nor a
    /// point.
    fn from_database(
        country: Option<CountryCode>,
        continent: Option<ContinentCode>,
        coords: Option<GeoPoint>,
    ) -> Option<Self> {
        if country.is_none() && continent.is_none() && coords.is_none() {
            return None;
        }
        Some(Self {
            country,
            continent,
            coords,
            region: None,
            source: LocationSource::Database,
        })
    }
}

/// How the client address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// The TCP peer itself.
    Peer,
    /// X-Forwarded-For, believed because the peer is a trusted proxy.
    ForwardedFor,
}

/// A CIDR override, compiled.
#[derive(Debug, Clone)]
pub struct GeoOverride {
    pub net: IpNet,
    pub location: Location,
}

/// Client address and location resolution: trusted proxies, overrides, database.
#[derive(Debug, Default)]
pub struct GeoResolver {
    pub trusted_proxies: Vec<IpNet>,
    /// Longest prefix first, so the first match is the most specific.
    pub overrides: Vec<GeoOverride>,
    pub database: Option<Arc<GeoDb>>,
    /// The IPv6 file when `geo.database` names two; IPv4 clients stay with `database`.
    pub database_v6: Option<Arc<GeoDb>>,
}

impl GeoResolver {
    pub fn new(
        trusted_proxies: Vec<IpNet>,
        mut overrides: Vec<GeoOverride>,
        database: Option<Arc<GeoDb>>,
    ) -> Self {
        overrides.sort_by_key(|o| std::cmp::Reverse(o.net.prefix_len()));
        Self {
            trusted_proxies,
            overrides,
            database,
            database_v6: None,
        }
    }

    /// Answer IPv6 clients from `v6` instead of the main database.
    pub fn with_ipv6_database(mut self, v6: Option<Arc<GeoDb>>) -> Self {
        self.database_v6 = v6;
        self
    }

    /// When the oldest database in use was built (Unix seconds): what a staleness alert
    /// needs when IPv4 and IPv6 come from separate files.
    pub fn oldest_build_epoch(&self) -> Option<u64> {
        [&self.database, &self.database_v6]
            .into_iter()
            .flatten()
            .map(|db| db.build_epoch())
            .min()
    }

    /// The database that answers `ip` (already canonical).
    fn database_for(&self, ip: IpAddr) -> Option<&GeoDb> {
        match (&self.database_v6, ip) {
            (Some(v6), IpAddr::V6(_)) => Some(v6),
            _ => self.database.as_deref(),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the peer, unless the peer is a trusted proxy, in which case the
    /// right-most X-Forwarded-For entry that is not itself a trusted proxy.
    ///
    /// An untrusted peer can never choose its own location. When every entry is trusted the
    /// left-most is used; an unparseable entry stops the walk at the last good hop, since
    /// nothing to its left can be believed.
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> (IpAddr, AddrSource) {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return (peer, AddrSource::Peer);
        }
        let mut last = (peer, AddrSource::Peer);
        for value in forwarded_for.rev() {
            let Some(text) = crate::http1::headers::as_text(value) else {
                return last;
            };
            for entry in text.rsplit(',') {
                let Some(ip) = parse_forwarded_entry(entry) else {
                    return last;
                };
                last = (ip, AddrSource::ForwardedFor);
                if !self.is_trusted(ip) {
                    return last;
                }
            }
        }
        last
    }

    /// The client's location: the most specific override, else the database, else unknown.
    pub fn locate(&self, ip: IpAddr) -> Location {
        let ip = ip.to_canonical();
        if let Some(o) = self.overrides.iter().find(|o| o.net.contains(&ip)) {
            return o.location;
        }
        if let Some(db) = self.database_for(ip)
            && let Some(location) = db.lookup(ip)
        {
            return location;
        }
        Location::default()
    }
}

impl GeoResolver {
    /// [`locate`](Self::locate), and the prefix length of the network the answer holds for
    /// (the override's CIDR, else the database's network), when one is known.
    pub fn locate_with_prefix(&self, ip: IpAddr) -> (Location, Option<u8>) {
        let ip = ip.to_canonical();
        if let Some(o) = self.overrides.iter().find(|o| o.net.contains(&ip)) {
            return (o.location, Some(o.net.prefix_len()));
        }
        let prefix = self.database_for(ip).and_then(|db| db.network_prefix(ip));
        (self.locate(ip), prefix)
    }

    /// The shortest prefix of `ip` that holds no address of an override `ip` is not in: any
    /// shorter one takes in part of such an override, whose addresses are located otherwise
    /// (an override nested in the one or the database network that located `ip`).
    pub fn prefix_clear_of_other_overrides(&self, ip: IpAddr) -> u8 {
        let ip = ip.to_canonical();
        self.overrides
            .iter()
            .filter(|o| !o.net.contains(&ip))
            .filter_map(|o| common_prefix(ip, o.net.network()))
            // The first bit where `ip` leaves the override's network.
            .map(|bits| bits.saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}

/// How many leading bits two addresses of one family share (`None` across families).
fn common_prefix(a: IpAddr, b: IpAddr) -> Option<u8> {
    let bits = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => return None,
    };
    u8::try_from(bits).ok()
}

/// One X-Forwarded-For entry: `ip`, `ip:port`, `[v6]:port` (ports are dropped).
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// Great-circle distance in kilometres (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn resolver(trusted: &[&str]) -> GeoResolver {
        GeoResolver::new(
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
            Vec::new(),
            None,
        )
    }

    fn xff(values: &[&str]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn client_address_table() {
        let r = resolver(&["127.0.0.1/32", "10.0.0.0/8"]);
        let cases: &[(&str, &[&str], &str, AddrSource)] = &[
            // untrusted peer: header ignored
            (
                "192.0.2.1",
                &["198.51.100.7"],
                "192.0.2.1",
                AddrSource::Peer,
            ),
            // trusted peer: right-most untrusted entry
            (
                "127.0.0.1",
                &["198.51.100.7"],
                "198.51.100.7",
                AddrSource::ForwardedFor,
            ),
            (
                "127.0.0.1",
                &["203.0.113.9, 198.51.100.7, 10.1.1.1"],
                "198.51.100.7",
                AddrSource::ForwardedFor,
            ),
            // several headers: the last header holds the right-most entries
            (
                "127.0.0.1",
                &["203.0.113.9", "198.51.100.7"],
                "198.51.100.7",
                AddrSource::ForwardedFor,
            ),
            // all trusted: the left-most
            (
                "127.0.0.1",
                &["10.0.0.2, 10.0.0.3"],
                "10.0.0.2",
                AddrSource::ForwardedFor,
            ),
            // garbage stops the walk at the last good hop
            (
                "127.0.0.1",
                &["198.51.100.7, junk, 10.0.0.3"],
                "10.0.0.3",
                AddrSource::ForwardedFor,
            ),
            ("127.0.0.1", &["junk"], "127.0.0.1", AddrSource::Peer),
            // ports and brackets
            (
                "127.0.0.1",
                &["[2001:db8::1]:443"],
                "2001:db8::1",
                AddrSource::ForwardedFor,
            ),
            (
                "127.0.0.1",
                &["198.51.100.7:5555"],
                "198.51.100.7",
                AddrSource::ForwardedFor,
            ),
            // no header
            ("127.0.0.1", &[], "127.0.0.1", AddrSource::Peer),
            // IPv4-mapped peer is canonicalised before the trust check
            (
                "::ffff:127.0.0.1",
                &["198.51.100.7"],
                "198.51.100.7",
                AddrSource::ForwardedFor,
            ),
        ];
        for (peer, values, want, source) in cases {
            let headers = xff(values);
            let got = r.client_addr(
                peer.parse().unwrap(),
                headers.iter().map(HeaderValue::as_bytes),
            );
            assert_eq!(
                got,
                (want.parse().unwrap(), *source),
                "peer {peer} xff {values:?}"
            );
        }
    }

    #[test]
    fn most_specific_override_wins() {
        let wide = GeoOverride {
            net: "10.0.0.0/8".parse().unwrap(),
            location: Location {
                country: CountryCode::parse("US"),
                source: LocationSource::Override,
                ..Location::default()
            },
        };
        let narrow = GeoOverride {
            net: "10.1.0.0/16".parse().unwrap(),
            location: Location {
                country: CountryCode::parse("DE"),
                source: LocationSource::Override,
                ..Location::default()
            },
        };
        let r = GeoResolver::new(Vec::new(), vec![wide, narrow], None);
        assert_eq!(
            r.locate("10.1.2.3".parse().unwrap()).country,
            CountryCode::parse("DE")
        );
        assert_eq!(
            r.locate("10.2.2.3".parse().unwrap()).country,
            CountryCode::parse("US")
        );
        assert_eq!(
            r.locate("192.0.2.1".parse().unwrap()).source,
            LocationSource::Unknown
        );
    }

    #[test]
    fn distances_are_plausible() {
        let dublin = (53.3, -6.3);
        let virginia = (38.9, -77.4);
        let d = distance_km(dublin, virginia);
        assert!((5300.0..5600.0).contains(&d), "{d}");
        assert_eq!(distance_km(dublin, dublin), 0.0);
    }

    /// The network an answer holds for comes from the file that answers the client: an IPv6
    /// client's from the IPv6 database when `geo.database` names two.
    #[test]
    fn network_prefixes_come_from_the_database_that_answers() {
        let demo = Arc::new(
            GeoDb::open(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/geoip/demo-city.mmdb"
            )))
            .unwrap(),
        );
        let v6_only =
            GeoResolver::new(Vec::new(), Vec::new(), None).with_ipv6_database(Some(demo.clone()));
        let ip: IpAddr = "2001:db8:1::".parse().unwrap();
        let (location, prefix) = v6_only.locate_with_prefix(ip);
        assert!(location.country.is_some());
        assert_eq!(prefix, Some(48));
        let (_, v4_prefix) = v6_only.locate_with_prefix("198.51.100.7".parse().unwrap());
        assert_eq!(v4_prefix, None, "no IPv4 database");
    }

    #[test]
    fn prefixes_clear_of_overrides_stop_where_the_address_leaves_them() {
        let over = |cidr: &str| GeoOverride {
            net: cidr.parse().unwrap(),
            location: Location::default(),
        };
        let geo = GeoResolver::new(
            Vec::new(),
            vec![
                over("10.9.0.0/16"),
                over("10.9.8.0/26"),
                over("2001:db8::/32"),
            ],
            None,
        );
        let clear = |ip: &str| geo.prefix_clear_of_other_overrides(ip.parse().unwrap());
        // Inside the /16, beside the /26: the first bit where it leaves the /26.
        assert_eq!(clear("10.9.8.128"), 25);
        assert_eq!(clear("10.9.0.0"), 21);
        // Inside both: nothing to stay clear of.
        assert_eq!(clear("10.9.8.1"), 0);
        // An IPv4-mapped address is an IPv4 one; other families never count.
        assert_eq!(clear("::ffff:10.9.8.128"), 25);
        assert_eq!(clear("2001:db9::"), 32);
        assert_eq!(clear("192.0.2.1"), 1);
    }
}
