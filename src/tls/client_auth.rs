//! Client certificates on a TLS listener (downstream mutual TLS).
//!
//! Owns the compiled setting ([`ClientAuthSpec`]), the verifier a listener's rustls config asks
//! ([`ClientVerifier`], whose CAs a reload replaces in place, as the listener's certificates
//! are), and the header value that tells the upstream which certificate the client presented
//! ([`ForwardedClientCert`], Envoy's `x-forwarded-client-cert` format). `table::compile` loads
//! the CA file (a broken one is a config problem), `edge::listen` installs the verifier and
//! makes the header value once per connection after the handshake, `control::reload` swaps
//! new CAs in, and `proxy` sets the header on the upstream request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use super::TlsError;

/// A listener's client certificate setting, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSpec {
    /// PEM file of the CAs that sign the client certificates accepted.
    pub client_ca: PathBuf,
    /// Refuse a client without a certificate at the handshake; otherwise a certificate is
    /// optional, and verified when one is given.
    pub required: bool,
    /// Tell the upstream about the client's certificate in this header (and remove any copy a
    /// client sent); nothing is forwarded without it.
    pub forward_header: Option<HeaderName>,
}

/// A verifier over the CAs of `client_ca`, read now.
pub fn load_verifier(
    client_ca: &Path,
    required: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = super::client_cert::load_roots(client_ca)?;
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    );
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map_err(|e| TlsError::Client(rustls::Error::General(e.to_string())))
}

/// The verifier a listener's rustls config holds: it asks the current CAs, which a reload
/// replaces without rebinding the listener.
#[derive(Debug)]
pub struct ClientVerifier {
    required: bool,
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl ClientVerifier {
    pub fn new(required: bool, verifier: Arc<dyn ClientCertVerifier>) -> Arc<Self> {
        Arc::new(Self {
            required,
            current: ArcSwap::from_pointee(verifier),
        })
    }

    /// New handshakes verify with `verifier` from now on.
    pub fn replace(&self, verifier: Arc<dyn ClientCertVerifier>) {
        self.current.store(Arc::new(verifier));
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    // No CA names in the request: the CAs change on reload, and the slice would have to
    // outlive them. Clients then offer the certificate they have, which is verified anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

/// What one connection tells the upstream about its client certificate: the header to set
/// (a client's own copy is always removed) and its value, when a verified certificate came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedClientCert {
    pub header: HeaderName,
    pub value: Option<HeaderValue>,
}

/// Subject Alternative Names forwarded past this many bytes of header are left out: the header
/// must fit an upstream's header limits whatever a certificate holds.
const MAX_VALUE_BYTES: usize = 4096;

/// The `x-forwarded-client-cert` value of a certificate (DER), in Envoy's format:
/// `Hash=<sha256 hex>;Subject="<RFC 2253 subject>";URI=<uri>;DNS=<name>`. `None` when the
/// certificate cannot be parsed (it was verified, so only an exotic encoding gets here).
pub fn xfcc_value(der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = String::with_capacity(256);
    out.push_str("Hash=");
    for byte in Sha256::digest(der) {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push_str(";Subject=\"");
    push_escaped(&mut out, &subject_rfc2253(cert.subject()));
    out.push('"');
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if out.len() > MAX_VALUE_BYTES {
                break;
            }
            let (key, value) = match name {
                x509_parser::extensions::GeneralName::URI(uri) => ("URI", *uri),
                x509_parser::extensions::GeneralName::DNSName(dns) => ("DNS", *dns),
                _ => continue,
            };
            out.push(';');
            out.push_str(key);
            out.push('=');
            // Quoted when it holds a separator, as Envoy does.
            if value.contains([',', ';', '=', '"']) {
                out.push('"');
                push_escaped(&mut out, value);
                out.push('"');
            } else {
                push_escaped(&mut out, value);
            }
        }
    }
    HeaderValue::from_str(&out).ok()
}

/// A subject as RFC 2253 writes it: the last RDN first, `,` between RDNs, `+` within one.
fn subject_rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = attr.as_str().unwrap_or("");
                    format!("{key}={}", escape_rdn_value(value))
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253 §2.4: a backslash before the characters that would end or split the value.
fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Append `text` for inside a quoted XFCC value: `"` and `\` escaped, and anything a header
/// cannot hold (controls, non-ASCII) as `?`, so a certificate never breaks the request head.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn xfcc_names_hash_subject_uri_and_dns() {
        let der = cert(
            "client-1",
            vec![
                rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().unwrap()),
                rcgen::SanType::DnsName("client.example.com".try_into().unwrap()),
            ],
        );
        let value = xfcc_value(&der).unwrap();
        let text = value.to_str().unwrap();
        let hash: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            text,
            format!(
                "Hash={hash};Subject=\"CN=client-1,O=Acme\";URI=spiffe://cluster.local/ns/a/sa/b;DNS=client.example.com"
            )
        );
    }

    #[test]
    fn xfcc_escapes_what_would_split_or_break_the_header() {
        let cases = [
            ("a,b", "CN=a\\\\,b"),
            ("quote\"d", "CN=quote\\\\\\\"d"),
            ("caf\u{e9}", "CN=caf?"),
            ("#lead", "CN=\\\\#lead"),
        ];
        for (cn, subject) in cases {
            let value = xfcc_value(&cert(cn, vec![])).unwrap();
            let text = value.to_str().unwrap();
            assert!(
                text.contains(&format!("Subject=\"{subject},O=Acme\"")),
                "{cn}: {text}"
            );
        }
    }

    #[test]
    fn xfcc_of_many_names_stays_bounded() {
        let sans = (0..2000)
            .map(|i| rcgen::SanType::DnsName(format!("host-{i}.example.com").try_into().unwrap()))
            .collect();
        let value = xfcc_value(&cert("many", sans)).unwrap();
        assert!(value.len() < MAX_VALUE_BYTES + 300, "{}", value.len());
        assert!(value.to_str().unwrap().contains("DNS=host-0.example.com"));
    }

    #[test]
    fn garbage_is_no_value() {
        assert_eq!(xfcc_value(b"not a certificate"), None);
    }
}
