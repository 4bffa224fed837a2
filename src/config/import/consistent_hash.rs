//! DestinationRule `trafficPolicy.loadBalancer.consistentHash` → the cluster's
//! `load_balancer.consistent_hash`, with a report note for every field: the key (header,
//! cookie, source IP, query parameter) maps one to one; the hash algorithm is always Maglev,
//! so a ring hash (Istio's default) is reported as approximated.

use super::*;

/// The largest Maglev table Meridian builds (Istio takes primes below 5000011).
const MAX_TABLE_SIZE: u64 = 1_000_003;

/// Map `lb` (the `loadBalancer` object) into `settings`, noting each field in `notes`.
pub(super) fn import(
    lb: &Value,
    settings: &mut Map<String, Value>,
    notes: &mut Vec<(String, FieldStatus, String)>,
) {
    let Some(ch) = lb.get("consistentHash") else {
        return;
    };
    let at = |field: &str| format!("spec.trafficPolicy.loadBalancer.consistentHash.{field}");
    let mut out = Map::new();
    // Istio hashes with a ring unless `maglev` is named; Meridian always uses Maglev.
    let maglev = ch.get("maglev").is_some();
    let key_status = if maglev {
        FieldStatus::Mapped
    } else {
        FieldStatus::Approximated
    };
    let algorithm = if maglev {
        String::new()
    } else {
        "; hashed with Maglev where Istio defaults to a ring hash: the same key still keeps to one pod, but not necessarily the pod the ring chose, so sessions move once at the switch".to_owned()
    };
    if let Some(name) = str_at(ch, &["httpHeaderName"]) {
        out.insert("header".into(), json!(name));
        notes.push((
            at("httpHeaderName"),
            key_status,
            format!("load_balancer.consistent_hash.header{algorithm}"),
        ));
    }
    if let Some(cookie) = ch.get("httpCookie") {
        let mut c = Map::new();
        if let Some(name) = str_at(cookie, &["name"]) {
            c.insert("name".into(), json!(name));
            notes.push((
                at("httpCookie.name"),
                key_status,
                format!("load_balancer.consistent_hash.cookie.name{algorithm}"),
            ));
        }
        if let Some(path) = str_at(cookie, &["path"]) {
            c.insert("path".into(), json!(path));
            notes.push((
                at("httpCookie.path"),
                FieldStatus::Mapped,
                "load_balancer.consistent_hash.cookie.path".into(),
            ));
        }
        if let Some(ttl) = cookie.get("ttl").and_then(duration_text) {
            c.insert("ttl".into(), json!(ttl));
            notes.push((
                at("httpCookie.ttl"),
                FieldStatus::Approximated,
                "load_balancer.consistent_hash.cookie.ttl: a missing cookie is generated with this Max-Age (0s: a session cookie), as in Istio; its value is a random id Meridian hashes, where Envoy derives it from the pod it picked".into(),
            ));
        }
        if cookie.get("attributes").is_some() {
            notes.push((
                at("httpCookie.attributes"),
                FieldStatus::Unsupported,
                "extra cookie attributes: a generated cookie gets Max-Age, Path and HttpOnly only"
                    .into(),
            ));
        }
        out.insert("cookie".into(), Value::Object(c));
    }
    if ch.get("useSourceIp").and_then(Value::as_bool) == Some(true) {
        out.insert("source_ip".into(), json!(true));
        notes.push((
            at("useSourceIp"),
            key_status,
            format!(
                "load_balancer.consistent_hash.source_ip: the client address, after X-Forwarded-For from geo.trusted_proxies{algorithm}"
            ),
        ));
    }
    if let Some(name) = str_at(ch, &["httpQueryParameterName"]) {
        out.insert("query_parameter".into(), json!(name));
        notes.push((
            at("httpQueryParameterName"),
            key_status,
            format!("load_balancer.consistent_hash.query_parameter{algorithm}"),
        ));
    }
    match ch
        .get("maglev")
        .and_then(|m| m.get("tableSize"))
        .and_then(Value::as_u64)
    {
        Some(size) if size > MAX_TABLE_SIZE => {
            out.insert("table_size".into(), json!(MAX_TABLE_SIZE));
            notes.push((
                at("maglev.tableSize"),
                FieldStatus::Approximated,
                format!("{size} is past Meridian's largest table: table_size {MAX_TABLE_SIZE}"),
            ));
        }
        Some(size) => {
            out.insert("table_size".into(), json!(size));
            notes.push((
                at("maglev.tableSize"),
                FieldStatus::Mapped,
                "load_balancer.consistent_hash.table_size".into(),
            ));
        }
        None if maglev => notes.push((
            at("maglev"),
            FieldStatus::Mapped,
            "Maglev, table_size 65537 (the same default)".into(),
        )),
        None => {}
    }
    for ring in ["ringHash.minimumRingSize", "minimumRingSize"] {
        let path: Vec<&str> = ring.split('.').collect();
        if path.iter().try_fold(ch, |v, k| v.get(*k)).is_some() {
            notes.push((
                at(ring),
                FieldStatus::Approximated,
                "Meridian hashes with Maglev, not a ring: a ring size has no equivalent (table_size sets the Maglev table, 65537 by default)".into(),
            ));
        }
    }
    if ch
        .get("ringHash")
        .is_some_and(|r| r.get("minimumRingSize").is_none())
    {
        notes.push((
            at("ringHash"),
            FieldStatus::Approximated,
            "Meridian hashes with Maglev, not a ring".into(),
        ));
    }
    settings.insert(
        "load_balancer".into(),
        json!({ "consistent_hash": Value::Object(out) }),
    );
}
