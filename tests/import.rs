//! `meridian import istio` on the reference deployment: the output passes `meridian check`,
//! the report names every field, and a golden file pins the output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/istio")
        .join(name)
}

/// `meridian import istio <file>`'s output; it must succeed.
fn import(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["import", "istio"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The imported config passes `meridian check`.
fn assert_passes_check(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn reference_deployment_imports_into_a_valid_config() {
    let text = import(&fixture("reference.yaml"));

    // Golden file (regenerate with UPDATE_GOLDEN=1 after an intended change).
    let golden = fixture("reference.meridian.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(text, expected, "output differs from {}", golden.display());

    assert_passes_check(&text);

    // The report names each field of the input, with its status.
    let istio = std::fs::read_to_string(fixture("reference.yaml")).unwrap();
    let report: Vec<&str> = text.lines().filter(|l| l.starts_with("#   ")).collect();
    for field in [
        "spec.http[1].route[0].weight",
        "spec.http[1].timeout",
        "spec.http[1].retries.attempts",
        "spec.http[1].retries.perTryTimeout",
        "spec.http[1].retries.retryOn",
        "spec.http[0].match[0].uri.prefix",
        "spec.http[0].match[1].uri.regex",
        "spec.http[0].match[0].headers.x-tenant-region.exact",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
        "spec.trafficPolicy.connectionPool.http.http2MaxRequests",
        "spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection",
        "spec.trafficPolicy.outlierDetection.consecutive5xxErrors",
        "spec.trafficPolicy.outlierDetection.interval",
        "spec.trafficPolicy.outlierDetection.baseEjectionTime",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "spec.subsets[0]",
        "spec.servers[0]",
        "spec.servers[1].port",
        "spec.http[1].corsPolicy",
    ] {
        assert!(
            report.iter().any(|l| l.contains(&format!(" {field}"))),
            "report misses {field}"
        );
    }
    assert!(
        report
            .iter()
            .any(|l| l.contains("unsupported") && l.contains("tls.certificates"))
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("approximated") && l.contains("cancelled"))
    );
    assert!(istio.contains("weight: 50"));
    assert!(
        text.contains("us-east-1: 50")
            && text.contains("eu-west-1: 30")
            && text.contains("ap-southeast-1: 20")
    );
    assert!(text.contains("us-east-1: 95") && text.contains("eu-west-1: 5"));
    assert!(text.contains("api-eu-west-1.api.svc.cluster.local:8000"));
}

#[test]
fn input_without_a_virtual_service_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dr.yaml");
    std::fs::write(
        &file,
        "kind: DestinationRule\nmetadata: { name: x }\nspec: { host: x }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["import", "istio"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VirtualService"));
}

#[test]
fn tls_settings_map_to_upstream_tls_and_redirect_https() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("istio.yaml");
    std::fs::write(
        &file,
        r#"kind: Gateway
metadata: { name: gw }
spec:
  servers:
    - port: { number: 80, name: http, protocol: HTTP }
      tls: { httpsRedirect: true }
      hosts: ["api.example.com"]
    - port: { number: 443, name: https, protocol: HTTPS }
      tls: { mode: SIMPLE, credentialName: api-cert }
      hosts: ["api.example.com"]
---
kind: VirtualService
metadata: { name: api, namespace: api }
spec:
  hosts: ["api.example.com"]
  http:
    - route:
        - destination: { host: api-us-east-1, port: { number: 8443 } }
          weight: 60
        - destination: { host: api-eu-west-1, port: { number: 8443 } }
          weight: 40
---
kind: DestinationRule
metadata: { name: us, namespace: api }
spec:
  host: api-us-east-1
  trafficPolicy:
    tls: { mode: SIMPLE, sni: api.internal.example.com }
---
kind: DestinationRule
metadata: { name: eu, namespace: api }
spec:
  host: api-eu-west-1
  trafficPolicy:
    tls: { mode: ISTIO_MUTUAL }
"#,
    )
    .unwrap();
    let text = import(&file);
    let config: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let config = config.join("\n");
    assert!(config.contains("redirect_https: true"), "{config}");
    assert!(config.contains("sni: api.internal.example.com"), "{config}");
    assert_eq!(config.matches("tls:").count(), 1, "{config}");
    let report: Vec<&str> = text.lines().filter(|l| l.starts_with("#   ")).collect();
    let line = |field: &str| {
        report
            .iter()
            .find(|l| l.contains(field))
            .copied()
            .unwrap_or_else(|| panic!("{field} missing from report:\n{}", report.join("\n")))
    };
    assert!(line("spec.servers[0].tls.httpsRedirect").contains("mapped"));
    assert!(line("spec.servers[1]").contains("unsupported"));
    assert!(line("spec.servers[1]").contains("api-cert"));
    let mutual = report
        .iter()
        .find(|l| l.contains("ISTIO_MUTUAL"))
        .expect("ISTIO_MUTUAL reported");
    assert!(mutual.contains("unsupported"));

    assert_passes_check(&text);
}

/// Rewrite, redirect, direct response, header operations and the extra match fields map onto
/// Meridian's with Istio's meanings; the output passes `meridian check`; a golden file pins it.
#[test]
fn route_policies_import_with_istio_meanings() {
    let text = import(&fixture("policies.yaml"));
    let golden = fixture("policies.meridian.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(text, expected, "output differs from {}", golden.display());
    assert_passes_check(&text);

    let report: Vec<&str> = text.lines().filter(|l| l.starts_with("#   ")).collect();
    let status = |field: &str| {
        report
            .iter()
            .find(|l| l.contains(&format!(" {field}:")))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
            .unwrap_or_else(|| panic!("report misses {field}"))
    };
    for (field, want) in [
        ("spec.http[0].redirect.uri", "mapped"),
        ("spec.http[0].redirect.authority", "mapped"),
        ("spec.http[0].redirect.redirectCode", "mapped"),
        ("spec.http[1].directResponse.status", "mapped"),
        ("spec.http[1].directResponse.body.string", "mapped"),
        ("spec.http[2].match[0].queryParams.version.exact", "mapped"),
        ("spec.http[2].match[0].ignoreUriCase", "mapped"),
        (
            "spec.http[2].match[0].withoutHeaders.x-legacy-client",
            "mapped",
        ),
        ("spec.http[2].rewrite.uri", "mapped"),
        ("spec.http[2].rewrite.authority", "mapped"),
        ("spec.http[2].headers.request.set.x-user-tier", "mapped"),
        (
            "spec.http[2].headers.request.add.x-client-address",
            "mapped",
        ),
        (
            "spec.http[2].headers.request.add.x-upstream-host",
            "unsupported",
        ),
        ("spec.http[2].headers.response.remove[0]", "mapped"),
        ("spec.http[3].match[0].scheme.exact", "mapped"),
        ("spec.http[3].match[0].port", "approximated"),
        ("spec.http[3].rewrite.uriRegexRewrite", "mapped"),
    ] {
        assert_eq!(status(field), want, "{field}");
    }
    // Istio regexes are full matches: anchored. A rewrite's regex is a search: kept.
    assert!(text.contains("path_regex: \"^(?:/service/[^/]+/.*)$\""));
    assert!(text.contains("pattern: \"^/service/([^/]+)(/.*)$\""));
    // `rewrite.uri` on a regex match replaces the whole path, as in Istio.
    assert!(text.contains("pattern: \"^.*$\"\n        substitution: /index.html"));
    // An empty `exact` on a query parameter asks for presence.
    assert!(text.contains("- name: debug\n          present: true"));
    // The redirect's authority is split into host and port; it needs no cluster.
    assert!(text.contains("host: newratings.example.com\n      port: 8443\n      code: 302"));
    assert!(text.contains("x-client-address: \"%CLIENT_ADDRESS%\""));
}
