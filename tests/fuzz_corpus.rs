//! Replays the fuzz seed corpora (fuzz/corpus/<target>/*) through the same entry points the
//! cargo-fuzz targets use, on stable Rust: every input kept there must still not panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        // Every prefix too: truncated input is what a network hands out.
        for end in (0..data.len()).step_by((data.len() / 64).max(1)) {
            run(&data[..end]);
        }
        count += 1;
    }
    assert!(count > 0, "{target}: empty corpus");
}

#[test]
fn config_corpus() {
    replay("config", meridian::fuzzing::config);
}

#[test]
fn dns_query_corpus() {
    replay("dns_query", meridian::fuzzing::dns_query);
}

#[test]
fn mutated_dns_queries() {
    mutate("dns_query", meridian::fuzzing::dns_query, 100_000);
}

#[test]
fn route_policies_corpus() {
    replay("route_policies", meridian::fuzzing::route_policies);
}

#[test]
fn mutated_route_policies() {
    mutate("route_policies", meridian::fuzzing::route_policies, 20_000);
}

#[test]
fn istio_import_corpus() {
    replay("istio_import", meridian::fuzzing::istio_import);
}

#[test]
fn geo_database_corpus() {
    replay("geo_database", meridian::fuzzing::geo_database);
}

#[test]
fn mutated_geo_databases() {
    mutate("geo_database", meridian::fuzzing::geo_database, 3_000);
}

#[test]
fn forwarded_for_corpus() {
    replay("forwarded_for", meridian::fuzzing::forwarded_for);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", meridian::fuzzing::proxy_header);
}

#[test]
fn request_head_corpus() {
    replay("request_head", meridian::fuzzing::request_head);
}

#[test]
fn upstream_response_corpus() {
    replay("upstream_response", meridian::fuzzing::upstream_response);
}

/// Seeds mutated at random (fixed seed, bounded): flipped, inserted, removed and duplicated
/// bytes, the kinds of damage a fuzzer starts with. No mutant may panic.
fn mutate(target: &str, run: fn(&[u8]), rounds: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..rounds {
        let mut data = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(..=data.len());
            match rng.u8(..4) {
                0 if at < data.len() => data[at] = rng.u8(..),
                1 => data.insert(at, *b"\r\n0:;,\t ".get(rng.usize(..8)).unwrap()),
                2 if at < data.len() => {
                    data.remove(at);
                }
                _ => {
                    let end = (at + rng.usize(..16)).min(data.len());
                    let piece = data[at..end].to_vec();
                    data.splice(at..at, piece);
                }
            }
        }
        run(&data);
    }
}

#[test]
fn mutated_upstream_responses_and_request_heads() {
    mutate(
        "upstream_response",
        meridian::fuzzing::upstream_response,
        100_000,
    );
    mutate("request_head", meridian::fuzzing::request_head, 100_000);
    mutate("proxy_header", meridian::fuzzing::proxy_header, 100_000);
}
