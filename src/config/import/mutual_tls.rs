//! A DestinationRule's client TLS (`trafficPolicy.tls`, modes SIMPLE and MUTUAL) as a cluster's
//! upstream `tls`, and what to do about ISTIO_MUTUAL, whose certificates Istio hands its own
//! sidecar over SDS. Used by `destination_rule`.

use super::*;

/// The report's word for ISTIO_MUTUAL: what to mount and set instead.
pub(super) const ISTIO_MUTUAL: &str = "mode ISTIO_MUTUAL: the workload certificate comes from Istio's SDS, which Meridian does not speak; mount the istio-proxy certificate files (cert-chain.pem, key.pem, root-cert.pem, as in /etc/certs) and set tls.cert, tls.key and tls.ca_file (mode MUTUAL), or exclude the cluster from STRICT mTLS";

/// SIMPLE or MUTUAL as `tls: { sni, ca_file, cert, key }`, with the report line.
pub(super) fn client_tls(
    mode: &str,
    tls: &Value,
    settings: &mut Map<String, Value>,
) -> (String, FieldStatus, String) {
    let field = "spec.trafficPolicy.tls".to_owned();
    if let Some(secret) = str_at(tls, &["credentialName"]) {
        return (
            field,
            FieldStatus::Unsupported,
            format!(
                "credentialName `{secret}`: Meridian reads files, not Kubernetes secrets; mount the secret and set tls.ca_file (and tls.cert, tls.key for MUTUAL)"
            ),
        );
    }
    let mut out = Map::new();
    let mut mapped = vec![];
    for (istio, ours) in [
        ("sni", "sni"),
        ("caCertificates", "ca_file"),
        ("clientCertificate", "cert"),
        ("privateKey", "key"),
    ] {
        if let Some(v) = str_at(tls, &[istio]) {
            out.insert(ours.into(), json!(v));
            mapped.push(format!("{istio} → {ours}"));
        }
    }
    if mode == "MUTUAL" && !(out.contains_key("cert") && out.contains_key("key")) {
        return (
            field,
            FieldStatus::Unsupported,
            "mode MUTUAL needs clientCertificate and privateKey (files Meridian presents to the upstream)".into(),
        );
    }
    if mode == "SIMPLE" && (out.contains_key("cert") || out.contains_key("key")) {
        // Istio ignores client certificates in SIMPLE mode; so does the import.
        out.remove("cert");
        out.remove("key");
        mapped.retain(|m| !m.starts_with("clientCertificate") && !m.starts_with("privateKey"));
        mapped
            .push("clientCertificate and privateKey ignored, as Istio does in SIMPLE mode".into());
    }
    settings.insert("tls".into(), Value::Object(out));
    let roots = if str_at(tls, &["caCertificates"]).is_none() {
        "; the system roots verify the upstream"
    } else {
        ""
    };
    let what = if mapped.is_empty() {
        "tls".to_owned()
    } else {
        format!("tls ({})", mapped.join(", "))
    };
    (
        field,
        FieldStatus::Mapped,
        format!("mode {mode}: {what}{roots}"),
    )
}
