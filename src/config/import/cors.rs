//! VirtualService `corsPolicy` → the route's `cors:` (same field meanings).

use super::*;

pub(super) fn import(
    r: &Resource,
    b: &mut Builder,
    http: &Value,
    at: &str,
    route: &mut Map<String, Value>,
) {
    let Some(policy) = http.get("corsPolicy") else {
        return;
    };
    let at = format!("{at}.corsPolicy");
    let mut out = Map::new();
    let mut origins = Vec::new();
    for (i, origin) in policy
        .get("allowOrigins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        for kind in ["exact", "prefix", "regex"] {
            if let Some(v) = origin.get(kind).and_then(Value::as_str) {
                origins.push(json!({ kind: v }));
                b.note(
                    r,
                    format!("{at}.allowOrigins[{i}].{kind}"),
                    FieldStatus::Mapped,
                    format!("cors.allow_origins[].{kind}"),
                );
            }
        }
    }
    // The deprecated list of plain strings: exact origins.
    for (i, origin) in policy
        .get("allowOrigin")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(v) = origin.as_str() {
            origins.push(json!({ "exact": v }));
            b.note(
                r,
                format!("{at}.allowOrigin[{i}]"),
                FieldStatus::Mapped,
                "cors.allow_origins[].exact",
            );
        }
    }
    out.insert("allow_origins".into(), Value::Array(origins));
    for (field, key) in [
        ("allowMethods", "allow_methods"),
        ("allowHeaders", "allow_headers"),
        ("exposeHeaders", "expose_headers"),
    ] {
        if let Some(list) = policy.get(field).and_then(Value::as_array) {
            out.insert(key.into(), Value::Array(list.clone()));
            b.note(
                r,
                format!("{at}.{field}"),
                FieldStatus::Mapped,
                format!("cors.{key}"),
            );
        }
    }
    if let Some(age) = policy.get("maxAge").and_then(duration_text) {
        out.insert("max_age".into(), json!(age));
        b.note(
            r,
            format!("{at}.maxAge"),
            FieldStatus::Mapped,
            "cors.max_age",
        );
    }
    if let Some(credentials) = policy.get("allowCredentials").and_then(Value::as_bool) {
        out.insert("allow_credentials".into(), json!(credentials));
        b.note(
            r,
            format!("{at}.allowCredentials"),
            FieldStatus::Mapped,
            "cors.allow_credentials",
        );
    }
    if policy.get("unmatchedPreflights").is_some() {
        b.note(
            r,
            format!("{at}.unmatchedPreflights"),
            FieldStatus::Approximated,
            "a preflight from an origin that is not allowed is always forwarded (Istio's default)",
        );
    }
    route.insert("cors".into(), Value::Object(out));
}
