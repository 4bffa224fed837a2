//! End to end: DNS discovery against a real DNS server on loopback (tests/common/dns.rs: in this
//! process, answers with a 1 s TTL that the test changes while the proxy runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::dns::DnsServer;
use common::{Client, start_proxy};
use meridian::demo::RegionBackend;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Three backends of one region on 127.0.0.2-4, all on the same port (a name gives one port).
async fn backends() -> Vec<RegionBackend> {
    let first = RegionBackend::start("eu-west-1", "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let port = first.addr.port();
    let mut all = vec![first];
    for ip in ["127.0.0.3", "127.0.0.4"] {
        all.push(
            RegionBackend::start("eu-west-1", SocketAddr::new(ip.parse().unwrap(), port))
                .await
                .unwrap(),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_dns_answers_and_survive_a_dead_dns_server() {
    let mut dns = DnsServer::start(&[("api.eu.test", &[ip("127.0.0.2"), ip("127.0.0.3")])]).await;
    let backends = backends().await;
    let port = backends[0].addr.port();
    let fallback = RegionBackend::start("us-east-1", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let proxy = start_proxy(&format!(
        "
local_region: eu-west-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
access_log: {{ enabled: false }}
dns: {{ nameservers: [\"127.0.0.1:{}\"], min_ttl: 200ms, max_ttl: 2s }}
{}
clusters:
  api:
    load_balancer: round_robin
    endpoints:
      eu-west-1: [\"api.eu.test:{port}\"]
      us-east-1: [\"{}\"]
      ap-southeast-1: [\"never.resolves.test:80\"]
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
        dns.addr.port(),
        common::REGIONS_YAML,
        fallback.addr
    ))
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let hits = |b: &[RegionBackend]| {
        b.iter()
            .map(|x| x.control.hits.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };

    // Until the first answer arrives the region has no endpoints: traffic goes elsewhere.
    let started = Instant::now();
    loop {
        let answer = client.get("a.test", "/", &[]).await;
        assert_eq!(answer.status, 200);
        if answer.region() == "eu-west-1" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the name never resolved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(client.get("a.test", "/", &[]).await.region(), "eu-west-1");
    }
    let before = hits(&backends);
    assert!(
        before[0] >= 5 && before[1] >= 5 && before[2] == 0,
        "both resolved addresses get traffic: {before:?}"
    );

    // The answer changes to a third address: traffic moves after the TTL, with no failure.
    dns.set("api.eu.test", &[ip("127.0.0.4")]).await;
    let started = Instant::now();
    loop {
        let answer = client.get("a.test", "/", &[]).await;
        assert_eq!(
            (answer.status.as_u16(), answer.region()),
            (200, "eu-west-1"),
            "no failed request during the move"
        );
        if hits(&backends)[2] > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "traffic never moved to the new address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved = hits(&backends);
    for _ in 0..20 {
        assert_eq!(client.get("a.test", "/", &[]).await.status, 200);
    }
    let after = hits(&backends);
    assert_eq!(
        (after[0], after[1]),
        (moved[0], moved[1]),
        "removed addresses get no new requests"
    );
    assert_eq!(after[2], moved[2] + 20);

    // The DNS server stops answering: the last addresses keep serving.
    dns.stop().await;
    let failures_before = proxy
        .table
        .load()
        .metrics
        .dns_lookups
        .with_label_values(&["api", "failed"])
        .get();
    let started = Instant::now();
    while proxy
        .table
        .load()
        .metrics
        .dns_lookups
        .with_label_values(&["api", "failed"])
        .get()
        < failures_before + 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "lookups never failed"
        );
        let answer = client.get("a.test", "/", &[]).await;
        assert_eq!(
            (answer.status.as_u16(), answer.region()),
            (200, "eu-west-1")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        assert_eq!(client.get("a.test", "/", &[]).await.region(), "eu-west-1");
    }
    let last = hits(&backends);
    assert_eq!(
        (last[0], last[1]),
        (after[0], after[1]),
        "still only the last known address"
    );
    assert!(last[2] >= after[2] + 10);

    // A name that never resolved leaves its region empty, not the config broken.
    let table = proxy.table.load();
    let ap = table
        .regions
        .iter()
        .position(|r| r.name == "ap-southeast-1")
        .unwrap();
    assert_eq!(table.clusters[0].regions[ap].members().endpoints.len(), 0);
}
