//! The `geo.database` and `geo.fields` settings: which MaxMind DB files answer which address
//! family, and where in a record of an unusual layout the place is stored.
//!
//! Only the shapes live here; the table compiler checks the paths and opens the files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `geo.database`: one file for every client, or two: the first answers IPv4 clients, the
/// second IPv6 clients (as the per-family builds of ip-location-db and others are shipped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GeoDatabaseFiles(pub Vec<PathBuf>);

impl GeoDatabaseFiles {
    pub fn one(path: impl Into<PathBuf>) -> Self {
        Self(vec![path.into()])
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.0
    }
}

impl Serialize for GeoDatabaseFiles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for GeoDatabaseFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Files;
        impl<'de> serde::de::Visitor<'de> for Files {
            type Value = GeoDatabaseFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file name, or a list of two: the IPv4 file, then the IPv6 file")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(GeoDatabaseFiles::one(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut files = Vec::new();
                // Bounded: anything past three is already wrong and reported by the compiler.
                while let Some(path) = seq.next_element::<PathBuf>()? {
                    if files.len() < 3 {
                        files.push(path);
                    }
                }
                Ok(GeoDatabaseFiles(files))
            }
        }
        d.deserialize_any(Files)
    }
}

/// `geo.fields`: dotted paths to the values Meridian needs, for databases whose records
/// follow neither the GeoIP2 layout nor the flat `country_code` one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GeoFieldsConfig {
    /// A two-letter ISO country code, e.g. `country_code` or `country.iso_code`.
    #[serde(default)]
    pub country: Option<String>,
    /// A continent code (AF AN AS EU NA OC SA).
    #[serde(default)]
    pub continent: Option<String>,
    /// Degrees, as a number.
    #[serde(default)]
    pub latitude: Option<String>,
    #[serde(default)]
    pub longitude: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_or_a_list_round_trips() {
        for (yaml, files, json) in [
            ("\"a.mmdb\"", vec!["a.mmdb"], "\"a.mmdb\""),
            (
                "[\"v4.mmdb\", \"v6.mmdb\"]",
                vec!["v4.mmdb", "v6.mmdb"],
                "[\"v4.mmdb\",\"v6.mmdb\"]",
            ),
        ] {
            let parsed: GeoDatabaseFiles = serde_json::from_str(yaml).unwrap();
            let want: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            assert_eq!(parsed.paths(), want.as_slice());
            assert_eq!(serde_json::to_string(&parsed).unwrap(), json);
        }
        // Past three entries nothing more is kept: the compiler refuses the list anyway.
        let many = format!("[{}]", vec!["\"x\""; 1000].join(","));
        let parsed: GeoDatabaseFiles = serde_json::from_str(&many).unwrap();
        assert_eq!(parsed.paths().len(), 3);
        assert!(serde_json::from_str::<GeoDatabaseFiles>("7").is_err());
    }
}
