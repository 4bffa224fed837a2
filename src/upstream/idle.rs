//! The idle side of a cluster pool (`upstream::pool`): an idle connection, one worker's idle
//! connections by endpoint, and the watch that hears an idle socket close. The pool keeps one
//! [`IdleConns`] per worker thread and owns every rule about them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::http1::client::Connection;
use crate::upstream::pool::ConnSlot;

/// A connection waiting in an idle set.
pub(super) struct IdleConn {
    pub(super) conn: Box<Connection>,
    pub(super) slot: ConnSlot,
    pub(super) watch: Watch,
    pub(super) uses: u32,
    pub(super) since: Instant,
    pub(super) home: usize,
}

/// A pool's idle connections, per endpoint.
#[derive(Default)]
pub(super) struct IdleConns {
    /// Oldest first: reuse takes the newest, expiry and the cap close the oldest.
    /// Looked up per request: hashed with foldhash (addresses come from config and
    /// discovery, never from clients).
    pub(super) by_addr: foldhash::HashMap<SocketAddr, VecDeque<IdleConn>>,
    /// The reaper found nothing to wait for: the next connection to go idle must wake it,
    /// so that it sets its timer. (One that comes later expires later: no need to.)
    pub(super) reaper_unarmed: bool,
}

/// Wakes a pool's reaper: when an idle socket turns readable (see [`Watch`]), and when the
/// first connection goes idle.
#[derive(Default)]
pub(super) struct ReaperSignal(pub(super) Notify);

/// What a connection's socket is watched with while it idles. Its waker is left with the
/// socket when the connection goes back to the pool; the socket turning readable (the
/// upstream closed it, or sent something unasked) sets `readable` and wakes the reaper. So a
/// close is heard as it happens, and a checkout or a sweep reads a flag instead of probing
/// the socket. Made once per connection.
pub(super) struct Watch {
    state: Arc<WatchState>,
    waker: Waker,
}

pub(super) struct WatchState {
    readable: AtomicBool,
    reaper: Arc<ReaperSignal>,
}

impl Wake for WatchState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.store(true, Ordering::Release);
        self.reaper.0.notify_one();
    }
}

impl Watch {
    pub(super) fn new(reaper: &Arc<ReaperSignal>) -> Self {
        let state = Arc::new(WatchState {
            readable: AtomicBool::new(false),
            reaper: reaper.clone(),
        });
        Self {
            waker: Waker::from(state.clone()),
            state,
        }
    }

    /// Whether the socket turned readable since the connection went idle.
    pub(super) fn fired(&self) -> bool {
        self.state.readable.load(Ordering::Acquire)
    }

    /// Whether `conn` is still open, leaving the waker with its socket if so.
    pub(super) fn arm(&self, conn: &mut Connection) -> bool {
        self.state.readable.store(false, Ordering::Release);
        conn.is_open(&self.waker)
    }
}
