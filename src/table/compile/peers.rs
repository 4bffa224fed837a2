//! Compiling `peers` and `peer_check`: each peer's region and URL checked (with file, line and
//! field), the probe policy in sane ranges, and each peer's state carried over from the table
//! in service when its region and URL are unchanged.
//!
//! Used by the compiler's `table`; the result is `RoutingTable::peers`, which `control` probes
//! and `Cluster::health` reads.

use super::*;
use crate::config::{PeerCheckConfig, PeerConfig};
use crate::upstream::peers::{
    Peer, PeerPolicy, PeerState, PeerTarget, PeerView, Peers, ProbeCounters,
};

/// At most one peer per region other than the local one.
pub const MAX_PEERS: usize = MAX_REGIONS - 1;

/// A URL longer than this is a mistake, not an address.
const MAX_URL_LEN: usize = 2048;

/// Probe periods: a floor so a fleet of instances cannot flood a peer, a ceiling past which a
/// dead region would stay in steering for too long to be of use.
pub const PEER_INTERVAL: DurationRange = DurationRange {
    min: Duration::from_millis(100),
    max: Duration::from_secs(10 * 60),
};

/// Probe timeouts (also at most the interval, checked below).
pub const PEER_TIMEOUT: DurationRange = DurationRange {
    min: Duration::from_millis(10),
    max: Duration::from_secs(60),
};

/// Streaks longer than this would keep a verdict for hours at the longest interval.
const MAX_THRESHOLD: u32 = 100;

impl Compiler<'_> {
    /// The peers to probe; `None` when there are none (no task, no work on the request path).
    pub(super) fn peers(&mut self, regions: usize) -> Option<Arc<Peers>> {
        let policy = self.peer_policy(&self.config.peer_check.clone());
        let at = root().key("peers");
        let config = self.config;
        if config.peers.is_empty() {
            return None;
        }
        if config.peers.len() > MAX_PEERS {
            self.problems.at(
                at,
                format!(
                    "{} peers; at most {MAX_PEERS} are supported (one per region other than local_region)",
                    config.peers.len()
                ),
            );
            return None;
        }
        let previous = self.previous.and_then(|t| t.peers.as_deref());
        let mut list: Vec<Arc<Peer>> = Vec::with_capacity(config.peers.len());
        let mut seen_urls: HashSet<&str> = HashSet::new();
        let mut seen_regions: HashSet<RegionId> = HashSet::new();
        for (i, peer) in config.peers.iter().enumerate() {
            let here = at.index(i);
            let region = self.region_ref(here.key("region"), &peer.region);
            if config.local_region.as_deref() == Some(peer.region.as_str()) {
                self.problems.at(
                    here.key("region"),
                    format!(
                        "`{}` is local_region: an instance does not probe its own region (its own endpoints' health decides it)",
                        peer.region
                    ),
                );
            }
            if let Some(id) = region
                && !seen_regions.insert(id)
            {
                self.problems.at(
                    here.key("region"),
                    format!(
                        "`{}` already has a peer; give one URL per region (its load-balanced readiness address)",
                        peer.region
                    ),
                );
            }
            if !seen_urls.insert(peer.url.as_str()) {
                self.problems.at(
                    here.key("url"),
                    format!("`{}` is already another peer's URL", peer.url),
                );
            }
            let kept = previous.and_then(|p| {
                p.list
                    .iter()
                    .find(|old| old.region_name == peer.region && *old.target.url == *peer.url)
            });
            // A peer with TLS files of its own, now or before, has its TLS built on every
            // compile (its files read again, as a cluster's); one with plain settings keeps it.
            let plain_tls = |old: &Peer| {
                old.target.tls.as_ref().is_none_or(|t| {
                    t.spec.sni.is_none() && t.spec.ca_file.is_none() && t.spec.client_cert.is_none()
                })
            };
            let target = match kept.filter(|old| peer.tls.is_none() && plain_tls(old)) {
                Some(old) => Some(PeerTarget {
                    url: old.target.url.clone(),
                    host: old.target.host.clone(),
                    port: old.target.port,
                    authority: old.target.authority.clone(),
                    path: old.target.path.clone(),
                    tls: old.target.tls.clone(),
                }),
                None => self.peer_target(here, peer),
            };
            let (Some(region), Some(target)) = (region, target) else {
                continue;
            };
            let name = peer.region.as_str();
            let count = |result: &str| self.metrics.peer_probes.with_label_values(&[name, result]);
            let [up, status, error, timeout] = ProbeCounters::RESULTS.map(count);
            let state =
                kept.map_or_else(|| Arc::new(PeerState::default()), |old| old.state.clone());
            let up_gauge = self.metrics.peer_up.with_label_values(&[name]);
            up_gauge.set(i64::from(state.is_up()));
            list.push(Arc::new(Peer {
                region,
                region_name: peer.region.clone(),
                target,
                state,
                up_gauge,
                probes: ProbeCounters {
                    up,
                    status,
                    error,
                    timeout,
                },
            }));
        }
        let view = Arc::new(PeerView::new(regions, &list));
        Some(Arc::new(Peers {
            policy: policy?,
            list,
            view,
        }))
    }

    fn peer_policy(&mut self, c: &PeerCheckConfig) -> Option<PeerPolicy> {
        let at = root().key("peer_check");
        let interval = self.duration(at.key("interval"), &c.interval, PEER_INTERVAL);
        let timeout = self.duration(at.key("timeout"), &c.timeout, PEER_TIMEOUT);
        for (key, value) in [
            ("healthy_threshold", c.healthy_threshold),
            ("unhealthy_threshold", c.unhealthy_threshold),
        ] {
            if !(1..=MAX_THRESHOLD).contains(&value) {
                self.problems.at(
                    at.key(key),
                    format!("{value} is outside 1..={MAX_THRESHOLD}"),
                );
            }
        }
        let (interval, timeout) = (interval?, timeout?);
        if timeout > interval {
            self.problems.at(
                at.key("timeout"),
                format!(
                    "`{}` is longer than the interval `{}`: a probe must end before the next is due",
                    c.timeout, c.interval
                ),
            );
            return None;
        }
        Some(PeerPolicy {
            interval,
            timeout,
            healthy_threshold: c.healthy_threshold,
            unhealthy_threshold: c.unhealthy_threshold,
        })
    }

    /// `http(s)://host:port/path`, the port written out, and for https the TLS to speak.
    fn peer_target(&mut self, here: YamlPath, peer: &PeerConfig) -> Option<PeerTarget> {
        let (at, url) = (here.clone().key("url"), peer.url.as_str());
        match parse_peer_url(url) {
            Ok((tls, host, port, authority, path)) => {
                let tls = match (tls, &peer.tls) {
                    (false, None) => None,
                    (false, Some(_)) => {
                        self.problems.at(
                            here.key("tls"),
                            "applies to https URLs only; write the peer's URL with https://",
                        );
                        return None;
                    }
                    (true, Some(t)) => {
                        let at = here.key("tls");
                        let spec = self.upstream_tls_spec(at.clone(), t)?;
                        Some(self.upstream_tls(at, spec)?)
                    }
                    (true, None) => {
                        let spec = crate::tls::UpstreamTlsSpec {
                            sni: None,
                            ca_file: None,
                            client_cert: None,
                        };
                        match crate::tls::UpstreamTls::new(spec) {
                            Ok(t) => Some(Arc::new(t)),
                            Err((_, e)) => {
                                self.problems.at(
                                    at,
                                    format!(
                                        "https needs the system's CA roots (or `tls.ca_file`): {e}"
                                    ),
                                );
                                return None;
                            }
                        }
                    }
                };
                Some(PeerTarget {
                    url: url.into(),
                    host,
                    port,
                    authority,
                    path,
                    tls,
                })
            }
            Err(why) => {
                let shown: String = url.chars().take(80).collect();
                self.problems.at(
                    at,
                    format!("`{shown}` {why}; write e.g. http://10.1.0.5:9901/readyz"),
                );
                None
            }
        }
    }
}

/// (https, host, port, authority, path) of a peer URL, or why it is not one.
pub(super) fn parse_peer_url(
    url: &str,
) -> Result<(bool, String, u16, String, String), &'static str> {
    if url.len() > MAX_URL_LEN {
        return Err("is too long (at most 2048 characters)");
    }
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("must start with http:// or https://"),
    };
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("may not carry a user name or password");
    }
    // What follows the host: `:port`, or nothing.
    let written_port = authority.as_str()[authority.host().len()..].strip_prefix(':');
    let port = match (written_port, authority.port_u16()) {
        (None | Some(""), _) => return Err("must name its port (host:port)"),
        (Some(_), Some(port)) if port != 0 => port,
        (Some(_), _) => return Err("has a port outside 1..=65535"),
    };
    let host = authority.host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let valid_host = bare.parse::<std::net::IpAddr>().is_ok()
        || (!host.starts_with('[') && super::clusters::is_dns_name(bare));
    if !valid_host {
        return Err("has no valid host (an IP address or a DNS name)");
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/".to_owned());
    Ok((
        tls,
        bare.to_owned(),
        port,
        authority.as_str().to_owned(),
        path,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        let ok = |url: &str| parse_peer_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            ok("http://10.1.0.5:9901/readyz"),
            (
                false,
                "10.1.0.5".into(),
                9901,
                "10.1.0.5:9901".into(),
                "/readyz".into()
            )
        );
        assert_eq!(
            ok("https://meridian.eu-west-1.example.com:443"),
            (
                true,
                "meridian.eu-west-1.example.com".into(),
                443,
                "meridian.eu-west-1.example.com:443".into(),
                "/".into()
            )
        );
        assert_eq!(ok("http://[::1]:9901/readyz?full=1").1, "::1");
        assert_eq!(ok("http://[::1]:9901/readyz?full=1").4, "/readyz?full=1");
        let long = format!("http://a:1/{}", "x".repeat(3000));
        for (url, why) in [
            ("10.1.0.5:9901", "must start with"),
            ("ftp://10.1.0.5:21/", "must start with"),
            ("http://10.1.0.5/readyz", "must name its port"),
            ("http://10.1.0.5:0/", "outside 1..=65535"),
            ("http://10.1.0.5:65536/", "outside 1..=65535"),
            ("http://user:pw@10.1.0.5:9901/", "user name"),
            ("http://-bad-:9901/", "no valid host"),
            ("http://a b:1/", "is not a URL"),
            ("", "is not a URL"),
            (long.as_str(), "too long"),
        ] {
            let got = parse_peer_url(url).map(|_| ()).unwrap_err();
            assert!(got.contains(why), "{url}: {got}");
        }
    }
}
