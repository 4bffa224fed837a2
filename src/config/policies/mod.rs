//! The config of route and cluster policies, one file per policy: plain serde structs read by
//! the table compiler (`table/compile`) and written by `import istio`.

pub mod affinity;
