//! DestinationRule: the host names a cluster, subsets name regions, the traffic policy
//! becomes the cluster's settings.

use super::*;

/// One DestinationRule; `subsets` learns which region each (service, subset) names.
pub(super) fn import(r: &Resource, b: &mut Builder, subsets: &mut super::regions::Subsets) {
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
        let at = format!("spec.subsets[{i}]");
        match super::regions::subset_region(subset, name) {
            Some(Ok(placed)) => {
                b.note(r, at, FieldStatus::Inferred, format!(
                    "subset `{name}` is region `{}`, from {}; its endpoint is the DNS name `{short}-{name}.{}.svc.cluster.local` (a Service per region selecting those pods)",
                    placed.region, placed.how, r.namespace
                ));
                subsets.insert((short.clone(), name.to_owned()), Ok(placed));
            }
            Some(Err(why)) => {
                b.note(r, at, FieldStatus::Unsupported, format!("{why}; destinations using it need a --region flag"));
                subsets.insert((short.clone(), name.to_owned()), Err(why));
            }
            None => b.note(r, at, FieldStatus::Approximated, format!(
                "subset `{name}` names no region, so it is a version: routes to it go to cluster `{cluster}-{name}`, the DNS name `{short}-{name}.{}.svc.cluster.local` (a Service selecting its pods), in the region a --region flag or the service's name gives",
                r.namespace
            )),
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
    if let Some(lb) = tp.get("loadBalancer") {
        consistent_hash::import(lb, settings, &mut notes);
    }
    if let Some(tls) = tp.get("tls") {
        notes.push(upstream_tls(tls, settings));
    }
    if let Some(setting) = tp
        .get("loadBalancer")
        .and_then(|l| l.get("localityLbSetting"))
    {
        let (locality, found) = super::locality::read(&r.label(), setting);
        notes.extend(found);
        b.locality.insert(cluster.clone(), locality);
    }
    for (field, status, note) in notes {
        b.note(r, field, status, note);
    }
}

/// A DestinationRule's `trafficPolicy.tls` as the cluster's upstream `tls`, with its note.
pub(super) fn upstream_tls(
    tls: &Value,
    settings: &mut Map<String, Value>,
) -> (String, FieldStatus, String) {
    let field = "spec.trafficPolicy.tls".to_owned();
    let mode = str_at(tls, &["mode"])
        .unwrap_or("DISABLE")
        .to_ascii_uppercase();
    match mode.as_str() {
        "DISABLE" => (field, FieldStatus::Mapped, "plain HTTP upstream (the default)".into()),
        "SIMPLE" | "MUTUAL" if tls.get("insecureSkipVerify").and_then(Value::as_bool) == Some(true) => (
            field,
            FieldStatus::Unsupported,
            "insecureSkipVerify: Meridian always verifies upstream certificates; give it the CA with tls.ca_file".into(),
        ),
        "SIMPLE" | "MUTUAL" => super::mutual_tls::client_tls(&mode, tls, settings),
        "ISTIO_MUTUAL" => (field, FieldStatus::Unsupported, super::mutual_tls::ISTIO_MUTUAL.into()),
        other => (
            field,
            FieldStatus::Unsupported,
            format!("mode {other} is not an Istio TLS mode"),
        ),
    }
}
