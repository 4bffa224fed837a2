//! `meridian import istio` on DestinationRule `consistentHash`: every key form maps onto
//! `load_balancer.consistent_hash`, what differs (ring hash, generated cookie values, cookie
//! attributes, oversized tables) is reported, and the result passes `meridian check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn meridian(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MERIDIAN_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_consistent_hash_form_is_mapped_and_differences_are_reported() {
    let (ok, text, stderr) = meridian(&[
        "import",
        "istio",
        "tests/fixtures/istio/session-affinity.yaml",
    ]);
    assert!(ok, "{stderr}");
    let config: serde_json::Value = {
        let yaml: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        meridian::config::parse_values(&yaml).unwrap().remove(0)
    };
    let hash =
        |cluster: &str| config["clusters"][cluster]["load_balancer"]["consistent_hash"].clone();
    let cases = [
        (
            "cart",
            serde_json::json!({ "cookie": { "name": "user", "path": "/", "ttl": "3600s" }, "table_size": 131071 }),
        ),
        ("profile", serde_json::json!({ "header": "x-user" })),
        ("search", serde_json::json!({ "query_parameter": "user" })),
        ("stream", serde_json::json!({ "source_ip": true })),
        (
            "legacy",
            serde_json::json!({ "cookie": { "name": "session", "ttl": "0s" }, "table_size": 1000003 }),
        ),
    ];
    for (cluster, want) in cases {
        assert_eq!(hash(cluster), want, "{cluster}");
    }

    // The report: one line per field, with its status and why.
    let report: Vec<&str> = text.lines().filter(|l| l.starts_with("#   ")).collect();
    let line = |resource: &str, field: &str| {
        let field = format!("{resource} spec.trafficPolicy.loadBalancer.consistentHash.{field}:");
        report
            .iter()
            .find(|l| l.contains(&field))
            .copied()
            .unwrap_or_else(|| panic!("{field} missing from report:\n{}", report.join("\n")))
    };
    let expected = [
        ("shop/cart", "httpCookie.name", "mapped", ""),
        ("shop/cart", "maglev.tableSize", "mapped", "table_size"),
        ("shop/cart", "httpCookie.ttl", "approximated", "random id"),
        (
            "shop/profile",
            "httpHeaderName",
            "approximated",
            "ring hash",
        ),
        (
            "shop/search",
            "httpQueryParameterName",
            "approximated",
            "ring hash",
        ),
        (
            "shop/search",
            "ringHash.minimumRingSize",
            "approximated",
            "not a ring",
        ),
        (
            "shop/stream",
            "useSourceIp",
            "approximated",
            "trusted_proxies",
        ),
        (
            "shop/stream",
            "minimumRingSize",
            "approximated",
            "not a ring",
        ),
        (
            "shop/legacy",
            "httpCookie.attributes",
            "unsupported",
            "Max-Age, Path and HttpOnly only",
        ),
        (
            "shop/legacy",
            "maglev.tableSize",
            "approximated",
            "table_size 1000003",
        ),
    ];
    for (resource, field, status, why) in expected {
        let l = line(resource, field);
        assert!(l.starts_with(&format!("#   {status} ")), "{l}");
        assert!(l.contains(why), "{l}");
    }
    assert!(
        !report
            .iter()
            .any(|l| l.contains("not mapped by meridian import")),
        "every consistentHash field has its own note:\n{}",
        report.join("\n")
    );

    // The imported config is valid, and check shows each cluster's affinity.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, &text).unwrap();
    let (ok, stdout, stderr) = meridian(&["check", "-c", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    for want in [
        "cluster cart: consistent hash on cookie user (generated; Max-Age=3600; Path=/; HttpOnly), maglev table 131071",
        "cluster legacy: consistent hash on cookie session (generated; HttpOnly), maglev table 1000003",
        "cluster profile: consistent hash on header x-user, maglev table 65537",
        "cluster search: consistent hash on query parameter user, maglev table 65537",
        "cluster stream: consistent hash on source ip, maglev table 65537",
    ] {
        assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
    }
}
