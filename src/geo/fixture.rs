//! `meridian geo build`: turn a small YAML fixture into a City-style MaxMind DB.
//!
//! Lets users (and the demo) have GeoIP data for their own ranges without downloading anything.
//! The output is read back and checked before it is returned.

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::{Deserialize, Serialize};

use super::{ContinentCode, CountryCode, GeoDb};
use crate::config::{ConfigError, Problems, YamlPath, parse_document};

/// The fixture file: a description and a list of networks with their place.
#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub description: String,
    #[serde(default = "default_database_type")]
    pub database_type: String,
    pub networks: Vec<FixtureNetwork>,
}

#[derive(Debug, Deserialize)]
pub struct FixtureNetwork {
    pub cidr: String,
    /// ISO country code.
    pub country: String,
    /// Continent code; derived from the country when left out.
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub country_name: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    pub lat: f64,
    pub lon: f64,
}

fn default_database_type() -> String {
    "GeoIP2-City".to_owned()
}

#[derive(Serialize)]
struct Names<'a> {
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct ContinentRecord<'a> {
    code: &'a str,
}

#[derive(Serialize)]
struct CountryRecord<'a> {
    iso_code: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct LocationRecord {
    latitude: f64,
    longitude: f64,
}

/// The subset of a GeoIP2 City record Meridian and other readers use.
#[derive(Serialize)]
struct CityRecord<'a> {
    continent: ContinentRecord<'a>,
    country: CountryRecord<'a>,
    registered_country: CountryRecord<'a>,
    location: LocationRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Names<'a>>,
}

/// Build a database from fixture text; `source` names the file in messages.
pub fn build(text: &str, source: &Path) -> Result<Vec<u8>, ConfigError> {
    let parsed = parse_document::<Fixture>(text).map_err(|p| ConfigError::invalid(source, p))?;
    let (fixture, lines, mut problems) = (parsed.value, parsed.lines, parsed.unknown_fields);
    let mut writer = Writer::builder(fixture.database_type.clone())
        .ip_version(IpVersion::V6)
        .description(&[("en", fixture.description.as_str())])
        .build();
    let mut probes = Vec::new();
    for (i, net) in fixture.networks.iter().enumerate() {
        let at = YamlPath::root().key("networks").index(i);
        let cidr = net.cidr.parse::<IpNet>();
        if cidr.is_err() {
            problems.at(at.key("cidr"), format!("`{}` is not a CIDR", net.cidr));
        }
        let country = CountryCode::parse(&net.country);
        if country.is_none() {
            problems.at(
                at.key("country"),
                format!("`{}` is not a two-letter country code", net.country),
            );
        }
        let continent = match &net.continent {
            Some(c) => ContinentCode::parse(c).or_else(|| {
                problems.at(
                    at.key("continent"),
                    format!("`{c}` is not one of AF AN AS EU NA OC SA"),
                );
                None
            }),
            // An invalid country is reported once, above.
            None => country.and_then(|c| {
                c.continent().or_else(|| {
                    problems.at(at.key("continent"), "unknown country: give its continent");
                    None
                })
            }),
        };
        if !(-90.0..=90.0).contains(&net.lat) {
            problems.at(
                at.key("lat"),
                format!("latitude {} is outside -90..90", net.lat),
            );
        }
        if !(-180.0..=180.0).contains(&net.lon) {
            problems.at(
                at.key("lon"),
                format!("longitude {} is outside -180..180", net.lon),
            );
        }
        let (Ok(cidr), Some(country), Some(continent)) = (cidr, country, continent) else {
            continue;
        };
        let country_names: BTreeMap<&str, &str> = net
            .country_name
            .as_deref()
            .map(|n| BTreeMap::from([("en", n)]))
            .unwrap_or_default();
        let record = CityRecord {
            continent: ContinentRecord {
                code: continent.as_str(),
            },
            country: CountryRecord {
                iso_code: country.as_str(),
                names: country_names.clone(),
            },
            registered_country: CountryRecord {
                iso_code: country.as_str(),
                names: country_names,
            },
            location: LocationRecord {
                latitude: net.lat,
                longitude: net.lon,
            },
            city: net.city.as_deref().map(|c| Names {
                names: BTreeMap::from([("en", c)]),
            }),
        };
        if let Err(e) = writer.insert(cidr, &record) {
            problems.at(at.key("cidr"), format!("cannot write {cidr}: {e}"));
        }
        probes.push((at, cidr.network(), country));
    }
    if !problems.is_empty() {
        return Err(ConfigError::invalid(source, problems.with_lines(&lines)));
    }
    let bytes = writer.to_bytes().map_err(|e| {
        let mut p = Problems::default();
        p.at(YamlPath::root(), format!("cannot write the database: {e}"));
        ConfigError::invalid(source, p)
    })?;
    // Read it back with the same reader the proxy uses: what we ship must be what we serve.
    let check = GeoDb::from_bytes(bytes.clone(), source).map_err(|e| {
        let mut p = Problems::default();
        p.at(
            YamlPath::root(),
            format!("the written database does not verify: {e}"),
        );
        ConfigError::invalid(source, p)
    })?;
    for (at, ip, country) in probes {
        let found = check.lookup(ip).and_then(|l| l.country);
        if found != Some(country) {
            problems.at(
                at,
                format!("{ip} reads back as {found:?}, not {country}: a later network overlaps it"),
            );
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError::invalid(source, problems.with_lines(&lines)));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_readable_city_database() {
        let text = "description: test\nnetworks:\n  - { cidr: 192.0.2.0/24, country: US, lat: 39.0, lon: -77.5, city: Ashburn }\n  - { cidr: '2001:db8:1::/48', country: de, lat: 50.1, lon: 8.7 }\n";
        let bytes = build(text, Path::new("t.yaml")).unwrap();
        let db = GeoDb::from_bytes(bytes, Path::new("t.mmdb")).unwrap();
        let us = db.lookup("192.0.2.77".parse().unwrap()).unwrap();
        assert_eq!(us.country.unwrap().as_str(), "US");
        assert_eq!(us.continent.unwrap().as_str(), "NA");
        assert_eq!(us.coords.map(|p| p.degrees()), Some((39.0, -77.5)));
        let de = db.lookup("2001:db8:1::5".parse().unwrap()).unwrap();
        assert_eq!(de.country.unwrap().as_str(), "DE");
        // IPv4-mapped IPv6 is canonicalised before the lookup
        let mapped = db.lookup("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(mapped.country.unwrap().as_str(), "US");
        assert!(db.lookup("198.51.100.1".parse().unwrap()).is_none());
    }

    #[test]
    fn reports_every_bad_network_with_its_line() {
        let text = "description: bad\nnetworks:\n  - { cidr: nope, country: US, lat: 1, lon: 1 }\n  - { cidr: 10.0.0.0/8, country: XYZ, lat: 95, lon: 1 }\n";
        let err = build(text, Path::new("f.yaml")).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 3, "{err}");
        assert_eq!(problems[0].line, Some(3));
        assert_eq!(problems[1].line, Some(4));
        assert!(err.to_string().contains("f.yaml:4"), "{err}");
    }

    #[test]
    fn shipped_demo_database_matches_its_fixture() {
        let fixture = include_str!("../../config/geoip/demo-fixture.yaml");
        let built = build(fixture, Path::new("demo-fixture.yaml")).unwrap();
        let built = GeoDb::from_bytes(built, Path::new("built")).unwrap();
        let shipped = GeoDb::from_bytes(
            crate::control::demo::DEMO_GEOIP.to_vec(),
            Path::new("shipped"),
        )
        .unwrap();
        let parsed: Fixture = parse_document(fixture).unwrap().value;
        for net in &parsed.networks {
            let ip = net.cidr.parse::<IpNet>().unwrap().network();
            assert_eq!(
                shipped.lookup(ip),
                built.lookup(ip),
                "{ip}: rebuild config/geoip/demo-city.mmdb"
            );
            assert!(shipped.lookup(ip).is_some());
        }
    }
}
