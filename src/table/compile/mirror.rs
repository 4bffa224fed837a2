//! Compiling a route's `mirrors:` (or `mirror:`) into [`Mirror`]s.

use std::sync::atomic::AtomicU64;

use super::*;
use crate::table::policies::chance::Chance;
use crate::table::policies::mirror::{Mirror, MirrorMetrics};

/// Largest `max_in_flight` accepted: each copy holds its request's body until it is answered.
pub const MAX_MIRROR_IN_FLIGHT: u32 = 100_000;

/// The in-flight counts of one compile, by mirror cluster: every route mirroring to a cluster
/// shares its count.
pub(super) type MirrorCounts = HashMap<ClusterId, Arc<AtomicUsize>>;

impl<'a> Compiler<'a> {
    pub(super) fn mirrors(
        &mut self,
        here: &YamlPath,
        r: &RouteConfig,
        clusters: &HashMap<&'a str, ClusterId>,
        counts: &mut MirrorCounts,
    ) -> Option<Box<[Mirror]>> {
        if r.mirrors.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(r.mirrors.list.len());
        for (i, m) in r.mirrors.list.iter().enumerate() {
            let at = r.mirrors.path(here, i);
            let cluster = self.cluster_ref(at.key("cluster"), &m.cluster, clusters);
            let percent = self.percent(at.key("percent"), m.percent);
            if !(1..=MAX_MIRROR_IN_FLIGHT).contains(&m.max_in_flight) {
                self.problems.at(
                    at.key("max_in_flight"),
                    format!(
                        "{} is outside 1..{MAX_MIRROR_IN_FLIGHT} (use percent: 0 to stop mirroring)",
                        m.max_in_flight
                    ),
                );
                continue;
            }
            let (Some(cluster), Some(percent)) = (cluster, percent) else {
                continue;
            };
            let counter = |result: &str| {
                self.metrics.mirror_requests.with_label_values(&[
                    r.name.as_str(),
                    m.cluster.as_str(),
                    result,
                ])
            };
            out.push(Mirror {
                cluster,
                chance: Chance::from_percent(percent),
                max_in_flight: m.max_in_flight as usize,
                in_flight: counts.entry(cluster).or_default().clone(),
                draws: AtomicU64::new(0),
                metrics: MirrorMetrics {
                    sent: counter("sent"),
                    failed: counter("failed"),
                    dropped: counter("dropped"),
                    skipped: counter("skipped"),
                },
            });
        }
        Some(out.into_boxed_slice())
    }
}
