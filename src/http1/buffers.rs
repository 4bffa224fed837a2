//! Empty read buffers a thread keeps for its next reads.
//!
//! Requests and responses are read into a buffer that the parsed head (and a small body) then
//! point into, so a connection cannot simply keep reusing one buffer, and allocating one per
//! read is a large share of the allocator's work. A buffer left empty with room to spare goes
//! to its thread's spares instead, and a connection that has nothing to read holds none:
//! idle connections cost their socket and task, not a buffer each. Bounded per thread.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::LocalKey;

use bytes::BytesMut;
use tokio::io::AsyncRead;

/// First read of a request head; grown only for larger heads.
pub(crate) const FIRST_READ: usize = 1024;

/// Bytes asked of an upstream connection per read (and the room a spare must have).
pub(crate) const READ_SIZE: usize = 8 * 1024;

thread_local! {
    /// Client connections' request-head buffers (see `http1::server`).
    pub(crate) static CLIENT_READS: Spares = const { Spares::new(FIRST_READ / 2, 16) };
    /// Upstream connections' response buffers (see `http1::client`).
    pub(crate) static UPSTREAM_READS: Spares = const { Spares::new(READ_SIZE / 2, 16) };
}

/// Drop the calling thread's spares; called when the thread goes idle, so the allocator can
/// hand their memory back (a few spares spread over many pages would keep them all).
pub fn let_go() {
    for spares in [&CLIENT_READS, &UPSTREAM_READS] {
        let _ = spares.try_with(|spares| {
            if let Ok(mut kept) = spares.kept.try_borrow_mut() {
                *kept = Vec::new();
            }
        });
    }
}

/// One thread's spare buffers of one kind: at most `max`, each with at least `min_room`
/// bytes of room.
pub(crate) struct Spares {
    kept: RefCell<Vec<BytesMut>>,
    min_room: usize,
    max: usize,
}

impl Spares {
    pub(crate) const fn new(min_room: usize, max: usize) -> Self {
        Spares {
            kept: RefCell::new(Vec::new()),
            min_room,
            max,
        }
    }
}

/// Keep `buf` for a later read, if it is empty and has room; otherwise it is dropped.
pub(crate) fn put(spares: &'static LocalKey<Spares>, buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    let _ = spares.try_with(|spares| {
        if buf.capacity() >= spares.min_room
            && let Ok(mut kept) = spares.kept.try_borrow_mut()
            && kept.len() < spares.max
        {
            kept.push(buf);
        }
    });
}

/// A kept buffer, if the thread has one.
pub(crate) fn take(spares: &'static LocalKey<Spares>) -> Option<BytesMut> {
    spares
        .try_with(|spares| spares.kept.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// Read what `io` has into the room left in `buf` (which the caller made sure there is).
pub(crate) fn poll_read_into<R: AsyncRead + ?Sized>(
    io: Pin<&mut R>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(io, cx, buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST: Spares = const { Spares::new(512, 3) };
    }

    #[test]
    fn keeps_empty_buffers_with_room_up_to_the_bound() {
        let mut full = BytesMut::with_capacity(1024);
        full.extend_from_slice(b"x");
        put(&TEST, full);
        assert!(take(&TEST).is_none(), "a buffer holding bytes is not kept");
        put(&TEST, BytesMut::with_capacity(64));
        assert!(take(&TEST).is_none(), "too small to be worth keeping");
        for _ in 0..5 {
            put(&TEST, BytesMut::with_capacity(1024));
        }
        assert_eq!(std::iter::from_fn(|| take(&TEST)).count(), 3, "bounded");
    }

    #[test]
    fn letting_go_empties_the_threads_spares() {
        put(&CLIENT_READS, BytesMut::with_capacity(1024));
        put(&UPSTREAM_READS, BytesMut::with_capacity(8192));
        let_go();
        assert!(take(&CLIENT_READS).is_none());
        assert!(take(&UPSTREAM_READS).is_none());
    }
}
