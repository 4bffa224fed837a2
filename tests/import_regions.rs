//! `meridian import istio` places every destination in a real region or says what to add:
//! the seed deployment re-imported (golden file), unknown regions refused (or left out with
//! `--allow-partial`), `--region` and `--local-region` flags, and abuse (unknown region
//! labels, malformed and duplicate flags, a 10,000-destination document).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meridian::config;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(name)
}

/// Run `meridian import istio <file> <args>`.
fn import(file: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["import", "istio"])
        .arg(file)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Write Istio YAML to a temporary file.
fn istio_file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let file = dir.path().join("istio.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The imported config passes `meridian check`, and as parsed.
fn checked(text: &str) -> config::Config {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let loaded = config::load_str(text, &file).unwrap();
    (*loaded.config).clone()
}

fn weights(config: &config::Config, route: &str) -> BTreeMap<String, u32> {
    config
        .routes
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("no route {route}"))
        .steering
        .weights
        .clone()
}

fn report_line<'a>(text: &'a str, part: &str) -> &'a str {
    text.lines()
        .filter(|l| l.starts_with("#   "))
        .find(|l| l.contains(part))
        .unwrap_or_else(|| panic!("no report line with {part}:\n{text}"))
}

#[test]
fn the_seed_deployment_reimports_with_its_three_regions() {
    let text = stdout(&import(
        &fixture("seed.yaml"),
        &["--local-region", "us-east-1"],
    ));

    // Golden file (regenerate with UPDATE_GOLDEN=1 after an intended change).
    let golden = fixture("seed.meridian.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(text, expected, "output differs from {}", golden.display());

    let config = checked(&text);
    let regions: Vec<&str> = config.regions.keys().map(String::as_str).collect();
    assert_eq!(regions, ["ap-southeast-1", "eu-west-1", "us-east-1"]);
    assert_eq!(config.local_region.as_deref(), Some("us-east-1"));
    let us = &config.regions["us-east-1"];
    assert_eq!((us.lat, us.lon), (38.9, -77.4));
    let want = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
        pairs.iter().map(|(r, w)| ((*r).to_owned(), *w)).collect()
    };
    assert_eq!(
        weights(&config, "fingerprint-global-global"),
        want(&[("us-east-1", 50), ("eu-west-1", 30), ("ap-southeast-1", 20)])
    );
    assert_eq!(
        weights(&config, "fingerprint-local-local"),
        want(&[("us-east-1", 95), ("eu-west-1", 5)])
    );
    let endpoints = &config.clusters["fingerprint-api"].endpoints;
    assert_eq!(
        endpoints.len(),
        3,
        "one cluster with an endpoint per region"
    );
    let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        !body.iter().any(|l| l.contains("default")),
        "no made-up region"
    );

    // The report says where each region came from.
    assert!(
        report_line(&text, "spec.http[0].route[0].destination.host")
            .contains("inferred     VirtualService fingerprint/fingerprint-global")
    );
    assert!(
        report_line(
            &text,
            "fingerprint-global spec.http[0].route[1].destination.host"
        )
        .contains(
            "from service name `fingerprint-api-eu-west` (`eu-west` without a number: eu-west-1)"
        )
    );
    assert!(
        report_line(
            &text,
            "fingerprint-local spec.http[0].route[0].destination.host"
        )
        .contains("label topology.kubernetes.io/region=us-east-1")
    );
    assert!(report_line(&text, "localityLbSetting.failover[0]").contains("mapped"));
    assert!(report_line(&text, "--local-region").contains("mapped"));
}

const UNKNOWN: &str = r#"kind: VirtualService
metadata: { name: api, namespace: fp }
spec:
  hosts: ["api.example.com"]
  http:
    - route:
        - destination: { host: fingerprint-api-us-east, port: { number: 8000 } }
          weight: 90
        - destination: { host: fingerprint-api, port: { number: 8000 } }
          weight: 10
"#;

#[test]
fn an_unknown_region_fails_with_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let file = istio_file(&dir, UNKNOWN);
    let out = import(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing written");
    let err = stderr(&out);
    for part in [
        "VirtualService fp/api spec.http[0].route[1]",
        "destination `fingerprint-api`",
        "--region us-east-1=fingerprint-api",
        "--allow-partial",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    assert!(
        !err.contains("route[0]"),
        "the known one is not listed: {err}"
    );
}

#[test]
fn allow_partial_leaves_the_unknown_out_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = istio_file(&dir, UNKNOWN);
    let text = stdout(&import(&file, &["--allow-partial"]));
    assert!(
        text.contains("# - 1 destination(s) LEFT OUT: their region is unknown"),
        "the header says so: {text}"
    );
    let config = checked(&text);
    assert_eq!(config.regions.keys().collect::<Vec<_>>(), ["us-east-1"]);
    assert_eq!(config.routes.len(), 1);
    assert!(!text.contains("fingerprint-api.fp.svc"), "{text}");
    let line = report_line(&text, "spec.http[0].route[1]:");
    assert!(
        line.contains("unsupported") && line.contains("left out") && line.contains("--region"),
        "{line}"
    );
}

#[test]
fn region_flags_win_and_an_unused_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = istio_file(&dir, UNKNOWN);
    let text = stdout(&import(
        &file,
        &[
            "--region",
            "eu-west-1=fingerprint-api",
            "--region",
            "ap-southeast-1=fingerprint-api-us-east",
            "--region",
            "us-west-2=typo-api",
            "--local-region",
            "eu-west-1",
        ],
    ));
    let config = checked(&text);
    assert_eq!(
        config.regions.keys().collect::<Vec<_>>(),
        ["ap-southeast-1", "eu-west-1"]
    );
    assert_eq!(
        weights(&config, "api-0"),
        [
            ("ap-southeast-1".to_owned(), 90),
            ("eu-west-1".to_owned(), 10)
        ]
        .into()
    );
    assert!(
        report_line(&text, "route[1].destination.host")
            .contains("mapped       VirtualService fp/api")
    );
    assert!(report_line(&text, "--region us-west-2=typo-api").contains("matched no destination"));

    // A local region with no backends of its own still gets its place.
    let text = stdout(&import(
        &file,
        &[
            "--region",
            "eu-west-1=fingerprint-api",
            "--local-region",
            "sa-east-1",
        ],
    ));
    let config = checked(&text);
    assert!(config.regions.contains_key("sa-east-1"));
    assert_eq!(config.local_region.as_deref(), Some("sa-east-1"));
}

#[test]
fn a_region_label_meridian_does_not_know_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = istio_file(
        &dir,
        r#"kind: VirtualService
metadata: { name: api, namespace: fp }
spec:
  hosts: ["api.example.com"]
  http:
    - route:
        - destination: { host: api, subset: central }
---
kind: DestinationRule
metadata: { name: api, namespace: fp }
spec:
  host: api
  subsets:
    - name: central
      labels: { topology.kubernetes.io/region: us-central1 }
"#,
    );
    let out = import(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("`us-central1` is not a region Meridian knows")
            && err.contains("subset `central`")
            && err.contains("--region us-east-1=api"),
        "{err}"
    );
    // Told where it is, the import goes through.
    let text = stdout(&import(&file, &["--region", "us-east-1=api/central"]));
    assert!(checked(&text).regions.contains_key("us-east-1"));
}

#[test]
fn malformed_and_duplicate_flags_are_refused() {
    let file = fixture("seed.yaml");
    // (flags, exit code, part of the message)
    let huge = format!("us-east-1={}", "a".repeat(100_000));
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--region", "us-east-1"], 1, "NAME=HOST"),
        (vec!["--region", "=api"], 1, "both a region and a host"),
        (
            vec!["--region", "gcp-central=api"],
            1,
            "not a region Meridian knows",
        ),
        (vec!["--region", "us-east-1=a b"], 1, "only letters"),
        (vec!["--region", &huge], 1, "at most"),
        (
            vec!["--region", "us-east-1=api", "--region", "eu-west-1=api"],
            1,
            "`api` twice",
        ),
        (
            vec!["--local-region", "default"],
            1,
            "--local-region default",
        ),
    ];
    for (flags, code, want) in cases {
        let out = import(&file, &flags);
        let err = stderr(&out);
        let shown: String = format!("{flags:?}").chars().take(120).collect();
        assert!(err.len() < 2_000, "{shown}: the message stays short");
        assert_eq!(out.status.code(), Some(code), "{shown}: {err}");
        assert!(err.contains(want), "{shown}: {err}");
        assert!(out.stdout.is_empty());
    }
}

/// A VirtualService with `n` http routes of one destination each.
fn many(n: usize, host: impl Fn(usize) -> String) -> String {
    let mut text = String::from(
        "kind: VirtualService\nmetadata: { name: big, namespace: fp }\nspec:\n  hosts: [\"big.example.com\"]\n  http:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "    - match: [{{ uri: {{ prefix: /{i}/ }} }}]\n      route: [{{ destination: {{ host: {} }} }}]\n",
            host(i)
        ));
    }
    text
}

#[test]
fn ten_thousand_destinations_import_and_unknown_ones_are_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let regions = ["us-east", "eu-west-1", "ap-southeast"];
    let file = istio_file(
        &dir,
        &many(10_000, |i| format!("svc{i}-{}", regions[i % 3])),
    );
    let text = stdout(&import(&file, &["--local-region", "us-east-1"]));
    let config = config::load_str(&text, Path::new("big.yaml")).unwrap();
    assert_eq!(config.config.routes.len(), 10_000);
    assert_eq!(config.config.clusters.len(), 10_000);
    assert_eq!(config.config.regions.len(), 3);

    // Every one unknown: refused with a bounded message that counts the rest.
    let file = istio_file(&dir, &many(10_000, |i| format!("svc{i}")));
    let out = import(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("10000 destinations") && err.contains("and 9980 more"),
        "{}",
        &err[..err.len().min(600)]
    );
    assert!(err.lines().count() < 30);
    // With --allow-partial there is nothing left to import: still an error, not an empty config.
    let out = import(&file, &["--allow-partial"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn version_subsets_need_a_region_and_become_a_clusters_split() {
    let file = fixture("bookinfo-reviews.yaml");
    let out = import(&file, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("destination `reviews` (subset `v1`)")
            && err.contains("destination `reviews` (subset `v2`)")
            && err.contains("--region us-east-1=reviews"),
        "{err}"
    );

    let text = stdout(&import(
        &file,
        &[
            "--region",
            "eu-west-1=reviews",
            "--local-region",
            "eu-west-1",
        ],
    ));
    let config = checked(&text);
    // v1 and v2 are different pods: two clusters split 80/20, not one region at 100.
    let route = &config.routes[0];
    let split: Vec<(&str, u32)> = route
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight))
        .collect();
    assert_eq!(split, [("reviews-v1", 80), ("reviews-v2", 20)]);
    for (name, cluster) in &config.clusters {
        assert_eq!(
            cluster.load_balancer.policy,
            config::LoadBalancer::Random,
            "{name} keeps its DestinationRule's load balancer"
        );
        assert_eq!(cluster.endpoints.keys().collect::<Vec<_>>(), ["eu-west-1"]);
    }
    assert!(report_line(&text, "route[0].destination.subset").contains("cluster `reviews-v1`"));
    assert!(report_line(&text, "spec.subsets[1]").contains("is a version"));
}
