//! The fast reader: one document built straight from the parser's events, in time and memory
//! linear in its size. Used by [`super::parse_document`] first; what it declines goes to
//! [`super::tree_reader`].

use saphyr::Scalar;
use saphyr_parser::{Event, Parser};
use serde_json::{Map, Number, Value};

use super::MAX_NESTING;
use super::line_index::LineIndex;

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
pub(super) fn from_events(text: &str) -> Option<(Value, LineIndex)> {
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
