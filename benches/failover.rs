//! Failover time: how long after the nearest region dies until ≥99% of requests are served by
//! the next region, under a steady request rate, with health checks every second and outlier
//! detection on. Also counts client-visible errors (the target is none).
//!
//! `cargo bench --bench failover` — real sockets on 127.0.0.1, bounded in time (about 8 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use meridian::demo::RegionBackend;
use meridian::{config, server, table};

const RATE_PER_SECOND: u64 = 1_000;
const CONNECTIONS: u64 = 8;
const BEFORE_KILL: Duration = Duration::from_secs(2);
const AFTER_KILL: Duration = Duration::from_secs(4);
const BUCKET: Duration = Duration::from_millis(25);

struct Sample {
    at: Duration,
    status: u16,
    region: String,
    detail: String,
}

async fn client_loop(
    proxy: SocketAddr,
    start: Instant,
    period: Duration,
    until: Duration,
) -> Vec<Sample> {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut tick = tokio::time::interval(period);
    let mut samples = Vec::new();
    while start.elapsed() < until {
        tick.tick().await;
        let req = http::Request::get("/")
            .header("host", "api.example.com")
            .header("x-forwarded-for", "198.51.100.7")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let at = start.elapsed();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status().as_u16();
        let region = response
            .headers()
            .get("x-meridian-region")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let detail = response
            .headers()
            .get("x-meridian-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let _ = response.into_body().collect().await;
        samples.push(Sample {
            at,
            status,
            region,
            detail,
        });
    }
    samples
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let us = RegionBackend::start("us-east-1", any).await.unwrap();
        let eu1 = RegionBackend::start("eu-west-1", any).await.unwrap();
        let eu2 = RegionBackend::start("eu-west-1", any).await.unwrap();
        let ap = RegionBackend::start("ap-southeast-1", any).await.unwrap();
        let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/geoip/demo-city.mmdb");
        let yaml = format!(
            "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
geo: {{ database: \"{}\", trusted_proxies: [\"127.0.0.1/32\"] }}
regions:
  us-east-1:      {{ lat: 38.9, lon: -77.4 }}
  eu-west-1:      {{ lat: 53.3, lon: -6.3 }}
  ap-southeast-1: {{ lat: 1.35, lon: 103.8 }}
clusters:
  api:
    endpoints:
      us-east-1: [\"{}\"]
      eu-west-1: [\"{}\", \"{}\"]
      ap-southeast-1: [\"{}\"]
    outlier_detection: {{ consecutive_5xx: 5, max_ejection_percent: 100 }}
    health_check: {{ path: /healthz, interval: 1s, timeout: 500ms }}
routes:
  - name: api
    hosts: [\"*\"]
    cluster: api
",
            db.display(),
            us.addr,
            eu1.addr,
            eu2.addr,
            ap.addr
        );
        let loaded = config::load_str(&yaml, Path::new("failover.yaml")).unwrap();
        let running =
            server::start(table::compile(&loaded, table::CompileContext::default()).unwrap())
                .await
                .unwrap();
        let proxy = running.proxy_addr().unwrap();

        let start = Instant::now();
        let period = Duration::from_micros(1_000_000 * CONNECTIONS / RATE_PER_SECOND);
        let until = BEFORE_KILL + AFTER_KILL;
        let loops: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(client_loop(proxy, start, period, until)))
            .collect();
        tokio::time::sleep_until((start + BEFORE_KILL).into()).await;
        let killed = start.elapsed();
        eu1.stop().await;
        eu2.stop().await;
        let mut samples = Vec::new();
        for l in loops {
            samples.extend(l.await.unwrap());
        }
        samples.sort_by_key(|s| s.at);

        let errors = samples.iter().filter(|s| s.status != 200).count();
        let before: Vec<_> = samples.iter().filter(|s| s.at < killed).collect();
        let after: Vec<_> = samples.iter().filter(|s| s.at >= killed).collect();
        // Buckets after the kill; failover is done at the start of the first bucket from which
        // on every bucket has ≥99% of its requests served by us-east-1.
        let buckets = (AFTER_KILL.as_millis() / BUCKET.as_millis()) as usize;
        let mut shares = vec![(0usize, 0usize); buckets + 1];
        for s in &after {
            let b = ((s.at - killed).as_millis() / BUCKET.as_millis()) as usize;
            if let Some(slot) = shares.get_mut(b) {
                slot.1 += 1;
                if s.region == "us-east-1" {
                    slot.0 += 1;
                }
            }
        }
        let done = (0..shares.len())
            .find(|&b| {
                shares[b..]
                    .iter()
                    .all(|(ok, n)| *n == 0 || *ok * 100 >= *n * 99)
            })
            .map(|b| BUCKET * (b as u32 + 1));
        let first_served = after
            .iter()
            .find(|s| s.region == "us-east-1")
            .map(|s| s.at - killed);
        let last_elsewhere = after
            .iter()
            .rev()
            .find(|s| s.region != "us-east-1")
            .map(|s| s.at - killed);

        println!(
            "failover benchmark: {} req/s over {CONNECTIONS} connections",
            RATE_PER_SECOND
        );
        println!(
            "  requests before kill: {} (eu-west-1: {})",
            before.len(),
            before.iter().filter(|s| s.region == "eu-west-1").count()
        );
        println!("  requests after kill:  {}", after.len());
        println!("  client errors:        {errors}");
        for s in samples.iter().filter(|s| s.status != 200) {
            println!("    {:?} after start: {} {}", s.at, s.status, s.detail);
        }
        println!("  first request served by us-east-1 after the kill: {first_served:?}");
        println!("  last request not served by us-east-1 after the kill: {last_elsewhere:?}");
        match done {
            Some(t) => println!(
                "  failover time (every {BUCKET:?} bucket from then on ≥99% us-east-1): ≤ {t:?}"
            ),
            None => println!("  failover did not complete within {AFTER_KILL:?}"),
        }
        running.shutdown(Duration::from_secs(2)).await;
    });
}
