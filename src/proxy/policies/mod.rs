//! The request path's side of route and cluster policies, one file per policy.

pub mod affinity;
