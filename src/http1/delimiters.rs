//! Byte searches shared by the HTTP/1.1 readers, with their searchers built once (building a
//! memmem searcher per call cost more than the search on a short head).

use std::sync::LazyLock;

use memchr::memmem::Finder;

static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n"));

/// Where the first `\r\n\r\n` starts.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    HEAD_END.find(buf)
}

/// Where the first `\r\n` starts.
pub fn crlf(buf: &[u8]) -> Option<usize> {
    CRLF.find(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_first() {
        assert_eq!(super::head_end(b"a\r\n\r\nb\r\n\r\n"), Some(1));
        assert_eq!(super::head_end(b"a\r\n\r"), None);
        assert_eq!(super::crlf(b"ab\r\nc\r\n"), Some(2));
        assert_eq!(super::crlf(b"ab\n"), None);
    }
}
