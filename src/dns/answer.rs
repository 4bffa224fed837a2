//! The answer to one parsed DNS query: a pure function of the table in service, the query and
//! the resolver's address (no I/O, no clock). A/AAAA for steered names name the ingress
//! addresses of the regions `route::geodns` picks; SOA and NS at the apex; NXDOMAIN (SOA in
//! authority) for unknown names inside a zone; NODATA for other types; REFUSED outside the
//! zones. Called by the listener (`dns::wire`) and by the admin API's explain.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};

use super::client::{self, DnsClient};
use crate::route::geodns::{DnsPick, pick_regions, subnet_draw};
use crate::steer::RegionId;
use crate::table::RoutingTable;
use crate::table::geodns::{DnsTarget, Family, GeoDns, Zone, zone_for};

/// The EDNS payload size Meridian advertises and the most it sends over UDP (the DNS flag
/// day 2020 value: no IP fragmentation on common paths).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// A response and what the metrics say about it.
#[derive(Debug)]
pub struct Answered {
    pub message: Message,
    /// Index of the zone that answered (`None`: not ours, or refused before a zone was found).
    pub zone: Option<usize>,
    pub qtype: &'static str,
    /// The first region named in the answer.
    pub region: Option<RegionId>,
    /// The steering behind an A/AAAA answer (for explain).
    pub steered: Option<Steered>,
}

/// Why an A/AAAA answer names what it names.
#[derive(Debug, Clone, Copy)]
pub struct Steered {
    pub client: DnsClient,
    pub pick: DnsPick,
    pub ttl: u32,
}

/// The metric label of a query type: the types Meridian answers by name, others as `other`.
pub fn type_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

/// The metric label of a response code.
pub fn rcode_label(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

/// Answer `request` (a parsed query, not a response) from `resolver`.
pub fn answer(
    table: &RoutingTable,
    geodns: &GeoDns,
    request: &Message,
    resolver: IpAddr,
) -> Answered {
    let mut message = Message::response(request.metadata.id, request.metadata.op_code);
    message.metadata.recursion_desired = request.metadata.recursion_desired;
    message.metadata.checking_disabled = request.metadata.checking_disabled;
    let mut answered = Answered {
        message,
        zone: None,
        qtype: "other",
        region: None,
        steered: None,
    };
    // An OPT record in the query gets one in the response (RFC 6891 §6.1.1).
    if request.edns.is_some() {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        answered.message.set_edns(ours);
    }
    if request.metadata.op_code != OpCode::Query {
        answered.message.metadata.response_code = ResponseCode::NotImp;
        return answered;
    }
    // One question per message (RFC 9619): anything else is malformed.
    let [query] = request.queries.as_slice() else {
        answered.message.metadata.response_code = ResponseCode::FormErr;
        return answered;
    };
    answered.message.add_query(query.clone());
    answered.qtype = type_label(query.query_type());
    let subnet = request
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(*s),
            _ => None,
        });
    let client = match client::locate(table, geodns.client_subnet, resolver, subnet.as_ref()) {
        Ok(c) => c,
        Err(_) => {
            answered.message.metadata.response_code = ResponseCode::FormErr;
            return answered;
        }
    };
    if query.query_class() != DNSClass::IN {
        answered.message.metadata.response_code = ResponseCode::Refused;
        return answered;
    }
    let name = LowerName::from(query.name());
    let Some((zone_index, zone)) = zone_for(&geodns.zones, &name) else {
        answered.message.metadata.response_code = ResponseCode::Refused;
        return answered;
    };
    answered.zone = Some(zone_index);
    answered.message.metadata.authoritative = true;
    let qtype = query.query_type();
    let at_apex = name == zone.lower;
    let target = zone.names.get(&name);
    // Answers that do not depend on the client hold for every subnet (scope 0).
    let mut scope = 0;
    match (qtype, at_apex, target) {
        (RecordType::SOA, true, _) => {
            let soa = Record::from_rdata(
                zone.apex.clone(),
                zone.soa_ttl,
                RData::SOA(zone.soa.clone()),
            );
            answered.message.add_answer(soa);
        }
        (RecordType::NS, true, _) => {
            for ns in &zone.ns {
                answered.message.add_answer(Record::from_rdata(
                    zone.apex.clone(),
                    zone.soa_ttl,
                    RData::NS(NS(ns.clone())),
                ));
            }
        }
        // ANY gets one RRset (RFC 8482): the IPv4 addresses.
        (RecordType::A | RecordType::AAAA | RecordType::ANY, _, Some(target)) => {
            let family = if qtype == RecordType::AAAA {
                Family::V6
            } else {
                Family::V4
            };
            let steered = steer(table, geodns, target, client, family);
            for region in steered.pick.regions.as_slice() {
                add_addresses(
                    &mut answered.message,
                    geodns,
                    query.name(),
                    *region,
                    family,
                    steered.ttl,
                );
            }
            answered.region = steered.pick.regions.as_slice().first().copied();
            if answered.message.answers.is_empty() {
                negative(&mut answered.message, zone);
            }
            scope = client.scope;
            answered.steered = Some(steered);
        }
        // ANY at an apex without addresses: the SOA.
        (RecordType::ANY, true, None) => {
            answered.message.add_answer(Record::from_rdata(
                zone.apex.clone(),
                zone.soa_ttl,
                RData::SOA(zone.soa.clone()),
            ));
        }
        (_, true, _) | (_, false, Some(_)) => negative(&mut answered.message, zone),
        (_, false, None) if zone.empty_nonterminals.contains(&name) => {
            negative(&mut answered.message, zone)
        }
        (_, false, None) => {
            answered.message.metadata.response_code = ResponseCode::NXDomain;
            negative(&mut answered.message, zone);
        }
    }
    if let (Some(edns), Some(used)) = (answered.message.edns.as_mut(), client.subnet) {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                used.addr(),
                used.source_prefix(),
                scope,
            )));
    }
    answered
}

/// The regions and TTL for `target` as seen from `client`.
pub fn steer(
    table: &RoutingTable,
    geodns: &GeoDns,
    target: &DnsTarget,
    client: DnsClient,
    family: Family,
) -> Steered {
    let pick = pick_regions(
        table,
        geodns,
        target,
        &client.location,
        family,
        subnet_draw(client.key),
    );
    let ttl = if pick.failover {
        geodns.failover_ttl
    } else {
        geodns.ttl
    };
    Steered { client, pick, ttl }
}

fn add_addresses(
    message: &mut Message,
    geodns: &GeoDns,
    name: &hickory_proto::rr::Name,
    region: RegionId,
    family: Family,
    ttl: u32,
) {
    let Some(ingress) = geodns.ingress.get(region as usize) else {
        return;
    };
    match family {
        Family::V4 => {
            for ip in &ingress.v4 {
                message.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(*ip))));
            }
        }
        Family::V6 => {
            for ip in &ingress.v6 {
                message.add_answer(Record::from_rdata(
                    name.clone(),
                    ttl,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
    }
}

/// NODATA or NXDOMAIN: the zone's SOA in the authority section, for negative caching
/// (RFC 2308).
fn negative(message: &mut Message, zone: &Zone) {
    message.add_authority(Record::from_rdata(
        zone.apex.clone(),
        zone.soa_ttl,
        RData::SOA(zone.soa.clone()),
    ));
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
