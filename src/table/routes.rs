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
use crate::table::policies::RoutePolicies;
use crate::table::policies::matching::ExtraMatch;
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
    /// `ignore_case`: ASCII letters compare without case (a regex is built case-insensitive).
    ExactIgnoreCase(String),
    PrefixIgnoreCase(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(path),
            Self::ExactIgnoreCase(p) => path.eq_ignore_ascii_case(p),
            Self::PrefixIgnoreCase(p) => path
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
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

/// The most clusters one route may split across (the split's health is read into a fixed
/// array on the request path).
pub const MAX_SPLIT: usize = 64;

/// Where a route sends its traffic.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// Nowhere: the route answers at the edge (a redirect or a direct response).
    Edge,
    Cluster(ClusterId),
    /// A fixed split across clusters; weights sum to `total`.
    Weighted {
        clusters: Vec<(ClusterId, u32)>,
        total: u64,
    },
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
    /// Query, scheme, port and header-absence conditions; `None` (the common case) costs one
    /// check per candidate route.
    pub extra: Option<Box<ExtraMatch>>,
    /// Rewrite, edge answer and header rules; `None` when the route has none.
    pub policies: Option<Box<RoutePolicies>>,
    /// Route policies: `None` for a route without them (see `table::policies`).
    pub cors: Option<Box<crate::table::policies::cors::Cors>>,
    pub fault: Option<Box<crate::table::policies::fault::Fault>>,
    pub mirrors: Option<Box<[crate::table::policies::mirror::Mirror]>>,
}

/// What route matching reads from a request.
#[derive(Clone, Copy)]
pub struct MatchRequest<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: HeadersRef<'a>,
    pub https: bool,
    /// The Host or authority as the client sent it (a `port` match reads it).
    pub authority: &'a str,
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

    fn matches_request(&self, request: &MatchRequest<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(request.method))
            && self.path.matches(request.path)
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self
                .extra
                .as_ref()
                .is_none_or(|extra| extra.matches(request))
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

    /// Whether `host` (normalised) is one this pattern names.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            Self::Any => true,
        }
    }
}

/// All routes and the host index over them.
///
/// Built in time linear in the routes and hosts (plus, per exact host, the wildcard routes that
/// also match it); a lookup costs one hash probe for a known host, and one probe per label for
/// any other, whatever the number of hosts.
#[derive(Debug, Default)]
pub struct RouteSet {
    pub routes: Vec<Route>,
    /// Exact host → every route with that host or a `*.suffix` host matching it, in config
    /// order. Looked up per request: hashed with foldhash (the keys come from config).
    exact: foldhash::HashMap<Box<str>, Box<[u32]>>,
    /// `.suffix` (a `*.suffix` host as stored) → every route with that suffix or a shorter one
    /// that also matches it, in config order: the candidates for a host not in `exact` whose
    /// longest configured suffix this is.
    suffixes: foldhash::HashMap<Box<str>, Box<[u32]>>,
    /// Routes with a `*` host, in config order; merged with the list above at lookup, so a few
    /// catch-all routes are not copied into every host's list.
    any: Box<[u32]>,
}

impl RouteSet {
    pub fn new(routes: Vec<Route>, hosts: Vec<Vec<HostPattern>>) -> Self {
        let mut exact: foldhash::HashMap<&str, Vec<u32>> = foldhash::HashMap::default();
        let mut suffixes: foldhash::HashMap<&str, Vec<u32>> = foldhash::HashMap::default();
        let mut any = Vec::new();
        // Routes in config order, so every list comes out sorted; `push_once` drops the repeat
        // of a route that names the same host twice.
        for (i, hs) in hosts.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for h in hs {
                match h {
                    HostPattern::Exact(name) => push_once(exact.entry(name).or_default(), i),
                    HostPattern::Suffix(suffix) => {
                        push_once(suffixes.entry(suffix).or_default(), i)
                    }
                    HostPattern::Any => push_once(&mut any, i),
                }
            }
        }
        // Each suffix inherits the list of the longest shorter suffix that matches it, which
        // already holds the shorter ones: shortest first, so that list is complete when read.
        let mut order: Vec<&str> = suffixes.keys().copied().collect();
        order.sort_unstable_by_key(|s| s.len());
        let mut complete: foldhash::HashMap<Box<str>, Box<[u32]>> = foldhash::HashMap::default();
        complete.reserve(order.len());
        for suffix in order {
            let own = suffixes.get(suffix).map(Vec::as_slice).unwrap_or_default();
            let inherited = longest_suffix(&complete, suffix).unwrap_or_default();
            complete.insert(suffix.into(), merge(own, inherited).into());
        }
        let exact = exact
            .into_iter()
            .map(|(name, own)| {
                let list = match longest_suffix(&complete, name) {
                    Some(inherited) => merge(&own, inherited),
                    None => own,
                };
                (Box::from(name), list.into_boxed_slice())
            })
            .collect();
        Self {
            routes,
            exact,
            suffixes: complete,
            any: any.into(),
        }
    }

    /// The first route that matches. `host` must be normalised (see [`normalize_host`]).
    pub fn find(&self, host: &str, request: &MatchRequest<'_>) -> Option<(usize, &Route)> {
        let check = |i: u32| {
            let i = i as usize;
            self.routes
                .get(i)
                .filter(|r| r.matches_request(request))
                .map(|r| (i, r))
        };
        let named = match self.exact.get(host) {
            Some(candidates) => candidates,
            None => longest_suffix(&self.suffixes, host).unwrap_or_default(),
        };
        if self.any.is_empty() {
            return named.iter().find_map(|i| check(*i));
        }
        // Both lists are in config order: walk them merged.
        let (mut a, mut b) = (named, &*self.any);
        loop {
            let next = match (a.first(), b.first()) {
                (Some(x), Some(y)) if x < y => {
                    a = &a[1..];
                    *x
                }
                (Some(x), Some(y)) if x == y => {
                    a = &a[1..];
                    b = &b[1..];
                    *x
                }
                (_, Some(y)) => {
                    b = &b[1..];
                    *y
                }
                (Some(x), None) => {
                    a = &a[1..];
                    *x
                }
                (None, None) => return None,
            };
            if let Some(hit) = check(next) {
                return Some(hit);
            }
        }
    }
}

/// Append `i` unless it is already last (lists are built in increasing order).
fn push_once(list: &mut Vec<u32>, i: u32) {
    if list.last() != Some(&i) {
        list.push(i);
    }
}

/// Two increasing lists as one, without repeats.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        if x <= y {
            i += 1;
            j += usize::from(x == y);
            out.push(*x);
        } else {
            j += 1;
            out.push(*y);
        }
    }
    out.extend_from_slice(a.get(i..).unwrap_or_default());
    out.extend_from_slice(b.get(j..).unwrap_or_default());
    out
}

/// The list of the longest `.suffix` key that `host` ends with and is longer than (the rule of
/// [`HostPattern::Suffix`]): one probe per '.' after the first byte, longest first.
fn longest_suffix<'m>(
    map: &'m foldhash::HashMap<Box<str>, Box<[u32]>>,
    host: &str,
) -> Option<&'m [u32]> {
    if map.is_empty() {
        return None;
    }
    memchr::memchr_iter(b'.', host.as_bytes())
        .filter(|at| *at > 0)
        .find_map(|at| map.get(host.get(at..)?))
        .map(|list| &**list)
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
            extra: None,
            policies: None,
            cors: None,
            fault: None,
            mirrors: None,
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

    fn request<'a>(path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> MatchRequest<'a> {
        MatchRequest {
            path,
            query: None,
            method,
            headers: HeadersRef::Map(headers),
            https: false,
            authority: "",
        }
    }

    fn found(s: &RouteSet, host: &str, path: &str) -> Option<String> {
        s.find(host, &request(path, &Method::GET, &HeaderMap::new()))
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
                &request("/users", &Method::GET, &headers),
            )
            .unwrap();
        assert_eq!(hit.1.name, "canary");
        let hit = s
            .find(
                "api.example.com",
                &request("/users", &Method::POST, &HeaderMap::new()),
            )
            .unwrap();
        assert_eq!(hit.1.name, "post");
    }

    /// The host index picks exactly what a scan of every route in config order picks, for
    /// random mixes of exact, `*.suffix` and `*` hosts (including hosts a route names twice
    /// or matches through several patterns).
    #[test]
    fn host_index_agrees_with_a_scan_in_config_order() {
        let labels = ["a", "b", "ex", "a.b", "b.ex"];
        let mut rng = fastrand::Rng::with_seed(7);
        let name = |rng: &mut fastrand::Rng| {
            let parts = rng.usize(1..=3);
            let mut out: Vec<&str> = (0..parts)
                .map(|_| labels[rng.usize(..labels.len())])
                .collect();
            out.push("test");
            out.join(".")
        };
        for _ in 0..200 {
            let mut routes = Vec::new();
            let mut patterns: Vec<Vec<HostPattern>> = Vec::new();
            for r in 0..rng.usize(1..12) {
                let hosts: Vec<String> = (0..rng.usize(1..=3))
                    .map(|_| match rng.u8(0..10) {
                        0 => "*".to_owned(),
                        1..=4 => format!("*.{}", name(&mut rng)),
                        _ => name(&mut rng),
                    })
                    .collect();
                patterns.push(hosts.iter().map(|h| HostPattern::parse(h)).collect());
                let path = if rng.bool() {
                    PathMatch::Any
                } else {
                    PathMatch::Prefix("/x".into())
                };
                routes.push(route(&r.to_string(), path));
            }
            let set = RouteSet::new(routes, patterns.clone());
            for _ in 0..30 {
                let host = name(&mut rng);
                for path in ["/", "/x"] {
                    let want = patterns
                        .iter()
                        .enumerate()
                        .find(|(i, hs)| {
                            hs.iter().any(|h| h.matches(&host)) && set.routes[*i].path.matches(path)
                        })
                        .map(|(i, _)| i.to_string());
                    assert_eq!(
                        found(&set, &host, path),
                        want,
                        "{host}{path} in {patterns:?}"
                    );
                }
            }
        }
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
