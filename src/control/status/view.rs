//! The status page's JSON: rates, shares and error rates over the recent window, the chart's
//! five minutes per region, where clients land, and each route's mode, live split and region
//! order for a sample client. Built by the admin API from the sampler's ring and the table in
//! service.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::window::{Counts, Ring, chart_points, rate, share, sum_series};
use crate::config::SteeringMode;
use crate::geo::{CountryCode, GeoPoint, Location};
use crate::steer;
use crate::table::RoutingTable;
use crate::table::routes::{Route, RouteTarget};

/// The window of the figures shown as "now": rates, shares, error rates, the live split.
pub const RECENT_SECONDS: u64 = 30;
/// The chart's and "where clients land"'s window.
pub const LONG_SECONDS: u64 = 300;
/// Seconds per chart point.
pub const CHART_STEP: u64 = 5;
/// Countries listed by "where clients land".
pub const TOP_COUNTRIES: usize = 10;
/// The longest sample client accepted (an IPv6 address with a zone fits).
const MAX_CLIENT_LEN: usize = 64;

/// Rates rounded for people (and so the JSON does not carry float noise).
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rates(counts: Counts, seconds: u64) -> (f64, f64) {
    (
        round(rate(counts.requests, seconds)),
        round(rate(counts.errors, seconds)),
    )
}

/// `GET /status`: regions, clusters and endpoints over the recent window, routes with their
/// live split, and the chart.
pub fn status(table: &RoutingTable, ring: &Ring) -> Value {
    let now = ring.now().unwrap_or(0);
    let covered = ring.covered(now, RECENT_SECONDS);
    let by_region = sum_series(ring.within(now, RECENT_SECONDS), |k| {
        (!k.region.is_empty()).then(|| k.region.clone())
    });
    let total: u64 = by_region.values().map(|c| c.requests).sum();
    let regions: Vec<Value> = table
        .regions
        .iter()
        .map(|r| {
            let c = by_region.get(&r.name).copied().unwrap_or_default();
            let (rps, eps) = rates(c, covered);
            json!({
                "region": r.name,
                "requests": c.requests,
                "requests_per_s": rps,
                "errors_per_s": eps,
                "error_rate": c.error_rate(),
                "share": share(c.requests, total),
            })
        })
        .collect();
    let by_cluster_region = sum_series(ring.within(now, RECENT_SECONDS), |k| {
        (!k.cluster.is_empty()).then(|| (k.cluster.clone(), k.region.clone()))
    });
    let mut by_endpoint: BTreeMap<(&str, &str), Counts> = BTreeMap::new();
    for bucket in ring.within(now, RECENT_SECONDS) {
        for (k, c) in &bucket.endpoints {
            by_endpoint
                .entry((k.cluster.as_str(), k.address.as_str()))
                .or_default()
                .add(*c);
        }
    }
    let clusters: Vec<Value> = table
        .clusters
        .iter()
        .map(|cluster| {
            let cluster_total: u64 = by_cluster_region
                .iter()
                .filter(|((c, _), _)| *c == cluster.name)
                .map(|(_, counts)| counts.requests)
                .sum();
            let mut regions = Vec::new();
            let mut endpoints = Vec::new();
            for (id, set) in cluster.regions.iter().enumerate() {
                if set.sources.is_empty() {
                    continue;
                }
                let name = table.region_name(id as steer::RegionId);
                let c = by_cluster_region
                    .get(&(cluster.name.clone(), name.to_owned()))
                    .copied()
                    .unwrap_or_default();
                let (rps, eps) = rates(c, covered);
                regions.push(json!({
                    "region": name,
                    "requests": c.requests,
                    "requests_per_s": rps,
                    "errors_per_s": eps,
                    "error_rate": c.error_rate(),
                    "share": share(c.requests, cluster_total),
                }));
                for e in set.members().endpoints.iter() {
                    let address = e.address.to_string();
                    let c = by_endpoint
                        .get(&(cluster.name.as_str(), address.as_str()))
                        .copied()
                        .unwrap_or_default();
                    let (tps, eps) = rates(c, covered);
                    endpoints.push(json!({
                        "address": address,
                        "region": name,
                        "tries": c.requests,
                        "errors": c.errors,
                        "tries_per_s": tps,
                        "errors_per_s": eps,
                        "error_rate": c.error_rate(),
                    }));
                }
            }
            json!({
                "name": cluster.name,
                "requests_per_s": round(rate(cluster_total, covered)),
                "regions": regions,
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({
        "window_seconds": RECENT_SECONDS,
        "covered_seconds": covered,
        "requests_per_s": round(rate(total, covered)),
        "regions": regions,
        "clusters": clusters,
        "routes": route_list(table, ring, None),
        "chart": chart(table, ring, now),
    })
}

fn chart(table: &RoutingTable, ring: &Ring, now: u64) -> Value {
    let points = chart_points(ring, now, LONG_SECONDS, CHART_STEP);
    let steps = points.len() as i64;
    let points: Vec<Value> = points
        .iter()
        .enumerate()
        .map(|(i, regions)| {
            let regions: serde_json::Map<String, Value> = regions
                .iter()
                .map(|(name, c)| {
                    let (rps, eps) = rates(*c, CHART_STEP);
                    (
                        name.clone(),
                        json!({ "requests_per_s": rps, "errors_per_s": eps }),
                    )
                })
                .collect();
            // Seconds before now at the end of the step.
            let t = (i as i64 + 1 - steps) * CHART_STEP as i64;
            json!({ "t": t, "regions": regions })
        })
        .collect();
    json!({
        "span_seconds": LONG_SECONDS,
        "step_seconds": CHART_STEP,
        "measured_seconds": ring.covered(now, LONG_SECONDS),
        "regions": table.regions.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "points": points,
    })
}

/// `GET /status/clients`: the top client countries of the last five minutes, and the regions
/// that served them.
pub fn clients(ring: &Ring) -> Value {
    let now = ring.now().unwrap_or(0);
    let covered = ring.covered(now, LONG_SECONDS);
    let mut by_country: BTreeMap<Option<&str>, BTreeMap<&str, u64>> = BTreeMap::new();
    for bucket in ring.within(now, LONG_SECONDS) {
        for (country, region, n) in &bucket.landing {
            *by_country
                .entry(country.as_deref())
                .or_default()
                .entry(region.as_str())
                .or_default() += n;
        }
    }
    let total: u64 = by_country.values().flat_map(|r| r.values()).sum();
    let mut countries: Vec<(Option<&str>, u64, BTreeMap<&str, u64>)> = by_country
        .into_iter()
        .map(|(c, regions)| (c, regions.values().sum(), regions))
        .collect();
    countries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<Value> = countries
        .iter()
        .take(TOP_COUNTRIES)
        .map(|(country, requests, regions)| {
            let mut regions: Vec<(&str, u64)> = regions.iter().map(|(r, n)| (*r, *n)).collect();
            regions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            json!({
                "country": country,
                "requests": requests,
                "requests_per_s": round(rate(*requests, covered)),
                "share": share(*requests, total),
                "regions": regions.iter().map(|(r, n)| json!({
                    "region": r,
                    "requests": n,
                    "share": share(*n, *requests),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "window_seconds": LONG_SECONDS,
        "covered_seconds": covered,
        "requests": total,
        "requests_per_s": round(rate(total, covered)),
        "countries_seen": countries.len(),
        "countries": listed,
    })
}

/// A client to show region orders for: an address (located as a request from it would be) or
/// a country (placed at its continent's centre, as a country override is).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleClient {
    Ip(IpAddr),
    Country(CountryCode),
}

/// Parse the page's sample-client box; the error says what is accepted.
pub fn parse_sample_client(raw: &str) -> Result<SampleClient, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("give client=<IP address or two-letter country code>, e.g. client=DE".into());
    }
    if raw.len() > MAX_CLIENT_LEN {
        return Err(format!(
            "client is {} bytes long; an IP address or a two-letter country code is at most {MAX_CLIENT_LEN}",
            raw.len()
        ));
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(SampleClient::Ip(ip));
    }
    match CountryCode::parse(raw) {
        Some(country) => Ok(SampleClient::Country(country)),
        None => {
            // Control characters are shown escaped; the rest as typed.
            let shown: String = raw
                .chars()
                .flat_map(|c| {
                    let escaped: Vec<char> = match c.is_control() {
                        true => c.escape_debug().collect(),
                        false => vec![c],
                    };
                    escaped
                })
                .collect();
            Err(format!(
                "`{shown}` is neither an IP address nor a two-letter country code"
            ))
        }
    }
}

fn locate(table: &RoutingTable, client: SampleClient) -> Location {
    match client {
        SampleClient::Ip(ip) => table.geo.locate(ip),
        SampleClient::Country(country) => {
            let continent = country.continent();
            Location {
                country: Some(country),
                continent,
                coords: continent.map(|c| GeoPoint::new(c.centre())),
                ..Location::default()
            }
        }
    }
}

fn mode_name(mode: SteeringMode) -> &'static str {
    match mode {
        SteeringMode::Nearest => "nearest",
        SteeringMode::Weighted => "weighted",
        SteeringMode::Failover => "failover",
    }
}

/// Every route: its mode and target, its live split over the recent window, and, for a sample
/// client, the region order it would get (with each region's share of the load per cluster).
pub fn routes(table: &RoutingTable, ring: &Ring, client: Option<SampleClient>) -> Value {
    let location = client.map(|c| locate(table, c));
    let client = client.zip(location).map(|(c, l)| {
        json!({
            "ip": match c { SampleClient::Ip(ip) => Some(ip.to_string()), SampleClient::Country(_) => None },
            "country": l.country.map(|c| c.to_string()),
            "continent": l.continent.map(|c| c.to_string()),
            "location_source": match c { SampleClient::Ip(_) => l.source.as_str(), SampleClient::Country(_) => "country" },
        })
    });
    json!({ "client": client, "routes": route_list(table, ring, location) })
}

fn route_list(table: &RoutingTable, ring: &Ring, location: Option<Location>) -> Vec<Value> {
    let now = ring.now().unwrap_or(0);
    let split = sum_series(ring.within(now, RECENT_SECONDS), |k| {
        (!k.route.is_empty()).then(|| (k.route.clone(), k.cluster.clone(), k.region.clone()))
    });
    table
        .routes
        .routes
        .iter()
        .map(|route| {
            let mine: Vec<(&(String, String, String), &Counts)> = split
                .iter()
                .filter(|((r, _, _), _)| *r == route.name)
                .collect();
            let total: u64 = mine.iter().map(|(_, c)| c.requests).sum();
            json!({
                "name": route.name,
                "mode": mode_name(route.steering.mode),
                "target": target(table, route),
                "weights": route.steering.weights.iter().map(|(r, w)| json!({
                    "region": table.region_name(*r),
                    "weight": w,
                })).collect::<Vec<_>>(),
                "requests": total,
                "split": mine.iter().map(|((_, cluster, region), c)| json!({
                    "cluster": cluster,
                    "region": region,
                    "requests": c.requests,
                    "share": share(c.requests, total),
                })).collect::<Vec<_>>(),
                "order": location.map(|l| order(table, route, &l)),
            })
        })
        .collect()
}

fn target(table: &RoutingTable, route: &Route) -> Value {
    let name = |id: usize| {
        table
            .clusters
            .get(id)
            .map(|c| c.name.as_str())
            .unwrap_or("?")
    };
    match &route.target {
        RouteTarget::Edge => json!({ "kind": "edge" }),
        RouteTarget::Cluster(id) => json!({ "kind": "cluster", "cluster": name(*id) }),
        RouteTarget::Weighted { clusters, total } => json!({
            "kind": "split",
            "clusters": clusters.iter().map(|(id, w)| json!({
                "cluster": name(*id),
                "weight": w,
                "share": share(u64::from(*w), *total),
            })).collect::<Vec<_>>(),
        }),
    }
}

/// The region order for a located client, and per cluster each region's expected load.
fn order(table: &RoutingTable, route: &Route, location: &Location) -> Value {
    let order = steer::region_order(
        &route.steering,
        &table.region_coords,
        &table.local_order,
        location,
    );
    let ids: Vec<usize> = match &route.target {
        RouteTarget::Edge => Vec::new(),
        RouteTarget::Cluster(id) => vec![*id],
        RouteTarget::Weighted { clusters, .. } => clusters.iter().map(|(id, _)| *id).collect(),
    };
    let clusters: Vec<Value> = ids
        .iter()
        .filter_map(|id| table.clusters.get(*id))
        .map(|cluster| {
            let loads = steer::expected_loads(
                &route.steering,
                &order,
                |r| cluster.health(r),
                cluster.panic_threshold,
            );
            json!({
                "cluster": cluster.name,
                "regions": order.as_slice().iter().enumerate().map(|(i, r)| json!({
                    "region": table.region_name(*r),
                    "healthy_share": cluster.health(*r).share(),
                    "load": round(loads.get(i).copied().unwrap_or(0.0)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "regions": order.as_slice().iter().map(|r| table.region_name(*r)).collect::<Vec<_>>(),
        "clusters": clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::window::{Bucket, SeriesKey};

    #[test]
    fn sample_clients() {
        let ok = [
            (
                "198.51.100.7",
                SampleClient::Ip("198.51.100.7".parse().unwrap()),
            ),
            (
                " 2001:db8::1 ",
                SampleClient::Ip("2001:db8::1".parse().unwrap()),
            ),
            (
                "de",
                SampleClient::Country(CountryCode::parse("DE").unwrap()),
            ),
        ];
        for (raw, expected) in ok {
            assert_eq!(parse_sample_client(raw), Ok(expected), "{raw}");
        }
        let long = "1".repeat(10_000);
        let bad = [
            ("", "give client="),
            ("   ", "give client="),
            ("D", "neither"),
            ("DEU", "neither"),
            ("1.2.3.4.5", "neither"),
            ("<script>", "neither"),
            ("D\u{0}", "`D\\0` is neither"),
            ("DE'", "`DE'` is neither"),
            (long.as_str(), "10000 bytes long"),
        ];
        for (raw, message) in bad {
            let err = parse_sample_client(raw).unwrap_err();
            assert!(err.contains(message), "{raw:?}: {err}");
        }
    }

    fn series(
        route: &str,
        cluster: &str,
        region: &str,
        requests: u64,
        errors: u64,
    ) -> (SeriesKey, Counts) {
        (
            SeriesKey {
                route: route.into(),
                cluster: cluster.into(),
                region: region.into(),
            },
            Counts { requests, errors },
        )
    }

    #[test]
    fn idle_status_has_zero_rates_and_no_shares() {
        let table = super::super::test_table();
        let mut ring = Ring::new(LONG_SECONDS);
        for s in 0..5 {
            ring.push(Bucket {
                second: s,
                ..Bucket::default()
            });
        }
        let view = status(&table, &ring);
        for region in view["regions"].as_array().unwrap() {
            assert_eq!(region["requests_per_s"], 0.0, "{region}");
            assert!(region["share"].is_null(), "{region}");
        }
        let api = &view["clusters"][0];
        assert_eq!(api["requests_per_s"], 0.0);
        for region in api["regions"].as_array().unwrap() {
            assert!(
                region["share"].is_null() && region["error_rate"].is_null(),
                "{region}"
            );
        }
        assert_eq!(view["chart"]["points"].as_array().unwrap().len(), 60);
        assert_eq!(clients(&ring)["countries"], json!([]));
    }

    #[test]
    fn status_rates_shares_and_split_over_the_recent_window() {
        let table = super::super::test_table();
        let mut ring = Ring::new(LONG_SECONDS);
        // long ago: us-east-1 only; recently: 3/s eu-west-1 (1 error), 1/s us-east-1
        for s in 0..100 {
            ring.push(Bucket {
                second: s,
                series: vec![series("api", "api", "us-east-1", 10, 0)],
                ..Bucket::default()
            });
        }
        for s in 100..130 {
            ring.push(Bucket {
                second: s,
                series: vec![
                    series("api", "api", "eu-west-1", 3, u64::from(s % 3 == 0)),
                    series("api", "api", "us-east-1", 1, 0),
                ],
                landing: vec![
                    (Some("DE".into()), "eu-west-1".into(), 3),
                    (Some("US".into()), "us-east-1".into(), 1),
                ],
                ..Bucket::default()
            });
        }
        let view = status(&table, &ring);
        let region = |name: &str| {
            view["regions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["region"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(region("eu-west-1")["requests_per_s"], 3.0);
        assert_eq!(region("eu-west-1")["errors_per_s"], round(10.0 / 30.0));
        assert_eq!(region("eu-west-1")["share"], 0.75);
        assert_eq!(region("us-east-1")["share"], 0.25);
        assert_eq!(region("ap-southeast-1")["requests_per_s"], 0.0);
        let route = &view["routes"][0];
        assert_eq!(route["mode"], "nearest");
        assert_eq!(route["target"]["kind"], "cluster");
        assert_eq!(route["requests"], 120);
        assert_eq!(route["split"].as_array().unwrap().len(), 2);
        let landing = clients(&ring);
        assert_eq!(landing["countries"][0]["country"], "DE");
        assert_eq!(landing["countries"][0]["regions"][0]["region"], "eu-west-1");
        assert_eq!(landing["countries"][0]["regions"][0]["share"], 1.0);
        assert_eq!(landing["countries"][0]["share"], 0.75);
        assert_eq!(landing["countries"][1]["country"], "US");
    }

    #[test]
    fn a_sample_country_gets_the_nearest_regions_first() {
        let table = super::super::test_table();
        let ring = Ring::new(LONG_SECONDS);
        let de = parse_sample_client("DE").unwrap();
        let view = routes(&table, &ring, Some(de));
        assert_eq!(view["client"]["country"], "DE");
        assert_eq!(view["client"]["continent"], "EU");
        assert_eq!(view["routes"][0]["order"]["regions"][0], "eu-west-1");
        let view = routes(&table, &ring, None);
        assert!(view["routes"][0]["order"].is_null());
    }
}
