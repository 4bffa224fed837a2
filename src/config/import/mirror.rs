//! VirtualService `mirror` with `mirrorPercentage`, and `mirrors[]` with `percentage` → the
//! route's `mirrors:`. Each mirror destination becomes a cluster of its own (named after the
//! service and subset) in the region its subset or name gives; one whose region cannot be
//! known is reported, not guessed.

use super::*;

pub(super) fn import(
    r: &Resource,
    b: &mut Builder,
    subsets: &super::regions::Subsets,
    http: &Value,
    at: &str,
    route: &mut Map<String, Value>,
) {
    let mut mirrors = Vec::new();
    if let Some(dest) = http.get("mirror") {
        let here = format!("{at}.mirror");
        if let Some(cluster) = destination(r, b, subsets, dest, &here) {
            let mut m = Map::new();
            m.insert("cluster".into(), json!(cluster));
            let percent = http
                .get("mirrorPercentage")
                .and_then(|p| p.get("value"))
                .and_then(Value::as_f64);
            if let Some(p) = percent {
                m.insert("percent".into(), json!(p));
                b.note(
                    r,
                    format!("{at}.mirrorPercentage.value"),
                    FieldStatus::Mapped,
                    "mirrors[].percent",
                );
            } else if let Some(p) = http.get("mirrorPercent").and_then(Value::as_f64) {
                m.insert("percent".into(), json!(p));
                b.note(
                    r,
                    format!("{at}.mirrorPercent"),
                    FieldStatus::Mapped,
                    "mirrors[].percent",
                );
            }
            mirrors.push(Value::Object(m));
        }
    }
    for (i, entry) in http
        .get("mirrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let here = format!("{at}.mirrors[{i}]");
        let Some(dest) = entry.get("destination") else {
            continue;
        };
        let Some(cluster) = destination(r, b, subsets, dest, &format!("{here}.destination")) else {
            continue;
        };
        let mut m = Map::new();
        m.insert("cluster".into(), json!(cluster));
        if let Some(p) = entry
            .get("percentage")
            .and_then(|p| p.get("value"))
            .and_then(Value::as_f64)
        {
            m.insert("percent".into(), json!(p));
            b.note(
                r,
                format!("{here}.percentage.value"),
                FieldStatus::Mapped,
                "mirrors[].percent",
            );
        }
        mirrors.push(Value::Object(m));
    }
    if !mirrors.is_empty() {
        route.insert("mirrors".into(), Value::Array(mirrors));
    }
}

/// The cluster a mirror destination becomes, registered with its endpoint; `None` (and a
/// report line) when its region cannot be known.
fn destination(
    r: &Resource,
    b: &mut Builder,
    subsets: &super::regions::Subsets,
    dest: &Value,
    at: &str,
) -> Option<String> {
    let host = dest.get("host").and_then(Value::as_str).unwrap_or("");
    let (short, ns) = service_of(host, &r.namespace);
    let port = dest
        .get("port")
        .and_then(|p| p.get("number"))
        .and_then(Value::as_u64);
    if port.is_some() {
        b.note(
            r,
            format!("{at}.port"),
            FieldStatus::Mapped,
            "mirror endpoint port",
        );
    }
    let port = port.unwrap_or(80);
    let subset = dest.get("subset").and_then(Value::as_str);
    let placed = super::regions::destination(&b.options, host, &short, subset, subsets);
    let (endpoint, cluster) = match subset {
        Some(subset) => (
            format!("{short}-{subset}.{ns}.svc.cluster.local:{port}"),
            format!("{}-{subset}-mirror", base_name(&short)),
        ),
        None => (
            format!("{short}.{ns}.svc.cluster.local:{port}"),
            format!("{}-mirror", base_name(&short)),
        ),
    };
    let region = placed.as_ref().ok().map(|p| p.region.clone());
    let Some(region) = region else {
        b.note(
            r,
            at.to_owned(),
            FieldStatus::Unsupported,
            format!(
                "mirror to {host}{}: its region cannot be known ({}); add `--region <region>={short}` or a cluster for it by hand",
                subset.map(|s| format!(" subset {s}")).unwrap_or_default(),
                placed.as_ref().err().map_or("", String::as_str)
            ),
        );
        return None;
    };
    b.note(
        r,
        format!("{at}.host"),
        FieldStatus::Mapped,
        format!("mirror cluster {cluster}: DNS endpoint {endpoint} in {region}"),
    );
    if subset.is_some() {
        b.note(
            r,
            format!("{at}.subset"),
            FieldStatus::Mapped,
            format!("mirror cluster {cluster}"),
        );
    }
    b.regions.insert(region.clone());
    b.clusters
        .entry(cluster.clone())
        .or_default()
        .entry(region)
        .or_default()
        .insert(endpoint);
    Some(cluster)
}
