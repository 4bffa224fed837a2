//! Compiling the `geodns` section and each region's `ingress` addresses, with a problem (file,
//! line, field) for every bad value: addresses, zone and record names, names outside their zone,
//! duplicates, `max_answers` against the regions, durations and sizes past their limits.

use std::net::IpAddr;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{LowerName, Name};

use super::*;
use crate::config::RateLimitConfig;
use crate::config::{DnsNameConfig, GeoDnsConfig, ZoneConfig};
use crate::table::geodns::{DnsTarget, GeoDns, Ingress, RateLimit, Zone};

/// Limits that keep a config from making the listener's tables or answers huge.
pub const MAX_ZONES: usize = 256;
pub const MAX_NAMES_PER_ZONE: usize = 10_000;
pub const MAX_NS: usize = 16;
/// Per region: every address of one family must fit in one UDP answer of 512 bytes.
pub const MAX_INGRESS: usize = 16;
pub const MAX_TCP_CONNECTIONS: u32 = 65_536;
/// Rate limit bounds: a million answers a second per source is no limit at all.
pub const MAX_RATE_PER_SECOND: u32 = 1_000_000;
pub const MAX_SLIP: u32 = 10;

/// TTLs of answers: a second to a day.
const TTL_RANGE: DurationRange = DurationRange {
    min: Duration::from_secs(1),
    max: crate::config::MAX_DURATION,
};
/// SOA refresh, retry and expire: a second to a year (RFC 1912 suggests weeks for expire).
const SOA_TIMER_RANGE: DurationRange = DurationRange {
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * 24 * 60 * 60),
};
/// The SOA minimum (negative-answer TTL): zero to a day.
const SOA_MINIMUM_RANGE: DurationRange = DurationRange::DELAY;

impl<'a> Compiler<'a> {
    /// Each region's ingress addresses (checked whether or not `geodns` is on), indexed by
    /// region id.
    pub(super) fn ingress(&mut self) -> Vec<Ingress> {
        let at = root().key("regions");
        let mut out = Vec::with_capacity(self.config.regions.len());
        for (name, region) in &self.config.regions {
            let here = at.key(name.clone()).key("ingress");
            let mut ingress = Ingress::default();
            if region.ingress.len() > MAX_INGRESS {
                self.problems.at(
                    here.clone(),
                    format!(
                        "{} ingress addresses; at most {MAX_INGRESS} per region fit in an answer",
                        region.ingress.len()
                    ),
                );
            }
            for (i, text) in region.ingress.iter().enumerate() {
                match text.trim().parse::<IpAddr>() {
                    Ok(IpAddr::V4(v4)) => ingress.v4.push(v4),
                    Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                        Some(v4) => ingress.v4.push(v4),
                        None => ingress.v6.push(v6),
                    },
                    Err(_) => self.problems.at(
                        here.index(i),
                        format!(
                            "`{text}` is not an IP address (e.g. 203.0.113.10 or 2001:db8::10)"
                        ),
                    ),
                }
            }
            out.push(ingress);
        }
        out
    }

    /// The GeoDNS section, when configured.
    pub(super) fn geodns(
        &mut self,
        routes: &RouteSet,
        cluster_ids: &HashMap<&'a str, ClusterId>,
        clusters: &[Cluster],
    ) -> Option<Box<GeoDns>> {
        let ingress = self.ingress();
        let config: &'a GeoDnsConfig = self.config.geodns.as_deref()?;
        let at = root().key("geodns");
        let listen = self.socket_addr(at.key("listen"), &config.listen);
        let ttl = self.duration(at.key("ttl"), &config.ttl, TTL_RANGE);
        let failover_ttl = self.duration(at.key("failover_ttl"), &config.failover_ttl, TTL_RANGE);
        let tcp_idle_timeout = self.duration(
            at.key("tcp_idle_timeout"),
            &config.tcp_idle_timeout,
            DurationRange::IDLE,
        );
        let regions = self.config.regions.len();
        if config.max_answers == 0 || config.max_answers as usize > regions.max(1) {
            self.problems.at(
                at.key("max_answers"),
                format!(
                    "max_answers is {}; it takes 1 to the number of regions ({regions})",
                    config.max_answers
                ),
            );
        }
        if config.tcp_max_connections == 0 || config.tcp_max_connections > MAX_TCP_CONNECTIONS {
            self.problems.at(
                at.key("tcp_max_connections"),
                format!(
                    "tcp_max_connections is {}; it takes 1 to {MAX_TCP_CONNECTIONS}",
                    config.tcp_max_connections
                ),
            );
        }
        let rate_limit = config
            .rate_limit
            .as_ref()
            .and_then(|r| self.rate_limit(at.key("rate_limit"), r));
        if ingress.iter().all(|i| i == &Ingress::default()) {
            self.problems.at(
                root().key("regions"),
                "geodns needs addresses to hand out: give at least one region `ingress: [ip, ...]`",
            );
        }
        if config.zones.is_empty() {
            self.problems
                .at(at.key("zones"), "at least one zone is required");
        }
        if config.zones.len() > MAX_ZONES {
            self.problems.at(
                at.key("zones"),
                format!("{} zones; at most {MAX_ZONES}", config.zones.len()),
            );
            return None;
        }
        let mut zones: Vec<Zone> = Vec::with_capacity(config.zones.len());
        for (i, zone) in config.zones.iter().enumerate() {
            let here = at.key("zones").index(i);
            if let Some(zone) = self.zone(here.clone(), zone, routes, cluster_ids, clusters) {
                if zones.iter().any(|z| z.lower == zone.lower) {
                    self.problems.at(
                        here.key("name"),
                        format!("zone `{}` is configured twice", zone.label),
                    );
                }
                zones.push(zone);
            }
        }
        Some(Box::new(GeoDns {
            listen: listen?,
            ttl: secs(ttl?),
            failover_ttl: secs(failover_ttl?),
            max_answers: config.max_answers.max(1) as usize,
            client_subnet: config.client_subnet,
            tcp_max_connections: config.tcp_max_connections.clamp(1, MAX_TCP_CONNECTIONS) as usize,
            tcp_idle_timeout: tcp_idle_timeout?,
            rate_limit,
            zones,
            ingress,
        }))
    }

    fn rate_limit(&mut self, at: YamlPath, r: &RateLimitConfig) -> Option<RateLimit> {
        let mut ok = true;
        if r.per_second == 0 || r.per_second > MAX_RATE_PER_SECOND {
            self.problems.at(
                at.key("per_second"),
                format!(
                    "per_second is {}; it takes 1 to {MAX_RATE_PER_SECOND}",
                    r.per_second
                ),
            );
            ok = false;
        }
        let burst = r.burst.unwrap_or(r.per_second.saturating_mul(2));
        if burst == 0 || burst > MAX_RATE_PER_SECOND.saturating_mul(10) {
            self.problems.at(
                at.key("burst"),
                format!(
                    "burst is {burst}; it takes 1 to {}",
                    MAX_RATE_PER_SECOND.saturating_mul(10)
                ),
            );
            ok = false;
        }
        if r.slip > MAX_SLIP {
            self.problems.at(
                at.key("slip"),
                format!(
                    "slip is {}; it takes 0 (never answer) to {MAX_SLIP}",
                    r.slip
                ),
            );
            ok = false;
        }
        ok.then_some(RateLimit {
            per_second: r.per_second,
            burst,
            slip: r.slip,
        })
    }

    fn zone(
        &mut self,
        at: YamlPath,
        zone: &'a ZoneConfig,
        routes: &RouteSet,
        cluster_ids: &HashMap<&'a str, ClusterId>,
        clusters: &[Cluster],
    ) -> Option<Zone> {
        let apex = self.dns_name(at.key("name"), &zone.name);
        if zone.ns.is_empty() {
            self.problems
                .at(at.key("ns"), "give the zone's name servers (at least one)");
        }
        if zone.ns.len() > MAX_NS {
            self.problems.at(
                at.key("ns"),
                format!("{} name servers; at most {MAX_NS}", zone.ns.len()),
            );
        }
        let ns: Vec<Name> = zone
            .ns
            .iter()
            .take(MAX_NS)
            .enumerate()
            .filter_map(|(i, n)| self.dns_name(at.key("ns").index(i), n))
            .collect();
        let soa_at = at.key("soa");
        let mname = match &zone.soa.mname {
            Some(m) => self.dns_name(soa_at.key("mname"), m),
            None => ns.first().cloned(),
        };
        let rname = if zone.soa.rname.contains('@') {
            self.problems.at(
                soa_at.key("rname"),
                format!(
                    "`{}`: write the contact as a name, with a dot for the @ (hostmaster.example.com)",
                    zone.soa.rname
                ),
            );
            None
        } else {
            self.dns_name(soa_at.key("rname"), &zone.soa.rname)
        };
        let refresh = self.duration(soa_at.key("refresh"), &zone.soa.refresh, SOA_TIMER_RANGE);
        let retry = self.duration(soa_at.key("retry"), &zone.soa.retry, SOA_TIMER_RANGE);
        let expire = self.duration(soa_at.key("expire"), &zone.soa.expire, SOA_TIMER_RANGE);
        let minimum = self.duration(soa_at.key("minimum"), &zone.soa.minimum, SOA_MINIMUM_RANGE);
        if zone.names.len() > MAX_NAMES_PER_ZONE {
            self.problems.at(
                at.key("names"),
                format!(
                    "{} names; at most {MAX_NAMES_PER_ZONE} per zone",
                    zone.names.len()
                ),
            );
            return None;
        }
        let apex = apex?;
        let lower = LowerName::from(&apex);
        let mut names = foldhash::HashMap::default();
        let mut empty_nonterminals = foldhash::HashSet::default();
        for (i, entry) in zone.names.iter().enumerate() {
            let here = at.key("names").index(i);
            let Some(name) = self.record_name(here.key("name"), &entry.name, &apex) else {
                continue;
            };
            let Some(target) = self.dns_target(here.clone(), entry, routes, cluster_ids, clusters)
            else {
                continue;
            };
            let key = LowerName::from(&name);
            if names.contains_key(&key) {
                self.problems.at(
                    here.key("name"),
                    format!("`{}` is configured twice in this zone", entry.name),
                );
                continue;
            }
            // Every name between this one and the apex exists (RFC 8020): NODATA, not NXDOMAIN.
            let mut parent = name.base_name();
            while parent.num_labels() > apex.num_labels() {
                empty_nonterminals.insert(LowerName::from(&parent));
                parent = parent.base_name();
            }
            names.insert(key, target);
        }
        let soa = SOA::new(
            mname?,
            rname?,
            zone.soa.serial,
            secs_i32(refresh?),
            secs_i32(retry?),
            secs_i32(expire?),
            secs(minimum?),
        );
        let soa_ttl = soa.minimum;
        let label = apex.to_ascii().trim_end_matches('.').to_owned();
        Some(Zone {
            apex,
            lower,
            label,
            ns,
            soa,
            soa_ttl,
            names,
            empty_nonterminals,
        })
    }

    /// A record name of `apex`: `@` is the apex, a name ending in `.` is absolute (and must be
    /// inside the zone), a name already ending in the zone's name is taken as written, anything
    /// else is relative to the zone.
    fn record_name(&mut self, at: YamlPath, text: &str, apex: &Name) -> Option<Name> {
        let text = text.trim();
        if text == "@" {
            return Some(apex.clone());
        }
        let zone_text = apex.to_ascii();
        let zone_text = zone_text.trim_end_matches('.');
        let lower = text.to_ascii_lowercase();
        let absolute = if lower.ends_with('.') {
            lower
        } else if lower == zone_text || lower.ends_with(&format!(".{zone_text}")) {
            format!("{lower}.")
        } else {
            format!("{lower}.{zone_text}.")
        };
        let name = self.dns_name(at.clone(), &absolute)?;
        if !apex.zone_of(&name) {
            self.problems
                .at(at, format!("`{text}` is outside the zone `{zone_text}`"));
            return None;
        }
        Some(name)
    }

    fn dns_target(
        &mut self,
        at: YamlPath,
        entry: &DnsNameConfig,
        routes: &RouteSet,
        cluster_ids: &HashMap<&'a str, ClusterId>,
        clusters: &[Cluster],
    ) -> Option<DnsTarget> {
        let panic_of = |id: ClusterId| clusters.get(id).map_or(0.0, |c| c.panic_threshold);
        match (&entry.route, &entry.cluster) {
            (Some(name), None) => {
                let Some(route) = routes.routes.iter().find(|r| &r.name == name) else {
                    let known: Vec<&str> = routes.routes.iter().map(|r| r.name.as_str()).collect();
                    self.problems.at(
                        at.key("route"),
                        format!("unknown route `{name}`; routes are: {}", known.join(", ")),
                    );
                    return None;
                };
                let ids: Vec<ClusterId> = match &route.target {
                    RouteTarget::Cluster(id) => vec![*id],
                    RouteTarget::Weighted { clusters, .. } => {
                        clusters.iter().map(|(id, _)| *id).collect()
                    }
                    RouteTarget::Edge => {
                        self.problems.at(
                            at.key("route"),
                            format!("route `{name}` answers at the edge: it has no cluster whose regions could be steered to"),
                        );
                        return None;
                    }
                };
                Some(DnsTarget {
                    source: format!("route {name}"),
                    steering: route.steering.clone(),
                    panic_threshold: ids.first().map_or(0.0, |id| panic_of(*id)),
                    clusters: ids,
                })
            }
            (None, Some(name)) => {
                let Some(id) = cluster_ids.get(name.as_str()).copied() else {
                    let known: Vec<&str> =
                        self.config.clusters.keys().map(String::as_str).collect();
                    self.problems.at(
                        at.key("cluster"),
                        format!(
                            "unknown cluster `{name}`; clusters are: {}",
                            known.join(", ")
                        ),
                    );
                    return None;
                };
                Some(DnsTarget {
                    source: format!("cluster {name}"),
                    steering: Steering::default(),
                    panic_threshold: panic_of(id),
                    clusters: vec![id],
                })
            }
            _ => {
                self.problems.at(
                    at,
                    "give exactly one of `route` (its steering and clusters) or `cluster`",
                );
                None
            }
        }
    }

    /// A fully qualified, lower-case host name: labels of letters, digits, `-` and `_`, none
    /// empty, at most 63 bytes each and 253 in all.
    fn dns_name(&mut self, at: YamlPath, text: &str) -> Option<Name> {
        match dns_name_problem(text) {
            Some(problem) => {
                self.problems.at(at, format!("`{text}` {problem}"));
                None
            }
            None => {
                let fqdn = format!(
                    "{}.",
                    text.trim().trim_end_matches('.').to_ascii_lowercase()
                );
                match Name::from_ascii(&fqdn) {
                    Ok(name) => Some(name),
                    Err(e) => {
                        self.problems
                            .at(at, format!("`{text}` is not a DNS name ({e})"));
                        None
                    }
                }
            }
        }
    }
}

/// Why `text` is not a usable DNS name, if it is not.
pub(crate) fn dns_name_problem(text: &str) -> Option<&'static str> {
    let text = text.trim();
    let bare = text.strip_suffix('.').unwrap_or(text);
    if bare.is_empty() {
        return Some("is empty: give a name like example.com");
    }
    if bare.len() > 253 {
        return Some("is longer than 253 bytes");
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots in a row)");
        }
        if label.len() > 63 {
            return Some("has a label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("may only use letters, digits, '-' and '_' in its labels");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("has a label that starts or ends with '-'");
        }
    }
    None
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn secs_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::dns_name_problem;

    #[test]
    fn dns_names_are_checked_label_by_label() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", "abc.".repeat(70));
        let cases: &[(&str, bool)] = &[
            ("example.com", true),
            ("example.com.", true),
            ("ns1.example.com", true),
            ("_dmarc.example.com", true),
            ("localhost", true),
            ("", false),
            (".", false),
            ("a..b", false),
            ("-a.com", false),
            ("a-.com", false),
            ("exa mple.com", false),
            ("*.example.com", false),
            ("ex/ample.com", false),
            (&long_label, false),
            (&long_name, false),
        ];
        for (text, ok) in cases {
            assert_eq!(dns_name_problem(text).is_none(), *ok, "{text}");
        }
    }
}
