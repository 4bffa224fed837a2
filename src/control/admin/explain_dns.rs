//! `GET /explain?ip=…&name=…[&type=AAAA][&subnet=198.51.100.0/24]`: what the GeoDNS listener
//! would answer a resolver at `ip` (sending `subnet` as its client subnet) and why: the
//! client's location, the region order, each region's health and addresses, the regions
//! named and the TTL. Runs the listener's own answer function on a built query.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};
use http::StatusCode;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::dns::answer::{answer, rcode_label};
use crate::route::geodns::region_health;
use crate::table::RoutingTable;
use crate::table::geodns::{Family, zone_for};

/// The DNS explain view for `params` (which hold `name`).
pub(super) fn explain(
    table: &RoutingTable,
    params: &BTreeMap<String, Vec<String>>,
) -> (StatusCode, Value) {
    let first = |k: &str| params.get(k).and_then(|v| v.first()).map(String::as_str);
    let usage = "give ip=<resolver address> and name=<DNS name>, e.g. /explain?ip=192.0.2.53&name=www.example.com&type=A&subnet=198.51.100.0/24";
    let Some(geodns) = table.geodns.as_deref() else {
        return (
            StatusCode::NOT_FOUND,
            json!({ "error": "GeoDNS is not configured (no geodns section)" }),
        );
    };
    let (Some(ip), Some(name)) = (
        first("ip").and_then(|ip| ip.parse::<IpAddr>().ok()),
        first("name").and_then(|n| Name::from_str_relaxed(n).ok()),
    ) else {
        return (StatusCode::BAD_REQUEST, json!({ "error": usage }));
    };
    let mut name = name;
    name.set_fqdn(true);
    let qtype = match first("type").map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => RecordType::A,
        Some("AAAA") => RecordType::AAAA,
        Some("SOA") => RecordType::SOA,
        Some("NS") => RecordType::NS,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("type `{other}`: explain takes A, AAAA, SOA or NS") }),
            );
        }
    };
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), qtype));
    if let Some(subnet) = first("subnet") {
        let Ok(net) = subnet.parse::<IpNet>() else {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("subnet `{subnet}` is not a CIDR (e.g. 198.51.100.0/24)") }),
            );
        };
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                net.trunc().addr(),
                net.prefix_len(),
                0,
            )));
        query.set_edns(edns);
    }
    let answered = answer(table, geodns, &query, ip);
    let records: Vec<Value> = answered
        .message
        .answers
        .iter()
        .map(|r| {
            let data = match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                other => other.to_string(),
            };
            json!({ "type": r.record_type().to_string(), "ttl": r.ttl, "data": data })
        })
        .collect();
    let zone = answered.zone.and_then(|z| geodns.zones.get(z));
    let lower = LowerName::from(&name);
    let target = zone_for(&geodns.zones, &lower).and_then(|(_, z)| z.names.get(&lower));
    let mut view = json!({
        "name": name.to_ascii(),
        "type": qtype.to_string(),
        "rcode": rcode_label(answered.message.metadata.response_code),
        "zone": zone.map(|z| z.label.clone()),
        "steered_by": target.map(|t| t.source.clone()),
        "answers": records,
    });
    if let (Some(steered), Some(target)) = (answered.steered, target) {
        let family = if qtype == RecordType::AAAA {
            Family::V6
        } else {
            Family::V4
        };
        let location = steered.client.location;
        view["client"] = json!({
            "resolver": ip.to_string(),
            "located_by": steered.client.addr.to_string(),
            "subnet": steered.client.subnet.map(|s| format!("{}/{}", s.addr(), s.source_prefix())),
            "scope_prefix": steered.client.subnet.map(|_| steered.client.scope),
            "location_source": location.source.as_str(),
            "country": location.country.map(|c| c.to_string()),
            "continent": location.continent.map(|c| c.to_string()),
            "region_override": location.region.map(|r| table.region_name(r).to_owned()),
        });
        view["regions"] = steered
            .pick
            .order
            .as_slice()
            .iter()
            .map(|r| {
                let h = region_health(table, target, *r);
                let ingress = geodns.ingress.get(*r as usize);
                let addresses: Vec<String> = match (ingress, family) {
                    (Some(i), Family::V4) => i.v4.iter().map(ToString::to_string).collect(),
                    (Some(i), Family::V6) => i.v6.iter().map(ToString::to_string).collect(),
                    (None, _) => Vec::new(),
                };
                json!({
                    "region": table.region_name(*r),
                    "up": h.healthy_weight > 0,
                    "healthy_weight": h.healthy_weight,
                    "total_weight": h.total_weight,
                    "endpoints": h.endpoints,
                    "answered": steered.pick.regions.contains(*r),
                    "addresses": addresses,
                })
            })
            .collect();
        view["ttl"] = json!(steered.ttl);
        view["failover"] = json!(steered.pick.failover);
        view["panic"] = json!(steered.pick.panic);
        view["max_answers"] = json!(geodns.max_answers);
    }
    (StatusCode::OK, view)
}
