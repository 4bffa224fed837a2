//! `meridian import istio` maps corsPolicy, fault, mirror/mirrorPercentage and mirrors[] onto
//! the route's cors, fault and mirrors, reports what it cannot carry, and the result passes
//! `meridian check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio/cors-fault-mirror.yaml")
}

fn import() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["import", "istio"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The imported config (comments dropped) as JSON, and the report lines.
fn imported() -> (serde_json::Value, Vec<String>) {
    let text = import();
    let report = text
        .lines()
        .filter(|l| l.starts_with("#   "))
        .map(str::to_owned)
        .collect();
    let loaded = meridian::config::load_str(&text, Path::new("imported.yaml")).unwrap();
    let config = serde_json::to_value(&*loaded.config).unwrap();
    // It is a config Meridian runs.
    if let Err(e) = meridian::table::compile(&loaded, meridian::table::CompileContext::default()) {
        panic!("{e}\n{text}");
    }
    (config, report)
}

fn route<'a>(config: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    config["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

#[test]
fn faults_map_with_istio_meanings() {
    let (config, report) = imported();
    let delay = &route(&config, "reviews-tester-delay")["fault"];
    assert_eq!(delay["delay"]["fixed"], "7s");
    assert_eq!(delay["delay"]["percent"], 100.0);
    assert!(delay["abort"].is_null());

    let both = &route(&config, "reviews-tester-abort")["fault"];
    assert_eq!(both["abort"]["status"], 500);
    assert_eq!(both["abort"]["percent"], 12.5);
    assert_eq!(both["delay"]["fixed"], "250ms");
    assert_eq!(both["delay"]["percent"], 10.0);

    // A gRPC abort has no HTTP meaning here: reported, and the route has no fault.
    assert!(route(&config, "reviews-grpc")["fault"].is_null());
    let line = |field: &str| {
        report
            .iter()
            .find(|l| l.contains(&format!(" {field}:")))
            .unwrap_or_else(|| panic!("{field} not in the report:\n{}", report.join("\n")))
            .clone()
    };
    assert!(line("spec.http[2].fault.abort").contains("unsupported"));
    assert!(line("spec.http[2].fault.abort").contains("grpcStatus"));
    assert!(line("spec.http[0].fault.delay.fixedDelay").contains("mapped"));
    assert!(line("spec.http[0].fault.delay.percent").contains("mapped"));
    assert!(line("spec.http[1].fault.abort.percentage.value").contains("mapped"));

    // No percentage: Istio aborts nothing, and so does the import (and says so).
    let teapot = &route(&config, "ratings-0")["fault"]["abort"];
    assert_eq!(
        (teapot["status"].as_u64(), teapot["percent"].as_f64()),
        (Some(418), Some(0.0))
    );
    let unset = report
        .iter()
        .find(|l| l.contains("ratings spec.http[0].fault.abort.percentage:"))
        .unwrap_or_else(|| panic!("{}", report.join("\n")));
    assert!(
        unset.contains("approximated") && unset.contains("no request"),
        "{unset}"
    );
}

#[test]
fn cors_policy_maps_field_for_field() {
    let (config, report) = imported();
    let cors = &route(&config, "reviews-web")["cors"];
    assert_eq!(
        cors["allow_origins"],
        serde_json::json!([
            { "exact": "https://shop.example.com" },
            { "prefix": "https://preview-" },
            { "regex": "https://[a-z]+\\.partner\\.example" },
        ])
    );
    assert_eq!(cors["allow_methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(
        cors["allow_headers"],
        serde_json::json!(["authorization", "content-type"])
    );
    assert_eq!(cors["expose_headers"], serde_json::json!(["x-request-id"]));
    assert_eq!(cors["max_age"], "24h");
    assert_eq!(cors["allow_credentials"], true);
    for field in [
        "allowOrigins[0].exact",
        "allowOrigins[1].prefix",
        "allowOrigins[2].regex",
        "allowMethods",
        "allowHeaders",
        "exposeHeaders",
        "maxAge",
        "allowCredentials",
    ] {
        let field = format!("spec.http[3].corsPolicy.{field}");
        assert!(
            report
                .iter()
                .any(|l| l.contains(&field) && l.contains("mapped")),
            "{field}:\n{}",
            report.join("\n")
        );
    }
}

#[test]
fn mirrors_become_clusters_in_known_regions_only() {
    let (config, report) = imported();
    // mirror + mirrorPercentage: the subset's region label names the region.
    let web = &route(&config, "reviews-web");
    assert_eq!(
        web["mirrors"],
        serde_json::json!([{ "cluster": "reviews-west-mirror", "percent": 25.0, "max_in_flight": 64 }])
    );
    let west = &config["clusters"]["reviews-west-mirror"]["endpoints"];
    assert_eq!(
        west,
        &serde_json::json!({ "us-west-2": [{ "address": "reviews-west.shop.svc.cluster.local:9080", "weight": 1 }] })
    );
    // mirrors[]: the region in the service name; one with no region is reported, not guessed.
    let shadows = &route(&config, "reviews-shadows");
    assert_eq!(
        shadows["mirrors"],
        serde_json::json!([{ "cluster": "reviews-mirror", "percent": 5.0, "max_in_flight": 64 }])
    );
    assert!(config["clusters"]["reviews-mirror"]["endpoints"]["eu-west-1"].is_array());
    assert!(config["clusters"].get("reviews-canary-mirror").is_none());
    let canary = report
        .iter()
        .find(|l| l.contains("spec.http[4].mirrors[1].destination"))
        .unwrap_or_else(|| panic!("{}", report.join("\n")));
    assert!(
        canary.contains("unsupported") && canary.contains("reviews-canary"),
        "{canary}"
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("spec.http[3].mirrorPercentage.value") && l.contains("mapped"))
    );
    assert!(report.iter().any(|l| l.contains("spec.http[4].mirrors[0].percentage.value") && l.contains("mapped")));
    // Nothing of the input is left out of the report.
    assert!(
        !report
            .iter()
            .any(|l| l.contains("unsupported") && l.contains("corsPolicy"))
    );
}
