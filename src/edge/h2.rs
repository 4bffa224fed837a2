//! HTTP/2 client connections: hyper's HTTP/2 server, with the two deadlines it lacks.
//!
//! - A stream whose answer waits on the client's flow-control window for the listener's
//!   `send_timeout` is reset, and its upstream exchange and circuit-breaker permit are let
//!   go with it. The connection's socket may stay writable all along (a client that opens
//!   streams with a zero window and answers pings), so the connection-wide `send_timeout`
//!   never sees it, and hyper stops polling the answer's body while it waits for window, so
//!   nothing in the body could notice either: each stream's task runs under a deadline here.
//! - A connection with no stream open for the listener's `idle_timeout` is sent GOAWAY and
//!   closed, as an idle HTTP/1.1 connection is closed between requests.
//!
//! `edge::listen` hands over TLS connections that chose h2 by ALPN, and connections that
//! Meridian's own HTTP/1.1 loop (`http1::server`) hands off because they open with the HTTP/2
//! preface. Requests go to the same service as HTTP/1.1 ones; it marks (through
//! [`UpstreamBound`]) when a stream waits on the upstream rather than the client.

use std::cell::Cell;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::TokioTimer;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::edge::listen::{
    H2_KEEP_ALIVE_INTERVAL, H2_KEEP_ALIVE_TIMEOUT, MAX_CONCURRENT_STREAMS, MAX_HEADER_BYTES,
};

/// What an HTTP/2 connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct H2Limits {
    /// A stream's answer waiting this long on the client's window resets the stream.
    pub send_timeout: Duration,
    /// No stream open for this long: GOAWAY, then close.
    pub idle_timeout: Duration,
}

thread_local! {
    /// Set while a stream's task is polled when what it waits on is the upstream (the answer's
    /// head or its next bytes) or the client's request body: waits with deadlines of their own
    /// (the route's timeouts), not the client's flow-control window.
    static UPSTREAM_BOUND: Cell<bool> = const { Cell::new(false) };
}

/// A hyper-served request's future or answer body: a `Pending` from it means the stream
/// waits on the upstream, not on the client's window (see [`UPSTREAM_BOUND`]).
pub(crate) struct UpstreamBound<T>(pub T);

impl<F: Future + Unpin> Future for UpstreamBound<F> {
    type Output = F::Output;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let polled = Pin::new(&mut self.0).poll(cx);
        if polled.is_pending() {
            UPSTREAM_BOUND.set(true);
        }
        polled
    }
}

impl<B: Body + Unpin> Body for UpstreamBound<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.0).poll_frame(cx);
        if polled.is_pending() {
            UPSTREAM_BOUND.set(true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Serve one HTTP/2 connection until it ends, idles out, or shutdown asks it to finish.
pub(crate) async fn serve<I, S, B>(
    io: I,
    service: S,
    limits: H2Limits,
    shutdown: CancellationToken,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let streams = Arc::new(OpenStreams::new());
    let executor = StreamExecutor {
        send_timeout: limits.send_timeout,
        streams: streams.clone(),
    };
    let conn = builder(executor).serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut stopping = pin!(shutdown.cancelled());
    let mut idle = pin!(tokio::time::sleep(limits.idle_timeout));
    // After GOAWAY the connection ends once its streams are done; one that is still there a
    // whole idle period later, with none open, is dropped.
    let mut said_goaway = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = &mut stopping, if !said_goaway => {
                conn.as_mut().graceful_shutdown();
                said_goaway = true;
            }
            () = &mut idle => {
                let now = Instant::now();
                match streams.idle_since() {
                    Some(since) if now.duration_since(since) >= limits.idle_timeout => {
                        if said_goaway {
                            tracing::debug!(client = %peer, "HTTP/2 connection still open after GOAWAY; closed");
                            return;
                        }
                        tracing::debug!(client = %peer, "HTTP/2 connection idle; GOAWAY");
                        conn.as_mut().graceful_shutdown();
                        said_goaway = true;
                        idle.as_mut().reset(now + limits.idle_timeout);
                    }
                    Some(since) => idle.as_mut().reset(since + limits.idle_timeout),
                    None => idle.as_mut().reset(now + limits.idle_timeout),
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
    }
}

/// The HTTP/2 server settings of a proxy listener, for one connection (the executor carries
/// that connection's stream count).
fn builder(executor: StreamExecutor) -> http2::Builder<StreamExecutor> {
    let mut builder = http2::Builder::new(executor);
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // Ping idle HTTP/2 clients; one that does not answer is closed.
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// Streams of one connection whose tasks are running, and when the last one ended.
struct OpenStreams {
    open: AtomicUsize,
    /// When the connection started: `last_end` counts from here.
    born: Instant,
    /// Microseconds from `born` to the end of the last stream, rounded up (0: none has ended).
    last_end: AtomicU64,
}

impl OpenStreams {
    fn new() -> Self {
        Self {
            open: AtomicUsize::new(0),
            born: Instant::now(),
            last_end: AtomicU64::new(0),
        }
    }

    /// Since when no stream has been open, or `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.born + Duration::from_micros(self.last_end.load(Ordering::Acquire)))
    }
}

/// Counts one stream's task as open while alive.
struct OpenStream(Arc<OpenStreams>);

impl OpenStream {
    fn new(streams: Arc<OpenStreams>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let ended = self.0.born.elapsed().as_nanos().div_ceil(1000) as u64;
        self.0.last_end.fetch_max(ended, Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs hyper's per-stream tasks of one connection, each under the send deadline and counted
/// in the connection's open streams. (hyper would also run a CONNECT tunnel's task through it;
/// Meridian refuses CONNECT.)
#[derive(Clone)]
struct StreamExecutor {
    send_timeout: Duration,
    streams: Arc<OpenStreams>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let open = OpenStream::new(self.streams.clone());
        tokio::spawn(under_send_deadline(stream, self.send_timeout, open));
    }
}

/// Run a stream's task until it ends, or until its answer has waited `send_timeout` on the
/// client: then the task is dropped, which resets the stream (h2 sends RST_STREAM for a
/// stream nobody holds any more) and drops the answer's body with the upstream exchange.
///
/// Each time the task stops with nothing marked upstream-bound, it waits on the client. Any
/// wake that is not this deadline's own is progress (window granted, the stream reset) and
/// moves the deadline; the timer itself is reset only when it fires early.
async fn under_send_deadline<F: Future<Output = ()>>(
    stream: F,
    send_timeout: Duration,
    _open: OpenStream,
) {
    let mut stream = pin!(stream);
    // When the answer's wait on the client started, while it waits on the client.
    let mut waiting_since: Option<Instant> = None;
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        UPSTREAM_BOUND.set(false);
        if stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if UPSTREAM_BOUND.replace(false) {
            waiting_since = None;
            return Poll::Pending;
        }
        let fired = timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        let now = Instant::now();
        let since = match waiting_since {
            // Woken by the timer: no progress.
            Some(since) if fired => since,
            // Woken by something else while waiting: the client moved.
            _ => now,
        };
        waiting_since = Some(since);
        let deadline = since + send_timeout;
        if now >= deadline {
            tracing::debug!(
                ?send_timeout,
                "HTTP/2 answer waited on the client's flow-control window; stream reset"
            );
            return Poll::Ready(());
        }
        match &mut timer {
            Some(timer) if fired => {
                timer.as_mut().reset(deadline);
                let _ = timer.as_mut().poll(cx);
            }
            Some(_) => {}
            None => {
                let mut armed = Box::pin(tokio::time::sleep_until(deadline));
                let _ = armed.as_mut().poll(cx);
                timer = Some(armed);
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for hyper's stream task: waits on `gate` (the client's window), marked
    /// upstream-bound while `upstream` says so.
    fn stream_task(
        mut gate: tokio::sync::mpsc::Receiver<()>,
        upstream: Arc<std::sync::atomic::AtomicBool>,
        done: Arc<std::sync::atomic::AtomicBool>,
    ) -> impl Future<Output = ()> {
        std::future::poll_fn(move |cx| {
            match gate.poll_recv(cx) {
                Poll::Ready(None) => {
                    done.store(true, Ordering::SeqCst);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(())) => cx.waker().wake_by_ref(),
                Poll::Pending => {}
            }
            if upstream.load(Ordering::SeqCst) {
                UPSTREAM_BOUND.set(true);
            }
            Poll::Pending
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_on_the_client_is_dropped_after_send_timeout_and_progress_resets_it() {
        let streams = Arc::new(OpenStreams::new());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let upstream = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(under_send_deadline(
            stream_task(rx, upstream.clone(), done.clone()),
            Duration::from_secs(60),
            OpenStream::new(streams.clone()),
        ));
        assert!(streams.idle_since().is_none(), "the stream counts as open");
        let started = Instant::now();
        // Progress after 50 s: the 60 s count again from there.
        tokio::time::sleep(Duration::from_secs(50)).await;
        tx.send(()).await.unwrap();
        // Waiting on the upstream for 100 s does not count.
        tokio::time::sleep(Duration::from_secs(1)).await;
        upstream.store(true, Ordering::SeqCst);
        tx.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert!(
            !task.is_finished(),
            "a wait on the upstream is not the client's"
        );
        // Back to waiting on the client: 60 s from this wake, then dropped.
        upstream.store(false, Ordering::SeqCst);
        let waiting = Instant::now();
        tx.send(()).await.unwrap();
        task.await.unwrap();
        assert_eq!(waiting.elapsed(), Duration::from_secs(60));
        assert!(started.elapsed() > Duration::from_secs(200));
        assert!(!done.load(Ordering::SeqCst), "dropped, not finished");
        let idle = streams.idle_since().expect("no stream open any more");
        assert!(idle >= waiting, "idle since the stream ended");
    }
}
