//! The request body as the attempt loop sees it: kept whole while it may still be replayed on
//! another try, or streamed once it outgrows the replay buffer.

use super::*;

/// A request body that can be sent more than once when small enough.
pub(super) enum ReplayBody {
    Buffered(Bytes),
    /// Read whole on the way in (Meridian's own HTTP/1.1 loop reads small bodies so) but
    /// past the route's replay limit: sent at most once, as a streamed body is; `None` once
    /// sent. The limit decides what is replayed, not how the body happened to be read.
    Once(Option<Bytes>),
    /// Streamed from the client; `None` once sent.
    Streaming(Option<StreamedBody>, Arc<AtomicBool>),
}

impl ReplayBody {
    /// Buffer the body when it fits in `replay_limit` — read whole before anything is sent, so
    /// a broken chunked framing never reaches a backend — otherwise stream it, refusing
    /// anything past `max_body` (at once when Content-Length says so).
    ///
    /// `stream_at_once` (an HTTP/2 upstream) streams a body of unknown length from its first
    /// byte: a bidirectional gRPC stream waits for answers before it sends more, so reading
    /// ahead would stall it. The HTTP/2 try keeps what it sent, within the replay limit.
    pub(super) async fn new(
        body: ClientBody,
        headers: HeadersRef<'_>,
        replay_limit: u64,
        max_body: u64,
        body_idle: Duration,
        stream_at_once: bool,
    ) -> Result<Self, ProxyError> {
        let mut body = match body {
            ClientBody::Empty => return Ok(Self::Buffered(Bytes::new())),
            ClientBody::Full(bytes) if bytes.len() as u64 > max_body => {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            ClientBody::Full(bytes) if bytes.len() as u64 > replay_limit => {
                return Ok(Self::Once(Some(bytes)));
            }
            ClientBody::Full(bytes) => return Ok(Self::Buffered(bytes)),
            ClientBody::Incoming(body) => body,
        };
        if body.is_end_stream() {
            return Ok(Self::Buffered(Bytes::new()));
        }
        if let Some(n) = crate::http1::strict::content_length(headers) {
            if n > max_body {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            if n <= replay_limit {
                let collected = body.collect().await.map_err(ProxyError::BadBody)?;
                return Ok(Self::Buffered(collected.to_bytes()));
            }
            return Ok(Self::streaming(StreamedBody::new(
                None, body, max_body, body_idle,
            )));
        }
        if stream_at_once {
            return Ok(Self::streaming(StreamedBody::new(
                None, body, max_body, body_idle,
            )));
        }
        // Chunked: read up to the replay limit first.
        let mut read = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ProxyError::BadBody)?;
            if let Ok(data) = frame.into_data() {
                read.extend_from_slice(&data);
            }
            if read.len() as u64 > max_body {
                return Err(ProxyError::Malformed(Malformed::BodyTooLarge {
                    limit: max_body,
                }));
            }
            if read.len() as u64 > replay_limit {
                return Ok(Self::streaming(StreamedBody::new(
                    Some(read.freeze()),
                    body,
                    max_body,
                    body_idle,
                )));
            }
        }
        Ok(Self::Buffered(read.freeze()))
    }

    pub(super) fn streaming(body: StreamedBody) -> Self {
        let exceeded = body.exceeded.clone();
        Self::Streaming(Some(body), exceeded)
    }

    /// The body for the next attempt, if there still is one to send.
    pub(super) fn next(&mut self) -> Option<UpstreamBody> {
        match self {
            Self::Buffered(bytes) => Some(Either::Left(bytes.clone())),
            Self::Once(bytes) => bytes.take().map(Either::Left),
            Self::Streaming(body, _) => body.take().map(Either::Right),
        }
    }

    pub(super) fn replayable(&self) -> bool {
        matches!(
            self,
            Self::Buffered(_) | Self::Once(Some(_)) | Self::Streaming(Some(_), _)
        )
    }

    /// Whether the streamed body was cut off at the route's limit.
    pub(super) fn exceeded(&self) -> bool {
        matches!(self, Self::Streaming(_, flag) if flag.load(Ordering::Relaxed))
    }

    /// Give a body back: unsent (nothing reached the upstream), or, from an HTTP/2 stream,
    /// what was sent of it (see `upstream::h2_exchange`).
    pub(super) fn restore(&mut self, body: UpstreamBody) {
        match (self, body) {
            (Self::Streaming(slot, _), Either::Right(streamed)) => *slot = Some(streamed),
            // Streamed to its end within the replay limit, and kept: replayable as any
            // buffered body.
            (this @ Self::Streaming(..), Either::Left(bytes)) => *this = Self::Buffered(bytes),
            (Self::Once(slot), Either::Left(bytes)) => *slot = Some(bytes),
            _ => {}
        }
    }
}
