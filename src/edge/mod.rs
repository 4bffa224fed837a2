//! Listeners, accept loops, TLS and the PROXY protocol.

pub mod listen;
pub mod proxy_protocol;
pub mod send_timeout;
