//! Unit tests of `upstream::pool`: limits, the reaper, and idle sets per worker.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn limits(max_connections: usize, max_pending: usize) -> PoolLimits {
    PoolLimits {
        max_connections,
        max_pending_requests: max_pending,
        max_requests: 10,
        max_requests_per_connection: 0,
        idle_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        max_idle_per_endpoint: 8,
    }
}

#[tokio::test]
async fn overflows_when_requests_or_waiters_are_full() {
    let pool = ClusterPool::new(PoolLimits {
        max_requests: 2,
        ..limits(1, 0)
    });
    let a = pool.admit().unwrap();
    let _b = pool.admit().unwrap();
    assert_eq!(pool.admit().err(), Some(Overflow::MaxRequests));
    assert_eq!(pool.active_requests(), 2);
    drop(a);
    assert!(pool.admit().is_ok());

    // One connection allowed and taken, no waiters allowed: overflow at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = pool.connections.clone().try_acquire_owned().unwrap();
    match pool.checkout(addr).await {
        Err(UpstreamError::Overflow(Overflow::MaxPendingRequests)) => {}
        other => panic!("expected overflow, got {:?}", other.err()),
    }
}

/// Yield until `done` holds (bounded): the reaper runs on this same thread.
async fn settle(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    done()
}

#[tokio::test]
async fn the_reaper_closes_idle_connections_at_idle_timeout_not_before() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = ClusterPool::new(limits(4, 4));
    let conn = pool.checkout(addr).await.unwrap();
    let (mut upstream, _) = listener.accept().await.unwrap();
    tokio::time::pause();
    conn.release();
    let shutdown = CancellationToken::new();
    let reaper = tokio::spawn(pool.clone().reap(shutdown.clone()));
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(
        !settle(|| pool.open_connections() == 0).await,
        "closed before idle_timeout"
    );
    // (Timers fire on millisecond ticks.)
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(
        settle(|| pool.open_connections() == 0).await,
        "kept past idle_timeout"
    );
    let mut byte = [0u8; 1];
    assert_eq!(
        upstream.read(&mut byte).await.unwrap(),
        0,
        "the upstream saw the close"
    );
    assert_eq!(pool.idle_connections(), 0);
    shutdown.cancel();
    reaper.await.unwrap();
}

#[tokio::test]
async fn the_reaper_closes_an_idle_connection_the_upstream_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = ClusterPool::new(limits(4, 4));
    let shutdown = CancellationToken::new();
    let reaper = tokio::spawn(pool.clone().reap(shutdown.clone()));
    let (a, b) = (
        pool.checkout(addr).await.unwrap(),
        pool.checkout(addr).await.unwrap(),
    );
    let (mut first, _) = listener.accept().await.unwrap();
    let (mut second, _) = listener.accept().await.unwrap();
    a.release();
    b.release();
    assert_eq!(pool.open_connections(), 2);
    // One upstream closes its side; nothing is checked out, yet the pool lets go of it.
    first.shutdown().await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte)).await;
    assert_eq!(closed.unwrap().unwrap(), 0, "the pool closed its side too");
    assert!(settle(|| pool.open_connections() == 1).await);
    // The other is still idle, still open, and still reused.
    let again = pool.checkout(addr).await.unwrap();
    assert!(again.reused);
    again.release();
    second.write_all(b"x").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), second.read(&mut byte)).await;
    assert_eq!(
        closed.unwrap().unwrap(),
        0,
        "a byte unasked-for closes it too"
    );
    assert!(settle(|| pool.open_connections() == 0).await);
    shutdown.cancel();
    reaper.await.unwrap();
}

#[tokio::test]
async fn refused_connect_is_a_connect_error() {
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let pool = ClusterPool::new(limits(4, 4));
    match pool.checkout(addr).await {
        Err(UpstreamError::Connect { .. }) => {}
        other => panic!("expected a connect error, got {:?}", other.err()),
    }
    assert_eq!(pool.open_connections(), 0, "the permit is returned");
}

/// Run `task` on worker `worker` and wait for what it returns.
fn on_worker<T: Send + 'static>(
    workers: &crate::worker::Workers,
    worker: usize,
    task: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    workers.handle(worker).spawn(async move {
        let _ = tx.send(task.await);
    });
    rx.recv().unwrap()
}

/// Check a connection to `addr` out of `pool` on `worker`, give it back, and say whether it
/// was reused.
fn checkout_on(
    workers: &crate::worker::Workers,
    worker: usize,
    pool: &Arc<ClusterPool>,
    addr: SocketAddr,
) -> bool {
    let pool = pool.clone();
    on_worker(workers, worker, async move {
        let conn = pool.checkout(addr).await.unwrap();
        let reused = conn.reused;
        conn.release();
        reused
    })
}

#[test]
fn idle_connections_stay_with_the_worker_that_opened_them() {
    let workers = crate::worker::Workers::start(2, None).unwrap();
    // The kernel completes connects to a listener nobody accepts on: enough for a pool.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = ClusterPool::new(limits(4, 4));
    // (worker, reused?, open connections after)
    for (worker, reused, open) in [
        (0, false, 1), // worker 0 opens one
        (0, true, 1),  // and reuses it
        (1, false, 2), // worker 1, with room under max_connections, opens its own
        (1, true, 2),  // and reuses that
        (0, true, 2),  // worker 0's is still in its own set
    ] {
        assert_eq!(
            checkout_on(&workers, worker, &pool, addr),
            reused,
            "worker {worker}"
        );
        assert_eq!(pool.open_connections(), open, "worker {worker}");
    }
    assert_eq!(pool.idle_connections(), 2);
    workers.stop();
}

#[test]
fn at_max_connections_a_worker_borrows_another_workers_idle_connection() {
    let workers = crate::worker::Workers::start(2, None).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection for the cluster, and no waiting: a checkout that found nothing to
    // borrow would overflow at once.
    let pool = ClusterPool::new(limits(1, 0));
    for (worker, reused) in [(0, false), (1, true), (1, true), (0, true)] {
        assert_eq!(
            checkout_on(&workers, worker, &pool, addr),
            reused,
            "worker {worker}"
        );
        assert_eq!(pool.open_connections(), 1);
    }
    // Borrowed, it went back to the set of the worker that opened it: worker 1 still has
    // none of its own.
    assert_eq!(pool.idle_set(1).lock().unwrap().by_addr.len(), 0);
    assert_eq!(pool.idle_connections(), 1);
    workers.stop();
}
