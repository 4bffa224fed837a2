//! Session affinity on the answer: the `Set-Cookie` of a generated affinity cookie, added to
//! whatever answer the request gets (the upstream's or Meridian's own error), so the client's
//! next request comes back to the same endpoint. Called by the handler (`proxy/mod.rs`).

use http::HeaderValue;
use http::header::SET_COOKIE;

use crate::proxy::Answer;

/// Append `cookie` to the answer's `Set-Cookie`s, keeping every one the upstream sent.
pub fn add_set_cookie(answer: &mut Answer, cookie: HeaderValue) {
    // A header in the response map replaces upstream fields of its name when the answer is
    // written: move the upstream's Set-Cookie fields into the map first, so none is lost.
    let upstream: Vec<HeaderValue> = answer
        .upstream
        .values(&SET_COOKIE)
        .filter_map(|v| HeaderValue::from_bytes(v).ok())
        .collect();
    let headers = answer.response.headers_mut();
    if !headers.contains_key(SET_COOKIE) {
        for value in upstream {
            headers.append(SET_COOKIE, value);
        }
    }
    headers.append(SET_COOKIE, cookie);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Response;

    #[test]
    fn the_upstreams_cookies_are_kept_beside_the_generated_one() {
        const HEAD: &[u8] = b"Set-Cookie: a=1\r\nX-Other: x\r\nset-cookie: b=2\r\n";
        let head = Bytes::from_static(HEAD);
        let mut fields = crate::http1::raw_fields::Fields::with_capacity(head.clone(), 3);
        for line in HEAD.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = &line[..line.len() - 1];
            let colon = line.iter().position(|b| *b == b':').unwrap();
            fields.push(&line[..colon], &line[colon + 2..]);
        }
        let mut answer: Box<Answer> = Response::new(crate::proxy::made_body(Bytes::new())).into();
        answer.upstream = fields;
        add_set_cookie(&mut answer, HeaderValue::from_static("sid=x; HttpOnly"));
        let response = answer.into_response();
        let cookies: Vec<_> = response.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "sid=x; HttpOnly"]);
        assert_eq!(response.headers()["x-other"], "x");

        // Meridian's own answer (no upstream fields): just the generated one.
        let mut own: Box<Answer> = Response::new(crate::proxy::made_body(Bytes::new())).into();
        add_set_cookie(&mut own, HeaderValue::from_static("sid=y"));
        assert_eq!(own.into_response().headers()[SET_COOKIE], "sid=y");
    }
}
