//! Compiling mutual TLS: a cluster's client certificate and CAs (`tls.cert`, `tls.key`,
//! `tls.ca_file`) and a listener's client certificate checks (`tls.client_ca`,
//! `require_client_cert`, `forward_client_cert`). Every file is read on every compile, so a
//! replaced one takes effect on reload and a broken one is a problem at its field (and a
//! reload with it keeps the old table, as a broken listener certificate does). Used by
//! `clusters` and `listeners`.

use super::*;
use crate::config::UpstreamTlsConfig;
use crate::tls::client_auth::{ClientAuthSpec, load_verifier};
use crate::tls::{UpstreamTls, UpstreamTlsSpec};

impl<'a> Compiler<'a> {
    /// A cluster's `tls`, checked: `cert` and `key` come together.
    pub(super) fn upstream_tls_spec(
        &mut self,
        at: YamlPath,
        t: &UpstreamTlsConfig,
    ) -> Option<UpstreamTlsSpec> {
        let client_cert = match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            (Some(_), None) => {
                self.problems.at(
                    at.key("cert"),
                    "needs `key` too: the private key of the client certificate",
                );
                return None;
            }
            (None, Some(_)) => {
                self.problems.at(
                    at.key("key"),
                    "needs `cert` too: the client certificate chain the key belongs to",
                );
                return None;
            }
        };
        Some(UpstreamTlsSpec {
            sni: t.sni.clone(),
            ca_file: t.ca_file.clone(),
            client_cert,
        })
    }

    /// Load a new pool's TLS; a broken file is a problem at its field.
    pub(super) fn upstream_tls(
        &mut self,
        at: YamlPath,
        spec: UpstreamTlsSpec,
    ) -> Option<Arc<UpstreamTls>> {
        match UpstreamTls::new(spec) {
            Ok(tls) => Some(Arc::new(tls)),
            Err((field, e)) => {
                self.problems.at(at.key(field.key()), e.to_string());
                None
            }
        }
    }

    /// Re-read the files of a pool this compile keeps, for the reload to swap in once the new
    /// table is in service: a replaced certificate, key or CA file serves new connections.
    pub(super) fn renew_upstream_tls(&mut self, at: YamlPath, tls: Option<&Arc<UpstreamTls>>) {
        let Some(tls) = tls else { return };
        match crate::tls::client_cert::client_config(&tls.spec) {
            Ok(config) => self.mtls.upstream_renewals.push((tls.clone(), config)),
            Err((field, e)) => self.problems.at(at.key(field.key()), e.to_string()),
        }
    }

    /// A listener's client certificate settings, with the CA file read now.
    pub(super) fn client_auth(
        &mut self,
        at: YamlPath,
        listener: &str,
        t: &ListenerTlsConfig,
    ) -> Option<ClientAuthSpec> {
        let forward_header = t.forward_client_cert.as_ref().and_then(|f| {
            let at = at.key("forward_client_cert").key("header");
            match http::HeaderName::from_bytes(f.header.as_bytes()) {
                Ok(name) if !is_reserved(&name) => Some(name),
                Ok(name) => {
                    self.problems.at(
                        at,
                        format!("`{name}` is a header Meridian sets or strips itself; pick another, e.g. x-forwarded-client-cert"),
                    );
                    None
                }
                Err(_) => {
                    self.problems.at(
                        at,
                        format!(
                            "`{}` is not a header name (letters, digits and -, e.g. x-forwarded-client-cert)",
                            f.header.escape_debug()
                        ),
                    );
                    None
                }
            }
        });
        let Some(client_ca) = &t.client_ca else {
            if t.require_client_cert {
                self.problems.at(
                    at.key("require_client_cert"),
                    "needs `client_ca`: the CAs that sign the client certificates",
                );
            }
            if t.forward_client_cert.is_some() {
                self.problems.at(
                    at.key("forward_client_cert"),
                    "needs `client_ca`: without it no client certificate is asked for",
                );
            }
            return None;
        };
        match load_verifier(client_ca, t.require_client_cert) {
            Ok(verifier) => {
                self.mtls.client_cas.insert(listener.to_owned(), verifier);
            }
            Err(e) => self.problems.at(at.key("client_ca"), e.to_string()),
        }
        Some(ClientAuthSpec {
            client_ca: client_ca.clone(),
            required: t.require_client_cert,
            forward_header,
        })
    }
}

/// Headers whose meaning the proxy owns (hop-by-hop, framing, forwarding, Meridian's own): a
/// client certificate header by one of these names would be overwritten or break framing.
fn is_reserved(name: &http::HeaderName) -> bool {
    use http::header;
    let own = [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::EXPECT,
    ];
    own.contains(name)
        || crate::http1::headers::is_hop_by_hop_name(name.as_str().as_bytes())
        || name.as_str().starts_with("x-forwarded-for")
        || name.as_str().starts_with("x-meridian-")
        || matches!(
            name.as_str(),
            "x-forwarded-proto" | "x-forwarded-host" | "x-request-id"
        )
}

#[cfg(test)]
mod tests {
    use super::is_reserved;

    #[test]
    fn reserved_header_names() {
        for (name, reserved) in [
            ("x-forwarded-client-cert", false),
            ("x-client-cert", false),
            ("host", true),
            ("content-length", true),
            ("transfer-encoding", true),
            ("connection", true),
            ("x-forwarded-for", true),
            ("x-request-id", true),
            ("x-meridian-region", true),
        ] {
            let name = http::HeaderName::from_static(name);
            assert_eq!(is_reserved(&name), reserved, "{name}");
        }
    }
}
