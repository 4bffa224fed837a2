//! The status sampler: once a second, on the control runtime, it reads the running totals the
//! request path already keeps (answers by route, cluster, region and code; tries by endpoint;
//! requests by client country and region) and pushes their differences into the ring the
//! status views read. The request path does nothing for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use tokio_util::sync::CancellationToken;

use super::window::{Bucket, Counts, EndpointKey, Ring, SeriesKey};
use crate::table::{RoutingTable, TableHandle};
use crate::telemetry::landing::{COUNTRY_SLOTS, REGION_SLOTS, slot_country};

/// What the ring holds: the chart's five minutes.
pub const SPAN_SECONDS: u64 = 300;

/// The running totals at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub series: HashMap<SeriesKey, Counts>,
    pub endpoints: HashMap<EndpointKey, Counts>,
    /// `telemetry::landing`'s table, as it was.
    pub landing: Vec<u32>,
}

/// The ring, shared by the sampler (writes once a second) and the admin API (reads).
#[derive(Debug)]
pub struct StatusWindow {
    ring: Mutex<Ring>,
}

impl Default for StatusWindow {
    fn default() -> Self {
        Self {
            ring: Mutex::new(Ring::new(SPAN_SECONDS)),
        }
    }
}

impl StatusWindow {
    /// Read the ring (a short critical section on the control runtime only).
    pub fn read<T>(&self, f: impl FnOnce(&Ring) -> T) -> T {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        f(&ring)
    }

    pub fn push(&self, bucket: Bucket) {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bucket);
    }
}

/// Read every running total the status page uses.
pub fn snapshot(table: &RoutingTable) -> Snapshot {
    let mut series: HashMap<SeriesKey, Counts> = HashMap::new();
    for family in table.metrics.requests.collect() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let count = metric.get_counter().get_value().max(0.0) as u64;
            let error = label("code").starts_with('5');
            let key = SeriesKey {
                route: label("route"),
                cluster: label("cluster"),
                region: label("region"),
            };
            series.entry(key).or_default().add(Counts {
                requests: count,
                errors: if error { count } else { 0 },
            });
        }
    }
    let mut endpoints = HashMap::new();
    for cluster in &table.clusters {
        for set in cluster.regions.iter() {
            for e in set.members().endpoints.iter() {
                let s = &e.state;
                endpoints.insert(
                    EndpointKey {
                        cluster: cluster.name.clone(),
                        address: e.address.to_string(),
                    },
                    Counts {
                        requests: s.requests.load(std::sync::atomic::Ordering::Relaxed),
                        errors: s.errors.load(std::sync::atomic::Ordering::Relaxed),
                    },
                );
            }
        }
    }
    let mut landing = Vec::new();
    table.metrics.landing.snapshot(&mut landing);
    Snapshot {
        series,
        endpoints,
        landing,
    }
}

/// What happened between two snapshots, as the bucket of `second`. `regions` names region ids
/// (the table's, when the later snapshot was taken).
pub fn difference(before: &Snapshot, now: &Snapshot, regions: &[&str], second: u64) -> Bucket {
    let mut series: Vec<(SeriesKey, Counts)> = now
        .series
        .iter()
        .map(|(k, c)| {
            (
                k.clone(),
                c.since(before.series.get(k).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, c)| !c.is_zero())
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut endpoints: Vec<(EndpointKey, Counts)> = now
        .endpoints
        .iter()
        .map(|(k, c)| {
            (
                k.clone(),
                c.since(before.endpoints.get(k).copied().unwrap_or_default()),
            )
        })
        .filter(|(_, c)| !c.is_zero())
        .collect();
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    let mut landing = Vec::new();
    if now.landing.len() == COUNTRY_SLOTS * REGION_SLOTS {
        for (index, &total) in now.landing.iter().enumerate() {
            let then = before.landing.get(index).copied().unwrap_or(0);
            let delta = total.wrapping_sub(then);
            if delta == 0 {
                continue;
            }
            let (country, region) = (index / REGION_SLOTS, index % REGION_SLOTS);
            let Some(region) = regions.get(region) else {
                continue;
            };
            landing.push((
                slot_country(country),
                (*region).to_owned(),
                u64::from(delta),
            ));
        }
    }
    Bucket {
        second,
        series,
        endpoints,
        landing,
    }
}

/// Sample every second until shutdown.
pub async fn run(table: TableHandle, window: Arc<StatusWindow>, shutdown: CancellationToken) {
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut before: Option<Snapshot> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let table = table.load_full();
        let now = snapshot(&table);
        let second = (started.elapsed().as_millis() + 500) as u64 / 1000;
        if let Some(before) = &before {
            let regions: Vec<&str> = table.regions.iter().map(|r| r.name.as_str()).collect();
            window.push(difference(before, &now, &regions, second));
        } else {
            // The first reading is the baseline: what happened before the sampler is not recent.
            window.push(Bucket {
                second,
                ..Bucket::default()
            });
        }
        before = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::CountryCode;
    use crate::telemetry::landing::{Landing, country_slot};

    fn key(route: &str, region: &str) -> SeriesKey {
        SeriesKey {
            route: route.into(),
            cluster: "api".into(),
            region: region.into(),
        }
    }

    #[test]
    fn a_bucket_holds_only_what_changed() {
        let landing = Landing::new();
        let mut before = Snapshot::default();
        before.series.insert(
            key("api", "eu-west-1"),
            Counts {
                requests: 10,
                errors: 1,
            },
        );
        before.series.insert(
            key("api", "us-east-1"),
            Counts {
                requests: 4,
                errors: 0,
            },
        );
        landing.snapshot(&mut before.landing);
        let mut now = Snapshot::default();
        now.series.insert(
            key("api", "eu-west-1"),
            Counts {
                requests: 13,
                errors: 1,
            },
        );
        now.series.insert(
            key("api", "us-east-1"),
            Counts {
                requests: 4,
                errors: 0,
            },
        );
        // a series first seen now started from 0
        now.series.insert(
            key("web", "eu-west-1"),
            Counts {
                requests: 2,
                errors: 2,
            },
        );
        let de = CountryCode::parse("DE");
        landing.count(de, 1);
        landing.count(de, 1);
        landing.count(None, 0);
        landing.count(None, 7);
        landing.snapshot(&mut now.landing);
        let bucket = difference(&before, &now, &["us-east-1", "eu-west-1"], 42);
        assert_eq!(bucket.second, 42);
        assert_eq!(
            bucket.series,
            vec![
                (
                    key("api", "eu-west-1"),
                    Counts {
                        requests: 3,
                        errors: 0
                    }
                ),
                (
                    key("web", "eu-west-1"),
                    Counts {
                        requests: 2,
                        errors: 2
                    }
                ),
            ]
        );
        // region 7 is not in this table: not counted
        assert_eq!(
            bucket.landing,
            vec![
                (Some("DE".to_owned()), "eu-west-1".to_owned(), 2),
                (None, "us-east-1".to_owned(), 1),
            ]
        );
        assert_eq!(country_slot(de), 3 * 26 + 4);
    }

    #[test]
    fn a_wrapped_landing_counter_still_counts_the_difference() {
        let mut before = Snapshot {
            landing: vec![0; COUNTRY_SLOTS * REGION_SLOTS],
            ..Snapshot::default()
        };
        before.landing[0] = u32::MAX - 1;
        let mut now = Snapshot {
            landing: vec![0; COUNTRY_SLOTS * REGION_SLOTS],
            ..Snapshot::default()
        };
        now.landing[0] = 3;
        let bucket = difference(&before, &now, &["r"], 1);
        assert_eq!(
            bucket.landing,
            vec![(Some("AA".to_owned()), "r".to_owned(), 5)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_sampler_pushes_a_bucket_a_second_and_stops_on_shutdown() {
        let table = super::super::test_table();
        let handle: TableHandle = Arc::new(arc_swap::ArcSwap::from_pointee(table));
        let window = Arc::new(StatusWindow::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(handle.clone(), window.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let metrics = handle.load().metrics.clone();
        metrics.landing.count(CountryCode::parse("FR"), 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (seconds, landing) = window.read(|ring| {
            let now = ring.now().unwrap_or(0);
            let landing: Vec<_> = ring
                .within(now, 300)
                .flat_map(|b| b.landing.clone())
                .collect();
            (ring.within(now, 300).count(), landing)
        });
        assert_eq!(seconds, 5);
        assert_eq!(landing.len(), 1, "{landing:?}");
        assert_eq!(landing[0].0.as_deref(), Some("FR"));
        assert_eq!(landing[0].2, 1);
        shutdown.cancel();
        task.await.unwrap();
    }
}
