//! GeoDNS end to end: a real Meridian with its DNS listener on loopback, asked by `dig` (from
//! bind9-dnsutils) and by a UDP/TCP client built on hickory-proto, with real backends whose
//! health decides which regions are answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::Backends;
use common::process::require_program;
use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian::config;
use meridian::control::ControlError;
use meridian::demo::RegionBackend;
use meridian::reload::Trigger;
use meridian::server::RunningServer;
use meridian::table;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Three regions with ingress addresses, one cluster of the three region backends (health
/// checked fast), the demo GeoIP data, and GeoDNS for example.com. `{MAX}` and `{EXTRA}` are
/// filled per test.
const CONFIG: &str = "local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: \"127.0.0.1:0\" }
access_log: { enabled: false }
geo:
  database: {DB}
  overrides:
    - { cidr: 127.0.0.2/32, region: eu-west-1 }
    - { cidr: 203.0.113.192/26, region: us-east-1 }
regions:
  us-east-1:      { lat: 38.9, lon: -77.4, ingress: [192.0.2.10, \"2001:db8::10\"] }
  eu-west-1:      { lat: 53.3, lon: -6.3, ingress: [198.51.100.10, \"2001:db8::20\"] }
  ap-southeast-1: { lat: 1.35, lon: 103.8, ingress: [203.0.113.10, \"2001:db8::30\"] }
clusters:
  web:
    endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] }
    health_check: { path: /healthz, interval: 50ms, timeout: 200ms, healthy_threshold: 1, unhealthy_threshold: 1 }
    outlier_detection: { enabled: false }
routes:
  - { name: web, hosts: [\"*\"], cluster: web }
geodns:
  listen: \"127.0.0.1:0\"
  max_answers: {MAX}
  ttl: 30s
  failover_ttl: 5s
{EXTRA}  zones:
    - name: example.com
      ns: [ns1.example.com, ns2.example.com]
      soa: { rname: hostmaster.example.com, serial: 2026120501 }
      names:
        - { name: www, route: web }
";

fn config_text(backends: &Backends, max: u32, extra: &str) -> String {
    backends
        .fill(CONFIG)
        .replace("{MAX}", &max.to_string())
        .replace("{EXTRA}", extra)
}

async fn start(text: &str, path: Option<&Path>) -> RunningServer {
    let mut loaded = config::load_str(text, Path::new("dns.yaml")).unwrap();
    common::quiet(&mut loaded);
    let table = match table::compile(&loaded, table::CompileContext::default()) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    meridian::server::start_with(table, path.map(Path::to_path_buf))
        .await
        .unwrap()
}

/// What dig printed, taken apart.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    /// (ttl, type, data) of the answer section.
    answers: Vec<(u32, String, String)>,
    authority: Vec<(u32, String, String)>,
    /// `198.51.100.0/24/24` from the OPT pseudo-section.
    subnet: Option<String>,
    raw: String,
}

impl Dig {
    fn addresses(&self) -> Vec<&str> {
        self.answers
            .iter()
            .filter(|(_, t, _)| t == "A" || t == "AAAA")
            .map(|(_, _, d)| d.as_str())
            .collect()
    }
}

/// Run `dig @server -p port <args>` (one try, no retries) and parse its output.
async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let program = require_program("dig", "bind9-dnsutils");
    let out = tokio::process::Command::new(program)
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+tries=1",
            "+time=3",
            "+nocmd",
            "+nostats",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut dig = Dig {
        status: String::new(),
        flags: Vec::new(),
        answers: Vec::new(),
        authority: Vec::new(),
        subnet: None,
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_owned();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            dig.flags = flags.split_whitespace().map(str::to_owned).collect();
        }
        if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
            dig.subnet = Some(rest.trim().to_owned());
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
            continue;
        }
        if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && !line.starts_with(';') {
            let record = (
                fields[1].parse().unwrap_or(0),
                fields[3].to_owned(),
                fields[4..].join(" "),
            );
            match section {
                "answer" => dig.answers.push(record),
                "authority" => dig.authority.push(record),
                _ => {}
            }
        }
    }
    dig
}

/// A query for `name` (with a client subnet when given), as bytes.
fn query_bytes(id: u16, name: &str, qtype: RecordType, subnet: Option<(IpAddr, u8)>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((addr, prefix)) = subnet {
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        m.set_edns(edns);
    }
    m.to_vec().unwrap()
}

/// Ask over UDP and wait (bounded) for the response with this id.
async fn ask_udp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let mut buffer = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await;
        let Ok(Ok((len, _))) = received else {
            return None;
        };
        let message = Message::from_vec(&buffer[..len]).unwrap();
        if message.metadata.id == id {
            return Some(message);
        }
    }
}

fn a_records(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

async fn metrics(admin: SocketAddr) -> String {
    common::get(admin, "admin", "/metrics", &[]).await.body
}

/// Ask `dig` until `done` holds for its answer, at most `limit`.
async fn dig_until(
    server: SocketAddr,
    args: &[&str],
    limit: Duration,
    what: &str,
    done: impl Fn(&Dig) -> bool,
) -> Dig {
    let started = Instant::now();
    loop {
        let d = dig(server, args).await;
        if done(&d) {
            return d;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}: {}",
            d.raw
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn clients_get_their_regions_ingress_by_subnet_or_resolver_address() {
    let backends = Backends::start().await;
    let proxy = start(&config_text(&backends, 1, ""), None).await;
    let dns = proxy.dns.unwrap();
    // (dig arguments, addresses, echoed client subnet)
    let cases: &[(&[&str], &[&str], Option<&str>)] = &[
        // Germany (demo data): eu-west-1; the scope is the GeoIP network's /24.
        (
            &["www.example.com", "A", "+subnet=198.51.100.0/24"],
            &["198.51.100.10"],
            Some("198.51.100.0/24/24"),
        ),
        // Japan: ap-southeast-1 (nearest).
        (
            &["www.example.com", "A", "+subnet=2001:db8:1::/48"],
            &["203.0.113.10"],
            Some("2001:db8:1::/48/48"),
        ),
        (
            &["www.example.com", "AAAA", "+subnet=2001:db8:1::/48"],
            &["2001:db8::30"],
            Some("2001:db8:1::/48/48"),
        ),
        // Singapore and the US. Singapore's /24 holds an override to us-east-1 (a /26): the
        // answer for the first address holds for a /25, longer than the subnet sent.
        (
            &["www.example.com", "A", "+subnet=203.0.113.0/24"],
            &["203.0.113.10"],
            Some("203.0.113.0/24/25"),
        ),
        (
            &["www.example.com", "A", "+subnet=203.0.113.192/26"],
            &["192.0.2.10"],
            Some("203.0.113.192/26/26"),
        ),
        (
            &["www.example.com", "A", "+subnet=192.0.2.0/24"],
            &["192.0.2.10"],
            Some("192.0.2.0/24/24"),
        ),
        // Brazil: us-east-1 is nearest.
        (
            &["www.example.com", "A", "+subnet=2001:db8:2::/48"],
            &["192.0.2.10"],
            Some("2001:db8:2::/48/48"),
        ),
        // A subnet nobody knows: local_region.
        (
            &["www.example.com", "A", "+subnet=100.64.1.0/24"],
            &["192.0.2.10"],
            Some("100.64.1.0/24/24"),
        ),
        // No subnet: the resolver's address (127.0.0.1: unknown, local_region).
        (&["www.example.com", "A"], &["192.0.2.10"], None),
        // The resolver's address under an override naming eu-west-1.
        (
            &["www.example.com", "A", "-b", "127.0.0.2"],
            &["198.51.100.10"],
            None,
        ),
    ];
    for (args, want, subnet) in cases {
        let d = dig(dns, args).await;
        assert_eq!(d.status, "NOERROR", "{args:?}: {}", d.raw);
        assert!(d.flags.contains(&"aa".to_owned()), "{args:?}: {}", d.raw);
        assert_eq!(d.addresses(), *want, "{args:?}: {}", d.raw);
        assert!(
            d.answers.iter().all(|(ttl, _, _)| *ttl == 30),
            "{args:?}: {}",
            d.raw
        );
        assert_eq!(d.subnet.as_deref(), *subnet, "{args:?}: {}", d.raw);
    }
    // The same subnet always gets the same answer (a resolver's cache sees one truth).
    for _ in 0..5 {
        let d = dig(dns, &["www.example.com", "+subnet=198.51.100.0/24"]).await;
        assert_eq!(d.addresses(), ["198.51.100.10"]);
    }
    let text = metrics(proxy.admin.unwrap()).await;
    assert!(
        text.contains(r#"meridian_dns_queries_total{rcode="NOERROR",region="eu-west-1",type="A",zone="example.com"} 7"#),
        "{text}"
    );
}

#[tokio::test]
async fn zone_records_negative_answers_refused_zones_and_tcp() {
    let backends = Backends::start().await;
    let proxy = start(&config_text(&backends, 1, ""), None).await;
    let dns = proxy.dns.unwrap();

    let soa = dig(dns, &["example.com", "SOA"]).await;
    assert_eq!(soa.status, "NOERROR", "{}", soa.raw);
    assert!(soa.flags.contains(&"aa".to_owned()));
    assert_eq!(soa.answers.len(), 1, "{}", soa.raw);
    assert_eq!(soa.answers[0].1, "SOA");
    assert!(
        soa.answers[0]
            .2
            .starts_with("ns1.example.com. hostmaster.example.com. 2026120501 "),
        "{}",
        soa.raw
    );

    let ns = dig(dns, &["example.com", "NS"]).await;
    let mut servers: Vec<&str> = ns.answers.iter().map(|(_, _, d)| d.as_str()).collect();
    servers.sort_unstable();
    assert_eq!(
        servers,
        ["ns1.example.com.", "ns2.example.com."],
        "{}",
        ns.raw
    );

    let missing = dig(dns, &["nope.example.com", "A"]).await;
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert!(missing.flags.contains(&"aa".to_owned()));
    assert!(missing.answers.is_empty());
    assert_eq!(missing.authority.len(), 1, "{}", missing.raw);
    assert_eq!(missing.authority[0].1, "SOA");

    // A known name, another type: NODATA with the SOA.
    let nodata = dig(dns, &["www.example.com", "MX"]).await;
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authority[0].1, "SOA");

    let elsewhere = dig(dns, &["www.example.org", "A"]).await;
    assert_eq!(elsewhere.status, "REFUSED", "{}", elsewhere.raw);
    assert!(!elsewhere.flags.contains(&"aa".to_owned()));

    // ANY gets one RRset (RFC 8482), not everything.
    let any = dig(dns, &["www.example.com", "ANY", "+subnet=198.51.100.0/24"]).await;
    assert_eq!(any.addresses(), ["198.51.100.10"], "{}", any.raw);

    // Over TCP: the same answer.
    let tcp = dig(
        dns,
        &["www.example.com", "A", "+tcp", "+subnet=203.0.113.0/24"],
    )
    .await;
    assert_eq!(tcp.status, "NOERROR", "{}", tcp.raw);
    assert_eq!(tcp.addresses(), ["203.0.113.10"], "{}", tcp.raw);

    let text = metrics(proxy.admin.unwrap()).await;
    for line in [
        r#"meridian_dns_queries_total{rcode="NXDOMAIN",region="",type="A",zone="example.com"} 1"#,
        r#"meridian_dns_queries_total{rcode="REFUSED",region="",type="A",zone=""} 1"#,
        r#"meridian_dns_queries_total{rcode="NOERROR",region="",type="other",zone="example.com"} 1"#,
        r#"meridian_dns_queries_total{rcode="NOERROR",region="",type="SOA",zone="example.com"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[tokio::test]
async fn two_answers_in_order_and_a_dead_region_drops_out_until_it_returns() {
    let backends = Backends::start().await;
    let proxy = start(&config_text(&backends, 2, ""), None).await;
    let dns = proxy.dns.unwrap();
    let german = ["www.example.com", "A", "+subnet=198.51.100.0/24"];
    let d = dig(dns, &german).await;
    // Nearest first: eu-west-1, then us-east-1.
    assert_eq!(d.addresses(), ["198.51.100.10", "192.0.2.10"], "{}", d.raw);
    assert!(d.answers.iter().all(|(ttl, _, _)| *ttl == 30));

    // Kill eu-west-1's only backend: its health check fails and the region drops out.
    let Backends { us, eu, ap } = backends;
    let (eu_addr, eu_control) = (eu.addr, eu.control.clone());
    eu.stop().await;
    let d = dig_until(
        dns,
        &german,
        Duration::from_secs(5),
        "eu-west-1 to drop out",
        |d| d.addresses() == ["192.0.2.10", "203.0.113.10"],
    )
    .await;
    assert!(
        d.answers.iter().all(|(ttl, _, _)| *ttl == 5),
        "failover TTL: {}",
        d.raw
    );

    // /explain says why.
    let explained = common::get(
        proxy.admin.unwrap(),
        "admin",
        "/explain?ip=127.0.0.1&name=www.example.com&subnet=198.51.100.0/24",
        &[],
    )
    .await
    .json();
    assert_eq!(explained["rcode"], "NOERROR", "{explained}");
    assert_eq!(explained["ttl"], 5, "{explained}");
    assert_eq!(explained["failover"], true, "{explained}");
    assert_eq!(
        explained["regions"][0]["region"], "eu-west-1",
        "{explained}"
    );
    assert_eq!(explained["regions"][0]["up"], false, "{explained}");
    assert_eq!(explained["regions"][1]["answered"], true, "{explained}");
    assert_eq!(explained["client"]["country"], "DE", "{explained}");

    // Back on the same address: it returns, with the long TTL.
    let eu = RegionBackend::start_with("eu-west-1", eu_addr, eu_control)
        .await
        .unwrap();
    let d = dig_until(
        dns,
        &german,
        Duration::from_secs(5),
        "eu-west-1 to return",
        |d| d.addresses() == ["198.51.100.10", "192.0.2.10"],
    )
    .await;
    assert!(d.answers.iter().all(|(ttl, _, _)| *ttl == 30), "{}", d.raw);
    for b in [us, eu, ap] {
        b.stop().await;
    }
}

#[tokio::test]
async fn udp_answers_are_cut_to_the_clients_size_with_tc_and_whole_over_tcp() {
    let backends = Backends::start().await;
    // 16 addresses in each region: three regions' worth is about 800 bytes.
    let many = |base: &str| {
        (1..=16)
            .map(|i| format!("{base}.{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = config_text(&backends, 3, "")
        .replace(
            "ingress: [192.0.2.10, \"2001:db8::10\"]",
            &format!("ingress: [{}]", many("192.0.2")),
        )
        .replace(
            "ingress: [198.51.100.10, \"2001:db8::20\"]",
            &format!("ingress: [{}]", many("198.51.100")),
        )
        .replace(
            "ingress: [203.0.113.10, \"2001:db8::30\"]",
            &format!("ingress: [{}]", many("203.0.113")),
        );
    let proxy = start(&text, None).await;
    let dns = proxy.dns.unwrap();
    for args in [
        &["www.example.com", "+bufsize=512", "+ignore", "+notcp"][..],
        &["www.example.com", "+noedns", "+ignore", "+notcp"][..],
    ] {
        let d = dig(dns, args).await;
        assert!(d.flags.contains(&"tc".to_owned()), "{args:?}: {}", d.raw);
        assert!(d.answers.is_empty(), "{args:?}: {}", d.raw);
    }
    // The raw size: never above 512 bytes without EDNS.
    let reply = ask_udp(
        dns,
        &query_bytes(7, "www.example.com.", RecordType::A, None),
    )
    .await
    .unwrap();
    assert!(reply.metadata.truncation);
    // With room (EDNS 1232) all 48 fit; dig without +ignore retries over TCP and gets them.
    let d = dig(dns, &["www.example.com", "+bufsize=1232"]).await;
    assert!(!d.flags.contains(&"tc".to_owned()), "{}", d.raw);
    assert_eq!(d.addresses().len(), 48, "{}", d.raw);
    let d = dig(dns, &["www.example.com", "+noedns"]).await;
    assert_eq!(d.addresses().len(), 48, "{}", d.raw);
}

#[tokio::test]
async fn a_reload_is_seen_by_the_next_query_and_fails_none() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let text = config_text(&backends, 1, "");
    std::fs::write(&path, &text).unwrap();
    let proxy = start(&text, Some(&path)).await;
    let dns = proxy.dns.unwrap();
    let server = proxy.server.clone();

    // Queries in a loop while the config changes eu-west-1's address and reloads.
    let asker = tokio::spawn(async move {
        let subnet = Some(("198.51.100.0".parse().unwrap(), 24));
        let (mut answered, mut failed, mut seen_new) = (0, 0, 0);
        for id in 0..4000u16 {
            let packet = query_bytes(id, "www.example.com.", RecordType::A, subnet);
            match ask_udp(dns, &packet).await {
                Some(m) if m.metadata.response_code == ResponseCode::NoError => {
                    answered += 1;
                    if a_records(&m) == ["198.51.100.99"] {
                        seen_new += 1;
                        if seen_new == 50 {
                            break;
                        }
                    }
                }
                _ => failed += 1,
            }
        }
        (answered, failed, seen_new)
    });
    std::fs::write(&path, text.replace("198.51.100.10", "198.51.100.99")).unwrap();
    server.reload(Trigger::Admin).await.unwrap();
    let (answered, failed, seen_new) = asker.await.unwrap();
    assert_eq!(failed, 0, "{answered} answered");
    assert_eq!(seen_new, 50);
    let d = dig(dns, &["www.example.com", "+subnet=198.51.100.0/24"]).await;
    assert_eq!(d.addresses(), ["198.51.100.99"], "{}", d.raw);

    // A bad reload (max_answers past the regions) keeps the table and the listener.
    std::fs::write(&path, text.replace("max_answers: 1", "max_answers: 9")).unwrap();
    let error = server.reload(Trigger::Admin).await.unwrap_err().to_string();
    assert!(error.contains("max_answers is 9"), "{error}");
    let d = dig(dns, &["www.example.com", "+subnet=198.51.100.0/24"]).await;
    assert_eq!(d.addresses(), ["198.51.100.99"], "{}", d.raw);

    // A smaller TCP connection limit applies to the listener kept in service.
    let one = text.replace(
        "  failover_ttl: 5s\n",
        "  failover_ttl: 5s\n  tcp_max_connections: 1\n",
    );
    std::fs::write(&path, &one).unwrap();
    server.reload(Trigger::Admin).await.unwrap();
    assert_eq!(server.dns_addr().await, Some(dns));
    let held = TcpStream::connect(dns).await.unwrap();
    let mut waiting = TcpStream::connect(dns).await.unwrap();
    let query = query_bytes(88, "www.example.com.", RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    waiting.write_all(&framed).await.unwrap();
    let mut length = [0u8; 2];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.read_exact(&mut length))
            .await
            .is_err(),
        "a second connection was served past tcp_max_connections: 1"
    );
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), waiting.read_exact(&mut length))
        .await
        .unwrap()
        .unwrap();

    // A new listen address: the listener moves there. The port must be free for UDP and TCP
    // alike, and another test's connection can take it between the probe and the reload, so a
    // reload refused for that reason (the old listener keeps serving) tries another port.
    let mut moved = String::new();
    let mut port = 0;
    for attempt in 0..10 {
        port = port_free_for_udp_and_tcp();
        moved = text.replace(
            "listen: \"127.0.0.1:0\"",
            &format!("listen: \"127.0.0.1:{port}\""),
        );
        std::fs::write(&path, &moved).unwrap();
        match server.reload(Trigger::Admin).await {
            Ok(_) => break,
            Err(ControlError::Bind { source, .. })
                if attempt < 9 && source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                assert_eq!(server.dns_addr().await, Some(dns), "{source}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    let now = server.dns_addr().await.unwrap();
    assert_eq!(now.port(), port);
    let d = dig(now, &["www.example.com", "+subnet=198.51.100.0/24"]).await;
    assert_eq!(d.addresses(), ["198.51.100.10"], "{}", d.raw);
    assert!(
        ask_udp(
            dns,
            &query_bytes(1, "www.example.com.", RecordType::A, None)
        )
        .await
        .is_none()
    );

    // No geodns any more: the listener stops.
    let without = moved.split("geodns:").next().unwrap().to_owned();
    std::fs::write(&path, &without).unwrap();
    server.reload(Trigger::Admin).await.unwrap();
    assert!(server.dns_addr().await.is_none());
}

/// A loopback port nothing holds for UDP or TCP at the time of asking.
fn port_free_for_udp_and_tcp() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP in 100 tries")
}

/// Config mistakes in the geodns section and ingress lists: each names its field and line.
#[test]
fn bad_geodns_config_is_refused_with_field_and_line() {
    let backends_like = CONFIG
        .replace("{US}", "127.0.0.1:1")
        .replace("{EU}", "127.0.0.1:2")
        .replace("{AP}", "127.0.0.1:3")
        .replace("{DB}", &common::demo_db().display().to_string())
        .replace("{MAX}", "1")
        .replace("{EXTRA}", "");
    let huge_name = format!("{}.example.com", "a".repeat(300));
    // (from, to, path, message part); the problem's line is the line of `from`
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "max_answers: 1",
            "max_answers: 1\n  rate_limit: { per_second: 0 }".into(),
            "geodns.rate_limit.per_second",
            "takes 1 to",
        ),
        (
            "max_answers: 1",
            "max_answers: 1\n  rate_limit: { per_second: 5, slip: 11 }".into(),
            "geodns.rate_limit.slip",
            "takes 0",
        ),
        (
            "max_answers: 1",
            "max_answers: 1\n  rate_limit: { per_second: 5, burst: 4294967295 }".into(),
            "geodns.rate_limit.burst",
            "takes 1 to",
        ),
        (
            "max_answers: 1",
            "max_answers: 1\n  tcp_max_connections: 99999999".into(),
            "geodns.tcp_max_connections",
            "takes 1 to 65536",
        ),
        (
            "max_answers: 1",
            "max_answers: 1\n  tcp_idle_timeout: 0s".into(),
            "geodns.tcp_idle_timeout",
            "too short",
        ),
        (
            "ingress: [192.0.2.10,",
            format!("ingress: [{}", "192.0.2.1, ".repeat(17)),
            "regions.us-east-1.ingress",
            "at most 16",
        ),
        (
            "ingress: [192.0.2.10,",
            "ingress: [192.0.2.300,".into(),
            "regions.us-east-1.ingress[0]",
            "not an IP address",
        ),
        (
            "listen: \"127.0.0.1:0\"",
            "listen: \"127.0.0.1\"".into(),
            "geodns.listen",
            "not an ip:port",
        ),
        (
            "max_answers: 1",
            "max_answers: 0".into(),
            "geodns.max_answers",
            "takes 1 to the number of regions (3)",
        ),
        (
            "max_answers: 1",
            "max_answers: 4".into(),
            "geodns.max_answers",
            "takes 1 to the number of regions (3)",
        ),
        (
            "max_answers: 1",
            "max_answers: 4294967295".into(),
            "geodns.max_answers",
            "takes 1",
        ),
        ("ttl: 30s", "ttl: 0s".into(), "geodns.ttl", "too short"),
        ("ttl: 30s", "ttl: 400d".into(), "geodns.ttl", "too long"),
        (
            "failover_ttl: 5s",
            "failover_ttl: soon".into(),
            "geodns.failover_ttl",
            "not a duration",
        ),
        (
            "- name: example.com",
            "- name: example..com".into(),
            "geodns.zones[0].name",
            "empty label",
        ),
        (
            "- name: example.com",
            format!("- name: {huge_name}"),
            "geodns.zones[0].name",
            "longer than 253 bytes",
        ),
        (
            "- name: example.com",
            format!("- name: {}.com", "b".repeat(64)),
            "geodns.zones[0].name",
            "longer than 63",
        ),
        (
            "ns: [ns1.example.com, ns2.example.com]",
            "ns: []".into(),
            "geodns.zones[0].ns",
            "at least one",
        ),
        (
            "rname: hostmaster.example.com",
            "rname: hostmaster@example.com".into(),
            "geodns.zones[0].soa.rname",
            "as a name",
        ),
        (
            "{ name: www, route: web }",
            "{ name: www.example.org., route: web }".into(),
            "geodns.zones[0].names[0].name",
            "outside the zone",
        ),
        (
            "{ name: www, route: web }",
            "{ name: www, route: nope }".into(),
            "geodns.zones[0].names[0].route",
            "unknown route `nope`",
        ),
        (
            "{ name: www, route: web }",
            "{ name: www, cluster: nope }".into(),
            "geodns.zones[0].names[0].cluster",
            "unknown cluster `nope`",
        ),
        (
            "{ name: www, route: web }",
            "{ name: www, route: web, cluster: web }".into(),
            "geodns.zones[0].names[0]",
            "exactly one",
        ),
        (
            "{ name: www, route: web }",
            "{ name: www, route: web }\n        - { name: WWW, cluster: web }".into(),
            "geodns.zones[0].names[1].name",
            "twice",
        ),
    ];
    for (from, to, path, message) in cases {
        let Some(at) = backends_like.find(from) else {
            panic!("{from}")
        };
        let mut line = backends_like[..at].lines().count();
        // A name added after the first one sits on the next line.
        if to.contains('\n') {
            line += 1;
        }
        let text = backends_like.replacen(from, &to, 1);
        let loaded = config::load_str(&text, Path::new("bad.yaml")).unwrap();
        let problems = match table::compile(&loaded, table::CompileContext::default()) {
            Ok(_) => panic!("{to}: accepted"),
            Err(e) => e.problems(),
        };
        assert!(
            problems
                .iter()
                .any(
                    |p| p.path.as_ref().map(|p| p.to_string()).as_deref() == Some(path)
                        && p.line == Some(line)
                        && p.message.contains(message)
                ),
            "{to}: want {path} line {line} `{message}`, got {problems:#?}"
        );
    }
}

#[tokio::test]
async fn malformed_packets_and_floods_leave_it_answering() {
    let backends = Backends::start().await;
    let proxy = start(&config_text(&backends, 1, ""), None).await;
    let dns = proxy.dns.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = fastrand::Rng::with_seed(26);
    let good = query_bytes(1, "www.example.com.", RecordType::A, None);
    let mut packets: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0; 5],
        // A header that promises a question that is not there: FORMERR.
        vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
        // 65535 questions promised.
        vec![0, 2, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0],
        // A name that is a compression pointer to itself.
        vec![
            0, 3, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ],
        // Two pointers to each other.
        vec![
            0, 4, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0xc0, 12, 0, 1, 0, 1,
        ],
        // A response: never answered.
        vec![0, 5, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    // An ECS option with a source prefix of 200 bits, and one of 33 for IPv4.
    for (family, prefix) in [(1u16, 200u8), (1, 33), (2, 129), (9, 24)] {
        let mut p = good.clone();
        p[11] = 1; // ARCOUNT
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        let option: Vec<u8> =
            [&family.to_be_bytes()[..], &[prefix, 0], &[198, 51, 100, 0]].concat();
        p.extend_from_slice(&((option.len() + 4) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 8]);
        p.extend_from_slice(&(option.len() as u16).to_be_bytes());
        p.extend_from_slice(&option);
        packets.push(p);
    }
    // Many questions in one message.
    let mut many = Message::query();
    for i in 0..200 {
        many.add_query(Query::query(
            Name::from_ascii(format!("n{i}.example.com.")).unwrap(),
            RecordType::A,
        ));
    }
    packets.push(many.to_vec().unwrap());
    packets.push(query_bytes(9, "www.example.com.", RecordType::ANY, None));
    // Then random bytes and good queries cut short or with bytes flipped, 10,000 in all.
    while packets.len() < 10_000 {
        let mut p = match rng.u8(0..3) {
            0 => (0..rng.usize(0..600)).map(|_| rng.u8(..)).collect(),
            1 => good[..rng.usize(0..good.len())].to_vec(),
            _ => {
                let mut p = good.clone();
                for _ in 0..rng.usize(1..4) {
                    let i = rng.usize(0..p.len());
                    p[i] = rng.u8(..);
                }
                p
            }
        };
        // Queries only: responses are dropped, and this flood is about parsing.
        if p.len() > 2 {
            p[2] &= 0x7f;
        }
        packets.push(p);
    }
    for p in &packets {
        socket.send_to(p, dns).await.unwrap();
    }
    // Still answering, over UDP and TCP.
    let reply = ask_udp(
        dns,
        &query_bytes(4242, "www.example.com.", RecordType::A, None),
    )
    .await
    .expect("answers after the flood");
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    let d = dig(dns, &["www.example.com", "+tcp"]).await;
    assert_eq!(d.addresses(), ["192.0.2.10"], "{}", d.raw);
    // The header-only query got FORMERR with its id; the response got nothing.
    let formerr = ask_udp(dns, &[0xab, 0xce, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(formerr.metadata.message_type, MessageType::Response);
    assert!(
        ask_udp(dns, &[0, 6, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0])
            .await
            .is_none()
    );
    let text = metrics(proxy.admin.unwrap()).await;
    let formerrs: u64 = text
        .lines()
        .filter(|l| l.starts_with("meridian_dns_queries_total") && l.contains(r#"rcode="FORMERR""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(formerrs > 1000, "{text}");
}

#[tokio::test]
async fn stalled_tcp_clients_are_cut_off_and_connections_are_bounded() {
    let backends = Backends::start().await;
    let text = config_text(
        &backends,
        1,
        "  tcp_max_connections: 2\n  tcp_idle_timeout: 1s\n",
    );
    let proxy = start(&text, None).await;
    let dns = proxy.dns.unwrap();
    // Two clients hold both slots: one sent half a length prefix, one nothing.
    let mut first = TcpStream::connect(dns).await.unwrap();
    first.write_all(&[0]).await.unwrap();
    let second = TcpStream::connect(dns).await.unwrap();
    // A third waits in the backlog: no answer while both are held.
    let mut third = TcpStream::connect(dns).await.unwrap();
    let query = query_bytes(77, "www.example.com.", RecordType::A, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    third.write_all(&framed).await.unwrap();
    let mut length = [0u8; 2];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut length))
            .await
            .is_err(),
        "answered past tcp_max_connections"
    );
    // The stalled client is closed by the idle deadline (1s), which frees a slot.
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut length))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(length))];
    third.read_exact(&mut body).await.unwrap();
    let reply = Message::from_vec(&body).unwrap();
    assert_eq!(reply.metadata.id, 77);
    assert_eq!(a_records(&reply), ["192.0.2.10"]);
    drop(second);
}

/// The commented GeoDNS block of config/meridian.yaml, uncommented, is a valid config.
#[test]
fn the_shipped_geodns_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meridian.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (before, block) = text.split_once("# geodns:").unwrap();
    let uncommented: String = std::iter::once("geodns:")
        .chain(
            block
                .lines()
                .skip(1)
                .map(|l| l.strip_prefix("# ").unwrap_or(l)),
        )
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{before}{uncommented}\n").replace(
        "database: config/geoip/demo-city.mmdb",
        &format!("database: {}", common::demo_db().display()),
    );
    let loaded = config::load_str(&text, &path).unwrap();
    let table = match table::compile(&loaded, table::CompileContext::default()) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let geodns = table.geodns.as_deref().unwrap();
    assert_eq!(geodns.zones[0].names.len(), 1);
    assert_eq!(geodns.ttl, 30);
}

#[tokio::test]
async fn a_source_past_its_rate_limit_gets_few_answers_and_others_are_unaffected() {
    let backends = Backends::start().await;
    let text = config_text(
        &backends,
        1,
        "  rate_limit: { per_second: 5, burst: 5, slip: 2 }\n",
    );
    let proxy = start(&text, None).await;
    let dns = proxy.dns.unwrap();
    let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..40u16 {
        let packet = query_bytes(id, "www.example.com.", RecordType::A, None);
        flooder.send_to(&packet, dns).await.unwrap();
    }
    let (mut answered, mut truncated, mut replies) = (0, 0, 0);
    let mut buffer = vec![0u8; 4096];
    // Every reply that will come comes within moments; stop after a quiet 500ms.
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_millis(500), flooder.recv_from(&mut buffer)).await
    {
        let m = Message::from_vec(&buffer[..len]).unwrap();
        replies += 1;
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            truncated += 1;
        } else if !m.answers.is_empty() {
            answered += 1;
        }
        assert!(replies <= 40);
    }
    // The burst of 5, perhaps a token more while the 40 went out; half the rest slip.
    assert!((5..=7).contains(&answered), "{answered} answered");
    assert!((15..=18).contains(&truncated), "{truncated} truncated");
    assert!(replies < 40);

    // Another /24 is not limited, nor is TCP.
    let other = UdpSocket::bind("127.0.1.1:0").await.unwrap();
    other
        .send_to(
            &query_bytes(500, "www.example.com.", RecordType::A, None),
            dns,
        )
        .await
        .unwrap();
    let (len, _) = tokio::time::timeout(Duration::from_secs(2), other.recv_from(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a_records(&Message::from_vec(&buffer[..len]).unwrap()),
        ["192.0.2.10"]
    );
    let d = dig(dns, &["www.example.com", "+tcp"]).await;
    assert_eq!(d.addresses(), ["192.0.2.10"], "{}", d.raw);

    let text = metrics(proxy.admin.unwrap()).await;
    assert!(text.contains(r#"rcode="RATE_LIMITED""#), "{text}");
}
