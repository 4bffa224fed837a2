//! The routing decision: client address → location → route → region order → region (spill)
//! → endpoint. A pure function of a table and a request head; called by `proxy`, the admin
//! API's explain and the benchmark. Uses `table` and the layers below it. Errors:
//! [`decision::DecisionError`] (no route, no endpoint, a region loop); no I/O, so no sources.

pub mod affinity;
pub mod decision;
pub mod geodns;
pub mod split;
