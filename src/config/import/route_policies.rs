//! VirtualService route policies and match fields onto Meridian's: `rewrite` (uri,
//! uriRegexRewrite, authority), `redirect`, `directResponse`, `headers` (request and response
//! set/add/remove), and the match fields `queryParams`, `scheme`, `port`, `withoutHeaders`,
//! `ignoreUriCase`. Used by `virtual_service`.
//!
//! Istio's `regex` string matches are RE2 full matches; Meridian's regexes search, so every
//! imported match regex is anchored as `^(?:…)$`. A rewrite's regex is a search in both.

use super::*;

/// An Istio (RE2 full match) regex as a Meridian (search) regex with the same meaning.
pub(super) fn anchored(re: &Value) -> Value {
    match re.as_str() {
        Some(text) => json!(format!("^(?:{text})$")),
        None => re.clone(),
    }
}

/// Whether the http route answers at the edge (then it has no destinations).
pub(super) fn answers_at_edge(http: &Value) -> bool {
    http.get("redirect").is_some() || http.get("directResponse").is_some()
}

/// A StringMatch (`exact`, `prefix`, `regex`) as a Meridian condition on `name`, and the
/// field it came from. For query parameters an empty `exact` is Istio's way of asking for
/// presence (`?key`); for headers an empty match (`{}`) is.
fn string_match(name: &str, cond: &Value, query: bool) -> Option<(Value, &'static str)> {
    for kind in ["exact", "prefix", "regex"] {
        let Some(v) = cond.get(kind) else { continue };
        return Some(match kind {
            "regex" => (json!({ "name": name, "regex": anchored(v) }), kind),
            "exact" if query && v.as_str() == Some("") => {
                (json!({ "name": name, "present": true }), kind)
            }
            _ => (json!({ "name": name, kind: v }), kind),
        });
    }
    (!query && cond.as_object().is_some_and(Map::is_empty))
        .then(|| (json!({ "name": name, "present": true }), ""))
}

/// `headers` and `withoutHeaders` of a match.
pub(super) fn header_conditions(
    r: &Resource,
    b: &mut Builder,
    m: &Value,
    mat: &str,
    key: &str,
    target: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (h, cond) in m.get(key).and_then(Value::as_object).into_iter().flatten() {
        if let Some((condition, kind)) = string_match(h, cond, false) {
            out.push(condition);
            let field = match kind {
                "" => format!("{mat}.{key}.{h}"),
                kind => format!("{mat}.{key}.{h}.{kind}"),
            };
            b.note(r, field, FieldStatus::Mapped, format!("match.{target}"));
        }
    }
    out
}

/// The match fields beyond uri, headers and method, into the match map `out`.
pub(super) fn match_extras(
    r: &Resource,
    b: &mut Builder,
    m: &Value,
    mat: &str,
    out: &mut Map<String, Value>,
) {
    let mut query = Vec::new();
    for (name, cond) in m
        .get("queryParams")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some((condition, kind)) = string_match(name, cond, true) {
            query.push(condition);
            b.note(
                r,
                format!("{mat}.queryParams.{name}.{kind}"),
                FieldStatus::Mapped,
                "match.query",
            );
        }
    }
    if !query.is_empty() {
        out.insert("query".into(), Value::Array(query));
    }
    let without = header_conditions(r, b, m, mat, "withoutHeaders", "without_headers");
    if !without.is_empty() {
        out.insert("without_headers".into(), Value::Array(without));
    }
    if let Some(scheme) = str_at(m, &["scheme", "exact"]) {
        out.insert("scheme".into(), json!(scheme.to_ascii_lowercase()));
        b.note(
            r,
            format!("{mat}.scheme.exact"),
            FieldStatus::Mapped,
            "match.scheme",
        );
    }
    if let Some(port) = m.get("port").and_then(Value::as_u64) {
        out.insert("port".into(), json!(port));
        b.note(
            r,
            format!("{mat}.port"),
            FieldStatus::Approximated,
            "match.port: the port the client addressed (Host, or 80/443 by scheme)",
        );
    }
    if let Some(ignore) = m.get("ignoreUriCase").and_then(Value::as_bool) {
        if ignore {
            out.insert("ignore_case".into(), json!(true));
        }
        b.note(
            r,
            format!("{mat}.ignoreUriCase"),
            FieldStatus::Mapped,
            "match.ignore_case",
        );
    }
}

/// A `rewrite.uri` replaces the matched prefix; a route matched by regex has none, and Istio
/// then replaces the whole path: say so as a regex rewrite.
pub(super) fn fit_rewrite_to_match(route: &mut Map<String, Value>) {
    let regex_matched = route
        .get("match")
        .is_some_and(|m| m.get("path_regex").is_some());
    let Some(rewrite) = route.get_mut("rewrite").and_then(Value::as_object_mut) else {
        return;
    };
    if regex_matched && let Some(prefix) = rewrite.remove("prefix") {
        let whole = prefix.as_str().unwrap_or("/").replace('\\', "\\\\");
        rewrite.insert(
            "path_regex".into(),
            json!({ "pattern": "^.*$", "substitution": whole }),
        );
    }
}

/// `rewrite`, `redirect`, `directResponse` and `headers` of an http route, into `route`.
pub(super) fn import(
    r: &Resource,
    b: &mut Builder,
    http: &Value,
    at: &str,
    route: &mut Map<String, Value>,
) {
    let mut rewrite = Map::new();
    if let Some(rw) = http.get("rewrite") {
        if let Some(uri) = rw.get("uri") {
            rewrite.insert("prefix".into(), uri.clone());
            b.note(
                r,
                format!("{at}.rewrite.uri"),
                FieldStatus::Mapped,
                "rewrite.prefix (the matched prefix, or the whole path for an exact or regex match)",
            );
        }
        if let Some(re) = rw.get("uriRegexRewrite") {
            rewrite.insert(
                "path_regex".into(),
                json!({
                    "pattern": re.get("match").cloned().unwrap_or(json!("")),
                    "substitution": re.get("rewrite").cloned().unwrap_or(json!("")),
                }),
            );
            b.note(
                r,
                format!("{at}.rewrite.uriRegexRewrite"),
                FieldStatus::Mapped,
                "rewrite.path_regex",
            );
        }
        if let Some(authority) = rw.get("authority") {
            rewrite.insert("authority".into(), authority.clone());
            b.note(
                r,
                format!("{at}.rewrite.authority"),
                FieldStatus::Mapped,
                "rewrite.authority",
            );
        }
    }
    if let Some(rd) = http.get("redirect") {
        let mut out = Map::new();
        let note = |b: &mut Builder, field: &str, to: &str| {
            b.note(
                r,
                format!("{at}.redirect.{field}"),
                FieldStatus::Mapped,
                format!("redirect.{to}"),
            );
        };
        if let Some(uri) = rd.get("uri") {
            out.insert("path".into(), uri.clone());
            note(b, "uri", "path");
        }
        if let Some(authority) = rd.get("authority").and_then(Value::as_str) {
            // `host:port` is split: Meridian takes the port on its own.
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !authority.ends_with(']') => match p.parse::<u16>() {
                    Ok(p) => (h, Some(p)),
                    Err(_) => (authority, None),
                },
                _ => (authority, None),
            };
            out.insert("host".into(), json!(host));
            if let Some(p) = port {
                out.insert("port".into(), json!(p));
            }
            note(b, "authority", "host");
        }
        if let Some(port) = rd.get("port") {
            out.insert("port".into(), port.clone());
            note(b, "port", "port");
        }
        if rd.get("derivePort").is_some() {
            b.note(
                r,
                format!("{at}.redirect.derivePort"),
                FieldStatus::Approximated,
                "the request's port is kept unless the scheme changes (then the scheme's default)",
            );
        }
        if let Some(scheme) = rd.get("scheme") {
            out.insert("scheme".into(), scheme.clone());
            note(b, "scheme", "scheme");
        }
        if let Some(code) = rd.get("redirectCode") {
            out.insert("code".into(), code.clone());
            note(b, "redirectCode", "code");
        }
        route.insert("redirect".into(), Value::Object(out));
    }
    if let Some(d) = http.get("directResponse") {
        let mut out = Map::new();
        if let Some(status) = d.get("status") {
            out.insert("status".into(), status.clone());
            b.note(
                r,
                format!("{at}.directResponse.status"),
                FieldStatus::Mapped,
                "direct_response.status",
            );
        }
        if let Some(body) = str_at(d, &["body", "string"]) {
            out.insert("body".into(), json!(body));
            b.note(
                r,
                format!("{at}.directResponse.body.string"),
                FieldStatus::Mapped,
                "direct_response.body",
            );
        }
        route.insert("direct_response".into(), Value::Object(out));
    }
    for (side, key) in [
        ("request", "request_headers"),
        ("response", "response_headers"),
    ] {
        let Some(ops) = http.get("headers").and_then(|h| h.get(side)) else {
            continue;
        };
        let rules = header_operations(
            r,
            b,
            ops,
            &format!("{at}.headers.{side}"),
            side,
            &mut rewrite,
        );
        if !rules.is_empty() {
            route.insert(key.into(), Value::Object(rules));
        }
    }
    if !rewrite.is_empty() {
        route.insert("rewrite".into(), Value::Object(rewrite));
    }
}

/// Headers Meridian owns on each hop: a rule on them would be refused by `meridian check`.
const OWNED: [&str; 13] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-meridian-region",
];

/// One `set`/`add`/`remove` block. A request `Host` set becomes `rewrite.authority`.
fn header_operations(
    r: &Resource,
    b: &mut Builder,
    ops: &Value,
    at: &str,
    side: &str,
    rewrite: &mut Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for op in ["set", "add"] {
        let mut values = Map::new();
        for (name, value) in ops.get(op).and_then(Value::as_object).into_iter().flatten() {
            let field = format!("{at}.{op}.{name}");
            let lower = name.to_ascii_lowercase();
            if side == "request" && op == "set" && lower == "host" {
                rewrite.insert("authority".into(), value.clone());
                b.note(r, field, FieldStatus::Mapped, "rewrite.authority");
                continue;
            }
            if OWNED.contains(&lower.as_str())
                || lower.starts_with("x-meridian-")
                || lower == "host"
            {
                b.note(
                    r,
                    field,
                    FieldStatus::Unsupported,
                    "Meridian sets this header itself",
                );
                continue;
            }
            match translate_value(value.as_str().unwrap_or_default()) {
                Ok(v) => {
                    values.insert(lower, json!(v));
                    b.note(
                        r,
                        field,
                        FieldStatus::Mapped,
                        format!("{side}_headers.{op}"),
                    );
                }
                Err(var) => b.note(
                    r,
                    field,
                    FieldStatus::Unsupported,
                    format!("Envoy variable {var} has no Meridian equivalent"),
                ),
            }
        }
        if !values.is_empty() {
            out.insert(op.into(), Value::Object(values));
        }
    }
    let mut remove = Vec::new();
    for (i, name) in ops
        .get("remove")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("{at}.remove[{i}]");
        let lower = name.as_str().unwrap_or_default().to_ascii_lowercase();
        if OWNED.contains(&lower.as_str()) || lower.starts_with("x-meridian-") || lower == "host" {
            b.note(
                r,
                field,
                FieldStatus::Unsupported,
                "Meridian sets this header itself",
            );
            continue;
        }
        remove.push(json!(lower));
        b.note(
            r,
            field,
            FieldStatus::Mapped,
            format!("{side}_headers.remove"),
        );
    }
    if !remove.is_empty() {
        out.insert("remove".into(), Value::Array(remove));
    }
    out
}

/// Envoy's header value variables as Meridian's; `Err` names one Meridian does not have.
fn translate_value(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix('%') {
            out.push_str("%%");
            rest = next;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(format!("%{after}"));
        };
        let var = &after[..end];
        let mapped = match var {
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => "%CLIENT_ADDRESS%",
            v if v.eq_ignore_ascii_case("REQ(x-request-id)") => "%REQUEST_ID%",
            _ => return Err(format!("%{var}%")),
        };
        out.push_str(mapped);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_variables_translate_or_are_named() {
        for (text, want) in [
            ("plain", Ok("plain".to_owned())),
            ("100%%", Ok("100%%".to_owned())),
            (
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                Ok("%CLIENT_ADDRESS%".to_owned()),
            ),
            ("id %REQ(X-Request-Id)%", Ok("id %REQUEST_ID%".to_owned())),
            ("%UPSTREAM_HOST%", Err("%UPSTREAM_HOST%".to_owned())),
        ] {
            assert_eq!(translate_value(text), want, "{text}");
        }
    }

    #[test]
    fn regexes_are_anchored_as_full_matches() {
        assert_eq!(anchored(&json!("/v[0-9]+")), json!("^(?:/v[0-9]+)$"));
        assert_eq!(anchored(&json!("a|b")), json!("^(?:a|b)$"));
    }
}
