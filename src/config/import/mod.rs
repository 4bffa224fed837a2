//! `meridian import istio`: turn VirtualService, DestinationRule and Gateway documents into a
//! Meridian config, with a report that says for every Istio field whether it was mapped,
//! approximated or is unsupported, and why.
//!
//! Services become DNS endpoints (`<host>.<namespace>.svc.cluster.local:<port>`) in the region
//! their subset label (or their name) names; regional weights become weighted steering.

mod consistent_hash;
mod destination_rule;
mod gateway;
mod virtual_service;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

use crate::config::{ConfigError, parse_values, to_yaml};

/// How an Istio field carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldStatus {
    Mapped,
    Approximated,
    Unsupported,
}

impl fmt::Display for FieldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mapped => "mapped",
            Self::Approximated => "approximated",
            Self::Unsupported => "unsupported",
        })
    }
}

/// One line of the compatibility report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReportEntry {
    pub resource: String,
    pub field: String,
    pub status: FieldStatus,
    pub note: String,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    pub config: Value,
    pub report: Vec<ReportEntry>,
}

/// Coordinates of common cloud regions, for distance ranking.
const KNOWN_REGIONS: [(&str, f64, f64); 16] = [
    ("us-east-1", 38.9, -77.4),
    ("us-east-2", 40.0, -83.0),
    ("us-west-1", 37.4, -121.9),
    ("us-west-2", 45.8, -119.7),
    ("ca-central-1", 45.5, -73.6),
    ("sa-east-1", -23.5, -46.6),
    ("eu-west-1", 53.3, -6.3),
    ("eu-west-2", 51.5, -0.1),
    ("eu-west-3", 48.9, 2.4),
    ("eu-central-1", 50.1, 8.7),
    ("eu-north-1", 59.3, 18.1),
    ("ap-southeast-1", 1.35, 103.8),
    ("ap-southeast-2", -33.9, 151.2),
    ("ap-northeast-1", 35.7, 139.7),
    ("ap-south-1", 19.1, 72.9),
    ("me-south-1", 26.1, 50.6),
];

struct Resource {
    kind: String,
    namespace: String,
    name: String,
    spec: Value,
}

impl Resource {
    fn label(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Default)]
struct Builder {
    report: BTreeMap<(String, String), (FieldStatus, String)>,
    regions: BTreeSet<String>,
    /// cluster → region → endpoints
    clusters: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    cluster_settings: BTreeMap<String, Map<String, Value>>,
    routes: Vec<Value>,
    listeners: Vec<Value>,
}

impl Builder {
    fn note(
        &mut self,
        r: &Resource,
        field: impl Into<String>,
        status: FieldStatus,
        note: impl Into<String>,
    ) {
        self.report
            .insert((r.label(), field.into()), (status, note.into()));
    }

    /// Every leaf of the spec not yet reported is unsupported.
    fn sweep_unreported(&mut self, r: &Resource) {
        let mut leaves = Vec::new();
        collect_leaves(&r.spec, "spec".to_owned(), &mut leaves);
        for field in leaves {
            let reported = self.report.keys().any(|(res, f)| {
                *res == r.label()
                    && (field == *f
                        || field.starts_with(&format!("{f}."))
                        || field.starts_with(&format!("{f}[")))
            });
            if !reported {
                self.note(
                    r,
                    field,
                    FieldStatus::Unsupported,
                    "not mapped by meridian import",
                );
            }
        }
    }
}

fn collect_leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                collect_leaves(v, format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                collect_leaves(v, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// A region name inside a service name: `api-eu-west-1` → `eu-west-1`.
fn region_in(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split(['-', '.']).collect();
    parts.windows(3).find_map(|w| {
        let looks = w[0].len() == 2
            && w[0].bytes().all(|b| b.is_ascii_lowercase())
            && w[1].bytes().all(|b| b.is_ascii_lowercase())
            && !w[1].is_empty()
            && w[2].bytes().all(|b| b.is_ascii_digit())
            && !w[2].is_empty();
        looks.then(|| format!("{}-{}-{}", w[0], w[1], w[2]))
    })
}

/// The service's base name with any region removed: `api-eu-west-1` → `api`.
fn base_name(short: &str) -> String {
    match region_in(short) {
        Some(region) => short
            .replace(&format!("-{region}"), "")
            .replace(&format!(".{region}"), "")
            .trim_matches('-')
            .to_owned(),
        None => short.to_owned(),
    }
}

/// `api`, `api.ns`, `api.ns.svc.cluster.local` → (short name, namespace).
fn service_of(host: &str, default_ns: &str) -> (String, String) {
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [name] => ((*name).to_owned(), default_ns.to_owned()),
        [name, ns, ..] => ((*name).to_owned(), (*ns).to_owned()),
        [] => (host.to_owned(), default_ns.to_owned()),
    }
}

fn duration_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// Import Istio YAML (one or more files' text).
pub fn istio(text: &str) -> Result<Imported, ConfigError> {
    let docs = parse_values(text).map_err(ConfigError::ImportYaml)?;
    let resources: Vec<Resource> = docs
        .into_iter()
        .filter_map(|d| {
            Some(Resource {
                kind: d.get("kind")?.as_str()?.to_owned(),
                namespace: str_at(&d, &["metadata", "namespace"])
                    .unwrap_or("default")
                    .to_owned(),
                name: str_at(&d, &["metadata", "name"])
                    .unwrap_or("unnamed")
                    .to_owned(),
                spec: d.get("spec").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    if !resources.iter().any(|r| r.kind == "VirtualService") {
        return Err(ConfigError::NoVirtualService);
    }
    let mut b = Builder::default();

    // DestinationRules first: subsets name regions, traffic policies become cluster settings.
    let mut subsets: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in resources.iter().filter(|r| r.kind == "DestinationRule") {
        destination_rule::import(r, &mut b, &mut subsets);
    }

    // Gateways: HTTP servers become listeners; HTTPS servers need certificate files by hand.
    for r in resources.iter().filter(|r| r.kind == "Gateway") {
        gateway::import(r, &mut b);
    }

    // VirtualServices: one Meridian route per http route and match.
    for r in resources.iter().filter(|r| r.kind == "VirtualService") {
        virtual_service::import(r, &mut b, &subsets);
    }

    for r in &resources {
        if matches!(
            r.kind.as_str(),
            "VirtualService" | "DestinationRule" | "Gateway"
        ) {
            b.sweep_unreported(r);
        } else {
            b.note(
                r,
                "kind",
                FieldStatus::Unsupported,
                format!("{} resources are not imported", r.kind),
            );
        }
    }

    Ok(b.assemble())
}

impl Builder {
    /// The config from everything noted, and the report.
    fn assemble(self) -> Imported {
        let b = self;
        let mut regions = Map::new();
        for name in &b.regions {
            let (lat, lon) = KNOWN_REGIONS
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, lat, lon)| (*lat, *lon))
                .unwrap_or((0.0, 0.0));
            regions.insert(name.clone(), json!({ "lat": lat, "lon": lon }));
        }
        let mut clusters = Map::new();
        for (name, by_region) in &b.clusters {
            let endpoints: Map<String, Value> = by_region
                .iter()
                .map(|(region, eps)| {
                    (
                        region.clone(),
                        Value::Array(eps.iter().map(|e| json!(e)).collect()),
                    )
                })
                .collect();
            let mut c = Map::new();
            c.insert("endpoints".into(), Value::Object(endpoints));
            c.extend(b.cluster_settings.get(name).cloned().unwrap_or_default());
            clusters.insert(name.clone(), Value::Object(c));
        }
        let listeners = if b.listeners.is_empty() {
            vec![json!({ "name": "http", "bind": "0.0.0.0:8080" })]
        } else {
            b.listeners.clone()
        };
        let local = b
            .regions
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| "default".into());
        let config = json!({
            "local_region": local,
            "listeners": listeners,
            "regions": regions,
            "clusters": clusters,
            "routes": b.routes,
        });
        let report = b
            .report
            .into_iter()
            .map(|((resource, field), (status, note))| ReportEntry {
                resource,
                field,
                status,
                note,
            })
            .collect();
        Imported { config, report }
    }
}

impl Imported {
    /// The config as YAML with the report as comments before it.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Generated by `meridian import istio`. Review before use:\n\
             # - local_region is the first region found: set it per deployment (one per region).\n\
             # - add geo.database (a GeoIP2/GeoLite2 City database) and geo.trusted_proxies.\n#\n\
             # Compatibility report (every Istio field):\n",
        );
        for e in &self.report {
            out.push_str(&format!(
                "#   {:<12} {} {}: {}\n",
                e.status.to_string(),
                e.resource,
                e.field,
                e.note
            ));
        }
        out.push('\n');
        out.push_str(&to_yaml(&self.config));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_regions() {
        assert_eq!(region_in("api-eu-west-1"), Some("eu-west-1".into()));
        assert_eq!(region_in("api.us-east-1.svc"), Some("us-east-1".into()));
        assert_eq!(region_in("api"), None);
        assert_eq!(base_name("api-ap-southeast-1"), "api");
        assert_eq!(
            service_of("api.shop.svc.cluster.local", "x"),
            ("api".into(), "shop".into())
        );
        assert_eq!(service_of("api", "x"), ("api".into(), "x".into()));
    }
}
