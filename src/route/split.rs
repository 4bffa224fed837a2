//! Health-aware splits across clusters (`routes[].clusters` weights): which cluster takes a
//! request. A pure function over the route's compiled split, a health predicate and one draw
//! of the route's low-discrepancy sequence; called by [`super::decision`].
//!
//! A cluster with no healthy endpoint in any region the client may use drops out and the
//! others share its weight, as region weights already do. When every cluster is down the
//! split is taken as configured and the chosen cluster's panic rules decide.

use crate::table::routes::{ClusterId, MAX_SPLIT};

/// The cluster chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterPick {
    pub cluster: ClusterId,
    /// Where the draw fell inside the chosen cluster's share, rescaled to [0, 1): the region
    /// split inside that cluster uses it, so the two splits stay even and independent of each
    /// other although both come from one point of the sequence.
    pub draw: f64,
    /// No cluster had a healthy endpoint: the configured weights were used as they are.
    pub all_down: bool,
}

/// Pick a cluster from `split` (cluster, weight) with `draw` uniform in [0, 1).
///
/// `up(cluster)` says whether the cluster has a healthy endpoint in a region the request may
/// go to. `None` only when every weight is 0 (the compiler refuses such a split).
pub fn pick_cluster(
    split: &[(ClusterId, u32)],
    up: impl Fn(ClusterId) -> bool,
    draw: f64,
) -> Option<ClusterPick> {
    // Health is read once per cluster: a split names a handful of clusters at most.
    let mut eligible = [false; MAX_SPLIT];
    let mut any_up = false;
    for (slot, (id, w)) in eligible.iter_mut().zip(split) {
        *slot = *w > 0 && up(*id);
        any_up |= *slot;
    }
    // Past MAX_SPLIT (the compiler refuses more) clusters count as down.
    let take = |i: usize, w: u32| {
        if any_up {
            eligible.get(i).copied().unwrap_or(false)
        } else {
            w > 0
        }
    };
    let total: u64 = split
        .iter()
        .enumerate()
        .filter(|(i, (_, w))| take(*i, *w))
        .map(|(_, (_, w))| u64::from(*w))
        .sum();
    if total == 0 {
        return None;
    }
    let draw = if draw.is_finite() {
        draw.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut at = draw * total as f64;
    let mut last = None;
    for (i, (id, w)) in split.iter().enumerate() {
        if !take(i, *w) {
            continue;
        }
        let w = f64::from(*w);
        last = Some(*id);
        if at < w {
            return Some(ClusterPick {
                cluster: *id,
                draw: (at / w).clamp(0.0, next_below_one()),
                all_down: !any_up,
            });
        }
        at -= w;
    }
    // Rounding put the draw at the very end: the last eligible cluster takes it.
    last.map(|cluster| ClusterPick {
        cluster,
        draw: next_below_one(),
        all_down: !any_up,
    })
}

fn next_below_one() -> f64 {
    1.0 - f64::EPSILON / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steer::golden_draw;

    fn counts(split: &[(ClusterId, u32)], down: &[ClusterId], n: u64) -> Vec<u64> {
        let mut out = vec![0u64; split.len()];
        for i in 0..n {
            let pick = pick_cluster(split, |id| !down.contains(&id), golden_draw(i)).unwrap();
            let at = split
                .iter()
                .position(|(id, _)| *id == pick.cluster)
                .unwrap();
            out[at] += 1;
        }
        out
    }

    #[test]
    fn splits_hold_and_renormalise() {
        // (split, down clusters, requests, expected counts)
        type Case<'a> = (&'a [(ClusterId, u32)], &'a [ClusterId], u64, &'a [u64]);
        let cases: &[Case<'_>] = &[
            (&[(0, 95), (1, 5)], &[], 400, &[380, 20]),
            (&[(0, 95), (1, 5)], &[1], 400, &[400, 0]),
            (&[(0, 95), (1, 5)], &[0], 400, &[0, 400]),
            (&[(0, 50), (1, 30), (2, 20)], &[], 1000, &[500, 300, 200]),
            // 50/20 renormalised: 71.4/28.6.
            (&[(0, 50), (1, 30), (2, 20)], &[1], 1000, &[714, 0, 286]),
            // Weight 0 is never picked, up or not.
            (&[(0, 0), (1, 1)], &[], 100, &[0, 100]),
            // Every cluster down: the configured split, so each cluster's panic rules decide.
            (&[(0, 95), (1, 5)], &[0, 1], 400, &[380, 20]),
        ];
        for (split, down, n, want) in cases {
            let got = counts(split, down, *n);
            for (g, w) in got.iter().zip(*want) {
                assert!(
                    g.abs_diff(*w) <= 1,
                    "{split:?} down {down:?}: got {got:?}, want {want:?}"
                );
            }
        }
        // The 95/5 canary over 400 requests is exact.
        assert_eq!(counts(&[(0, 95), (1, 5)], &[], 400), vec![380, 20]);
    }

    #[test]
    fn all_down_is_flagged_and_zero_weights_give_nothing() {
        let pick = pick_cluster(&[(3, 1), (4, 1)], |_| false, 0.7).unwrap();
        assert_eq!((pick.cluster, pick.all_down), (4, true));
        let pick = pick_cluster(&[(3, 1), (4, 1)], |id| id == 3, 0.7).unwrap();
        assert_eq!((pick.cluster, pick.all_down), (3, false));
        assert_eq!(pick_cluster(&[(3, 0)], |_| true, 0.5), None);
        assert_eq!(pick_cluster(&[], |_| true, 0.5), None);
    }

    #[test]
    fn the_rescaled_draw_is_even_inside_the_chosen_cluster() {
        // Region draws inside the 95% cluster: as even as the route's own sequence.
        let mut below_half = 0;
        let mut picked = 0;
        for i in 0..2000 {
            let pick = pick_cluster(&[(0, 95), (1, 5)], |_| true, golden_draw(i)).unwrap();
            assert!((0.0..1.0).contains(&pick.draw), "{pick:?}");
            if pick.cluster == 0 {
                picked += 1;
                below_half += u32::from(pick.draw < 0.5);
            }
        }
        let share = f64::from(below_half) / f64::from(picked);
        assert!((share - 0.5).abs() < 0.01, "{share}");
    }

    #[test]
    fn odd_draws_and_huge_weights_stay_in_bounds() {
        let split = [(0, u32::MAX), (1, u32::MAX), (2, 1)];
        for draw in [
            0.0,
            1.0,
            -1.0,
            2.0,
            f64::NAN,
            f64::INFINITY,
            1.0 - f64::EPSILON,
        ] {
            let pick = pick_cluster(&split, |_| true, draw).unwrap();
            assert!((0.0..1.0).contains(&pick.draw), "{draw}: {pick:?}");
        }
        let pick = pick_cluster(&split, |id| id == 2, 0.999).unwrap();
        assert_eq!(pick.cluster, 2);
        // More clusters than MAX_SPLIT: the ones past it count as down, nothing panics.
        let many: Vec<(ClusterId, u32)> = (0..100).map(|i| (i, 1)).collect();
        let pick = pick_cluster(&many, |_| true, 0.999).unwrap();
        assert!(pick.cluster < MAX_SPLIT);
    }
}
