//! The routing decision.

pub mod decision;
