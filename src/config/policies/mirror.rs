//! `mirrors:` (or a single `mirror:`) on a route: fire-and-forget copies of requests to
//! other clusters, as Istio's `mirror`/`mirrors` with `mirrorPercentage`.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Mirror requests in flight per mirror cluster before more are dropped.
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: u32 = 64;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MirrorConfig {
    pub cluster: String,
    /// Share of requests copied, 0..100.
    #[serde(default = "super::default_percent")]
    pub percent: f64,
    /// Copies in flight to this cluster at once; past that, copies are dropped (and counted).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MIRROR_MAX_IN_FLIGHT
}

/// A route's mirrors: `mirrors: [{cluster: a}, ...]`, or `mirror: {cluster: a}` for one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MirrorsConfig {
    pub list: Vec<MirrorConfig>,
    /// Written as a single `mirror:` (problems are reported under that key).
    pub single: bool,
}

impl MirrorsConfig {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The config path of mirror `i` under its route.
    pub fn path(&self, route: &super::super::YamlPath, i: usize) -> super::super::YamlPath {
        match self.single {
            true => route.key("mirror"),
            false => route.key("mirrors").index(i),
        }
    }
}

impl Serialize for MirrorsConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MirrorsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MirrorsVisitor;
        impl<'de> Visitor<'de> for MirrorsVisitor {
            type Value = MirrorsConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mirror { cluster: NAME, percent: N } or a list of them")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<MirrorConfig>()? {
                    out.push(item);
                }
                Ok(MirrorsConfig {
                    list: out,
                    single: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let one = MirrorConfig::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MirrorsConfig {
                    list: vec![one],
                    single: true,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MirrorsConfig::default())
            }
        }
        deserializer.deserialize_any(MirrorsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{RouteConfig, parse_document};

    /// (cluster, percent, max_in_flight) of each mirror.
    type Mirrors<'a> = Vec<(&'a str, f64, u32)>;

    fn route(policy: &str) -> Result<RouteConfig, String> {
        let text = format!("name: r\nhosts: [\"*\"]\ncluster: c\n{policy}");
        parse_document::<RouteConfig>(&text)
            .map(|parsed| parsed.value)
            .map_err(|problems| {
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
    }

    #[test]
    fn one_mirror_or_a_list() {
        let cases: [(&str, Mirrors, bool); 5] = [
            ("", vec![], false),
            ("mirror: { cluster: a }", vec![("a", 100.0, 64)], true),
            (
                "mirrors: [{ cluster: a, percent: 5 }, { cluster: b, max_in_flight: 2 }]",
                vec![("a", 5.0, 64), ("b", 100.0, 2)],
                false,
            ),
            ("mirrors: []", vec![], false),
            ("mirror: null", vec![], false),
        ];
        for (policy, want, single) in cases {
            let r = route(policy).unwrap();
            let got: Mirrors = r
                .mirrors
                .list
                .iter()
                .map(|m| (m.cluster.as_str(), m.percent, m.max_in_flight))
                .collect();
            assert_eq!(got, want, "{policy}");
            assert_eq!(r.mirrors.single, single, "{policy}");
        }
    }

    #[test]
    fn malformed_mirrors_are_refused() {
        for policy in [
            "mirror: { cluster: a }\nmirrors: [{ cluster: b }]",
            "mirror: shadow",
            "mirrors: [{ percent: 5 }]",
            "mirror: { cluster: a, max_in_flight: -1 }",
        ] {
            assert!(route(policy).is_err(), "{policy}");
        }
    }
}
