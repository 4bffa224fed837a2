//! `meridian import istio`: turn VirtualService, DestinationRule and Gateway documents into a
//! Meridian config, with a report that says for every Istio field whether it was mapped,
//! approximated or is unsupported, and why.
//!
//! Services become DNS endpoints (`<host>.<namespace>.svc.cluster.local:<port>`) in the region
//! a `--region` flag, their subset label or their name names (`regions`); a destination whose
//! region cannot be known fails the import rather than being guessed. Regional weights become
//! weighted steering.

mod aws_regions;
mod consistent_hash;
mod cors;
mod destination_rule;
mod fault;
mod gateway;
mod locality;
mod mirror;
mod mutual_tls;
mod regions;
mod route_policies;
mod virtual_service;

pub use regions::{ImportOptions, RegionFlag};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

use crate::config::{ConfigError, parse_values, to_yaml};

/// How an Istio field carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldStatus {
    Mapped,
    /// Not written in the input but learnt from it (a region from a label or a name).
    Inferred,
    Approximated,
    Unsupported,
}

impl fmt::Display for FieldStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mapped => "mapped",
            Self::Inferred => "inferred",
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
    /// Destinations left out under `--allow-partial` (their region is unknown).
    pub left_out: usize,
}

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
    options: ImportOptions,
    /// `--region` flags (as shown) that placed a destination.
    used_flags: BTreeSet<String>,
    /// Destinations whose region cannot be known, each with what to add.
    unknown: Vec<String>,
    /// Subset cluster → the cluster whose DestinationRule settings it takes.
    settings_from: BTreeMap<String, String>,
    /// Cluster → its DestinationRule's localityLbSetting, applied to the cluster's routes.
    locality: BTreeMap<String, locality::Locality>,
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
        let label = r.label();
        for field in leaves {
            // A leaf is covered when it or one of its ancestors is reported: look each
            // ancestor up rather than scanning the report (large documents stay linear).
            let mut key = (label.clone(), field.clone());
            let mut reported = self.report.contains_key(&key);
            for (i, c) in field.char_indices().rev() {
                if reported {
                    break;
                }
                if c == '.' || c == '[' {
                    key.1 = field[..i].to_owned();
                    reported = self.report.contains_key(&key);
                }
            }
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

/// The service's base name with any region removed: `api-eu-west-1` → `api`.
fn base_name(short: &str) -> String {
    regions::strip_region(short)
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

/// Import Istio YAML (one or more files' text) with no command-line options.
pub fn istio(text: &str) -> Result<Imported, ConfigError> {
    istio_with(text, &ImportOptions::default())
}

/// Import Istio YAML with `--region`, `--local-region` and `--allow-partial`.
pub fn istio_with(text: &str, options: &ImportOptions) -> Result<Imported, ConfigError> {
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
    let mut b = Builder {
        options: options.clone(),
        ..Builder::default()
    };

    // DestinationRules first: subsets name regions, traffic policies become cluster settings.
    let mut subsets = regions::Subsets::new();
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

    // Locality settings become steering on the routes just made, before the sweep.
    locality::apply(&mut b);

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

    b.note_unused_flags();
    if !b.unknown.is_empty() && !options.allow_partial {
        return Err(ConfigError::UnknownRegions(b.unknown));
    }
    b.assemble()
}

impl Builder {
    /// The config from everything noted, and the report.
    fn assemble(mut self) -> Result<Imported, ConfigError> {
        let local = match self.options.local_region.clone() {
            Some(local) => {
                self.report.insert(
                    (regions::COMMAND.into(), "--local-region".into()),
                    (FieldStatus::Mapped, format!("local_region: {local}")),
                );
                local
            }
            None => {
                let first = self
                    .regions
                    .iter()
                    .next()
                    .cloned()
                    .ok_or_else(|| ConfigError::UnknownRegions(self.unknown.clone()))?;
                self.report.insert(
                    (regions::COMMAND.into(), "--local-region".into()),
                    (FieldStatus::Approximated, format!("not given: local_region is {first}, the first region found; give --local-region (or MERIDIAN_LOCAL_REGION) per deployment")),
                );
                first
            }
        };
        // A Meridian may run in a region with no backends of its own: it still needs its place.
        self.regions.insert(local.clone());
        let b = self;
        let mut regions = Map::new();
        for (known, name) in regions::coordinates(&b.regions) {
            regions.insert(name.clone(), json!({ "lat": known.lat, "lon": known.lon }));
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
            let settings = b.cluster_settings.get(name).or_else(|| {
                b.settings_from
                    .get(name)
                    .and_then(|base| b.cluster_settings.get(base))
            });
            c.extend(settings.cloned().unwrap_or_default());
            clusters.insert(name.clone(), Value::Object(c));
        }
        let listeners = if b.listeners.is_empty() {
            vec![json!({ "name": "http", "bind": "0.0.0.0:8080" })]
        } else {
            b.listeners.clone()
        };
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
        Ok(Imported {
            config,
            report,
            left_out: b.unknown.len(),
        })
    }
}

impl Imported {
    /// The config as YAML with the report as comments before it.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Generated by `meridian import istio`. Review before use:\n\
             # - set local_region per deployment (one per region): --local-region or MERIDIAN_LOCAL_REGION.\n\
             # - add geo.database (a GeoIP2/GeoLite2 City database) and geo.trusted_proxies.\n",
        );
        if self.left_out > 0 {
            out.push_str(&format!(
                "# - {} destination(s) LEFT OUT: their region is unknown (--allow-partial); see `left out` below.\n",
                self.left_out
            ));
        }
        out.push_str("#\n# Compatibility report (every Istio field):\n");
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
        assert_eq!(base_name("api-ap-southeast-1"), "api");
        assert_eq!(base_name("fingerprint-api-us-east"), "fingerprint-api");
        assert_eq!(
            service_of("api.shop.svc.cluster.local", "x"),
            ("api".into(), "shop".into())
        );
        assert_eq!(service_of("api", "x"), ("api".into(), "x".into()));
    }
}
