//! VirtualService: one Meridian route per http route and match.

use super::*;

pub(super) fn import(r: &Resource, b: &mut Builder, subsets: &BTreeMap<(String, String), String>) {
    let hosts: Vec<Value> = r
        .spec
        .get("hosts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    b.note(r, "spec.hosts", FieldStatus::Mapped, "routes[].hosts");
    if r.spec.get("gateways").is_some() {
        b.note(
            r,
            "spec.gateways",
            FieldStatus::Approximated,
            "Meridian serves every route on every listener",
        );
    }
    for (i, http) in r
        .spec
        .get("http")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.http[{i}]");
        let base = http
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("{}-{n}", r.name))
            .unwrap_or_else(|| format!("{}-{i}", r.name));
        if http.get("name").is_some() {
            b.note(
                r,
                format!("{at}.name"),
                FieldStatus::Mapped,
                "routes[].name",
            );
        }
        // Destinations → cluster, region, weight.
        let mut targets: Vec<(String, String, u64)> = Vec::new();
        for (j, dest) in http
            .get("route")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let dat = format!("{at}.route[{j}]");
            let host = str_at(dest, &["destination", "host"]).unwrap_or("");
            let (short, ns) = service_of(host, &r.namespace);
            let port = dest
                .get("destination")
                .and_then(|d| d.get("port"))
                .and_then(|p| p.get("number"))
                .and_then(Value::as_u64);
            let port = match port {
                Some(p) => {
                    b.note(
                        r,
                        format!("{dat}.destination.port"),
                        FieldStatus::Mapped,
                        "endpoint port",
                    );
                    p
                }
                None => 80,
            };
            let subset = str_at(dest, &["destination", "subset"]);
            let (region, endpoint) = match subset {
                Some(subset) => {
                    let region = subsets
                        .get(&(short.clone(), subset.to_owned()))
                        .cloned()
                        .or_else(|| region_in(subset));
                    b.note(r, format!("{dat}.destination.subset"), FieldStatus::Approximated, "the subset's region; its pods are reached through a per-region Service name");
                    (
                        region,
                        format!("{short}-{subset}.{ns}.svc.cluster.local:{port}"),
                    )
                }
                None => (
                    region_in(&short),
                    format!("{short}.{ns}.svc.cluster.local:{port}"),
                ),
            };
            let region = match region {
                Some(region) => {
                    b.note(
                        r,
                        format!("{dat}.destination.host"),
                        FieldStatus::Mapped,
                        format!("DNS endpoint {endpoint} in {region}"),
                    );
                    region
                }
                None => {
                    b.note(r, format!("{dat}.destination.host"), FieldStatus::Approximated, format!(
                        "DNS endpoint {endpoint}; no region in its name or subset, so it is placed in region `default` — rename it"
                    ));
                    "default".to_owned()
                }
            };
            let weight = dest.get("weight").and_then(Value::as_u64).unwrap_or(100);
            if dest.get("weight").is_some() {
                b.note(
                    r,
                    format!("{dat}.weight"),
                    FieldStatus::Mapped,
                    "steering weight of the destination's region",
                );
            }
            let cluster = base_name(&short);
            b.regions.insert(region.clone());
            b.clusters
                .entry(cluster.clone())
                .or_default()
                .entry(region.clone())
                .or_default()
                .insert(endpoint);
            targets.push((cluster, region, weight));
        }
        if targets.is_empty() {
            b.note(r, at.clone(), FieldStatus::Unsupported, "only http routes with `route` destinations are imported (redirects and direct responses are not)");
            continue;
        }
        let mut route = Map::new();
        let clusters: BTreeSet<&String> = targets.iter().map(|(c, _, _)| c).collect();
        let regions: BTreeSet<&String> = targets.iter().map(|(_, r, _)| r).collect();
        if clusters.len() == 1 {
            route.insert("cluster".into(), json!(targets[0].0));
            if regions.len() > 1 {
                let mut weights = Map::new();
                for (_, region, w) in &targets {
                    let prev = weights.get(region).and_then(Value::as_u64).unwrap_or(0);
                    weights.insert(region.clone(), json!(prev + w));
                }
                route.insert(
                    "steering".into(),
                    json!({ "mode": "weighted", "weights": weights }),
                );
            }
        } else {
            let mut split: BTreeMap<&String, u64> = BTreeMap::new();
            for (c, _, w) in &targets {
                *split.entry(c).or_default() += w;
            }
            route.insert(
                "clusters".into(),
                Value::Array(
                    split
                        .into_iter()
                        .map(|(c, w)| json!({ "name": c, "weight": w }))
                        .collect(),
                ),
            );
            b.note(r, format!("{at}.route"), FieldStatus::Approximated, "a split across different services: each service is then steered to the nearest region");
        }
        if let Some(t) = http.get("timeout").and_then(duration_text) {
            route.insert("timeout".into(), json!(t));
            b.note(
                r,
                format!("{at}.timeout"),
                FieldStatus::Mapped,
                "routes[].timeout",
            );
        }
        if let Some(retries) = http.get("retries") {
            let mut out = Map::new();
            if let Some(n) = retries.get("attempts") {
                out.insert("attempts".into(), n.clone());
                b.note(
                    r,
                    format!("{at}.retries.attempts"),
                    FieldStatus::Mapped,
                    "retries.attempts (same meaning: retries after the first try)",
                );
            }
            if let Some(t) = retries.get("perTryTimeout").and_then(duration_text) {
                out.insert("per_try_timeout".into(), json!(t));
                b.note(
                    r,
                    format!("{at}.retries.perTryTimeout"),
                    FieldStatus::Mapped,
                    "retries.per_try_timeout",
                );
            }
            if let Some(on) = retries.get("retryOn").and_then(Value::as_str) {
                let mut conditions = Vec::new();
                let mut dropped = Vec::new();
                for token in on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    match token {
                        "5xx" | "gateway-error" | "connect-failure" | "reset"
                        | "refused-stream" | "retriable-4xx" => conditions.push(json!(token)),
                        "unavailable" => conditions.push(json!(503)),
                        t if t.parse::<u16>().is_ok() => {
                            conditions.push(json!(t.parse::<u16>().unwrap_or(503)))
                        }
                        other => dropped.push(other.to_owned()),
                    }
                }
                out.insert("retry_on".into(), Value::Array(conditions));
                let (status, note) = if dropped.is_empty() {
                    (FieldStatus::Mapped, "retries.retry_on".to_owned())
                } else {
                    (
                        FieldStatus::Approximated,
                        format!(
                            "retries.retry_on; not available: {} (gRPC or Envoy-only conditions)",
                            dropped.join(", ")
                        ),
                    )
                };
                b.note(r, format!("{at}.retries.retryOn"), status, note);
            }
            route.insert("retries".into(), Value::Object(out));
        }
        cors::import(r, b, http, &at, &mut route);
        fault::import(r, b, http, &at, &mut route);
        mirror::import(r, b, subsets, http, &at, &mut route);
        // Istio ORs the match entries: one Meridian route each.
        let matches: Vec<Value> = http
            .get("match")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let matches = if matches.is_empty() {
            vec![Value::Null]
        } else {
            matches
        };
        for (k, m) in matches.iter().enumerate() {
            let mut this = route.clone();
            let name = if matches.len() > 1 {
                format!("{base}-{k}")
            } else {
                base.clone()
            };
            let mut out = Map::new();
            let mat = format!("{at}.match[{k}]");
            for (kind, field) in [
                ("prefix", "path_prefix"),
                ("exact", "path_exact"),
                ("regex", "path_regex"),
            ] {
                if let Some(v) = m.get("uri").and_then(|u| u.get(kind)) {
                    out.insert(field.into(), v.clone());
                    b.note(
                        r,
                        format!("{mat}.uri.{kind}"),
                        FieldStatus::Mapped,
                        format!("match.{field}"),
                    );
                }
            }
            let mut headers = Vec::new();
            for (h, cond) in m
                .get("headers")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                for kind in ["exact", "prefix", "regex"] {
                    if let Some(v) = cond.get(kind) {
                        headers.push(json!({ "name": h, kind: v }));
                        b.note(
                            r,
                            format!("{mat}.headers.{h}.{kind}"),
                            FieldStatus::Mapped,
                            "match.headers",
                        );
                    }
                }
            }
            if !headers.is_empty() {
                out.insert("headers".into(), Value::Array(headers));
            }
            if let Some(method) = m.get("method").and_then(|v| v.get("exact")) {
                out.insert("methods".into(), json!([method]));
                b.note(
                    r,
                    format!("{mat}.method.exact"),
                    FieldStatus::Mapped,
                    "match.methods",
                );
            }
            if !out.is_empty() {
                this.insert("match".into(), Value::Object(out));
            }
            // Keys in the order a person writes them.
            let mut named = Map::new();
            named.insert("name".into(), json!(name));
            named.insert("hosts".into(), Value::Array(hosts.clone()));
            if let Some(m) = this.remove("match") {
                named.insert("match".into(), m);
            }
            named.extend(this);
            b.routes.push(Value::Object(named));
        }
    }
}
