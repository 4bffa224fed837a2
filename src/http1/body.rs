//! Request bodies on their way upstream: buffered when small enough to replay, otherwise
//! streamed with the route's size limit enforced as bytes pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body: buffered (replayable, handed over as it is, without a `Full` wrapper to
/// collect again) or streamed from the client.
pub type UpstreamBody = http_body_util::Either<bytes::Bytes, StreamedBody>;

/// Raised when a streamed body passes its limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body passed the route's limit of {0} bytes")]
pub struct TooLarge(pub u64);

/// A client body streamed upstream: an optional prefix already read, then the rest, cut off
/// with an error once more than `limit` bytes went by (`exceeded` tells the proxy why).
pub struct StreamedBody {
    prefix: Option<Bytes>,
    rest: Incoming,
    seen: u64,
    limit: u64,
    pub exceeded: Arc<AtomicBool>,
    idle_timeout: Duration,
    /// Armed only while the client keeps us waiting.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The client sent nothing for longer than the route's body idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no body bytes for {0:?}")]
pub struct BodyIdle(pub Duration);

impl StreamedBody {
    pub fn new(prefix: Option<Bytes>, rest: Incoming, limit: u64, idle_timeout: Duration) -> Self {
        let seen = prefix.as_ref().map(|p| p.len() as u64).unwrap_or(0);
        Self {
            prefix,
            rest,
            seen,
            limit,
            exceeded: Arc::new(AtomicBool::new(false)),
            idle_timeout,
            idle: None,
        }
    }

    /// Put bytes already taken from the body back in front of it (they were sent on a stream
    /// the upstream refused unprocessed, and go again on the next). They were counted
    /// against the limit when first read; a prefix is not counted again.
    pub fn unread(&mut self, sent: Bytes) {
        if sent.is_empty() {
            return;
        }
        self.prefix = Some(match self.prefix.take() {
            None => sent,
            Some(rest) => {
                let mut joined = bytes::BytesMut::with_capacity(sent.len() + rest.len());
                joined.extend_from_slice(&sent);
                joined.extend_from_slice(&rest);
                joined.freeze()
            }
        });
    }
}

impl Body for StreamedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limit {
                        self.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(Box::new(TooLarge(self.limit)))));
                    }
                }
                let timeout = self.idle_timeout;
                if let Some(idle) = self.idle.as_mut() {
                    idle.as_mut().reset(crate::deadline::from_now(timeout));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = self.idle_timeout;
                let idle = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyIdle(timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        if let Some(p) = &self.prefix {
            let n = p.len() as u64;
            hint.set_lower(hint.lower() + n);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + n);
            }
        }
        hint
    }
}
