//! Replays the fuzz seed corpora (fuzz/corpus/<target>/*) through the same entry points the
//! cargo-fuzz targets use, on stable Rust: every input kept there must still not panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        // Every prefix too: truncated input is what a network hands out.
        for end in (0..data.len()).step_by((data.len() / 64).max(1)) {
            run(&data[..end]);
        }
        count += 1;
    }
    assert!(count > 0, "{target}: empty corpus");
}

#[test]
fn config_corpus() {
    replay("config", meridian::fuzzing::config);
}

#[test]
fn forwarded_for_corpus() {
    replay("forwarded_for", meridian::fuzzing::forwarded_for);
}

#[test]
fn proxy_header_corpus() {
    replay("proxy_header", meridian::fuzzing::proxy_header);
}

#[test]
fn request_head_corpus() {
    replay("request_head", meridian::fuzzing::request_head);
}
