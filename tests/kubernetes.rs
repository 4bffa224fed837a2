//! The Kubernetes manifests as `kubectl kustomize` renders them, overlay by overlay, checked
//! object by object: the Service keeps the client address, pods drain before they stop, the
//! disruption budget allows drains, the image is a real one, the GeoIP database comes from the
//! updater's volume, and each region's ConfigMap passes the real binary's `meridian check`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use meridian::config::parse_values;
use mmdb_writer::{Value as Mmdb, Writer};
use serde_json::Value;

const REGIONS: [(&str, u64, u64); 3] = [
    ("us-east-1", 3, 20),
    ("eu-west-1", 3, 15),
    ("ap-southeast-1", 2, 10),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `kubectl kustomize DIR`, parsed; a missing kubectl fails with the package to install.
fn render(dir: &Path) -> Vec<Value> {
    let kubectl = common::process::require_program("kubectl", "kubectl");
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    parse_values(&text).unwrap_or_else(|p| panic!("{}: {p:?}", dir.display()))
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

fn seconds(text: &str) -> u64 {
    humantime::parse_duration(text).unwrap().as_secs()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {list}"))
}

/// A small GeoLite2-City-shaped database, standing in for the one the updater downloads.
fn city_database() -> Vec<u8> {
    let mut writer = Writer::builder("GeoLite2-City")
        .description(&[("en", "test")])
        .build();
    let record = Mmdb::map([
        ("country", Mmdb::map([("iso_code", Mmdb::from("DE"))])),
        (
            "location",
            Mmdb::map([
                ("latitude", Mmdb::Double(50.1)),
                ("longitude", Mmdb::Double(8.7)),
            ]),
        ),
    ]);
    writer
        .insert_value("198.51.100.0/24".parse::<ipnet::IpNet>().unwrap(), record)
        .unwrap();
    writer.to_bytes().unwrap()
}

/// Run the built binary's `meridian check` on a config, with the pod's paths (the GeoIP
/// volume, the admin token) pointed at files in `dir`.
fn meridian_check(region: &str, config: &str, geo: &Value, dir: &Path) {
    let database = Path::new(geo["database"].as_str().unwrap());
    let local_db = dir.join(database.file_name().unwrap());
    std::fs::write(&local_db, city_database()).unwrap();
    let token = dir.join("admin-token");
    std::fs::write(&token, "t").unwrap();
    let text = config
        .replace(database.to_str().unwrap(), local_db.to_str().unwrap())
        .replace("/etc/meridian-secrets/admin-token", token.to_str().unwrap());
    let path = dir.join(format!("{region}.yaml"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c"])
        .arg(&path)
        .env("MERIDIAN_LOCAL_REGION", region)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{region}: meridian check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_overlay_renders_correct_by_default() {
    let dir = tempfile::tempdir().unwrap();
    for (region, min, max) in REGIONS {
        let objects = render(&repo(&format!("docker/kubernetes/overlays/{region}")));
        for o in &objects {
            assert_eq!(o["metadata"]["namespace"], "meridian", "{}", o["kind"]);
        }

        // The client address survives the Service.
        let service = object(&objects, "Service");
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");

        // Drains are allowed at every replica count.
        let pdb = object(&objects, "PodDisruptionBudget");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert!(pdb["spec"].get("minAvailable").is_none());
        let hpa = object(&objects, "HorizontalPodAutoscaler");
        assert_eq!(
            (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
            (&Value::from(min), &Value::from(max))
        );

        let deployment = object(&objects, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], min);
        let pod = &deployment["spec"]["template"]["spec"];
        let meridian = named(&pod["containers"], "meridian");
        // A real image with a tag, not the base's bare name.
        let image = meridian["image"].as_str().unwrap();
        let (name, tag) = image.rsplit_once(':').unwrap();
        assert!(name.contains('/') && name.ends_with("/meridian"), "{image}");
        assert_eq!(tag, env!("CARGO_PKG_VERSION"), "{image}");
        assert_eq!(
            named(&meridian["env"], meridian::config::LOCAL_REGION_ENV)["value"],
            region
        );

        // The region's config, from the ConfigMap the pod mounts.
        let configmap = object(&objects, "ConfigMap");
        assert_eq!(
            named(&pod["volumes"], "config")["configMap"]["name"],
            configmap["metadata"]["name"]
        );
        let text = configmap["data"]["meridian.yaml"].as_str().unwrap();
        let config = parse_values(text).unwrap().remove(0);
        assert_eq!(config["local_region"], region);
        assert!(config["regions"].get(region).is_some());
        let args: Vec<&str> = meridian["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[..2], ["run", "-c"]);
        let config_mount = named(&meridian["volumeMounts"], "config");
        assert_eq!(
            Path::new(args[2]),
            Path::new(config_mount["mountPath"].as_str().unwrap()).join("meridian.yaml")
        );

        // Draining: preStop, then drain_delay, then drain_timeout, all inside the grace period.
        let pre_stop = &meridian["lifecycle"]["preStop"]["exec"]["command"];
        assert_eq!(pre_stop[0], "sleep", "{pre_stop}");
        let pre_stop: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
        assert!(pre_stop >= 5, "endpoint removal takes seconds to propagate");
        let delay = seconds(config["drain_delay"].as_str().unwrap());
        let timeout = seconds(config["drain_timeout"].as_str().unwrap());
        assert_eq!(delay, pre_stop, "drain_delay matched to the preStop");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace > pre_stop + delay + timeout,
            "grace {grace}s <= {pre_stop} + {delay} + {timeout}"
        );

        // Ports: each listener has its container port; the PROXY protocol one is there for
        // the component; the network policy admits both.
        let ports = &meridian["ports"];
        let policy = object(&objects, "NetworkPolicy");
        for (port_name, proxy_protocol) in [("http", false), ("proxy", true)] {
            let listener = named(&config["listeners"], port_name);
            assert_eq!(
                listener["proxy_protocol"].as_bool().unwrap_or(false),
                proxy_protocol
            );
            let bind = listener["bind"].as_str().unwrap();
            let port: u64 = bind.rsplit_once(':').unwrap().1.parse().unwrap();
            assert_eq!(named(ports, port_name)["containerPort"], port);
            assert!(
                policy["spec"]["ingress"][0]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port),
                "{port_name}"
            );
        }

        // GeoIP: the config reads the file the updater sidecar writes into the shared volume.
        let database = Path::new(config["geo"]["database"].as_str().unwrap());
        let geo_dir = database.parent().unwrap();
        let mount = meridian["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == geo_dir)
            .unwrap_or_else(|| panic!("nothing mounted at {}", geo_dir.display()));
        let volume = named(&pod["volumes"], mount["name"].as_str().unwrap());
        assert!(volume.get("emptyDir").is_some(), "{volume}");
        let updater = named(&pod["initContainers"], "geoipupdate");
        assert_eq!(
            updater["restartPolicy"], "Always",
            "a sidecar, not a one-off"
        );
        assert!(
            updater["image"]
                .as_str()
                .unwrap()
                .starts_with("ghcr.io/maxmind/geoipupdate:v")
        );
        let env = &updater["env"];
        assert_eq!(
            Path::new(named(env, "GEOIPUPDATE_DB_DIR")["value"].as_str().unwrap()),
            geo_dir
        );
        let edition = database.file_stem().unwrap().to_str().unwrap();
        assert_eq!(named(env, "GEOIPUPDATE_EDITION_IDS")["value"], edition);
        assert!(
            named(env, "GEOIPUPDATE_FREQUENCY")["value"]
                .as_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
                > 0
        );
        assert_eq!(
            updater["envFrom"][0]["secretRef"]["name"], "meridian-geoipupdate",
            "account id and license key from a Secret"
        );
        // The pod runs as non-root: the updater's config file goes to a volume it can write.
        let conf = Path::new(
            named(env, "GEOIPUPDATE_CONF_FILE")["value"]
                .as_str()
                .unwrap(),
        );
        let state = updater["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == conf.parent().unwrap())
            .unwrap_or_else(|| panic!("nothing writable at {}", conf.display()));
        assert!(
            named(&pod["volumes"], state["name"].as_str().unwrap())
                .get("emptyDir")
                .is_some()
        );
        let updater_mount = named(&updater["volumeMounts"], mount["name"].as_str().unwrap());
        assert_eq!(
            Path::new(updater_mount["mountPath"].as_str().unwrap()),
            geo_dir
        );
        assert_eq!(
            updater["startupProbe"]["exec"]["command"],
            serde_json::json!(["test", "-s", database.to_str().unwrap()]),
            "Meridian starts once the first download is in place"
        );

        meridian_check(region, text, &config["geo"], dir.path());
    }
}

/// Copy a directory tree (the manifests: a few small files).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn the_proxy_protocol_component_sends_the_load_balancer_to_the_proxy_listener() {
    // kustomize loads only below the kustomization's root: render a copy of the tree with an
    // overlay that adds the component, as the README says to.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("kubernetes");
    copy_tree(&repo("docker/kubernetes"), &tree);
    let variant = tree.join("overlays/us-east-1-proxy-protocol");
    std::fs::create_dir_all(&variant).unwrap();
    std::fs::write(
        variant.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../us-east-1]\ncomponents: [../../components/proxy-protocol]\n",
    )
    .unwrap();
    let objects = render(&variant);
    let service = object(&objects, "Service");
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"],
        "*"
    );
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"],
        "ip"
    );
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    let deployment = object(&objects, "Deployment");
    let meridian = named(
        &deployment["spec"]["template"]["spec"]["containers"],
        "meridian",
    );
    let port = named(&meridian["ports"], target)["containerPort"]
        .as_u64()
        .unwrap();
    let configmap = object(&objects, "ConfigMap");
    let config = parse_values(configmap["data"]["meridian.yaml"].as_str().unwrap())
        .unwrap()
        .remove(0);
    let listener = config["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["bind"].as_str().unwrap().ends_with(&format!(":{port}")))
        .unwrap();
    assert_eq!(listener["proxy_protocol"], true, "{listener}");
    // The load balancer's addresses must be trusted to send the header.
    assert!(
        !config["geo"]["trusted_proxies"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Nothing else changes: the base overlay renders the same objects but for the Service.
    let plain = render(&repo("docker/kubernetes/overlays/us-east-1"));
    assert_eq!(plain.len(), objects.len());
    for (a, b) in plain.iter().zip(&objects) {
        if a["kind"] != "Service" {
            assert_eq!(a, b);
        }
    }
}
