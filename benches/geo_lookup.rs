//! GeoIP lookups on a full-size GeoLite2-City database with a new random public IPv4 client
//! per lookup, as an edge sees them: the per-thread cache of recent clients almost never hits,
//! the cache of decoded records often does. `lookup_uncached` uses neither cache;
//! `tree_walk` is the search tree alone.
//!
//! The database is not in the repository. The bench reads `MERIDIAN_GEOLITE2_CITY`, or else
//! the copy that PyPI's `maxminddb-geolite2` package carries (`pip install maxminddb-geolite2`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use meridian::geo::GeoDb;

const INSTALL: &str =
    "pip install maxminddb-geolite2 (or set MERIDIAN_GEOLITE2_CITY=/path/GeoLite2-City.mmdb)";

fn database_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MERIDIAN_GEOLITE2_CITY") {
        return PathBuf::from(path);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, _maxminddb_geolite2 as m; print(os.path.join(os.path.dirname(m.__file__), 'GeoLite2-City.mmdb'))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => panic!("no GeoLite2-City database found; install one with: {INSTALL}"),
    }
}

/// Public unicast IPv4 addresses, uniformly drawn: private, loopback, link-local, CGNAT,
/// multicast and reserved space is skipped, since clients do not come from there.
fn random_public_ipv4(rng: &mut fastrand::Rng, count: usize) -> Vec<IpAddr> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let ip = Ipv4Addr::from(rng.u32(..));
        let [a, b, ..] = ip.octets();
        let special = ip.is_private()
            || ip.is_loopback()
            || ip.is_link_local()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_documentation()
            || ip.is_unspecified()
            || a == 0
            || a >= 240
            || (a == 100 && (64..128).contains(&b));
        if !special {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let path = database_path();
    let opening = std::time::Instant::now();
    let db = GeoDb::open(&path).unwrap_or_else(|e| {
        panic!(
            "cannot open {}: {e}; install one with: {INSTALL}",
            path.display()
        )
    });
    let opened = opening.elapsed();
    let mut rng = fastrand::Rng::with_seed(7);
    let clients = random_public_ipv4(&mut rng, 1 << 20);
    let found = clients
        .iter()
        .take(10_000)
        .filter(|ip| db.lookup_uncached(**ip).is_some())
        .count();
    eprintln!(
        "{}: opened in {:?}; {} of 10,000 random public addresses located; shortcuts (IPv4, \
         IPv6): {:?}; records decoded at open (count, bytes): {:?}",
        path.display(),
        opened,
        found,
        db.has_shortcuts(),
        db.decoded_records()
    );
    same_answers(&db, &clients[..50_000]);

    // The search tree alone (the data offset, nothing decoded): what every lookup of a new
    // client pays before its record is read, from a 57 MB file mostly outside the CPU caches.
    let reader = maxminddb::Reader::from_source(std::fs::read(&path).unwrap()).unwrap();
    let tree_walk = |ip| reader.lookup(ip).ok().and_then(|r| r.offset());
    over(c, "tree_walk_random", &clients, tree_walk);
    over(c, "shortcut_walk_random", &clients, |ip| {
        db.record_offset(ip)
    });
    over(c, "lookup_uncached_random", &clients, |ip| {
        db.lookup_uncached(ip)
    });
    over(c, "lookup_random", &clients, |ip| db.lookup(ip));
    // A GeoDNS client-subnet answer's scope: the network's prefix, from the shortcut tables
    // and by the crate's walk from the root.
    over(c, "network_prefix_random", &clients, |ip| {
        db.network_prefix(ip)
    });
    over(c, "network_prefix_uncached_random", &clients, |ip| {
        db.network_prefix_uncached(ip)
    });

    // IPv6 clients: random addresses in 2000::/3 that the database places (most of that space
    // is in no network, and an address there ends its walk early).
    let mut v6_clients = Vec::with_capacity(1 << 16);
    while v6_clients.len() < 1 << 16 {
        let ip = IpAddr::V6(Ipv6Addr::from((rng.u128(..) >> 3) | (1 << 125)));
        if db.lookup_uncached(ip).is_some() {
            v6_clients.push(ip);
        }
    }
    same_answers(&db, &v6_clients[..20_000]);
    over(c, "tree_walk_random_ipv6", &v6_clients, tree_walk);
    over(c, "shortcut_walk_random_ipv6", &v6_clients, |ip| {
        db.record_offset(ip)
    });
}

/// What a request gets (shortcut walk, record cache) is what the plain walk and decode give,
/// and so is each network's prefix.
fn same_answers(db: &GeoDb, clients: &[IpAddr]) {
    for ip in clients {
        assert_eq!(db.lookup(*ip), db.lookup_uncached(*ip), "{ip}");
        assert_eq!(
            db.network_prefix(*ip),
            db.network_prefix_uncached(*ip),
            "{ip}"
        );
    }
}

/// Bench `geo/geolite2_city/<name>`: `f` over the clients in turn (their count a power of two).
fn over<R>(c: &mut Criterion, name: &str, clients: &[IpAddr], mut f: impl FnMut(IpAddr) -> R) {
    let mut next = 0usize;
    c.bench_function(&format!("geo/geolite2_city/{name}"), |b| {
        b.iter(|| {
            next = (next + 1) & (clients.len() - 1);
            black_box(f(black_box(clients[next])))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
