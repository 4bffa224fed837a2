//! A cluster's session affinity, compiled: where the hash key comes from and the Maglev table
//! size. Built by `table/compile/affinity.rs`; read per request by `route::affinity` (the key)
//! and, through the endpoint sets' tables, by the endpoint pick. A cluster without it has
//! `Cluster::affinity == None` and picks as before.

use http::HeaderName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    pub key: HashKey,
    /// Slots of each region's Maglev table (a prime).
    pub table_size: u32,
}

/// Where a request's hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(HashCookie),
    /// The client address (after trusted X-Forwarded-For).
    SourceIp,
    QueryParameter(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCookie {
    pub name: String,
    /// When the request has no such cookie: the attributes of the one to generate
    /// (`; Max-Age=3600; Path=/; HttpOnly`). `None`: generate none.
    pub generate: Option<String>,
}

impl Affinity {
    /// One line for `meridian check` and logs: `cookie session (generated; Max-Age=3600; …)`.
    pub fn describe(&self) -> String {
        let key = match &self.key {
            HashKey::Header(name) => format!("header {name}"),
            HashKey::Cookie(HashCookie { name, generate }) => match generate {
                Some(attributes) => format!("cookie {name} (generated{attributes})"),
                None => format!("cookie {name}"),
            },
            HashKey::SourceIp => "source ip".to_owned(),
            HashKey::QueryParameter(name) => format!("query parameter {name}"),
        };
        format!("consistent hash on {key}, maglev table {}", self.table_size)
    }
}
