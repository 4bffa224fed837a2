//! Answers a route gives at the edge, never proxied: a redirect (Location built from the
//! request and the route's fields, as Envoy's `redirect` action) or a direct response.

use bytes::Bytes;
use http::StatusCode;

use crate::table::policies::rewrite::replace_prefix;
use crate::table::routes::PathMatch;

#[derive(Debug, Clone)]
pub enum EdgeAnswer {
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

impl EdgeAnswer {
    pub fn describe(&self) -> String {
        match self {
            Self::Redirect(r) => {
                let mut out = format!("redirect {}", r.code.as_u16());
                if let Some(s) = &r.scheme {
                    out.push_str(&format!(" scheme {s}"));
                }
                if let Some(h) = &r.host {
                    out.push_str(&format!(" host {h}"));
                }
                if let Some(p) = r.port {
                    out.push_str(&format!(" port {p}"));
                }
                match &r.path {
                    Some(RedirectPath::Whole(p)) => out.push_str(&format!(" path {p}")),
                    Some(RedirectPath::Prefix(p)) => out.push_str(&format!(" prefix {p}")),
                    None => {}
                }
                out
            }
            Self::Direct { status, body } => {
                format!("direct response {} ({} bytes)", status.as_u16(), body.len())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum RedirectPath {
    /// Replaces the whole path.
    Whole(String),
    /// Replaces the matched prefix (see [`replace_prefix`]).
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct Redirect {
    /// `http` or `https`; the request's when absent.
    pub scheme: Option<&'static str>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<RedirectPath>,
    pub code: StatusCode,
}

/// What the Location is built from.
pub struct RedirectRequest<'a> {
    pub https: bool,
    /// Host or authority as sent (already held to `host[:port]` by the strict checks).
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// The Location of a redirect. The port is kept unless the redirect names one or changes the
/// scheme, and left out when it is the scheme's default; the query is kept unless the new
/// path carries its own.
pub fn location(r: &Redirect, matched: &PathMatch, request: &RedirectRequest<'_>) -> String {
    let request_scheme = if request.https { "https" } else { "http" };
    let scheme = r.scheme.unwrap_or(request_scheme);
    let (request_host, request_port) = split_authority(request.authority);
    let host = r.host.as_deref().unwrap_or(request_host);
    let port = match (r.port, request_port) {
        (Some(p), _) => Some(p),
        (None, Some(p)) if scheme == request_scheme => Some(p),
        _ => None,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let path = match &r.path {
        Some(RedirectPath::Whole(p)) => p.clone(),
        Some(RedirectPath::Prefix(p)) => replace_prefix(p, matched, request.path),
        None => request.path.to_owned(),
    };
    let mut out = String::with_capacity(
        scheme.len() + host.len() + path.len() + request.query.map_or(0, str::len) + 16,
    );
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(host);
    if let Some(p) = port.filter(|p| *p != default_port) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    out.push_str(&path);
    if let Some(q) = request.query.filter(|_| !path.contains('?')) {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `host[:port]` → host and port (an IPv6 literal keeps its brackets).
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    let split_at = match authority.strip_prefix('[') {
        Some(_) => authority.find(']').map(|end| end + 1),
        None => authority.rfind(':'),
    };
    match split_at {
        Some(at) => {
            let (host, rest) = authority.split_at(at);
            (host, rest.strip_prefix(':').and_then(|p| p.parse().ok()))
        }
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect() -> Redirect {
        Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            code: StatusCode::MOVED_PERMANENTLY,
        }
    }

    #[test]
    fn locations() {
        let prefix = PathMatch::Prefix("/old".into());
        let with = |f: &dyn Fn(&mut Redirect)| {
            let mut r = redirect();
            f(&mut r);
            r
        };
        // redirect, https, authority, path, query, Location
        type Case = (
            Redirect,
            bool,
            &'static str,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                redirect(),
                false,
                "a.test",
                "/old/x",
                None,
                "http://a.test/old/x",
            ),
            (
                with(&|r| r.scheme = Some("https")),
                false,
                "a.test:8080",
                "/old/x",
                Some("q=1"),
                "https://a.test/old/x?q=1",
            ),
            (
                with(&|r| r.host = Some("b.test".into())),
                false,
                "a.test:8080",
                "/old/x",
                None,
                "http://b.test:8080/old/x",
            ),
            (
                with(&|r| {
                    r.scheme = Some("https");
                    r.port = Some(8443)
                }),
                false,
                "a.test",
                "/",
                None,
                "https://a.test:8443/",
            ),
            (
                with(&|r| r.port = Some(443)),
                true,
                "a.test:8443",
                "/",
                None,
                "https://a.test/",
            ),
            (
                with(&|r| r.path = Some(RedirectPath::Prefix("/new".into()))),
                true,
                "a.test",
                "/old/x",
                Some("a=b"),
                "https://a.test/new/x?a=b",
            ),
            (
                with(&|r| r.path = Some(RedirectPath::Whole("/moved".into()))),
                false,
                "[::1]:8080",
                "/old/x",
                Some("a=b"),
                "http://[::1]:8080/moved?a=b",
            ),
            (
                with(&|r| r.path = Some(RedirectPath::Whole("/moved?to=here".into()))),
                false,
                "a.test",
                "/old",
                Some("a=b"),
                "http://a.test/moved?to=here",
            ),
        ];
        for (r, https, authority, path, query, want) in cases {
            let request = RedirectRequest {
                https,
                authority,
                path,
                query,
            };
            assert_eq!(location(&r, &prefix, &request), want, "{r:?}");
        }
    }
}
