//! `meridian check` and `meridian run` on good and bad configs, through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

fn meridian(args: &[&str]) -> (bool, String, String) {
    meridian_logging(args, "error")
}

fn meridian_logging(args: &[&str], log: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MERIDIAN_LOG", log)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD: &str = r#"local_region: us-central-1
listeners:
  - { name: http, bind: "PORT" }
geo:
  trusted_proxies: ["10.0.0.0/33"]
  overrides: [{ cidr: "100.64.0.0/10", country: Germany }]
regions:
  us-east-1: { lat: 138.9, lon: -77.4 }
  eu-west-1: { lat: 53.3, lon: -6.3 }
clusters:
  api:
    endpoints:
      us-east-1: ["10.0.1.10:8000", { address: "10.0.1.11:8000", wieght: 2 }]
      eu-west-2: ["10.1.0.5:8000"]
routes:
  - name: api
    hosts: ["api.example.com"]
    match: { path_regex: "([a-z" }
    cluster: apii
    steering: { mode: weighted, weights: { us-east-1: 0 } }
    timeout: 3 parsecs
    retry: 3
"#;

#[test]
fn check_lists_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD.replace("PORT", "0.0.0.0:99999")).unwrap();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()]);
    assert!(!ok, "check must fail");
    let expected = [
        (1, "local_region: unknown region `us-central-1`"),
        (3, "listeners[0].bind: `0.0.0.0:99999` is not an ip:port"),
        (5, "geo.trusted_proxies[0]: `10.0.0.0/33`"),
        (6, "geo.overrides[0].country: `Germany`"),
        (8, "regions.us-east-1.lat: latitude 138.9"),
        (
            13,
            "clusters.api.endpoints.us-east-1[1].wieght: unknown field",
        ),
        (14, "clusters.api.endpoints.eu-west-2: unknown region"),
        (18, "routes[0].match.path_regex: invalid regular expression"),
        (19, "routes[0].cluster: unknown cluster `apii`"),
        (
            20,
            "routes[0].steering.weights: mode weighted needs weights",
        ),
        (21, "routes[0].timeout: `3 parsecs` is not a duration"),
        (22, "routes[0].retry: unknown field `retry`"),
    ];
    assert!(
        stderr.contains(&format!("({} problems)", expected.len())),
        "{stderr}"
    );
    for (line, text) in expected {
        let want = format!("bad.yaml:{line}: {text}");
        assert!(stderr.contains(&want), "missing `{want}` in:\n{stderr}");
    }
}

#[test]
fn type_errors_and_syntax_errors_have_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.yaml");
    std::fs::write(
        &file,
        "local_region: a\nregions:\n  a: { lat: north, lon: 1 }\n",
    )
    .unwrap();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("types.yaml:3: regions.a.lat: invalid type"),
        "{stderr}"
    );

    std::fs::write(&file, "routes: [\n  - name: a\n").unwrap();
    let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("YAML syntax error"), "{stderr}");

    let (ok, _, stderr) = meridian(&["check", "-c", "no/such/file.yaml"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read config file no/such/file.yaml"),
        "{stderr}"
    );
}

#[test]
fn shipped_configs_are_valid() {
    for file in ["config/meridian.yaml", "config/demo.yaml"] {
        let (ok, stdout, stderr) = meridian(&["check", "-c", file]);
        assert!(ok, "{file}: {stderr}");
        assert!(stdout.contains("is valid"), "{stdout}");
    }
}

#[test]
fn run_validates_before_binding_anything() {
    // A free port for the (invalid) config's listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, BAD.replace("PORT", &port.to_string())).unwrap();
    let (ok, _, stderr) = meridian_logging(&["run", "-c", file.to_str().unwrap()], "info");
    assert!(!ok, "run must refuse an invalid config");
    assert!(
        stderr.contains("bad.yaml:19: routes[0].cluster"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("listening"),
        "nothing may be bound: {stderr}"
    );
}

#[test]
fn local_region_can_come_from_the_environment() {
    let run = |region: &str| {
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "-c", "config/meridian.yaml"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("MERIDIAN_LOCAL_REGION", region)
            .output()
            .unwrap()
    };
    assert!(run("eu-west-1").status.success());
    let out = run("mars-north-1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown region `mars-north-1`"));
}

#[test]
fn backend_command_answers_with_its_region() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "backend",
            "--region",
            "eu-west-1",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("MERIDIAN_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.contains("Hello from eu-west-1"), "{reply}");
}

/// The largest number of seconds a duration can be written with: it parses, but no clock
/// reaches it.
const HUGE: &str = "18446744073709551615s";

/// Just under a field's smallest value.
fn below(min: &str) -> Option<&'static str> {
    match min {
        "1ms" => Some("999us"),
        "10ms" => Some("9ms"),
        "100ms" => Some("99ms"),
        _ => None,
    }
}

#[test]
fn every_duration_field_is_checked_against_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, value: &dyn Fn(&str) -> String| {
        let (text, lines) = common::durations_config("127.0.0.1:9", "null", value);
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let (ok, _, stderr) = meridian(&["check", "-c", file.to_str().unwrap()]);
        (ok, stderr, lines)
    };
    let min = |path: &str| {
        common::DURATION_FIELDS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, min)| (*min).to_owned())
            .unwrap()
    };

    // Both ends of every range are valid.
    let (ok, stderr, _) = check("smallest.yaml", &min);
    assert!(ok, "{stderr}");
    let (ok, stderr, _) = check("longest.yaml", &|_| common::LONGEST_DURATION.to_owned());
    assert!(ok, "{stderr}");

    // Past either end, every field is reported with its line.
    // File, the bad value of each field (none: its smallest, which is valid), what is wrong.
    type Case<'a> = (&'a str, &'a dyn Fn(&str) -> Option<String>, &'a str);
    let cases: [Case; 4] = [
        ("huge.yaml", &|_| Some(HUGE.to_owned()), "too long"),
        (
            "a-day-and-more.yaml",
            &|_| Some("24h 1ms".to_owned()),
            "too long",
        ),
        (
            "zero.yaml",
            &|p| (min(p) != "0s").then(|| "0s".to_owned()),
            "too short",
        ),
        (
            "below.yaml",
            &|p| below(&min(p)).map(str::to_owned),
            "too short",
        ),
    ];
    for (name, bad, what) in cases {
        let (ok, stderr, lines) = check(name, &|p| bad(p).unwrap_or_else(|| min(p)));
        assert!(!ok, "{name} must fail:\n{stderr}");
        let expected: Vec<&str> = common::DURATION_FIELDS
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| bad(p).is_some())
            .collect();
        assert!(
            stderr.contains(&format!("({} problems)", expected.len())),
            "{name}: {stderr}"
        );
        for path in expected {
            let want = format!("{name}:{}: {path}: `", lines[path]);
            let line = stderr
                .lines()
                .find(|l| l.contains(&want))
                .unwrap_or_else(|| panic!("missing `{want}` in:\n{stderr}"));
            assert!(line.contains(what), "{line}");
            assert!(line.contains(" to 24h"), "the range is named: {line}");
        }
    }
}
