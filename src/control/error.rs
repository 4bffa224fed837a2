//! [`ControlError`]: why starting, reloading or running the demo failed. The control layer's
//! one error type; each variant keeps its I/O, config or GeoIP cause as `#[source]`.

use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::geo::GeoError;

/// Why the control path could not do what was asked. On reload the table in service keeps
/// serving whatever the variant.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {addr} (listener `{name}`): {source} (is another process using it?)")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("there is no config file to reload (this instance was started from a built-in config)")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "reading or compiling the config stopped before it finished: {0} (the table in service is kept)"
    )]
    Compile(#[source] tokio::task::JoinError),
    #[error("cannot start a demo backend: {0}")]
    DemoBackend(#[source] std::io::Error),
    #[error("the bundled demo GeoIP data is unreadable: {0}")]
    DemoGeo(#[from] GeoError),
}
