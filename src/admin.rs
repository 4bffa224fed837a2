//! The admin listener: liveness, readiness and a plain-text status summary.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::server::Lifecycle;
use crate::table::TableHandle;
use crate::upstream::ClusterStats;

pub async fn handle(
    table: TableHandle,
    lifecycle: Arc<Lifecycle>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let draining = lifecycle.draining.load(Ordering::SeqCst);
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") if draining => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n".into()),
        (&Method::GET, "/") => text(StatusCode::OK, status_text(&table)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /healthz or /readyz\n".into(),
        ),
    })
}

fn status_text(table: &TableHandle) -> String {
    let table = table.load();
    let mut out = format!(
        "meridian {}\nconfig generation {}\nlocal region {}\n",
        env!("CARGO_PKG_VERSION"),
        table.generation,
        table.region_name(table.local_region)
    );
    for cluster in &table.clusters {
        let s = &cluster.stats;
        let get = ClusterStats::get;
        out.push_str(&format!(
            "cluster {}: {} attempts, {} failed, {} retries, {} retries refused by budget, \
             {} overflows (max_requests {}, max_pending_requests {}), {} ejections ({} refused)\n",
            cluster.name,
            get(&s.attempts),
            get(&s.attempt_failures),
            get(&s.retries),
            get(&s.retry_budget_exhausted),
            get(&s.overflow_max_requests) + get(&s.overflow_max_pending_requests),
            get(&s.overflow_max_requests),
            get(&s.overflow_max_pending_requests),
            get(&s.ejections),
            get(&s.ejections_refused),
        ));
        for (id, set) in cluster.regions.iter().enumerate() {
            if set.endpoints.is_empty() {
                continue;
            }
            let h = set.health();
            out.push_str(&format!(
                "  {}: {} endpoints, healthy share {:.0}%\n",
                table.region_name(id as u8),
                h.endpoints,
                h.share() * 100.0
            ));
            for e in &set.endpoints {
                let state = if e.state.ejected.load(Ordering::Relaxed) {
                    "ejected"
                } else if !e.state.healthy.load(Ordering::Relaxed) {
                    "down"
                } else if e.weight == 0 {
                    "drained"
                } else {
                    "healthy"
                };
                out.push_str(&format!(
                    "    {} weight {} {state}, {} in flight\n",
                    e.address,
                    e.weight,
                    e.state.in_flight.load(Ordering::Relaxed)
                ));
            }
        }
    }
    out
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
