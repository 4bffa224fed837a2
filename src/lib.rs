//! Meridian: a geo-aware edge reverse proxy.
//!
//! The binary is a thin CLI over this library: [`table::load`] validates and compiles a config,
//! [`server::start`] binds and serves it.

pub mod alloc;
pub mod config;
pub mod control;
pub mod deadline;
pub mod dns;
pub mod edge;
pub mod fuzzing;
pub mod geo;
pub mod http1;
pub mod proxy;
pub mod route;
pub mod steer;
pub mod table;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod worker;

// Shorter paths kept for the command line, integration tests, benches and fuzz targets.
pub use config::import;
pub use control::{admin, demo, reload};
pub use http1::{headers, raw_fields as fields};
pub use route::decision;
pub use table::retry;

/// The lifecycle and the listener limits under one path.
pub mod server {
    pub use crate::control::lifecycle::*;
    pub use crate::edge::listen::{
        H2_KEEP_ALIVE_INTERVAL, H2_KEEP_ALIVE_TIMEOUT, MAX_CONCURRENT_STREAMS, MAX_HEADER_BYTES,
        MAX_HEADERS,
    };
}
