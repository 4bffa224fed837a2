//! `meridian import istio`: turn VirtualService, DestinationRule and Gateway documents into a
//! Meridian config, with a report that says for every Istio field whether it was mapped,
//! approximated or is unsupported, and why.
//!
//! Services become DNS endpoints (`<host>.<namespace>.svc.cluster.local:<port>`) in the region
//! their subset label (or their name) names; regional weights become weighted steering.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value, json};

use crate::config::{Problems, parse_values, to_yaml};

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

/// Why the input could not be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the Istio YAML: {}", render_problems(.0))]
    Yaml(Problems),
    #[error("no VirtualService found: meridian import istio needs at least one")]
    NoVirtualService,
}

fn render_problems(p: &Problems) -> String {
    p.iter()
        .map(|p| match p.line {
            Some(l) => format!("line {l}: {p}"),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
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
pub fn istio(text: &str) -> Result<Imported, ImportError> {
    let docs = parse_values(text).map_err(ImportError::Yaml)?;
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
        return Err(ImportError::NoVirtualService);
    }
    let mut b = Builder::default();

    // DestinationRules first: subsets name regions, traffic policies become cluster settings.
    let mut subsets: BTreeMap<(String, String), String> = BTreeMap::new();
    for r in resources.iter().filter(|r| r.kind == "DestinationRule") {
        let (short, _) = service_of(str_at(&r.spec, &["host"]).unwrap_or(""), &r.namespace);
        let cluster = base_name(&short);
        b.note(
            r,
            "spec.host",
            FieldStatus::Mapped,
            format!("cluster `{cluster}`"),
        );
        for (i, subset) in r
            .spec
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = subset.get("name").and_then(Value::as_str).unwrap_or("");
            let region = str_at(subset, &["labels", "region"])
                .or_else(|| str_at(subset, &["labels", "topology.kubernetes.io/region"]))
                .map(str::to_owned)
                .or_else(|| region_in(name));
            match region {
                Some(region) => {
                    subsets.insert((short.clone(), name.to_owned()), region.clone());
                    b.note(r, format!("spec.subsets[{i}]"), FieldStatus::Approximated, format!(
                        "subset `{name}` is region `{region}`; its endpoint is the DNS name `{short}-{name}.{}.svc.cluster.local` (a Service per region selecting those pods)",
                        r.namespace
                    ));
                }
                None => b.note(r, format!("spec.subsets[{i}]"), FieldStatus::Unsupported, "subsets are imported only when a `region` label (or the name) says which region they are"),
            }
        }
        let settings = b.cluster_settings.entry(cluster.clone()).or_default();
        let tp = r.spec.get("trafficPolicy").cloned().unwrap_or(Value::Null);
        let mut notes: Vec<(String, FieldStatus, String)> = Vec::new();
        let mut pool = Map::new();
        for (istio, field) in [
            ("tcp.maxConnections", "max_connections"),
            ("http.http1MaxPendingRequests", "max_pending_requests"),
            ("http.http2MaxRequests", "max_requests"),
            (
                "http.maxRequestsPerConnection",
                "max_requests_per_connection",
            ),
        ] {
            let path: Vec<&str> = istio.split('.').collect();
            if let Some(v) = tp
                .get("connectionPool")
                .and_then(|cp| path.iter().try_fold(cp, |v, k| v.get(*k)))
            {
                pool.insert(field.into(), v.clone());
                notes.push((
                    format!("spec.trafficPolicy.connectionPool.{istio}"),
                    FieldStatus::Mapped,
                    format!("connection_pool.{field} (per cluster)"),
                ));
            }
        }
        if let Some(v) = str_at(&tp, &["connectionPool", "http", "idleTimeout"]) {
            pool.insert("idle_timeout".into(), json!(v));
            notes.push((
                "spec.trafficPolicy.connectionPool.http.idleTimeout".into(),
                FieldStatus::Mapped,
                "connection_pool.idle_timeout".into(),
            ));
        }
        if let Some(v) = str_at(&tp, &["connectionPool", "tcp", "connectTimeout"]) {
            settings.insert("connect_timeout".into(), json!(v));
            notes.push((
                "spec.trafficPolicy.connectionPool.tcp.connectTimeout".into(),
                FieldStatus::Mapped,
                "connect_timeout".into(),
            ));
        }
        if !pool.is_empty() {
            settings.insert("connection_pool".into(), Value::Object(pool));
        }
        let mut outlier = Map::new();
        for (istio, field) in [
            ("consecutive5xxErrors", "consecutive_5xx"),
            ("consecutiveGatewayErrors", "consecutive_gateway_errors"),
            ("interval", "interval"),
            ("baseEjectionTime", "base_ejection_time"),
            ("maxEjectionPercent", "max_ejection_percent"),
            ("minHealthPercent", "min_health_percent"),
        ] {
            if let Some(v) = tp.get("outlierDetection").and_then(|o| o.get(istio)) {
                outlier.insert(field.into(), v.clone());
                notes.push((
                    format!("spec.trafficPolicy.outlierDetection.{istio}"),
                    FieldStatus::Mapped,
                    format!("outlier_detection.{field}"),
                ));
            }
        }
        if !outlier.is_empty() {
            settings.insert("outlier_detection".into(), Value::Object(outlier));
        }
        if let Some(simple) = str_at(&tp, &["loadBalancer", "simple"]) {
            let lb = match simple {
                "ROUND_ROBIN" => Some("round_robin"),
                "LEAST_REQUEST" | "LEAST_CONN" => Some("least_request"),
                "RANDOM" => Some("random"),
                _ => None,
            };
            match lb {
                Some(lb) => {
                    settings.insert("load_balancer".into(), json!(lb));
                    notes.push((
                        "spec.trafficPolicy.loadBalancer.simple".into(),
                        FieldStatus::Mapped,
                        format!("load_balancer: {lb}"),
                    ));
                }
                None => notes.push((
                    "spec.trafficPolicy.loadBalancer.simple".into(),
                    FieldStatus::Unsupported,
                    format!("{simple} has no Meridian equivalent"),
                )),
            }
        }
        if tp
            .get("loadBalancer")
            .and_then(|l| l.get("localityLbSetting"))
            .is_some()
        {
            notes.push((
                "spec.trafficPolicy.loadBalancer.localityLbSetting".into(),
                FieldStatus::Approximated,
                "Meridian fails over by region order (nearest first, spilling by health); failover from/to pairs become the natural distance order — use steering.countries/continents to pin a different one".into(),
            ));
        }
        if let Some(tls) = tp.get("tls") {
            notes.push(upstream_tls(tls, settings));
        }
        for (field, status, note) in notes {
            b.note(r, field, status, note);
        }
    }

    // Gateways: HTTP servers become listeners; HTTPS servers need certificate files by hand.
    for r in resources.iter().filter(|r| r.kind == "Gateway") {
        b.note(
            r,
            "spec.selector",
            FieldStatus::Approximated,
            "Meridian is the gateway itself: no selector needed",
        );
        for (i, server) in r
            .spec
            .get("servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let protocol = str_at(server, &["port", "protocol"])
                .unwrap_or("HTTP")
                .to_ascii_uppercase();
            let port = server
                .get("port")
                .and_then(|p| p.get("number"))
                .and_then(Value::as_u64)
                .unwrap_or(80);
            let at = format!("spec.servers[{i}]");
            if protocol == "HTTP" || protocol == "HTTP2" {
                let name = str_at(server, &["port", "name"])
                    .unwrap_or("http")
                    .to_owned();
                let mut listener = json!({ "name": name, "bind": format!("0.0.0.0:{port}") });
                if server
                    .get("tls")
                    .and_then(|t| t.get("httpsRedirect"))
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    listener["redirect_https"] = json!(true);
                    b.note(
                        r,
                        format!("{at}.tls.httpsRedirect"),
                        FieldStatus::Mapped,
                        format!("listener `{name}` redirect_https: true"),
                    );
                }
                b.listeners.push(listener);
                b.note(
                    r,
                    format!("{at}.port"),
                    FieldStatus::Mapped,
                    format!("listener `{name}` on 0.0.0.0:{port}"),
                );
                b.note(
                    r,
                    format!("{at}.hosts"),
                    FieldStatus::Mapped,
                    "the hosts of the routes bound to this gateway",
                );
            } else {
                b.note(r, at, FieldStatus::Unsupported, format!(
                    "{protocol} on {port}{}: Meridian terminates TLS from PEM files, not Kubernetes Secrets; mount the Secret and add a listener on {port} with tls.certificates: [{{cert: <dir>/tls.crt, key: <dir>/tls.key}}]",
                    str_at(server, &["tls", "credentialName"]).map(|c| format!(" (credential `{c}`)")).unwrap_or_default()
                ));
            }
        }
    }

    // VirtualServices: one Meridian route per http route and match.
    for r in resources.iter().filter(|r| r.kind == "VirtualService") {
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

    // Assemble the config.
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
    Ok(Imported { config, report })
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

/// A DestinationRule's `trafficPolicy.tls` as the cluster's upstream `tls`, with its note.
fn upstream_tls(tls: &Value, settings: &mut Map<String, Value>) -> (String, FieldStatus, String) {
    let field = "spec.trafficPolicy.tls".to_owned();
    let mode = str_at(tls, &["mode"])
        .unwrap_or("DISABLE")
        .to_ascii_uppercase();
    match mode.as_str() {
        "DISABLE" => (field, FieldStatus::Mapped, "plain HTTP upstream (the default)".into()),
        "SIMPLE" if tls.get("insecureSkipVerify").and_then(Value::as_bool) == Some(true) => (
            field,
            FieldStatus::Unsupported,
            "insecureSkipVerify: Meridian always verifies upstream certificates; give it the CA with tls.ca_file".into(),
        ),
        "SIMPLE" => {
            let mut out = Map::new();
            if let Some(sni) = str_at(tls, &["sni"]) {
                out.insert("sni".into(), json!(sni));
            }
            if let Some(ca) = str_at(tls, &["caCertificates"]) {
                out.insert("ca_file".into(), json!(ca));
            }
            settings.insert("tls".into(), Value::Object(out));
            (
                field,
                FieldStatus::Mapped,
                "tls (sni, ca_file; the system roots when no CA is given)".into(),
            )
        }
        other => (
            field,
            FieldStatus::Unsupported,
            format!("mode {other}: Meridian's upstream TLS verifies the server but sends no client certificate"),
        ),
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
