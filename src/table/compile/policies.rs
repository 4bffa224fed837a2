//! Compiling route policies: bounded regexes, the extra match conditions, rewrite, redirect,
//! direct response and header rules. Every problem names its field; nothing here is reached
//! for a route that uses none of them.

use bytes::Bytes;
use http::{HeaderName, StatusCode};
use regex::RegexBuilder;

use crate::config::{
    DirectResponseConfig, HeaderMatchConfig, HeaderRulesConfig, RedirectConfig, RewriteConfig,
};
use crate::table::policies::RoutePolicies;
use crate::table::policies::answer::{EdgeAnswer, Redirect, RedirectPath};
use crate::table::policies::headers::{HeaderRules, parse_template, reserved};
use crate::table::policies::matching::{ExtraMatch, QueryMatch};
use crate::table::policies::rewrite::{PathRewrite, Rewrite, translate_substitution};

use super::*;

/// Longest regex pattern accepted, in bytes.
pub(super) const MAX_REGEX_LEN: usize = 8 * 1024;
/// Compiled program and lazy DFA limits per regex: far above any sane route pattern, far
/// below what a hostile one could make the process allocate.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_SIZE_LIMIT: usize = 2 << 20;
/// Longest redirect host or path, and direct response body, accepted.
const MAX_REDIRECT_PART: usize = 8 * 1024;
const MAX_DIRECT_BODY: usize = 64 * 1024;

impl Compiler<'_> {
    /// A regex within the size limits, or a problem saying why not.
    pub(super) fn bounded_regex(
        &mut self,
        at: YamlPath,
        text: &str,
        ignore_case: bool,
    ) -> Option<Regex> {
        if text.len() > MAX_REGEX_LEN {
            self.problems.at(
                at,
                format!(
                    "the pattern is {} bytes, more than the limit of {MAX_REGEX_LEN}",
                    text.len()
                ),
            );
            return None;
        }
        match RegexBuilder::new(text)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
        {
            Ok(re) => Some(re),
            Err(regex::Error::CompiledTooBig(limit)) => {
                self.problems.at(
                    at,
                    format!("the pattern compiles to more than {limit} bytes; simplify it"),
                );
                None
            }
            Err(e) => {
                self.problems
                    .at(at, format!("invalid regular expression: {e}"));
                None
            }
        }
    }

    /// One header or query parameter condition.
    pub(super) fn value_match(
        &mut self,
        at: YamlPath,
        h: &HeaderMatchConfig,
    ) -> Option<HeaderValueMatch> {
        Some(match (&h.exact, &h.prefix, &h.regex, h.present) {
            (Some(v), None, None, None) => HeaderValueMatch::Exact(v.clone()),
            (None, Some(v), None, None) => HeaderValueMatch::Prefix(v.clone()),
            (None, None, Some(re), None) => {
                HeaderValueMatch::Regex(self.bounded_regex(at.key("regex"), re, false)?)
            }
            (None, None, None, Some(false)) => HeaderValueMatch::Absent,
            (None, None, None, _) => HeaderValueMatch::Present,
            _ => {
                self.problems
                    .at(at, "give at most one of exact, prefix, regex, present");
                return None;
            }
        })
    }

    /// `query`, `scheme`, `port` and `without_headers`; `None` when the route uses none.
    pub(super) fn extra_match(
        &mut self,
        here: &YamlPath,
        r: &RouteConfig,
    ) -> Option<Box<ExtraMatch>> {
        let m = &r.matches;
        if m.query.is_empty()
            && m.scheme.is_none()
            && m.port.is_none()
            && m.without_headers.is_empty()
        {
            return None;
        }
        let at = here.key("match");
        let mut extra = ExtraMatch::default();
        for (i, q) in m.query.iter().enumerate() {
            let at = at.key("query").index(i);
            if q.name.is_empty() {
                self.problems
                    .at(at.key("name"), "a query parameter needs a name");
                continue;
            }
            if let Some(value) = self.value_match(at, q) {
                extra.query.push(QueryMatch {
                    name: q.name.clone(),
                    value,
                });
            }
        }
        extra.without_headers = self.header_list(at.key("without_headers"), &m.without_headers);
        if let Some(scheme) = &m.scheme {
            match scheme.to_ascii_lowercase().as_str() {
                "http" => extra.https = Some(false),
                "https" => extra.https = Some(true),
                _ => self.problems.at(
                    at.key("scheme"),
                    format!("`{scheme}` is not a scheme Meridian serves; use http or https"),
                ),
            }
        }
        if let Some(port) = m.port {
            match u16::try_from(port) {
                Ok(p) if p > 0 => extra.port = Some(p),
                _ => self
                    .problems
                    .at(at.key("port"), format!("{port} is not a port (1..65535)")),
            }
        }
        Some(Box::new(extra))
    }

    /// Header conditions of a list (`headers`, `without_headers`).
    pub(super) fn header_list(
        &mut self,
        at: YamlPath,
        list: &[HeaderMatchConfig],
    ) -> Vec<HeaderMatch> {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            let at = at.index(i);
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                self.problems.at(
                    at.key("name"),
                    format!("`{}` is not a valid header name", h.name),
                );
                continue;
            };
            if let Some(value) = self.value_match(at, h) {
                out.push(HeaderMatch { name, value });
            }
        }
        out
    }

    /// Rewrite, redirect, direct response and header rules; `None` when the route has none.
    pub(super) fn route_policies(
        &mut self,
        here: &YamlPath,
        r: &RouteConfig,
        path: Option<&PathMatch>,
    ) -> Option<Box<RoutePolicies>> {
        if r.rewrite.is_none()
            && r.redirect.is_none()
            && r.direct_response.is_none()
            && r.request_headers.is_none()
            && r.response_headers.is_none()
        {
            return None;
        }
        if r.redirect.is_some() && r.direct_response.is_some() {
            self.problems.at(
                here.key("redirect"),
                "give either redirect or direct_response, not both",
            );
        }
        if r.rewrite.is_some() && (r.redirect.is_some() || r.direct_response.is_some()) {
            self.problems.at(
                here.key("rewrite"),
                "a route that answers at the edge sends nothing upstream to rewrite",
            );
        }
        let policies = RoutePolicies {
            rewrite: r
                .rewrite
                .as_ref()
                .and_then(|rw| self.rewrite(here.key("rewrite"), rw, path)),
            answer: match (&r.redirect, &r.direct_response) {
                (Some(rd), _) => self.redirect(here.key("redirect"), rd, path),
                (None, Some(d)) => self.direct_response(here.key("direct_response"), d),
                (None, None) => None,
            },
            request_headers: r
                .request_headers
                .as_ref()
                .map(|h| self.header_rules(here.key("request_headers"), h, false))
                .filter(|rules| !rules.is_empty()),
            response_headers: r
                .response_headers
                .as_ref()
                .map(|h| self.header_rules(here.key("response_headers"), h, true))
                .filter(|rules| !rules.is_empty()),
        };
        (!policies.is_empty()).then(|| Box::new(policies))
    }

    fn rewrite(
        &mut self,
        at: YamlPath,
        rw: &RewriteConfig,
        path: Option<&PathMatch>,
    ) -> Option<Rewrite> {
        let mut out = Rewrite::default();
        match (&rw.prefix, &rw.path_regex) {
            (Some(_), Some(_)) => self
                .problems
                .at(at.clone(), "give either prefix or path_regex, not both"),
            (Some(prefix), None) => {
                if matches!(path, Some(PathMatch::Regex(_))) {
                    self.problems.at(
                        at.key("prefix"),
                        "a route matched by path_regex has no prefix to replace; use rewrite.path_regex",
                    );
                } else if self.path_part(at.key("prefix"), prefix) {
                    out.path = Some(PathRewrite::Prefix(prefix.clone()));
                }
            }
            (None, Some(re)) => {
                let here = at.key("path_regex");
                if let Some(regex) = self.bounded_regex(here.key("pattern"), &re.pattern, false) {
                    match translate_substitution(&re.substitution, regex.captures_len()) {
                        Ok(substitution) => {
                            out.path = Some(PathRewrite::Regex {
                                regex,
                                substitution,
                            })
                        }
                        Err(e) => self.problems.at(here.key("substitution"), e),
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(authority) = &rw.authority {
            let valid = !authority.is_empty()
                && crate::http1::strict::valid_authority(authority.as_bytes());
            match HeaderValue::from_str(authority) {
                Ok(v) if valid => out.authority = Some(v),
                _ => self.problems.at(
                    at.key("authority"),
                    format!("`{authority}` is not a host[:port]"),
                ),
            }
        }
        (out.path.is_some() || out.authority.is_some()).then_some(out)
    }

    /// A path (or prefix) written in a rewrite or redirect: starts with '/', is a valid
    /// request target, and is not huge.
    fn path_part(&mut self, at: YamlPath, path: &str) -> bool {
        if path.len() > MAX_REDIRECT_PART {
            self.problems.at(
                at,
                format!(
                    "{} bytes is longer than the limit of {MAX_REDIRECT_PART}",
                    path.len()
                ),
            );
            return false;
        }
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path).is_err() {
            self.problems.at(
                at,
                format!(
                    "`{path}` is not a path: it must start with '/' and hold only URL characters"
                ),
            );
            return false;
        }
        true
    }

    fn redirect(
        &mut self,
        at: YamlPath,
        rd: &RedirectConfig,
        path: Option<&PathMatch>,
    ) -> Option<EdgeAnswer> {
        let before = self.problems.len();
        let code = match rd.code.unwrap_or(301) {
            c @ (301 | 302 | 303 | 307 | 308) => {
                StatusCode::from_u16(c as u16).unwrap_or(StatusCode::MOVED_PERMANENTLY)
            }
            other => {
                self.problems.at(
                    at.key("code"),
                    format!("{other} is not a redirect code; use 301, 302, 303, 307 or 308"),
                );
                StatusCode::MOVED_PERMANENTLY
            }
        };
        let scheme = match rd.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("http") => Some("http"),
            Some("https") => Some("https"),
            Some(_) => {
                self.problems.at(
                    at.key("scheme"),
                    format!(
                        "`{}` is not http or https",
                        rd.scheme.as_deref().unwrap_or("")
                    ),
                );
                None
            }
        };
        if let Some(host) = &rd.host {
            // A host without a port: an IPv6 literal keeps its brackets.
            let no_port = !host.contains(':') || (host.starts_with('[') && host.ends_with(']'));
            let bare = host.len() <= MAX_REDIRECT_PART
                && !host.is_empty()
                && no_port
                && crate::http1::strict::valid_authority(host.as_bytes());
            if !bare {
                self.problems.at(
                    at.key("host"),
                    format!(
                        "`{}` is not a host name (give the port as `port`)",
                        truncated(host)
                    ),
                );
            }
        }
        let port = rd.port.and_then(|p| match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.problems
                    .at(at.key("port"), format!("{p} is not a port (1..65535)"));
                None
            }
        });
        let redirect_path = match (&rd.path, &rd.prefix) {
            (Some(_), Some(_)) => {
                self.problems
                    .at(at.clone(), "give either path or prefix, not both");
                None
            }
            (Some(p), None) => self
                .path_part(at.key("path"), p)
                .then(|| RedirectPath::Whole(p.clone())),
            (None, Some(p)) => {
                if matches!(path, Some(PathMatch::Regex(_))) {
                    self.problems.at(
                        at.key("prefix"),
                        "a route matched by path_regex has no prefix to replace; use redirect.path",
                    );
                }
                self.path_part(at.key("prefix"), p)
                    .then(|| RedirectPath::Prefix(p.clone()))
            }
            (None, None) => None,
        };
        (self.problems.len() == before).then(|| {
            EdgeAnswer::Redirect(Redirect {
                scheme,
                host: rd.host.clone(),
                port,
                path: redirect_path,
                code,
            })
        })
    }

    fn direct_response(&mut self, at: YamlPath, d: &DirectResponseConfig) -> Option<EdgeAnswer> {
        let status = match u16::try_from(d.status)
            .ok()
            .filter(|s| (200..=599).contains(s))
        {
            Some(s) => StatusCode::from_u16(s).ok(),
            None => None,
        };
        let Some(status) = status else {
            self.problems.at(
                at.key("status"),
                format!(
                    "{} is not a status a response can have (200..599)",
                    d.status
                ),
            );
            return None;
        };
        let body = d.body.clone().unwrap_or_default();
        if body.len() > MAX_DIRECT_BODY {
            self.problems.at(
                at.key("body"),
                format!(
                    "the body is {} bytes, more than the limit of {MAX_DIRECT_BODY}",
                    body.len()
                ),
            );
            return None;
        }
        Some(EdgeAnswer::Direct {
            status,
            body: Bytes::from(body),
        })
    }

    fn header_rules(&mut self, at: YamlPath, h: &HeaderRulesConfig, response: bool) -> HeaderRules {
        let mut rules = HeaderRules::default();
        let name = |c: &mut Self, at: YamlPath, text: &str| -> Option<HeaderName> {
            let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
                c.problems.at(
                    at,
                    format!("`{}` is not a valid header name", truncated(text)),
                );
                return None;
            };
            if let Some(why) = reserved(&name, response) {
                c.problems.at(
                    at,
                    format!("`{name}` cannot be changed by a header rule: {why}"),
                );
                return None;
            }
            Some(name)
        };
        for (i, n) in h.remove.iter().enumerate() {
            if let Some(n) = name(self, at.key("remove").index(i), n) {
                rules.remove.push(n);
            }
        }
        for (key, list, out) in [
            ("set", &h.set, &mut rules.set),
            ("add", &h.add, &mut rules.add),
        ] {
            for (n, value) in list {
                let here = at.key(key).key(n.clone());
                let Some(n) = name(self, here.clone(), n) else {
                    continue;
                };
                match parse_template(value) {
                    Ok(t) => out.push((n, t)),
                    Err(e) => self.problems.at(here, e),
                }
            }
        }
        rules
    }

    /// `cluster`/`clusters` of a route that answers at the edge: there must be none.
    pub(super) fn edge_target(&mut self, here: &YamlPath, r: &RouteConfig) -> Option<RouteTarget> {
        if r.cluster.is_some() || !r.clusters.is_empty() {
            let key = if r.cluster.is_some() {
                "cluster"
            } else {
                "clusters"
            };
            self.problems.at(
                here.key(key),
                "a route with redirect or direct_response answers at the edge; remove its cluster",
            );
            return None;
        }
        Some(RouteTarget::Edge)
    }
}

/// A value short enough to quote in a message.
fn truncated(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
