//! Meridian: a geo-aware edge reverse proxy.
//!
//! The binary is a thin CLI over this library: [`table::load`] validates and compiles a config,
//! [`server::start`] binds and serves it.

pub mod access_log;
pub mod admin;
pub mod alloc;
pub mod body;
pub mod config;
pub mod date;
pub mod deadline;
pub mod decision;
pub mod demo;
pub mod discovery;
pub mod endpoints;
pub mod fields;
pub mod fuzzing;
pub mod geo;
pub mod headers;
pub mod import;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod retry;
pub mod routes;
pub(crate) mod scan;
pub mod send_timeout;
pub mod server;
pub(crate) mod server_h1;
pub(crate) mod server_h2;
pub mod sniff;
pub mod spare;
pub mod steer;
pub mod strict;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod websocket;
