//! Header fields as they arrived: the head's bytes and where each field lies in them.
//!
//! Meridian's own HTTP/1.1 paths keep heads this way instead of building a header map: an
//! upstream's answer (hop-by-hop fields already left out) is copied straight into the
//! client's, and a client's request is read and forwarded from its fields. Building and
//! dropping a map for every head cost more than parsing it. [`HeadersRef`] reads either
//! kind, so the request path serves hyper's requests (a map) and the own loop's alike.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, ValueIter};

use crate::http1::headers::{Known, Present, known, put_field};

/// Where one field's name and value are in the head, and which known header it is.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: u32,
    name_len: u32,
    value: u32,
    value_len: u32,
    kind: Option<Known>,
}

/// Header fields of one head; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    head: Bytes,
    spans: Vec<Span>,
    /// Set when each field's kind was recorded as it was pushed (request heads): lookups of
    /// known headers then compare kinds, not names.
    present: Option<Present>,
}

impl Fields {
    /// Room for `n` fields of `head`.
    pub fn with_capacity(head: Bytes, n: usize) -> Self {
        Self {
            head,
            spans: Vec::with_capacity(n),
            present: None,
        }
    }

    /// Record a field. `name` and `value` are slices of the head as httparse accepted them
    /// (values are later taken into `HeaderValue`s without a second check); a slice from
    /// anywhere else is ignored.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.push_span(name, value, None);
    }

    /// Record a field whose kind the caller found with [`known`]; every field of a head must
    /// be pushed this way or none.
    #[inline]
    pub fn push_known(&mut self, name: &[u8], value: &[u8], kind: Option<Known>) {
        if self.push_span(name, value, kind) {
            self.present.get_or_insert_default().add(name, kind);
        }
    }

    #[inline]
    fn push_span(&mut self, name: &[u8], value: &[u8], kind: Option<Known>) -> bool {
        let (Some(name_at), Some(value_at)) = (self.offset(name), self.offset(value)) else {
            return false;
        };
        self.spans.push(Span {
            name: name_at,
            name_len: name.len() as u32,
            value: value_at,
            value_len: value.len() as u32,
            kind,
        });
        true
    }

    /// Which known headers the fields hold, when their kinds were recorded.
    pub fn present(&self) -> Option<Present> {
        self.present
    }

    /// Where `part` starts in the head, if it lies within it.
    #[inline]
    fn offset(&self, part: &[u8]) -> Option<u32> {
        let start = (part.as_ptr() as usize).checked_sub(self.head.as_ptr() as usize)?;
        (start + part.len() <= self.head.len())
            .then_some(start)
            .and_then(|s| u32::try_from(s).ok())
    }

    #[inline]
    fn name_of(&self, span: &Span) -> &[u8] {
        &self.head[span.name as usize..(span.name + span.name_len) as usize]
    }

    #[inline]
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

    /// Keep only the fields whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let head = &self.head;
        self.spans
            .retain(|s| keep(&head[s.name as usize..(s.name + s.name_len) as usize]));
    }

    /// Append the fields to a header map, except those whose name it already holds (what
    /// Meridian sets replaces what the upstream said).
    pub fn merge_into(self, map: &mut HeaderMap) {
        let own = map.len();
        if own == 0 {
            // Nothing to give way to, and no order to keep: the fields go straight in.
            map.reserve(self.spans.len());
            for (name, value) in self.headers() {
                map.append(name, value);
            }
            return;
        }
        let mut merged = HeaderMap::with_capacity(self.spans.len() + own);
        for (name, value) in self.headers() {
            if !map.contains_key(&name) {
                merged.append(name, value);
            }
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

    /// The fields as header names and values, values sharing the head's bytes.
    fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        self.spans.iter().filter_map(|span| {
            // httparse accepts only token characters in names, which HeaderName accepts too;
            // a name it refused anyway is left out rather than failing the answer.
            let name = HeaderName::from_bytes(self.name_of(span)).ok()?;
            let value = self.head.slice_ref(self.value_of(span));
            // SAFETY: httparse accepted the value, so every byte is HTAB, SP, a visible ASCII
            // character or obs-text: exactly what a HeaderValue may hold.
            Some((name, unsafe {
                HeaderValue::from_maybe_shared_unchecked(value)
            }))
        })
    }
}

impl Fields {
    /// The values of the fields named `name` (fields match in any case).
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> RawValues<'a> {
        let kind = self
            .present
            .and(known(name.as_str().as_bytes()))
            .filter(|k| k.is_one_name());
        RawValues {
            fields: self,
            by: match kind {
                Some(kind) => MatchBy::Kind(kind),
                None => MatchBy::Name(name),
            },
            front: 0,
            back: self.spans.len(),
        }
    }

    /// The values of the known header `kind` (one that is one name).
    #[inline]
    pub fn values_of(&self, kind: Known) -> RawValues<'_> {
        RawValues {
            fields: self,
            by: match self.present {
                Some(_) => MatchBy::Kind(kind),
                None => MatchBy::Name(kind.name()),
            },
            front: 0,
            back: self.spans.len(),
        }
    }

    /// Append `name: value\r\n` for each field `keep` accepts (given its name and the kind
    /// recorded when it was pushed, if any), in order. Fields that arrived in that form, one
    /// after another, are copied from the head as one run, not piece by piece: an answer's
    /// head is mostly such a run. Others (a tab after the colon, a bare LF) are written out
    /// in the canonical form.
    pub fn write_lines(
        &self,
        out: &mut Vec<u8>,
        mut keep: impl FnMut(&[u8], Option<Known>) -> bool,
    ) {
        let head = &self.head[..];
        // The run of canonical lines not yet copied, as a range of the head.
        let mut run = 0..0;
        for span in &self.spans {
            let name = self.name_of(span);
            if !keep(name, span.kind) {
                continue;
            }
            let value = self.value_of(span);
            let start = span.name as usize;
            let colon = start + name.len();
            let end = span.value as usize + value.len() + 2;
            let canonical = span.value as usize == colon + 2
                && head.get(colon..colon + 2) == Some(b": ".as_slice())
                && head.get(end - 2..end) == Some(b"\r\n".as_slice());
            if canonical && run.end == start {
                run.end = end;
                continue;
            }
            out.extend_from_slice(&head[run.clone()]);
            if canonical {
                run = start..end;
            } else {
                run = 0..0;
                put_field(out, name, value);
            }
        }
        out.extend_from_slice(&head[run]);
    }

    /// Name, value and kind (when recorded, else found now) of each field, in order.
    pub fn iter_known(&self) -> impl Iterator<Item = (&[u8], &[u8], Option<Known>)> {
        let recorded = self.present.is_some();
        self.spans.iter().map(move |s| {
            let name = self.name_of(s);
            let kind = if recorded { s.kind } else { known(name) };
            (name, self.value_of(s), kind)
        })
    }

    /// A field value as a `HeaderValue` sharing the head's bytes.
    fn header_value(&self, value: &[u8]) -> HeaderValue {
        // SAFETY: the value is a slice of a head httparse accepted, so every byte is HTAB,
        // SP, a visible ASCII character or obs-text: exactly what a HeaderValue may hold.
        unsafe { HeaderValue::from_maybe_shared_unchecked(self.head.slice_ref(value)) }
    }
}

/// Values of the fields of one name, from either end.
pub struct RawValues<'a> {
    fields: &'a Fields,
    by: MatchBy<'a>,
    front: usize,
    back: usize,
}

/// How [`RawValues`] recognises its fields: by the kind recorded when they were read when
/// there is one, else by name (borrowed, so no name is cloned per lookup).
enum MatchBy<'a> {
    Kind(Known),
    Name(&'a HeaderName),
}

impl RawValues<'_> {
    #[inline]
    fn is_match(&self, span: &Span) -> bool {
        match self.by {
            MatchBy::Kind(kind) => span.kind == Some(kind),
            MatchBy::Name(name) => self
                .fields
                .name_of(span)
                .eq_ignore_ascii_case(name.as_str().as_bytes()),
        }
    }
}

impl<'a> Iterator for RawValues<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        while self.front < self.back {
            let span = &self.fields.spans[self.front];
            self.front += 1;
            if self.is_match(span) {
                return Some(self.fields.value_of(span));
            }
        }
        None
    }
}

impl<'a> DoubleEndedIterator for RawValues<'a> {
    #[inline]
    fn next_back(&mut self) -> Option<&'a [u8]> {
        while self.front < self.back {
            self.back -= 1;
            let span = &self.fields.spans[self.back];
            if self.is_match(span) {
                return Some(self.fields.value_of(span));
            }
        }
        None
    }
}

/// A request's headers, however they were read: hyper's header map or the fields of a head
/// read by Meridian's own HTTP/1.1 loop.
#[derive(Debug, Clone, Copy)]
pub enum HeadersRef<'a> {
    Map(&'a HeaderMap),
    Raw(&'a Fields),
}

/// Values of one header, from either end.
pub enum Values<'a> {
    Map(ValueIter<'a, HeaderValue>),
    Raw(RawValues<'a>),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Self::Map(values) => values.next().map(HeaderValue::as_bytes),
            Self::Raw(values) => values.next(),
        }
    }
}

impl<'a> DoubleEndedIterator for Values<'a> {
    #[inline]
    fn next_back(&mut self) -> Option<&'a [u8]> {
        match self {
            Self::Map(values) => values.next_back().map(HeaderValue::as_bytes),
            Self::Raw(values) => values.next_back(),
        }
    }
}

impl<'a> HeadersRef<'a> {
    /// The fields when there are any, else the map.
    pub fn of(map: &'a HeaderMap, fields: Option<&'a Fields>) -> Self {
        match fields {
            Some(fields) => Self::Raw(fields),
            None => Self::Map(map),
        }
    }

    /// Every value of the header `name`, in order.
    pub fn values_named(self, name: &'a HeaderName) -> Values<'a> {
        match self {
            Self::Map(map) => Values::Map(map.get_all(name).iter()),
            Self::Raw(fields) => Values::Raw(fields.values(name)),
        }
    }

    /// Every value of the known header `kind` (one that is one name), in order.
    #[inline]
    pub fn values(self, kind: Known) -> Values<'a> {
        match self {
            Self::Map(map) => Values::Map(map.get_all(kind.name()).iter()),
            Self::Raw(fields) => Values::Raw(fields.values_of(kind)),
        }
    }

    /// The first value of the known header `kind`.
    #[inline]
    pub fn first(self, kind: Known) -> Option<&'a [u8]> {
        self.values(kind).next()
    }

    /// The first value of the known header `kind` as a `HeaderValue` (no copy of the bytes).
    #[inline]
    pub fn value(self, kind: Known) -> Option<HeaderValue> {
        match self {
            Self::Map(map) => map.get(kind.name()).cloned(),
            Self::Raw(fields) => fields
                .values_of(kind)
                .next()
                .map(|v| fields.header_value(v)),
        }
    }

    /// Each header's name and value, in order (names as received; lowercase from a map).
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.iter_known().map(|(name, value, _)| (name, value))
    }

    /// As [`Self::iter`], with each header's kind (see [`known`]).
    pub fn iter_known(self) -> impl Iterator<Item = (&'a [u8], &'a [u8], Option<Known>)> {
        let (map, fields) = match self {
            Self::Map(map) => (Some(map), None),
            Self::Raw(fields) => (None, Some(fields)),
        };
        let from_map = map.into_iter().flat_map(|m| {
            m.iter().map(|(n, v)| {
                let name = n.as_str().as_bytes();
                (name, v.as_bytes(), known(name))
            })
        });
        let from_fields = fields.into_iter().flat_map(Fields::iter_known);
        from_map.chain(from_fields)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Fields of `Name: value` lines, as a parser would record them.
    pub(crate) fn fields(head: &'static [u8]) -> Fields {
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
    fn lines_are_written_canonically_whether_copied_as_runs_or_piece_by_piece() {
        let f = fields(
            b"Server: x\r\nDate: d\r\nConnection: keep-alive\r\nA: 1\r\nB:\t2\r\nC: 3\nD: 4  \r\n\
              E:5\r\nF: 6\r\nG: 7\r\n",
        );
        type Keep = fn(&[u8]) -> bool;
        let expected = |keep: Keep| {
            let mut out = Vec::new();
            for (name, value) in f.iter().filter(|(n, _)| keep(n)) {
                out.extend_from_slice(&[name, b": ", value, b"\r\n"].concat());
            }
            out
        };
        let keeps: [Keep; 4] = [
            |_| true,
            |_| false,
            |n| n != b"Connection",
            |n| !matches!(n, b"Server" | b"F" | b"G"),
        ];
        for keep in keeps {
            let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
            f.write_lines(&mut out, |name, _| keep(name));
            let written = out.strip_prefix(b"HTTP/1.1 200 OK\r\n".as_slice());
            assert_eq!(
                written.map(String::from_utf8_lossy),
                Some(String::from_utf8_lossy(&expected(keep)))
            );
        }
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

    #[test]
    fn values_are_found_by_kind_by_known_name_and_by_any_name() {
        const HEAD: &[u8] =
            b"Host: a\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\nX-Custom: c\r\n";
        let by_name = fields(HEAD);
        let mut by_kind = Fields::with_capacity(Bytes::from_static(HEAD), 4);
        for (name, value) in by_name.iter() {
            by_kind.push_known(name, value, known(name));
        }
        assert!(by_name.present().is_none() && by_kind.present().is_some());
        for f in [&by_name, &by_kind] {
            let values: Vec<&[u8]> = f.values_of(Known::ForwardedFor).collect();
            assert_eq!(values, [&b"1.1.1.1"[..], b"2.2.2.2"]);
            let last = f.values_of(Known::ForwardedFor).next_back();
            assert_eq!(last, Some(&b"2.2.2.2"[..]));
            let host = HeadersRef::Raw(f).value(Known::Host);
            assert_eq!(host, Some(HeaderValue::from_static("a")));
            assert_eq!(f.values_of(Known::RequestId).next(), None);
            let custom = HeaderName::from_static("x-custom");
            assert_eq!(f.values(&custom).collect::<Vec<_>>(), [&b"c"[..]]);
            let host = f.values(&http::header::HOST).next();
            assert_eq!(host, Some(&b"a"[..]));
        }
    }
}
