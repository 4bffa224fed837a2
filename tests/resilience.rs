//! End to end: region failover, connect timeouts, ejection, health checks, spill by health,
//! retry budget, non-idempotent retries, circuit breakers and the region loop guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backends, Client, get, raw_exchange, start_proxy};
use http::Method;
use meridian::demo::RegionBackend;
use meridian::retry::PerTryTimeout;
use meridian::server::RunningServer;
use meridian::upstream::ClusterStats;

const ANY: &str = "127.0.0.1:0";

/// Wait (bounded) until `condition` holds, polling every few milliseconds.
async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn stats(proxy: &RunningServer, cluster: usize) -> Arc<ClusterStats> {
    proxy.table.load().clusters[cluster].stats.clone()
}

fn endpoint_flag(proxy: &RunningServer, region: &str, index: usize, flag: &str) -> bool {
    let table = proxy.table.load();
    let r = table.regions.iter().position(|x| x.name == region).unwrap();
    let state = &table.clusters[0].regions[r].members().endpoints[index].state;
    match flag {
        "ejected" => state.ejected.load(Ordering::SeqCst),
        "healthy" => state.healthy.load(Ordering::SeqCst),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_region_moves_traffic_with_no_client_errors_and_it_comes_back() {
    let backends = Backends::start().await;
    let eu2 = RegionBackend::start("eu-west-1", ANY.parse().unwrap())
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
    connect_timeout: 200ms
    endpoints:
      us-east-1: [\"{US}\"]
      eu-west-1: [\"{EU}\", \"EU2\"]
      ap-southeast-1: [\"{AP}\"]
    outlier_detection: { consecutive_5xx: 3, max_ejection_percent: 100, base_ejection_time: 30s }
    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
    retries: { attempts: 2, retry_on: [connect-failure, reset, gateway-error] }
",
        )
        .replace("EU2", &eu2.addr.to_string());
    let proxy = start_proxy(&config).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut served = Vec::new();
    let mut errors = Vec::new();
    let send = async |client: &mut Client,
                      n: usize,
                      served: &mut Vec<String>,
                      errors: &mut Vec<String>| {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for _ in 0..n {
            tick.tick().await;
            let answer = client
                .get(
                    "api.example.com",
                    "/",
                    &[("x-forwarded-for", "198.51.100.7")],
                )
                .await;
            if answer.status != 200 {
                errors.push(format!("{} {}", answer.status, answer.body));
            }
            served.push(answer.region().to_owned());
        }
    };
    send(&mut client, 100, &mut served, &mut errors).await;
    assert!(
        served.iter().all(|r| r == "eu-west-1"),
        "Frankfurt starts on eu-west-1"
    );

    // Kill eu-west-1 entirely.
    let (eu_addr, eu_control) = (backends.eu.addr, backends.eu.control.clone());
    let (eu2_addr, eu2_control) = (eu2.addr, eu2.control.clone());
    let Backends { us, eu, ap } = backends;
    eu.stop().await;
    eu2.stop().await;
    let killed_at = served.len();
    send(&mut client, 400, &mut served, &mut errors).await;
    assert!(
        errors.is_empty(),
        "client errors during failover: {errors:?}"
    );
    let after_kill = &served[killed_at..];
    assert!(after_kill.iter().all(|r| r != "eu-west-1"));
    assert!(
        after_kill[after_kill.len() - 100..]
            .iter()
            .all(|r| r == "us-east-1"),
        "next nearest takes over"
    );
    eventually("eu-west-1 marked down", Duration::from_secs(5), || {
        !endpoint_flag(&proxy, "eu-west-1", 0, "healthy")
            || endpoint_flag(&proxy, "eu-west-1", 0, "ejected")
    })
    .await;

    // Bring it back on the same addresses: health checks return it to service.
    let eu = RegionBackend::start_with("eu-west-1", eu_addr, eu_control)
        .await
        .unwrap();
    let eu2 = RegionBackend::start_with("eu-west-1", eu2_addr, eu2_control)
        .await
        .unwrap();
    eventually("eu-west-1 back in service", Duration::from_secs(5), || {
        (0..2).all(|i| {
            endpoint_flag(&proxy, "eu-west-1", i, "healthy")
                && !endpoint_flag(&proxy, "eu-west-1", i, "ejected")
        })
    })
    .await;
    let back_at = served.len();
    send(&mut client, 100, &mut served, &mut errors).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        served[back_at..].iter().all(|r| r == "eu-west-1"),
        "traffic returns: {:?}",
        &served[back_at..]
    );
    for b in [us, eu, ap, eu2] {
        b.stop().await;
    }
}

/// A listener whose accept queue is full: new connections get no answer at all.
async fn blackhole() -> (SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(ANY.parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the queue until a connect attempt hangs: that is the readiness signal.
    loop {
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
    std::mem::forget(listener);
    (addr, held)
}

#[tokio::test]
async fn blackholed_endpoint_trips_connect_timeout_and_the_retry_lands_elsewhere() {
    let backends = Backends::start().await;
    let (hole, _held) = blackhole().await;
    let config = backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{{REGIONS}}
clusters:
  api:
    connect_timeout: 300ms
    endpoints: {{ us-east-1: [\"{hole}\"], eu-west-1: [\"{{EU}}\"] }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, timeout: 5s }}
"
    ));
    let proxy = start_proxy(&config).await;
    let started = Instant::now();
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the route timeout must not be what fired: {took:?}"
    );
    let s = stats(&proxy, 0);
    assert_eq!((s.attempts(), ClusterStats::get(&s.retries)), (2, 1));
}

#[tokio::test]
async fn failing_endpoint_is_ejected_for_growing_times_then_returns() {
    let backends = Backends::start().await;
    let bad = RegionBackend::start("us-east-1", ANY.parse().unwrap())
        .await
        .unwrap();
    bad.control.status.store(503, Ordering::SeqCst);
    let config = backends
        .fill(
            "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api:
    load_balancer: round_robin
    endpoints: { us-east-1: [\"BAD\", \"{US}\"] }
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 300ms, max_ejection_percent: 50, interval: 10s }
routes:
  - { name: api, hosts: [\"*\"], cluster: api, retries: { attempts: 0 } }
",
        )
        .replace("BAD", &bad.addr.to_string());
    let proxy = start_proxy(&config).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;

    // Round robin alternates; after 3 consecutive 503s the bad endpoint is ejected.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.get("a.test", "/", &[]).await.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    eventually("ejection", Duration::from_secs(2), || {
        endpoint_flag(&proxy, "us-east-1", 0, "ejected")
    })
    .await;
    let ejected_at = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            client.get("a.test", "/", &[]).await.status,
            200,
            "ejected endpoint used"
        );
    }
    assert_eq!(bad.hits(), 3);

    // It comes back after base_ejection_time (300ms)...
    eventually("first ejection to end", Duration::from_secs(3), || {
        !endpoint_flag(&proxy, "us-east-1", 0, "ejected")
    })
    .await;
    let first = ejected_at.elapsed();
    assert!(first >= Duration::from_millis(290), "{first:?}");
    // ...still fails, and the second ejection lasts twice as long.
    eventually("second ejection", Duration::from_secs(3), || {
        send_in_background(&proxy);
        endpoint_flag(&proxy, "us-east-1", 0, "ejected")
    })
    .await;
    let second_at = Instant::now();
    let until = {
        let table = proxy.table.load();
        table.clusters[0].regions[table
            .regions
            .iter()
            .position(|r| r.name == "us-east-1")
            .unwrap()]
        .members()
        .endpoints[0]
            .state
            .ejected_until()
            .unwrap()
    };
    let length = until.into_std().saturating_duration_since(second_at);
    assert!(
        length > Duration::from_millis(450) && length <= Duration::from_millis(600),
        "{length:?}"
    );
    let s = stats(&proxy, 0);
    assert_eq!(ClusterStats::get(&s.ejections), 2);
    // max_ejection_percent 50 of 2: the good endpoint can never be ejected as well.
    assert!(!endpoint_flag(&proxy, "us-east-1", 1, "ejected"));
}

/// Send a request without waiting for it (drives traffic while polling for a condition).
fn send_in_background(proxy: &RunningServer) {
    let addr = proxy.proxy_addr().unwrap();
    tokio::spawn(async move {
        let _ = get(addr, "a.test", "/", &[]).await;
    });
}

#[tokio::test]
async fn health_checks_follow_thresholds_and_a_hanging_check_delays_no_one() {
    let backends = Backends::start().await;
    // Accepts connections, never answers: every check of it times out.
    let silent = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let config = backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{{REGIONS}}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{{US}}\", \"{silent_addr}\"] }}
    health_check: {{ path: /healthz, interval: 40ms, timeout: 400ms, healthy_threshold: 2, unhealthy_threshold: 3 }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
"
    ));
    let proxy = start_proxy(&config).await;
    let control = backends.us.control.clone();
    // While the silent endpoint's checks hang for 400ms each, the good one is checked every 40ms.
    eventually(
        "10 checks of the good endpoint",
        Duration::from_secs(2),
        || control.health_hits.load(Ordering::SeqCst) >= 10,
    )
    .await;
    eventually("silent endpoint unhealthy", Duration::from_secs(5), || {
        !endpoint_flag(&proxy, "us-east-1", 1, "healthy")
    })
    .await;

    control.health_status.store(503, Ordering::SeqCst);
    let failing_from = control.health_hits.load(Ordering::SeqCst);
    eventually("unhealthy", Duration::from_secs(2), || {
        !endpoint_flag(&proxy, "us-east-1", 0, "healthy")
    })
    .await;
    let checks = control.health_hits.load(Ordering::SeqCst) - failing_from;
    assert!(
        (3..=4).contains(&checks),
        "unhealthy after {checks} failed checks, want 3"
    );

    control.health_status.store(0, Ordering::SeqCst);
    let passing_from = control.health_hits.load(Ordering::SeqCst);
    eventually("healthy again", Duration::from_secs(2), || {
        endpoint_flag(&proxy, "us-east-1", 0, "healthy")
    })
    .await;
    let checks = control.health_hits.load(Ordering::SeqCst) - passing_from;
    assert!(
        (2..=3).contains(&checks),
        "healthy after {checks} passed checks, want 2"
    );

    // Health checks are not client traffic.
    assert_eq!(backends.us.hits(), 0);
    assert_eq!(
        get(proxy.proxy_addr().unwrap(), "a.test", "/", &[])
            .await
            .region(),
        "us-east-1"
    );
}

#[tokio::test]
async fn spill_follows_the_overprovisioning_formula() {
    let backends = Backends::start().await;
    let mut eu = Vec::new();
    for _ in 0..4 {
        eu.push(
            RegionBackend::start("eu-west-1", ANY.parse().unwrap())
                .await
                .unwrap(),
        );
    }
    for b in &eu[1..] {
        b.control.health_status.store(503, Ordering::SeqCst);
    }
    let list = eu
        .iter()
        .map(|b| format!("\"{}\"", b.addr))
        .collect::<Vec<_>>()
        .join(", ");
    let config = backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
geo: {{ database: \"{{DB}}\", trusted_proxies: [\"127.0.0.1/32\"] }}
{{REGIONS}}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [{list}], ap-southeast-1: [\"{{AP}}\"] }}
    health_check: {{ path: /healthz, interval: 30ms, timeout: 200ms, unhealthy_threshold: 1 }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, steering: {{ overprovisioning: 1.4 }} }}
"
    ));
    let proxy = start_proxy(&config).await;
    eventually(
        "3 of 4 eu endpoints unhealthy",
        Duration::from_secs(3),
        || (1..4).all(|i| !endpoint_flag(&proxy, "eu-west-1", i, "healthy")),
    )
    .await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let mut eu_served = 0;
    for _ in 0..2_000 {
        let answer = client
            .get("a.test", "/", &[("x-forwarded-for", "198.51.100.7")])
            .await;
        assert_eq!(answer.status, 200);
        if answer.region() == "eu-west-1" {
            eu_served += 1;
        }
    }
    // healthy share 25% × 1.4 = 35% stays in eu-west-1; the rest spills to us-east-1.
    let share = eu_served as f64 / 20.0;
    assert!(
        (share - 35.0).abs() <= 5.0,
        "eu-west-1 took {share}%, want 35 ±5"
    );
    assert!(
        eu[1..].iter().all(|b| b.hits() == 0),
        "unhealthy endpoints got traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_stops_retries_from_amplifying_an_outage() {
    let backends = Backends::start().await;
    for b in [&backends.us, &backends.eu, &backends.ap] {
        b.control.status.store(503, Ordering::SeqCst);
        b.control.delay_ms.store(100, Ordering::SeqCst);
    }
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api:
    endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] }
    outlier_detection: { enabled: false }
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
    retries: { attempts: 2, retry_on: [gateway-error], backoff: { base: 1ms, max: 2ms }, budget: { percent: 20, min_concurrency: 3 } }
",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    let requests = 100u64;
    let mut tasks = Vec::new();
    for _ in 0..requests {
        tasks.push(tokio::spawn(async move {
            get(addr, "a.test", "/", &[]).await.status.as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let attempts: u64 = backends.hits().iter().sum();
    eprintln!("{requests} requests made {attempts} upstream attempts");
    let bound = requests * 12 / 10 + 3;
    assert!(attempts > requests, "some retries happen: {attempts}");
    assert!(
        attempts <= bound,
        "{attempts} upstream attempts for {requests} requests, bound {bound}"
    );
    assert!(ClusterStats::get(&stats(&proxy, 0).retry_budget_exhausted) > 0);
}

#[tokio::test]
async fn post_is_retried_only_when_it_never_reached_an_upstream() {
    let backends = Backends::start().await;
    backends.us.control.status.store(503, Ordering::SeqCst);
    let closed = tokio::net::TcpListener::bind(ANY)
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = backends.fill(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{{REGIONS}}
clusters:
  failing: {{ endpoints: {{ us-east-1: [\"{{US}}\"], eu-west-1: [\"{{EU}}\"] }}, outlier_detection: {{ enabled: false }} }}
  refusing: {{ endpoints: {{ us-east-1: [\"{closed}\"], eu-west-1: [\"{{EU}}\"] }}, outlier_detection: {{ enabled: false }} }}
routes:
  - name: failing
    hosts: [\"failing.test\"]
    cluster: failing
    retries: {{ attempts: 2, retry_on: [503, connect-failure] }}
  - name: refusing
    hosts: [\"refusing.test\"]
    cluster: refusing
    retries: {{ attempts: 2, retry_on: [503, connect-failure] }}
"
    ));
    let proxy = start_proxy(&config).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let answer = client.request(Method::POST, "failing.test", "/", &[]).await;
    assert_eq!(answer.status, 503, "the upstream's own answer comes back");
    assert_eq!(
        backends.us.hits(),
        1,
        "a POST that reached the upstream is not repeated"
    );
    assert_eq!(backends.eu.hits(), 0);

    // The same failure for a GET is retried in the next region.
    let answer = client.request(Method::GET, "failing.test", "/", &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );

    // A POST refused at connect never reached anyone: retried.
    let answer = client
        .request(Method::POST, "refusing.test", "/", &[])
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );
    assert_eq!(backends.eu.hits(), 2);
}

#[tokio::test]
async fn a_body_past_the_replay_limit_is_sent_once_however_it_arrived() {
    let backends = Backends::start().await;
    backends.us.control.status.store(503, Ordering::SeqCst);
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"] }, outlier_detection: { enabled: false } }
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
    max_replay_body: 100
    retries: { attempts: 2, retry_on: [503] }
",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut client = Client::connect(addr, None).await;
    let put = |len: usize| Bytes::from(vec![b'x'; len]);

    // Within the limit: kept, so the idempotent PUT goes again, whole, to the next region.
    let answer = client
        .request_with_body(Method::PUT, "a.test", "/echo", &[], put(100))
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );
    assert_eq!(answer.json()["body"], "x".repeat(100));
    assert_eq!(backends.hits()[..2], [1, 1]);

    // Past it, with a Content-Length (read whole on the way in all the same): sent once, so
    // the upstream's 503 is the answer.
    let answer = client
        .request_with_body(Method::PUT, "a.test", "/echo", &[], put(512))
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(backends.hits()[..2], [2, 1]);

    // Past it, chunked (streamed): the same.
    let chunked = format!(
        "PUT /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n200\r\n{}\r\n0\r\n\r\n",
        "x".repeat(512)
    );
    let (answer, _) = raw_exchange(addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert_eq!(backends.hits()[..2], [3, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_refuses_overflow_at_once() {
    let backends = Backends::start().await;
    backends.us.control.delay_ms.store(800, Ordering::SeqCst);
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api:
    endpoints: { us-east-1: [\"{US}\"] }
    connection_pool: { max_requests: 10 }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        tasks.push(tokio::spawn(async move {
            let answer = get(addr, "a.test", "/", &[]).await;
            (answer, started.elapsed())
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (answer, took) = t.await.unwrap();
        match answer.status.as_u16() {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert_eq!(answer.headers["x-meridian-overflow"], "max_requests");
                assert!(
                    took < Duration::from_millis(700),
                    "refused at once, not queued: {took:?}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, refused), (10, 40));
    assert_eq!(
        ClusterStats::get(&stats(&proxy, 0).overflow_max_requests),
        40
    );
}

#[tokio::test]
async fn region_loop_guard() {
    let backends = Backends::start().await;
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
geo: { database: \"{DB}\", trusted_proxies: [\"127.0.0.1/32\"] }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] } }
routes:
  - { name: eu-only, hosts: [\"eu.test\"], cluster: api, steering: { only: [eu-west-1] } }
  - { name: api, hosts: [\"*\"], cluster: api }
",
    );
    let proxy = start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    let germany = ("x-forwarded-for", "198.51.100.7");

    let answer = get(
        addr,
        "a.test",
        "/echo",
        &[germany, ("x-meridian-visited", "eu-west-1")],
    )
    .await;
    assert_eq!(
        answer.region(),
        "us-east-1",
        "never sent back to a visited region"
    );
    assert_eq!(
        answer.json()["headers"]["x-meridian-visited"],
        "eu-west-1, us-east-1"
    );
    assert_eq!(backends.eu.hits(), 0);

    let answer = get(
        addr,
        "eu.test",
        "/",
        &[germany, ("x-meridian-visited", "eu-west-1")],
    )
    .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["x-meridian-error"], "region-loop");

    let answer = get(
        addr,
        "a.test",
        "/",
        &[germany, ("x-meridian-visited", "ap-southeast-1, us-east-1")],
    )
    .await;
    assert_eq!(answer.status, 503, "two hops is past max_region_hops 1");
    assert!(answer.body.contains("2 hops"), "{}", answer.body);
    assert_eq!(backends.eu.hits(), 0);
}

type Held = Arc<std::sync::Mutex<Vec<tokio::net::TcpStream>>>;

/// A backend that reads each request and holds it unanswered. `kill` does what the death of
/// its process does: the listener closes, then every held connection drops at once, half with
/// a reset (SO_LINGER 0) and half with a plain close. `break_connections` drops them the same
/// way but keeps listening: a live backend that broke its connections.
struct Holder {
    addr: SocketAddr,
    held: Held,
    accept: tokio::task::JoinHandle<()>,
}

impl Holder {
    async fn start() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind(ANY).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Held::default();
        let keep = held.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    keep.lock().unwrap().push(stream);
                });
            }
        });
        Self { addr, held, accept }
    }

    /// Wait (bounded) until `n` requests are held.
    async fn until_holding(&self, n: usize) {
        let held = self.held.clone();
        eventually(
            &format!("{n} requests held"),
            Duration::from_secs(5),
            || held.lock().unwrap().len() >= n,
        )
        .await;
    }

    /// Drop every held connection at once; how many there were.
    fn break_connections(&self) -> usize {
        let held: Vec<_> = self.held.lock().unwrap().drain(..).collect();
        let n = held.len();
        for (i, stream) in held.into_iter().enumerate() {
            if i % 2 == 0 {
                stream.set_zero_linger().unwrap();
            }
            drop(stream);
        }
        n
    }

    /// Close the listener, then break every connection.
    async fn kill(mut self) -> usize {
        self.accept.abort();
        // Resolves once the accept task, and with it the listener, is gone.
        let _ = (&mut self.accept).await;
        self.break_connections()
    }
}

/// `n` GETs in flight at once, each on its own client connection.
fn spawn_gets(proxy: SocketAddr, n: usize) -> Vec<tokio::task::JoinHandle<common::Answer>> {
    (0..n)
        .map(|_| tokio::spawn(async move { get(proxy, "a.test", "/", &[]).await }))
        .collect()
}

/// Nearest region `us-east-1` (the proxy's own; loopback clients have no location), then
/// `eu-west-1`. Default retries and retry budget.
fn two_regions(us: SocketAddr, eu: SocketAddr, route: &str) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{us}\"], eu-west-1: [\"{eu}\"] }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api{route} }}
",
        common::REGIONS_YAML
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_with_requests_in_flight_costs_no_client_errors() {
    const RUNS: usize = 20;
    const IN_FLIGHT: usize = 30;
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for run in 0..RUNS {
        let eu = RegionBackend::start("eu-west-1", ANY.parse().unwrap())
            .await
            .unwrap();
        let us = Holder::start().await;
        let proxy = start_proxy(&two_regions(us.addr, eu.addr, "")).await;
        let requests = spawn_gets(proxy.proxy_addr().unwrap(), IN_FLIGHT);
        us.until_holding(IN_FLIGHT).await;
        assert_eq!(us.kill().await, IN_FLIGHT);
        for request in requests {
            let answer = request.await.unwrap();
            if (answer.status.as_u16(), answer.region()) != (200, "eu-west-1") {
                errors.push(format!(
                    "run {run}: {} {:?}",
                    answer.status,
                    answer.headers.get("x-meridian-error")
                ));
            }
        }
        let s = stats(&proxy, 0);
        counts.push((
            ClusterStats::get(&s.attempts_reset),
            ClusterStats::get(&s.retries),
        ));
        proxy.shutdown(Duration::ZERO).await;
        eu.stop().await;
    }
    assert!(
        errors.is_empty(),
        "{} client errors in {RUNS} kills of {IN_FLIGHT} requests in flight, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let want = (IN_FLIGHT as u64, IN_FLIGHT as u64);
    assert!(
        counts.iter().all(|c| *c == want),
        "(resets, retries) per run, want {want:?}: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_from_a_backend_that_still_listens_stay_within_the_budget() {
    const IN_FLIGHT: usize = 30;
    let eu = RegionBackend::start("eu-west-1", ANY.parse().unwrap())
        .await
        .unwrap();
    // Retried requests hold their places in the budget while the others decide.
    eu.control.delay_ms.store(1_000, Ordering::SeqCst);
    let us = Holder::start().await;
    let proxy = start_proxy(&two_regions(us.addr, eu.addr, "")).await;
    let requests = spawn_gets(proxy.proxy_addr().unwrap(), IN_FLIGHT);
    us.until_holding(IN_FLIGHT).await;
    assert_eq!(us.break_connections(), IN_FLIGHT);
    let mut served = 0;
    let mut reset = 0;
    for request in requests {
        let answer = request.await.unwrap();
        match (answer.status.as_u16(), answer.region()) {
            (200, "eu-west-1") => served += 1,
            (502, _) => {
                assert_eq!(answer.headers["x-meridian-error"], "upstream-reset");
                reset += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let s = stats(&proxy, 0);
    let retries = ClusterStats::get(&s.retries);
    // 30 requests active: 20 % is 6 retrying at once, never fewer than min_concurrency 3.
    assert!((3..=6).contains(&retries), "{retries} retries");
    assert_eq!(served, retries);
    assert_eq!(reset as u64, IN_FLIGHT as u64 - retries);
    assert_eq!(ClusterStats::get(&s.retry_budget_exhausted), reset as u64);
    assert_eq!(eu.hits(), retries);
}

#[tokio::test]
async fn a_frozen_backend_costs_one_share_of_the_route_timeout_not_all_of_it() {
    // Accepts connections and reads nothing: a stopped process whose kernel still listens.
    let frozen = tokio::net::TcpListener::bind(ANY).await.unwrap();
    let frozen_addr = frozen.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = frozen.accept().await {
            held.push(s);
        }
    });
    let eu = RegionBackend::start("eu-west-1", ANY.parse().unwrap())
        .await
        .unwrap();
    // No per_try_timeout: two retries share the 1.2 s route timeout with the first try, 400 ms each.
    let proxy = start_proxy(&two_regions(frozen_addr, eu.addr, ", timeout: 1200ms")).await;
    let started = Instant::now();
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1"),
        "{:?} after {took:?}",
        answer.headers.get("x-meridian-error")
    );
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    let s = stats(&proxy, 0);
    assert_eq!(
        (
            ClusterStats::get(&s.attempts_timeout),
            ClusterStats::get(&s.retries)
        ),
        (1, 1)
    );
}

#[test]
fn per_try_timeout_defaults_to_a_share_of_the_route_timeout_when_retries_are_on() {
    let config = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
{}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"127.0.0.1:9\"] }} }}
routes:
  - {{ name: defaults, hosts: [a.test], cluster: api }}
  - {{ name: short, hosts: [b.test], cluster: api, timeout: 3s, retries: {{ attempts: 3 }} }}
  - {{ name: explicit, hosts: [c.test], cluster: api, retries: {{ per_try_timeout: 2s }} }}
  - {{ name: once, hosts: [d.test], cluster: api, retries: {{ attempts: 0 }} }}
",
        common::REGIONS_YAML
    );
    let loaded = meridian::config::load_str(&config, std::path::Path::new("test.yaml")).unwrap();
    let table = match meridian::table::compile(&loaded, Default::default()) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let per_try: Vec<_> = table
        .routes
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.retries.per_try_timeout))
        .collect();
    let ms = Duration::from_millis;
    assert_eq!(
        per_try,
        [
            ("defaults", Some(PerTryTimeout::MoveOn(ms(5_000)))),
            ("short", Some(PerTryTimeout::MoveOn(ms(750)))),
            ("explicit", Some(PerTryTimeout::Strict(ms(2_000)))),
            ("once", None),
        ]
    );
}

#[tokio::test]
async fn the_default_per_try_timeout_never_ends_a_request_with_nowhere_else_to_go() {
    let backends = Backends::start().await;
    // One endpoint that takes 500 ms; each try's share of the 900 ms route timeout is 300 ms.
    let config = backends.fill(
        "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"] } }
routes:
  - { name: api, hosts: [\"*\"], cluster: api, timeout: 900ms }
",
    );
    let proxy = start_proxy(&config).await;
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/delay/500", &[]).await;
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        answer.headers.get("x-meridian-error")
    );
    let s = stats(&proxy, 0);
    assert_eq!(
        (
            ClusterStats::get(&s.attempts_timeout),
            ClusterStats::get(&s.retries),
            backends.us.hits()
        ),
        (0, 0, 1)
    );
}
