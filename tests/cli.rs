//! The command line as a user meets it, through the real binary: every subcommand's help
//! (snapshots under tests/fixtures/cli/, every argument described), where a config problem
//! is said to come from, suggestions for misspelt fields, and counts in good grammar.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test --test cli` rewrites the help snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn meridian(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MERIDIAN_LOG", "error")
        .env_remove("MERIDIAN_LOCAL_REGION");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The start of a long message, for assertion failures.
fn head(text: &str) -> String {
    text.chars().take(2000).collect()
}

/// Every command a user can ask help for.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["run"],
    &["check"],
    &["demo"],
    &["backend"],
    &["import"],
    &["import", "istio"],
    &["geo"],
    &["geo", "build"],
    &["geo", "lookup"],
];

fn snapshot_path(command: &[&str]) -> PathBuf {
    let name = if command.is_empty() {
        "meridian".to_owned()
    } else {
        command.join("-")
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cli")
        .join(format!("{name}.txt"))
}

/// The entries of the "Arguments:" and "Options:" sections: each entry's first line and
/// the lines that continue it.
fn argument_entries(help: &str) -> Vec<(String, Vec<String>)> {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_section = false;
    for line in help.lines() {
        if line == "Arguments:" || line == "Options:" {
            in_section = true;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            in_section = false;
            continue;
        }
        if !in_section {
            continue;
        }
        // Entries start at two spaces (six for a long option without a short one);
        // their descriptions continue at ten.
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        if indent <= 6 && (trimmed.starts_with('-') || trimmed.starts_with('<')) {
            entries.push((line.trim().to_owned(), Vec::new()));
        } else if let Some(last) = entries.last_mut() {
            last.1.push(line.trim().to_owned());
        }
    }
    entries
}

/// What an entry says besides its name and default: `-c, --config <CONFIG>  Config file`
/// gives "Config file".
fn description(first: &str, rest: &[String]) -> String {
    let after_name = match first.split_once("  ") {
        Some((_, text)) => text.trim().to_owned(),
        None => String::new(),
    };
    let mut text = std::iter::once(after_name)
        .chain(rest.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    for bracket in ["[default: ", "[possible values: "] {
        while let Some(start) = text.find(bracket) {
            let end = text[start..]
                .find(']')
                .map_or(text.len(), |e| start + e + 1);
            text.replace_range(start..end, "");
        }
    }
    text.trim().to_owned()
}

#[test]
fn help_of_every_command_matches_its_snapshot_and_describes_every_argument() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for command in COMMANDS {
        let mut args: Vec<&str> = command.to_vec();
        args.push("--help");
        let (ok, help, stderr) = meridian(&args, &[]);
        assert!(ok, "meridian {args:?}: {stderr}");
        let entries = argument_entries(&help);
        assert!(
            entries
                .iter()
                .any(|(first, _)| first.starts_with("-h, --help")),
            "meridian {args:?}: no Options section found in:\n{help}"
        );
        for (first, rest) in &entries {
            assert!(
                !description(first, rest).is_empty(),
                "meridian {args:?}: `{first}` has no description:\n{help}"
            );
        }
        let path = snapshot_path(command);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &help).unwrap();
            continue;
        }
        let saved = std::fs::read_to_string(&path).unwrap_or_default();
        if saved != help {
            stale.push(format!(
                "{}:\n--- saved\n{saved}\n--- now\n{help}",
                path.display()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "help changed (UPDATE_SNAPSHOTS=1 cargo test --test cli rewrites the snapshots):\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_description_check_catches_an_undescribed_argument() {
    // The check above must be able to fail: an entry with only a default is undescribed.
    let help = "Usage: x\n\nArguments:\n  <FILE>  \n\nOptions:\n  -c, --config <CONFIG>  [default: a.yaml]\n      --quiet\n          Say less\n\n      --loud\n  -h, --help  Print help\n";
    let entries = argument_entries(help);
    let described: Vec<bool> = entries
        .iter()
        .map(|(first, rest)| !description(first, rest).is_empty())
        .collect();
    assert_eq!(described, [false, false, true, false, true], "{entries:?}");
}

#[test]
fn run_help_names_the_reload_paths_and_the_environment() {
    let (ok, help, _) = meridian(&["run", "--help"], &[]);
    assert!(ok);
    for text in [
        "SIGHUP",
        "POST /reload",
        "file changing on disk",
        "SIGTERM",
        "MERIDIAN_LOG",
        "MERIDIAN_LOCAL_REGION",
        "MIMALLOC_",
        "--worker-threads",
    ] {
        assert!(help.contains(text), "`run --help` lacks {text}:\n{help}");
    }
    // Every environment variable the program reads is named (the source is the list).
    let mut read = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["try_from_env(\"", "pub const LOCAL_REGION_ENV: &str = \""] {
                    for (i, _) in text.match_indices(marker) {
                        let rest = &text[i + marker.len()..];
                        read.push(rest[..rest.find('"').unwrap()].to_owned());
                    }
                }
            }
        }
    }
    read.sort();
    read.dedup();
    assert_eq!(read, ["MERIDIAN_LOCAL_REGION", "MERIDIAN_LOG"]);
    for var in &read {
        assert!(help.contains(var.as_str()), "{var} missing:\n{help}");
    }
}

#[test]
fn a_bad_local_region_from_the_environment_is_blamed_on_the_environment() {
    let (ok, _, stderr) = meridian(
        &["check", "-c", "config/meridian.yaml"],
        &[("MERIDIAN_LOCAL_REGION", "eu-wset-1")],
    );
    assert!(!ok, "an unknown region must fail");
    assert!(
        stderr.contains(
            "\n  environment variable MERIDIAN_LOCAL_REGION=`eu-wset-1`: unknown region `eu-wset-1` (did you mean `eu-west-1`?)"
        ),
        "{stderr}"
    );
    // Not a line of the file, although the file has a local_region line.
    assert!(!stderr.contains("meridian.yaml:"), "{stderr}");
    assert!(stderr.contains("(1 problem)"), "{stderr}");

    // The same value written in the file is the file's, with its line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meridian.yaml"))
            .unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("local_region:"))
        .unwrap()
        + 1;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[line - 1] = "local_region: eu-wset-1".into();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "m.yaml:{line}: local_region: unknown region `eu-wset-1`"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("environment variable"), "{stderr}");

    // A good value from the environment passes; a huge one is refused and shown cut short.
    let (ok, _, stderr) = meridian(
        &["check", "-c", "config/meridian.yaml"],
        &[("MERIDIAN_LOCAL_REGION", "ap-southeast-1")],
    );
    assert!(ok, "{stderr}");
    let huge = "x".repeat(100_000);
    let (ok, _, stderr) = meridian(
        &["check", "-c", "config/meridian.yaml"],
        &[("MERIDIAN_LOCAL_REGION", &huge)],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("MERIDIAN_LOCAL_REGION=`{}…`", "x".repeat(64))),
        "{}",
        head(&stderr)
    );
}

const TYPOS: &str = r#"local_region: us-east-1
lisetners:
  - { name: http, bind: "127.0.0.1:8080" }
listeners:
  - { name: http, bind: "127.0.0.1:8080" }
regions:
  us-east-1: { lat: 38.9, lon: -77.4 }
  eu-west-1: { lat: 53.3, lon: -6.3 }
clusters:
  api:
    conect_timeout: 1s
    endpoints:
      us-east-1: ["10.0.0.1:80"]
routes:
  - name: r
    hosts: ["*"]
    cluster: api
    steering: { mode: weighted, weights: { us-east-1: 1 }, wieghts: { eu-west-1: 1 }, zqxv: 1 }
    retries: { attemps: 2 }
"#;

#[test]
fn a_misspelt_field_suggests_the_nearest_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typos.yaml");
    std::fs::write(&file, TYPOS).unwrap();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()], &[]);
    assert!(!ok, "unknown fields must fail");
    for (line, text) in [
        (
            2,
            "lisetners: unknown field `lisetners`: not a setting here (did you mean `listeners`?)",
        ),
        (
            11,
            "clusters.api.conect_timeout: unknown field `conect_timeout`: not a setting here (did you mean `connect_timeout`?)",
        ),
        (
            18,
            "routes[0].steering.wieghts: unknown field `wieghts`: not a setting here (did you mean `weights`?)",
        ),
        (
            18,
            "routes[0].steering.zqxv: unknown field `zqxv`: not a setting here (check its spelling and indentation)",
        ),
        (
            19,
            "routes[0].retries.attemps: unknown field `attemps`: not a setting here (did you mean `attempts`?)",
        ),
    ] {
        let want = format!("typos.yaml:{line}: {text}");
        assert!(stderr.contains(&want), "missing `{want}` in:\n{stderr}");
    }
    assert!(stderr.contains("(5 problems)"), "{stderr}");
}

#[test]
fn a_flood_of_unknown_fields_is_answered_quickly() {
    // 20,000 unknown keys, some of them huge: each is reported, none suggests anything
    // far-fetched, and the answer comes in bounded time.
    let mut text = String::from(TYPOS);
    text.push_str("extra:\n");
    let mut flood = String::new();
    for i in 0..20_000 {
        flood.push_str(&format!("listenerz{i}: 1\n"));
    }
    flood.push_str(&format!("{}: 1\n", "k".repeat(1_000)));
    let text = text.replace("extra:\n", &flood);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flood.yaml");
    std::fs::write(&file, text).unwrap();
    let started = Instant::now();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("(20006 problems)"), "{}", head(&stderr));
    assert!(
        stderr.contains(
            "listenerz1: unknown field `listenerz1`: not a setting here (did you mean `listeners`?)"
        ),
        "{}",
        head(&stderr)
    );
    assert!(
        stderr.contains("listenerz19999: unknown field `listenerz19999`: not a setting here (check its spelling and indentation)"),
        "{}",
        head(&stderr)
    );
}

#[test]
fn counts_are_grammatical() {
    let (ok, stdout, stderr) = meridian(&["check", "-c", "config/demo.yaml"], &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("is valid: 1 listener, 3 regions, 1 cluster, 3 routes"),
        "{stdout}"
    );
    let (ok, stdout, stderr) = meridian(&["check", "-c", "config/meridian.yaml"], &[]);
    assert!(ok, "{stderr}");
    let summary = stdout.lines().next().unwrap();
    let counts = summary.split_once("is valid: ").unwrap().1;
    let mut seen = 0;
    for part in counts.split(", ") {
        let (n, word) = part.split_once(' ').unwrap();
        let n: usize = n.parse().unwrap();
        assert_eq!(word.ends_with('s'), n != 1, "{summary}");
        seen += 1;
    }
    assert_eq!(seen, 4, "{summary}");

    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("one.yaml");
    std::fs::write(
        &fixture,
        "description: one network\nnetworks:\n  - { cidr: 192.0.2.0/24, country: US, lat: 38.9, lon: -77.4 }\n",
    )
    .unwrap();
    let out = dir.path().join("one.mmdb");
    let (ok, stdout, stderr) = meridian(
        &[
            "geo",
            "build",
            fixture.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(stdout.contains(&format!("({size} bytes)")), "{stdout}");
}
