//! The https redirect a plain-HTTP listener may answer with instead of proxying.

use super::*;

/// A plain listener with `redirect_https`: 308 to the same URL over https.
pub fn redirect_to_https(uri: &Uri, headers: HeadersRef<'_>, port: u16) -> Response<ProxyBody> {
    // The Location is built from the client's Host: one that is not `host[:port]` could
    // point it anywhere.
    let authority = match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => headers.first(Known::Host),
    };
    if !authority.is_some_and(crate::http1::strict::valid_authority) {
        let mut response = Response::new(crate::proxy::made_body(Bytes::new()));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    }
    let host = uri
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            headers
                .first(Known::Host)
                .and_then(crate::http1::headers::as_text)
                .map(|h| normalize_host(h).into_owned())
        })
        .unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut response = Response::new(crate::proxy::made_body(Bytes::new()));
    match HeaderValue::from_str(&location) {
        Ok(value) if !host.is_empty() => {
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, value);
        }
        _ => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}
