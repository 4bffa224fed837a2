//! TLS to a cluster's upstreams: the CAs that verify them and, for mutual TLS, the client
//! certificate Meridian presents.
//!
//! Owns the compiled setting ([`UpstreamTlsSpec`]), the rustls client config built from its
//! files ([`client_config`]) and the per-cluster holder the pool and the health checks connect
//! with ([`UpstreamTls`]). `table::compile` loads the files on every compile, so a broken file
//! is a config problem and a reload with it keeps the old table; when a reload keeps a cluster's
//! pool, `control::reload` swaps the freshly loaded config in ([`UpstreamTls::replace`]), so a
//! replaced certificate, key or CA file serves new connections without closing open ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::TlsError;

/// The largest PEM file (CA bundle, client certificate or key) Meridian reads: a system CA
/// bundle is about 200 KB; anything past this is a wrong path, not a certificate.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// TLS to the upstreams of a cluster, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSpec {
    /// Server name sent and verified; default: the endpoint's address.
    pub sni: Option<String>,
    /// PEM file of the CAs to trust; default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// (certificate chain, private key) PEM files Meridian presents when the upstream asks
    /// for a client certificate (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Which setting of a cluster's `tls` a loading error is about, for the config problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsField {
    CaFile,
    Cert,
    Key,
    Sni,
}

impl UpstreamTlsField {
    pub fn key(self) -> &'static str {
        match self {
            Self::CaFile => "ca_file",
            Self::Cert => "cert",
            Self::Key => "key",
            Self::Sni => "sni",
        }
    }
}

/// A PEM file's bytes, refused past [`MAX_PEM_BYTES`] before anything is read.
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source: std::io::Error| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source: rustls_pki_types::pem::Error::Io(source),
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
            len,
            max: MAX_PEM_BYTES,
        });
    }
    std::fs::read(path).map_err(io)
}

/// The certificates of a CA PEM file, as a root store; a file without any is an error.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let pem = read_pem("CA certificates", path)?;
    let read = |source| TlsError::Read {
        what: "CA certificates",
        path: path.to_path_buf(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(read)?)
            .map_err(|source| TlsError::Rustls {
                what: "unusable CA certificate",
                path: path.to_path_buf(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(roots)
}

/// A client certificate chain and its key, checked to belong together.
fn load_client_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), (UpstreamTlsField, TlsError)> {
    let chain_pem =
        read_pem("a PEM certificate chain", cert).map_err(|e| (UpstreamTlsField::Cert, e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| {
            let e = TlsError::Read {
                what: "a PEM certificate chain",
                path: cert.to_path_buf(),
                source,
            };
            (UpstreamTlsField::Cert, e)
        })?;
    if chain.is_empty() {
        return Err((
            UpstreamTlsField::Cert,
            TlsError::NoCertificate(cert.to_path_buf()),
        ));
    }
    let key_pem = read_pem("a private key", key).map_err(|e| (UpstreamTlsField::Key, e))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| {
        let e = TlsError::Read {
            what: "a private key",
            path: key.to_path_buf(),
            source,
        };
        (UpstreamTlsField::Key, e)
    })?;
    // The same checks a listener's pair gets: a supported key that matches the certificate.
    let signing =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der).map_err(|source| {
            let e = TlsError::Rustls {
                what: "unsupported private key",
                path: key.to_path_buf(),
                source,
            };
            (UpstreamTlsField::Key, e)
        })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|source| {
            let e = TlsError::KeyMismatch {
                key: key.to_path_buf(),
                cert: cert.to_path_buf(),
                source,
            };
            (UpstreamTlsField::Key, e)
        })?;
    Ok((chain, key_der))
}

/// Build the rustls client config of `spec`, reading its files now.
pub fn client_config(
    spec: &UpstreamTlsSpec,
) -> Result<Arc<ClientConfig>, (UpstreamTlsField, TlsError)> {
    // Checked here so a bad name is refused with its field, not on every connect.
    if let Some(name) = &spec.sni {
        ServerName::try_from(name.as_str()).map_err(|source| {
            let e = TlsError::ServerName {
                name: name.clone(),
                source,
            };
            (UpstreamTlsField::Sni, e)
        })?;
    }
    let roots = match &spec.ca_file {
        Some(path) => load_roots(path).map_err(|e| (UpstreamTlsField::CaFile, e))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            roots
        }
    };
    if roots.is_empty() {
        return Err((UpstreamTlsField::CaFile, TlsError::NoRoots));
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| (UpstreamTlsField::CaFile, TlsError::Client(e)))?
    .with_root_certificates(roots);
    let config = match &spec.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key_der) = load_client_pair(cert, key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| (UpstreamTlsField::Key, TlsError::Client(e)))?
        }
    };
    Ok(Arc::new(config))
}

/// A cluster's upstream TLS: its setting and the client config new connections use.
pub struct UpstreamTls {
    pub spec: UpstreamTlsSpec,
    config: ArcSwap<ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("spec", &self.spec)
            .finish()
    }
}

impl UpstreamTls {
    /// Load `spec`'s files and make the holder; see [`client_config`].
    pub fn new(spec: UpstreamTlsSpec) -> Result<Self, (UpstreamTlsField, TlsError)> {
        let config = client_config(&spec)?;
        Ok(Self::with_config(spec, config))
    }

    pub fn with_config(spec: UpstreamTlsSpec, config: Arc<ClientConfig>) -> Self {
        Self {
            spec,
            config: ArcSwap::new(config),
        }
    }

    /// New connections use `config` from now on; open ones keep the session they have.
    pub fn replace(&self, config: Arc<ClientConfig>) {
        self.config.store(config);
    }

    /// A connector with the current config (one reference count per new connection).
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.load_full())
    }

    /// The name to send and verify for an endpoint at `address`.
    pub fn server_name(
        &self,
        address: std::net::SocketAddr,
    ) -> Result<ServerName<'static>, rustls_pki_types::InvalidDnsNameError> {
        match &self.spec.sni {
            Some(name) => ServerName::try_from(name.clone()),
            None => Ok(ServerName::IpAddress(address.ip().into())),
        }
    }
}
