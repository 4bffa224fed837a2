//! The `peers` list and `peer_check` settings: the other regions' Meridian instances this one
//! probes, so a region whose Meridian is down drops out of its steering.
//!
//! Plain serde structs, read by `table::compile::peers` (which checks them and builds the
//! probes); nothing on the request path touches them.

use serde::{Deserialize, Serialize};

/// One other region's Meridian: its readiness URL (e.g. the admin listener's `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PeerConfig {
    /// The region that Meridian serves; must be one of `regions`, and not `local_region`.
    pub region: String,
    /// `http://host:port/path` or `https://host:port/path`; a 2xx answer means up.
    pub url: String,
    /// For an `https` URL: the CAs to trust instead of the system's, the name to verify, and a
    /// client certificate for a peer that asks for one (the fields of a cluster's `tls`).
    #[serde(default)]
    pub tls: Option<super::UpstreamTlsConfig>,
}

/// How peers are probed: one GET every `interval`, each within `timeout`, with the same
/// hysteresis as endpoint health checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct PeerCheckConfig {
    #[serde(default = "PeerCheckConfig::default_interval")]
    pub interval: String,
    #[serde(default = "PeerCheckConfig::default_timeout")]
    pub timeout: String,
    /// Failed probes in a row that mark a peer's region down.
    #[serde(default = "PeerCheckConfig::default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that bring it back.
    #[serde(default = "PeerCheckConfig::default_healthy_threshold")]
    pub healthy_threshold: u32,
}

impl PeerCheckConfig {
    pub const DEFAULT_INTERVAL: &str = "2s";
    pub const DEFAULT_TIMEOUT: &str = "1s";
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;

    fn default_interval() -> String {
        Self::DEFAULT_INTERVAL.to_owned()
    }
    fn default_timeout() -> String {
        Self::DEFAULT_TIMEOUT.to_owned()
    }
    fn default_unhealthy_threshold() -> u32 {
        Self::DEFAULT_UNHEALTHY_THRESHOLD
    }
    fn default_healthy_threshold() -> u32 {
        Self::DEFAULT_HEALTHY_THRESHOLD
    }
}

impl Default for PeerCheckConfig {
    fn default() -> Self {
        Self {
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            unhealthy_threshold: Self::DEFAULT_UNHEALTHY_THRESHOLD,
            healthy_threshold: Self::DEFAULT_HEALTHY_THRESHOLD,
        }
    }
}
