//! Header rules (`request_headers`, `response_headers`): remove, then set, then add; values
//! may hold `%CLIENT_COUNTRY%`, `%CLIENT_ADDRESS%`, `%REGION%` and `%REQUEST_ID%`.
//!
//! Templates are parsed and checked at compile time; on the request path a value without
//! variables is a prebuilt `HeaderValue` (a reference-count increment to use).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

/// A variable a header value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientCountry,
    ClientAddress,
    /// The region serving the request (the local region for an answer from the edge).
    Region,
    RequestId,
}

impl Var {
    const ALL: [(&'static str, Var); 4] = [
        ("CLIENT_COUNTRY", Var::ClientCountry),
        ("CLIENT_ADDRESS", Var::ClientAddress),
        ("REGION", Var::Region),
        ("REQUEST_ID", Var::RequestId),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone)]
pub enum Template {
    Fixed(HeaderValue),
    Expand(Vec<Piece>),
}

/// The values variables expand to for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct VarValues<'a> {
    pub country: Option<&'a str>,
    pub client: Option<IpAddr>,
    pub region: &'a str,
    pub request_id: Option<&'a HeaderValue>,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn describe(&self) -> String {
        let names = |list: &[(HeaderName, Template)]| {
            list.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut parts = Vec::new();
        if !self.remove.is_empty() {
            let removed: Vec<&str> = self.remove.iter().map(HeaderName::as_str).collect();
            parts.push(format!("remove {}", removed.join(" ")));
        }
        if !self.set.is_empty() {
            parts.push(format!("set {}", names(&self.set)));
        }
        if !self.add.is_empty() {
            parts.push(format!("add {}", names(&self.add)));
        }
        parts.join(", ")
    }

    /// Whether any value needs the client's address or country.
    pub fn uses_client(&self) -> bool {
        self.set.iter().chain(&self.add).any(|(_, t)| match t {
            Template::Fixed(_) => false,
            Template::Expand(pieces) => pieces
                .iter()
                .any(|p| matches!(p, Piece::Var(Var::ClientAddress | Var::ClientCountry))),
        })
    }

    /// Remove, set, then add. A value that expands to nothing is not written (Envoy's rule).
    pub fn apply(&self, headers: &mut HeaderMap, vars: &VarValues<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, template) in &self.set {
            match expand(template, vars) {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        for (name, template) in &self.add {
            if let Some(value) = expand(template, vars) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// Parse a configured value. `%%` is a literal `%`.
pub fn parse_template(text: &str) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(next) = after.strip_prefix('%') {
            literal.push('%');
            rest = next;
            continue;
        }
        let Some(end) = after.find('%') else {
            return Err(
                "a `%` starts a variable such as %REGION%; write `%%` for a literal %".into(),
            );
        };
        let name = &after[..end];
        let Some((_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
            let known: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("%{n}%")).collect();
            return Err(format!(
                "unknown variable %{name}%; use {}",
                known.join(", ")
            ));
        };
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Var(*var));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    let check = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| {
            format!("{text:?} is not a valid header value (control characters such as CR or LF are not allowed)")
        })
    };
    if pieces.is_empty() {
        return check(&literal).map(Template::Fixed);
    }
    for piece in &pieces {
        if let Piece::Text(t) = piece {
            check(t)?;
        }
    }
    if !literal.is_empty() {
        check(&literal)?;
        pieces.push(Piece::Text(literal));
    }
    Ok(Template::Expand(pieces))
}

/// The value for one request; `None` when it comes out empty.
pub fn expand(template: &Template, vars: &VarValues<'_>) -> Option<HeaderValue> {
    let pieces = match template {
        Template::Fixed(v) => return (!v.is_empty()).then(|| v.clone()),
        Template::Expand(pieces) => pieces,
    };
    let mut out: Vec<u8> = Vec::with_capacity(64);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Var(Var::ClientCountry) => {
                out.extend_from_slice(vars.country.unwrap_or_default().as_bytes())
            }
            Piece::Var(Var::ClientAddress) => {
                if let Some(ip) = vars.client {
                    out.extend_from_slice(ip.to_canonical().to_string().as_bytes());
                }
            }
            Piece::Var(Var::Region) => out.extend_from_slice(vars.region.as_bytes()),
            Piece::Var(Var::RequestId) => {
                if let Some(id) = vars.request_id {
                    out.extend_from_slice(id.as_bytes());
                }
            }
        }
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Headers no rule may touch: hop-by-hop and framing headers (Meridian owns them on each
/// hop), Host (use `rewrite.authority`), and the headers Meridian itself sets.
pub fn reserved(name: &HeaderName, response: bool) -> Option<&'static str> {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "host",
    ];
    let n = name.as_str();
    if n == "host" && !response {
        return Some("Host is set with `rewrite.authority`, not a header rule");
    }
    if HOP.contains(&n) {
        return Some("a hop-by-hop or framing header: Meridian sets it on each connection");
    }
    let own: &[&str] = if response {
        &["x-meridian-region", "x-request-id", "x-meridian-decision"]
    } else {
        &[
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
            "x-meridian-visited",
            "x-meridian-debug",
        ]
    };
    own.contains(&n)
        .then_some("Meridian sets this header itself (use %REQUEST_ID% to copy the request id)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> VarValues<'static> {
        static ID: HeaderValue = HeaderValue::from_static("abc123");
        VarValues {
            country: Some("DE"),
            client: Some("::ffff:198.51.100.7".parse().unwrap()),
            region: "eu-west-1",
            request_id: Some(&ID),
        }
    }

    #[test]
    fn templates_expand_variables() {
        let cases = [
            ("plain", Some("plain")),
            ("%REGION%", Some("eu-west-1")),
            (
                "from %CLIENT_COUNTRY% at %CLIENT_ADDRESS%",
                Some("from DE at 198.51.100.7"),
            ),
            ("id=%REQUEST_ID%;", Some("id=abc123;")),
            ("100%% sure", Some("100% sure")),
            ("", None),
        ];
        for (text, want) in cases {
            let t = parse_template(text).unwrap();
            assert_eq!(
                expand(&t, &vars()).as_ref().map(|v| v.to_str().unwrap()),
                want,
                "{text}"
            );
        }
        let unknown = parse_template("%COUNTRY%").unwrap_err();
        assert!(unknown.contains("unknown variable %COUNTRY%"), "{unknown}");
        assert!(parse_template("50%").is_err());
        assert!(
            parse_template("a\r\nb")
                .unwrap_err()
                .contains("not a valid header value")
        );
        assert!(parse_template("%REGION%\n").is_err());
        // Unknown country: nothing to write.
        let t = parse_template("%CLIENT_COUNTRY%").unwrap();
        assert_eq!(expand(&t, &VarValues::default()), None);
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let rules = HeaderRules {
            remove: vec![name("x-old"), name("x-set")],
            set: vec![
                (name("x-set"), parse_template("%REGION%").unwrap()),
                (name("x-empty"), parse_template("%CLIENT_COUNTRY%").unwrap()),
            ],
            add: vec![(name("x-add"), parse_template("two").unwrap())],
        };
        let mut h = HeaderMap::new();
        h.insert("x-old", "1".parse().unwrap());
        h.insert("x-set", "client".parse().unwrap());
        h.insert("x-add", "one".parse().unwrap());
        h.insert("x-empty", "was".parse().unwrap());
        rules.apply(&mut h, &VarValues::default());
        assert!(!h.contains_key("x-old"));
        // An empty expansion removes what the client sent rather than forwarding it.
        assert!(!h.contains_key("x-set"));
        assert!(!h.contains_key("x-empty"));
        let added: Vec<_> = h.get_all("x-add").iter().collect();
        assert_eq!(added, ["one", "two"]);
        rules.apply(&mut h, &vars());
        assert_eq!(h["x-set"], "eu-west-1");
    }

    #[test]
    fn reserved_headers() {
        for (n, response, refused) in [
            ("connection", false, true),
            ("transfer-encoding", true, true),
            ("host", false, true),
            ("x-request-id", false, true),
            ("x-request-id", true, true),
            ("x-forwarded-for", true, false),
            ("x-custom", false, false),
        ] {
            let name = HeaderName::from_static(n);
            assert_eq!(
                reserved(&name, response).is_some(),
                refused,
                "{n} {response}"
            );
        }
    }
}
