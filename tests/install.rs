//! What installing Meridian relies on: the systemd unit parses (systemd-analyze) and runs the
//! binary's real commands and flags, its stop timeout outlasts the drain, and the package's
//! minimum Rust version and license are what Cargo.lock and the license files say.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::require_program;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const UNIT: &str = "deploy/meridian.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/meridian";

/// The `Key=value` settings of the unit, in order (comments and sections left out).
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn setting<'a>(all: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn the_systemd_unit_parses() {
    let analyze = require_program("systemd-analyze", "systemd");
    // The unit names the installed binary; verify checks that it exists and is executable,
    // so point it at the one just built.
    let unit = read(UNIT).replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_meridian"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("meridian.service");
    std::fs::write(&file, &unit).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A misspelt or unknown setting is only a warning for systemd: any output fails.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    // The check above can fail: a bad value is reported.
    let broken = unit.replace("Restart=always", "Restart=sometimes");
    std::fs::write(&file, broken).unwrap();
    let out = Command::new(require_program("systemd-analyze", "systemd"))
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sometimes"),
        "{out:?}"
    );
}

#[test]
fn the_systemd_unit_runs_real_commands_with_real_flags() {
    let unit = read(UNIT);
    let all = settings(&unit);
    let starts: Vec<&str> = setting(&all, "ExecStartPre")
        .into_iter()
        .chain(setting(&all, "ExecStart"))
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    for line in &starts {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], INSTALLED_BINARY, "{line}");
        let subcommand = words[1];
        let (ok, help) = {
            let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
                .args([subcommand, "--help"])
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        assert!(ok, "`meridian {subcommand}` is not a command");
        for flag in words.iter().filter(|w| w.starts_with('-')) {
            assert!(
                help.contains(&format!(" {flag} ")) || help.contains(&format!(" {flag},")),
                "`meridian {subcommand}` has no flag {flag}:\n{help}"
            );
        }
        assert!(line.contains("/etc/meridian/meridian.yaml"), "{line}");
    }
    // The start check, on the reference config, passes.
    let check = setting(&all, "ExecStartPre")[0].replace(
        "/etc/meridian/meridian.yaml",
        &repo("config/meridian.yaml").display().to_string(),
    );
    let words: Vec<&str> = check.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(&words[1..])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MERIDIAN_LOG", "error")
        .env_remove("MERIDIAN_LOCAL_REGION")
        .output()
        .unwrap();
    assert!(out.status.success(), "{check}: {out:?}");

    // What an operator relies on.
    assert_eq!(setting(&all, "ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(setting(&all, "Restart"), ["always"]);
    assert_eq!(setting(&all, "KillSignal"), ["SIGTERM"]);
    let user = setting(&all, "User");
    assert!(user.len() == 1 && user[0] != "root", "{user:?}");
    assert_eq!(
        setting(&all, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(
        setting(&all, "CapabilityBoundingSet"),
        ["CAP_NET_BIND_SERVICE"]
    );
    let files: u64 = setting(&all, "LimitNOFILE")[0].parse().unwrap();
    assert!(files >= 65_536, "LimitNOFILE={files}");
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "SystemCallFilter",
    ] {
        assert_eq!(setting(&all, hardening).len(), 1, "{hardening} missing");
    }
    assert_eq!(setting(&all, "WantedBy"), ["multi-user.target"]);
}

#[test]
fn the_unit_waits_longer_than_the_drain() {
    let all = settings(&read(UNIT));
    let stop = setting(&all, "TimeoutStopSec")[0];
    let stop: Duration = humantime::parse_duration(stop).unwrap();
    let table = meridian::table::load(
        &repo("config/meridian.yaml"),
        meridian::table::CompileContext::default(),
    )
    .unwrap();
    let drain = table.drain_delay + table.drain_timeout;
    assert!(
        stop > drain + Duration::from_secs(5),
        "TimeoutStopSec {stop:?} must outlast drain_delay + drain_timeout ({drain:?})"
    );
}

/// `1.91` or `1.88.0` as comparable numbers.
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn rust_version_is_the_newest_any_locked_dependency_needs() {
    let manifest = read("Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml has a rust-version");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let newest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != "meridian")
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((version(v), p["name"].as_str().unwrap().to_owned()))
        })
        .max()
        .unwrap();
    assert_eq!(
        version(declared),
        newest.0,
        "rust-version {declared} is not the newest a dependency needs ({} needs {:?})",
        newest.1,
        newest.0
    );
}

#[test]
fn the_license_field_matches_the_license_files() {
    let manifest = read("Cargo.toml");
    assert!(
        manifest.contains("license = \"MIT OR Apache-2.0\""),
        "Cargo.toml's license"
    );
    assert!(read("LICENSE-MIT").starts_with("MIT License"));
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
}
