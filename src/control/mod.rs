//! The control path: lifecycle and drain (`lifecycle`), hot reload, the admin API and
//! status page, and the demo. The top layer: it may use every other, and none uses it.

pub mod admin;
pub mod demo;
pub mod lifecycle;
pub mod reload;
