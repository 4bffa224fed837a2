//! Compiling routes: hosts, matches, targets, retries and steering.

use super::*;

/// Metric label values shared by every route's handles: made once per compile, not per route.
pub(super) struct MetricLabels {
    /// Cluster names by `ClusterId`.
    clusters: Vec<Arc<str>>,
    /// Region names by `RegionId`.
    regions: Vec<Arc<str>>,
    /// The empty label (no cluster or no region chosen).
    none: Arc<str>,
}

impl MetricLabels {
    fn new(config: &Config, ids: &HashMap<&str, ClusterId>) -> Self {
        let none: Arc<str> = Arc::from("");
        let mut clusters = vec![none.clone(); ids.len()];
        for (name, id) in ids {
            if let Some(slot) = clusters.get_mut(*id) {
                *slot = Arc::from(*name);
            }
        }
        Self {
            clusters,
            regions: config
                .regions
                .keys()
                .map(|r| Arc::from(r.as_str()))
                .collect(),
            none,
        }
    }
}

impl<'a> Compiler<'a> {
    pub(super) fn retries(&mut self, at: YamlPath, r: &RetryConfig) -> RetryPolicy {
        let mut policy = RetryPolicy::none();
        policy.attempts = r.attempts;
        policy.retry_non_idempotent = r.retry_non_idempotent;
        if r.attempts > 10 {
            self.problems.at(
                at.key("attempts"),
                format!("{} retries is more than the maximum of 10", r.attempts),
            );
        }
        policy.per_try_timeout = r
            .per_try_timeout
            .as_ref()
            .and_then(|t| self.duration(at.key("per_try_timeout"), t, DurationRange::TIMEOUT))
            .map(PerTryTimeout::Strict);
        for (i, condition) in r.retry_on.iter().enumerate() {
            match condition {
                RetryOnConfig::Code(code) if (100..=599).contains(code) => policy.on_statuses.push(*code),
                RetryOnConfig::Condition(name) if policy.enable(name) => {}
                RetryOnConfig::Condition(name) if name.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)) => {
                    policy.on_statuses.push(name.parse().unwrap_or(503));
                }
                other => self.problems.at(
                    at.key("retry_on").index(i),
                    format!(
                        "unknown retry condition {other:?}; use 5xx, gateway-error, connect-failure, reset, \
                         refused-stream, retriable-4xx or a status code"
                    ),
                ),
            }
        }
        if let Some(base) = self.duration(
            at.key("backoff").key("base"),
            &r.backoff.base,
            DurationRange::TIMEOUT,
        ) {
            policy.backoff_base = base;
        }
        if let Some(max) = self.duration(
            at.key("backoff").key("max"),
            &r.backoff.max,
            DurationRange::TIMEOUT,
        ) {
            policy.backoff_max = max;
        }
        if !(0.0..=100.0).contains(&r.budget.percent) {
            self.problems.at(
                at.key("budget").key("percent"),
                format!("{} is outside 0..100", r.budget.percent),
            );
        }
        policy.budget_percent = r.budget.percent;
        policy.budget_min_concurrency = r.budget.min_concurrency;
        policy
    }

    pub(super) fn routes(&mut self, clusters: &HashMap<&'a str, ClusterId>) -> RouteSet {
        let at = root().key("routes");
        if self.config.routes.is_empty() {
            self.problems
                .at(at.clone(), "at least one route is required");
        }
        let mut names = HashSet::with_capacity(self.config.routes.len());
        let mut routes = Vec::with_capacity(self.config.routes.len());
        let mut hosts = Vec::with_capacity(self.config.routes.len());
        let labels = MetricLabels::new(self.config, clusters);
        let mut mirror_counts = mirror::MirrorCounts::new();
        for (i, r) in self.config.routes.iter().enumerate() {
            let here = at.index(i);
            if r.name.is_empty() {
                self.problems.at(
                    here.key("name"),
                    "a route needs a name (it labels metrics and logs)",
                );
            } else if !names.insert(r.name.as_str()) {
                self.problems.at(
                    here.key("name"),
                    format!("route name `{}` is used twice", r.name),
                );
            }
            let host_patterns = self.hosts(here.key("hosts"), &r.hosts);
            let path = self.path_match(&here, r);
            let headers = self.header_matches(&here, r);
            let methods = self.methods(&here, r);
            let extra = self.extra_match(&here, r);
            let policies = self.route_policies(&here, r, path.as_ref());
            let target = self.target(&here, r, clusters);
            let steering = self.steering(here.key("steering"), &r.steering);
            let timeout = self.duration(here.key("timeout"), &r.timeout, DurationRange::TIMEOUT);
            let mut retries = self.retries(here.key("retries"), &r.retries);
            if r.retries.per_try_timeout.is_none() {
                retries.per_try_timeout =
                    timeout.and_then(|t| default_per_try_timeout(t, retries.attempts));
            }
            let body_idle_timeout = self
                .duration(
                    here.key("body_idle_timeout"),
                    &r.body_idle_timeout,
                    DurationRange::TIMEOUT,
                )
                .unwrap_or(Duration::from_secs(30));
            let response_idle_timeout = self
                .duration(
                    here.key("response_idle_timeout"),
                    &r.response_idle_timeout,
                    DurationRange::TIMEOUT,
                )
                .unwrap_or(Duration::from_secs(60));
            let cors = r.cors.as_ref().and_then(|c| self.cors(here.key("cors"), c));
            let fault = r
                .fault
                .as_ref()
                .and_then(|f| self.fault(here.key("fault"), f, &r.name));
            let mirrors = self.mirrors(&here, r, clusters, &mut mirror_counts);
            if let (Some(path), Some(target), Some(timeout)) = (path, target, timeout) {
                let metrics = self.route_metrics(&r.name, &target, &labels);
                routes.push(Route {
                    metrics,
                    name: r.name.clone(),
                    path,
                    headers,
                    methods,
                    target,
                    steering,
                    timeout,
                    retries,
                    max_replay_body: r.max_replay_body,
                    max_body: r.max_body,
                    body_idle_timeout,
                    response_idle_timeout,
                    requests: Default::default(),
                    extra,
                    policies,
                    cors,
                    fault,
                    mirrors,
                });
                hosts.push(host_patterns);
            }
        }
        RouteSet::new(routes, hosts)
    }

    /// Request metric handles for every cluster and region this route can send to.
    pub(super) fn route_metrics(
        &self,
        route: &str,
        target: &RouteTarget,
        labels: &MetricLabels,
    ) -> RouteMetrics {
        let ids: Vec<ClusterId> = match target {
            RouteTarget::Edge => Vec::new(),
            RouteTarget::Cluster(id) => vec![*id],
            RouteTarget::Weighted { clusters, .. } => clusters.iter().map(|(id, _)| *id).collect(),
        };
        let route: Arc<str> = route.into();
        let label = |id: ClusterId| labels.clusters.get(id).unwrap_or(&labels.none).clone();
        let per_cluster = ids
            .into_iter()
            .map(|id| {
                let per_region = labels
                    .regions
                    .iter()
                    .map(|region| {
                        RequestMetrics::new(&self.metrics, route.clone(), label(id), region.clone())
                    })
                    .collect();
                (
                    id,
                    per_region,
                    RequestMetrics::new(
                        &self.metrics,
                        route.clone(),
                        label(id),
                        labels.none.clone(),
                    ),
                )
            })
            .collect();
        RouteMetrics {
            per_cluster,
            no_cluster: RequestMetrics::new(
                &self.metrics,
                route,
                labels.none.clone(),
                labels.none.clone(),
            ),
        }
    }

    pub(super) fn hosts(&mut self, at: YamlPath, hosts: &[String]) -> Vec<HostPattern> {
        if hosts.is_empty() {
            self.problems
                .at(at.clone(), "list at least one host (`*` matches any host)");
        }
        let mut out = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let body = h.strip_prefix("*.").unwrap_or(h);
            let ok = h == "*"
                || (!body.is_empty()
                    && body.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
                    }));
            if ok {
                out.push(HostPattern::parse(h));
            } else {
                self.problems.at(
                    at.index(i),
                    format!(
                        "`{h}` is not a host name; use `api.example.com`, `*.example.com` or `*`"
                    ),
                );
            }
        }
        out
    }

    pub(super) fn path_match(&mut self, here: &YamlPath, r: &RouteConfig) -> Option<PathMatch> {
        let m = &r.matches;
        let at = here.key("match");
        let given = [
            m.path_exact.is_some(),
            m.path_prefix.is_some(),
            m.path_regex.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            self.problems.at(
                at.clone(),
                "give at most one of path_exact, path_prefix, path_regex",
            );
            return None;
        }
        for (key, value) in [
            ("path_exact", &m.path_exact),
            ("path_prefix", &m.path_prefix),
        ] {
            if let Some(v) = value
                && !v.starts_with('/')
            {
                self.problems
                    .at(at.key(key), format!("`{v}` must start with '/'"));
                return None;
            }
        }
        Some(match (&m.path_exact, &m.path_prefix, &m.path_regex) {
            (Some(p), _, _) if m.ignore_case => PathMatch::ExactIgnoreCase(p.clone()),
            (_, Some(p), _) if m.ignore_case => PathMatch::PrefixIgnoreCase(p.clone()),
            (Some(p), _, _) => PathMatch::Exact(p.clone()),
            (_, Some(p), _) => PathMatch::Prefix(p.clone()),
            (_, _, Some(re)) => {
                PathMatch::Regex(self.bounded_regex(at.key("path_regex"), re, m.ignore_case)?)
            }
            _ => PathMatch::Any,
        })
    }

    pub(super) fn header_matches(&mut self, here: &YamlPath, r: &RouteConfig) -> Vec<HeaderMatch> {
        self.header_list(here.key("match").key("headers"), &r.matches.headers)
    }

    pub(super) fn methods(&mut self, here: &YamlPath, r: &RouteConfig) -> Vec<http::Method> {
        let mut out = Vec::new();
        for (i, m) in r.matches.methods.iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => out.push(method),
                Err(_) => self.problems.at(
                    here.key("match").key("methods").index(i),
                    format!("`{m}` is not an HTTP method"),
                ),
            }
        }
        out
    }

    pub(super) fn cluster_ref(
        &mut self,
        at: YamlPath,
        name: &str,
        clusters: &HashMap<&'a str, ClusterId>,
    ) -> Option<ClusterId> {
        let found = clusters.get(name).copied();
        if found.is_none() {
            let known: Vec<&str> = self.config.clusters.keys().map(String::as_str).collect();
            self.problems.at(
                at,
                format!(
                    "unknown cluster `{name}`; clusters are: {}",
                    known.join(", ")
                ),
            );
        }
        found
    }

    pub(super) fn target(
        &mut self,
        here: &YamlPath,
        r: &RouteConfig,
        clusters: &HashMap<&'a str, ClusterId>,
    ) -> Option<RouteTarget> {
        if r.redirect.is_some() || r.direct_response.is_some() {
            return self.edge_target(here, r);
        }
        match (&r.cluster, r.clusters.is_empty()) {
            (Some(name), true) => Some(RouteTarget::Cluster(self.cluster_ref(
                here.key("cluster"),
                name,
                clusters,
            )?)),
            (None, false) => {
                let mut out = Vec::new();
                let mut total = 0u64;
                for (i, wc) in r.clusters.iter().enumerate() {
                    let at = here.key("clusters").index(i);
                    if let Some(id) = self.cluster_ref(at.key("name"), &wc.name, clusters) {
                        out.push((id, wc.weight));
                        total += u64::from(wc.weight);
                    }
                }
                if total == 0 {
                    self.problems.at(
                        here.key("clusters"),
                        "cluster weights must add up to more than zero",
                    );
                    return None;
                }
                if r.clusters.len() > crate::table::routes::MAX_SPLIT {
                    self.problems.at(
                        here.key("clusters"),
                        format!(
                            "a route splits across at most {} clusters, not {}",
                            crate::table::routes::MAX_SPLIT,
                            r.clusters.len()
                        ),
                    );
                    return None;
                }
                Some(RouteTarget::Weighted {
                    clusters: out,
                    total,
                })
            }
            _ => {
                self.problems.at(
                    here.clone(),
                    "give exactly one of `cluster` or `clusters` (a weighted list)",
                );
                None
            }
        }
    }

    pub(super) fn steering(&mut self, at: YamlPath, s: &SteeringConfig) -> Steering {
        if !(s.overprovisioning >= 1.0 && s.overprovisioning <= 10.0) {
            self.problems.at(
                at.key("overprovisioning"),
                format!("{} is outside 1.0..10.0", s.overprovisioning),
            );
        }
        let mut countries = foldhash::HashMap::default();
        for (code, regions) in &s.countries {
            let here = at.key("countries").key(code.clone());
            match CountryCode::parse(code) {
                Some(c) => {
                    countries.insert(c, self.region_list(here, regions));
                }
                None => self
                    .problems
                    .at(here, format!("`{code}` is not a two-letter country code")),
            }
        }
        let mut continents = foldhash::HashMap::default();
        for (code, regions) in &s.continents {
            let here = at.key("continents").key(code.clone());
            match ContinentCode::parse(code) {
                Some(c) => {
                    continents.insert(c, self.region_list(here, regions));
                }
                None => self.problems.at(
                    here,
                    format!("`{code}` is not a continent code (AF AN AS EU NA OC SA)"),
                ),
            }
        }
        let only = (!s.only.is_empty()).then(|| {
            let order = self.region_list(at.key("only"), &s.only);
            order
                .as_slice()
                .iter()
                .fold(0u64, |mask, id| mask | (1u64 << id))
        });
        let mut weights = Vec::new();
        for (name, weight) in &s.weights {
            if let Some(id) = self.region_ref(at.key("weights").key(name.clone()), name) {
                weights.push((id, *weight));
            }
        }
        match s.mode {
            SteeringMode::Weighted if weights.iter().all(|(_, w)| *w == 0) => {
                self.problems.at(at.key("weights"), "mode weighted needs weights, e.g. {us-east-1: 50, eu-west-1: 30, ap-southeast-1: 20}");
            }
            SteeringMode::Weighted => {}
            _ if !s.weights.is_empty() => {
                self.problems.at(
                    at.key("weights"),
                    "weights only apply with `mode: weighted`",
                );
            }
            _ => {}
        }
        if s.mode != SteeringMode::Failover && !s.order.is_empty() {
            self.problems
                .at(at.key("order"), "order only applies with `mode: failover`");
        }
        let fixed_order =
            (!s.order.is_empty()).then(|| self.region_list(at.key("order"), &s.order));
        Steering {
            mode: s.mode,
            overprovisioning: s.overprovisioning,
            countries,
            continents,
            only,
            weights,
            fixed_order,
        }
    }
}
