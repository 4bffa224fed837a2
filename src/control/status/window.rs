//! Window math for the status page: a ring of one-second buckets of counter differences, and
//! the sums, rates, shares and chart points read from it. Pure: the sampler fills the ring,
//! the views read it, and the tests drive it with plain numbers.
//!
//! Every figure the page shows comes from here, so none of them is an all-time total: an idle
//! window has rate 0 and no share at all (`None`), never "100%".

use std::collections::{BTreeMap, VecDeque};

/// Requests (or tries) and the failed ones among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
    }

    /// The difference of two running totals. A total that went down belongs to a counter that
    /// started again: what it holds now is what happened since.
    pub fn since(self, before: Counts) -> Counts {
        let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
        Counts {
            requests: delta(self.requests, before.requests),
            errors: delta(self.errors, before.errors),
        }
    }

    pub fn is_zero(&self) -> bool {
        self.requests == 0 && self.errors == 0
    }

    /// Errors among requests; `None` without requests (nothing to say, not "0%").
    pub fn error_rate(&self) -> Option<f64> {
        share(self.errors, self.requests)
    }
}

/// `part` of `total`; `None` when the total is 0.
pub fn share(part: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| part as f64 / total as f64)
}

/// Per second over `seconds` (0 when no time is covered yet).
pub fn rate(count: u64, seconds: u64) -> f64 {
    if seconds == 0 {
        0.0
    } else {
        count as f64 / seconds as f64
    }
}

/// One route's requests to one (cluster, region); empty names for answers before a route,
/// cluster or region was chosen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub route: String,
    pub cluster: String,
    pub region: String,
}

/// One endpoint of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub cluster: String,
    pub address: String,
}

/// What happened in one second: only what changed is kept, so an idle second is empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Seconds since the sampler started.
    pub second: u64,
    /// Answers (errors: 5xx) by route, cluster and region.
    pub series: Vec<(SeriesKey, Counts)>,
    /// Tries (errors: 5xx or no answer) by endpoint.
    pub endpoints: Vec<(EndpointKey, Counts)>,
    /// Requests by client country (`None`: unknown) and serving region.
    pub landing: Vec<(Option<String>, String, u64)>,
}

/// The last `span` seconds of buckets.
#[derive(Debug)]
pub struct Ring {
    buckets: VecDeque<Bucket>,
    span: u64,
    /// The first second the sampler measured (rates before a whole window use what is held).
    first: Option<u64>,
}

impl Ring {
    pub fn new(span: u64) -> Self {
        Self {
            buckets: VecDeque::new(),
            span: span.max(1),
            first: None,
        }
    }

    /// Add a second's bucket and forget the ones that fell out of the span.
    pub fn push(&mut self, bucket: Bucket) {
        let now = bucket.second;
        self.first.get_or_insert(now);
        self.buckets.push_back(bucket);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.second + self.span <= now)
        {
            self.buckets.pop_front();
        }
    }

    /// The latest second measured (`None` before the first).
    pub fn now(&self) -> Option<u64> {
        self.buckets.back().map(|b| b.second)
    }

    /// Buckets of the last `seconds` up to `now`.
    pub fn within(&self, now: u64, seconds: u64) -> impl Iterator<Item = &Bucket> {
        let from = (now + 1).saturating_sub(seconds);
        self.buckets
            .iter()
            .filter(move |b| b.second >= from && b.second <= now)
    }

    /// How many of the last `seconds` were measured: the divisor of a rate.
    pub fn covered(&self, now: u64, seconds: u64) -> u64 {
        match self.first {
            Some(first) if first <= now => (now - first + 1).min(seconds),
            _ => 0,
        }
    }
}

/// Sum a bucket field by a key over some buckets.
pub fn sum_series<'b, K: Ord>(
    buckets: impl Iterator<Item = &'b Bucket>,
    mut key: impl FnMut(&SeriesKey) -> Option<K>,
) -> BTreeMap<K, Counts> {
    let mut sums = BTreeMap::new();
    for bucket in buckets {
        for (k, counts) in &bucket.series {
            if let Some(k) = key(k) {
                sums.entry(k).or_insert_with(Counts::default).add(*counts);
            }
        }
    }
    sums
}

/// Chart points: `span / step` steps ending at `now`, oldest first, each the per-region sum
/// over its `step` seconds (regions without an answer in the step are absent: 0).
pub fn chart_points(ring: &Ring, now: u64, span: u64, step: u64) -> Vec<BTreeMap<String, Counts>> {
    let step = step.max(1);
    let steps = (span / step).max(1);
    let mut points = vec![BTreeMap::new(); steps as usize];
    // The last step ends at `now`, however little the ring holds yet.
    let from = i128::from(now) + 1 - i128::from(steps * step);
    for bucket in ring.within(now, steps * step) {
        let Ok(index) = usize::try_from((i128::from(bucket.second) - from) / i128::from(step))
        else {
            continue;
        };
        let Some(point) = points.get_mut(index) else {
            continue;
        };
        for (key, counts) in &bucket.series {
            if key.region.is_empty() {
                continue;
            }
            point
                .entry(key.region.clone())
                .or_insert_with(Counts::default)
                .add(*counts);
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(second: u64, region: &str, requests: u64, errors: u64) -> Bucket {
        Bucket {
            second,
            series: vec![(
                SeriesKey {
                    route: "api".into(),
                    cluster: "api".into(),
                    region: region.into(),
                },
                Counts { requests, errors },
            )],
            ..Bucket::default()
        }
    }

    #[test]
    fn differences_of_running_totals() {
        let c = |requests, errors| Counts { requests, errors };
        let cases = [
            (c(10, 1), c(15, 3), c(5, 2)),
            (c(10, 1), c(10, 1), c(0, 0)),
            // the counter started again (a new endpoint state): all of it is new
            (c(10, 4), c(3, 0), c(3, 0)),
            (c(0, 0), c(7, 7), c(7, 7)),
        ];
        for (before, now, expected) in cases {
            assert_eq!(now.since(before), expected, "{before:?} -> {now:?}");
        }
    }

    #[test]
    fn shares_and_rates_say_nothing_when_idle() {
        assert_eq!(share(0, 0), None);
        assert_eq!(share(3, 4), Some(0.75));
        assert_eq!(Counts::default().error_rate(), None);
        assert_eq!(
            Counts {
                requests: 4,
                errors: 4
            }
            .error_rate(),
            Some(1.0)
        );
        assert_eq!(rate(10, 0), 0.0);
        assert_eq!(rate(30, 30), 1.0);
        assert_eq!(rate(0, 30), 0.0);
    }

    #[test]
    fn the_ring_forgets_what_left_the_span() {
        let mut ring = Ring::new(300);
        for s in 0..400 {
            ring.push(bucket(s, "eu-west-1", 1, 0));
        }
        assert_eq!(ring.now(), Some(399));
        assert_eq!(ring.within(399, 1000).count(), 300);
        assert_eq!(ring.within(399, 300).next().map(|b| b.second), Some(100));
        assert_eq!(ring.within(399, 30).count(), 30);
        assert_eq!(ring.covered(399, 30), 30);
        assert_eq!(ring.covered(399, 300), 300);
    }

    #[test]
    fn rates_before_a_whole_window_use_the_seconds_measured() {
        let mut ring = Ring::new(300);
        assert_eq!(ring.covered(0, 30), 0);
        for s in 5..10 {
            ring.push(bucket(s, "eu-west-1", 2, 0));
        }
        let covered = ring.covered(9, 30);
        assert_eq!(covered, 5);
        let sums = sum_series(ring.within(9, 30), |k| Some(k.region.clone()));
        assert_eq!(rate(sums["eu-west-1"].requests, covered), 2.0);
    }

    #[test]
    fn a_window_after_traffic_stopped_is_idle() {
        let mut ring = Ring::new(300);
        for s in 0..10 {
            ring.push(bucket(s, "eu-west-1", 5, 1));
        }
        for s in 10..60 {
            ring.push(Bucket {
                second: s,
                ..Bucket::default()
            });
        }
        let recent = sum_series(ring.within(59, 30), |k| Some(k.region.clone()));
        assert!(recent.is_empty(), "{recent:?}");
        let all = sum_series(ring.within(59, 300), |k| Some(k.region.clone()));
        assert_eq!(
            all["eu-west-1"],
            Counts {
                requests: 50,
                errors: 10
            }
        );
    }

    #[test]
    fn chart_points_sum_each_step_per_region() {
        let mut ring = Ring::new(300);
        for s in 0..20 {
            ring.push(bucket(s, "eu-west-1", 1, u64::from(s % 2 == 0)));
            ring.push(bucket(s, "", 100, 100));
        }
        let points = chart_points(&ring, 19, 20, 5);
        assert_eq!(points.len(), 4);
        for point in &points {
            assert_eq!(point.len(), 1, "answers without a region are not charted");
            let eu = point["eu-west-1"];
            assert_eq!(eu.requests, 5);
            assert!(eu.errors == 2 || eu.errors == 3, "{eu:?}");
        }
        // a span longer than what was measured: the old steps are empty
        let points = chart_points(&ring, 19, 300, 5);
        assert_eq!(points.len(), 60);
        assert!(points[..56].iter().all(BTreeMap::is_empty));
        assert_eq!(points[59]["eu-west-1"].requests, 5);
    }
}
