//! Configuration: the YAML model, loading with line numbers, and the problems found in it.
//!
//! Loading stops at the model; [`crate::table::compile`] checks meaning (references, CIDRs,
//! durations, ranges) and builds the routing table, collecting every problem in one pass.
//!
//! The lowest layer: uses nothing else of the crate. `import` turns Istio resources into a
//! config.
//!
//! Errors: one [`ConfigError`], for loading and for `meridian import istio` (a read failure
//! keeps its I/O source; problems carry file and line).

mod durations;
mod exact_vec;
mod fields;
pub mod geo;
mod geodns;
pub mod import;
mod model;
mod peers;
pub mod policies;
mod problems;
mod protocol;
mod retries;
mod tls;
pub mod words;
mod yaml;

use std::path::Path;
use std::sync::Arc;

pub use durations::{DurationRange, MAX_DURATION};
pub use geo::{GeoDatabaseFiles, GeoFieldsConfig};
pub use geodns::*;
pub use model::*;
pub use peers::{PeerCheckConfig, PeerConfig};
pub use policies::affinity::{ConsistentHashConfig, HashCookieConfig, LoadBalancerConfig};
pub use policies::*;
pub use problems::{ConfigError, Problem, Problems};
pub use protocol::{GrpcHealthCheckConfig, UpstreamProtocol};
pub use retries::*;
pub use tls::*;
pub use yaml::{LineIndex, Parsed, YamlPath, parse_document, parse_values, to_yaml};

/// A parsed config with the line index of its source, ready to compile.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Shared with the table compiled from it (which shows it at `/config`).
    pub config: Arc<Config>,
    pub lines: LineIndex,
    /// Problems already found while parsing (unknown fields); compiling adds the rest.
    pub problems: Problems,
    /// Where it came from, for messages.
    pub source: std::path::PathBuf,
    /// `local_region` as [`LOCAL_REGION_ENV`] set it, over the file's: a problem with it is
    /// then reported as the variable's, not as a line of the file.
    pub local_region_from_env: Option<String>,
}

impl LoadedConfig {
    /// The config to change before compiling (a copy only if a table already shares it).
    pub fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }
}

/// Read and parse a config file (structure only; see [`crate::table::compile`]).
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

/// Environment variable that overrides `local_region`, so one ConfigMap serves every region
/// (each region's Deployment sets it).
pub const LOCAL_REGION_ENV: &str = "MERIDIAN_LOCAL_REGION";

/// Parse config text; `source` names it in messages.
pub fn load_str(text: &str, source: &Path) -> Result<LoadedConfig, ConfigError> {
    let mut parsed = parse_document::<Config>(text).map_err(|p| ConfigError::invalid(source, p))?;
    let mut local_region_from_env = None;
    if let Ok(region) = std::env::var(LOCAL_REGION_ENV)
        && !region.trim().is_empty()
    {
        parsed.value.local_region = Some(region.trim().to_owned());
        local_region_from_env = Some(region.trim().to_owned());
    }
    Ok(LoadedConfig {
        config: Arc::new(parsed.value),
        lines: parsed.lines,
        problems: parsed.unknown_fields,
        source: source.to_path_buf(),
        local_region_from_env,
    })
}

/// The files a config names whose replacement is a reload: the GeoIP database, listener
/// certificates and keys, session ticket key files, client CAs, clusters' TLS files (CAs,
/// client certificates and keys), the admin token.
pub fn named_files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = config
        .geo
        .database
        .iter()
        .flat_map(|d| d.paths().iter().cloned())
        .collect();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for c in &tls.certificates {
            files.push(c.cert.clone());
            files.push(c.key.clone());
        }
        files.extend(tls.session_tickets.key_file.iter().cloned());
    }
    files.extend(crate::config::mutual_tls_files(config));
    files.extend(config.admin.token_file.iter().cloned());
    files
}
