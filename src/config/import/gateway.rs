//! Gateway: HTTP servers become listeners; HTTPS servers need certificate files by hand.

use super::*;

pub(super) fn import(r: &Resource, b: &mut Builder) {
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
