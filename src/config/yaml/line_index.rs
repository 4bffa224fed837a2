//! The line where each node of a YAML document starts, recorded by both readers
//! ([`super::event_reader`], [`super::tree_reader`]) and read by problems to name their line.

use super::path::{Segment, YamlPath};

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
pub(super) enum Repeat {
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
    pub(super) fn root(&mut self, line: usize) -> u32 {
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
    pub(super) fn new_key_child(&mut self, parent: u32, key: &str, line: usize) -> Option<u32> {
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

    pub(super) fn key_child(&mut self, parent: u32, key: &str, line: usize, repeat: Repeat) -> u32 {
        let key = self.key_id(key);
        self.child(parent, Step::Key(key), line, repeat)
    }

    pub(super) fn index_child(&mut self, parent: u32, index: usize, line: usize) -> u32 {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        self.child(parent, Step::Index(index), line, Repeat::Keep)
    }
}
