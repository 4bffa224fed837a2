//! The README as a manual: its contents list names every section and every link inside it
//! lands on a heading, links to files name files that exist, user sections name no source
//! files, and the performance summary's figures are those of benches/load/results.md.
//! (The demo block is checked against the demo's output in tests/demo.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's lines outside fenced code blocks.
fn prose(readme: &str) -> Vec<&str> {
    let mut fenced = false;
    readme
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `(level, text)` of every heading.
fn headings(readme: &str) -> Vec<(usize, String)> {
    prose(readme)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let level = l.chars().take_while(|c| *c == '#').count();
            (level, l[level..].trim().to_owned())
        })
        .collect()
}

/// Every `](target)` link target in the text.
fn links(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            rest.find(')').map(|end| rest[..end].to_owned())
        })
        .collect()
}

#[test]
fn anchors_follow_githubs_rule() {
    for (heading, expected) in [
        ("Start here", "start-here"),
        ("gRPC and HTTP/2 upstreams", "grpc-and-http2-upstreams"),
        ("Standalone, behind DNS", "standalone-behind-dns"),
        (
            "Kubernetes: the ingress in each region",
            "kubernetes-the-ingress-in-each-region",
        ),
    ] {
        assert_eq!(anchor(heading), expected);
    }
}

#[test]
fn every_link_lands_and_the_contents_list_every_section() {
    let readme = read("README.md");
    let anchors: HashSet<String> = headings(&readme).iter().map(|(_, h)| anchor(h)).collect();
    let text = prose(&readme).join("\n");
    for target in links(&text) {
        if let Some(name) = target.strip_prefix('#') {
            assert!(anchors.contains(name), "link to #{name}: no such heading");
        } else if !target.contains("://") {
            let file = target.split('#').next().unwrap();
            assert!(
                Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists(),
                "link to {target}: no such file"
            );
        }
    }

    let contents = readme
        .split("## Contents\n")
        .nth(1)
        .expect("the README has a Contents section")
        .split("\n## ")
        .next()
        .unwrap();
    let listed: HashSet<String> = links(contents)
        .into_iter()
        .filter_map(|t| t.strip_prefix('#').map(str::to_owned))
        .collect();
    for (level, heading) in headings(&readme) {
        if level == 2 && heading != "Contents" {
            assert!(
                listed.contains(&anchor(&heading)),
                "the Contents do not list the section `{heading}`"
            );
        }
    }
}

#[test]
fn user_sections_name_no_source_files() {
    let readme = read("README.md");
    let user = readme
        .split("\n## Contributing\n")
        .next()
        .expect("the README has a Contributing section");
    for (n, line) in user.lines().enumerate() {
        for word in line.split(|c: char| c.is_whitespace() || "`()[],;".contains(c)) {
            assert!(
                !(word.starts_with("src/") || word.ends_with(".rs")),
                "README.md:{}: a source file name in a user section: {word}",
                n + 1
            );
        }
    }
}

#[test]
fn the_performance_summary_is_the_latest_run() {
    let readme = read("README.md");
    let results = read("benches/load/results.md").replace(',', "");
    let section = readme
        .split("### Against nginx and HAProxy\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap()
        .split("\n### ")
        .next()
        .unwrap();
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| |"))
        .collect();
    assert!(rows.len() >= 10, "{rows:?}");
    let mut figures = 0;
    for row in rows {
        for cell in row.split('|').skip(2) {
            for figure in cell.split(" / ") {
                let figure = figure
                    .trim()
                    .trim_end_matches(" µs")
                    .trim_end_matches(" MB")
                    .trim_end_matches(" KB")
                    .replace(',', "");
                if figure.is_empty() {
                    continue;
                }
                assert!(
                    results.contains(&format!(" {figure} ")),
                    "README figure {figure} ({row}) is not in benches/load/results.md"
                );
                figures += 1;
            }
        }
    }
    assert!(figures >= 30, "{figures}");
}
