//! Match conditions beyond host, path, headers and method (Istio's HTTPMatchRequest
//! `queryParams`, `scheme`, `port`, `withoutHeaders`): checked only for routes that have them.

use crate::table::routes::{HeaderMatch, HeaderValueMatch, MatchRequest};

/// A query parameter condition; values are compared after percent-decoding.
#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub value: HeaderValueMatch,
}

#[derive(Debug, Clone, Default)]
pub struct ExtraMatch {
    pub query: Vec<QueryMatch>,
    /// `Some(true)`: only https requests; `Some(false)`: only plain http.
    pub https: Option<bool>,
    pub port: Option<u16>,
    /// The route matches only when none of these does.
    pub without_headers: Vec<HeaderMatch>,
}

impl ExtraMatch {
    pub fn matches(&self, request: &MatchRequest<'_>) -> bool {
        self.https.is_none_or(|https| https == request.https)
            && self
                .port
                .is_none_or(|port| authority_port(request.authority, request.https) == Some(port))
            && self.query.iter().all(|q| q.matches(request.query))
            && !self
                .without_headers
                .iter()
                .any(|h| h.matches(request.headers))
    }
}

impl ExtraMatch {
    /// One phrase per condition, for `meridian check`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for q in &self.query {
            out.push(format!("query {} {}", q.name, describe_value(&q.value)));
        }
        if let Some(https) = self.https {
            out.push(format!("scheme {}", if https { "https" } else { "http" }));
        }
        if let Some(port) = self.port {
            out.push(format!("port {port}"));
        }
        for h in &self.without_headers {
            out.push(format!(
                "without header {} {}",
                h.name,
                describe_value(&h.value)
            ));
        }
        out
    }
}

fn describe_value(value: &HeaderValueMatch) -> String {
    match value {
        HeaderValueMatch::Present => "present".into(),
        HeaderValueMatch::Absent => "absent".into(),
        HeaderValueMatch::Exact(v) => format!("= {v}"),
        HeaderValueMatch::Prefix(v) => format!("starts with {v}"),
        HeaderValueMatch::Regex(re) => format!("~ {re}"),
    }
}

impl QueryMatch {
    pub fn matches(&self, query: Option<&str>) -> bool {
        let mut values = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .filter(|(name, _)| *name == self.name.as_str())
            .map(|(_, value)| value);
        match &self.value {
            HeaderValueMatch::Present => values.next().is_some(),
            HeaderValueMatch::Absent => values.next().is_none(),
            HeaderValueMatch::Exact(want) => values.any(|v| v == want.as_str()),
            HeaderValueMatch::Prefix(want) => values.any(|v| v.starts_with(want.as_str())),
            HeaderValueMatch::Regex(re) => values.any(|v| re.is_match(&v)),
        }
    }
}

/// The port a request addressed: the one its authority names, else the scheme's default.
/// `None` when the authority names one that is not a port number.
pub fn authority_port(authority: &str, https: bool) -> Option<u16> {
    let after_host = match authority.strip_prefix('[') {
        // IPv6 literal: a port can only follow the closing bracket.
        Some(rest) => rest.split_once(']').map(|(_, after)| after).unwrap_or(""),
        None => authority
            .rfind(':')
            .map(|at| &authority[at..])
            .unwrap_or(""),
    };
    match after_host.strip_prefix(':') {
        Some(port) if !port.is_empty() => port.parse().ok(),
        _ => Some(if https { 443 } else { 80 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, Method};
    use regex::Regex;

    use crate::http1::raw_fields::HeadersRef;

    #[test]
    fn ports_from_the_authority_or_the_scheme() {
        for (authority, https, want) in [
            ("api.example.com", false, Some(80)),
            ("api.example.com", true, Some(443)),
            ("api.example.com:8080", false, Some(8080)),
            ("127.0.0.1:9000", true, Some(9000)),
            ("[::1]", true, Some(443)),
            ("[::1]:8443", false, Some(8443)),
            ("api.example.com:", false, Some(80)),
            ("api.example.com:99999", false, None),
            ("api.example.com:x", false, None),
        ] {
            assert_eq!(authority_port(authority, https), want, "{authority}");
        }
    }

    #[test]
    fn paths_match_without_case_when_asked() {
        use crate::table::routes::PathMatch;
        let exact = PathMatch::ExactIgnoreCase("/Health".into());
        let prefix = PathMatch::PrefixIgnoreCase("/API/".into());
        for (m, path, want) in [
            (&exact, "/health", true),
            (&exact, "/HEALTH", true),
            (&exact, "/healthz", false),
            (&prefix, "/api/users", true),
            (&prefix, "/Api/", true),
            (&prefix, "/api", false),
            // A multi-byte character where the prefix ends: no panic, no match.
            (&prefix, "/ap\u{e9}/x", false),
            (&PathMatch::Prefix("/API/".into()), "/api/users", false),
        ] {
            assert_eq!(m.matches(path), want, "{m:?} {path}");
        }
    }

    #[test]
    fn query_parameters_match_decoded_values() {
        let q = |value| QueryMatch {
            name: "v".into(),
            value,
        };
        let cases: Vec<(QueryMatch, Option<&str>, bool)> = vec![
            (q(HeaderValueMatch::Exact("2".into())), Some("v=2"), true),
            (
                q(HeaderValueMatch::Exact("2".into())),
                Some("a=1&v=2"),
                true,
            ),
            (q(HeaderValueMatch::Exact("2".into())), Some("v=20"), false),
            (
                q(HeaderValueMatch::Exact("a b".into())),
                Some("v=a%20b"),
                true,
            ),
            (
                q(HeaderValueMatch::Exact("a b".into())),
                Some("v=a+b"),
                true,
            ),
            (
                q(HeaderValueMatch::Prefix("be".into())),
                Some("v=beta"),
                true,
            ),
            (
                q(HeaderValueMatch::Prefix("be".into())),
                Some("x=beta"),
                false,
            ),
            (q(HeaderValueMatch::Present), Some("v"), true),
            (q(HeaderValueMatch::Present), Some("vv=1"), false),
            (q(HeaderValueMatch::Present), None, false),
            (q(HeaderValueMatch::Absent), None, true),
            (q(HeaderValueMatch::Absent), Some("v=1"), false),
            (
                q(HeaderValueMatch::Regex(Regex::new("^[0-9]+$").unwrap())),
                Some("v=x&v=42"),
                true,
            ),
            (
                q(HeaderValueMatch::Regex(Regex::new("^[0-9]+$").unwrap())),
                Some("v=4x"),
                false,
            ),
        ];
        for (m, query, want) in cases {
            assert_eq!(m.matches(query), want, "{:?} on {query:?}", m.value);
        }
    }

    #[test]
    fn scheme_port_and_absent_headers() {
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", "1".parse().unwrap());
        let plain = HeaderMap::new();
        let extra = ExtraMatch {
            https: Some(true),
            port: Some(8443),
            without_headers: vec![HeaderMatch {
                name: HeaderName::from_static("x-canary"),
                value: HeaderValueMatch::Exact("1".into()),
            }],
            ..ExtraMatch::default()
        };
        let request = |headers, https, authority| MatchRequest {
            path: "/",
            query: None,
            method: &Method::GET,
            headers: HeadersRef::Map(headers),
            https,
            authority,
        };
        for (headers, https, authority, want) in [
            (&plain, true, "a.test:8443", true),
            (&plain, false, "a.test:8443", false),
            (&plain, true, "a.test", false),
            (&canary, true, "a.test:8443", false),
        ] {
            assert_eq!(
                extra.matches(&request(headers, https, authority)),
                want,
                "{https} {authority} {headers:?}"
            );
        }
    }
}
