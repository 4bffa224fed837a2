//! Route policies as written in the config, plain serde structs hung off `RouteConfig`: what
//! a route matches beyond host, path and method (`matching`), what it does to a request
//! besides forwarding it (`request`: rewrite, redirect, direct response, header rules), and
//! CORS, fault injection and mirroring, one file each. Read once by the table compiler
//! (`table/compile`) and written by `import istio`; nothing on the request path reads these.
//! Session affinity (`affinity`) is a cluster's, under `load_balancer`.

pub mod affinity;

mod cors;
mod fault;
mod matching;
mod mirror;
mod request;

pub use cors::*;
pub use fault::*;
pub use matching::*;
pub use mirror::*;
pub use request::*;

/// A percentage applied per request (Istio's `percentage.value`): 100 unless given.
pub(crate) fn default_percent() -> f64 {
    100.0
}
