//! Compiling clusters: endpoints, DNS settings, connection pools, outlier detection and health checks.

use super::*;

impl<'a> Compiler<'a> {
    /// `ip:port`, or `name:port` for DNS discovery.
    pub(super) fn endpoint_source(
        &mut self,
        at: YamlPath,
        text: &str,
        weight: u32,
    ) -> Option<EndpointSource> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Some(EndpointSource::Fixed { address, weight });
        }
        let parsed = text
            .rsplit_once(':')
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
            .filter(|(name, port)| *port > 0 && is_dns_name(name));
        match parsed {
            Some((name, port)) => Some(EndpointSource::Dns {
                name: name.trim_end_matches('.').to_ascii_lowercase(),
                port,
                weight,
            }),
            None => {
                self.problems.at(
                    at,
                    format!(
                        "`{text}` is neither ip:port nor name:port (e.g. 10.0.1.10:8000, [2001:db8::1]:8000 or api.eu-west-1.svc.cluster.local:8000)"
                    ),
                );
                None
            }
        }
    }

    pub(super) fn dns(&mut self) -> DnsSettings {
        let at = root().key("dns");
        let d = &self.config.dns;
        let mut nameservers = Vec::new();
        for (i, ns) in d.nameservers.iter().enumerate() {
            let parsed = ns.parse::<SocketAddr>().ok().or_else(|| {
                ns.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(addr) => nameservers.push(addr),
                None => self.problems.at(
                    at.key("nameservers").index(i),
                    format!("`{ns}` is not ip or ip:port"),
                ),
            }
        }
        let min_ttl = self
            .duration(at.key("min_ttl"), &d.min_ttl, DurationRange::DNS_TTL)
            .unwrap_or(Duration::from_secs(5));
        let max_ttl = self
            .duration(at.key("max_ttl"), &d.max_ttl, DurationRange::DNS_TTL)
            .unwrap_or(Duration::from_secs(300));
        if min_ttl > max_ttl {
            self.problems
                .at(at.key("min_ttl"), "min_ttl is longer than max_ttl");
        }
        DnsSettings {
            nameservers,
            min_ttl,
            max_ttl,
        }
    }

    pub(super) fn clusters(
        &mut self,
        region_count: usize,
    ) -> (Vec<Cluster>, HashMap<&'a str, ClusterId>) {
        let at = root().key("clusters");
        let mut out = Vec::new();
        let mut ids = HashMap::new();
        let before: HashMap<&str, &Cluster> = self
            .previous
            .map(|t| t.clusters.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        for (name, cluster) in &self.config.clusters {
            let here = at.key(name.clone());
            if !is_valid_name(name) {
                self.problems.at(
                    here.clone(),
                    format!("cluster name `{name}` may only use letters, digits, '-', '_' and '.'"),
                );
            }
            let connect_timeout = self
                .duration(
                    here.key("connect_timeout"),
                    &cluster.connect_timeout,
                    DurationRange::TIMEOUT,
                )
                .unwrap_or(Duration::from_secs(1));
            let previous = before.get(name.as_str()).copied();
            let affinity = self.affinity(here.key("load_balancer"), &cluster.load_balancer);
            let hash_table = affinity.as_ref().map(|a| a.table_size);
            let mut sources: Vec<Vec<EndpointSource>> =
                (0..region_count).map(|_| Vec::new()).collect();
            let mut seen = HashSet::new();
            for (region_name, endpoints) in &cluster.endpoints {
                let region_at = here.key("endpoints").key(region_name.clone());
                let Some(region) = self.region_ref(region_at.clone(), region_name) else {
                    continue;
                };
                for (i, e) in endpoints.iter().enumerate() {
                    let ep_at = region_at.index(i);
                    if e.weight > MAX_ENDPOINT_WEIGHT {
                        self.problems.at(
                            ep_at.key("weight"),
                            format!(
                                "weight {} is above the maximum {MAX_ENDPOINT_WEIGHT}",
                                e.weight
                            ),
                        );
                    }
                    let Some(source) = self.endpoint_source(ep_at.clone(), &e.address, e.weight)
                    else {
                        continue;
                    };
                    if !seen.insert(e.address.to_ascii_lowercase()) {
                        self.problems.at(
                            ep_at,
                            format!("{} is listed twice in cluster `{name}`", e.address),
                        );
                        continue;
                    }
                    if let Some(list) = sources.get_mut(region as usize) {
                        list.push(source);
                    }
                }
            }
            let regions: Vec<Arc<EndpointSet>> = sources
                .into_iter()
                .enumerate()
                .map(|(region, sources)| {
                    let before = previous
                        .and_then(|c| c.regions.get(region))
                        .map(|s| s.as_ref());
                    // Health, ejection and load of an endpoint survive a reload.
                    let state_of = |address: SocketAddr| {
                        previous
                            .and_then(|c| c.endpoint(address))
                            .map(|e| e.state.clone())
                    };
                    Arc::new(
                        EndpointSet::new(region as RegionId, sources, before, &state_of)
                            .with_hash_table(hash_table, before),
                    )
                })
                .collect();
            let pool = self.connection_pool(&here, cluster, connect_timeout, previous);
            let outlier = self.outlier(here.key("outlier_detection"), &cluster.outlier_detection);
            let health_check = cluster
                .health_check
                .as_ref()
                .and_then(|h| self.health_check(here.key("health_check"), h));
            if !(0.0..=100.0).contains(&cluster.panic_threshold) {
                self.problems.at(
                    here.key("panic_threshold"),
                    format!("{} is outside 0..100 (percent)", cluster.panic_threshold),
                );
            }
            let stats = Arc::new(ClusterStats::new(&self.metrics, name));
            let (reporter, reports) = match outlier {
                Some(_) => {
                    let (reporter, reports) = Reporter::channel(stats.clone());
                    (reporter, Some(reports))
                }
                None => (Reporter::disabled(stats.clone()), None),
            };
            ids.insert(name.as_str(), out.len());
            out.push(Cluster {
                name: name.clone(),
                load_balancer: cluster.load_balancer.policy,
                affinity,
                regions,
                panic_threshold: cluster.panic_threshold / 100.0,
                pool,
                stats,
                reporter,
                reports: Mutex::new(reports),
                outlier,
                health_check,
                peers: None,
                active_requests: AtomicUsize::new(0),
                active_retries: AtomicUsize::new(0),
            });
        }
        (out, ids)
    }

    pub(super) fn connection_pool(
        &mut self,
        here: &YamlPath,
        cluster: &ClusterConfig,
        connect_timeout: Duration,
        previous: Option<&Cluster>,
    ) -> Arc<ClusterPool> {
        let c = &cluster.connection_pool;
        let at = here.key("connection_pool");
        for (key, value) in [
            ("max_connections", c.max_connections),
            ("max_pending_requests", c.max_pending_requests),
            ("max_requests", c.max_requests),
        ] {
            if value == 0 && key != "max_pending_requests" {
                self.problems.at(at.key(key), "must be at least 1");
            }
        }
        let idle_timeout = self
            .duration(
                at.key("idle_timeout"),
                &c.idle_timeout,
                DurationRange::TIMEOUT,
            )
            .unwrap_or(Duration::from_secs(60));
        let limits = PoolLimits {
            max_connections: c.max_connections as usize,
            max_pending_requests: c.max_pending_requests as usize,
            max_requests: c.max_requests as usize,
            max_requests_per_connection: c.max_requests_per_connection,
            idle_timeout,
            connect_timeout,
            max_idle_per_endpoint: c.max_idle_per_endpoint as usize,
        };
        let tls_spec = cluster
            .tls
            .as_ref()
            .and_then(|t| self.upstream_tls_spec(here.key("tls"), t));
        super::protocol::check(self, here, cluster);
        // Unchanged limits and TLS keep the pool, and with it its open connections and counts.
        if let Some(p) = previous
            && *p.pool.limits() == limits
            && p.pool.tls.as_ref().map(|t| &t.spec) == tls_spec.as_ref()
            && p.pool.protocol() == cluster.protocol
        {
            self.renew_upstream_tls(here.key("tls"), p.pool.tls.as_ref());
            return p.pool.clone();
        }
        let tls = tls_spec.and_then(|spec| self.upstream_tls(here.key("tls"), spec));
        ClusterPool::with_protocol(limits, tls, cluster.protocol)
    }

    pub(super) fn outlier(
        &mut self,
        at: YamlPath,
        o: &OutlierDetectionConfig,
    ) -> Option<OutlierPolicy> {
        for (key, value) in [
            ("max_ejection_percent", o.max_ejection_percent),
            ("min_health_percent", o.min_health_percent),
        ] {
            if !(0.0..=100.0).contains(&value) {
                self.problems
                    .at(at.key(key), format!("{value} is outside 0..100 (percent)"));
            }
        }
        let interval = self.duration(at.key("interval"), &o.interval, DurationRange::PERIOD);
        let base = self.duration(
            at.key("base_ejection_time"),
            &o.base_ejection_time,
            DurationRange::TIMEOUT,
        );
        let max = self.duration(
            at.key("max_ejection_time"),
            &o.max_ejection_time,
            DurationRange::TIMEOUT,
        );
        if o.enabled && o.consecutive_5xx == 0 && o.consecutive_gateway_errors == 0 {
            self.problems.at(
                at.clone(),
                "set consecutive_5xx or consecutive_gateway_errors above 0, or enabled: false",
            );
        }
        let (interval, base_ejection_time, max_ejection_time) = (interval?, base?, max?);
        o.enabled.then_some(OutlierPolicy {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway_errors: o.consecutive_gateway_errors,
            interval,
            base_ejection_time,
            max_ejection_time,
            max_ejection_percent: o.max_ejection_percent,
            min_health_percent: o.min_health_percent,
        })
    }

    pub(super) fn health_check(
        &mut self,
        at: YamlPath,
        h: &HealthCheckConfig,
    ) -> Option<Arc<HealthPolicy>> {
        match &h.grpc {
            None if !h.path.starts_with('/') => {
                self.problems
                    .at(at.key("path"), format!("`{}` must start with '/'", h.path));
            }
            Some(_) if !h.path.is_empty() => {
                self.problems.at(
                    at.key("path"),
                    "a gRPC health check calls grpc.health.v1.Health/Check: remove `path`",
                );
            }
            _ => {}
        }
        for (key, value) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            if value == 0 {
                self.problems.at(at.key(key), "must be at least 1");
            }
        }
        let mut expected = Vec::new();
        for (i, range) in h.expected_statuses.iter().enumerate() {
            match parse_status_range(range) {
                Some(r) => expected.push(r),
                None => self.problems.at(
                    at.key("expected_statuses").index(i),
                    "write a status (200) or a range (\"200-399\") within 100..599",
                ),
            }
        }
        let interval = self.duration(at.key("interval"), &h.interval, DurationRange::PERIOD);
        let timeout = self.duration(at.key("timeout"), &h.timeout, DurationRange::TIMEOUT);
        let jitter = match &h.jitter {
            Some(j) => self.duration(at.key("jitter"), j, DurationRange::DELAY),
            None => Some(Duration::ZERO),
        };
        Some(Arc::new(HealthPolicy {
            path: h.path.clone(),
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            expected_statuses: expected,
            jitter: jitter?,
            host: h.host.clone(),
            grpc_service: h.grpc.as_ref().map(|g| g.service.clone()),
        }))
    }
}

/// A DNS host name: dot-separated labels of letters, digits and '-', not all digits.
pub(super) fn is_dns_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `204` or `"200-399"` as an inclusive range.
pub(super) fn parse_status_range(range: &StatusRangeConfig) -> Option<(u16, u16)> {
    let (lo, hi) = match range {
        StatusRangeConfig::Code(c) => (*c, *c),
        StatusRangeConfig::Text(t) => match t.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let c = t.trim().parse().ok()?;
                (c, c)
            }
        },
    };
    (100 <= lo && lo <= hi && hi <= 599).then_some((lo, hi))
}
