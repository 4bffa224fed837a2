//! CORS on the request path: the preflight answered at the edge, and the headers added to an
//! allowed request's answer (see `table::policies::cors`).

use crate::proxy::*;
use crate::table::policies::cors::{Cors, CorsVerdict};

/// The verdict for this request (reads `Origin` and `Access-Control-Request-Method`).
pub(in crate::proxy) fn verdict(
    cors: &Cors,
    method: &http::Method,
    headers: HeadersRef<'_>,
) -> CorsVerdict {
    let origin = headers.values_named(&header::ORIGIN).next();
    let request_method = headers
        .values_named(&header::ACCESS_CONTROL_REQUEST_METHOD)
        .next()
        .is_some_and(|v| !v.trim_ascii().is_empty());
    cors.verdict(method, origin, request_method)
}

/// The preflight answer: never reaches an upstream.
pub(in crate::proxy) fn preflight(cors: &Cors, origin: HeaderValue) -> Box<Answer> {
    let (status, headers) = cors.preflight(origin);
    let mut response = Response::new(crate::proxy::made_body(Bytes::new()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.into()
}

/// Add the CORS headers to an allowed request's answer, keeping the upstream's `Vary`.
pub(in crate::proxy) fn decorate(cors: &Cors, origin: HeaderValue, answer: &mut Answer) {
    let vary = answer
        .response
        .headers()
        .get_all(header::VARY)
        .iter()
        .map(|v| v.as_bytes())
        .chain(answer.upstream.values(&header::VARY))
        .collect::<Vec<&[u8]>>()
        .join(&b", "[..]);
    let headers = cors.answer_headers(origin, (!vary.is_empty()).then_some(&vary[..]));
    for (name, value) in headers {
        if let Some(name) = name {
            answer.response.headers_mut().insert(name, value);
        }
    }
}
