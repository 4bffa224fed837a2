//! VirtualService `fault` → the route's `fault:` (delay and HTTP abort; same meanings).

use super::*;

pub(super) fn import(
    r: &Resource,
    b: &mut Builder,
    http: &Value,
    at: &str,
    route: &mut Map<String, Value>,
) {
    let Some(fault) = http.get("fault") else {
        return;
    };
    let at = format!("{at}.fault");
    let mut out = Map::new();
    if let Some(delay) = fault.get("delay") {
        let here = format!("{at}.delay");
        match delay.get("fixedDelay").and_then(duration_text) {
            Some(fixed) => {
                let mut d = Map::new();
                d.insert("fixed".into(), json!(fixed));
                b.note(
                    r,
                    format!("{here}.fixedDelay"),
                    FieldStatus::Mapped,
                    "fault.delay.fixed",
                );
                let p = percentage(r, b, delay, &here, "fault.delay.percent");
                d.insert("percent".into(), json!(p));
                out.insert("delay".into(), Value::Object(d));
            }
            None => b.note(
                r,
                here,
                FieldStatus::Unsupported,
                "only a fixedDelay can be injected (exponentialDelay is not)",
            ),
        }
    }
    if let Some(abort) = fault.get("abort") {
        let here = format!("{at}.abort");
        match abort.get("httpStatus").and_then(Value::as_u64) {
            Some(status) => {
                let mut a = Map::new();
                a.insert("status".into(), json!(status));
                b.note(
                    r,
                    format!("{here}.httpStatus"),
                    FieldStatus::Mapped,
                    "fault.abort.status",
                );
                let p = percentage(r, b, abort, &here, "fault.abort.percent");
                a.insert("percent".into(), json!(p));
                out.insert("abort".into(), Value::Object(a));
            }
            None => b.note(
                r,
                here,
                FieldStatus::Unsupported,
                "only an HTTP status abort can be injected (grpcStatus and http2Error are not)",
            ),
        }
    }
    if !out.is_empty() {
        route.insert("fault".into(), Value::Object(out));
    }
}

/// `percentage.value` (or the deprecated integer `percent`) of a fault. Without either, Istio
/// (through Envoy) injects nothing, whatever its older docs said (istio/istio#36303): 0, and
/// said so in the report.
fn percentage(r: &Resource, b: &mut Builder, fault: &Value, at: &str, to: &str) -> f64 {
    if let Some(v) = fault
        .get("percentage")
        .and_then(|p| p.get("value"))
        .and_then(Value::as_f64)
    {
        b.note(r, format!("{at}.percentage.value"), FieldStatus::Mapped, to);
        return v;
    }
    if let Some(v) = fault.get("percent").and_then(Value::as_f64) {
        b.note(r, format!("{at}.percent"), FieldStatus::Mapped, to);
        return v;
    }
    b.note(
        r,
        format!("{at}.percentage"),
        FieldStatus::Approximated,
        format!(
            "not given: Istio injects this fault into no request, so {to} is 0; set it to inject"
        ),
    );
    0.0
}
