//! The `Date` header value (IMF-fixdate), formatted once a second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Append now, as an HTTP date (`Tue, 15 Nov 1994 08:12:31 GMT`), to `out`.
pub fn write_now(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_http_date() {
        let mut out = Vec::new();
        super::write_now(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.len(), 29, "{text}");
        assert!(text.ends_with(" GMT"));
        assert!(httpdate::parse_http_date(&text).is_ok());
    }
}
