//! Session affinity in the decision: the request's hash key (a header, a cookie, the client
//! address or a query parameter, as the cluster's [`Affinity`] says), and the endpoint the
//! region's Maglev table gives for it. Called by `decision` only for clusters that hash; a
//! request without a key is balanced by the cluster's `load_balancer` as usual.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;
use http::header::COOKIE;

use crate::http1::raw_fields::HeadersRef;
use crate::steer::hash::xxh64;
use crate::table::policies::affinity::{Affinity, HashCookie, HashKey};
use crate::table::{Cluster, Endpoint, EndpointSet};

/// Where this request's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Header,
    Cookie,
    /// The request had no cookie: Meridian made one up and sets it on the answer.
    GeneratedCookie,
    SourceIp,
    QueryParameter,
}

/// The hash key a request carried (or was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedKey {
    pub hash: u64,
    pub source: KeySource,
    /// `Set-Cookie` for the answer, when the cookie was generated.
    pub set_cookie: Option<HeaderValue>,
}

/// The first value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: HeadersRef<'a>, name: &str) -> Option<&'a [u8]> {
    headers.values_named(&COOKIE).find_map(|value| {
        value.split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

/// The raw value of query parameter `name` (not percent-decoded: the same text, the same key).
fn query_parameter<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((n, v)) => (n == name).then_some(v),
            None => (pair == name).then_some(""),
        })
}

/// The request's hash key, or `None` when it carries none (and no cookie is to be generated).
pub fn hash_key(
    affinity: &Affinity,
    headers: HeadersRef<'_>,
    query: Option<&str>,
    client: IpAddr,
    rng: &mut fastrand::Rng,
) -> Option<HashedKey> {
    let found = |bytes: &[u8], source| {
        Some(HashedKey {
            hash: xxh64(bytes, 0),
            source,
            set_cookie: None,
        })
    };
    match &affinity.key {
        HashKey::Header(name) => found(headers.values_named(name).next()?, KeySource::Header),
        HashKey::Cookie(HashCookie { name, generate }) => {
            if let Some(value) = cookie(headers, name) {
                return found(value, KeySource::Cookie);
            }
            let attributes = generate.as_ref()?;
            // Not a secret: it only names a session's place. 128 bits keep sessions apart.
            let id = format!("{:032x}", rng.u128(..));
            let set_cookie = HeaderValue::from_str(&format!("{name}={id}{attributes}")).ok();
            Some(HashedKey {
                hash: xxh64(id.as_bytes(), 0),
                source: KeySource::GeneratedCookie,
                set_cookie,
            })
        }
        HashKey::SourceIp => match client {
            IpAddr::V4(ip) => found(&ip.octets(), KeySource::SourceIp),
            IpAddr::V6(ip) => found(&ip.octets(), KeySource::SourceIp),
        },
        HashKey::QueryParameter(name) => found(
            query_parameter(query, name)?.as_bytes(),
            KeySource::QueryParameter,
        ),
    }
}

/// The endpoint of region set `set` for this request: by its hash key when it has one, else
/// (or when the table has nothing usable) the cluster's usual pick.
#[allow(clippy::too_many_arguments)]
pub fn pick(
    affinity: &Affinity,
    cluster: &Cluster,
    set: Option<&Arc<EndpointSet>>,
    headers: HeadersRef<'_>,
    query: Option<&str>,
    client: IpAddr,
    panic: bool,
    rng: &mut fastrand::Rng,
) -> (Option<Arc<Endpoint>>, Option<HashedKey>) {
    let key = hash_key(affinity, headers, query, client, rng);
    let set = match set {
        Some(set) => set,
        None => return (None, key),
    };
    let endpoint = key
        .as_ref()
        .and_then(|k| set.pick_hashed(k.hash, panic, &|_| false))
        .or_else(|| set.pick(cluster.load_balancer, panic, rng, &|_| false));
    (endpoint, key)
}

/// How the decision used the key, for `x-meridian-decision` and `/explain`:
/// `hash cookie session (generated) #5f0c…`, or `hash header x-user absent`.
pub fn explain(affinity: &Affinity, key: Option<&HashedKey>) -> String {
    let what = match &affinity.key {
        HashKey::Header(name) => format!("header {name}"),
        HashKey::Cookie(c) => format!("cookie {}", c.name),
        HashKey::SourceIp => "source ip".to_owned(),
        HashKey::QueryParameter(name) => format!("query parameter {name}"),
    };
    match key {
        Some(k) if k.source == KeySource::GeneratedCookie => {
            format!("hash {what} (generated) #{:016x}", k.hash)
        }
        Some(k) => format!("hash {what} #{:016x}", k.hash),
        None => format!("hash {what} absent"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName};

    fn affinity(key: HashKey) -> Affinity {
        Affinity {
            key,
            table_size: 101,
        }
    }

    fn cookie_key(generate: Option<&str>) -> HashKey {
        HashKey::Cookie(HashCookie {
            name: "sid".into(),
            generate: generate.map(str::to_owned),
        })
    }

    /// The key, the request's headers and query, and what is hashed (bytes and source).
    type Case = (
        HashKey,
        Vec<(&'static str, &'static str)>,
        Option<&'static str>,
        Option<(Vec<u8>, KeySource)>,
    );

    #[test]
    fn the_key_comes_from_where_the_cluster_says() {
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let header = HashKey::Header(HeaderName::from_static("x-user"));
        let query = HashKey::QueryParameter("u".into());
        // (key, request headers, query, what is hashed: Some(bytes, source) or None)
        let cases: Vec<Case> = vec![
            (
                header.clone(),
                vec![("x-user", "alice")],
                None,
                Some((b"alice".to_vec(), KeySource::Header)),
            ),
            (
                header.clone(),
                vec![("x-user", "alice"), ("x-user", "bob")],
                None,
                Some((b"alice".to_vec(), KeySource::Header)),
            ),
            (header.clone(), vec![("x-other", "alice")], None, None),
            (
                cookie_key(None),
                vec![("cookie", "a=1; sid=abc; b=2")],
                None,
                Some((b"abc".to_vec(), KeySource::Cookie)),
            ),
            (
                cookie_key(None),
                vec![("cookie", "a=1"), ("cookie", "sid=xyz")],
                None,
                Some((b"xyz".to_vec(), KeySource::Cookie)),
            ),
            (
                cookie_key(None),
                vec![("cookie", "xsid=1; sidx=2")],
                None,
                None,
            ),
            (cookie_key(None), vec![], None, None),
            (
                HashKey::SourceIp,
                vec![],
                None,
                Some((vec![198, 51, 100, 7], KeySource::SourceIp)),
            ),
            (
                query.clone(),
                vec![],
                Some("a=1&u=42&u=43"),
                Some((b"42".to_vec(), KeySource::QueryParameter)),
            ),
            (
                query.clone(),
                vec![],
                Some("u"),
                Some((b"".to_vec(), KeySource::QueryParameter)),
            ),
            (query.clone(), vec![], Some("uu=1&x=u"), None),
            (query, vec![], None, None),
        ];
        let mut rng = fastrand::Rng::with_seed(1);
        for (key, headers, q, want) in cases {
            let mut map = HeaderMap::new();
            for (k, v) in &headers {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let got = hash_key(
                &affinity(key.clone()),
                HeadersRef::Map(&map),
                q,
                client,
                &mut rng,
            );
            let want = want.map(|(bytes, source)| HashedKey {
                hash: xxh64(&bytes, 0),
                source,
                set_cookie: None,
            });
            assert_eq!(got, want, "{key:?} {headers:?} {q:?}");
        }
    }

    #[test]
    fn a_missing_cookie_with_a_ttl_is_generated_and_hashed() {
        let a = affinity(cookie_key(Some("; Max-Age=60; Path=/; HttpOnly")));
        let map = HeaderMap::new();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let first = hash_key(&a, HeadersRef::Map(&map), None, client, &mut rng).unwrap();
        let second = hash_key(&a, HeadersRef::Map(&map), None, client, &mut rng).unwrap();
        assert_eq!(first.source, KeySource::GeneratedCookie);
        assert_ne!(first.hash, second.hash, "each new session gets its own id");
        let set = first.set_cookie.unwrap();
        let text = set.to_str().unwrap();
        let (pair, attributes) = text.split_once(';').unwrap();
        assert_eq!(attributes, " Max-Age=60; Path=/; HttpOnly");
        let id = pair.strip_prefix("sid=").unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(
            first.hash,
            xxh64(id.as_bytes(), 0),
            "hashed on what it sets"
        );
        // Sent back, the cookie gives the same key.
        let mut back = HeaderMap::new();
        back.insert(COOKIE, HeaderValue::from_str(pair).unwrap());
        let again = hash_key(&a, HeadersRef::Map(&back), None, client, &mut rng).unwrap();
        assert_eq!((again.hash, again.source), (first.hash, KeySource::Cookie));
    }

    #[test]
    fn explain_names_the_key_and_its_hash() {
        let a = affinity(HashKey::Header(HeaderName::from_static("x-user")));
        assert_eq!(explain(&a, None), "hash header x-user absent");
        let k = HashedKey {
            hash: 0xab,
            source: KeySource::Header,
            set_cookie: None,
        };
        assert_eq!(
            explain(&a, Some(&k)),
            "hash header x-user #00000000000000ab"
        );
    }
}
