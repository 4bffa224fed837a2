//! HTTP/1.1 as Meridian speaks it itself.

pub mod answer;
pub mod body;
pub mod buffers;
pub mod client;
pub(crate) mod date;
pub(crate) mod delimiters;
pub mod framing;
pub mod headers;
pub mod raw_fields;
pub(crate) mod server;
pub mod strict;
