//! The global allocator: mimalloc, asked the way its fast paths expect.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`. For blocks over
//! 1 KiB whose size is not a power of two, mimalloc 3 cannot tell that the alignment Rust
//! asks for (8 for nearly everything) is already given, and over-allocates to align by hand,
//! a slow path taken for each boxed request handler. Every mimalloc block is at least
//! word-aligned, so those requests go to plain `mi_malloc` and only larger alignments take
//! the aligned entry points.
//!
//! It also decides when freed memory goes back to the system: while a thread keeps serving
//! requests its freed pages stay with the process (handed back, they fault in again a moment
//! later); once it has served none for half a second they are returned at once. Transparent
//! huge pages are off for the process: khugepaged would fill the heap's sparse 2 MiB regions
//! while the process sits idle, growing its memory for nothing, and a huge-page fault can stall
//! a request on compaction.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::time::{Duration, Instant};

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has: block sizes are whole words and pages start at
/// least 16-byte aligned.
const WORD_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator (`#[global_allocator]` in the binary).
pub struct Mimalloc;

// SAFETY: every method hands the request to mimalloc, which returns blocks of at least the
// requested size, aligned to `layout.align()`: the plain entry points give word alignment,
// and anything larger goes through the aligned ones.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C allocation calls; a null result is passed on as failure.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            if layout.align() <= WORD_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (its position in mimalloc 3's `mi_option_t`; a test
/// checks it against the option's default).
const PURGE_DELAY_OPTION: mi::mi_option_t = 15;

/// How long pages freed under load stay with the process before mimalloc hands them back on
/// its own. mimalloc's default (one second) is short enough that a steadily loaded thread keeps
/// giving pages back and faulting them in again. An idle thread does not wait for this: see
/// `return_freed_memory`.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// How often a parking thread looks at whether it has been idle.
const IDLE_CHECK: Duration = Duration::from_millis(500);

thread_local! {
    /// Requests started on this thread (wrapping): a thread that started none since its last
    /// look is idle.
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
    /// When this thread last looked, and its request count then.
    static LAST_LOOK: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// Set mimalloc's purge delay and turn transparent huge pages off; call once at start,
/// before the runtime's threads exist.
pub fn configure() {
    // SAFETY: sets one integer option by index; no pointers are passed.
    unsafe { mi::mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY_MS) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    // On failure (a kernel without it) huge pages stay as the system has them.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Count a request on the calling thread.
#[inline]
pub fn note_request() {
    let _ = REQUESTS.try_with(|n| n.set(n.get().wrapping_add(1)));
}

/// Hand memory back to the system when the calling thread has started no request since it
/// last looked (at most every `IDLE_CHECK`): its spare read buffers are dropped (a few of them
/// spread over many pages would keep those) and mimalloc frees and purges what is unused at
/// once. Called whenever a runtime thread parks; a thread that keeps serving keeps its pages.
pub fn return_freed_memory(release_thread_caches: fn()) {
    let now = Instant::now();
    let Ok(seen) = REQUESTS.try_with(Cell::get) else {
        return;
    };
    let last = LAST_LOOK.try_with(Cell::get).ok().flatten();
    let look = look(last, now, seen);
    if look != Look::TooSoon {
        let _ = LAST_LOOK.try_with(|l| l.set(Some((now, seen))));
    }
    if look == Look::Idle {
        release_thread_caches();
        // SAFETY: mi_collect only walks and trims the calling thread's heap and the arenas'
        // free pages; no pointers are passed.
        unsafe { mi::mi_collect(true) };
    }
}

/// What a parking thread finds, from its last look and its request count now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Looked less than `IDLE_CHECK` ago.
    TooSoon,
    /// Started requests since the last look: keep the memory.
    Busy,
    /// None since the last look (or this is the first): give memory back.
    Idle,
}

fn look(last: Option<(Instant, u64)>, now: Instant, requests: u64) -> Look {
    match last {
        Some((at, _)) if now.duration_since(at) < IDLE_CHECK => Look::TooSoon,
        Some((_, before)) if before != requests => Look::Busy,
        _ => Look::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_goes_back_only_after_a_check_interval_without_requests() {
        let t = Instant::now();
        assert_eq!(look(None, t, 0), Look::Idle, "the first look gives back");
        let soon = t + IDLE_CHECK / 5;
        let later = t + IDLE_CHECK + Duration::from_millis(1);
        assert_eq!(look(Some((t, 7)), soon, 7), Look::TooSoon);
        assert_eq!(look(Some((t, 7)), soon, 9), Look::TooSoon);
        assert_eq!(look(Some((t, 7)), later, 9), Look::Busy);
        assert_eq!(look(Some((t, 9)), later, 9), Look::Idle);
        assert_eq!(
            look(Some((t, u64::MAX)), later, 0),
            Look::Busy,
            "the count wraps"
        );
    }

    #[test]
    fn a_thread_that_serves_keeps_its_spares_and_an_idle_one_lets_them_go() {
        // A fresh thread: its first look is idle and gives back.
        std::thread::spawn(|| {
            return_freed_memory(crate::http1::buffers::let_go);
            let past = Instant::now() - IDLE_CHECK * 2;
            // Requests since the last look: the spares stay.
            LAST_LOOK.set(Some((past, REQUESTS.get())));
            crate::http1::buffers::put(
                &crate::http1::buffers::CLIENT_READS,
                bytes::BytesMut::with_capacity(4096),
            );
            note_request();
            return_freed_memory(crate::http1::buffers::let_go);
            assert!(crate::http1::buffers::take(&crate::http1::buffers::CLIENT_READS).is_some());
            // None since: they go.
            LAST_LOOK.set(Some((past, REQUESTS.get())));
            crate::http1::buffers::put(
                &crate::http1::buffers::CLIENT_READS,
                bytes::BytesMut::with_capacity(4096),
            );
            return_freed_memory(crate::http1::buffers::let_go);
            assert!(crate::http1::buffers::take(&crate::http1::buffers::CLIENT_READS).is_none());
        })
        .join()
        .expect("the test thread panicked");
    }

    /// The option index is mimalloc 3's purge delay: its default is 1,000 ms (nothing in
    /// the tests sets it).
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // SAFETY: reads one integer option by index.
        let delay = unsafe { mi::mi_option_get(PURGE_DELAY_OPTION) };
        assert!(
            delay == 1000 || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some(),
            "option {PURGE_DELAY_OPTION} is {delay}, not the purge delay's default"
        );
    }

    /// Every size class from tiny to past mimalloc's small and medium limits, at every
    /// alignment up to a page: the block is aligned, writable and survives growing.
    #[test]
    fn blocks_are_aligned_and_usable() {
        let sizes = [
            1, 3, 8, 24, 40, 1000, 1025, 1440, 5744, 8192, 12_345, 70_000, 600_000,
        ];
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in sizes {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: non-zero size; each block is freed with the layout it was made with.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null(), "size {size} align {align}");
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, size);
                    let grown = Mimalloc.realloc(p, layout, size * 3);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                    assert!(
                        std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|b| *b == 0xa5)
                    );
                    Mimalloc.dealloc(grown, Layout::from_size_align_unchecked(size * 3, align));

                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    Mimalloc.dealloc(z, layout);
                }
            }
        }
    }
}
