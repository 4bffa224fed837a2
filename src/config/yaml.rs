//! YAML text → serde value, keeping the source line of every node.
//!
//! We parse with `saphyr` (a maintained YAML 1.2 parser that marks every node with its position)
//! and hand serde a `serde_json::Value`, so that every problem found later — unknown fields, type
//! errors and semantic checks alike — can be reported with the line it came from.
//!
//! A config is built straight from the parser's events, in time and memory linear in its size.
//! Whatever that path does not handle (aliases, odd keys, unreadable scalars, syntax errors,
//! several documents) goes through saphyr's node tree instead, which reports it.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser};
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

/// Where each node of the document starts (1-based line): the document's tree of keys and
/// indices, each node found from its parent in one hash probe.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    /// Line of each node by id; the root, once recorded, is node 0.
    lines: Vec<usize>,
    /// (parent node, step) → child node.
    children: foldhash::HashMap<(u32, Step), u32>,
    /// Mapping keys by id: the thousands of routes of a large config share a dozen keys.
    keys: foldhash::HashMap<Box<str>, u32>,
}

/// One step from a node to its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Key(u32),
    Index(u32),
}

/// What recording a node does when the document already has one at that path (a mapping key
/// names its node even when it repeats; any other node keeps the first line recorded).
#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    Keep,
    Replace,
}

impl LineIndex {
    /// Whether the document sets this top-level key.
    pub fn contains_key(&self, key: &str) -> bool {
        !self.lines.is_empty()
            && self
                .keys
                .get(key)
                .is_some_and(|k| self.children.contains_key(&(0, Step::Key(*k))))
    }

    /// The line of `path`, or of its nearest ancestor that has one (a missing field is reported
    /// at the mapping that lacks it).
    pub fn line_of(&self, path: &YamlPath) -> Option<usize> {
        let mut node = 0;
        let mut line = *self.lines.first()?;
        for segment in &path.0 {
            let step = match segment {
                Segment::Key(key) => self.keys.get(key.as_str()).map(|k| Step::Key(*k)),
                Segment::Index(i) => u32::try_from(*i).ok().map(Step::Index),
            };
            let Some(child) = step.and_then(|step| self.children.get(&(node, step))) else {
                break;
            };
            node = *child;
            line = self.lines.get(node as usize).copied().unwrap_or(line);
        }
        Some(line)
    }

    /// Record the root (node 0) at `line`, unless it already is.
    fn root(&mut self, line: usize) -> u32 {
        if self.lines.is_empty() {
            self.lines.push(line);
        }
        0
    }

    fn key_id(&mut self, key: &str) -> u32 {
        if let Some(id) = self.keys.get(key) {
            return *id;
        }
        let id = u32::try_from(self.keys.len()).unwrap_or(u32::MAX);
        self.keys.insert(key.into(), id);
        id
    }

    /// Record the child of `parent` reached by `step`, starting at `line`.
    fn child(&mut self, parent: u32, step: Step, line: usize, repeat: Repeat) -> u32 {
        let next = u32::try_from(self.lines.len()).unwrap_or(u32::MAX);
        let id = *self.children.entry((parent, step)).or_insert(next);
        if id == next {
            self.lines.push(line);
        } else if repeat == Repeat::Replace
            && let Some(l) = self.lines.get_mut(id as usize)
        {
            *l = line;
        }
        id
    }

    /// Record a key of `parent` the document has not had before; `None` when it has.
    fn new_key_child(&mut self, parent: u32, key: &str, line: usize) -> Option<u32> {
        let step = Step::Key(self.key_id(key));
        let next = u32::try_from(self.lines.len()).unwrap_or(u32::MAX);
        match self.children.entry((parent, step)) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(next);
                self.lines.push(line);
                Some(next)
            }
        }
    }

    fn key_child(&mut self, parent: u32, key: &str, line: usize, repeat: Repeat) -> u32 {
        let key = self.key_id(key);
        self.child(parent, Step::Key(key), line, repeat)
    }

    fn index_child(&mut self, parent: u32, index: usize, line: usize) -> u32 {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        self.child(parent, Step::Index(index), line, Repeat::Keep)
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

/// Deepest nesting a document may have: a config is a handful of levels deep, and building,
/// reading and dropping a value are recursive, so a hostile document must not go deeper.
pub const MAX_NESTING: usize = 64;

/// Refuse a text nested deeper than [`MAX_NESTING`], before anything is built from it. Syntax
/// errors are left to the loader, which reports them with their line. (Aliases need no count:
/// they are refused as unsupported.)
fn check_nesting(text: &str) -> Result<(), Problems> {
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return Ok(());
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => depth += 1,
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            let mut problems = Problems::default();
            problems.push(Problem {
                line: Some(span.start.line()),
                path: None,
                message: format!(
                    "the YAML is nested more than {MAX_NESTING} levels deep; a config needs a few"
                ),
            });
            return Err(problems);
        }
    }
    Ok(())
}

/// The documents of a YAML text, or its syntax error with the line.
fn load_documents(text: &str) -> Result<Vec<MarkedYaml<'_>>, Problems> {
    check_nesting(text)?;
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

/// One document through saphyr's node tree: the value, its lines, and what is wrong with it.
fn from_tree(text: &str) -> Result<(Value, LineIndex, Problems), Problems> {
    let docs = load_documents(text)?;
    let mut problems = Problems::default();
    let mut index = LineIndex::default();
    let value = match docs.as_slice() {
        [] => Value::Object(Map::new()),
        [doc] => {
            let root = index.root(doc.span.start.line());
            to_value(doc, &YamlPath::root(), root, &mut index, &mut problems)
        }
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
    Ok((value, index, problems))
}

/// A collection being built from events.
enum Open {
    Sequence {
        items: Vec<Value>,
        node: u32,
    },
    Mapping {
        /// Gathered first, so the map is made at its exact size (a config's many small
        /// mappings would otherwise each hold room for twice their keys).
        entries: Vec<(String, Value)>,
        node: u32,
        /// The key whose value comes next, and its node.
        key: Option<(String, u32)>,
    },
}

/// One document straight from the parser's events, with its lines; `None` for anything only
/// the node tree handles (see the module documentation).
fn from_events(text: &str) -> Option<(Value, LineIndex)> {
    let mut index = LineIndex::default();
    let mut open: Vec<Open> = Vec::new();
    let mut root = None;
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.ok()?;
        let line = span.start.line();
        let done = match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
                None
            }
            Event::DocumentEnd => {
                if root.is_none() || !open.is_empty() {
                    return None;
                }
                None
            }
            Event::Alias(_) => return None,
            Event::Scalar(text, style, _, tag) => {
                let scalar = match tag.as_deref() {
                    Some(tag) if !tag.is_yaml_core_schema() => {
                        if matches!(open.last(), Some(Open::Mapping { key: None, .. })) {
                            return None;
                        }
                        Scalar::parse_from_cow_and_metadata(text, style, None)
                    }
                    _ => Scalar::parse_from_cow_and_metadata(text, style, tag.as_ref()),
                }?;
                if let Some(Open::Mapping {
                    node,
                    key: key @ None,
                    ..
                }) = open.last_mut()
                {
                    let text = match scalar {
                        Scalar::String(s) => s.into_owned(),
                        Scalar::Integer(i) => i.to_string(),
                        Scalar::Boolean(b) => b.to_string(),
                        Scalar::FloatingPoint(f) => f.to_string(),
                        Scalar::Null => return None,
                    };
                    // The node tree tells a repeated key from two keys that read the same.
                    let child = index.new_key_child(*node, &text, line)?;
                    *key = Some((text, child));
                    None
                } else {
                    place(&mut open, &mut index, line)?;
                    Some(event_scalar(scalar)?)
                }
            }
            // Deeper than allowed: the node tree path refuses it with its line.
            Event::SequenceStart(..) | Event::MappingStart(..) if open.len() >= MAX_NESTING => {
                return None;
            }
            Event::SequenceStart(..) => {
                let node = place(&mut open, &mut index, line)?;
                open.push(Open::Sequence {
                    items: Vec::new(),
                    node,
                });
                None
            }
            Event::MappingStart(..) => {
                let node = place(&mut open, &mut index, line)?;
                open.push(Open::Mapping {
                    entries: Vec::new(),
                    node,
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop()? {
                Open::Sequence { mut items, .. } => {
                    items.shrink_to_fit();
                    Some(Value::Array(items))
                }
                Open::Mapping {
                    entries, key: None, ..
                } => {
                    let mut map = Map::with_capacity(entries.len());
                    map.extend(entries);
                    Some(Value::Object(map))
                }
                Open::Mapping { key: Some(_), .. } => return None,
            },
        };
        if let Some(value) = done {
            match open.last_mut() {
                None if root.is_none() => root = Some(value),
                None => return None,
                Some(Open::Sequence { items, .. }) => items.push(value),
                Some(Open::Mapping { entries, key, .. }) => {
                    let (text, _) = key.take()?;
                    entries.push((text, value));
                }
            }
        }
    }
    if !open.is_empty() {
        return None;
    }
    // No document at all reads as an empty mapping, as through the node tree.
    Some((root.unwrap_or_else(|| Value::Object(Map::new())), index))
}

/// The node of the value that starts at `line`, where it goes: the root, the next item of a
/// sequence, or the value of the pending key (whose node is the key's). `None` when it would be
/// a key that is not a scalar.
fn place(open: &mut [Open], index: &mut LineIndex, line: usize) -> Option<u32> {
    match open.last() {
        None => Some(index.root(line)),
        Some(Open::Sequence { items, node }) => Some(index.index_child(*node, items.len(), line)),
        Some(Open::Mapping { key, .. }) => key.as_ref().map(|(_, node)| *node),
    }
}

fn event_scalar(scalar: Scalar<'_>) -> Option<Value> {
    Some(match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Number(i.into()),
        Scalar::FloatingPoint(f) => Value::Number(Number::from_f64(f.into_inner())?),
        Scalar::String(s) => Value::String(s.into_owned()),
    })
}

/// Every document of a multi-document YAML text, as plain values (for `meridian import`).
pub fn parse_values(text: &str) -> Result<Vec<Value>, Problems> {
    let docs = load_documents(text)?;
    let mut problems = Problems::default();
    let mut index = LineIndex::default();
    let values = docs
        .iter()
        .map(|doc| {
            let root = index.root(doc.span.start.line());
            to_value(doc, &YamlPath::root(), root, &mut index, &mut problems)
        })
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

/// A node of the tree as a value; `id` is its node in `index`, already recorded.
fn to_value(
    node: &MarkedYaml<'_>,
    path: &YamlPath,
    id: u32,
    index: &mut LineIndex,
    problems: &mut Problems,
) -> Value {
    match &node.data {
        YamlData::Value(scalar) => scalar_value(scalar, path, problems),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let child = index.index_child(id, i, item.span.start.line());
                    to_value(item, &path.index(i), child, index, problems)
                })
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
                let child = index.key_child(id, &key_text, key.span.start.line(), Repeat::Replace);
                let v = to_value(value, &path.key(key_text.clone()), child, index, problems);
                out.insert(key_text, v);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => to_value(inner, path, id, index, problems),
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
