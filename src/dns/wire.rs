//! From packet to packet: parse a query (FORMERR for a malformed one that still has a query
//! header, silence for anything else), answer it from the table in service, count it, and
//! encode the response within what the transport allows (512 bytes over UDP without EDNS, the
//! advertised size with it, capped at [`MAX_UDP_PAYLOAD`]; TC set when cut).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use super::answer::{MAX_UDP_PAYLOAD, answer, rcode_label};
use crate::table::RoutingTable;

/// How the query came: UDP answers are cut to the client's size; TCP ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The plain-DNS UDP limit (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// The response to `packet` from `resolver`, or `None` when nothing should be sent (not a
/// query, too broken to answer, no DNS in this table).
pub fn handle(
    table: &RoutingTable,
    packet: &[u8],
    resolver: IpAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    let geodns = table.geodns.as_deref()?;
    let metrics = &table.metrics.dns_queries;
    let parsed = if counts_fit(packet) {
        Message::from_vec(packet).ok()
    } else {
        None
    };
    let request = match parsed {
        Some(m) => m,
        None => {
            let reply = formerr(packet)?;
            metrics
                .with_label_values(&["", "other", "FORMERR", ""])
                .inc();
            return Some(reply);
        }
    };
    // Never answer a response: two servers could bounce packets for ever.
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let answered = answer(table, geodns, &request, resolver);
    let zone = answered
        .zone
        .and_then(|z| geodns.zones.get(z))
        .map_or("", |z| z.label.as_str());
    let region = answered.region.map_or("", |r| table.region_name(r));
    metrics
        .with_label_values(&[
            zone,
            answered.qtype,
            rcode_label(answered.message.metadata.response_code),
            region,
        ])
        .inc();
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match &request.edns {
            Some(edns) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
            None => CLASSIC_UDP_LIMIT,
        },
    };
    encode_within(&answered.message, limit)
}

/// Whether the header's counts could fit in the packet (at most one question, each at least 5
/// bytes, each record at least 11) and so are worth parsing: the parser reserves room for
/// every record the header promises, and 65535 questions in a 12-byte packet would have it
/// allocate megabytes to find out they are not there.
fn counts_fit(packet: &[u8]) -> bool {
    let Some(header) = packet.get(..12) else {
        return false;
    };
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let (questions, records) = (count(4), count(6) + count(8) + count(10));
    questions <= 1 && 12 + questions * 5 + records * 11 <= packet.len()
}

/// `message` encoded in at most `limit` bytes: whole, or with every record section dropped and
/// TC set (the client retries over TCP), or nothing if even that does not fit.
pub fn encode_within(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let cut = message.truncate();
    cut.to_vec().ok().filter(|b| b.len() <= limit)
}

/// FORMERR for a packet that does not parse but starts with a query header (its id and
/// opcode are echoed, no question); `None` for anything shorter or marked as a response.
fn formerr(packet: &[u8]) -> Option<Vec<u8>> {
    let header = packet.get(..12)?;
    let flags = header[2];
    if flags & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let op_code = OpCode::from_u8((flags >> 3) & 0x0f);
    let message = Message::error_msg(id, op_code, ResponseCode::FormErr);
    message.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::counts_fit;

    #[test]
    fn header_counts_must_fit_the_packet() {
        let header = |qd: u16, an: u16, ar: u16, extra: usize| {
            let mut p = vec![0u8; 12 + extra];
            p[4..6].copy_from_slice(&qd.to_be_bytes());
            p[6..8].copy_from_slice(&an.to_be_bytes());
            p[10..12].copy_from_slice(&ar.to_be_bytes());
            p
        };
        // (questions, answers, additional, bytes after the header, fits)
        let cases = [
            (1, 0, 0, 5, true),
            (1, 0, 1, 16, true),
            (0, 0, 0, 0, true),
            (1, 0, 0, 4, false),
            (2, 0, 0, 100, false),
            (65535, 0, 0, 1, false),
            (1, 0, 65535, 100, false),
            (1, 65535, 65535, 100, false),
        ];
        for (qd, an, ar, extra, fits) in cases {
            assert_eq!(
                counts_fit(&header(qd, an, ar, extra)),
                fits,
                "{qd} {an} {ar} {extra}"
            );
        }
        assert!(!counts_fit(&[0; 11]));
    }
}
