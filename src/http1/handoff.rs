//! What Meridian's own HTTP/1.1 loop (`server`) hands over at the first request it does not
//! take itself: the bytes read so far, then the connection. Built by `server`; `edge::listen`
//! serves it with hyper's HTTP/1.1 server or, for a connection that opened with the HTTP/2
//! preface, with `edge::h2`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::framing::{FramingLog, Sniffer};

/// How an HTTP/2 connection with prior knowledge opens: httparse refuses the version as soon
/// as it is read, so a connection handed over for it starts with at least this.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";

/// A connection handed over, with every byte read so far.
pub(crate) enum HandedOff<I> {
    /// For hyper's HTTP/1.1 server. Framing is watched from here on: the requests the loop
    /// took before carried no body, so there is nothing to record for them.
    Http1(TokioIo<Sniffer<Prefixed<I>>>),
    /// A connection that opened with the HTTP/2 preface. No framing watcher: HTTP/2 frames
    /// its requests itself.
    Http2(TokioIo<Prefixed<I>>),
}

impl<I> HandedOff<I> {
    pub(crate) fn new(read: BytesMut, io: I, framing: Option<Arc<FramingLog>>) -> Self {
        let h2 = read.starts_with(H2_PREFACE_START);
        let io = Prefixed::new(read.freeze(), io);
        if h2 {
            Self::Http2(TokioIo::new(io))
        } else {
            Self::Http1(TokioIo::new(Sniffer::new(io, framing)))
        }
    }
}

/// Bytes already read, then the connection.
pub(crate) struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, io: I) -> Self {
        Self { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // The read buffer the prefix came from goes now, not with the connection.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
