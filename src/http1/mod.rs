//! Meridian's own HTTP/1.1: the client-connection loop (`server`), the upstream client codec
//! (`client`), header fields as received (`raw_fields`), the header names Meridian reads and
//! sets (`headers`), the strict request checks (`strict`), the framing watcher below hyper
//! (`framing`), what the loop hands over to hyper (`handoff`), per-thread read buffers
//! (`buffers`), the Date header and request bodies.
//!
//! Called by `edge` (the loop), `upstream` (the client) and `proxy`. Uses nothing else of the
//! crate: the handler and the hand-off to hyper come in as type parameters, so every
//! smuggling defence sits behind this one boundary.
//!
//! Errors: [`client::ExchangeError`], with I/O and parse causes as sources. A refused request
//! is a verdict with a status ([`strict::Malformed`]), not an error.

pub mod answer;
pub mod body;
pub mod buffers;
pub mod client;
pub(crate) mod date;
pub(crate) mod delimiters;
pub mod framing;
pub(crate) mod handoff;
pub mod headers;
pub mod raw_fields;
pub(crate) mod server;
pub mod strict;
