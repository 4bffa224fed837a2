//! The control path: lifecycle and drain (`lifecycle`), hot reload, the admin API and
//! status page, and the demo. The top layer: it may use every other, and none uses it.
//!
//! Errors: one [`ControlError`] for start, reload and the demo, keeping its I/O, config or
//! GeoIP cause as source.

pub mod admin;
pub mod demo;
mod error;
mod geodns;
pub mod lifecycle;
pub mod reload;
pub mod status;

pub use error::ControlError;
