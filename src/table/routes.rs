//! Route matching: host (exact, `*.suffix`, `*`), then path, headers and method; the first
//! route in config order that matches wins.
//!
//! Built by the table compiler, read per request. Exact hosts are one hash lookup that yields
//! the candidate routes already in config order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, Method};
use regex::Regex;

use crate::http1::raw_fields::HeadersRef;
use crate::steer::{RegionId, Steering};
use crate::table::retry::RetryPolicy;
use crate::telemetry::metrics::RequestMetrics;

/// Index of a cluster in the routing table.
pub type ClusterId = usize;

#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum HeaderValueMatch {
    Present,
    Absent,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: HeaderValueMatch,
}

impl HeaderMatch {
    pub fn matches(&self, headers: HeadersRef<'_>) -> bool {
        let mut values = headers.values_named(&self.name);
        match &self.value {
            HeaderValueMatch::Present => values.next().is_some(),
            HeaderValueMatch::Absent => values.next().is_none(),
            HeaderValueMatch::Exact(want) => values.any(|v| v == want.as_bytes()),
            HeaderValueMatch::Prefix(want) => values.any(|v| v.starts_with(want.as_bytes())),
            HeaderValueMatch::Regex(re) => {
                values.any(|v| crate::http1::headers::as_text(v).is_some_and(|s| re.is_match(s)))
            }
        }
    }
}

/// Where a route sends its traffic.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    Cluster(ClusterId),
    /// A fixed split across clusters; weights sum to `total`.
    Weighted {
        clusters: Vec<(ClusterId, u32)>,
        total: u64,
    },
}

impl RouteTarget {
    pub fn pick(&self, rng: &mut fastrand::Rng) -> ClusterId {
        match self {
            Self::Cluster(id) => *id,
            Self::Weighted { clusters, total } => {
                let mut r = rng.u64(0..(*total).max(1));
                for (id, w) in clusters {
                    let w = u64::from(*w);
                    if r < w {
                        return *id;
                    }
                    r -= w;
                }
                clusters.first().map(|(id, _)| *id).unwrap_or(0)
            }
        }
    }
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub target: RouteTarget,
    pub steering: Steering,
    pub timeout: Duration,
    pub retries: RetryPolicy,
    /// Request bodies up to this many bytes are buffered for replay.
    pub max_replay_body: u64,
    /// Larger request bodies are refused with 413.
    pub max_body: u64,
    /// A streamed request body may pause this long between bytes.
    pub body_idle_timeout: Duration,
    /// A response body may pause this long between bytes.
    pub response_idle_timeout: Duration,
    /// Requests decided so far: the index into the region-split sequence.
    pub requests: AtomicU64,
    pub metrics: RouteMetrics,
}

/// A route's request metric handles, resolved when the table is compiled.
#[derive(Debug)]
pub struct RouteMetrics {
    /// Per cluster the route sends to: handles by region, and one for answers before a region
    /// was chosen.
    pub per_cluster: Vec<(ClusterId, Vec<RequestMetrics>, RequestMetrics)>,
    /// Answers before a cluster was chosen.
    pub no_cluster: RequestMetrics,
}

impl RouteMetrics {
    pub fn get(&self, cluster: Option<ClusterId>, region: Option<RegionId>) -> &RequestMetrics {
        let Some(cluster) = cluster else {
            return &self.no_cluster;
        };
        let Some((_, regions, none)) = self.per_cluster.iter().find(|(id, _, _)| *id == cluster)
        else {
            return &self.no_cluster;
        };
        region.and_then(|r| regions.get(r as usize)).unwrap_or(none)
    }
}

impl Route {
    /// The next region-split draw for this route (see [`crate::steer::golden_draw`]).
    pub fn next_draw(&self) -> f64 {
        crate::steer::golden_draw(self.requests.fetch_add(1, Ordering::Relaxed))
    }

    fn matches_request(&self, path: &str, method: &Method, headers: HeadersRef<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
            && self.headers.iter().all(|h| h.matches(headers))
    }
}

/// How a route names its hosts, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches `a.example.com`, `a.b.example.com`,
    /// not `example.com`.
    Suffix(String),
    Any,
}

impl HostPattern {
    /// Parse a configured host (already validated as non-empty).
    pub fn parse(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "*" {
            Self::Any
        } else if let Some(rest) = host.strip_prefix("*.") {
            Self::Suffix(format!(".{rest}"))
        } else {
            Self::Exact(host)
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            Self::Any => true,
        }
    }
}

/// All routes and the host index over them.
#[derive(Debug, Default)]
pub struct RouteSet {
    pub routes: Vec<Route>,
    /// Exact host → every route that can match it (exact, suffix and `*`), in config order.
    /// Looked up per request: hashed with foldhash (the keys come from config).
    exact: foldhash::HashMap<String, Vec<usize>>,
    /// Routes with suffix or `*` hosts, in config order, for hosts not in `exact`.
    patterns: Vec<(usize, Vec<HostPattern>)>,
}

impl RouteSet {
    pub fn new(routes: Vec<Route>, hosts: Vec<Vec<HostPattern>>) -> Self {
        let patterns: Vec<(usize, Vec<HostPattern>)> = hosts
            .iter()
            .enumerate()
            .filter(|(_, hs)| hs.iter().any(|h| !matches!(h, HostPattern::Exact(_))))
            .map(|(i, hs)| (i, hs.clone()))
            .collect();
        let mut exact: foldhash::HashMap<String, Vec<usize>> = foldhash::HashMap::default();
        for hs in &hosts {
            for h in hs {
                if let HostPattern::Exact(name) = h {
                    exact.entry(name.clone()).or_default();
                }
            }
        }
        for (name, candidates) in exact.iter_mut() {
            *candidates = hosts
                .iter()
                .enumerate()
                .filter(|(_, hs)| hs.iter().any(|h| h.matches(name)))
                .map(|(i, _)| i)
                .collect();
        }
        Self {
            routes,
            exact,
            patterns,
        }
    }

    /// The first route that matches. `host` must be normalised (see [`normalize_host`]).
    pub fn find(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: HeadersRef<'_>,
    ) -> Option<(usize, &Route)> {
        let check = |i: usize| {
            self.routes
                .get(i)
                .filter(|r| r.matches_request(path, method, headers))
                .map(|r| (i, r))
        };
        match self.exact.get(host) {
            Some(candidates) => candidates.iter().find_map(|i| check(*i)),
            None => self
                .patterns
                .iter()
                .filter(|(_, hs)| hs.iter().any(|h| h.matches(host)))
                .find_map(|(i, _)| check(*i)),
        }
    }
}

/// Lower-case, without port or trailing dot. Borrows when nothing changes.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        // Bytes, not chars: a byte search for an ASCII ':' is far cheaper than str's.
        match raw.bytes().rposition(|b| b == b':') {
            Some(colon) => &raw[..colon],
            None => raw,
        }
    };
    let trimmed = without_port.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn route(name: &str, path: PathMatch) -> Route {
        Route {
            name: name.into(),
            path,
            headers: Vec::new(),
            methods: Vec::new(),
            target: RouteTarget::Cluster(0),
            steering: Steering::default(),
            timeout: Duration::from_secs(1),
            retries: RetryPolicy::default(),
            max_replay_body: 0,
            max_body: u64::MAX,
            body_idle_timeout: Duration::from_secs(30),
            response_idle_timeout: Duration::from_secs(60),
            requests: AtomicU64::new(0),
            metrics: RouteMetrics {
                per_cluster: Vec::new(),
                no_cluster: RequestMetrics::new(
                    &crate::telemetry::metrics::Metrics::new(),
                    name,
                    "",
                    "",
                ),
            },
        }
    }

    fn set(routes: Vec<(Route, &[&str])>) -> RouteSet {
        let (routes, hosts): (Vec<_>, Vec<_>) = routes
            .into_iter()
            .map(|(r, hs)| (r, hs.iter().map(|h| HostPattern::parse(h)).collect()))
            .unzip();
        RouteSet::new(routes, hosts)
    }

    fn found(s: &RouteSet, host: &str, path: &str) -> Option<String> {
        s.find(host, path, &Method::GET, HeadersRef::Map(&HeaderMap::new()))
            .map(|(_, r)| r.name.clone())
    }

    #[test]
    fn host_and_path_matching_in_config_order() {
        let mut with_header = route("canary", PathMatch::Any);
        with_header.headers.push(HeaderMatch {
            name: HeaderName::from_static("x-canary"),
            value: HeaderValueMatch::Exact("1".into()),
        });
        let mut post_only = route("post", PathMatch::Any);
        post_only.methods.push(Method::POST);
        let s = set(vec![
            (with_header, &["api.example.com"]),
            (post_only, &["api.example.com"]),
            (
                route("exact", PathMatch::Exact("/health".into())),
                &["api.example.com"],
            ),
            (
                route("wild", PathMatch::Regex(Regex::new("^/v[0-9]+/").unwrap())),
                &["*.example.com"],
            ),
            (
                route("api", PathMatch::Prefix("/".into())),
                &["api.example.com", "*.api.example.com"],
            ),
            (route("any", PathMatch::Prefix("/static/".into())), &["*"]),
        ]);
        let cases = [
            ("api.example.com", "/health", Some("exact")),
            ("api.example.com", "/v1/users", Some("wild")),
            ("api.example.com", "/users", Some("api")),
            ("eu.api.example.com", "/users", Some("api")),
            ("eu.api.example.com", "/v2/x", Some("wild")),
            ("www.example.com", "/users", None),
            ("example.com", "/v1/", None),
            ("other.test", "/static/a.css", Some("any")),
            ("api.example.com", "/static/a.css", Some("api")),
            ("other.test", "/", None),
        ];
        for (host, path, want) in cases {
            assert_eq!(found(&s, host, path).as_deref(), want, "{host}{path}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "1".parse().unwrap());
        let hit = s
            .find(
                "api.example.com",
                "/users",
                &Method::GET,
                HeadersRef::Map(&headers),
            )
            .unwrap();
        assert_eq!(hit.1.name, "canary");
        let hit = s
            .find(
                "api.example.com",
                "/users",
                &Method::POST,
                HeadersRef::Map(&HeaderMap::new()),
            )
            .unwrap();
        assert_eq!(hit.1.name, "post");
    }

    #[test]
    fn header_matchers() {
        let mut h = HeaderMap::new();
        h.append("x-user", "alice-admin".parse().unwrap());
        let m = |value| HeaderMatch {
            name: HeaderName::from_static("x-user"),
            value,
        };
        assert!(m(HeaderValueMatch::Present).matches(HeadersRef::Map(&h)));
        assert!(!m(HeaderValueMatch::Absent).matches(HeadersRef::Map(&h)));
        assert!(m(HeaderValueMatch::Prefix("alice".into())).matches(HeadersRef::Map(&h)));
        assert!(!m(HeaderValueMatch::Exact("alice".into())).matches(HeadersRef::Map(&h)));
        assert!(
            m(HeaderValueMatch::Regex(Regex::new("admin$").unwrap())).matches(HeadersRef::Map(&h))
        );
        assert!(m(HeaderValueMatch::Absent).matches(HeadersRef::Map(&HeaderMap::new())));
    }

    #[test]
    fn hosts_are_normalised() {
        for (raw, want) in [
            ("API.Example.com:8080", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("[::1]:8080", "[::1]"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("plain", "plain"),
        ] {
            assert_eq!(normalize_host(raw), want);
        }
    }
}
