//! Path and authority rewrites (Envoy's `prefix_rewrite`, `regex_rewrite` and
//! `host_rewrite_literal`): pure functions of the matched route and the request path.

use http::HeaderValue;
use regex::Regex;

use crate::table::routes::PathMatch;

#[derive(Debug, Clone)]
pub enum PathRewrite {
    /// Replaces the part of the path the route's path match matched.
    Prefix(String),
    /// Every match of the pattern replaced; the substitution is in the regex crate's syntax
    /// (`${1}`), translated from the `\1` written in the config.
    Regex { regex: Regex, substitution: String },
}

#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub path: Option<PathRewrite>,
    /// Sent upstream as Host.
    pub authority: Option<HeaderValue>,
}

impl Rewrite {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.path {
            Some(PathRewrite::Prefix(p)) => parts.push(format!("rewrite prefix {p}")),
            Some(PathRewrite::Regex {
                regex,
                substitution,
            }) => parts.push(format!("rewrite path {regex} -> {substitution}")),
            None => {}
        }
        if let Some(a) = &self.authority {
            parts.push(format!(
                "rewrite authority {}",
                a.to_str().unwrap_or_default()
            ));
        }
        parts.join(", ")
    }
}

/// The path a matched request goes upstream with (the query string is the caller's).
pub fn rewrite_path(rule: &PathRewrite, matched: &PathMatch, path: &str) -> String {
    match rule {
        PathRewrite::Prefix(replacement) => replace_prefix(replacement, matched, path),
        PathRewrite::Regex {
            regex,
            substitution,
        } => regex.replace_all(path, substitution.as_str()).into_owned(),
    }
}

/// `replacement` in place of what `matched` matched: the whole path for an exact match, the
/// prefix for a prefix match, and (as Envoy does for a route matching every path) the leading
/// `/` for no path match. A regex match is refused by the compiler.
pub fn replace_prefix(replacement: &str, matched: &PathMatch, path: &str) -> String {
    let rest = match matched {
        PathMatch::Exact(_) | PathMatch::ExactIgnoreCase(_) | PathMatch::Regex(_) => "",
        PathMatch::Prefix(p) | PathMatch::PrefixIgnoreCase(p) => path.get(p.len()..).unwrap_or(""),
        PathMatch::Any => path.get(1..).unwrap_or(""),
    };
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    out.push_str(rest);
    out
}

/// `\1`-style substitution (Envoy's, RE2's) into the regex crate's `${1}`: `\0`..`\9` name
/// groups, `\\` is a backslash, `$` is literal. Errors name what is wrong; `groups` is the
/// pattern's group count (the whole match included).
pub fn translate_substitution(text: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(d) if d.is_ascii_digit() => {
                    let n = d as usize - '0' as usize;
                    if n >= groups {
                        return Err(format!(
                            "`\\{n}` names a capture group the pattern does not have (it has {})",
                            groups.saturating_sub(1)
                        ));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                _ => {
                    return Err(
                        "a `\\` must be followed by a group number (\\1) or another `\\`".into(),
                    );
                }
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_replace_what_matched() {
        let cases = [
            (
                PathMatch::Prefix("/api".into()),
                "/v2",
                "/api/users",
                "/v2/users",
            ),
            (
                PathMatch::Prefix("/api/".into()),
                "/",
                "/api/users",
                "/users",
            ),
            (
                PathMatch::PrefixIgnoreCase("/api".into()),
                "/v2",
                "/API/x",
                "/v2/x",
            ),
            (PathMatch::Exact("/old".into()), "/new", "/old", "/new"),
            (
                PathMatch::ExactIgnoreCase("/old".into()),
                "/new",
                "/OLD",
                "/new",
            ),
            (PathMatch::Any, "/v2/", "/users", "/v2/users"),
            (PathMatch::Any, "/v2", "/users", "/v2users"),
        ];
        for (matched, replacement, path, want) in cases {
            assert_eq!(
                rewrite_path(&PathRewrite::Prefix(replacement.into()), &matched, path),
                want,
                "{matched:?} {replacement} {path}"
            );
        }
    }

    #[test]
    fn regex_rewrites_replace_every_match_with_groups() {
        let rule = |pattern: &str, substitution: &str| {
            let regex = Regex::new(pattern).unwrap();
            let substitution = translate_substitution(substitution, regex.captures_len()).unwrap();
            PathRewrite::Regex {
                regex,
                substitution,
            }
        };
        let cases = [
            (
                rule("^/service/([^/]+)(/.*)$", "\\2/instance/\\1"),
                "/service/foo/v1/api",
                "/v1/api/instance/foo",
            ),
            (rule("o", "0"), "/foo/boo", "/f00/b00"),
            (rule("^/a", "/b$1"), "/a/x", "/b$1/x"),
            (rule("^(/x)", "\\1\\\\\\0"), "/x/y", "/x\\/x/y"),
            (rule("nomatch", "z"), "/same", "/same"),
        ];
        for (r, path, want) in cases {
            assert_eq!(rewrite_path(&r, &PathMatch::Any, path), want, "{path}");
        }
    }

    #[test]
    fn substitutions_are_checked() {
        assert!(
            translate_substitution("\\2", 2)
                .unwrap_err()
                .contains("\\2")
        );
        assert!(translate_substitution("x\\", 2).is_err());
        assert!(translate_substitution("\\n", 2).is_err());
        assert_eq!(translate_substitution("\\1-$", 2).unwrap(), "${1}-$$");
    }
}
