//! The client certificate header on the upstream request, for listeners with
//! `tls.forward_client_cert`: a client's own copy is removed (it could claim any identity),
//! and the verified certificate's value (made once per connection by `edge`) is set. Called by
//! `forward` only when the connection carries the setting, so other listeners pay nothing.

use http::HeaderMap;

use crate::http1::raw_fields::Fields;
use crate::tls::client_auth::ForwardedClientCert;

/// Remove the client's copies of the header and set the connection's value, if any.
pub(super) fn forward(
    cert: &ForwardedClientCert,
    headers: &mut HeaderMap,
    raw: &mut Option<Fields>,
) {
    let name = cert.header.as_str().as_bytes();
    if let Some(fields) = raw.as_mut() {
        fields.retain(|n| !n.eq_ignore_ascii_case(name));
    }
    headers.remove(&cert.header);
    if let Some(value) = &cert.value {
        // Fields as received cannot take a new one: the request goes on as a header map.
        if let Some(fields) = raw.take() {
            fields.merge_into(headers);
        }
        headers.insert(cert.header.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderName, HeaderValue};

    fn raw(head: &'static str) -> Fields {
        let mut fields = Fields::with_capacity(Bytes::from_static(head.as_bytes()), 4);
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(": ").unwrap();
            fields.push(name.as_bytes(), value.as_bytes());
        }
        fields
    }

    fn setting(value: Option<&'static str>) -> ForwardedClientCert {
        ForwardedClientCert {
            header: HeaderName::from_static("x-forwarded-client-cert"),
            value: value.map(HeaderValue::from_static),
        }
    }

    #[test]
    fn spoofed_copies_go_and_the_verified_value_comes() {
        // (connection's value, what the upstream gets)
        let cases = [
            (
                Some("Hash=ab;Subject=\"CN=real\""),
                Some("Hash=ab;Subject=\"CN=real\""),
            ),
            (None, None),
        ];
        for (value, wanted) in cases {
            // As a header map (hyper's requests).
            let mut map = HeaderMap::new();
            map.append(
                "x-forwarded-client-cert",
                "Subject=\"CN=admin\"".parse().unwrap(),
            );
            map.append(
                "X-Forwarded-Client-Cert",
                "Subject=\"CN=root\"".parse().unwrap(),
            );
            map.insert("accept", "*/*".parse().unwrap());
            let mut none = None;
            forward(&setting(value), &mut map, &mut none);
            let got: Vec<_> = map.get_all("x-forwarded-client-cert").iter().collect();
            assert_eq!(got, wanted.into_iter().collect::<Vec<_>>(), "{value:?}");
            assert_eq!(map["accept"], "*/*");

            // As fields read by the own HTTP/1.1 loop.
            let mut map = HeaderMap::new();
            let mut fields = Some(raw(
                "X-Forwarded-Client-Cert: Subject=\"CN=admin\"\r\naccept: */*\r\n",
            ));
            forward(&setting(value), &mut map, &mut fields);
            let mut sent = map.clone();
            if let Some(f) = fields {
                assert!(f.get("x-forwarded-client-cert").is_none());
                f.merge_into(&mut sent);
            }
            let got: Vec<_> = sent.get_all("x-forwarded-client-cert").iter().collect();
            assert_eq!(got, wanted.into_iter().collect::<Vec<_>>(), "{value:?}");
            assert_eq!(sent["accept"], "*/*");
        }
    }
}
