//! Compiling a route's `cors:` into [`Cors`]: origin matchers, and the header values built
//! once so a request only copies them.

use super::*;
use crate::config::{CorsConfig, StringMatchConfig};
use crate::table::policies::cors::{Cors, OriginMatch};

/// Longest list value accepted in one CORS header (methods, headers, expose headers).
const MAX_CORS_HEADER: usize = 8 * 1024;

impl Compiler<'_> {
    pub(super) fn cors(&mut self, at: YamlPath, c: &CorsConfig) -> Option<Box<Cors>> {
        let mut cors = Cors {
            allow_credentials: c.allow_credentials,
            ..Cors::default()
        };
        if c.allow_origins.is_empty() {
            self.problems.at(
                at.key("allow_origins"),
                "list the allowed origins, e.g. [{exact: \"https://app.example.com\"}] ({exact: \"*\"} allows any)",
            );
        }
        for (i, m) in c.allow_origins.iter().enumerate() {
            if let Some(m) = self.origin_match(at.key("allow_origins").index(i), m) {
                cors.origins.push(m);
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                self.problems.at(
                    at.key("allow_methods").index(i),
                    format!("`{m}` is not an HTTP method"),
                );
            }
        }
        cors.allow_methods = self.cors_list(at.key("allow_methods"), &c.allow_methods, false);
        cors.allow_headers = self.cors_list(at.key("allow_headers"), &c.allow_headers, true);
        cors.expose_headers = self.cors_list(at.key("expose_headers"), &c.expose_headers, true);
        if let Some(text) = &c.max_age {
            let max_age = self.duration(at.key("max_age"), text, DurationRange::DELAY);
            cors.max_age = max_age.map(|d| HeaderValue::from(d.as_secs()));
        }
        Some(Box::new(cors))
    }

    fn origin_match(&mut self, at: YamlPath, m: &StringMatchConfig) -> Option<OriginMatch> {
        match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), None, None) if e == "*" => Some(OriginMatch::Any),
            (Some(e), None, None) => Some(OriginMatch::Exact(e.clone())),
            (None, Some(p), None) if !p.is_empty() => Some(OriginMatch::Prefix(p.clone())),
            // Istio's regex must match the whole origin (RE2 full match).
            (None, None, Some(re)) => self
                .bounded_regex(at.key("regex"), &format!("^(?:{re})$"), false)
                .map(OriginMatch::Regex),
            _ => {
                self.problems.at(
                    at,
                    "give exactly one of exact, prefix (not empty) or regex for an origin",
                );
                None
            }
        }
    }

    /// A comma-separated header value of `items` (header names when `names`).
    fn cors_list(&mut self, at: YamlPath, items: &[String], names: bool) -> Option<HeaderValue> {
        if items.is_empty() {
            return None;
        }
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            if names && item != "*" && http::HeaderName::from_bytes(item.as_bytes()).is_err() {
                self.problems
                    .at(at.index(i), format!("`{item}` is not a header name"));
                ok = false;
            }
        }
        let joined = items.join(",");
        if joined.len() > MAX_CORS_HEADER {
            self.problems.at(
                at,
                format!(
                    "the list is {} bytes long; at most {MAX_CORS_HEADER} fit in one header",
                    joined.len()
                ),
            );
            return None;
        }
        match HeaderValue::from_str(&joined) {
            Ok(value) if ok => Some(value),
            Ok(_) => None,
            Err(_) => {
                self.problems
                    .at(at, "the list holds characters a header value cannot carry");
                None
            }
        }
    }
}
