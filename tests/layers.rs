//! The layer rules of ARCHITECTURE.md, checked on the source: every `crate::…` path in a
//! module under `src/` must name its own top-level module or one below it in `LAYERS`.
//! Test modules (from the first `#[cfg(test)]` on) and comments are not checked.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use its own layer and the layers before it, never one after.
const LAYERS: &[&str] = &[
    "alloc",     // the global allocator
    "deadline",  // deadlines from configured durations that saturate instead of panicking
    "worker",    // worker threads (one runtime per core) and the calling thread's index
    "config",    // the config model, YAML with lines, problems, Istio import
    "tls",       // certificates and rustls configurations
    "http1",     // Meridian's own HTTP/1.1: server loop, client codec, fields, strict checks
    "geo",       // the GeoIP database and client location
    "telemetry", // metric handles and the access log, written on the request path
    "steer",     // region order, spill and endpoint choice: pure functions
    "upstream",  // pools and breakers, endpoint state, outlier, health, discovery
    "table",     // the compiled routing table and its compiler
    "route",     // the routing decision over a table
    "proxy",     // the request handler's phases
    "edge",      // listeners, accept loop, TLS and PROXY protocol, hyper glue
    "dns",       // the GeoDNS listener: answers from the table and route::geodns
    "control",   // lifecycle, reload, admin, demo
    "fuzzing",   // entry points for the fuzz targets
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for the crate root files).
fn layer_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// Every `crate::name` in a line of code (comments left out).
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut refs = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            refs.push(name);
        }
    }
    refs
}

/// Rule breaks in one file's text: `file:line: layer -> used`.
fn violations(file: &str, layer: &str, text: &str) -> Vec<String> {
    let rank = |name: &str| LAYERS.iter().position(|l| *l == name);
    let Some(own) = rank(layer) else {
        return vec![format!(
            "{file}: top-level module `{layer}` has no place in LAYERS"
        )];
    };
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        for used in crate_refs(line) {
            match rank(&used) {
                Some(r) if r <= own => {}
                Some(_) => found.push(format!(
                    "{file}:{}: `{layer}` may not use `{used}` (a higher layer): {}",
                    n + 1,
                    line.trim()
                )),
                None => found.push(format!(
                    "{file}:{}: `crate::{used}` is not a layer in LAYERS",
                    n + 1
                )),
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_its_own_layer_and_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 30, "src/ not found");
    let mut broken = Vec::new();
    for file in &files {
        let Some(layer) = layer_of(&src, file) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        broken.extend(violations(&name, &layer, &text));
    }
    assert!(
        broken.is_empty(),
        "layer rules broken (see ARCHITECTURE.md):\n{}",
        broken.join("\n")
    );
}

#[test]
fn a_use_of_a_higher_layer_is_reported_with_its_line() {
    let text =
        "//! doc naming crate::proxy\nuse crate::http1::headers;\nuse crate::proxy::Answer;\n";
    let found = violations("http1/x.rs", "http1", text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("http1/x.rs:3: `http1` may not use `proxy`"));
    // Test modules may use anything.
    let text = "#[cfg(test)]\nmod tests { use crate::control::demo; }\n";
    assert!(violations("geo/x.rs", "geo", text).is_empty());
}
