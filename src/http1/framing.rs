//! Request framing seen before hyper parses it.
//!
//! hyper quietly drops a Content-Length that comes with `Transfer-Encoding: chunked`, so the
//! handler cannot see that a request carried both — a request-smuggling signature an edge
//! proxy must refuse. Nor can it see a tab around a framing header's value, which httparse
//! trims as the whitespace RFC 9112 allows there but which servers in front of or behind
//! Meridian may not (nginx answers `Transfer-Encoding:<TAB>chunked` with 501): read as
//! chunked here and as no body there, one request would be two. This reader watches the bytes
//! of each HTTP/1.1 request head on their way to hyper and records, per request and in order,
//! what it saw; the handler takes one record per request. It follows Content-Length and chunked bodies to find the next head; on
//! anything it cannot read it stops watching, which only means later requests on that
//! connection are judged by hyper's own rules (and hyper refuses what it cannot read).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::strict::Malformed;

/// Longest head followed (past it, hyper answers 431 anyway).
const MAX_HEAD: usize = 80 * 1024;

/// What one request head showed of its framing that hyper's parser hides from the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Plain,
    /// Content-Length and Transfer-Encoding both.
    LengthAndChunked,
    /// A tab around the value of Content-Length or Transfer-Encoding.
    TabInFraming,
}

/// Per request, in order: what its head showed (see [`Seen`]).
#[derive(Debug, Default)]
pub struct FramingLog(Mutex<VecDeque<Seen>>);

impl FramingLog {
    /// Why the next request must be refused, if its head showed a reason.
    pub fn next_refusal(&self) -> Option<Malformed> {
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        match seen {
            None | Some(Seen::Plain) => None,
            Some(Seen::LengthAndChunked) => Some(Malformed::LengthAndChunked),
            Some(Seen::TabInFraming) => Some(Malformed::TabInFraming),
        }
    }

    /// Records one head; false once too many are waiting (then watching stops: bytes that
    /// are not requests, such as a WebSocket session after its upgrade, cannot grow the log).
    fn push(&self, seen: Seen) -> bool {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.push_back(seen);
        log.len() < MAX_PENDING
    }
}

/// Most records waiting for the handler (pipelined requests) before watching stops.
const MAX_PENDING: usize = 256;

/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4 * 1024;

enum State {
    Head(Vec<u8>),
    Body(u64),
    /// A chunk-size line (`1a;ext=x\r\n`), collected so far.
    ChunkSize(Vec<u8>),
    /// Chunk data still to come, then its CRLF (the `u8`: CRLF bytes still to come).
    ChunkData(u64, u8),
    /// Trailer lines after the last chunk, up to the empty line; the current line so far.
    Trailers(Vec<u8>),
    Stopped,
}

/// Collects bytes up to and including `\n` into `line`; returns how many were used and
/// whether the line is complete.
fn take_line(line: &mut Vec<u8>, bytes: &[u8]) -> (usize, bool) {
    match bytes.iter().position(|b| *b == b'\n') {
        Some(p) => {
            line.extend_from_slice(&bytes[..=p]);
            (p + 1, true)
        }
        None => {
            line.extend_from_slice(bytes);
            (bytes.len(), false)
        }
    }
}

/// The size of a complete chunk-size line, without extensions.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let digits = line.split(|b| *b == b';').next()?;
    let digits = std::str::from_utf8(digits)
        .ok()?
        .trim_end_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Wraps a connection's byte stream; see the module doc. Without a log it only passes bytes
/// through, so every listener serves one connection type.
pub struct Sniffer<T> {
    inner: T,
    state: State,
    log: Option<Arc<FramingLog>>,
}

impl<T> Sniffer<T> {
    pub fn new(inner: T, log: Option<Arc<FramingLog>>) -> Self {
        let state = match log {
            Some(_) => State::Head(Vec::new()),
            None => State::Stopped,
        };
        Self { inner, state, log }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Stopped => return,
                State::Body(remaining) => {
                    let n = (*remaining).min(bytes.len() as u64) as usize;
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let (used, complete) = take_line(line, bytes);
                    bytes = &bytes[used..];
                    if complete {
                        self.state = match chunk_size(line) {
                            Some(0) => State::Trailers(Vec::new()),
                            Some(n) => State::ChunkData(n, 2),
                            None => State::Stopped,
                        };
                    } else if line.len() > MAX_LINE {
                        self.state = State::Stopped;
                    }
                }
                State::ChunkData(remaining, crlf) => {
                    if *remaining > 0 {
                        let n = (*remaining).min(bytes.len() as u64) as usize;
                        *remaining -= n as u64;
                        bytes = &bytes[n..];
                    } else {
                        let expected = if *crlf == 2 { b'\r' } else { b'\n' };
                        if bytes[0] != expected {
                            self.state = State::Stopped;
                            return;
                        }
                        bytes = &bytes[1..];
                        *crlf -= 1;
                        if *crlf == 0 {
                            self.state = State::ChunkSize(Vec::new());
                        }
                    }
                }
                State::Trailers(line) => {
                    let (used, complete) = take_line(line, bytes);
                    bytes = &bytes[used..];
                    if complete {
                        if line.as_slice() == b"\r\n" {
                            self.state = State::Head(Vec::new());
                        } else {
                            line.clear();
                        }
                    } else if line.len() > MAX_LINE {
                        self.state = State::Stopped;
                    }
                }
                State::Head(buf) if buf.is_empty() => {
                    // Empty lines before a request line are skipped, as hyper's parser skips
                    // them: taken for an empty head, they would be recorded in place of the
                    // request that follows.
                    let blank = bytes
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    bytes = &bytes[blank..];
                    if bytes.is_empty() {
                        return;
                    }
                    // The common case: the whole head arrived in one read; judge it in place.
                    match find_end(bytes) {
                        Some(end) => {
                            self.state = self.judge(&bytes[..end]);
                            bytes = &bytes[end..];
                        }
                        None => {
                            buf.extend_from_slice(bytes);
                            return;
                        }
                    }
                }
                State::Head(buf) => {
                    let before = buf.len();
                    buf.extend_from_slice(bytes);
                    // Only the new bytes (and the 3 before them) can complete the terminator.
                    let from = before.saturating_sub(3);
                    let Some(end) = find_end(&buf[from..]).map(|e| e + from) else {
                        if buf.len() > MAX_HEAD {
                            self.state = State::Stopped;
                        }
                        return;
                    };
                    let used = end - before;
                    let head = std::mem::take(buf);
                    bytes = &bytes[used..];
                    self.state = self.judge(&head[..end]);
                }
            }
        }
    }

    fn judge(&self, head: &[u8]) -> State {
        let Some(log) = &self.log else {
            return State::Stopped;
        };
        // Most heads name neither framing header: no second parse for them.
        let lines = framing_header_lines(head);
        if head.starts_with(b"PRI * HTTP/2.0") {
            // HTTP/2 (prior knowledge): frames, not heads, from here on.
            return State::Stopped;
        }
        if lines.tab {
            // Refused, and the connection closes after it: nothing more to follow.
            log.push(Seen::TabInFraming);
            return State::Stopped;
        }
        if !lines.length && !lines.chunked {
            return match log.push(Seen::Plain) {
                true => State::Head(Vec::new()),
                false => State::Stopped,
            };
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return State::Stopped;
        }
        let mut length = None;
        let mut chunked = false;
        for h in request.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .or(Some(u64::MAX));
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        let seen = match length.is_some() && chunked {
            true => Seen::LengthAndChunked,
            false => Seen::Plain,
        };
        if !log.push(seen) {
            return State::Stopped;
        }
        match (chunked, length) {
            (false, Some(n)) if n != u64::MAX && n > 0 => State::Body(n),
            (false, Some(0)) | (false, None) => State::Head(Vec::new()),
            (true, None) if te_is_chunked(&request) => State::ChunkSize(Vec::new()),
            // Refused or ambiguous: the connection closes after this request.
            _ => State::Stopped,
        }
    }
}

/// Exactly one Transfer-Encoding, exactly `chunked` (anything else is refused upstream of the
/// body, so there is nothing more to follow).
fn te_is_chunked(request: &httparse::Request<'_, '_>) -> bool {
    let mut te = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    matches!(
        (te.next(), te.next()),
        (Some(h), None) if h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")
    )
}

/// What the header lines of a head say about its framing headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct FramingLines {
    /// A line starts with `Content-Length` (ignoring ASCII case).
    length: bool,
    /// A line starts with `Transfer-Encoding`.
    chunked: bool,
    /// A `Content-Length:` or `Transfer-Encoding:` line has a tab.
    tab: bool,
}

/// The framing header lines of `head`. A header name only ever starts a line (folded lines
/// are refused), so one pass over the line starts answers all, and the first byte settles
/// most lines.
fn framing_header_lines(head: &[u8]) -> FramingLines {
    const CL: &[u8] = b"content-length";
    const TE: &[u8] = b"transfer-encoding";
    let mut found = FramingLines::default();
    for nl in memchr::memchr_iter(b'\n', head) {
        let line = &head[nl + 1..];
        let (name, seen) = match line.first().map(u8::to_ascii_lowercase) {
            Some(b'c') => (CL, &mut found.length),
            Some(b't') => (TE, &mut found.chunked),
            _ => continue,
        };
        if line.len() < name.len() || !line[..name.len()].eq_ignore_ascii_case(name) {
            continue;
        }
        *seen = true;
        found.tab |= tab_after_name(line, name.len());
    }
    found
}

/// Whether the field named by `name`, a slice of `head` as httparse hands it out, has a tab
/// before the end of its line; also when `name` cannot be placed in `head`.
pub(crate) fn tab_in_field(head: &[u8], name: &[u8]) -> bool {
    let line = (name.as_ptr() as usize)
        .checked_sub(head.as_ptr() as usize)
        .and_then(|at| head.get(at..));
    line.is_none_or(|line| tab_after_name(line, name.len()))
}

/// Whether the header line at the start of `line`, whose name is `name_len` bytes long, is
/// exactly that name (a colon follows) and has a tab before its end.
pub(crate) fn tab_after_name(line: &[u8], name_len: usize) -> bool {
    if line.get(name_len) != Some(&b':') {
        return false;
    }
    let rest = &line[name_len..];
    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    memchr::memchr(b'\t', &rest[..end]).is_some()
}

/// Where the head in `buf` ends (past its empty line), as hyper's parser (httparse) sees it:
/// lines may end in a bare LF, so `\n\n` and `\n\r\n` end a head as `\r\n\r\n` does. A
/// watcher that missed a bare-LF head would read it and the next one as one, and the next
/// one's framing would go unrecorded.
fn find_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|nl| match buf.get(nl + 1..nl + 3) {
        Some([b'\n', _]) => Some(nl + 2),
        Some([b'\r', b'\n']) => Some(nl + 3),
        None if buf.get(nl + 1) == Some(&b'\n') => Some(nl + 2),
        _ => None,
    })
}

impl<T: AsyncRead + Unpin> AsyncRead for Sniffer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && !matches!(self.state, State::Stopped)
        {
            self.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sniffer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_headers_are_found_at_line_starts_in_any_case() {
        let lines = |length, chunked, tab| FramingLines {
            length,
            chunked,
            tab,
        };
        let head = b"POST /content-length HTTP/1.1\r\nHost: a\r\nX-Note: transfer-encoding\r\ncOnTeNt-LeNgTh: 3\r\n\r\n";
        assert_eq!(
            framing_header_lines(head),
            lines(true, false, false),
            "a value or the path is not a name"
        );
        assert_eq!(
            framing_header_lines(b"GET / HTTP/1.1\nTransfer-Encoding: chunked\n\n"),
            lines(false, true, false)
        );
        assert_eq!(
            framing_header_lines(b"GET / HTTP/1.1\r\nC\r\nT\r\n\r\n"),
            lines(false, false, false)
        );
        // Tabs count on the framing lines only, before or after the value.
        for (head, want) in [
            (
                &b"POST / HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\n\r\n"[..],
                lines(false, true, true),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n",
                lines(false, true, true),
            ),
            (
                b"POST / HTTP/1.1\nContent-Length:\t3\n\n",
                lines(true, false, true),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nX-A:\tb\r\n\r\n",
                lines(true, false, false),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Lengthy:\t3\r\n\r\n",
                lines(true, false, false),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding:  chunked \r\n\r\n",
                lines(false, true, false),
            ),
        ] {
            assert_eq!(framing_header_lines(head), want, "{}", head.escape_ascii());
        }
    }

    /// Per head fed: whether it had both framings.
    fn sniff(chunks: &[&[u8]]) -> Vec<bool> {
        sniff_seen(chunks)
            .into_iter()
            .map(|s| s == Seen::LengthAndChunked)
            .collect()
    }

    fn sniff_seen(chunks: &[&[u8]]) -> Vec<Seen> {
        let log = Arc::new(FramingLog::default());
        let mut s = Sniffer::new((), Some(log.clone()));
        for c in chunks {
            s.feed(c);
        }
        let mut out = Vec::new();
        while let Some(b) = log.0.lock().unwrap().pop_front() {
            out.push(b);
        }
        out
    }

    #[test]
    fn a_tab_around_a_framing_value_is_recorded_and_ends_the_watch() {
        let tab = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let next = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(sniff_seen(&[tab, next]), [Seen::TabInFraming]);
        let ok =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(sniff_seen(&[ok, next]), [Seen::Plain, Seen::Plain]);
        let log = FramingLog::default();
        log.push(Seen::TabInFraming);
        log.push(Seen::LengthAndChunked);
        log.push(Seen::Plain);
        assert_eq!(log.next_refusal(), Some(Malformed::TabInFraming));
        assert_eq!(log.next_refusal(), Some(Malformed::LengthAndChunked));
        assert_eq!(log.next_refusal(), None);
        assert_eq!(log.next_refusal(), None, "nothing recorded");
    }

    #[test]
    fn records_each_head_in_order() {
        let both = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(sniff(&[both]), [true]);
        // split across reads, pipelined after a body with Content-Length
        let first =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHo";
        let second = b"st: a\r\n\r\n";
        assert_eq!(sniff(&[first, second]), [false, false]);
        assert_eq!(
            sniff(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", both]),
            [false, true]
        );
        // chunked bodies are followed to the next head, one byte at a time too
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        assert_eq!(sniff(&[chunked, both]), [false, true]);
        let bytes: Vec<u8> = chunked.iter().chain(both.iter()).copied().collect();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(sniff(&singles), [false, true]);
        // HTTP/2 prior knowledge is not watched
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", both]),
            Vec::<bool>::new()
        );
        // the log stays bounded when nobody takes from it
        let many: Vec<&[u8]> =
            std::iter::repeat_n(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], 1000).collect();
        assert_eq!(sniff(&many).len(), MAX_PENDING);
        // a chunk body that is not framed as it says stops the watching
        let broken = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nhello\r\n0\r\n\r\n";
        assert_eq!(sniff(&[broken, both]), [false]);
        let bad_size = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(sniff(&[bad_size, both]), [false]);
        // after a Transfer-Encoding other than `chunked` nothing more is followed
        let gzip =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(sniff(&[gzip, both]), [false]);
        // heads whose lines end in a bare LF end where hyper's parser ends them
        assert_eq!(
            sniff(&[b"GET /one HTTP/1.1\nHost: a\n\n", both]),
            [false, true]
        );
        assert_eq!(
            sniff(&[b"GET /one HTTP/1.1\nHost: a\n\r\n", both]),
            [false, true]
        );
        let bare: Vec<u8> = b"GET /one HTTP/1.1\nHost: a\n\n"
            .iter()
            .chain(both.iter())
            .copied()
            .collect();
        let singles: Vec<&[u8]> = bare.chunks(1).collect();
        assert_eq!(sniff(&singles), [false, true]);
        // empty lines before a head are not a head of their own
        for blank in [&b"\n\n"[..], b"\r\n\n", b"\n\r\n", b"\r\n\r\n"] {
            assert_eq!(sniff(&[blank, both]), [true], "{blank:?}");
            let joined: Vec<u8> = blank.iter().chain(both.iter()).copied().collect();
            assert_eq!(sniff(&[&joined]), [true], "{blank:?}");
        }
    }
}
