//! What Meridian's own HTTP/1.1 loop and the handler it calls exchange: the request body as
//! the loop read it, and the answer with the upstream's header fields as they arrived (written
//! out without building a header map). The handler's body type is the loop's type parameter,
//! so this layer knows nothing of the proxy.

use bytes::Bytes;
use http::Response;
use http::header::HeaderValue;
use hyper::body::Incoming;

use crate::http1::headers::{X_MERIDIAN_REGION, X_REQUEST_ID};
use crate::http1::raw_fields::Fields;

/// The handler's answer: the response and, for a proxied one, the upstream's header fields
/// as received (see `raw_fields`). They come before the response's own headers, which replace
/// upstream fields of the same name.
pub struct Answer<B> {
    pub response: Response<B>,
    pub upstream: Fields,
    /// `x-meridian-region` and `x-request-id` of a proxied answer: kept out of the map so
    /// the common answer needs none (they replace upstream fields of their names).
    pub region: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
}

/// Answers travel boxed: a few hundred bytes that would otherwise be copied at every layer
/// they pass on the way from the upstream exchange to the client's socket.
impl<B> From<Response<B>> for Box<Answer<B>> {
    fn from(response: Response<B>) -> Self {
        Box::new(Answer {
            response,
            upstream: Fields::default(),
            region: None,
            request_id: None,
        })
    }
}

impl<B> Answer<B> {
    /// One response with every header in its map, for hyper to write.
    // Takes the box it travels in, so callers can map `Box<Answer>` straight to a response.
    #[allow(clippy::boxed_local)]
    pub fn into_response(self: Box<Self>) -> Response<B> {
        let Self {
            mut response,
            upstream,
            region,
            request_id,
        } = *self;
        let headers = response.headers_mut();
        // With no header of Meridian's own in the map yet (the common answer), the upstream's
        // fields go in first and the two below replace theirs by `insert`: no second map.
        let mut upstream = Some(upstream).filter(|u| !u.is_empty());
        if headers.is_empty()
            && let Some(fields) = upstream.take()
        {
            fields.merge_into(headers);
        }
        if let Some(region) = region {
            headers.insert(X_MERIDIAN_REGION, region);
        }
        if let Some(mut id) = request_id {
            // Unique to this request: HTTP/2 sends it as a never-indexed literal rather than
            // adding it to the HPACK table, where it would only evict fields that repeat.
            id.set_sensitive(true);
            headers.insert(X_REQUEST_ID, id);
        }
        if let Some(fields) = upstream {
            fields.merge_into(headers);
        }
        response
    }

    /// Whether a field of the upstream's answer gives way to a header Meridian sets.
    pub fn replaces(&self, name: &[u8]) -> bool {
        (self.region.is_some() && name.eq_ignore_ascii_case(X_MERIDIAN_REGION.as_str().as_bytes()))
            || (self.request_id.is_some()
                && name.eq_ignore_ascii_case(X_REQUEST_ID.as_str().as_bytes()))
            || self
                .response
                .headers()
                .keys()
                .any(|own| own.as_str().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// A client request's body: hyper's, or none at all (requests read by `http1::server`, which
/// takes only requests without one).
pub enum ClientBody {
    Incoming(Incoming),
    /// Read whole by Meridian's own HTTP/1.1 loop (a small Content-Length body).
    Full(Bytes),
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http1::raw_fields::tests::fields as upstream;

    const HEAD: &[u8] =
        b"Server: up\r\nX-Request-Id: theirs\r\nSet-Cookie: a\r\nX-Meridian-Region: x\r\nSet-Cookie: b\r\n";

    /// Meridian's region and request id replace the upstream's fields of those names, with the
    /// map empty before (the common answer) or holding headers of Meridian's own.
    #[test]
    fn own_headers_replace_the_upstream_fields_of_their_names() {
        for own in [None, Some("ours-too")] {
            let mut response = Response::new(());
            if let Some(value) = own {
                response
                    .headers_mut()
                    .insert("server", HeaderValue::from_static(value));
            }
            let answer = Box::new(Answer {
                response,
                upstream: upstream(HEAD),
                region: Some(HeaderValue::from_static("eu-west-1")),
                request_id: Some(HeaderValue::from_static("ours")),
            });
            let map = answer.into_response().into_parts().0.headers;
            let all = |name: &str| map.get_all(name).iter().collect::<Vec<_>>();
            assert_eq!(all("x-request-id"), ["ours"], "{own:?}");
            assert!(map["x-request-id"].is_sensitive(), "{own:?}");
            assert_eq!(all("x-meridian-region"), ["eu-west-1"], "{own:?}");
            assert_eq!(all("set-cookie"), ["a", "b"], "{own:?}");
            assert_eq!(all("server"), [own.unwrap_or("up")], "{own:?}");
            assert_eq!(map.len(), 5, "{own:?}");
        }
    }
}
