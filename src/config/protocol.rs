//! The protocol a cluster speaks to its endpoints (`clusters.<name>.protocol`), and the gRPC
//! kind of health check (`health_check.grpc`). Read by `table::compile` (checks that TLS-only
//! protocols have TLS), by `upstream::pool`, which keeps HTTP/2 connections for every protocol
//! but `http1`, and by `upstream::health`.

use serde::{Deserialize, Serialize};

/// How Meridian talks to a cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with Meridian's own client (keep-alive connections, one request each).
    #[default]
    Http1,
    /// HTTP/2 over TLS, negotiated with ALPN `h2`; the handshake fails without it.
    Http2,
    /// HTTP/2 over plain TCP with prior knowledge (no upgrade dance).
    H2c,
    /// TLS with ALPN offering `h2` and `http/1.1`: HTTP/2 when the endpoint picks it,
    /// HTTP/1.1 otherwise.
    Auto,
}

impl UpstreamProtocol {
    /// Whether the protocol needs the cluster's `tls` block (ALPN happens in the handshake).
    pub fn needs_tls(self) -> bool {
        matches!(self, Self::Http2 | Self::Auto)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::H2c => "h2c",
            Self::Auto => "auto",
        }
    }
}

/// A gRPC health check (`grpc.health.v1.Health/Check`): passes when the endpoint says
/// SERVING for `service` ("" asks about the server as a whole).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GrpcHealthCheckConfig {
    #[serde(default)]
    pub service: String,
}
