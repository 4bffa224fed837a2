//! Metric names and handles, and the access log writer: written on the request path, so kept
//! low. Uses `config` only; exporting metrics is the admin API's job (`control`).

pub mod access_log;
pub mod landing;
pub mod metrics;
