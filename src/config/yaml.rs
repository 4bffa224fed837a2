//! YAML text → serde value, keeping the source line of every node.
//!
//! We parse with `saphyr` (a maintained YAML 1.2 parser that marks every node with its position)
//! and hand serde a `serde_json::Value`, so that every problem found later — unknown fields, type
//! errors and semantic checks alike — can be reported with the line it came from.

use std::collections::HashMap;
use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

use super::problems::{Problem, Problems};

/// One step of a path into the document: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into the document, shown as `routes[0].match.path_prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct YamlPath(pub Vec<Segment>);

impl YamlPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.into()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        let mut parent = self.clone();
        parent.0.pop();
        Some(parent)
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where each node of the document starts (1-based line).
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<YamlPath, usize>,
}

impl LineIndex {
    /// Whether the document sets this top-level key.
    pub fn contains_key(&self, key: &str) -> bool {
        self.lines.contains_key(&YamlPath::root().key(key))
    }

    /// The line of `path`, or of its nearest ancestor that has one (a missing field is reported
    /// at the mapping that lacks it).
    pub fn line_of(&self, path: &YamlPath) -> Option<usize> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            if let Some(line) = self.lines.get(&p) {
                return Some(*line);
            }
            current = p.parent();
        }
        None
    }
}

/// A parsed document, its line index, and the unknown fields found in it.
#[derive(Debug)]
pub struct Parsed<T> {
    pub value: T,
    pub lines: LineIndex,
    /// Unknown fields: errors, but the document was still readable, so callers go on to
    /// check its meaning and report everything together.
    pub unknown_fields: Problems,
}

/// The documents of a YAML text, or its syntax error with the line.
fn load_documents(text: &str) -> Result<Vec<MarkedYaml<'_>>, Problems> {
    MarkedYaml::load_from_str(text).map_err(|e| {
        let mut problems = Problems::default();
        problems.push(Problem {
            line: Some(e.marker().line()),
            path: None,
            message: format!("YAML syntax error: {}", e.info()),
        });
        problems
    })
}

/// Parse one YAML document into `T`.
///
/// Unknown fields are errors (a typo must never be silently ignored), but they are collected
/// rather than stopping at the first one, so a user sees every mistake at once. Syntax and type
/// errors stop parsing and are returned with any unknown fields seen before them.
pub fn parse_document<T: DeserializeOwned>(text: &str) -> Result<Parsed<T>, Problems> {
    let docs = load_documents(text)?;
    let mut problems = Problems::default();
    let mut index = LineIndex::default();
    let value = match docs.as_slice() {
        [] => Value::Object(Map::new()),
        [doc] => to_value(doc, &YamlPath::root(), &mut index, &mut problems),
        [_, second, ..] => {
            problems.push(Problem {
                line: Some(second.span.start.line()),
                path: None,
                message: "the file holds more than one YAML document; Meridian reads exactly one"
                    .into(),
            });
            Value::Null
        }
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
    for path in unknown {
        let field = match path.0.last() {
            Some(Segment::Key(k)) => k.clone(),
            _ => path.to_string(),
        };
        problems.at(
            path,
            format!(
                "unknown field `{field}`: not a setting here (check its spelling and indentation)"
            ),
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

/// Every document of a multi-document YAML text, as plain values (for `meridian import`).
pub fn parse_values(text: &str) -> Result<Vec<Value>, Problems> {
    let docs = load_documents(text)?;
    let mut problems = Problems::default();
    let mut index = LineIndex::default();
    let values = docs
        .iter()
        .map(|doc| to_value(doc, &YamlPath::root(), &mut index, &mut problems))
        .filter(|v| !v.is_null())
        .collect();
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems.with_lines(&index))
    }
}

/// Write a value as block-style YAML; strings are quoted whenever a plain scalar could be read
/// back as something else.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                out.push_str(&format!(
                    "{pad}{}:",
                    scalar_text(&Value::String(key.clone()))
                ));
                write_child(v, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // "- key: value" then the rest of the mapping aligned under it
                        let mut first = true;
                        for (key, v) in map {
                            let lead = if first {
                                format!("{pad}- ")
                            } else {
                                format!("{pad}  ")
                            };
                            first = false;
                            out.push_str(&format!(
                                "{lead}{}:",
                                scalar_text(&Value::String(key.clone()))
                            ));
                            write_child(v, indent + 2, out);
                        }
                    }
                    other => {
                        out.push_str(&format!("{pad}-"));
                        write_child(other, indent, out);
                    }
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{}\n", scalar_text(scalar))),
    }
}

fn write_child(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar => out.push_str(&format!(" {}\n", scalar_text(scalar))),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
                && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
                && !matches!(
                    s.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
            }
        }
        Value::Array(_) | Value::Object(_) => String::new(),
    }
}

fn to_value(
    node: &MarkedYaml<'_>,
    path: &YamlPath,
    index: &mut LineIndex,
    problems: &mut Problems,
) -> Value {
    index
        .lines
        .entry(path.clone())
        .or_insert(node.span.start.line());
    match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar, path, problems),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_value(item, &path.index(i), index, problems))
                .collect(),
        ),
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let key_text = match &key.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    YamlData::Value(Scalar::FloatingPoint(f)) => f.to_string(),
                    _ => {
                        problems.push(Problem {
                            line: Some(key.span.start.line()),
                            path: Some(path.clone()),
                            message: "mapping keys must be plain scalars".into(),
                        });
                        continue;
                    }
                };
                let child = path.key(key_text.clone());
                index.lines.insert(child.clone(), key.span.start.line());
                let v = to_value(value, &child, index, problems);
                out.insert(key_text, v);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => to_value(inner, path, index, problems),
        YamlData::Alias(_) => {
            problems.at(
                path.clone(),
                "YAML aliases are not supported: write the value out",
            );
            Value::Null
        }
        YamlData::BadValue => {
            problems.at(path.clone(), "value cannot be read (bad tag or scalar)");
            Value::Null
        }
    }
}

fn scalar_value(scalar: &Scalar<'_>, path: &YamlPath, problems: &mut Problems) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
            Some(n) => Value::Number(n),
            None => {
                problems.at(path.clone(), "NaN and infinite numbers are not allowed");
                Value::Null
            }
        },
        Scalar::String(s) => Value::String(s.to_string()),
    }
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

    #[test]
    fn yaml_written_reads_back_the_same() {
        let value = serde_json::json!({
            "a": "plain", "b": "needs: quoting", "c": "true", "d": 3, "e": 1.5, "f": null,
            "list": ["x", {"k": "v", "m": [1, 2]}, []], "empty": {}, "x": "127.0.0.1:80",
        });
        let text = to_yaml(&value);
        let back = parse_values(&text).unwrap();
        assert_eq!(back, vec![value], "{text}");
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        assert!(parse_document::<Doc>("name: a\nname: b\n").is_err());
    }
}
