//! Large generated configs for the config-size bench (`benches/config_size.rs`) and the
//! linear-compile test (`tests/config_size.rs`): the shape of `config/meridian.yaml` (three
//! regions, a few clusters with endpoints in each, routes with a host, a path prefix and a
//! cluster), repeated to any number of routes.

use std::fmt::Write;

/// Clusters the routes are spread over.
pub const CLUSTERS: usize = 8;

/// A config with `routes` routes, `routes_per_host` of them on each host (1: every route has
/// its own host), then a `*.example.com` route and a `*` catch-all.
pub fn config_yaml(routes: usize, routes_per_host: usize) -> String {
    let per_host = routes_per_host.max(1);
    let mut out = String::with_capacity(200 * routes + 4096);
    out.push_str(
        "local_region: us-east-1\n\
         listeners:\n  - { name: http, bind: \"127.0.0.1:0\" }\n\
         admin: { bind: null }\n\
         access_log: { enabled: false }\n\
         regions:\n\
         \x20 us-east-1:      { lat: 38.9, lon: -77.4 }\n\
         \x20 eu-west-1:      { lat: 53.3, lon: -6.3 }\n\
         \x20 ap-southeast-1: { lat: 1.35, lon: 103.8 }\n\
         clusters:\n",
    );
    for c in 0..CLUSTERS {
        let _ = write!(
            out,
            "  svc-{c}:\n    connect_timeout: 1s\n    endpoints:\n\
             \x20     us-east-1:      [\"10.0.{c}.10:8000\", {{ address: \"10.0.{c}.11:8000\", weight: 2 }}]\n\
             \x20     eu-west-1:      [\"10.1.{c}.5:8000\", \"10.1.{c}.6:8000\"]\n\
             \x20     ap-southeast-1: [\"10.2.{c}.5:8000\"]\n\
             \x20   outlier_detection: {{ consecutive_5xx: 5, interval: 30s }}\n"
        );
    }
    out.push_str("routes:\n");
    for i in 0..routes {
        let host = i / per_host;
        let prefix = i % per_host;
        let cluster = i % CLUSTERS;
        let _ = write!(
            out,
            "  - name: route-{i}\n    hosts: [\"svc-{host}.example.com\"]\n\
             \x20   match: {{ path_prefix: \"/v1/p{prefix}/\" }}\n    cluster: svc-{cluster}\n\
             \x20   timeout: 3s\n"
        );
        // Every tenth route carries more of what real routes have.
        if i % 10 == 0 {
            out.push_str(
                "    steering: { mode: nearest, continents: { EU: [eu-west-1, us-east-1] } }\n\
                 \x20   retries: { attempts: 2, retry_on: [gateway-error, reset] }\n",
            );
        }
    }
    out.push_str(
        "  - name: wildcard\n    hosts: [\"*.example.com\"]\n    cluster: svc-0\n\
         \x20 - name: fallback\n    hosts: [\"*\"]\n    match: { path_prefix: \"/\" }\n    cluster: svc-1\n",
    );
    out
}
