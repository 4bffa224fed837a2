//! Route policies in the config model: what a route matches beyond host, path and method
//! (`matching`), and what it does to a request besides forwarding it (`request`: rewrite,
//! redirect, direct response, header rules). Plain serde structs like `model`; read by the
//! table compiler and written by `import istio`.

mod matching;
mod request;

pub use matching::*;
pub use request::*;
