//! GeoDNS: an authoritative DNS listener that answers for the configured zones with the
//! ingress addresses of the regions the HTTP steering code picks for the client (EDNS Client
//! Subnet, else the resolver's address), so DNS and the proxy never disagree about where a
//! client belongs or which regions are up.
//!
//! Layer: above `proxy` and below `control`, beside `edge`. Uses `table` (the compiled zones),
//! `route::geodns` (which regions), `geo` and `telemetry`; `control` binds, serves and rebinds it
//! on reload, and the admin API's explain calls [`answer`]. Errors: none of its own; a bind
//! failure is the caller's `ControlError::Bind`, and every malformed packet gets FORMERR or
//! nothing.
//!
//! - `client`: where the client is (the subnet option, overrides, GeoIP) and the answer's scope
//! - `answer`: the pure answer to one parsed query
//! - `wire`: packet in, packet out (parse, FORMERR, size limits, TC, metrics)
//! - `rate_limit`: per-source response rate limiting for UDP
//! - `server`: the UDP and TCP loops

pub mod answer;
pub mod client;
pub mod rate_limit;
pub mod server;
pub mod wire;
