//! The body of an upstream's response as the client is sent it: streamed from the pooled
//! connection, which goes back to its pool (`upstream::pool`) when the body has been read to
//! the end. Used by `proxy` for every forwarded answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::http1::client::{self as h1, Framing};
use crate::upstream::pool::PooledConn;

/// A response body streamed from the upstream. Returns its connection to the pool when read
/// to the end; a body dropped early closes the connection. Holds the request's guards until
/// then, so `max_requests` and least-request counts cover the whole exchange.
pub struct UpstreamResponseBody<G> {
    framing: Framing,
    /// `None` once the body has ended (the connection went back or was closed).
    conn: Option<PooledConn>,
    guards: Option<G>,
    idle_timeout: Duration,
    /// Armed only while the upstream keeps us waiting, so a body read in one go never
    /// touches the timer wheel.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The upstream sent nothing for longer than the route's response idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of a response")]
pub struct ResponseIdle(pub Duration);

impl<G> UpstreamResponseBody<G> {
    pub fn new(framing: Framing, conn: PooledConn, guards: G, idle_timeout: Duration) -> Self {
        let mut body = Self {
            framing,
            conn: Some(conn),
            guards: Some(guards),
            idle_timeout,
            idle: None,
        };
        if h1::is_done(&body.framing) {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
        self.guards = None;
        self.idle = None;
    }

    fn abandon(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.discard();
        }
        self.guards = None;
        self.idle = None;
    }
}

impl<G: Unpin> Body for UpstreamResponseBody<G> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match conn.conn.poll_body(&mut this.framing, cx) {
            Poll::Ready(Ok(None)) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Ok(Some(frame))) => {
                if h1::is_done(&this.framing) {
                    this.finish();
                } else if let Some(idle) = this.idle.as_mut() {
                    idle.as_mut()
                        .reset(crate::deadline::from_now(this.idle_timeout));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Err(e)) => {
                this.abandon();
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => {
                let timeout = this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.abandon();
                    return Poll::Ready(Some(Err(Box::new(ResponseIdle(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || h1::is_done(&self.framing)
    }

    fn size_hint(&self) -> SizeHint {
        if self.conn.is_none() {
            return SizeHint::with_exact(0);
        }
        h1::size_hint(&self.framing)
    }
}
