//! End to end: geo steering, trust of X-Forwarded-For, weighted split, `only`, spill.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Backends, Client, get, start_proxy};

const GEO_CONFIG: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: \"127.0.0.1:0\" }
geo:
  database: \"{DB}\"
  trusted_proxies: [\"127.0.0.1/32\"]
  overrides:
    - { cidr: 127.0.0.2/32, country: US }
    - { cidr: 127.0.0.3/32, country: DE }
    - { cidr: 127.0.0.4/32, country: SG }
    - { cidr: 127.0.0.5/32, region: ap-southeast-1 }
{REGIONS}
clusters:
  api:
    endpoints:
      us-east-1: [\"{US}\"]
      eu-west-1: [\"{EU}\"]
      ap-southeast-1: [\"{AP}\"]
routes:
  - name: api
    hosts: [\"api.example.com\"]
    cluster: api
";

#[tokio::test]
async fn clients_land_in_their_nearest_region() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(GEO_CONFIG)).await;
    let addr = proxy.proxy_addr().unwrap();

    // Via X-Forwarded-For from a trusted loopback peer (demo GeoIP data).
    for (xff, want) in [
        ("192.0.2.10", "us-east-1"),
        ("198.51.100.7", "eu-west-1"),
        ("203.0.113.9", "ap-southeast-1"),
        ("2001:db8:3::7", "eu-west-1"),
        // a trusted hop to the right is skipped
        ("198.51.100.7, 127.0.0.1", "eu-west-1"),
    ] {
        let answer = get(addr, "api.example.com", "/", &[("x-forwarded-for", xff)]).await;
        assert_eq!(answer.status, 200, "{xff}: {answer:?}");
        assert_eq!(answer.region(), want, "{xff}");
        assert_eq!(answer.body, format!("Hello from {want} (GET /)\n"));
    }

    // Via CIDR overrides on the client's own 127.x source address.
    for (from, want) in [
        ("127.0.0.2", "us-east-1"),
        ("127.0.0.3", "eu-west-1"),
        ("127.0.0.4", "ap-southeast-1"),
        ("127.0.0.5", "ap-southeast-1"),
    ] {
        let mut client = Client::connect(addr, Some(from.parse().unwrap())).await;
        let answer = client.get("api.example.com", "/", &[]).await;
        assert_eq!(answer.region(), want, "from {from}");
    }

    // Unknown location (loopback, no override): local_region.
    assert_eq!(
        get(addr, "api.example.com", "/", &[]).await.region(),
        "us-east-1"
    );
    proxy.shutdown(std::time::Duration::from_secs(1)).await;
}

#[tokio::test]
async fn untrusted_peer_cannot_choose_its_location() {
    let backends = Backends::start().await;
    // 127.0.0.1 is not trusted here; 127.0.0.3 is placed in Germany by an override.
    let config = backends.fill(GEO_CONFIG).replace(
        "trusted_proxies: [\"127.0.0.1/32\"]",
        "trusted_proxies: [\"127.0.0.9/32\"]",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();

    let answer = get(
        addr,
        "api.example.com",
        "/echo",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(
        answer.region(),
        "us-east-1",
        "forged XFF from an untrusted peer must be ignored"
    );
    // and the forged entry is not passed on
    assert_eq!(answer.json()["headers"]["x-forwarded-for"], "127.0.0.1");

    let mut client = Client::connect(addr, Some("127.0.0.3".parse().unwrap())).await;
    let answer = client
        .get(
            "api.example.com",
            "/",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(
        answer.region(),
        "eu-west-1",
        "the peer's own location is used"
    );
}

fn weighted_config(eu_endpoints: &str) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{{REGIONS}}
clusters:
  api:
    endpoints:
      us-east-1: [\"{{US}}\"]
      eu-west-1: {eu_endpoints}
      ap-southeast-1: [\"{{AP}}\"]
routes:
  - name: split
    hosts: [\"*\"]
    cluster: api
    steering:
      mode: weighted
      weights: {{ us-east-1: 50, eu-west-1: 30, ap-southeast-1: 20 }}
"
    )
}

async fn split(addr: std::net::SocketAddr, n: usize) -> [f64; 3] {
    let mut client = Client::connect(addr, None).await;
    let mut counts = [0usize; 3];
    for _ in 0..n {
        let answer = client.get("split.example.com", "/", &[]).await;
        assert_eq!(answer.status, 200);
        let i = ["us-east-1", "eu-west-1", "ap-southeast-1"]
            .iter()
            .position(|r| *r == answer.region())
            .unwrap();
        counts[i] += 1;
    }
    counts.map(|c| c as f64 * 100.0 / n as f64)
}

#[tokio::test]
async fn weighted_split_holds_and_renormalises_without_unhealthy_regions() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(&weighted_config("[\"{EU}\"]"))).await;
    let shares = split(proxy.proxy_addr().unwrap(), 2_000).await;
    for (got, want) in shares.iter().zip([50.0, 30.0, 20.0]) {
        assert!(
            (got - want).abs() <= 3.0,
            "shares {shares:?}, want 50/30/20 ±3"
        );
    }
    assert_eq!(backends.hits().iter().sum::<u64>(), 2_000);

    // eu-west-1 has no healthy endpoint (weight 0): 50/20 renormalised to 71.4/28.6.
    let proxy =
        start_proxy(&backends.fill(&weighted_config("[{ address: \"{EU}\", weight: 0 }]"))).await;
    let shares = split(proxy.proxy_addr().unwrap(), 2_000).await;
    assert_eq!(shares[1], 0.0, "unhealthy region dropped: {shares:?}");
    for (got, want) in [shares[0], shares[2]].iter().zip([71.4, 28.6]) {
        assert!(
            (got - want).abs() <= 3.0,
            "shares {shares:?}, want 71.4/0/28.6 ±3"
        );
    }
}

const ONLY_EU: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
geo:
  database: \"{DB}\"
  trusted_proxies: [\"127.0.0.1/32\"]
{REGIONS}
clusters:
  api:
    endpoints:
      us-east-1: [\"{US}\"]
      EU_ENDPOINTS
      ap-southeast-1: [\"{AP}\"]
routes:
  - name: eu-data
    hosts: [\"*\"]
    cluster: api
    steering: { only: [eu-west-1] }
";

#[tokio::test]
async fn only_never_leaves_its_regions() {
    let backends = Backends::start().await;
    let config = backends.fill(&ONLY_EU.replace("EU_ENDPOINTS", "eu-west-1: [\"{EU}\"]"));
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    for xff in ["192.0.2.10", "203.0.113.9", "198.51.100.7", "10.9.9.9"] {
        let answer = get(addr, "x.example.com", "/", &[("x-forwarded-for", xff)]).await;
        assert_eq!(answer.region(), "eu-west-1", "{xff}");
    }
    assert_eq!(backends.hits(), [0, 4, 0]);

    // eu-west-1 without endpoints: a clear 503, and still nothing elsewhere.
    let config = backends.fill(&ONLY_EU.replace("EU_ENDPOINTS", "eu-west-1: []"));
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    for xff in ["192.0.2.10", "203.0.113.9"] {
        let answer = get(addr, "x.example.com", "/", &[("x-forwarded-for", xff)]).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.headers["x-meridian-error"], "no-healthy-endpoint");
        assert!(
            answer.body.contains("eu-data") && answer.body.contains("[eu-west-1]"),
            "{}",
            answer.body
        );
    }
    assert_eq!(backends.hits(), [0, 4, 0]);
}

#[tokio::test]
async fn weight_zero_is_never_picked_and_a_drained_cluster_panics() {
    let backends = Backends::start().await;
    // The weight-0 endpoint is a closed port: picking it would answer 502.
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
geo: { database: \"{DB}\", trusted_proxies: [\"127.0.0.1/32\"] }
{REGIONS}
clusters:
  api:
    endpoints:
      us-east-1: [\"{US}\"]
      eu-west-1: [{ address: \"{EU}\", weight: 3 }, { address: \"127.0.0.1:9\", weight: 0 }]
      ap-southeast-1: [\"{AP}\"]
  drained:
    endpoints:
      eu-west-1: [{ address: \"{EU}\", weight: 0 }]
routes:
  - name: drained
    hosts: [\"drained.example.com\"]
    cluster: drained
  - name: api
    hosts: [\"*\"]
    cluster: api
",
    );
    let proxy = start_proxy(&config).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..200 {
        let answer = client
            .get(
                "api.example.com",
                "/",
                &[("x-forwarded-for", "198.51.100.7")],
            )
            .await;
        assert_eq!(
            (answer.status.as_u16(), answer.region()),
            (200, "eu-west-1")
        );
    }
    // Panic mode: the only endpoint has weight 0, so nothing is healthy; the first region
    // with endpoints still serves rather than failing everything.
    let answer = client.get("drained.example.com", "/", &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );
}

#[tokio::test]
async fn traffic_spills_by_healthy_share_times_overprovisioning() {
    let backends = Backends::start().await;
    let eu2 = meridian::demo::RegionBackend::start("eu-west-1", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = backends
        .fill(
            "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
geo: { database: \"{DB}\", trusted_proxies: [\"127.0.0.1/32\"] }
{REGIONS}
clusters:
  api:
    endpoints:
      us-east-1: [\"{US}\"]
      eu-west-1: [\"{EU}\", \"EU2\"]
      ap-southeast-1: [\"{AP}\"]
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
    steering: { overprovisioning: 1.4 }
",
        )
        .replace("EU2", &eu2.addr.to_string());
    let proxy = start_proxy(&config).await;
    // Health is endpoint state the health checker will own; set it directly here.
    let set_health = |index: usize, up: bool| {
        let table = proxy.table.load();
        let eu = table
            .regions
            .iter()
            .position(|r| r.name == "eu-west-1")
            .unwrap();
        table.clusters[0].regions[eu].members().endpoints[index]
            .state
            .healthy
            .store(up, std::sync::atomic::Ordering::SeqCst);
    };
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut from_frankfurt = async |n: usize| {
        let mut eu = 0;
        for _ in 0..n {
            let answer = client
                .get(
                    "api.example.com",
                    "/",
                    &[("x-forwarded-for", "198.51.100.7")],
                )
                .await;
            match answer.region() {
                "eu-west-1" => eu += 1,
                "us-east-1" => {}
                other => panic!("spilled past the next nearest region to {other}"),
            }
        }
        eu as f64 * 100.0 / n as f64
    };

    // Half of eu-west-1 healthy: 50% × 1.4 = 70% stays, 30% spills to us-east-1.
    set_health(1, false);
    let eu_share = from_frankfurt(1_000).await;
    assert!(
        (eu_share - 70.0).abs() <= 5.0,
        "eu-west-1 took {eu_share}%, want 70 ±5"
    );
    assert_eq!(eu2.hits(), 0, "unhealthy endpoint used");

    // All of eu-west-1 down: everything to the next nearest.
    set_health(0, false);
    assert_eq!(from_frankfurt(100).await, 0.0);
}
