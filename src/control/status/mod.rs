//! The status page's figures: what happened over a recent window, not since start.
//!
//! `sampler` reads the request path's running totals once a second into a ring of one-second
//! buckets (`window`); `view` turns the ring and the table in service into the JSON the admin
//! API serves (`/status`, `/status/clients`, `/status/routes`) and the page draws.

pub mod sampler;
pub mod view;
pub mod window;

pub use sampler::StatusWindow;

// Every region id a table can hold has a column in the landing table.
const _: () = assert!(crate::telemetry::landing::REGION_SLOTS >= crate::steer::MAX_REGIONS);

/// A table for the unit tests: three regions, one cluster `api` with an endpoint in each,
/// one route.
#[cfg(test)]
pub(crate) fn test_table() -> crate::table::RoutingTable {
    let yaml = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
regions:
  us-east-1:      { lat: 38.9, lon: -77.4 }
  eu-west-1:      { lat: 53.3, lon: -6.3 }
  ap-southeast-1: { lat: 1.35, lon: 103.8 }
clusters:
  api:
    endpoints: { us-east-1: [\"127.0.0.1:1\"], eu-west-1: [\"127.0.0.2:1\"], ap-southeast-1: [\"127.0.0.3:1\"] }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
";
    let loaded = crate::config::load_str(yaml, std::path::Path::new("test.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    crate::table::compile(&loaded, crate::table::CompileContext::default())
        .unwrap_or_else(|e| panic!("{e}"))
}
