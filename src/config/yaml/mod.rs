//! YAML text → a typed config, keeping the source line of every node; used by
//! [`super::load_str`], `meridian geo build` and `meridian import` (through `super`'s re-exports).
//!
//! We parse with `saphyr` (a maintained YAML 1.2 parser that marks every node with its position)
//! and hand serde a `serde_json::Value`, so that every problem found later — unknown fields, type
//! errors and semantic checks alike — can be reported with the line it came from.
//!
//! A config is built straight from the parser's events, in time and memory linear in its size
//! ([`event_reader`]). Whatever that path does not handle (aliases, odd keys, unreadable scalars,
//! syntax errors, several documents) goes through saphyr's node tree instead ([`tree_reader`]),
//! which reports it. Both record each node's line in a [`LineIndex`], found by [`YamlPath`];
//! [`writer`] turns a value back into YAML. This module owns the choice between the readers and
//! the unknown-field problems, each with its nearest accepted spelling.

mod event_reader;
mod line_index;
mod path;
mod tree_reader;
mod writer;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::problems::Problems;
use event_reader::from_events;
use tree_reader::from_tree;

pub use line_index::LineIndex;
pub use path::{Segment, YamlPath};
pub use tree_reader::parse_values;
pub use writer::to_yaml;

/// A parsed document, its line index, and the unknown fields found in it.
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: T,
    pub lines: LineIndex,
    /// Unknown fields: errors, but the document was still readable, so callers go on to
    /// check its meaning and report everything together.
    pub unknown_fields: Problems,
}

/// Deepest nesting a document may have: a config is a handful of levels deep, and building,
/// reading and dropping a value are recursive, so a hostile document must not go deeper.
pub const MAX_NESTING: usize = 64;

/// Parse one YAML document into `T`.
///
/// Unknown fields are errors (a typo must never be silently ignored), but they are collected
/// rather than stopping at the first one, so a user sees every mistake at once. Syntax and type
/// errors stop parsing and are returned with any unknown fields seen before them.
pub fn parse_document<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, Problems> {
    let (value, index, mut problems) = match from_events(text) {
        Some((value, index)) => (value, index, Problems::default()),
        None => from_tree(text)?,
    };
    if !problems.is_empty() {
        return Err(problems.with_lines(&index));
    }
    // An empty document means "all defaults"; validation then says what is missing.
    let value = if value.is_null() {
        Value::Object(Map::new())
    } else {
        value
    };

    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path| unknown.push(from_ignored(&path));
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(ignored)
    };
    let accepted = super::fields::accepted_fields::<T>(text, &unknown);
    for path in unknown {
        let field = match path.0.last() {
            Some(Segment::Key(k)) => k.clone(),
            _ => path.to_string(),
        };
        let parent = YamlPath(path.0[..path.0.len().saturating_sub(1)].to_vec());
        let hint = accepted
            .get(&parent)
            .and_then(|fields| super::words::nearest(&field, fields))
            .map(|near| format!("did you mean `{near}`?"))
            .unwrap_or_else(|| "check its spelling and indentation".into());
        problems.at(
            path,
            format!("unknown field `{field}`: not a setting here ({hint})"),
        );
    }
    match result {
        Ok(value) => Ok(Parsed {
            value,
            unknown_fields: problems.with_lines(&index),
            lines: index,
        }),
        Err(e) => {
            let path = from_path_to_error(e.path());
            problems.at(path, e.inner().to_string());
            Err(problems.with_lines(&index))
        }
    }
}

/// The document's value again, for [`super::fields`]: parsed anew rather than kept from a
/// first pass that almost always finds nothing to suggest.
pub(super) fn reparse(text: &str) -> Option<Value> {
    let value = match from_events(text) {
        Some((value, _)) => value,
        None => from_tree(text).ok()?.0,
    };
    Some(if value.is_null() {
        Value::Object(Map::new())
    } else {
        value
    })
}

fn from_ignored(path: &serde_ignored::Path<'_>) -> YamlPath {
    use serde_ignored::Path as P;
    match path {
        P::Root => YamlPath::root(),
        P::Seq { parent, index } => from_ignored(parent).index(*index),
        P::Map { parent, key } => from_ignored(parent).key(key.clone()),
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            from_ignored(parent)
        }
    }
}

fn from_path_to_error(path: &serde_path_to_error::Path) -> YamlPath {
    use serde_path_to_error::Segment as S;
    let mut out = YamlPath::root();
    for segment in path.iter() {
        match segment {
            S::Seq { index } => out = out.index(*index),
            S::Map { key } => out = out.key(key.clone()),
            S::Enum { .. } | S::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Doc {
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    struct Item {
        #[allow(dead_code)]
        size: u32,
    }

    #[test]
    fn collects_every_unknown_field_with_its_line() {
        let text = "name: a\nnmae: b\nitems:\n  - size: 1\n    colour: red\n";
        let parsed = parse_document::<Doc>(text).unwrap();
        assert_eq!(parsed.value.name, "a");
        let problems = parsed.unknown_fields;
        let listed: Vec<_> = problems.iter().map(|p| (p.line, p.to_string())).collect();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].0, Some(2));
        assert!(listed[0].1.contains("unknown field `nmae`"), "{listed:?}");
        assert_eq!(listed[1].0, Some(5));
        assert!(listed[1].1.contains("items[0].colour"), "{listed:?}");
    }

    #[test]
    fn type_error_names_path_and_line() {
        let text = "name: a\nitems:\n  - size: big\n";
        let problems = parse_document::<Doc>(text).unwrap_err();
        let p = problems.iter().next().unwrap();
        assert_eq!(p.line, Some(3));
        assert!(p.to_string().contains("items[0].size"), "{p}");
    }

    #[test]
    fn syntax_error_has_line() {
        let problems = parse_document::<Doc>("name: a\nitems: [1, 2\n").unwrap_err();
        let p = problems.iter().next().unwrap();
        assert!(p.line.is_some());
        assert!(p.to_string().contains("YAML syntax error"));
    }

    /// Every path in `value`, and below each a key the document does not have.
    fn paths(value: &Value, at: YamlPath, out: &mut Vec<YamlPath>) {
        out.push(at.key("not-in-the-document"));
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    paths(item, at.index(i), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    paths(v, at.key(k.clone()), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// The event path reads what the node tree reads, line for line, and leaves to the tree
    /// exactly what it does not handle.
    #[test]
    fn events_and_tree_agree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts: Vec<(String, String)> = Vec::new();
        for dir in ["config", "fuzz/corpus/config", "tests/fixtures/istio"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    texts.push((path.display().to_string(), text));
                }
            }
        }
        let edge_cases = [
            "",
            "# only a comment\n",
            "---\n",
            "---\na: 1\n...\n",
            "a: 1\n---\nb: 2\n",
            "plain\n",
            "[1, 2.5, -3, 0x10, 0o7, .inf, ~, null, true, True, yes, '1', \"two\"]\n",
            "a: !!str 12\nb: !!int '7'\nc: !custom 5\nd: !!float 1\ne: !!null ~\n",
            "a: !!int x\n",
            "!!map {a: 1}\n",
            "a: !thing {b: [1, {c: d}]}\n",
            "a: &x {b: 1}\nc: *x\n",
            "a: &x 1\nb: 2\n",
            "1: one\n'1': also one\n",
            "1.0: a\n1.00: b\n",
            "true: a\nfalse: b\n3: c\n-2.5: d\n",
            "~: a\n",
            "[a, b]: c\n",
            "? |\n  block key\n: v\n",
            "a:\n  - b\n  -\n  - - c\n    - d\n  - {e: f, g: [h]}\n",
            "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
            "a: 1\na: 2\n",
            "a: [1, 2\n",
            "a:\n  b: 1\n   c: 2\n",
            "a: .nan\n",
            "list:\n- x\n- y\nempty: {}\nnone: []\nnull_value:\n",
            "routes:\n  - name: r\n    hosts: [\"a.example.com\", '*.b']\n    match: { path_prefix: /v1/ }\n",
        ];
        texts.extend(
            edge_cases
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("edge case {i}: {t:?}"), t.to_string())),
        );
        let mut by_events = 0;
        for (name, text) in &texts {
            let tree = from_tree(text);
            let Some((value, index)) = from_events(text) else {
                continue;
            };
            by_events += 1;
            let Ok((tree_value, tree_index, problems)) = tree else {
                panic!("{name}: the tree fails what the events read");
            };
            assert!(problems.is_empty(), "{name}: {problems:?}");
            let tree_value = if tree_value.is_null() && text.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                tree_value
            };
            assert_eq!(value, tree_value, "{name}");
            let mut all = Vec::new();
            paths(&value, YamlPath::root(), &mut all);
            for path in all {
                assert_eq!(
                    index.line_of(&path),
                    tree_index.line_of(&path),
                    "{name}: {path}"
                );
            }
        }
        // Most of them go the fast way (the rest: aliases, bad keys, errors, several documents).
        assert!(
            by_events * 2 > texts.len(),
            "{by_events} of {}",
            texts.len()
        );
    }

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        for deep in [
            "a: ".to_owned() + &"[".repeat(MAX_NESTING + 1) + &"]".repeat(MAX_NESTING + 1),
            "a: ".to_owned() + &"{k: ".repeat(MAX_NESTING + 1) + "x" + &"}".repeat(MAX_NESTING + 1),
            "a:\n".to_owned()
                + &(1..=MAX_NESTING + 1)
                    .map(|i| format!("{}k:\n", " ".repeat(i)))
                    .collect::<String>(),
        ] {
            let err = parse_document::<Value>(&deep)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<String>();
            assert!(err.contains("nested more than 64 levels"), "{err}");
            let err = parse_values(&deep)
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<String>();
            assert!(err.contains("nested more than 64 levels"), "{err}");
        }
        // Far deeper: the parser's own limit answers first, as a syntax error; no crash.
        let far = "a: ".to_owned() + &"[".repeat(1_000_000);
        assert!(parse_document::<Value>(&far).is_err());
        assert!(parse_values(&far).is_err());
        let fine = "a: ".to_owned() + &"[".repeat(MAX_NESTING - 1) + &"]".repeat(MAX_NESTING - 1);
        assert!(parse_document::<Value>(&fine).is_ok());
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(parse_document::<Doc>("name: a\nname: b\n").is_err());
    }
}
