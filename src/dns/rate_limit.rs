//! Response rate limiting (RRL, as in BIND and Knot) for the UDP listener: a token bucket per
//! source /24 (IPv6: /56) in a fixed table, so a spoofed flood aimed at a victim through
//! Meridian gets the victim few answers, while memory stays the table's size whatever the
//! number of sources. Over the limit every `slip`-th query is answered with an empty truncated
//! response (a real client retries over TCP, which is not limited) and the rest not at all.
//!
//! Owned by the UDP loop (one task: no locks); exists only when `geodns.rate_limit` is set.

use std::net::IpAddr;

use tokio::time::Instant;

use super::client::{KEY_PREFIX_V4, KEY_PREFIX_V6, subnet_key};
use crate::table::geodns::RateLimit;

/// Buckets in the table; sources that share a slot take it over from each other (a new
/// source starts full, so a collision errs towards answering).
pub const SLOTS: usize = 4096;

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Over the limit: an empty answer with TC set.
    Slip,
    /// Over the limit: nothing.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    key: u64,
    tokens: f64,
    last: Instant,
    /// Queries refused since the bucket last had a token (for `slip`).
    refused: u32,
}

#[derive(Debug)]
pub struct RateLimiter {
    pub settings: RateLimit,
    buckets: Box<[Option<Bucket>]>,
}

impl RateLimiter {
    pub fn new(settings: RateLimit) -> Self {
        Self {
            settings,
            buckets: vec![None; SLOTS].into_boxed_slice(),
        }
    }

    /// Whether a query from `source` at `now` is answered.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        let source = source.to_canonical();
        let prefix = match source {
            IpAddr::V4(_) => KEY_PREFIX_V4,
            IpAddr::V6(_) => KEY_PREFIX_V6,
        };
        let key = subnet_key(source, prefix);
        let burst = f64::from(self.settings.burst);
        let slot = (key % SLOTS as u64) as usize;
        let Some(entry) = self.buckets.get_mut(slot) else {
            return Verdict::Answer;
        };
        let bucket = match entry {
            Some(b) if b.key == key => b,
            _ => entry.insert(Bucket {
                key,
                tokens: burst,
                last: now,
                refused: 0,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * f64::from(self.settings.per_second)).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.refused = 0;
            return Verdict::Answer;
        }
        bucket.refused = bucket.refused.wrapping_add(1);
        match self.settings.slip {
            0 => Verdict::Drop,
            slip if bucket.refused % slip == 0 => Verdict::Slip,
            _ => Verdict::Drop,
        }
    }
}

/// The empty truncated answer to a limited query: its header with QR and TC set, its
/// question, nothing else (never larger than the query). `None` if it has no usable header.
pub fn slip_reply(packet: &[u8]) -> Option<Vec<u8>> {
    let request = hickory_proto::op::Message::from_vec(packet).ok()?;
    if request.metadata.message_type != hickory_proto::op::MessageType::Query {
        return None;
    }
    let mut reply =
        hickory_proto::op::Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.truncation = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.add_queries(request.queries.iter().take(1).cloned());
    reply.to_vec().ok().filter(|r| r.len() <= packet.len())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(per_second: u32, burst: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(RateLimit {
            per_second,
            burst,
            slip,
        })
    }

    #[test]
    fn a_burst_then_the_rate_per_subnet() {
        let mut l = limiter(10, 3, 2);
        let t0 = Instant::now();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let same_24: IpAddr = "198.51.100.200".parse().unwrap();
        let other: IpAddr = "198.51.101.7".parse().unwrap();
        // (source, ms after t0, verdict)
        let steps = [
            (a, 0, Verdict::Answer),
            (a, 0, Verdict::Answer),
            (same_24, 0, Verdict::Answer),
            (a, 0, Verdict::Drop),
            (same_24, 0, Verdict::Slip),
            (a, 0, Verdict::Drop),
            (other, 0, Verdict::Answer),
            // 100ms at 10/s is one token.
            (a, 100, Verdict::Answer),
            (a, 100, Verdict::Drop),
            (a, 100, Verdict::Slip),
            // A long pause refills to the burst, no further.
            (a, 10_000, Verdict::Answer),
            (a, 10_000, Verdict::Answer),
            (a, 10_000, Verdict::Answer),
            (a, 10_000, Verdict::Drop),
        ];
        for (i, (source, ms, want)) in steps.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(ms);
            assert_eq!(l.check(source, now), want, "step {i}: {source} at {ms}ms");
        }
    }

    #[test]
    fn slip_zero_never_answers_and_ipv6_shares_a_56() {
        let mut l = limiter(1, 1, 0);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:ff00::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:ff11::2".parse().unwrap();
        assert_eq!(l.check(a, t0), Verdict::Answer);
        for _ in 0..10 {
            assert_eq!(l.check(b, t0), Verdict::Drop);
        }
    }

    #[test]
    fn the_table_stays_its_size_whatever_the_sources() {
        let mut l = limiter(1, 1, 2);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let source = IpAddr::from((i << 8).to_be_bytes());
            assert_eq!(l.check(source, t0), Verdict::Answer);
        }
        assert_eq!(l.buckets.len(), SLOTS);
    }

    #[test]
    fn slip_replies_are_no_larger_than_the_query() {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = 9;
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("www.example.com.").unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let packet = m.to_vec().unwrap();
        let reply = hickory_proto::op::Message::from_vec(&slip_reply(&packet).unwrap()).unwrap();
        assert!(reply.metadata.truncation);
        assert_eq!(reply.metadata.id, 9);
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(slip_reply(&packet[..5]), None);
    }
}
