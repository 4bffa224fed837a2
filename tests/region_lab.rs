//! The region lab's smoke run (`benches/regions/run.py --smoke`) as a test: three regions and a
//! clients namespace built with iproute2, each region with real backends, this build's
//! Meridian (HTTP and GeoDNS) and the lab's delay relay. Steady state: 50 requests from each
//! client region, resolved through GeoDNS, must all be served in that region, and US clients
//! reaching eu-west-1 must see the 40 ms one-way delay. Region kill: us-east-1's backends,
//! Meridian and relay are killed; US users must be answered from eu-west-1 within the bound the
//! lab derives from the TTL, the peer probes and the dead name server's timeout, users with
//! retries must see no error, and after the restore both must be served in us-east-1 again.
//! Every namespace the lab made must be gone afterwards. Needs root and `ip`; it fails, never
//! skips, without them. The lab client's DNS step and the relay's timing (a new connection pays
//! the handshake's round trip) are also checked on loopback, without root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Namespaces of this test's own, apart from a lab someone runs by hand (prefix `mlab-`).
const PREFIX: &str = "mlabt-";

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn smoke_run_serves_each_region_at_home_then_survives_a_region_kill() {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the region lab builds network namespaces and needs root: run the tests as root \
         (CI runs as root)"
    );
    common::process::require_program("ip", "iproute2");
    let python = common::process::require_program("python3", "python3");
    let leftovers: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "stale lab namespaces: {leftovers:?}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/regions/run.py");
    let out_dir = tempfile::tempdir().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = Command::new(python)
        .arg(&script)
        .args([
            "--smoke",
            "--prefix",
            PREFIX,
            "--meridian",
            env!("CARGO_BIN_EXE_meridian"),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(180);
    let start = Instant::now();
    let mut status = None;
    for _ in 0..(limit.as_millis() / 100) {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status.is_none() {
        // SIGTERM: the lab's handler removes its namespaces before exiting.
        let _ = common::process::signal(child.id(), libc::SIGTERM);
        let _ = child.wait();
    }
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("lab still running after {limit:?}\n{report}"));
    assert!(
        status.success(),
        "lab smoke run failed ({status}) after {:?}\n{report}",
        start.elapsed()
    );

    // What the run reports: each region's clients served at home, the WAN delay measured.
    for region in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        let line = format!("{region}: 50 requests, served by ['{region}']");
        assert!(stdout.contains(&line), "missing `{line}`\n{report}");
    }
    assert!(
        stdout.contains("wide-area delay: user-space delay relay"),
        "{report}"
    );
    assert!(
        stdout.contains("us-east-1 -> eu-west-1 ingress: 50 answers"),
        "{report}"
    );
    // The region kill: both US users failed over to eu-west-1 through a GeoDNS answer led by
    // its ingress (10.77.0.2), the one with retries without an error, and both came back.
    assert!(
        stdout.contains("region kill: us-east-1's backends, Meridian and ingress killed"),
        "{report}"
    );
    for label in ["without retries", "with retries"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("region kill: US users {label}: first answer")))
            .unwrap_or_else(|| panic!("no failover line for users {label}\n{report}"));
        assert!(
            line.contains("GeoDNS answer after the kill 10.77.0.2"),
            "{line}\n{report}"
        );
        assert!(!line.contains("eu-west-1 never"), "{line}\n{report}");
        assert!(
            line.contains(", 0 not from eu-west-1 after"),
            "{line}\n{report}"
        );
        if label == "with retries" {
            assert!(line.contains(", 0 errors of "), "{line}\n{report}");
        }
        let back = format!("region restore: US users {label} back in us-east-1 ");
        let line = stdout
            .lines()
            .find(|l| l.contains(&back))
            .unwrap_or_else(|| panic!("missing `{back}`\n{report}"));
        assert!(!line.contains("us-east-1 never"), "{line}\n{report}");
    }
    assert!(stdout.contains("smoke wall time"), "{report}");

    let left: Vec<String> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    assert!(
        left.is_empty(),
        "namespaces left behind: {left:?}\n{report}"
    );
}

/// Run one of the lab's Python unittest files from the repository root; it must pass and run
/// `tests` tests (so a file that quietly lost its tests fails here).
fn run_unittest(file: &str, tests: usize) {
    let python = common::process::require_program("python3", "python3");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .current_dir(root)
        .args(["-m", "unittest", file])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{file}: {stderr}");
    assert!(
        stderr.contains(&format!("Ran {tests} tests")),
        "{file}: {stderr}"
    );
}

/// The lab client's GeoDNS step against a DNS responder on loopback (no root needed).
#[test]
fn lab_client_dns_step_parses_answers_and_walks_name_servers() {
    run_unittest("benches/regions/test_client.py", 10);
}

/// The lab's delay relay on loopback (no root needed): a new connection's first answer pays
/// the handshake's round trip, a second exchange on it one round trip, a refused target is
/// reset a round trip after the connect.
#[test]
fn lab_relay_delays_the_handshake_round_trip() {
    run_unittest("benches/regions/test_relay.py", 3);
}
