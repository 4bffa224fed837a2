//! A cluster's `load_balancer`: the pick policy, written as before (`round_robin`), or a map
//! that adds consistent-hash session affinity (`consistent_hash`). Compiled by
//! `table/compile/affinity.rs`; `import istio` maps DestinationRule `consistentHash` onto it.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::LoadBalancer;

/// `least_request` | `round_robin` | `random`, or
/// `{ policy: least_request, consistent_hash: { header: x-user } }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadBalancerConfig {
    /// How endpoints are picked; with `consistent_hash`, for requests that carry no hash key.
    pub policy: LoadBalancer,
    pub consistent_hash: Option<ConsistentHashConfig>,
}

/// Session affinity: requests with the same key go to the same endpoint of the region steering
/// chose. Exactly one key source is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ConsistentHashConfig {
    /// Hash on this request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Hash on this cookie; generated when absent if it has a `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<HashCookieConfig>,
    /// Hash on the client address (after trusted X-Forwarded-For).
    #[serde(default, skip_serializing_if = "is_false")]
    pub source_ip: bool,
    /// Hash on this query parameter's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// Maglev lookup table size per region: a prime.
    #[serde(default = "default_table_size")]
    pub table_size: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HashCookieConfig {
    pub name: String,
    /// When set, a request without the cookie gets a new random one (Max-Age = ttl; `0s`: a
    /// session cookie). Without it such a request is balanced by `policy` and nothing is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// `Path` of a generated cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The Maglev table size Envoy and Istio default to.
pub const DEFAULT_HASH_TABLE_SIZE: u64 = 65_537;

fn default_table_size() -> u64 {
    DEFAULT_HASH_TABLE_SIZE
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Deserialize)]
struct LoadBalancerFields {
    #[serde(default)]
    policy: LoadBalancer,
    #[serde(default)]
    consistent_hash: Option<ConsistentHashConfig>,
}

impl<'de> Deserialize<'de> for LoadBalancerConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LbVisitor;
        impl<'de> Visitor<'de> for LbVisitor {
            type Value = LoadBalancerConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "least_request, round_robin, random, or { policy: ..., consistent_hash: { header: NAME } }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let policy = LoadBalancer::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(LoadBalancerConfig {
                    policy,
                    consistent_hash: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let fields =
                    LoadBalancerFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(LoadBalancerConfig {
                    policy: fields.policy,
                    consistent_hash: fields.consistent_hash,
                })
            }
        }
        deserializer.deserialize_any(LbVisitor)
    }
}

impl Serialize for LoadBalancerConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Full<'a> {
            policy: LoadBalancer,
            consistent_hash: &'a ConsistentHashConfig,
        }
        // Written back the way it was most likely written: the plain word when there is no
        // hashing, so `/config` of an old config looks as before.
        match &self.consistent_hash {
            None => self.policy.serialize(serializer),
            Some(hash) => Full {
                policy: self.policy,
                consistent_hash: hash,
            }
            .serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_forms_read_and_write_back() {
        let cases = [
            (
                r#""round_robin""#,
                LoadBalancerConfig {
                    policy: LoadBalancer::RoundRobin,
                    consistent_hash: None,
                },
            ),
            (
                r#"{"consistent_hash":{"header":"x-user"}}"#,
                LoadBalancerConfig {
                    policy: LoadBalancer::LeastRequest,
                    consistent_hash: Some(ConsistentHashConfig {
                        header: Some("x-user".into()),
                        table_size: DEFAULT_HASH_TABLE_SIZE,
                        ..Default::default()
                    }),
                },
            ),
            (
                r#"{"policy":"random","consistent_hash":{"cookie":{"name":"s","ttl":"1h","path":"/"},"table_size":101}}"#,
                LoadBalancerConfig {
                    policy: LoadBalancer::Random,
                    consistent_hash: Some(ConsistentHashConfig {
                        cookie: Some(HashCookieConfig {
                            name: "s".into(),
                            ttl: Some("1h".into()),
                            path: Some("/".into()),
                        }),
                        table_size: 101,
                        ..Default::default()
                    }),
                },
            ),
        ];
        for (json, want) in cases {
            let got: LoadBalancerConfig = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{json}");
            let again: LoadBalancerConfig =
                serde_json::from_str(&serde_json::to_string(&got).unwrap()).unwrap();
            assert_eq!(again, want, "{json} round trip");
        }
        assert_eq!(
            serde_json::to_string(&LoadBalancerConfig::default()).unwrap(),
            r#""least_request""#
        );
        for bad in [r#""maglev""#, "7", r#"{"policy":"ring"}"#] {
            assert!(
                serde_json::from_str::<LoadBalancerConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
