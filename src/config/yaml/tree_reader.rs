//! The thorough reader: documents through saphyr's node tree, which reports what the event
//! reader declines (aliases, odd keys, unreadable scalars, syntax errors, several documents,
//! nesting past [`super::MAX_NESTING`]). Used by [`super::parse_document`] as the fallback and by
//! `meridian import` for multi-document texts ([`parse_values`]).

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser};
use serde_json::{Map, Number, Value};

use super::super::problems::{Problem, Problems};
use super::MAX_NESTING;
use super::line_index::{LineIndex, Repeat};
use super::path::YamlPath;

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

/// One document through saphyr's node tree: the value, its lines, and what is wrong with it.
pub(super) fn from_tree(text: &str) -> Result<(Value, LineIndex, Problems), Problems> {
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
