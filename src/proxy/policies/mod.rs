//! Route policies applied on the request path, one file per policy: each is called from the
//! phase it belongs to (`forward`) only when the route has it, so a route without policies
//! pays one `None` check per policy. Their decisions are pure functions in `table::policies`;
//! here they meet the request, the clock and the upstream.

pub(super) mod cors;
pub(super) mod fault;
pub(super) mod mirror;
