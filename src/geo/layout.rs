//! Record layouts of GeoIP databases: GeoIP2's nested records (GeoIP2, GeoLite2, DB-IP), flat
//! records (`country_code`, `continent_code`, `latitude`, `longitude`: IPinfo Lite and the
//! ip-location-db builds), and the paths an operator gives in `geo.fields` for anything else.
//!
//! [`GeoDb`](super::GeoDb) detects the layout once when it opens a file and checks a sample of
//! records against it, so a field of the wrong type is reported with its file and name instead
//! of silently locating nobody. A lookup then decodes with a single match on the layout.

use maxminddb::{LookupResult, PathElement, Reader, WithinOptions};
use serde::Deserialize;
use serde_json::Value;

/// How deep a `geo.fields` path may go, and how long it may be: real layouts nest two levels.
pub const MAX_PATH_SEGMENTS: usize = 8;
pub const MAX_PATH_LEN: usize = 200;

/// Records read when a database is opened, to detect its layout and check its field types.
const SAMPLE_RECORDS: usize = 256;

/// One step of a field path: a map key, or an array index (an all-digit segment).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// A field path from `geo.fields`, parsed (`location.latitude`, `country_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parse a dotted path; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty field path".into());
        }
        if text.len() > MAX_PATH_LEN {
            return Err(format!(
                "a field path of {} bytes; at most {MAX_PATH_LEN}",
                text.len()
            ));
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "`{text}` has {} levels; at most {MAX_PATH_SEGMENTS}",
                parts.len()
            ));
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                return Err(format!(
                    "`{text}` has an empty segment (two dots, or a dot at an end)"
                ));
            }
            segments.push(match part.parse::<usize>() {
                Ok(i) if part.bytes().all(|b| b.is_ascii_digit()) => Segment::Index(i),
                _ => Segment::Key(part.to_owned()),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    fn of_keys(keys: &[&str]) -> Self {
        Self {
            text: keys.join("."),
            segments: keys.iter().map(|k| Segment::Key((*k).to_owned())).collect(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Decode the value at this path; no allocation (paths are at most
    /// [`MAX_PATH_SEGMENTS`] deep).
    fn decode<'a, S, T>(&self, result: &LookupResult<'a, S>) -> Option<T>
    where
        S: AsRef<[u8]>,
        T: Deserialize<'a>,
    {
        let mut elements: [PathElement<'_>; MAX_PATH_SEGMENTS] =
            std::array::from_fn(|_| PathElement::Index(0));
        for (slot, segment) in elements.iter_mut().zip(&self.segments) {
            *slot = match segment {
                Segment::Key(k) => PathElement::Key(k),
                Segment::Index(i) => PathElement::Index(*i),
            };
        }
        let depth = self.segments.len().min(MAX_PATH_SEGMENTS);
        result.decode_path(&elements[..depth]).ok().flatten()
    }
}

/// The fields of `geo.fields`, parsed. At least one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMap {
    pub country: Option<FieldPath>,
    pub continent: Option<FieldPath>,
    pub latitude: Option<FieldPath>,
    pub longitude: Option<FieldPath>,
}

/// How a database's records are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `country.iso_code`, `continent.code`, `location.latitude`: GeoIP2, GeoLite2, DB-IP.
    GeoIp2,
    /// `country_code`, `continent_code`, `latitude`, `longitude` at the top level.
    Flat,
    /// Paths from `geo.fields`.
    Fields(FieldMap),
}

/// What a record says, before the codes are parsed.
#[derive(Debug, Default, PartialEq)]
pub struct RawPlace<'a> {
    pub country: Option<&'a str>,
    pub continent: Option<&'a str>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// A GeoIP2 record's `location`: its other fields (accuracy radius, time zone) are skipped.
/// Decoding the whole record this way instead, skipping city names, postal and subdivisions,
/// costs more than reading three paths.
#[derive(Deserialize, Default)]
struct Coordinates {
    #[serde(default)]
    latitude: Option<Degrees>,
    #[serde(default)]
    longitude: Option<Degrees>,
}

#[derive(Deserialize)]
struct FlatRecord<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    continent_code: Option<&'a str>,
    #[serde(default)]
    latitude: Option<Degrees>,
    #[serde(default)]
    longitude: Option<Degrees>,
}

/// Degrees stored as a double, a 32-bit float (ip-location-db) or an integer: the reader's
/// `f64` accepts doubles only.
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number;
        impl serde::de::Visitor<'_> for Number {
            type Value = Degrees;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of degrees")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Degrees, E> {
                Ok(Degrees(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Degrees, E> {
                Ok(Degrees(f64::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
        }
        d.deserialize_any(Number)
    }
}

/// A field whose value has the wrong type, found when the database was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The path in the record (`latitude`, `country.iso_code`).
    pub field: String,
    /// `geo.fields.<name>` when the path came from the config.
    pub setting: Option<&'static str>,
    pub network: String,
    pub found: String,
    pub expected: &'static str,
}

/// Why a layout could not be settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutProblem {
    /// No sampled record looks like a known layout; the keys of the first one.
    Unknown {
        keys: Vec<String>,
    },
    Field(FieldProblem),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
}

impl Layout {
    /// Decode the place in a looked-up record.
    pub fn decode<'a, S: AsRef<[u8]>>(&self, result: &LookupResult<'a, S>) -> Option<RawPlace<'a>> {
        match self {
            Self::GeoIp2 => {
                if !result.has_data() {
                    return None;
                }
                // Three paths, each read from the top of the record: the decoder skips what lies
                // before them (city names in several languages among it) without handing it to
                // serde, which costs about a third of a whole-record decode on GeoLite2-City.
                let text = |keys: [&str; 2]| -> Option<&'a str> {
                    result
                        .decode_path(&[PathElement::Key(keys[0]), PathElement::Key(keys[1])])
                        .ok()
                        .flatten()
                };
                // Both coordinates in one pass over `location`.
                let coordinates: Option<Coordinates> = result
                    .decode_path(&[PathElement::Key("location")])
                    .ok()
                    .flatten();
                let location = coordinates.unwrap_or_default();
                Some(RawPlace {
                    country: text(["country", "iso_code"])
                        .or_else(|| text(["registered_country", "iso_code"])),
                    continent: text(["continent", "code"]),
                    latitude: location.latitude.map(|d| d.0),
                    longitude: location.longitude.map(|d| d.0),
                })
            }
            Self::Flat => {
                let r: FlatRecord<'a> = result.decode().ok()??;
                Some(RawPlace {
                    country: r.country_code,
                    continent: r.continent_code,
                    latitude: r.latitude.map(|d| d.0),
                    longitude: r.longitude.map(|d| d.0),
                })
            }
            Self::Fields(map) => {
                if !result.has_data() {
                    return None;
                }
                Some(RawPlace {
                    country: map.country.as_ref().and_then(|p| p.decode(result)),
                    continent: map.continent.as_ref().and_then(|p| p.decode(result)),
                    latitude: map.latitude.as_ref().and_then(degrees(result)),
                    longitude: map.longitude.as_ref().and_then(degrees(result)),
                })
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::GeoIp2 => "geoip2",
            Self::Flat => "flat",
            Self::Fields(_) => "fields",
        }
    }

    /// The layout of `reader`'s records (the given fields when there are some, else detected
    /// from the first records' shape), checked against a sample of records.
    pub fn settle<S: AsRef<[u8]>>(
        reader: &Reader<S>,
        fields: Option<&FieldMap>,
    ) -> Result<Self, LayoutProblem> {
        let layout = match fields {
            Some(map) => Self::Fields(map.clone()),
            None => detect(reader)?,
        };
        layout.check(reader).map_err(LayoutProblem::Field)?;
        Ok(layout)
    }

    /// The paths this layout reads, with the kind of value each must hold.
    fn paths(&self) -> Vec<(FieldPath, Kind, Option<&'static str>)> {
        let keys = |k: &[&str], kind| (FieldPath::of_keys(k), kind, None);
        match self {
            Self::GeoIp2 => vec![
                keys(&["country", "iso_code"], Kind::Text),
                keys(&["registered_country", "iso_code"], Kind::Text),
                keys(&["continent", "code"], Kind::Text),
                keys(&["location", "latitude"], Kind::Number),
                keys(&["location", "longitude"], Kind::Number),
            ],
            Self::Flat => vec![
                keys(&["country_code"], Kind::Text),
                keys(&["continent_code"], Kind::Text),
                keys(&["latitude"], Kind::Number),
                keys(&["longitude"], Kind::Number),
            ],
            Self::Fields(map) => [
                (&map.country, Kind::Text, "geo.fields.country"),
                (&map.continent, Kind::Text, "geo.fields.continent"),
                (&map.latitude, Kind::Number, "geo.fields.latitude"),
                (&map.longitude, Kind::Number, "geo.fields.longitude"),
            ]
            .into_iter()
            .filter_map(|(p, kind, setting)| p.clone().map(|p| (p, kind, Some(setting))))
            .collect(),
        }
    }

    /// Every path holds a value of its kind (or nothing) in the sampled records.
    fn check<S: AsRef<[u8]>>(&self, reader: &Reader<S>) -> Result<(), FieldProblem> {
        let paths = self.paths();
        for result in sample(reader) {
            for (path, kind, setting) in &paths {
                let value: Option<Value> = path.decode(&result);
                let Some(value) = value else {
                    continue;
                };
                let fits = match kind {
                    Kind::Text => value.is_string(),
                    Kind::Number => value.is_number(),
                };
                if !fits {
                    return Err(FieldProblem {
                        field: path.as_str().to_owned(),
                        setting: *setting,
                        network: result
                            .network()
                            .map(|n| n.to_string())
                            .unwrap_or_else(|_| "?".into()),
                        found: describe(&value),
                        expected: match kind {
                            Kind::Text => "a string",
                            Kind::Number => "a number",
                        },
                    });
                }
            }
        }
        Ok(())
    }
}

/// Reads a coordinate at a path of a looked-up record.
fn degrees<'r, 'a, S: AsRef<[u8]>>(
    result: &'r LookupResult<'a, S>,
) -> impl Fn(&FieldPath) -> Option<f64> + 'r {
    move |p| p.decode::<S, Degrees>(result).map(|d| d.0)
}

/// Up to [`SAMPLE_RECORDS`] records with data, from the start of the tree.
fn sample<S: AsRef<[u8]>>(reader: &Reader<S>) -> impl Iterator<Item = LookupResult<'_, S>> {
    reader
        .networks(WithinOptions::default())
        .into_iter()
        .flatten()
        .take(SAMPLE_RECORDS)
        .filter_map(Result::ok)
}

/// The layout the first recognisable record has; an empty database reads as GeoIP2 (it
/// answers nothing either way).
fn detect<S: AsRef<[u8]>>(reader: &Reader<S>) -> Result<Layout, LayoutProblem> {
    let mut first_keys = None;
    let mut any = false;
    for result in sample(reader) {
        let Ok(Some(Value::Object(record))) = result.decode::<Value>() else {
            continue;
        };
        any = true;
        let has = |k: &str| record.contains_key(k);
        let is_map = |k: &str| record.get(k).is_some_and(Value::is_object);
        if has("country_code") || has("continent_code") || (has("latitude") && has("longitude")) {
            return Ok(Layout::Flat);
        }
        if is_map("country")
            || is_map("registered_country")
            || is_map("continent")
            || is_map("location")
        {
            return Ok(Layout::GeoIp2);
        }
        first_keys.get_or_insert_with(|| record.keys().take(16).cloned().collect::<Vec<_>>());
    }
    match (any, first_keys) {
        (true, Some(keys)) => Err(LayoutProblem::Unknown { keys }),
        _ => Ok(Layout::GeoIp2),
    }
}

/// A value as an error message shows it: its type, and the value when short.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    let shown = if text.len() > 40 {
        String::new()
    } else {
        format!(" ({text})")
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    };
    format!("{kind}{shown}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_table() {
        for text in [
            "country_code",
            "location.latitude",
            "subdivisions.0.iso_code",
        ] {
            assert_eq!(FieldPath::parse(text).unwrap().as_str(), text);
        }
        assert_eq!(
            FieldPath::parse("a.0.b").unwrap().segments,
            vec![
                Segment::Key("a".into()),
                Segment::Index(0),
                Segment::Key("b".into())
            ]
        );
        // A huge number is a key, not an index that overflows.
        assert_eq!(
            FieldPath::parse("99999999999999999999999")
                .unwrap()
                .segments,
            vec![Segment::Key("99999999999999999999999".into())]
        );
        let long = "a".repeat(MAX_PATH_LEN + 1);
        let deep = ["a"; MAX_PATH_SEGMENTS + 1].join(".");
        for (bad, says) in [
            ("", "empty field path"),
            ("a..b", "empty segment"),
            (".a", "empty segment"),
            ("a.", "empty segment"),
            (long.as_str(), "at most 200"),
            (deep.as_str(), "at most 8"),
        ] {
            let err = FieldPath::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn layouts_are_told_apart_by_record_shape() {
        use mmdb_writer::{Value as V, Writer};
        let text = |t: &str| V::from(t);
        let nested = V::map([("country", V::map([("iso_code", text("DE"))]))]);
        let flat = V::map([("country_code", text("DE"))]);
        let coords = V::map([("latitude", V::Float(1.0)), ("longitude", V::Float(2.0))]);
        // IPinfo Lite: `country` is a name, beside the code.
        let ipinfo = V::map([("country", text("Germany")), ("country_code", text("DE"))]);
        let other = V::map([("cc", text("DE"))]);
        let cases: &[(Option<&V>, Result<&str, &str>)] = &[
            (Some(&nested), Ok("geoip2")),
            (Some(&flat), Ok("flat")),
            (Some(&coords), Ok("flat")),
            (Some(&ipinfo), Ok("flat")),
            (Some(&other), Err("cc")),
            (None, Ok("geoip2")),
        ];
        for (record, want) in cases {
            let mut writer = Writer::new("Test");
            if let Some(record) = record {
                let net: ipnet::IpNet = "192.0.2.0/24".parse().unwrap();
                writer.insert_value(net, (*record).clone()).unwrap();
            }
            let reader = Reader::from_source(writer.to_bytes().unwrap()).unwrap();
            let got = match Layout::settle(&reader, None) {
                Ok(layout) => Ok(layout.name()),
                Err(LayoutProblem::Unknown { keys }) => Err(keys.join(",")),
                Err(e) => panic!("{e:?}"),
            };
            assert_eq!(got, want.map_err(str::to_owned), "{record:?}");
        }
    }

    #[test]
    fn nested_records_give_country_continent_and_coordinates() {
        use mmdb_writer::{Value as V, Writer};
        let text = |t: &str| V::from(t);
        let names = V::map([("de", text("Berlin")), ("en", text("Berlin"))]);
        let full = V::map([
            ("city", V::map([("names", names)])),
            ("continent", V::map([("code", text("EU"))])),
            ("country", V::map([("iso_code", text("DE"))])),
            (
                "location",
                V::map([
                    ("accuracy_radius", V::from(50u16)),
                    ("latitude", V::Double(52.5)),
                    ("longitude", V::Double(13.4)),
                ]),
            ),
            ("registered_country", V::map([("iso_code", text("FR"))])),
        ]);
        // No `country`: the registered country stands in.
        let registered = V::map([("registered_country", V::map([("iso_code", text("FR"))]))]);
        // Coordinates as a 32-bit float and an integer are read too.
        let other_numbers = V::map([
            ("country", V::map([("iso_code", text("SG"))])),
            (
                "location",
                V::map([("latitude", V::Float(1.5)), ("longitude", V::from(103u16))]),
            ),
        ]);
        let mut writer = Writer::new("Test");
        for (net, record) in [
            ("192.0.2.0/24", full),
            ("198.51.100.0/24", registered),
            ("203.0.113.128/25", other_numbers),
        ] {
            writer
                .insert_value(net.parse::<ipnet::IpNet>().unwrap(), record)
                .unwrap();
        }
        let reader = Reader::from_source(writer.to_bytes().unwrap()).unwrap();
        let layout = Layout::settle(&reader, None).unwrap();
        assert_eq!(layout.name(), "geoip2");
        let place = |ip: &str| layout.decode(&reader.lookup(ip.parse().unwrap()).unwrap());
        assert_eq!(
            place("192.0.2.1"),
            Some(RawPlace {
                country: Some("DE"),
                continent: Some("EU"),
                latitude: Some(52.5),
                longitude: Some(13.4),
            })
        );
        assert_eq!(
            place("198.51.100.1"),
            Some(RawPlace {
                country: Some("FR"),
                ..RawPlace::default()
            })
        );
        assert_eq!(
            place("203.0.113.200"),
            Some(RawPlace {
                country: Some("SG"),
                latitude: Some(1.5),
                longitude: Some(103.0),
                ..RawPlace::default()
            })
        );
        assert_eq!(place("203.0.113.1"), None);
    }

    #[test]
    fn values_are_described_briefly() {
        assert_eq!(describe(&Value::from(7)), "a number (7)");
        assert_eq!(describe(&Value::from("51.5")), "a string (\"51.5\")");
        assert_eq!(describe(&Value::from("x".repeat(100))), "a string");
    }
}
