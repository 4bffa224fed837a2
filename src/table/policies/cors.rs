//! CORS, as Envoy's CORS filter does it for Istio's `corsPolicy`: which origins are allowed,
//! the preflight answer, and the headers an allowed request's answer carries.
//!
//! Pure: the proxy (`proxy/policies/cors.rs`) reads the request's `Origin` and hands it here.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use regex::Regex;

/// How an allowed origin is named.
#[derive(Debug, Clone)]
pub enum OriginMatch {
    /// `exact: "*"`: any origin.
    Any,
    Exact(String),
    Prefix(String),
    /// Anchored: the whole origin must match.
    Regex(Regex),
}

impl OriginMatch {
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(want) => origin == want,
            Self::Prefix(want) => origin.starts_with(want.as_str()),
            Self::Regex(re) => re.is_match(origin),
        }
    }
}

/// A route's compiled CORS policy; the header values are built once, at compile time.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    pub origins: Vec<OriginMatch>,
    pub allow_methods: Option<HeaderValue>,
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}

/// What CORS makes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsVerdict {
    /// No `Origin`, or one the policy does not allow: no CORS headers, the request goes on
    /// (a disallowed preflight is proxied like any OPTIONS).
    Pass,
    /// A preflight from an allowed origin: answered at the edge.
    Preflight(HeaderValue),
    /// A request from an allowed origin: it goes on, and its answer gets the CORS headers.
    Allowed(HeaderValue),
}

impl Cors {
    /// One phrase for `meridian check` and `/explain`.
    pub fn describe(&self) -> String {
        format!(
            "CORS for {} origin pattern{}{}",
            self.origins.len(),
            if self.origins.len() == 1 { "" } else { "s" },
            if self.allow_credentials {
                ", with credentials"
            } else {
                ""
            }
        )
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| m.matches(origin))
    }

    /// The verdict for a request with this method, first `Origin` value and whether it
    /// carries a non-empty `Access-Control-Request-Method`.
    pub fn verdict(
        &self,
        method: &Method,
        origin: Option<&[u8]>,
        request_method: bool,
    ) -> CorsVerdict {
        let Some(origin) = origin.filter(|o| !o.is_empty()) else {
            return CorsVerdict::Pass;
        };
        let Ok(text) = std::str::from_utf8(origin) else {
            return CorsVerdict::Pass;
        };
        if !self.allows(text) {
            return CorsVerdict::Pass;
        }
        let Ok(value) = HeaderValue::from_bytes(origin) else {
            return CorsVerdict::Pass;
        };
        if method == Method::OPTIONS && request_method {
            CorsVerdict::Preflight(value)
        } else {
            CorsVerdict::Allowed(value)
        }
    }

    /// The preflight answer's status and headers (Envoy answers 200 with an empty body).
    pub fn preflight(&self, origin: HeaderValue) -> (StatusCode, HeaderMap) {
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ] {
            if let Some(value) = value {
                out.insert(name, value.clone());
            }
        }
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        out.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        (StatusCode::OK, out)
    }

    /// Headers for an allowed request's answer. `vary` is the answer's own `Vary` (if any):
    /// `Origin` is added to it, not put in its place.
    pub fn answer_headers(&self, origin: HeaderValue, vary: Option<&[u8]>) -> HeaderMap {
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        out.insert(header::VARY, vary_with_origin(vary));
        out
    }
}

/// `Vary` naming `Origin` as well as whatever `existing` named.
pub fn vary_with_origin(existing: Option<&[u8]>) -> HeaderValue {
    let existing = existing.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty());
    let Some(existing) = existing else {
        return HeaderValue::from_static("Origin");
    };
    let named = existing.split(|b| *b == b',').any(|token| {
        let token = token.trim_ascii();
        token.eq_ignore_ascii_case(b"origin") || token == b"*"
    });
    if named {
        return HeaderValue::from_bytes(existing)
            .unwrap_or_else(|_| HeaderValue::from_static("Origin"));
    }
    let mut joined = existing.to_vec();
    joined.extend_from_slice(b", Origin");
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| HeaderValue::from_static("Origin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Cors {
        Cors {
            origins: vec![
                OriginMatch::Exact("https://app.example.com".into()),
                OriginMatch::Prefix("https://dev-".into()),
                OriginMatch::Regex(Regex::new(r"^(?:https://[a-z]+\.partner\.test)$").unwrap()),
            ],
            allow_methods: Some(HeaderValue::from_static("GET,POST")),
            allow_headers: Some(HeaderValue::from_static("x-token")),
            expose_headers: Some(HeaderValue::from_static("x-trace")),
            max_age: Some(HeaderValue::from_static("86400")),
            allow_credentials: true,
        }
    }

    #[test]
    fn origin_matching() {
        let cors = policy();
        let cases = [
            ("https://app.example.com", true),
            ("https://app.example.com.evil.test", false),
            ("http://app.example.com", false),
            ("https://APP.example.com", false),
            ("https://dev-42.example.com", true),
            ("https://shop.partner.test", true),
            ("https://shop.partner.test.evil", false),
            ("xhttps://shop.partner.test", false),
            ("", false),
        ];
        for (origin, want) in cases {
            assert_eq!(cors.allows(origin), want, "{origin}");
        }
        let any = Cors {
            origins: vec![OriginMatch::Any],
            ..Cors::default()
        };
        assert!(any.allows("https://whatever.test") && any.allows("null"));
        assert!(!Cors::default().allows("https://app.example.com"));
    }

    #[test]
    fn verdicts() {
        let cors = policy();
        let ok = Some(&b"https://app.example.com"[..]);
        let bad = Some(&b"https://evil.test"[..]);
        let origin = HeaderValue::from_static("https://app.example.com");
        let cases = [
            (
                Method::OPTIONS,
                ok,
                true,
                CorsVerdict::Preflight(origin.clone()),
            ),
            (
                Method::OPTIONS,
                ok,
                false,
                CorsVerdict::Allowed(origin.clone()),
            ),
            (Method::GET, ok, true, CorsVerdict::Allowed(origin.clone())),
            (Method::OPTIONS, bad, true, CorsVerdict::Pass),
            (Method::GET, bad, false, CorsVerdict::Pass),
            (Method::OPTIONS, None, true, CorsVerdict::Pass),
            (Method::GET, Some(&b""[..]), false, CorsVerdict::Pass),
            (
                Method::GET,
                Some(&b"https://app.example.com\xff"[..]),
                false,
                CorsVerdict::Pass,
            ),
        ];
        for (method, origin, request_method, want) in cases {
            assert_eq!(
                cors.verdict(&method, origin, request_method),
                want,
                "{method} {origin:?} {request_method}"
            );
        }
    }

    #[test]
    fn preflight_answer() {
        let (status, h) = policy().preflight(HeaderValue::from_static("https://dev-1.test"));
        assert_eq!(status, StatusCode::OK);
        let get = |n: header::HeaderName| h.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
            Some("https://dev-1.test")
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_METHODS).as_deref(),
            Some("GET,POST")
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_HEADERS).as_deref(),
            Some("x-token")
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_MAX_AGE).as_deref(),
            Some("86400")
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).as_deref(),
            Some("true")
        );
        assert_eq!(get(header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
        let bare = Cors {
            origins: vec![OriginMatch::Any],
            ..Cors::default()
        };
        let (_, h) = bare.preflight(HeaderValue::from_static("https://a.test"));
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_METHODS).is_none());
    }

    #[test]
    fn answer_headers_keep_the_upstream_vary() {
        let cors = policy();
        let origin = HeaderValue::from_static("https://app.example.com");
        let cases: [(Option<&[u8]>, &str); 5] = [
            (None, "Origin"),
            (Some(b""), "Origin"),
            (Some(b"Accept-Encoding"), "Accept-Encoding, Origin"),
            (Some(b"accept-encoding, origin"), "accept-encoding, origin"),
            (Some(b"*"), "*"),
        ];
        for (vary, want) in cases {
            let h = cors.answer_headers(origin.clone(), vary);
            assert_eq!(h.get(header::VARY).unwrap(), want, "{vary:?}");
            assert_eq!(
                h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(),
                "x-trace"
            );
            assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), &origin);
        }
    }
}
