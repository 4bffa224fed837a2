//! `meridian demo` starts, and every curl line it prints does what it says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::process::{require_program, signal};

/// Kills the demo if the test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn demo_curl_lines_do_what_they_say() {
    // The printed lines run through bash, which finds curl where this does.
    let curl = require_program("curl", "curl");
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("MERIDIAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut running = Running(Some(child));
    let stdout = running.0.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo did not print its instructions");
        let done = line.contains("Press Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }

    let proxy = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("proxy  "))
        .unwrap()
        .to_owned();
    let mut tried = 0;
    let mut weighted = 0;
    for line in printed
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
    {
        let (command, comment) = line.trim().split_once("    # ").unwrap();
        let expect = comment.rsplit_once("→ ").unwrap().1.trim();
        // The line as printed, with a time limit and errors shown for curl itself (a line
        // may go on through a pipe).
        let command_run = command.replacen("curl ", "curl --max-time 10 -sS ", 1);
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", &command_run])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if expect == meridian::demo::WEIGHTED_SPLIT {
            assert_weighted_split(&body);
            weighted += 1;
        } else {
            assert!(
                body.contains(expect),
                "`{command}` should show {expect}, showed {body:?}"
            );
        }
        tried += 1;
    }
    assert!(
        tried >= 8 && weighted == 1,
        "expected the demo to print its curl lines, one of them the weighted route's: {printed:#?}"
    );

    // The README shows the same lines, with the default proxy address.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown: Vec<String> = printed
        .iter()
        .skip_while(|l| !l.starts_with("Try "))
        .take_while(|l| !l.is_empty())
        .map(|l| l.replace(&proxy, "http://127.0.0.1:8080/"))
        .collect();
    assert!(shown.len() >= 9, "{printed:#?}");
    let block = shown.join("\n");
    assert!(
        readme.contains(&format!("```text\n{block}\n```")),
        "README.md's demo block must be exactly what the demo prints:\n{block}"
    );

    let admin = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("admin  "))
        .unwrap();
    let out = Command::new(&curl)
        .args(["-sS", "--max-time", "10", &format!("{admin}readyz")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");

    // SIGTERM: drains and exits cleanly.
    let mut child = running.0.take().unwrap();
    signal(child.id(), libc::SIGTERM).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let Ok(exit) = done_rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = signal(pid, libc::SIGKILL);
        panic!("demo did not exit after SIGTERM");
    };
    let exit = exit.unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// `sort | uniq -c` of 100 answers from the 50/30/20 route: each region within two requests
/// of its weight.
fn assert_weighted_split(counted: &str) {
    let mut total = 0;
    for (region, weight) in [("us-east-1", 50), ("eu-west-1", 30), ("ap-southeast-1", 20)] {
        let n: i64 = counted
            .lines()
            .find(|l| l.contains(&format!("Hello from {region} ")))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for {region} in {counted:?}"));
        assert!(
            (n - weight).abs() <= 2,
            "{region}: {n} of 100, weight {weight}: {counted}"
        );
        total += n;
    }
    assert_eq!(total, 100, "{counted}");
}
