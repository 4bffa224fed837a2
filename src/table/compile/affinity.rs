//! Compiling a cluster's `load_balancer.consistent_hash` into its [`Affinity`]: exactly one key
//! source, a valid header, cookie or parameter name, a cookie TTL and path, and a prime table
//! size within bounds; every problem with its line.

use super::*;
use http::HeaderName;

use crate::config::LoadBalancerConfig;
use crate::steer::maglev::{MAX_TABLE_SIZE, MIN_TABLE_SIZE, is_prime};
use crate::table::policies::affinity::{Affinity, HashCookie, HashKey};

/// Generated cookies live at most 400 days: browsers cap Max-Age there (RFC 6265bis). Not a
/// deadline on the clock, so not held to a day like timeouts.
const COOKIE_TTL: DurationRange = DurationRange {
    min: Duration::ZERO,
    max: Duration::from_secs(400 * 24 * 60 * 60),
};

/// RFC 9110 token characters (cookie names are tokens too).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Compiler<'_> {
    /// `at` is the cluster's `load_balancer`.
    pub(super) fn affinity(
        &mut self,
        at: YamlPath,
        lb: &LoadBalancerConfig,
    ) -> Option<Box<Affinity>> {
        let hash = lb.consistent_hash.as_ref()?;
        let at = at.key("consistent_hash");
        let sources = usize::from(hash.header.is_some())
            + usize::from(hash.cookie.is_some())
            + usize::from(hash.source_ip)
            + usize::from(hash.query_parameter.is_some());
        if sources != 1 {
            self.problems.at(
                at.clone(),
                format!(
                    "name exactly one hash key (header, cookie, source_ip: true or query_parameter); {sources} given"
                ),
            );
        }
        let table_size = match u32::try_from(hash.table_size) {
            Ok(n) if (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&n) && is_prime(n) => Some(n),
            _ => {
                self.problems.at(
                    at.key("table_size"),
                    format!(
                        "{} is not a prime from {MIN_TABLE_SIZE} to {MAX_TABLE_SIZE} (the default is 65537; take a prime about 100 times the endpoints of a region)",
                        hash.table_size
                    ),
                );
                None
            }
        };
        let key = if let Some(name) = &hash.header {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => Some(HashKey::Header(name)),
                Err(_) => {
                    self.problems
                        .at(at.key("header"), format!("`{name}` is not a header name"));
                    None
                }
            }
        } else if let Some(cookie) = &hash.cookie {
            self.hash_cookie(at.key("cookie"), cookie)
        } else if let Some(name) = &hash.query_parameter {
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b"&=#?+% ".contains(&b) || b.is_ascii_control())
            {
                self.problems.at(
                    at.key("query_parameter"),
                    format!("`{name}` is not a query parameter name (no '&', '=', '#', '?', '+', '%' or spaces)"),
                );
                None
            } else {
                Some(HashKey::QueryParameter(name.clone()))
            }
        } else if hash.source_ip {
            Some(HashKey::SourceIp)
        } else {
            None
        };
        Some(Box::new(Affinity {
            key: key?,
            table_size: table_size?,
        }))
    }

    fn hash_cookie(
        &mut self,
        at: YamlPath,
        cookie: &crate::config::HashCookieConfig,
    ) -> Option<HashKey> {
        let mut ok = true;
        if !is_token(&cookie.name) {
            self.problems.at(
                at.key("name"),
                format!(
                    "`{}` is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                    cookie.name
                ),
            );
            ok = false;
        }
        if let Some(path) = &cookie.path
            && (!path.starts_with('/')
                || path
                    .bytes()
                    .any(|b| b == b';' || !(0x21..0x7f).contains(&b)))
        {
            self.problems.at(
                at.key("path"),
                format!("`{path}` is not a cookie path (starts with '/', no ';' or spaces)"),
            );
            ok = false;
        }
        let generate = match &cookie.ttl {
            None => None,
            Some(ttl) => {
                let ttl = self.duration(at.key("ttl"), ttl, COOKIE_TTL)?;
                let mut attributes = String::new();
                // Zero: a session cookie, gone when the browser closes (Envoy's meaning).
                if !ttl.is_zero() {
                    attributes.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
                }
                if let Some(path) = &cookie.path {
                    attributes.push_str(&format!("; Path={path}"));
                }
                attributes.push_str("; HttpOnly");
                Some(attributes)
            }
        };
        ok.then(|| {
            HashKey::Cookie(HashCookie {
                name: cookie.name.clone(),
                generate,
            })
        })
    }
}
