//! What a compile loaded for mutual TLS that a reload installs in place after the new table is
//! in service: fresh upstream client configs for pools the reload keeps, and fresh client CA
//! verifiers for listeners it keeps. Made by `table::compile` (reading the files, so a broken
//! one fails the compile and the old table stays), read by `edge::listen` (a new listener's
//! verifier) and `control::reload` (the swaps).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;

use crate::tls::UpstreamTls;
use crate::tls::client_auth::ClientVerifier;

#[derive(Default)]
pub struct MutualTls {
    /// A kept pool's TLS and the config loaded for it now (certificate, key and CAs re-read).
    pub upstream_renewals: Vec<(Arc<UpstreamTls>, Arc<rustls::ClientConfig>)>,
    /// The client certificate verifier of each listener with `client_ca`, by listener name.
    pub client_cas: HashMap<String, Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls")
            .field("upstream_renewals", &self.upstream_renewals.len())
            .field("client_cas", &self.client_cas.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MutualTls {
    /// Serve new upstream connections of kept pools with the freshly loaded configs.
    pub fn renew_upstreams(&self) {
        for (tls, config) in &self.upstream_renewals {
            tls.replace(config.clone());
        }
    }

    /// Verify new client certificates of a kept listener with its freshly loaded CAs.
    pub fn renew_listener(&self, listener: &str, verifier: Option<&ClientVerifier>) {
        if let (Some(verifier), Some(fresh)) = (verifier, self.client_cas.get(listener)) {
            verifier.replace(fresh.clone());
        }
    }
}
