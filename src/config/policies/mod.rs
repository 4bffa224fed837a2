//! Route policies as written in the config: one file per policy, each a set of plain serde
//! structs hung off `RouteConfig`. Read once by the table compiler (`table/compile`), which
//! checks them and builds their compiled form; nothing on the request path reads these.

mod cors;
mod fault;
mod mirror;

pub use cors::*;
pub use fault::*;
pub use mirror::*;

/// A percentage applied per request (Istio's `percentage.value`): 100 unless given.
pub(crate) fn default_percent() -> f64 {
    100.0
}
