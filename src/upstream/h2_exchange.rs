//! One request over an HTTP/2 upstream stream: the head, the body pumped with the stream's
//! flow control (the client is read no faster than the upstream takes it), and the response
//! body streamed back with its trailers. Used by the proxy's HTTP/2 tries; the streams come
//! from `upstream::pool` (`checkout_h2`).
//!
//! A stream the upstream never processed (past a GOAWAY's last stream, or REFUSED_STREAM)
//! gives its body back, rewound, so it can be sent again on another connection; a streamed
//! body can be given back while what was sent of it fits in the replay limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::http1::body::{StreamedBody, UpstreamBody};
use crate::upstream::pool::H2Stream;
use crate::upstream::response_body::ResponseIdle;

/// How a stream failed before its response head.
#[derive(Debug, thiserror::Error)]
pub enum H2Failure {
    /// The connection took no new stream (closing, GOAWAY already seen): nothing was sent.
    #[error("the HTTP/2 connection took no new stream: {0}")]
    NotSent(#[source] h2::Error),
    /// The upstream did not process the stream (GOAWAY past it, or REFUSED_STREAM).
    #[error("the upstream refused the HTTP/2 stream unprocessed: {0}")]
    Refused(#[source] h2::Error),
    /// The stream or connection broke after the upstream may have seen the request.
    #[error("the HTTP/2 stream failed: {0}")]
    Reset(#[source] h2::Error),
}

/// A response head, with the stream its body comes on.
pub struct H2Answer {
    pub response: Response<RecvStream>,
    pub stream: H2Stream,
    pub pump: Option<JoinHandle<PumpEnd>>,
}

/// Send `request` with `body` on `stream` and wait for the response head. On failure the
/// body comes back when it can be sent again (always for a stream that was never sent).
pub async fn exchange(
    stream: H2Stream,
    request: http::Request<()>,
    body: UpstreamBody,
    replay_limit: u64,
) -> Result<H2Answer, (H2Failure, Option<UpstreamBody>)> {
    let mut send = match stream.sender().ready().await {
        Ok(send) => send,
        Err(e) => {
            stream.close_connection();
            return Err((H2Failure::NotSent(e), Some(body)));
        }
    };
    let empty = matches!(&body, Either::Left(bytes) if bytes.is_empty());
    let (response, mut sending) = match send.send_request(request, empty) {
        Ok(pair) => pair,
        Err(e) => {
            stream.close_connection();
            return Err((H2Failure::NotSent(e), Some(body)));
        }
    };
    let (kept, pump) = match body {
        Either::Left(bytes) => {
            if !bytes.is_empty() {
                // Queued whole: h2 sends it as the peer's window allows.
                let _ = sending.send_data(bytes.clone(), true);
            }
            (Some(bytes), None)
        }
        Either::Right(streamed) => (
            None,
            Some(tokio::spawn(pump(streamed, sending, replay_limit))),
        ),
    };
    match response.await {
        Ok(response) => Ok(H2Answer {
            response,
            stream,
            pump,
        }),
        Err(e) => {
            let refused =
                e.reason() == Some(Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
            if e.is_go_away() || e.is_io() {
                stream.close_connection();
            }
            // The body comes back whole when it was held whole, or when the pump kept all it
            // sent; whether it goes again is the retry policy's call (or, refused, this try's).
            let again = match (kept, pump) {
                (Some(bytes), _) => Some(Either::Left(bytes)),
                (None, Some(pump)) => {
                    // The stream is over: the pump stops at once.
                    match tokio::time::timeout(Duration::from_secs(1), pump).await {
                        Ok(Ok(PumpEnd::Complete(Some(bytes)))) => Some(Either::Left(bytes)),
                        Ok(Ok(PumpEnd::Stopped(Some(body)))) => Some(Either::Right(body)),
                        _ => None,
                    }
                }
                (None, None) => None,
            };
            let failure = if refused {
                H2Failure::Refused(e)
            } else {
                H2Failure::Reset(e)
            };
            Err((failure, again))
        }
    }
}

/// How pumping a request body ended.
pub enum PumpEnd {
    /// Sent to the end; the whole body when it fit in the replay limit.
    Complete(Option<Bytes>),
    /// The stream was reset or closed first; the body rewound when what was sent fit.
    Stopped(Option<StreamedBody>),
    /// The client's body failed; the upstream stream was cancelled.
    Failed,
}

/// Pump a streamed body into `send`, waiting for the stream's window before reading more from
/// the client. Keeps what it sent while that fits in `replay_limit`, so that a stream that
/// fails before its answer can give the body back.
async fn pump(mut body: StreamedBody, mut send: SendStream<Bytes>, replay_limit: u64) -> PumpEnd {
    let mut sent = Some(BytesMut::new());
    loop {
        let next = std::future::poll_fn(|cx| {
            if send.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            Pin::new(&mut body).poll_frame(cx).map(Some)
        })
        .await;
        let frame = match next {
            // Reset by the upstream (or the connection went away).
            None => return rewound(body, sent),
            Some(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return PumpEnd::Complete(sent.map(BytesMut::freeze));
            }
            Some(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body failed: cancelling the upstream stream");
                send.send_reset(Reason::CANCEL);
                return PumpEnd::Failed;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                    // Trailers cannot be replayed from bytes.
                    return PumpEnd::Complete(None);
                }
                continue;
            }
        };
        if let Some(kept) = sent.as_mut() {
            if (kept.len() + data.len()) as u64 <= replay_limit {
                kept.extend_from_slice(&data);
            } else {
                sent = None;
            }
        }
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let piece = data.split_to(n.min(data.len()));
                    if send.send_data(piece, false).is_err() {
                        return rewound(body, sent);
                    }
                }
                _ => return rewound(body, sent),
            }
        }
    }
}

fn rewound(mut body: StreamedBody, sent: Option<BytesMut>) -> PumpEnd {
    PumpEnd::Stopped(sent.map(|sent| {
        body.unread(sent.freeze());
        body
    }))
}

/// Where a response body is.
enum State {
    Data,
    Trailers,
    Done,
}

/// A response body read from an upstream HTTP/2 stream, trailers included. Holds the
/// request's guards and the stream's claim on its connection until it ends; dropped early, it
/// cancels the upstream stream (RST_STREAM) and stops pumping the request body.
pub struct H2ResponseBody<G> {
    recv: RecvStream,
    state: State,
    stream: Option<H2Stream>,
    pump: Option<JoinHandle<PumpEnd>>,
    guards: Option<G>,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A gRPC call's deadline: past it the body ends with DEADLINE_EXCEEDED trailers.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// An error met while gathering chunks, for the next poll.
    failed: Option<h2::Error>,
}

impl<G> H2ResponseBody<G> {
    pub fn new(
        recv: RecvStream,
        stream: H2Stream,
        pump: Option<JoinHandle<PumpEnd>>,
        guards: G,
        idle_timeout: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Self {
        let mut body = Self {
            state: if recv.is_end_stream() {
                State::Done
            } else {
                State::Data
            },
            recv,
            stream: Some(stream),
            pump,
            guards: Some(guards),
            idle_timeout,
            idle: None,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            failed: None,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        self.state = State::Done;
        self.stream = None;
        self.guards = None;
        self.idle = None;
        self.deadline = None;
    }

    fn abandon(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        self.finish();
    }

    /// `first` and the small chunks already in after it, as one frame of at most
    /// [`GATHER_UP_TO`] bytes: gRPC servers send each small message as a DATA frame of its
    /// own, and passing each on alone costs the client a frame apiece. Every chunk taken is
    /// released to the upstream's window (handed on: it may send as much again).
    fn gather(&mut self, first: Bytes, cx: &mut Context<'_>) -> Bytes {
        let _ = self.recv.flow_control().release_capacity(first.len());
        if first.len() >= GATHER_UP_TO {
            return first;
        }
        let mut gathered: Option<BytesMut> = None;
        while gathered.as_ref().map_or(first.len(), BytesMut::len) < GATHER_UP_TO {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(more))) => {
                    let _ = self.recv.flow_control().release_capacity(more.len());
                    gathered
                        .get_or_insert_with(|| {
                            let mut b = BytesMut::with_capacity(GATHER_UP_TO);
                            b.extend_from_slice(&first);
                            b
                        })
                        .extend_from_slice(&more);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = Some(e);
                    break;
                }
                Poll::Ready(None) => {
                    self.state = State::Trailers;
                    break;
                }
                Poll::Pending => break,
            }
        }
        gathered.map_or(first, BytesMut::freeze)
    }
}

/// Small DATA chunks already received are passed on together up to this size.
const GATHER_UP_TO: usize = 16 * 1024;

impl<G> Drop for H2ResponseBody<G> {
    fn drop(&mut self) {
        // Ended early (the client went away): stop sending the request body too. Dropping
        // the stream's last handle resets it upstream.
        if !matches!(self.state, State::Done)
            && let Some(pump) = self.pump.take()
        {
            pump.abort();
        }
    }
}

/// DEADLINE_EXCEEDED as trailers, for a gRPC call whose deadline passed mid-stream.
pub fn deadline_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("4"));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("meridian: deadline exceeded"),
    );
    trailers
}

impl<G: Unpin> Body for H2ResponseBody<G> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.abandon();
            return Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers()))));
        }
        if let Some(e) = this.failed.take() {
            this.abandon();
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        loop {
            let polled = match this.state {
                State::Done => return Poll::Ready(None),
                State::Data => match this.recv.poll_data(cx) {
                    Poll::Ready(Some(Ok(data))) => {
                        let data = this.gather(data, cx);
                        if let Some(idle) = this.idle.as_mut() {
                            idle.as_mut()
                                .reset(crate::deadline::from_now(this.idle_timeout));
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e)),
                    Poll::Ready(None) => {
                        this.state = State::Trailers;
                        continue;
                    }
                    Poll::Pending => Poll::Pending,
                },
                State::Trailers => match this.recv.poll_trailers(cx) {
                    Poll::Ready(Ok(trailers)) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                },
            };
            return match polled {
                Poll::Ready(Err(e)) => {
                    this.abandon();
                    Poll::Ready(Some(Err(Box::new(e))))
                }
                Poll::Ready(Ok(())) | Poll::Pending => {
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
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
