//! The control path: lifecycle and drain (`lifecycle`), hot reload, the admin API and
//! status page, and the demo. The top layer: it may use every other, and none uses it.
//!
//! Errors: [`lifecycle::StartError`] at start, [`reload::ReloadError`] on reload and
//! [`demo::DemoError`] for the demo, each keeping its I/O or config cause as source.

pub mod admin;
pub mod demo;
pub mod lifecycle;
pub mod reload;
