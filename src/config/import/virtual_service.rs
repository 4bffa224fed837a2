//! VirtualService: one Meridian route per http route and match.

use super::*;

pub(super) fn import(r: &Resource, b: &mut Builder, subsets: &super::regions::Subsets) {
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
            let endpoint = match subset {
                Some(subset) => format!("{short}-{subset}.{ns}.svc.cluster.local:{port}"),
                None => format!("{short}.{ns}.svc.cluster.local:{port}"),
            };
            // Never a made-up region: an unknown one leaves the destination out (reported).
            let Some(placed) = b.place(r, &dat, host, (&short, subset), subsets, &endpoint) else {
                continue;
            };
            let region = placed.region;
            let weight = dest.get("weight").and_then(Value::as_u64).unwrap_or(100);
            // A subset that is not a region (a version) is other pods: its own cluster.
            let cluster = b.cluster_for(&short, subset, placed.by_subset);
            if subset.is_some() {
                let note = if placed.by_subset {
                    "the subset's region; its pods are reached through a per-region Service name"
                        .to_owned()
                } else {
                    format!(
                        "not a region: cluster `{cluster}`, its pods reached through the Service name {endpoint}"
                    )
                };
                b.note(
                    r,
                    format!("{dat}.destination.subset"),
                    FieldStatus::Approximated,
                    note,
                );
            }
            if dest.get("weight").is_some() {
                let note = if subset.is_some() && !placed.by_subset {
                    "weight of the subset's cluster in the route's clusters split"
                } else {
                    "steering weight of the destination's region"
                };
                b.note(r, format!("{dat}.weight"), FieldStatus::Mapped, note);
            }
            b.regions.insert(region.clone());
            b.clusters
                .entry(cluster.clone())
                .or_default()
                .entry(region.clone())
                .or_default()
                .insert(endpoint);
            targets.push((cluster, region, weight));
        }
        if targets.is_empty() && !route_policies::answers_at_edge(http) {
            let has_routes = http
                .get("route")
                .and_then(Value::as_array)
                .is_some_and(|d| !d.is_empty());
            if has_routes {
                b.note(
                    r,
                    format!("{at}.route"),
                    FieldStatus::Unsupported,
                    "route left out: none of its destinations has a known region",
                );
            } else {
                b.note(
                    r,
                    at.clone(),
                    FieldStatus::Unsupported,
                    "an http route needs `route` destinations, a redirect or a direct response",
                );
            }
            continue;
        }
        let mut route = Map::new();
        let clusters: BTreeSet<&String> = targets.iter().map(|(c, _, _)| c).collect();
        let regions: BTreeSet<&String> = targets.iter().map(|(_, r, _)| r).collect();
        if targets.is_empty() {
            // Answered at the edge: no cluster.
        } else if clusters.len() == 1 {
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
            b.note(r, format!("{at}.route"), FieldStatus::Approximated, "a split across different services (or version subsets): a clusters split, each cluster steered to the nearest region; a cluster with no healthy endpoint drops out");
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
        route_policies::import(r, b, http, &at, &mut route);
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
                    let v = match kind {
                        "regex" => route_policies::anchored(v),
                        _ => v.clone(),
                    };
                    out.insert(field.into(), v);
                    b.note(
                        r,
                        format!("{mat}.uri.{kind}"),
                        FieldStatus::Mapped,
                        format!("match.{field}"),
                    );
                }
            }
            let headers = route_policies::header_conditions(r, b, m, &mat, "headers", "headers");
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
            route_policies::match_extras(r, b, m, &mat, &mut out);
            if !out.is_empty() {
                this.insert("match".into(), Value::Object(out));
            }
            route_policies::fit_rewrite_to_match(&mut this);
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
