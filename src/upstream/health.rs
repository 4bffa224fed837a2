//! Active health checks: an HTTP GET (or a gRPC `Health/Check`, see `health_grpc`) per
//! endpoint every `interval`, each endpoint on its own task so a hanging check delays nobody
//! else.
//!
//! The verdict changes only after `unhealthy_threshold` consecutive failures or
//! `healthy_threshold` consecutive passes (hysteresis); any pass also ends an outlier ejection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::ClusterStats;
use crate::upstream::endpoints::{Endpoint, EndpointSet};
use crate::upstream::error::{UpstreamError, server_name};

/// The checks of one cluster, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Inclusive status ranges that pass.
    pub expected_statuses: Vec<(u16, u16)>,
    pub jitter: Duration,
    pub host: Option<String>,
    /// A gRPC check of this service, instead of an HTTP GET: its result counts as status 200
    /// when SERVING, 503 otherwise (so `expected_statuses` is not consulted).
    pub grpc_service: Option<String>,
}

impl HealthPolicy {
    pub fn passes(&self, status: u16) -> bool {
        if self.grpc_service.is_some() {
            return status == 200;
        }
        self.expected_statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

/// Consecutive results of one endpoint's checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streak {
    passes: u32,
    failures: u32,
}

impl Streak {
    /// Record one check; returns the new verdict when it changes.
    pub fn record(&mut self, passed: bool, healthy: bool, policy: &HealthPolicy) -> Option<bool> {
        if passed {
            self.passes += 1;
            self.failures = 0;
            (!healthy && self.passes >= policy.healthy_threshold).then_some(true)
        } else {
            self.failures += 1;
            self.passes = 0;
            (healthy && self.failures >= policy.unhealthy_threshold).then_some(false)
        }
    }
}

/// One check: connect, GET, compare the status. Everything within `policy.timeout`.
pub async fn check_once(
    endpoint: &Endpoint,
    policy: &HealthPolicy,
    tls: Option<&crate::tls::UpstreamTls>,
) -> Result<u16, UpstreamError> {
    let addr = endpoint.address;
    if let Some(service) = &policy.grpc_service {
        let check = super::health_grpc::check(endpoint, service, tls);
        return match tokio::time::timeout(policy.timeout, check).await {
            Ok(Ok(true)) => Ok(200),
            Ok(Ok(false)) => Ok(503),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(UpstreamError::CheckTimeout {
                addr,
                after: policy.timeout,
            }),
        };
    }
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let mut sender = match tls {
            None => http1(stream, addr).await?,
            Some(tls) => {
                let name = server_name(tls, addr)?;
                let stream = tls
                    .connector()
                    .connect(name, stream)
                    .await
                    .map_err(|source| UpstreamError::Tls { addr, source })?;
                http1(stream, addr).await?
            }
        };
        let host = policy
            .host
            .clone()
            .unwrap_or_else(|| endpoint.authority.to_string());
        let request = Request::get(policy.path.as_str())
            .header(header::HOST, host)
            .header(header::USER_AGENT, "meridian-health-check")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|source| UpstreamError::CheckRequest { addr, source })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| UpstreamError::Check { addr, source })?;
        Ok(response.status().as_u16())
    };
    match tokio::time::timeout(policy.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::CheckTimeout {
            addr,
            after: policy.timeout,
        }),
    }
}

async fn http1<I>(
    io: I,
    addr: std::net::SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|source| UpstreamError::Check { addr, source })?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Check one endpoint of `set` until `shutdown` or until it leaves the set (DNS discovery);
/// the first check runs at once.
pub async fn run(
    endpoint: Arc<Endpoint>,
    set: Arc<EndpointSet>,
    policy: Arc<HealthPolicy>,
    cluster: String,
    stats: Arc<ClusterStats>,
    tls: Option<Arc<crate::tls::UpstreamTls>>,
    shutdown: CancellationToken,
) {
    let mut streak = Streak::default();
    while set.contains(&endpoint) {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = check_once(&endpoint, &policy, tls.as_deref()) => result,
        };
        let passed = matches!(result, Ok(status) if policy.passes(status));
        let state = &endpoint.state;
        if passed && state.ejected.swap(false, Ordering::Relaxed) {
            state.set_ejected_until(None);
            tracing::info!(%cluster, endpoint = %endpoint.address, "health check passed: ejection ended");
        }
        let healthy = state.healthy.load(Ordering::Relaxed);
        if let Some(now_healthy) = streak.record(passed, healthy, &policy) {
            state.healthy.store(now_healthy, Ordering::Relaxed);
            ClusterStats::bump(&stats.health_transitions);
            if now_healthy {
                tracing::info!(%cluster, endpoint = %endpoint.address, "endpoint healthy");
            } else {
                tracing::warn!(%cluster, endpoint = %endpoint.address, last = %LastCheck(&result), "endpoint unhealthy");
            }
        }
        let jitter = if policy.jitter.is_zero() {
            Duration::ZERO
        } else {
            crate::deadline::fraction(policy.jitter, fastrand::f64())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(policy.interval.saturating_add(jitter)) => {}
        }
    }
}

/// A check's result as logged: the status, or what failed.
struct LastCheck<'a>(&'a Result<u16, UpstreamError>);

impl std::fmt::Display for LastCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Ok(status) => write!(f, "status {status}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            path: "/healthz".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(100),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: vec![(200, 399)],
            jitter: Duration::ZERO,
            host: None,
            grpc_service: None,
        }
    }

    #[test]
    fn thresholds_give_hysteresis() {
        let p = policy();
        let mut s = Streak::default();
        assert_eq!(s.record(false, true, &p), None);
        assert_eq!(s.record(false, true, &p), None);
        assert_eq!(s.record(true, true, &p), None, "a pass resets the failures");
        assert_eq!(s.record(false, true, &p), None);
        assert_eq!(s.record(false, true, &p), None);
        assert_eq!(
            s.record(false, true, &p),
            Some(false),
            "exactly the third failure"
        );
        assert_eq!(s.record(true, false, &p), None);
        assert_eq!(
            s.record(true, false, &p),
            Some(true),
            "exactly the second pass"
        );
    }

    #[test]
    fn expected_statuses() {
        let mut p = policy();
        assert!(p.passes(200) && p.passes(399) && !p.passes(404) && !p.passes(503));
        p.expected_statuses = vec![(204, 204)];
        assert!(p.passes(204) && !p.passes(200));
    }
}
