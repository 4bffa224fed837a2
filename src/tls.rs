//! TLS termination with rustls (the `aws-lc-rs` provider: RSA signatures at OpenSSL's speed,
//! and it builds with nothing but a C compiler on Linux x86-64).
//!
//! Each TLS listener has an SNI resolver: the certificate whose names match the client's
//! server name (wildcards included, checked the way clients check them), else the first one.
//! Reloads swap the certificates inside the resolver, so listeners are never rebound and open
//! connections keep the certificate they started with.
//!
//! Session tickets, with random or shared keys that reloads replace, live in [`tickets`];
//! client certificates (mutual TLS) in [`client_auth`] (clients presenting one to a listener)
//! and [`client_cert`] (Meridian presenting one to upstreams).
//!
//! Errors: [`TlsError`], naming the file, with the PEM, I/O or rustls cause as source.

pub mod client_auth;
pub mod client_cert;
pub mod tickets;

pub use client_cert::{UpstreamTls, UpstreamTlsField, UpstreamTlsSpec};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Oldest TLS version a listener accepts (rustls has nothing older than 1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

/// A listener's TLS settings, compiled (compared to decide whether a reload keeps it).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSpec {
    /// (certificate chain, private key) PEM files; the first pair is the default.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    pub min_version: MinVersion,
    pub session_tickets: tickets::SessionTickets,
    /// Client certificates asked for (mutual TLS), when set.
    pub client_auth: Option<client_auth::ClientAuthSpec>,
}

/// Why certificates or keys could not be loaded: the tls layer's one error type. The text
/// names the file; the PEM or rustls cause is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{} is {len} bytes, more than the {max} a PEM file may have", path.display())]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{}: {what}: {source}", path.display())]
    Rustls {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} does not belong to {}: {source}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("`{name}` is not a DNS name or IP address to send and verify: {source}")]
    ServerName {
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("no CA certificate to verify upstreams with (set tls.ca_file)")]
    NoRoots,
    #[error("cannot set up a TLS client: {0}")]
    Client(#[source] rustls::Error),
    #[error("cannot read session ticket keys from {}: {source}", path.display())]
    TicketKeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("session ticket key file {} {problem}", path.display())]
    TicketKeyFormat {
        path: PathBuf,
        problem: tickets::KeyFileProblem,
    },
    #[error("cannot make session ticket keys: {0}")]
    TicketKeys(#[source] rustls::Error),
}

/// Load a certificate chain and its private key from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    fn read<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(pem::Error) -> TlsError + 'p {
        move |source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(read("certificates", cert))?
        .collect::<Result<_, _>>()
        .map_err(read("a PEM certificate chain", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(read("a private key", key))?;
    let signing =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der).map_err(|source| {
            TlsError::Rustls {
                what: "unsupported private key",
                path: key.to_path_buf(),
                source,
            }
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(certified))
}

/// Picks the certificate for a client's server name.
#[derive(Debug)]
pub struct SniResolver {
    certificates: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl SniResolver {
    pub fn new(certificates: Vec<Arc<CertifiedKey>>) -> Arc<Self> {
        Arc::new(Self {
            certificates: ArcSwap::from_pointee(certificates),
        })
    }

    /// New handshakes use these from now on.
    pub fn replace(&self, certificates: Vec<Arc<CertifiedKey>>) {
        self.certificates.store(Arc::new(certificates));
    }
}

fn valid_for(certified: &CertifiedKey, name: &ServerName<'_>) -> bool {
    certified
        .cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certificates = self.certificates.load();
        let wanted = client_hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_owned()).ok());
        wanted
            .and_then(|name| certificates.iter().find(|c| valid_for(c, &name)).cloned())
            .or_else(|| certificates.first().cloned())
    }
}

/// A rustls server config offering h2 and http/1.1, issuing session tickets with `tickets`
/// (without, sessions resume from rustls's own per-process cache only), and asking clients
/// for certificates when `clients` is set.
pub fn server_config(
    resolver: Arc<SniResolver>,
    min: MinVersion,
    tickets: Option<Arc<dyn ProducesTickets>>,
    clients: Option<Arc<client_auth::ClientVerifier>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if let Some(tickets) = tickets {
        config.ticketer = tickets;
    }
    Ok(Arc::new(config))
}
