//! The upstream layer's one error type: why a connection could not be had, a health check
//! failed, or DNS resolution could not be set up. Used by the pool, the health checks and
//! discovery; the proxy keeps it as the cause of its own error.

use std::net::SocketAddr;
use std::time::Duration;

use crate::upstream::pool::Overflow;

/// What went wrong between Meridian and an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("circuit breaker {} is full", .0.as_str())]
    Overflow(Overflow),
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("tls.sni `{name}` for {addr}: {source}")]
    ServerName {
        addr: SocketAddr,
        name: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    H2Handshake {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    /// Protocol `http2`, and the endpoint did not choose `h2` by ALPN.
    #[error("{addr} did not agree to HTTP/2 (ALPN h2) in the TLS handshake")]
    NoH2 { addr: SocketAddr },
    /// A health check's HTTP/1.1 handshake or request failed.
    #[error("health check of {addr} failed: {source}")]
    Check {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// A gRPC health check's HTTP/2 exchange failed.
    #[error("gRPC health check of {addr} failed: {source}")]
    GrpcCheck {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    /// A gRPC health check was answered with a gRPC error status or no response message.
    #[error("gRPC health check of {addr} was answered with grpc-status {status}")]
    GrpcCheckStatus { addr: SocketAddr, status: String },
    #[error("health check request for {addr} cannot be built: {source}")]
    CheckRequest {
        addr: SocketAddr,
        #[source]
        source: http::Error,
    },
    #[error("health check of {addr} got no answer within {after:?}")]
    CheckTimeout { addr: SocketAddr, after: Duration },
    /// A peer probe could not get an answer (connect, TLS or HTTP failed).
    #[error("probe of peer {url} failed ({what}): {source}")]
    PeerProbe {
        url: std::sync::Arc<str>,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("probe of peer {url} got no answer within {after:?}")]
    PeerTimeout {
        url: std::sync::Arc<str>,
        after: Duration,
    },
    #[error("cannot set up DNS resolution: {0} (check /etc/resolv.conf or set dns.nameservers)")]
    Resolver(#[source] Box<hickory_resolver::net::NetError>),
}

/// The server name to send to the endpoint at `addr`; a bad `tls.sni` names itself.
pub fn server_name(
    tls: &crate::tls::UpstreamTls,
    addr: SocketAddr,
) -> Result<rustls_pki_types::ServerName<'static>, UpstreamError> {
    tls.server_name(addr)
        .map_err(|source| UpstreamError::ServerName {
            addr,
            name: tls.spec.sni.clone().unwrap_or_default(),
            source,
        })
}
