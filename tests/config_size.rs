//! Config size: compiling a config costs time and memory linear in its routes and hosts, and
//! a generated config of any size routes as written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../benches/common/big_config.rs"]
mod big_config;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use meridian::fields::HeadersRef;
use meridian::{config, table};

/// Counts the bytes in use and their high-water mark, so a test can weigh what a compile holds.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout goes to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout (GlobalAlloc's contract).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The tests here measure: one at a time.
static MEASURING: Mutex<()> = Mutex::new(());

fn compile(text: &str) -> table::RoutingTable {
    let loaded = config::load_str(text, Path::new("big.yaml")).unwrap();
    table::compile(&loaded, table::CompileContext::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The fastest of `runs` loads and compiles of `text` (the least disturbed by other work).
fn fastest(text: &str, runs: usize) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let table = compile(text);
            let took = start.elapsed();
            drop(table);
            took
        })
        .min()
        .unwrap()
}

#[test]
#[ignore = "writes the configs `meridian check` is timed on (benches/load/results.md) to MERIDIAN_CONFIG_DIR"]
fn write_configs() {
    let dir = std::env::var("MERIDIAN_CONFIG_DIR").unwrap();
    for routes in [10_000, 20_000, 40_000, 100_000] {
        let file = Path::new(&dir).join(format!("routes-{routes}.yaml"));
        std::fs::write(&file, big_config::config_yaml(routes, 1)).unwrap();
        let file = Path::new(&dir).join(format!("routes-{routes}-per-host-100.yaml"));
        std::fs::write(&file, big_config::config_yaml(routes, 100)).unwrap();
    }
}

#[test]
fn compile_time_grows_linearly_with_routes() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let small = big_config::config_yaml(2_000, 1);
    let large = big_config::config_yaml(20_000, 1);
    compile(&small);
    let (s, l) = (fastest(&small, 5), fastest(&large, 2));
    let ratio = l.as_secs_f64() / s.as_secs_f64();
    eprintln!("2,000 routes: {s:?}; 20,000 routes: {l:?} ({ratio:.1}x)");
    assert!(
        ratio < 25.0,
        "10x the routes took {ratio:.1}x as long ({s:?}, {l:?})"
    );
}

#[test]
fn compile_memory_per_route_is_bounded() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let routes = 20_000;
    let text = big_config::config_yaml(routes, 1);
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let loaded = config::load_str(&text, Path::new("big.yaml")).unwrap();
    let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
    let held = IN_USE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop((table, loaded));
    let (held, peak) = (held / routes, peak / routes);
    eprintln!("{held} bytes held, {peak} at most, per route");
    // 5 kB a route is 500 MB for 100,000 routes.
    assert!(
        peak < 5_000,
        "{peak} bytes per route at the peak ({held} held)"
    );
}

fn route_for(table: &table::RoutingTable, host: &str, path: &str) -> Option<String> {
    table
        .routes
        .find(
            host,
            &table::routes::MatchRequest {
                path,
                query: None,
                method: &Method::GET,
                headers: HeadersRef::Map(&HeaderMap::new()),
                https: false,
                authority: host,
            },
        )
        .map(|(_, r)| r.name.clone())
}

#[test]
fn generated_configs_route_as_written() {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let own_hosts = compile(&big_config::config_yaml(500, 1));
    assert_eq!(own_hosts.routes.routes.len(), 502);
    let shared_hosts = compile(&big_config::config_yaml(500, 50));
    let cases = [
        (&own_hosts, "svc-0.example.com", "/v1/p0/a", Some("route-0")),
        (
            &own_hosts,
            "svc-499.example.com",
            "/v1/p0/",
            Some("route-499"),
        ),
        // Past its prefix, a host falls to `*.example.com`, then to `*`.
        (&own_hosts, "svc-499.example.com", "/v2/", Some("wildcard")),
        (
            &own_hosts,
            "svc-500.example.com",
            "/v1/p0/",
            Some("wildcard"),
        ),
        (&own_hosts, "example.com", "/", Some("fallback")),
        (&own_hosts, "other.test", "/x", Some("fallback")),
        (
            &shared_hosts,
            "svc-0.example.com",
            "/v1/p0/",
            Some("route-0"),
        ),
        (
            &shared_hosts,
            "svc-3.example.com",
            "/v1/p49/",
            Some("route-199"),
        ),
        (
            &shared_hosts,
            "svc-9.example.com",
            "/v1/p7/x",
            Some("route-457"),
        ),
        (
            &shared_hosts,
            "svc-9.example.com",
            "/v1/p50/",
            Some("wildcard"),
        ),
        (
            &shared_hosts,
            "svc-10.example.com",
            "/v1/p0/",
            Some("wildcard"),
        ),
    ];
    for (table, host, path, want) in cases {
        assert_eq!(
            route_for(table, host, path).as_deref(),
            want,
            "{host}{path}"
        );
    }
}
