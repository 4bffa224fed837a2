//! Compiled policies, one file per policy: what `table/compile` builds from the config's
//! policies and the request path (`route`, `proxy`) reads.

pub mod affinity;
