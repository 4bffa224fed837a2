//! Unit tests of `upstream::peers`: the verdict's hysteresis, the probe loop's timing under
//! paused time (scripted probes, a stalled peer), and the per-region view.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use super::*;

fn policy() -> PeerPolicy {
    PeerPolicy {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    }
}

fn counter(name: &str) -> IntCounter {
    IntCounter::new(name, "test").unwrap_or_else(|e| panic!("{e}"))
}

fn peer(region: RegionId) -> Peer {
    Peer {
        region,
        region_name: "eu-west-1".into(),
        target: PeerTarget {
            url: "http://127.0.0.1:9/readyz".into(),
            host: "127.0.0.1".into(),
            port: 9,
            authority: "127.0.0.1:9".into(),
            path: "/readyz".into(),
            tls: None,
        },
        state: Arc::new(PeerState::default()),
        up_gauge: IntGauge::new("peer_up", "test").unwrap_or_else(|e| panic!("{e}")),
        probes: ProbeCounters {
            up: counter("up"),
            status: counter("status"),
            error: counter("error"),
            timeout: counter("timeout"),
        },
    }
}

#[test]
fn the_verdict_changes_only_after_a_streak() {
    // (probe passed, expected verdict change), from up, thresholds 2 up / 3 down.
    // (probe passed, expected verdict change)
    type Steps<'a> = &'a [(bool, Option<bool>)];
    let cases: &[(&str, Steps)] = &[
        (
            "three failures in a row: down on the third",
            &[(false, None), (false, None), (false, Some(false))],
        ),
        (
            "a pass resets the failures",
            &[
                (false, None),
                (false, None),
                (true, None),
                (false, None),
                (false, None),
                (false, Some(false)),
            ],
        ),
        (
            "down, then back on the second pass in a row",
            &[
                (false, None),
                (false, None),
                (false, Some(false)),
                (true, None),
                (false, None),
                (true, None),
                (true, Some(true)),
            ],
        ),
        (
            "passes while up change nothing",
            &[(true, None), (true, None)],
        ),
    ];
    let p = policy();
    for (name, steps) in cases {
        let mut streak = Streak::default();
        let mut up = true;
        for (i, (passed, want)) in steps.iter().enumerate() {
            let got = streak.record(*passed, up, &p);
            assert_eq!(got, *want, "{name}: step {i}");
            if let Some(now) = got {
                up = now;
            }
        }
    }
}

#[test]
fn a_streak_saturates_instead_of_overflowing() {
    let mut streak = Streak {
        passes: u32::MAX,
        failures: 0,
    };
    assert_eq!(streak.record(true, true, &policy()), None);
    assert_eq!(streak.passes, u32::MAX);
}

#[test]
fn statuses_other_than_2xx_fail() {
    for (status, passed) in [
        (200, true),
        (204, true),
        (299, true),
        (301, false),
        (302, false),
        (404, false),
        (503, false),
    ] {
        assert_eq!(Probe::from_status(status).passed(), passed, "{status}");
    }
}

#[test]
fn the_view_says_down_only_for_a_region_whose_peer_is_down() {
    let eu = Arc::new(peer(1));
    let view = PeerView::new(3, std::slice::from_ref(&eu));
    assert!(view.is_up(0), "no peer: up");
    assert!(view.is_up(1), "a new peer starts up");
    eu.state.set(false);
    assert!(!view.is_up(1));
    assert!(view.is_up(2));
    assert!(view.is_up(200), "out of range: no peer");
}

/// Run the probe loop with `script` as the probes' results (a `None` stalls that probe for
/// ever); it stops once the script is used up. Returns, per probe, when it started and
/// whether the peer was up just before it.
async fn run_script(peer: Arc<Peer>, script: Vec<Option<Probe>>) -> Vec<(Duration, bool)> {
    let start = Instant::now();
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let token = CancellationToken::new();
    let task = {
        let (run_peer, run_token) = (peer.clone(), token.clone());
        let (peer, seen, token) = (peer.clone(), seen.clone(), token.clone());
        let probe = move || {
            let next = {
                let mut script = script.lock().unwrap_or_else(|e| e.into_inner());
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((start.elapsed(), peer.state.is_up()));
                let next = script.pop_front();
                if script.is_empty() && next.is_none() {
                    token.cancel();
                }
                next
            };
            async move {
                match next {
                    Some(Some(probe)) => probe,
                    _ => std::future::pending().await,
                }
            }
        };
        tokio::spawn(async move { run_with(&run_peer, &policy(), probe, run_token).await })
    };
    // Bounded: the script ends the loop; a loop that did not end fails here.
    tokio::time::timeout(Duration::from_secs(3600), task)
        .await
        .unwrap_or_else(|_| panic!("the probe loop did not stop"))
        .unwrap_or_else(|e| panic!("{e}"));
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[tokio::test(start_paused = true)]
async fn a_stalled_peer_is_down_after_its_timeouts_and_holds_nothing() {
    let peer = Arc::new(peer(1));
    let seen = run_script(peer.clone(), vec![None, None, None, None]).await;
    let secs = |s| Duration::from_secs(s);
    // Each stalled probe is cut at the 1s timeout, then the 2s interval.
    assert_eq!(
        seen,
        vec![
            (secs(0), true),
            (secs(3), true),
            (secs(6), true),
            (secs(9), false),
            (secs(12), false),
        ],
        "down after the third timeout (at 7s)"
    );
    assert_eq!(peer.probes.timeout.get(), 4);
    assert_eq!(peer.up_gauge.get(), 0);
    assert!(!peer.state.is_up());
}

#[tokio::test(start_paused = true)]
async fn scripted_probes_flip_the_region_with_hysteresis() {
    let peer = Arc::new(peer(1));
    let timeout = || {
        Some(Probe::Error(UpstreamError::PeerTimeout {
            url: "http://x:1/".into(),
            after: Duration::from_secs(1),
        }))
    };
    let script = vec![
        Some(Probe::Up(200)),
        Some(Probe::Status(503)),
        timeout(),
        Some(Probe::Status(302)), // third failure: down
        Some(Probe::Up(200)),
        Some(Probe::Status(500)),
        Some(Probe::Up(204)),
        Some(Probe::Up(200)), // second pass in a row: up
        Some(Probe::Up(200)),
    ];
    let seen = run_script(peer.clone(), script).await;
    let states: Vec<bool> = seen.iter().map(|(_, up)| *up).collect();
    // The state just before each probe (the last entry is the probe that ends the script).
    assert_eq!(
        states,
        vec![
            true, true, true, true, false, false, false, false, true, true
        ]
    );
    // Answered probes take no time: one interval apart.
    for (i, (at, _)) in seen.iter().enumerate() {
        assert_eq!(*at, Duration::from_secs(2 * i as u64), "probe {i}");
    }
    let p = &peer.probes;
    assert_eq!(
        (p.up.get(), p.status.get(), p.error.get(), p.timeout.get()),
        (5, 3, 1, 0)
    );
    assert_eq!(peer.up_gauge.get(), 1);
}
