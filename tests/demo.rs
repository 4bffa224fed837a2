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

    let mut tried = 0;
    for line in printed
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
    {
        let (command, comment) = line.trim().split_once("    # ").unwrap();
        let expect = comment.rsplit_once("→ ").unwrap().1.trim();
        let out = Command::new("bash")
            .args(["-c", &format!("{command} --max-time 10 -sS")])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            body.contains(expect),
            "`{command}` should show {expect}, showed {body:?}"
        );
        tried += 1;
    }
    assert!(
        tried >= 6,
        "expected the demo to print its curl lines: {printed:#?}"
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
