//! An upstream response's header fields as they arrived: the head's bytes and where each
//! field lies in them, hop-by-hop fields already left out.
//!
//! Meridian's own HTTP/1.1 writer copies these straight into the client's answer; a header map
//! is built only when hyper writes the answer (HTTP/2, and HTTP/1.1 connections hyper serves).
//! Building and dropping a map for every response cost more than parsing the head.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Where one field's name and value are in the head.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
}

/// Header fields of one response head; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    head: Bytes,
    spans: Vec<Span>,
}

impl Fields {
    /// Room for `n` fields of `head`.
    pub fn with_capacity(head: Bytes, n: usize) -> Self {
        Self {
            head,
            spans: Vec::with_capacity(n),
        }
    }

    /// Record a field. `name` and `value` are slices of the head (as httparse hands them
    /// out); anything else is ignored.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let (Some(name_at), Some(value_at)) = (self.offset(name), self.offset(value)) else {
            return;
        };
        self.spans.push(Span {
            name: name_at,
            name_len: name.len() as u32,
            value: value_at,
            value_len: value.len() as u32,
        });
    }

    /// Where `part` starts in the head, if it lies within it.
    fn offset(&self, part: &[u8]) -> Option<u32> {
        let start = (part.as_ptr() as usize).checked_sub(self.head.as_ptr() as usize)?;
        (start + part.len() <= self.head.len())
            .then_some(start)
            .and_then(|s| u32::try_from(s).ok())
    }

    fn name_of(&self, span: &Span) -> &[u8] {
        &self.head[span.name as usize..(span.name + span.name_len) as usize]
    }

    fn value_of(&self, span: &Span) -> &[u8] {
        &self.head[span.value as usize..(span.value + span.value_len) as usize]
    }

    /// Name and value of each field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|s| (self.name_of(s), self.value_of(s)))
    }

    /// The first value of the field `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Drop the fields whose name `drop` says.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head;
        self.spans
            .retain(|s| keep(&head[s.name as usize..(s.name + s.name_len) as usize]));
    }

    /// Append the fields to a header map, except those whose name it already holds (what
    /// Meridian sets replaces what the upstream said).
    pub fn merge_into(self, map: &mut HeaderMap) {
        let own = map.len();
        let mut merged = HeaderMap::with_capacity(self.spans.len() + own);
        for span in &self.spans {
            // httparse accepts only token characters in names, which HeaderName accepts too;
            // a name it refused anyway is left out rather than failing the answer.
            let Ok(name) = HeaderName::from_bytes(self.name_of(span)) else {
                continue;
            };
            if own > 0 && map.contains_key(&name) {
                continue;
            }
            let value = self.head.slice_ref(self.value_of(span));
            // SAFETY: httparse accepted the value, so every byte is HTAB, SP, a visible ASCII
            // character or obs-text: exactly what a HeaderValue may hold.
            merged.append(name, unsafe {
                HeaderValue::from_maybe_shared_unchecked(value)
            });
        }
        let mut last = None;
        for (name, value) in std::mem::take(map) {
            // `into_iter` names only the first value of each header.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                merged.append(name.clone(), value);
            }
        }
        *map = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields of `Name: value` lines, as a parser would record them.
    fn fields(head: &'static [u8]) -> Fields {
        let mut f = Fields::with_capacity(Bytes::from_static(head), 4);
        for line in head.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                f.push(&line[..colon], line[colon + 1..].trim_ascii());
            }
        }
        f
    }

    #[test]
    fn fields_are_read_by_any_case_and_merged_behind_what_meridian_set() {
        let f = fields(b"Server: x\r\nX-Request-Id: up\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n");
        assert_eq!(f.get("server"), Some(&b"x"[..]));
        assert_eq!(f.get("retry-after"), None);
        // A slice from elsewhere is not recorded.
        let mut g = f.clone();
        g.push(b"elsewhere", b"v");
        assert_eq!(g.len(), 4);

        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("ours"));
        map.append("x-meridian-region", HeaderValue::from_static("eu"));
        f.merge_into(&mut map);
        assert_eq!(map["server"], "x");
        assert_eq!(
            map.get_all("x-request-id").iter().collect::<Vec<_>>(),
            ["ours"]
        );
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
        assert_eq!(map["x-meridian-region"], "eu");
    }
}
