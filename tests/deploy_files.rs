//! The files operators deploy with: every Meridian config in the repository passes
//! `meridian check`, every manifest parses, and ports and paths agree with the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use meridian::config::{self, parse_values};
use meridian::table::{self, CompileContext};
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs(path: &str) -> Vec<Value> {
    parse_values(&read(path)).unwrap_or_else(|p| panic!("{path} does not parse: {p:?}"))
}

/// Compile a config the way `meridian check` does, with container paths pointed at the
/// repository's copies.
fn check(name: &str, text: &str, token: &Path) {
    let text = text
        .replace(
            "/etc/meridian/geoip/demo-city.mmdb",
            &repo("config/geoip/demo-city.mmdb").display().to_string(),
        )
        .replace(
            "/var/lib/geoip/GeoLite2-City.mmdb",
            &repo("config/geoip/demo-city.mmdb").display().to_string(),
        )
        .replace(
            "/etc/meridian-secrets/admin-token",
            &token.display().to_string(),
        )
        .replace("/etc/meridian/admin-token", &token.display().to_string());
    let loaded = config::load_str(&text, Path::new(name)).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = table::compile(&loaded, CompileContext::default()) {
        panic!("{e}");
    }
}

/// A region's config, as its overlay puts it in the ConfigMap (tests/kubernetes.rs checks
/// the rendered objects).
fn configmap_config(region: &str) -> String {
    read(&format!(
        "docker/kubernetes/overlays/{region}/meridian.yaml"
    ))
}

#[test]
fn every_meridian_config_in_the_repository_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    for path in [
        "config/meridian.yaml",
        "config/demo.yaml",
        "docker/meridian.yaml",
        "tests/fixtures/istio/reference.meridian.yaml",
    ] {
        check(path, &read(path), &token);
    }
    for region in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        check(region, &configmap_config(region), &token);
    }
    // README examples that are whole configs.
    let readme = read("README.md");
    let mut checked = 0;
    for block in readme.split("```yaml").skip(1) {
        let block = block.split("```").next().unwrap();
        if block.contains("local_region:") {
            check("README example", block, &token);
            checked += 1;
        }
    }
    assert!(checked >= 1, "the README shows at least one whole config");
}

#[test]
fn every_manifest_parses() {
    let mut files = Vec::new();
    let mut stack = vec![repo("docker")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 15, "{files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let parsed =
            parse_values(&text).unwrap_or_else(|p| panic!("{} does not parse: {p:?}", f.display()));
        assert!(!parsed.is_empty(), "{} is empty", f.display());
    }
    let dashboard: Value =
        serde_json::from_str(&read("docker/grafana/dashboards/meridian.json")).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    for metric in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "meridian_endpoint_healthy",
        "meridian_ejections_total",
        "meridian_retries_total",
        "meridian_config_reloads_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "dashboard lacks {metric}"
        );
    }
}

fn port_of(bind: &str) -> u16 {
    bind.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn ports_and_paths_agree_with_the_binary() {
    let default_admin = port_of(config::DEFAULT_ADMIN_BIND);
    let cm: Value = parse_values(&configmap_config("us-east-1"))
        .unwrap()
        .remove(0);
    let proxy_port = port_of(cm["listeners"][0]["bind"].as_str().unwrap());
    let admin_port = port_of(cm["admin"]["bind"].as_str().unwrap());
    assert_eq!(admin_port, default_admin);

    let deployment = &docs("docker/kubernetes/base/deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap() as u16
    };
    assert_eq!((port("http"), port("admin")), (proxy_port, admin_port));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    let config_arg = container["args"][2].as_str().unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert_eq!(
        Path::new(config_arg).parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap())
    );
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates"
    );

    assert_eq!(container["env"][0]["name"], config::LOCAL_REGION_ENV);

    // Docker image, compose and Prometheus.
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile.contains(&format!("EXPOSE {proxy_port} {admin_port}")));
    assert!(dockerfile.contains("USER 10001"));
    // The image ships the profile-guided build the performance figures are for; the compose
    // demo asks for the plain one (minutes instead of ten).
    assert!(dockerfile.contains("ARG PGO=1") && dockerfile.contains("python3 benches/pgo.py"));
    let compose = &docs("docker/compose.yaml")[0];
    for service in ["meridian", "backend-us-east-1"] {
        assert_eq!(compose["services"][service]["build"]["args"]["PGO"], "0");
    }
    let meridian = &compose["services"]["meridian"];
    let cmd_config = meridian["command"][2].as_str().unwrap();
    assert!(
        dockerfile.contains(cmd_config),
        "compose and the image agree on the config path"
    );
    let volumes: Vec<&str> = meridian["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes
            .iter()
            .any(|v| v.contains(&format!(":{cmd_config}")))
    );
    let docker_config: Value = docs("docker/meridian.yaml").remove(0);
    assert_eq!(
        port_of(docker_config["admin"]["bind"].as_str().unwrap()),
        admin_port
    );
    let prometheus = &docs("docker/prometheus/prometheus.yml")[0];
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(
        port_of(job["static_configs"][0]["targets"][0].as_str().unwrap()),
        admin_port
    );
    let federation = read("docker/prometheus/federation.yml");
    assert!(federation.contains(r#"{__name__=~"up|http_requests_total|http_request_duration.*"}"#));
    let alerts = read("docker/prometheus/alerts.yml");
    for metric in [
        "meridian_endpoint_healthy",
        "http_requests_total",
        "meridian_config_reloads_total",
        "meridian_geoip_build_epoch_seconds",
    ] {
        assert!(alerts.contains(metric), "alerts lack {metric}");
    }
}
