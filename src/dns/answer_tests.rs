//! Table-driven tests of the answer function over a compiled table with the demo GeoIP data.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;

const CONFIG: &str = r#"
local_region: us-east-1
listeners: [{ name: http, bind: "127.0.0.1:0" }]
admin: { bind: null }
access_log: { enabled: false }
geo:
  database: config/geoip/demo-city.mmdb
  overrides:
    - { cidr: 10.9.0.0/16, region: ap-southeast-1 }
    - { cidr: 10.9.8.0/26, region: us-east-1 }
regions:
  us-east-1:      { lat: 38.9, lon: -77.4, ingress: [192.0.2.10, "2001:db8::10"] }
  eu-west-1:      { lat: 53.3, lon: -6.3, ingress: [198.51.100.10, 198.51.100.11, "2001:db8::20"] }
  ap-southeast-1: { lat: 1.35, lon: 103.8, ingress: [203.0.113.10] }
clusters:
  web:
    endpoints:
      us-east-1: ["127.0.0.1:1"]
      eu-west-1: ["127.0.0.1:2"]
      ap-southeast-1: ["127.0.0.1:3"]
routes:
  - { name: web, hosts: ["*"], cluster: web }
  - name: only-eu
    hosts: [eu.example.com]
    cluster: web
    steering: { only: [eu-west-1] }
geodns:
  listen: "127.0.0.1:0"
  MAX_ANSWERS
  zones:
    - name: example.com
      ns: [ns1.example.com, ns2.example.com]
      soa: { rname: hostmaster.example.com, serial: 7, minimum: 60s }
      names:
        - { name: www, route: web }
        - { name: "@", cluster: web }
        - { name: eu, route: only-eu }
        - { name: a.deep, route: web }
"#;

fn table(max_answers: u32) -> RoutingTable {
    let text = CONFIG.replace("MAX_ANSWERS", &format!("max_answers: {max_answers}"));
    let loaded = crate::config::load_str(&text, Path::new("t.yaml")).unwrap();
    crate::table::compile(&loaded, crate::table::CompileContext::default()).unwrap()
}

fn query(name: &str, qtype: RecordType, subnet: Option<&str>) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(subnet) = subnet {
        let net: ipnet::IpNet = subnet.parse().unwrap();
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                net.addr(),
                net.prefix_len(),
                0,
            )));
        m.set_edns(edns);
    }
    m
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn ask(table: &RoutingTable, q: &Message, resolver: &str) -> Answered {
    let resolver: IpAddr = resolver.parse().unwrap();
    answer(table, table.geodns.as_deref().unwrap(), q, resolver)
}

fn set_region_up(table: &RoutingTable, region: &str, up: bool) {
    let id = table.regions.iter().position(|r| r.name == region).unwrap();
    for cluster in &table.clusters {
        for e in cluster.regions[id].members().endpoints.iter() {
            e.state.healthy.store(up, Ordering::Relaxed);
        }
    }
}

#[test]
fn steered_names_answer_with_the_clients_region() {
    let t = table(1);
    // (name, type, client subnet, resolver, addresses, ttl)
    type Case<'a> = (
        &'a str,
        RecordType,
        Option<&'a str>,
        &'a str,
        &'a [&'a str],
        u32,
    );
    let cases: &[Case] = &[
        (
            "www.example.com.",
            RecordType::A,
            Some("198.51.100.0/24"),
            "127.0.0.1",
            &["198.51.100.10", "198.51.100.11"],
            30,
        ),
        (
            "www.example.com.",
            RecordType::A,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
        (
            "www.example.com.",
            RecordType::A,
            Some("192.0.2.0/24"),
            "127.0.0.1",
            &["192.0.2.10"],
            30,
        ),
        // Japan: nearest is ap-southeast-1.
        (
            "www.example.com.",
            RecordType::A,
            Some("2001:db8:1::/48"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
        // France over IPv6: eu-west-1's IPv6 ingress.
        (
            "www.example.com.",
            RecordType::AAAA,
            Some("2001:db8:3::/48"),
            "127.0.0.1",
            &["2001:db8::20"],
            30,
        ),
        // ap-southeast-1 has no IPv6 ingress: the next region by distance that has one.
        (
            "www.example.com.",
            RecordType::AAAA,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["2001:db8::20"],
            30,
        ),
        // No subnet: the resolver's address (German).
        (
            "www.example.com.",
            RecordType::A,
            None,
            "198.51.100.53",
            &["198.51.100.10", "198.51.100.11"],
            30,
        ),
        // Unknown location: local_region.
        (
            "www.example.com.",
            RecordType::A,
            None,
            "127.0.0.1",
            &["192.0.2.10"],
            30,
        ),
        // An override naming a region wins.
        (
            "www.example.com.",
            RecordType::A,
            Some("10.9.1.0/24"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
        // `only` keeps the answer in eu-west-1 for a Singapore client.
        (
            "eu.example.com.",
            RecordType::A,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["198.51.100.10", "198.51.100.11"],
            30,
        ),
        // The apex is steered too, case does not matter, ANY gets the IPv4 RRset.
        (
            "EXAMPLE.com.",
            RecordType::A,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
        (
            "www.example.com.",
            RecordType::ANY,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
        (
            "a.deep.example.com.",
            RecordType::A,
            Some("203.0.113.0/24"),
            "127.0.0.1",
            &["203.0.113.10"],
            30,
        ),
    ];
    for (name, qtype, subnet, resolver, want, ttl) in cases {
        let a = ask(&t, &query(name, *qtype, *subnet), resolver);
        let m = &a.message;
        let case = format!("{name} {qtype} {subnet:?} via {resolver}");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{case}");
        assert!(m.metadata.authoritative, "{case}");
        assert_eq!(addresses(m), *want, "{case}");
        assert!(m.answers.iter().all(|r| r.ttl == *ttl), "{case}");
        assert_eq!(a.zone, Some(0), "{case}");
    }
}

#[test]
fn zone_records_and_negative_answers() {
    let t = table(1);
    // (name, type, rcode, answers, SOA in authority, authoritative)
    let cases: &[(&str, RecordType, ResponseCode, usize, bool, bool)] = &[
        (
            "example.com.",
            RecordType::SOA,
            ResponseCode::NoError,
            1,
            false,
            true,
        ),
        (
            "example.com.",
            RecordType::NS,
            ResponseCode::NoError,
            2,
            false,
            true,
        ),
        (
            "example.com.",
            RecordType::MX,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "www.example.com.",
            RecordType::MX,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "www.example.com.",
            RecordType::SOA,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "nope.example.com.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
            true,
            true,
        ),
        (
            "x.www.example.com.",
            RecordType::A,
            ResponseCode::NXDomain,
            0,
            true,
            true,
        ),
        // An empty non-terminal exists: NODATA.
        (
            "deep.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            0,
            true,
            true,
        ),
        (
            "example.org.",
            RecordType::A,
            ResponseCode::Refused,
            0,
            false,
            false,
        ),
        (
            "com.",
            RecordType::SOA,
            ResponseCode::Refused,
            0,
            false,
            false,
        ),
    ];
    for (name, qtype, rcode, answers, soa, aa) in cases {
        let a = ask(&t, &query(name, *qtype, None), "127.0.0.1");
        let m = &a.message;
        let case = format!("{name} {qtype}");
        assert_eq!(m.metadata.response_code, *rcode, "{case}");
        assert_eq!(m.answers.len(), *answers, "{case}");
        assert_eq!(
            m.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::SOA),
            *soa,
            "{case}"
        );
        assert_eq!(m.metadata.authoritative, *aa, "{case}");
    }
    let soa = ask(
        &t,
        &query("example.com.", RecordType::SOA, None),
        "127.0.0.1",
    );
    let RData::SOA(record) = &soa.message.answers[0].data else {
        panic!("not an SOA")
    };
    assert_eq!(record.serial, 7);
    assert_eq!(record.mname.to_ascii(), "ns1.example.com.");
    assert_eq!(soa.message.answers[0].ttl, 60);
}

#[test]
fn malformed_questions_are_refused_or_formerr() {
    let t = table(1);
    let mut two = query("www.example.com.", RecordType::A, None);
    two.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        ask(&t, &two, "127.0.0.1").message.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut none = query("www.example.com.", RecordType::A, None);
    none.queries.clear();
    assert_eq!(
        ask(&t, &none, "127.0.0.1").message.metadata.response_code,
        ResponseCode::FormErr
    );
    let mut chaos = Query::query(Name::from_ascii("www.example.com.").unwrap(), RecordType::A);
    chaos.set_query_class(DNSClass::CH);
    let mut m = Message::query();
    m.add_query(chaos);
    assert_eq!(
        ask(&t, &m, "127.0.0.1").message.metadata.response_code,
        ResponseCode::Refused
    );
    // A subnet option with a scope, or bits past its prefix: FORMERR (RFC 7871 §7.1.2).
    for subnet in [
        ClientSubnet::new("198.51.100.0".parse().unwrap(), 24, 24),
        ClientSubnet::new("198.51.100.7".parse().unwrap(), 24, 0),
    ] {
        let mut m = query("www.example.com.", RecordType::A, None);
        let mut edns = Edns::new();
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
        m.set_edns(edns);
        assert_eq!(
            ask(&t, &m, "127.0.0.1").message.metadata.response_code,
            ResponseCode::FormErr
        );
    }
}

#[test]
fn the_subnet_option_is_echoed_with_its_scope() {
    let t = table(1);
    let echoed = |m: &Message| match m.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(s)) => {
            Some((s.addr().to_string(), s.source_prefix(), s.scope_prefix()))
        }
        _ => None,
    };
    // The demo database's networks are /24 and /48; the draw reads the first /24 or /56.
    type Case<'a> = (&'a str, RecordType, &'a str, (&'a str, u8, u8));
    let cases: &[Case] = &[
        (
            "www.example.com.",
            RecordType::A,
            "198.51.100.0/24",
            ("198.51.100.0", 24, 24),
        ),
        (
            "www.example.com.",
            RecordType::A,
            "198.51.0.0/16",
            ("198.51.0.0", 16, 16),
        ),
        (
            "www.example.com.",
            RecordType::AAAA,
            "2001:db8:1::/56",
            ("2001:db8:1::", 56, 56),
        ),
        // An IPv4-mapped subnet: the /24 network counts as /120, not as an IPv6 /56.
        (
            "www.example.com.",
            RecordType::A,
            "::ffff:198.51.100.0/120",
            ("::ffff:198.51.100.0", 120, 120),
        ),
        // Overrides: an answer's scope takes in no address of an override nested in the
        // client's network or subnet that the client is not in; past the subnet sent, it tells
        // the resolver to send more.
        (
            "www.example.com.",
            RecordType::A,
            "10.9.8.128/25",
            ("10.9.8.128", 25, 25),
        ),
        (
            "www.example.com.",
            RecordType::A,
            "10.9.0.0/16",
            ("10.9.0.0", 16, 21),
        ),
        (
            "www.example.com.",
            RecordType::A,
            "10.9.8.0/26",
            ("10.9.8.0", 26, 26),
        ),
        (
            "www.example.com.",
            RecordType::A,
            "10.9.1.0/24",
            ("10.9.1.0", 24, 24),
        ),
        // Answers that hold for every client: scope 0.
        (
            "example.com.",
            RecordType::SOA,
            "198.51.100.0/24",
            ("198.51.100.0", 24, 0),
        ),
        (
            "nope.example.com.",
            RecordType::A,
            "198.51.100.0/24",
            ("198.51.100.0", 24, 0),
        ),
    ];
    for (name, qtype, subnet, want) in cases {
        let a = ask(&t, &query(name, *qtype, Some(subnet)), "127.0.0.1");
        assert_eq!(
            echoed(&a.message),
            Some((want.0.to_owned(), want.1, want.2)),
            "{name} {subnet}"
        );
    }
    // Without an option in the query, none in the answer.
    let plain = ask(
        &t,
        &query("www.example.com.", RecordType::A, None),
        "127.0.0.1",
    );
    assert!(plain.message.edns.is_none());
}

#[test]
fn down_regions_drop_out_and_shorten_the_ttl() {
    let t = table(2);
    let german = query("www.example.com.", RecordType::A, Some("198.51.100.0/24"));
    let a = ask(&t, &german, "127.0.0.1");
    // Two regions, nearest first: eu-west-1, then us-east-1.
    assert_eq!(
        addresses(&a.message),
        ["198.51.100.10", "198.51.100.11", "192.0.2.10"]
    );
    assert!(a.message.answers.iter().all(|r| r.ttl == 30));
    assert_eq!(a.region.map(|r| t.region_name(r)), Some("eu-west-1"));

    set_region_up(&t, "eu-west-1", false);
    let a = ask(&t, &german, "127.0.0.1");
    assert_eq!(addresses(&a.message), ["192.0.2.10", "203.0.113.10"]);
    assert!(a.message.answers.iter().all(|r| r.ttl == 5), "failover TTL");

    // Everything down: the first region anyway, short TTL.
    set_region_up(&t, "us-east-1", false);
    set_region_up(&t, "ap-southeast-1", false);
    let a = ask(&t, &german, "127.0.0.1");
    assert_eq!(addresses(&a.message), ["198.51.100.10", "198.51.100.11"]);
    assert!(a.steered.unwrap().pick.panic);
    assert!(a.message.answers.iter().all(|r| r.ttl == 5));

    set_region_up(&t, "eu-west-1", true);
    let a = ask(&t, &german, "127.0.0.1");
    assert_eq!(addresses(&a.message), ["198.51.100.10", "198.51.100.11"]);
    assert!(a.message.answers.iter().all(|r| r.ttl == 30));
}

#[test]
fn weighted_answers_are_fixed_per_subnet_and_split_across_subnets() {
    let text = CONFIG
        .replace("MAX_ANSWERS", "max_answers: 1")
        .replace(
            "  - { name: web, hosts: [\"*\"], cluster: web }",
            "  - { name: web, hosts: [\"*\"], cluster: web, steering: { mode: weighted, weights: { us-east-1: 1, eu-west-1: 1 } } }",
        );
    let loaded = crate::config::load_str(&text, Path::new("t.yaml")).unwrap();
    let t = crate::table::compile(&loaded, crate::table::CompileContext::default()).unwrap();
    let mut us = 0;
    for i in 0..=255u8 {
        let subnet = format!("100.64.{i}.0/24");
        let q = query("www.example.com.", RecordType::A, Some(&subnet));
        let first = addresses(&ask(&t, &q, "127.0.0.1").message);
        for _ in 0..3 {
            assert_eq!(
                addresses(&ask(&t, &q, "127.0.0.1").message),
                first,
                "{subnet}"
            );
        }
        // Hosts in the same /24 share the answer.
        if first == ["192.0.2.10"] {
            us += 1;
        } else {
            assert_eq!(first, ["198.51.100.10", "198.51.100.11"], "{subnet}");
        }
    }
    assert!(
        (80..=176).contains(&us),
        "a 50/50 split over 256 subnets gave {us} to us-east-1"
    );
}

#[test]
fn the_subnet_option_is_believed_only_as_configured() {
    let with = |setting: &str, trusted: &str| {
        let text = CONFIG
            .replace(
                "MAX_ANSWERS",
                &format!("max_answers: 1\n  client_subnet: {setting}"),
            )
            .replace("geo:\n", &format!("geo:\n  trusted_proxies: [{trusted}]\n"));
        let loaded = crate::config::load_str(&text, Path::new("t.yaml")).unwrap();
        crate::table::compile(&loaded, crate::table::CompileContext::default()).unwrap()
    };
    // A German subnet sent by a resolver in Singapore: (setting, trusted resolvers, resolver,
    // answer, option echoed)
    let cases = [
        ("any", "10.0.0.1", "203.0.113.53", "198.51.100.10", true),
        ("trusted", "10.0.0.1", "203.0.113.53", "203.0.113.10", false),
        (
            "trusted",
            "203.0.113.0/24",
            "203.0.113.53",
            "198.51.100.10",
            true,
        ),
        (
            "off",
            "203.0.113.0/24",
            "203.0.113.53",
            "203.0.113.10",
            false,
        ),
    ];
    for (setting, trusted, resolver, want, echoed) in cases {
        let t = with(setting, trusted);
        let q = query("www.example.com.", RecordType::A, Some("198.51.100.0/24"));
        let a = ask(&t, &q, resolver);
        assert_eq!(addresses(&a.message)[0], want, "{setting} {trusted}");
        let option = a
            .message
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet));
        assert_eq!(option.is_some(), echoed, "{setting} {trusted}");
    }
}
