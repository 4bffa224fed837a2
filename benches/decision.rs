//! The per-request decision on the demo table, without sockets: client address from
//! X-Forwarded-For → GeoIP → route match → region order → spill → endpoint pick.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use meridian::decision::{RequestFacts, decide};
use meridian::demo::{DEMO_REGIONS, demo_table};
use meridian::fields::HeadersRef;
use meridian::headers::Present;

fn bench(c: &mut Criterion) {
    let endpoints: Vec<(String, SocketAddr)> = DEMO_REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.to_string(),
                SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
            )
        })
        .collect();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let table = demo_table(any, any, &endpoints).unwrap();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    let mut rng = fastrand::Rng::with_seed(1);

    c.bench_function("decision/full_geo_path", |b| {
        b.iter(|| {
            let facts = RequestFacts {
                query: None,
                peer,
                host: "127.0.0.1",
                path: "/api/users",
                method: &Method::GET,
                headers: HeadersRef::Map(&headers),
                present: Present::of(HeadersRef::Map(&headers)),
            };
            let d = decide(&table, black_box(&facts), &mut rng).unwrap();
            black_box(d.endpoint.address)
        })
    });

    let client: IpAddr = "198.51.100.7".parse().unwrap();
    // A client seen before: answered from the per-thread cache of recent lookups.
    c.bench_function("geo/lookup", |b| {
        b.iter(|| black_box(table.geo.locate(black_box(client))))
    });
    // A new client every time: the database is read and the record decoded.
    if let Some(db) = &table.geo.database {
        c.bench_function("geo/lookup_uncached", |b| {
            b.iter(|| black_box(db.lookup_uncached(black_box(client))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
