//! End to end: splits across clusters (`routes[].clusters`) hold exactly, leave out a cluster
//! whose endpoints are all down, and fall back to the panic rules when every cluster is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Client, REGIONS_YAML, start_proxy};
use meridian::config;
use meridian::demo::RegionBackend;
use meridian::server::RunningServer;
use meridian::table;

fn any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A 95/5 canary: `primary` and `canary` clusters, each one endpoint in us-east-1, checked
/// every 30ms so a dead endpoint is known after one failed check.
fn canary_config(primary: SocketAddr, canary: SocketAddr) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  primary:
    endpoints: {{ us-east-1: [\"{primary}\"] }}
    health_check: {{ path: /healthz, interval: 30ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
  canary:
    endpoints: {{ us-east-1: [\"{canary}\"] }}
    health_check: {{ path: /healthz, interval: 30ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: api
    hosts: [\"*\"]
    clusters:
      - {{ name: primary, weight: 95 }}
      - {{ name: canary, weight: 5 }}
"
    )
}

/// Whether the first endpoint of `cluster` is marked healthy by its checks.
fn healthy(proxy: &RunningServer, cluster: &str) -> bool {
    let table = proxy.table.load();
    let c = table.clusters.iter().find(|c| c.name == cluster).unwrap();
    let region = table
        .regions
        .iter()
        .position(|r| r.name == "us-east-1")
        .unwrap();
    c.regions[region].members().endpoints[0]
        .state
        .healthy
        .load(Ordering::SeqCst)
}

/// Wait (bounded) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Send `n` requests; the statuses seen, with counts.
async fn send(proxy: &RunningServer, n: usize) -> Vec<(u16, usize)> {
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut statuses: Vec<(u16, usize)> = Vec::new();
    for _ in 0..n {
        let status = client
            .get("api.example.com", "/", &[])
            .await
            .status
            .as_u16();
        match statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += 1,
            None => statuses.push((status, 1)),
        }
    }
    statuses
}

#[tokio::test]
async fn a_live_canary_gets_exactly_its_share() {
    let primary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let canary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let proxy = start_proxy(&canary_config(primary.addr, canary.addr)).await;
    eventually("both clusters checked healthy", || {
        primary.control.health_hits.load(Ordering::SeqCst) > 0
            && canary.control.health_hits.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(send(&proxy, 400).await, vec![(200, 400)]);
    assert_eq!((primary.hits(), canary.hits()), (380, 20));
}

#[tokio::test]
async fn a_dead_canary_drops_out_and_the_primary_serves_everything() {
    let primary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let canary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let proxy = start_proxy(&canary_config(primary.addr, canary.addr)).await;
    canary.stop().await;
    eventually("the canary checked down", || !healthy(&proxy, "canary")).await;
    assert!(healthy(&proxy, "primary"));

    assert_eq!(send(&proxy, 400).await, vec![(200, 400)], "no failures");
    assert_eq!(primary.hits(), 400);
}

#[tokio::test]
async fn with_every_cluster_down_the_panic_rules_apply() {
    let primary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let canary = RegionBackend::start("us-east-1", any()).await.unwrap();
    let proxy = start_proxy(&canary_config(primary.addr, canary.addr)).await;
    // Both answer requests but fail their checks: panic mode still sends to them.
    primary.control.health_status.store(503, Ordering::SeqCst);
    canary.control.health_status.store(503, Ordering::SeqCst);
    eventually("both clusters checked down", || {
        !healthy(&proxy, "primary") && !healthy(&proxy, "canary")
    })
    .await;
    assert_eq!(send(&proxy, 400).await, vec![(200, 400)]);
    // The configured split, as the chosen cluster's panic rules then serve it.
    assert_eq!((primary.hits(), canary.hits()), (380, 20));
}

#[test]
fn a_split_across_too_many_clusters_is_refused_with_its_line() {
    let mut yaml = format!(
        "local_region: us-east-1\nlisteners: [{{ name: http, bind: \"127.0.0.1:0\" }}]\n{REGIONS_YAML}clusters:\n"
    );
    for i in 0..65 {
        yaml.push_str(&format!(
            "  c{i}: {{ endpoints: {{ us-east-1: [\"127.0.0.1:{}\"] }} }}\n",
            1000 + i
        ));
    }
    yaml.push_str("routes:\n  - name: wide\n    hosts: [\"*\"]\n    clusters:\n");
    for i in 0..65 {
        yaml.push_str(&format!("      - {{ name: c{i}, weight: 1 }}\n"));
    }
    let loaded = config::load_str(&yaml, Path::new("wide.yaml")).unwrap();
    let err = table::compile(&loaded, table::CompileContext::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wide.yaml") && err.contains("at most 64 clusters, not 65"),
        "{err}"
    );
}
