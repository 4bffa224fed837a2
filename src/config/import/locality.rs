//! A DestinationRule's `trafficPolicy.loadBalancer.localityLbSetting` onto the steering of
//! the routes that use its cluster, where Meridian has an equivalent, and reported otherwise:
//!
//! - `failover` from/to: Meridian already tries regions nearest first, so a pair whose `to` is
//!   the region nearest to `from` needs nothing; any other pair becomes a
//!   `steering.continents` order for clients on `from`'s continent.
//! - `failoverPriority`: the region label is Meridian's own order; finer labels are not.
//! - `distribute`: region-level weights become weighted steering (for every client).
//!
//! Read by the DestinationRule importer, applied after the VirtualServices made the routes.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::aws_regions::{self, distance_km};
use super::{Builder, FieldStatus};

const AT: &str = "spec.trafficPolicy.loadBalancer.localityLbSetting";

/// What a localityLbSetting asks of the routes to its cluster.
#[derive(Debug, Default)]
pub(super) struct Locality {
    /// The DestinationRule, as the report names it.
    resource: String,
    /// (field, from, to) failover pairs, judged once the regions in use are known.
    failover: Vec<(String, String, String)>,
    /// Region → weight, from `distribute`.
    weights: Option<(String, BTreeMap<String, u64>)>,
}

/// Read a localityLbSetting of `resource`: what to apply, and the notes it already settles.
pub(super) fn read(
    resource: &str,
    setting: &Value,
) -> (Locality, Vec<(String, FieldStatus, String)>) {
    let mut notes = Vec::new();
    let mut out = Locality {
        resource: resource.to_owned(),
        ..Locality::default()
    };
    match setting.get("enabled").and_then(Value::as_bool) {
        Some(true) => notes.push((
            format!("{AT}.enabled"),
            FieldStatus::Mapped,
            "steering by locality is Meridian's default".into(),
        )),
        Some(false) => notes.push((
            format!("{AT}.enabled"),
            FieldStatus::Unsupported,
            "Meridian always orders regions by locality; for a fixed split give the route steering.mode: weighted".into(),
        )),
        None => {}
    }
    for (i, pair) in list(setting, "failover").iter().enumerate() {
        let field = format!("{AT}.failover[{i}]");
        let from = pair.get("from").and_then(Value::as_str).unwrap_or("");
        let to = pair.get("to").and_then(Value::as_str).unwrap_or("");
        match (aws_regions::known(from), aws_regions::known(to)) {
            (Some(_), Some(_)) => out.failover.push((field, from.to_owned(), to.to_owned())),
            _ => notes.push((
                field,
                FieldStatus::Unsupported,
                format!("failover from `{from}` to `{to}`: both must be regions Meridian knows (AWS names such as us-east-1)"),
            )),
        }
    }
    for (i, label) in list(setting, "failoverPriority").iter().enumerate() {
        let label = label.as_str().unwrap_or("");
        let field = format!("{AT}.failoverPriority[{i}]");
        // A `label=value` entry pins a value; Meridian has no such override.
        if matches!(
            label,
            "topology.kubernetes.io/region" | "topology.istio.io/region"
        ) {
            notes.push((
                field,
                FieldStatus::Mapped,
                "same region first, then the nearest: Meridian's region order".into(),
            ));
        } else {
            notes.push((field, FieldStatus::Unsupported, format!("`{label}`: Meridian steers by region only (no zones, subzones, networks or other labels)")));
        }
    }
    let distribute = list(setting, "distribute");
    if !distribute.is_empty() {
        let field = format!("{AT}.distribute");
        match distribute_weights(&distribute) {
            Ok(weights) => out.weights = Some((field, weights)),
            Err(why) => notes.push((field, FieldStatus::Unsupported, why)),
        }
    }
    (out, notes)
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `distribute` as one set of region weights, when it can be one.
fn distribute_weights(entries: &[Value]) -> Result<BTreeMap<String, u64>, String> {
    let mut found: Option<BTreeMap<String, u64>> = None;
    for entry in entries {
        let mut weights = BTreeMap::new();
        for (locality, w) in entry
            .get("to")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let region = match locality.split_once('/') {
                None => locality.as_str(),
                Some((region, "*")) => region,
                Some(_) => {
                    return Err(format!(
                        "`{locality}`: Meridian weighs regions, not zones or subzones"
                    ));
                }
            };
            if aws_regions::known(region).is_none() {
                return Err(format!(
                    "`{region}` is not a region Meridian knows (AWS names such as us-east-1)"
                ));
            }
            *weights.entry(region.to_owned()).or_default() += w.as_u64().unwrap_or(0);
        }
        match &found {
            Some(first) if *first != weights => {
                return Err("different weights for different `from` localities: Meridian's weighted steering is one split for every client".into());
            }
            _ => found = Some(weights),
        }
    }
    found
        .filter(|w| w.values().any(|v| *v > 0))
        .ok_or_else(|| "no weights above 0".into())
}

/// Apply each cluster's localityLbSetting to the routes that send only to that cluster.
pub(super) fn apply(b: &mut Builder) {
    let localities = std::mem::take(&mut b.locality);
    for (cluster, locality) in localities {
        let mut continents: BTreeMap<String, Value> = BTreeMap::new();
        let mut notes: Vec<(String, FieldStatus, String)> = Vec::new();
        for (field, from, to) in &locality.failover {
            notes.push(failover_note(b, from, to, &mut continents).map_or_else(
                |why| (field.clone(), FieldStatus::Unsupported, why),
                |(status, note)| (field.clone(), status, note),
            ));
        }
        let mut routes = 0;
        for route in &mut b.routes {
            if route.get("cluster").and_then(Value::as_str) != Some(cluster.as_str()) {
                continue;
            }
            routes += 1;
            let Some(route) = route.as_object_mut() else {
                continue;
            };
            let steering = route
                .entry("steering")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(steering) = steering.as_object_mut() else {
                continue;
            };
            if let Some((_, weights)) = &locality.weights
                && !steering.contains_key("weights")
            {
                steering.insert("mode".into(), json!("weighted"));
                steering.insert("weights".into(), json!(weights));
            }
            if !continents.is_empty() {
                steering.insert("continents".into(), json!(continents));
            }
            if steering.is_empty() {
                route.remove("steering");
            }
        }
        if let Some((field, weights)) = &locality.weights {
            let unused: Vec<&String> = weights.keys().filter(|r| !b.regions.contains(*r)).collect();
            notes.push(if unused.is_empty() {
                (field.clone(), FieldStatus::Approximated, format!("steering weights on the {routes} route(s) to cluster `{cluster}` without weights of their own, for every client (Istio applies them to clients in `from`)"))
            } else {
                (field.clone(), FieldStatus::Unsupported, format!("no destination runs in {unused:?}"))
            });
        }
        for (field, status, note) in notes {
            b.report
                .insert((locality.resource.clone(), field), (status, note));
        }
    }
}

/// What a failover pair needs: nothing when `to` is already next nearest to `from`, else a
/// continent order; `Err` when Meridian cannot express it.
fn failover_note(
    b: &Builder,
    from: &str,
    to: &str,
    continents: &mut BTreeMap<String, Value>,
) -> Result<(FieldStatus, String), String> {
    let (Some(f), Some(_)) = (aws_regions::known(from), aws_regions::known(to)) else {
        return Err(format!("`{from}` or `{to}` is not a known region"));
    };
    for region in [from, to] {
        if !b.regions.contains(region) {
            return Err(format!("no destination runs in {region}"));
        }
    }
    let nearest = b
        .regions
        .iter()
        .filter(|r| r.as_str() != from)
        .filter_map(|r| aws_regions::known(r))
        .min_by(|x, y| distance_km(f, x).total_cmp(&distance_km(f, y)));
    if nearest.is_some_and(|n| n.name == to) {
        return Ok((
            FieldStatus::Mapped,
            format!(
                "{to} is the region nearest {from}: Meridian's order already fails over from {from} to {to}"
            ),
        ));
    }
    if continents.contains_key(f.continent) {
        return Err(format!(
            "another failover rule already orders {}; Meridian has one order per continent",
            f.continent
        ));
    }
    continents.insert(f.continent.to_owned(), json!([from, to]));
    Ok((
        FieldStatus::Approximated,
        format!(
            "steering.continents {}: [{from}, {to}] on the routes to this cluster (clients on {from}'s continent, as Istio's `from` locality)",
            f.continent
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(regions: &[&str], route_cluster: &str) -> Builder {
        let mut b = Builder {
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            ..Builder::default()
        };
        b.routes
            .push(json!({ "name": "r", "cluster": route_cluster }));
        b
    }

    fn statuses(b: &Builder) -> Vec<(String, FieldStatus)> {
        b.report
            .iter()
            .map(|((_, f), (s, _))| (f.trim_start_matches(AT).to_owned(), *s))
            .collect()
    }

    #[test]
    fn failover_pairs() {
        // (regions in use, from, to, status, continents added)
        let cases = [
            (
                &["us-east-1", "eu-west-1", "ap-southeast-1"][..],
                "us-east-1",
                "eu-west-1",
                FieldStatus::Mapped,
                None,
            ),
            (
                &["us-east-1", "eu-west-1", "ap-southeast-1"][..],
                "us-east-1",
                "ap-southeast-1",
                FieldStatus::Approximated,
                Some("NA"),
            ),
            (
                &["us-east-1", "eu-west-1"][..],
                "us-east-1",
                "ap-southeast-1",
                FieldStatus::Unsupported,
                None,
            ),
        ];
        for (regions, from, to, want, continent) in cases {
            let mut b = builder(regions, "api");
            let (locality, notes) = read(
                "DR api/api",
                &json!({ "failover": [{ "from": from, "to": to }] }),
            );
            assert!(notes.is_empty());
            b.locality.insert("api".into(), locality);
            apply(&mut b);
            assert_eq!(
                statuses(&b),
                vec![(".failover[0]".into(), want)],
                "{from}→{to}"
            );
            let got = b.routes[0].pointer("/steering/continents").cloned();
            assert_eq!(
                got,
                continent.map(|c| json!({ c: [from, to] })),
                "{from}→{to}"
            );
        }
    }

    #[test]
    fn priority_distribute_and_enabled() {
        let setting = json!({
            "enabled": false,
            "failoverPriority": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"],
            "distribute": [{ "from": "us-east-1/*", "to": { "us-east-1/*": 80, "eu-west-1": 20 } }],
            "failover": [{ "from": "us-central1", "to": "eu-west-1" }],
        });
        let (locality, notes) = read("DR", &setting);
        let got: Vec<(String, FieldStatus)> = notes
            .iter()
            .map(|(f, s, _)| (f.trim_start_matches(AT).to_owned(), *s))
            .collect();
        assert_eq!(
            got,
            vec![
                (".enabled".into(), FieldStatus::Unsupported),
                (".failover[0]".into(), FieldStatus::Unsupported),
                (".failoverPriority[0]".into(), FieldStatus::Mapped),
                (".failoverPriority[1]".into(), FieldStatus::Unsupported),
            ]
        );
        let mut b = builder(&["us-east-1", "eu-west-1"], "api");
        b.locality.insert("api".into(), locality);
        apply(&mut b);
        assert_eq!(
            b.routes[0]["steering"],
            json!({ "mode": "weighted", "weights": { "eu-west-1": 20, "us-east-1": 80 } })
        );
        // Routes to other clusters are left alone.
        let mut b = builder(&["us-east-1", "eu-west-1"], "web");
        let (locality, _) = read("DR", &setting);
        b.locality.insert("api".into(), locality);
        apply(&mut b);
        assert_eq!(b.routes[0].get("steering"), None);
    }

    #[test]
    fn distribute_that_meridian_cannot_express() {
        let cases = [
            (
                json!([{ "from": "*", "to": { "us-east-1/zone-a/*": 100 } }]),
                "zones",
            ),
            (
                json!([{ "from": "*", "to": { "mars-1/*": 100 } }]),
                "not a region",
            ),
            (
                json!([{ "from": "*", "to": { "us-east-1/*": 0 } }]),
                "no weights",
            ),
            (
                json!([
                    { "from": "a/*", "to": { "us-east-1/*": 100 } },
                    { "from": "b/*", "to": { "eu-west-1/*": 100 } }
                ]),
                "one split",
            ),
        ];
        for (distribute, want) in cases {
            let (_, notes) = read("DR", &json!({ "distribute": distribute }));
            assert_eq!(notes.len(), 1);
            assert_eq!(notes[0].1, FieldStatus::Unsupported);
            assert!(notes[0].2.contains(want), "{}", notes[0].2);
        }
    }
}
