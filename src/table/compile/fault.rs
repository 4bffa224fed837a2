//! Compiling a route's `fault:` into [`Fault`].

use super::*;
use crate::config::FaultConfig;
use crate::table::policies::chance::Chance;
use crate::table::policies::fault::Fault;

impl Compiler<'_> {
    pub(super) fn fault(
        &mut self,
        at: YamlPath,
        f: &FaultConfig,
        route: &str,
    ) -> Option<Box<Fault>> {
        if f.delay.is_none() && f.abort.is_none() {
            self.problems.at(
                at,
                "give a delay ({fixed: 2s, percent: 10}), an abort ({status: 503, percent: 5}) or both",
            );
            return None;
        }
        let delay = match &f.delay {
            Some(d) => {
                let here = at.key("delay");
                let fixed = self.duration(here.key("fixed"), &d.fixed, DurationRange::TIMEOUT);
                let percent = self.percent(here.key("percent"), d.percent);
                Some((fixed?, Chance::from_percent(percent?)))
            }
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => {
                let here = at.key("abort");
                let status = match http::StatusCode::from_u16(a.status) {
                    Ok(s) if (200..=599).contains(&a.status) => Some(s),
                    _ => {
                        self.problems.at(
                            here.key("status"),
                            format!("{} is not a status to answer with; use 200..599", a.status),
                        );
                        None
                    }
                };
                let percent = self.percent(here.key("percent"), a.percent);
                Some((status?, Chance::from_percent(percent?)))
            }
            None => None,
        };
        let counter = |kind: &str| self.metrics.faults.with_label_values(&[route, kind]);
        Some(Box::new(Fault {
            delayed: counter("delay"),
            aborted: counter("abort"),
            delay,
            abort,
        }))
    }

    /// A share of requests, 0..100.
    pub(super) fn percent(&mut self, at: YamlPath, percent: f64) -> Option<f64> {
        if (0.0..=100.0).contains(&percent) {
            Some(percent)
        } else {
            self.problems.at(at, format!("{percent} is outside 0..100"));
            None
        }
    }
}
