//! The TLS parts of the config file's shape: a listener's certificates, session tickets and
//! client certificates (mutual TLS), and a cluster's TLS to its upstreams. Plain serde
//! structs, as in `model`; read once by the table compiler.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The mutual TLS files a config names (listeners' client CAs; clusters' and peers' CAs,
/// client certificates and keys): replacing one is a reload.
pub fn mutual_tls_files(config: &super::Config) -> Vec<PathBuf> {
    let listeners = config.listeners.iter().filter_map(|l| l.tls.as_ref());
    let clusters = config.clusters.values().filter_map(|c| c.tls.as_ref());
    let peers = config.peers.iter().filter_map(|p| p.tls.as_ref());
    listeners
        .filter_map(|t| t.client_ca.clone())
        .chain(
            clusters
                .chain(peers)
                .flat_map(|t| [&t.ca_file, &t.cert, &t.key].into_iter().flatten().cloned()),
        )
        .collect()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ListenerTlsConfig {
    /// Certificate chain and key PEM files; SNI picks among them, the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Session tickets: on by default, with random keys.
    #[serde(default)]
    pub session_tickets: SessionTicketsConfig,
    /// PEM file of the CAs whose client certificates are accepted (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (with `client_ca`); otherwise one is optional.
    #[serde(default)]
    pub require_client_cert: bool,
    /// Tell upstreams about the client's verified certificate in a header.
    #[serde(default)]
    pub forward_client_cert: Option<ForwardClientCertConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ForwardClientCertConfig {
    /// e.g. `x-forwarded-client-cert`; a client's own copy is always removed.
    pub header: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SessionTicketsConfig {
    /// Issue session tickets, so clients resume sessions without a full handshake.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A file of 80-byte keys (`openssl rand 80`): instances given the same file resume each
    /// other's sessions. Without it each instance makes random keys at start and every reload.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for SessionTicketsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UpstreamTlsConfig {
    /// Server name to send and verify (default: the endpoint's address).
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM file of the CAs to trust (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to upstreams that ask for one (mutual TLS).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
