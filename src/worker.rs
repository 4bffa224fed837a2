//! Worker threads: one single-threaded tokio runtime per core, each on an OS thread of its
//! own, and the index of the worker the calling thread is.
//!
//! `control` starts the workers ([`Workers::start`]) and hands each of them its own listener
//! sockets; `edge` spawns accept loops on them ([`Workers::handle`]) and labels accepted
//! connections with the index; `upstream` keeps one idle-connection set per worker in every
//! cluster pool ([`index`], [`count`]), so a request reuses a connection its own thread
//! opened. A leaf: it uses nothing of Meridian's. The park hook (`alloc`'s release of freed
//! memory) is passed in by the caller, as `alloc` itself is.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Most workers `--worker-threads` accepts: far past any core count, low enough that a typo
/// (an extra zero or two) fails the start instead of starting thousands of threads.
pub const MAX_WORKERS: usize = 1024;

thread_local! {
    /// Set once by a worker thread when it starts; every other thread is worker 0.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The largest number of workers started in this process, at least 1.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The calling thread's worker index: `0..count()` on a worker thread, 0 elsewhere (the
/// control thread, and the single runtime of an in-process server).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers this process runs (the most it has started at once), at least 1. Per-
/// worker state is sized by it; an index past it (which cannot happen) wraps, never panics.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed).max(1)
}

/// The runtimes listeners are served on: the threads [`Workers::start`] started, or only the
/// caller's own runtime ([`Workers::current`]).
pub struct Workers {
    handles: Vec<Handle>,
    /// Cancelled on drop: each worker thread then drops its runtime (and whatever tasks are
    /// left on it) and ends.
    stop: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.handles.len())
            .finish()
    }
}

/// The number of workers `--worker-threads` asks for: `None` is one per core, 0 is 1 (what
/// 0 meant before, one single-threaded runtime), past [`MAX_WORKERS`] is refused.
pub fn resolve_count(asked: Option<usize>) -> Result<usize, TooManyWorkers> {
    match asked {
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        Some(n) if n > MAX_WORKERS => Err(TooManyWorkers(n)),
        Some(n) => Ok(n.max(1)),
    }
}

/// `--worker-threads` asked for more than [`MAX_WORKERS`].
#[derive(Debug, thiserror::Error)]
#[error("--worker-threads {0} is more than the {MAX_WORKERS} allowed")]
pub struct TooManyWorkers(pub usize);

impl Workers {
    /// Only the calling runtime, as worker 0: a server started inside a test or the demo.
    /// Must run inside a runtime.
    pub fn current() -> Self {
        Self {
            handles: vec![Handle::current()],
            stop: CancellationToken::new(),
            threads: Vec::new(),
        }
    }

    /// Start `n` (at least 1) worker threads, each running a current_thread runtime with
    /// every driver enabled; `park` runs whenever one has nothing to do. While `park` is
    /// given, each runtime is also woken twice a second, so `park` runs after a burst ends.
    pub fn start(n: usize, park: Option<fn()>) -> std::io::Result<Self> {
        let n = n.clamp(1, MAX_WORKERS);
        COUNT.fetch_max(n, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for index in 0..n {
            let (ready, handle) = std::sync::mpsc::sync_channel(1);
            let token = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("meridian-worker-{index}"))
                .spawn(move || run_worker(index, park, token, ready))?;
            threads.push(thread);
            match handle.recv() {
                Ok(Ok(handle)) => handles.push(handle),
                Ok(Err(e)) => {
                    stop.cancel();
                    return Err(e);
                }
                Err(_) => {
                    stop.cancel();
                    return Err(std::io::Error::other(
                        "a worker thread ended while starting",
                    ));
                }
            }
        }
        Ok(Self {
            handles,
            stop,
            threads,
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is always at least one.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Worker `index`'s runtime (wrapping, so any index names one).
    pub fn handle(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }

    /// Stop every worker thread and wait for them to end: what is still running on them is
    /// dropped. For after a drain.
    pub fn stop(mut self) {
        self.stop.cancel();
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A worker thread: say which worker it is, build its runtime, hand its handle back, and run
/// what is spawned on it until stopped.
fn run_worker(
    index: usize,
    park: Option<fn()>,
    stop: CancellationToken,
    ready: std::sync::mpsc::SyncSender<std::io::Result<Handle>>,
) {
    INDEX.with(|i| i.set(index));
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if let Some(park) = park {
        builder.on_thread_park(park);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(runtime.handle().clone())).is_err() {
        return;
    }
    runtime.block_on(async move {
        if park.is_some() {
            tokio::spawn(async {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                }
            });
        }
        stop.cancelled().await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_asked_for_is_range_checked() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (asked, expected) in [
            (None, Some(cores)),
            (Some(0), Some(1)),
            (Some(1), Some(1)),
            (Some(2), Some(2)),
            (Some(MAX_WORKERS), Some(MAX_WORKERS)),
            (Some(MAX_WORKERS + 1), None),
            (Some(usize::MAX), None),
        ] {
            assert_eq!(resolve_count(asked).ok(), expected, "{asked:?}");
        }
    }

    #[test]
    fn each_worker_knows_its_index() {
        let workers = Workers::start(3, None).unwrap();
        assert_eq!(workers.len(), 3);
        assert!(count() >= 3);
        for i in 0..3 {
            let (tx, rx) = std::sync::mpsc::channel();
            workers
                .handle(i)
                .spawn(async move { tx.send(index()).unwrap() });
            assert_eq!(rx.recv().unwrap(), i);
        }
        // Wraps instead of panicking.
        let (tx, rx) = std::sync::mpsc::channel();
        workers
            .handle(4)
            .spawn(async move { tx.send(index()).unwrap() });
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(index(), 0, "the test thread is no worker");
        workers.stop();
    }
}
