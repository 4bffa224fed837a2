//! Where connections come in: listeners and their accept loop, the PROXY protocol, the TLS
//! handshake, the send timeout, and the glue that serves a connection with Meridian's own
//! HTTP/1.1 loop, hyper's HTTP/1.1 server, or hyper's HTTP/2 server under the send and idle
//! deadlines (`h2`). Started by `control::lifecycle`; calls `proxy::handle`.
//! Uses `proxy` and the layers below it, never `control`. Errors:
//! [`proxy_protocol::ProxyHeaderError`]; other I/O failures end their connection and are logged.

pub(crate) mod h2;
pub mod listen;
pub mod proxy_protocol;
pub mod send_timeout;
