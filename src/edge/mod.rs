//! Where connections come in: listeners and their accept loop, the PROXY protocol, the TLS
//! handshake, the send timeout, and the glue that serves a connection with Meridian's own
//! HTTP/1.1 loop or hyper. Started by `control::lifecycle`; calls `proxy::handle`.
//! Uses `proxy` and the layers below it, never `control`.

pub mod listen;
pub mod proxy_protocol;
pub mod send_timeout;
