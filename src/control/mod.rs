//! Lifecycle, reload, admin and the demo.

pub mod admin;
pub mod demo;
pub mod lifecycle;
pub mod reload;
