//! Fault injection on the request path: the delay (within the route's deadline), then the
//! abort answered at the edge (see `table::policies::fault`).

use crate::proxy::*;
use crate::table::policies::fault::Fault;
use crate::table::routes::Route;

/// Draw this request's faults, wait out a delay, and answer an abort. `None`: the request
/// goes on. A delay that outlasts the route's timeout ends in a 504 at the deadline.
pub(in crate::proxy) async fn inject(
    fault: &Fault,
    route: &Route,
    started: Instant,
    trace: &mut Trace,
) -> Result<Option<Box<Answer>>, ProxyError> {
    let drawn = fault.draw();
    trace.fault = drawn.kind();
    if let Some(lines) = &mut trace.explain {
        let applied: Vec<String> = [
            drawn.delay.map(|d| format!("delay {d:?}")),
            drawn.abort.map(|s| format!("abort {}", s.as_u16())),
        ]
        .into_iter()
        .flatten()
        .collect();
        lines.push(match applied.is_empty() {
            true => "fault: none".to_owned(),
            false => format!("fault: {}", applied.join(", ")),
        });
    }
    if let Some(delay) = drawn.delay {
        fault.delayed.inc();
        let deadline = crate::deadline::after(started, route.timeout);
        let until = crate::deadline::from_now(delay);
        if until >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(ProxyError::FaultDelayTimeout {
                after: route.timeout,
            });
        }
        tokio::time::sleep_until(until).await;
    }
    let Some(status) = drawn.abort else {
        return Ok(None);
    };
    fault.aborted.inc();
    let mut response = Response::new(crate::proxy::made_body(Bytes::from_static(
        b"fault filter abort\n",
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_MERIDIAN_ERROR, HeaderValue::from_static("fault-abort"));
    Ok(Some(response.into()))
}
