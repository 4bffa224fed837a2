//! HTTP/1.1 to upstreams, driven by the request's own task.
//!
//! The request head is written straight from the client request's parts, the response head is
//! parsed with httparse, and the response body is decoded as the client reads it. There is no
//! connection task and no channel between a request and its connection (the cost a general
//! client pays for sharing connections between tasks), and an idle pooled connection holds its
//! socket and nothing else.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::http1::body::UpstreamBody;
use crate::http1::buffers::{self as spare, READ_SIZE, UPSTREAM_READS};
#[cfg(test)]
use crate::http1::headers::Overridden;
use crate::http1::headers::{Known, Overrides, known, put_content_length, put_field};
use crate::http1::raw_fields::{Fields, HeadersRef};

/// Most bytes a response head may take.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most headers a response may carry.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
// Bytes asked of the socket per read: `READ_SIZE`. Buffers of upstream connections that went
// idle are kept per thread for the next exchange ([`crate::http1::buffers`]): an idle pooled
// connection keeps only its socket.
/// A buffered body up to this size goes out in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;
/// What a request head is first given room for; a larger one grows the buffer.
const HEAD_ROOM: usize = 512;

/// The socket to one upstream, in the clear or over TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One upstream connection: the socket and the bytes read past the last message.
pub struct Connection {
    stream: Stream,
    /// Bytes read from the socket and not yet used.
    buf: BytesMut,
    /// Bytes that came in with the response head, ahead of `buf`: body bytes handed on
    /// without a copy.
    rest: Bytes,
    /// Whether the connection may carry another request after the current exchange.
    reusable: bool,
}

/// How an upstream exchange failed, and what the caller may still do about it.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing of the request reached the upstream: it may be sent again elsewhere.
    #[error("the connection failed before the request was sent: {0}")]
    NotSent(#[source] io::Error),
    /// The upstream closed the connection without answering a byte.
    #[error("the upstream closed the connection without answering")]
    ClosedBeforeAnswer,
    #[error("writing the request failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response failed: {0}")]
    Read(#[source] io::Error),
    #[error("the request body failed: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The head does not parse.
    #[error("the response head is not valid HTTP/1.1: {0}")]
    Parse(#[source] httparse::Error),
    /// The head parses but breaks a rule Meridian checks (the text says which).
    #[error("the response head is not valid HTTP/1.1: {0}")]
    BadHead(String),
    #[error("the response head is larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("the response has both Content-Length and Transfer-Encoding, or Content-Length twice")]
    AmbiguousFraming,
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Content-Length: this many bytes left.
    Length(u64),
    Chunked(ChunkState),
    /// Until the upstream closes the connection.
    UntilClose,
}

impl Connection {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            rest: Bytes::new(),
            reusable: true,
        }
    }

    /// Whether the connection may carry another request: the last exchange left it clean.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Check an idle connection without waiting: still open, and the upstream sent nothing
    /// unasked (a close, a stray byte or a TLS alert all mean it cannot be reused). While it
    /// is, `waker` stays with the socket, to be woken when it turns readable (how the pool
    /// watches an idle connection). No system call unless the socket is readable.
    pub fn is_open(&mut self, waker: &Waker) -> bool {
        if !self.reusable || !self.buf.is_empty() || !self.rest.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(waker);
        matches!(
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Give up buffers kept from the last exchange, so an idle connection holds only its
    /// socket. A read buffer with room left goes to the thread's spares for the next exchange.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            spare::put(&UPSTREAM_READS, std::mem::take(&mut self.buf));
        }
    }

    /// Send one request and read the response head (skipping 1xx interim responses).
    ///
    /// A buffered body goes out with the head; a streamed body is sent frame by frame, and if
    /// the upstream answers before the body is complete, sending stops and the connection is
    /// not reused.
    pub async fn exchange(
        &mut self,
        request: Outgoing<'_>,
        body: UpstreamBody,
    ) -> Result<UpstreamHead, (ExchangeError, Option<UpstreamBody>)> {
        let Outgoing { parts, headers, .. } = request;
        let head_only = parts.method == Method::HEAD;
        // A buffered body is kept (a cheap reference) so a request the upstream closed on
        // without answering can be handed back for another try.
        let mut kept = None;
        match body {
            Either::Left(bytes) => {
                let coalesce = bytes.len() <= COALESCE_BODY;
                // Room for a small body too, so the head is not copied again to make it.
                let mut out =
                    Vec::with_capacity(HEAD_ROOM + if coalesce { bytes.len() } else { 0 });
                let declared = headers.first(Known::ContentLength).is_some();
                let length = (!bytes.is_empty() || declared || method_expects_body(&parts.method))
                    .then_some(bytes.len() as u64);
                write_head(
                    &mut out,
                    request,
                    length.map_or(BodyKind::None, BodyKind::Length),
                );
                if coalesce {
                    out.extend_from_slice(&bytes);
                }
                if let Err(e) = self.stream.write_all(&out).await {
                    self.reusable = false;
                    return Err((ExchangeError::NotSent(e), Some(Either::Left(bytes))));
                }
                if !coalesce && let Err(e) = self.stream.write_all(&bytes).await {
                    self.reusable = false;
                    return Err((ExchangeError::Write(e), None));
                }
                kept = Some(bytes);
            }
            Either::Right(streamed) => {
                let mut out = Vec::with_capacity(HEAD_ROOM);
                let length = crate::http1::strict::content_length(headers);
                write_head(
                    &mut out,
                    request,
                    length.map_or(BodyKind::Chunked, BodyKind::Length),
                );
                if let Err(e) = self.stream.write_all(&out).await {
                    self.reusable = false;
                    return Err((ExchangeError::NotSent(e), Some(Either::Right(streamed))));
                }
                if let Err(e) = self.send_streamed(streamed, length.is_none()).await {
                    self.reusable = false;
                    return Err((e, None));
                }
            }
        }
        self.read_head(head_only).await.map_err(|e| {
            self.reusable = false;
            let again = match (&e, kept) {
                (ExchangeError::ClosedBeforeAnswer, Some(bytes)) => Some(Either::Left(bytes)),
                _ => None,
            };
            (e, again)
        })
    }

    /// Send a streamed body; stops early (and marks the connection spent) if the upstream
    /// answers first.
    async fn send_streamed(
        &mut self,
        mut body: crate::http1::body::StreamedBody,
        chunked: bool,
    ) -> Result<(), ExchangeError> {
        enum Next {
            Frame(
                Option<Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>,
            ),
            Answer(io::Result<usize>),
        }
        loop {
            let next = {
                let (stream, buf) = (&mut self.stream, &mut self.buf);
                // The answer is looked for first: a client sending fast always has a frame
                // ready, and an upstream that already answered must not be fed the rest.
                tokio::select! {
                    biased;
                    read = read_more(stream, buf) => Next::Answer(read),
                    frame = body.frame() => Next::Frame(frame),
                }
            };
            match next {
                Next::Frame(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        let size = format!("{:x}\r\n", data.len());
                        self.stream
                            .write_all(size.as_bytes())
                            .await
                            .map_err(ExchangeError::Write)?;
                    }
                    self.stream
                        .write_all(&data)
                        .await
                        .map_err(ExchangeError::Write)?;
                    if chunked {
                        self.stream
                            .write_all(b"\r\n")
                            .await
                            .map_err(ExchangeError::Write)?;
                    }
                }
                Next::Frame(Some(Err(e))) => return Err(ExchangeError::RequestBody(e)),
                Next::Frame(None) => {
                    if chunked {
                        self.stream
                            .write_all(b"0\r\n\r\n")
                            .await
                            .map_err(ExchangeError::Write)?;
                    }
                    return Ok(());
                }
                Next::Answer(Ok(0)) => return Err(ExchangeError::ClosedBeforeAnswer),
                Next::Answer(Ok(_)) => {
                    if self.drop_interim_heads()? {
                        continue;
                    }
                    // The upstream answered before the whole body was sent (413, say): the
                    // answer stands, the connection is not reused.
                    self.reusable = false;
                    return Ok(());
                }
                Next::Answer(Err(e)) => return Err(ExchangeError::Read(e)),
            }
        }
    }

    /// While the body is being sent: drop the interim (1xx) heads at the front of what the
    /// upstream sent (100 Continue, 103 Early Hints), which leave it waiting for the rest of
    /// the body. `true` when nothing else has arrived yet (go on sending), `false` when a
    /// final answer has begun.
    fn drop_interim_heads(&mut self) -> Result<bool, ExchangeError> {
        loop {
            // "HTTP/1.1 1": the status's first digit is the tenth byte.
            let Some(&first_digit) = self.buf.get(9) else {
                return Ok(true);
            };
            if !self.buf.starts_with(b"HTTP/1.") || first_digit != b'1' {
                return Ok(false);
            }
            match self.parse_head(false)? {
                Parsed::Interim => {}
                Parsed::Partial if self.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(ExchangeError::HeadTooLarge);
                }
                Parsed::Partial => return Ok(true),
                // A status line with a 1 in front always parses as interim or as an error.
                Parsed::Final(_) => {
                    return Err(ExchangeError::BadHead(
                        "a 1xx status read as a final answer".into(),
                    ));
                }
            }
        }
    }

    /// Read the final response head; interim (1xx) responses are skipped.
    async fn read_head(&mut self, head_only: bool) -> Result<UpstreamHead, ExchangeError> {
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                match self.parse_head(head_only)? {
                    Parsed::Final(response) => return Ok(response),
                    Parsed::Interim => continue,
                    Parsed::Partial if self.buf.len() > MAX_RESPONSE_HEAD => {
                        return Err(ExchangeError::HeadTooLarge);
                    }
                    Parsed::Partial => {}
                }
            }
            match read_more(&mut self.stream, &mut self.buf).await {
                Ok(0) if answered => {
                    return Err(ExchangeError::BadHead(
                        "the connection closed in the middle of the head".into(),
                    ));
                }
                Ok(0) => return Err(ExchangeError::ClosedBeforeAnswer),
                Ok(_) => {}
                Err(e) => return Err(ExchangeError::Read(e)),
            }
        }
    }

    /// Parse one head from the buffer. An interim (1xx) head is consumed.
    fn parse_head(&mut self, head_only: bool) -> Result<Parsed, ExchangeError> {
        parse_head(&mut self.buf, &mut self.rest, &mut self.reusable, head_only)
    }

    /// Next piece of the response body (data, or a chunked body's trailers): `Ok(None)` at
    /// its end.
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame<Bytes>>, ExchangeError>> {
        loop {
            match framing {
                Framing::Empty | Framing::Length(0) => return Poll::Ready(Ok(None)),
                Framing::Length(left) => {
                    if !self.rest.is_empty() {
                        let n = (*left).min(self.rest.len() as u64) as usize;
                        *left -= n as u64;
                        return Poll::Ready(Ok(Some(Frame::data(self.rest.split_to(n)))));
                    }
                    if !self.buf.is_empty() {
                        let n = (*left).min(self.buf.len() as u64) as usize;
                        *left -= n as u64;
                        return Poll::Ready(Ok(Some(Frame::data(self.buf.split_to(n).freeze()))));
                    }
                }
                Framing::UntilClose => {
                    if !self.rest.is_empty() {
                        return Poll::Ready(Ok(Some(Frame::data(std::mem::take(&mut self.rest)))));
                    }
                    if !self.buf.is_empty() {
                        return Poll::Ready(Ok(Some(Frame::data(self.buf.split().freeze()))));
                    }
                }
                Framing::Chunked(state) => {
                    if !self.rest.is_empty() {
                        // Ahead of anything read since.
                        let mut joined = BytesMut::from(&self.rest[..]);
                        joined.extend_from_slice(&self.buf);
                        self.buf = joined;
                        self.rest = Bytes::new();
                    }
                    match decode_chunked(state, &mut self.buf) {
                        Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Some(Frame::data(data)))),
                        Ok(Decoded::Trailers(fields)) => {
                            return Poll::Ready(Ok(Some(Frame::trailers(fields))));
                        }
                        Ok(Decoded::End) => return Poll::Ready(Ok(None)),
                        Ok(Decoded::NeedMore) => {}
                        Err(e) => {
                            self.reusable = false;
                            return Poll::Ready(Err(ExchangeError::BadHead(e.into())));
                        }
                    }
                }
            }
            match poll_read_more(&mut self.stream, &mut self.buf, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.reusable = false;
                    if *framing == Framing::UntilClose {
                        *framing = Framing::Empty;
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Err(ExchangeError::Read(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the body's end",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.reusable = false;
                    return Poll::Ready(Err(ExchangeError::Read(e)));
                }
            }
        }
    }
}

/// Parse one response head from `buf`. An interim (1xx) head is consumed and what follows
/// left in `buf`; after a final head, the bytes past it are in `rest`, and `reusable` is
/// cleared when the connection cannot carry another request.
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    rest: &mut Bytes,
    reusable: &mut bool,
    head_only: bool,
) -> Result<Parsed, ExchangeError> {
    // The buffer is frozen whole so header values and the first body bytes can point
    // into it; the header slots stay uninitialised (a 100-slot array to zero per
    // response would cost more than the parse).
    let frozen = buf.split().freeze();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        &frozen,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            *buf = into_mut(frozen);
            return Ok(Parsed::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::BadHead(format!(
                "more than {MAX_RESPONSE_HEADERS} headers"
            )));
        }
        Err(e) => return Err(ExchangeError::Parse(e)),
    };
    let code = parsed.code.unwrap_or(0);
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| ExchangeError::BadHead(format!("status {code}")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ExchangeError::BadHead(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ));
        }
        *buf = into_mut(frozen.slice(len..));
        return Ok(Parsed::Interim);
    }
    // The framing facts are gathered on the way; hop-by-hop fields are left out (those the
    // Connection header names too, in the rare head whose Connection names any).
    let mut fields = Fields::with_capacity(frozen.slice(..len), parsed.headers.len());
    let mut lengths = 0;
    let mut length: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut connection = ConnectionTokens::default();
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        match known(name) {
            Some(Known::ContentLength) => {
                lengths += 1;
                length = Some(h.value);
            }
            Some(Known::TransferEncoding) => {
                // Two fields are one list ("gzip" then "chunked"): only a lone one passes.
                if transfer_encoding.is_some() {
                    return Err(ExchangeError::BadHead("Transfer-Encoding repeated".into()));
                }
                transfer_encoding = Some(h.value);
                continue;
            }
            Some(Known::Connection) => {
                connection.read(h.value);
                continue;
            }
            Some(kind) if kind.is_hop_by_hop() => continue,
            _ => {}
        }
        fields.push(name, h.value);
    }
    if connection.names_others {
        let named: Vec<&[u8]> = parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii))
            .collect();
        fields.retain(|name| !named.iter().any(|n| n.eq_ignore_ascii_case(name)));
    }
    *rest = frozen.slice(len..);
    // Both framings, or two lengths: a response that could be read two ways is refused.
    if lengths > 1 || (lengths == 1 && transfer_encoding.is_some()) {
        return Err(ExchangeError::AmbiguousFraming);
    }
    let framing =
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else if let Some(te) = transfer_encoding {
            // Transfer-Encoding is hop-by-hop and not passed on: a coding besides chunked
            // (gzip, say) would reach the client applied but unnamed, so it is refused.
            if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ExchangeError::BadHead(format!(
                    "Transfer-Encoding other than chunked: {}",
                    String::from_utf8_lossy(te)
                )));
            }
            Framing::Chunked(ChunkState::Size)
        } else if let Some(value) = length {
            // Plain digits only: the value is passed on as received, and `+5` (which Rust's
            // parser takes) would be framed differently by the next reader.
            let value = value.trim_ascii();
            match crate::http1::headers::plain_length(value) {
                Some(n) => Framing::Length(n),
                None => {
                    return Err(ExchangeError::BadHead(format!(
                        "Content-Length is not a number: {}",
                        String::from_utf8_lossy(value)
                    )));
                }
            }
        } else {
            Framing::UntilClose
        };
    if framing == Framing::UntilClose || !connection.keeps_alive(version) {
        *reusable = false;
    }
    Ok(Parsed::Final(UpstreamHead {
        status,
        version,
        fields,
        framing,
    }))
}

/// A whole upstream answer held in memory, read the way a connection reads it: heads
/// (interim ones skipped), then the body by its framing. For fuzzing: no input may panic.
pub fn read_answer_from(bytes: &[u8], head_only: bool) -> Result<(u16, usize), ExchangeError> {
    let mut buf = BytesMut::from(bytes);
    let mut rest = Bytes::new();
    let mut reusable = true;
    let response = loop {
        match parse_head(&mut buf, &mut rest, &mut reusable, head_only)? {
            Parsed::Final(response) => break response,
            Parsed::Interim if !buf.is_empty() => {}
            Parsed::Interim | Parsed::Partial => {
                return Err(ExchangeError::BadHead("incomplete".into()));
            }
        }
    };
    let mut body = BytesMut::from(&rest[..]);
    body.extend_from_slice(&buf);
    let status = response.status.as_u16();
    let read = match response.framing {
        Framing::Empty => 0,
        Framing::Length(n) => body.len().min(n as usize),
        Framing::UntilClose => body.len(),
        Framing::Chunked(mut state) => {
            let mut read = 0;
            loop {
                match decode_chunked(&mut state, &mut body) {
                    Ok(Decoded::Data(data)) => read += data.len(),
                    Ok(Decoded::Trailers(_)) => {}
                    Ok(Decoded::End | Decoded::NeedMore) => break read,
                    Err(e) => return Err(ExchangeError::BadHead(e.into())),
                }
            }
        }
    };
    Ok((status, read))
}

/// Bytes back into a buffer to read more into: without a copy when nothing else holds them.
fn into_mut(bytes: Bytes) -> BytesMut {
    bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

/// Read whatever the socket has into `buf`.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_more(stream, buf, cx)).await
}

fn poll_read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 2 && !buf.try_reclaim(READ_SIZE) {
        match buf
            .is_empty()
            .then(|| spare::take(&UPSTREAM_READS))
            .flatten()
        {
            Some(spare) => *buf = spare,
            None => buf.reserve(READ_SIZE),
        }
    }
    spare::poll_read_into(Pin::new(stream), buf, cx)
}

/// POST, PUT and PATCH say how long their body is even when it is empty.
fn method_expects_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// What the Connection headers of a response said about keeping the connection.
#[derive(Default)]
struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
    /// A token other than those two: a header to leave out.
    names_others: bool,
}

impl ConnectionTokens {
    fn read(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let close = token.eq_ignore_ascii_case(b"close");
            let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
            self.close |= close;
            self.keep_alive |= keep_alive;
            self.names_others |= !(close || keep_alive || token.is_empty());
        }
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only when told
    /// `keep-alive`.
    fn keeps_alive(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }
}

/// A request as it goes upstream: the client's parts and headers, and the headers Meridian
/// sets in place of the client's (see [`Overrides`]).
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub parts: &'a http::request::Parts,
    pub headers: HeadersRef<'a>,
    pub overrides: &'a Overrides,
}

/// A final response head from the upstream, and how its body is framed.
pub struct UpstreamHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: Fields,
    pub framing: Framing,
}

pub(crate) enum Parsed {
    Final(UpstreamHead),
    Interim,
    Partial,
}

enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// The request line and headers; the framing header is ours, never the client's, and the
/// overrides replace the client's headers of their names.
fn write_head(out: &mut Vec<u8>, request: Outgoing<'_>, body: BodyKind) {
    let Outgoing {
        parts,
        headers,
        overrides,
    } = request;
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Expect: 100-continue is answered to the client (hyper does, when the body is first
    // read); the upstream gets the body as it comes, without being asked first.
    let forwarded = |kind: Option<Known>| {
        !matches!(
            kind,
            Some(Known::ContentLength | Known::TransferEncoding | Known::Expect)
        ) && !overrides.replaces_kind(kind)
    };
    match headers {
        HeadersRef::Map(map) => {
            for (name, value) in map {
                let name = name.as_str().as_bytes();
                if forwarded(known(name)) {
                    put_field(out, name, value.as_bytes());
                }
            }
        }
        HeadersRef::Raw(fields) => {
            let recorded = fields.present().is_some();
            fields.write_lines(out, |name, kind| {
                forwarded(if recorded { kind } else { known(name) })
            });
        }
    }
    for (name, value) in overrides.iter() {
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match body {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            put_content_length(out, n);
        }
        BodyKind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Where a chunked body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines up to an empty line.
    Trailers,
    Done,
}

pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    NeedMore,
    End,
}

/// Decode as much of a chunked body as `buf` holds; trailers are read and dropped.
pub(crate) fn decode_chunked(
    state: &mut ChunkState,
    buf: &mut BytesMut,
) -> Result<Decoded, &'static str> {
    loop {
        match *state {
            ChunkState::Done => return Ok(Decoded::End),
            ChunkState::Size => {
                let Some(end) = find_crlf(buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("chunk-size line too long");
                    }
                    return Ok(Decoded::NeedMore);
                };
                let line = &buf[..end];
                let digits = line
                    .iter()
                    .position(|b| *b == b';' || *b == b' ' || *b == b'\t')
                    .map_or(line, |i| &line[..i]);
                if digits.is_empty() || digits.len() > 15 {
                    return Err("bad chunk size");
                }
                let mut size = 0u64;
                for d in digits {
                    let v = (*d as char).to_digit(16).ok_or("bad chunk size")?;
                    size = size * 16 + v as u64;
                }
                buf.advance(end + 2);
                *state = if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                };
            }
            ChunkState::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = left.min(buf.len() as u64) as usize;
                *state = if n as u64 == left {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left - n as u64)
                };
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            ChunkState::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF");
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *state = ChunkState::Done;
                    continue;
                }
                let Some(end) = crate::http1::delimiters::head_end(buf) else {
                    if buf.len() > MAX_TRAILERS {
                        return Err("trailers too large");
                    }
                    return Ok(Decoded::NeedMore);
                };
                let section = buf.split_to(end + 4);
                *state = ChunkState::Done;
                return Ok(Decoded::Trailers(trailer_fields(&section)?));
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    crate::http1::delimiters::crlf(buf)
}

/// The fields of a trailer section, without those that may not be sent as trailers
/// (framing, routing and the trailer declaration itself: RFC 9110 §6.5.1).
fn trailer_fields(section: &[u8]) -> Result<HeaderMap, &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let fields = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err("bad trailer section"),
    };
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "bad trailer name")?;
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::TRAILER,
            header::HOST,
            header::CONNECTION,
            header::TE,
        ]
        .contains(&name)
        {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value).map_err(|_| "bad trailer value")?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.buf.len())
            .field("reusable", &self.reusable)
            .finish()
    }
}

/// Size hint for the body still to come.
pub fn size_hint(framing: &Framing) -> hyper::body::SizeHint {
    match framing {
        Framing::Empty => hyper::body::SizeHint::with_exact(0),
        Framing::Length(n) => hyper::body::SizeHint::with_exact(*n),
        _ => hyper::body::SizeHint::default(),
    }
}

/// Whether no body bytes remain.
pub fn is_done(framing: &Framing) -> bool {
    matches!(
        framing,
        Framing::Empty | Framing::Length(0) | Framing::Chunked(ChunkState::Done)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], pieces: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut state = ChunkState::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let step = input.len().div_ceil(pieces.max(1)).max(1);
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decode_chunked(&mut state, &mut buf)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::Trailers(_) => {}
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    #[test]
    fn spare_read_buffers_are_reused_without_touching_earlier_answers() {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok");
        let (mut rest, mut reusable) = (Bytes::new(), true);
        let Ok(Parsed::Final(head)) = parse_head(&mut buf, &mut rest, &mut reusable, false) else {
            panic!("a whole head");
        };
        assert!(buf.is_empty());
        spare::put(&UPSTREAM_READS, buf);
        let mut next = spare::take(&UPSTREAM_READS).expect("an empty buffer with room is kept");
        assert!(next.capacity() >= READ_SIZE / 2);
        // The next exchange reads into what is left of the same allocation...
        next.extend_from_slice(&[b'z'; 1024]);
        // ...and the earlier answer, which still points into it, is untouched.
        assert_eq!(head.fields.get("x-a"), Some(&b"1"[..]));
        assert_eq!(&rest[..], b"ok");
        assert!(spare::take(&UPSTREAM_READS).is_none(), "taken once");

        spare::put(&UPSTREAM_READS, BytesMut::with_capacity(64));
        assert!(
            spare::take(&UPSTREAM_READS).is_none(),
            "too small to be worth keeping"
        );
    }

    #[test]
    fn chunked_bodies_decode_whole_or_byte_by_byte() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for pieces in [1, 3, wire.len()] {
            let (data, ended) = decode_all(wire, pieces).unwrap();
            assert_eq!(data, b"hello world", "in {pieces} pieces");
            assert!(ended);
        }
        let (_, ended) = decode_all(b"5\r\nhel", 1).unwrap();
        assert!(!ended);
    }

    #[test]
    fn trailers_are_handed_on_without_forbidden_fields() {
        let mut state = ChunkState::Size;
        let mut buf = BytesMut::from(
            &b"2\r\nok\r\n0\r\nx-checksum: abc\r\ncontent-length: 9\r\n\r\nrest"[..],
        );
        assert!(matches!(
            decode_chunked(&mut state, &mut buf),
            Ok(Decoded::Data(_))
        ));
        match decode_chunked(&mut state, &mut buf) {
            Ok(Decoded::Trailers(fields)) => {
                assert_eq!(fields["x-checksum"], "abc");
                assert!(!fields.contains_key(header::CONTENT_LENGTH));
            }
            _ => panic!("expected trailers"),
        }
        assert!(matches!(
            decode_chunked(&mut state, &mut buf),
            Ok(Decoded::End)
        ));
        assert_eq!(&buf[..], b"rest", "nothing past the body is taken");
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"10000000000000000\r\n",
        ] {
            assert!(
                decode_all(wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn answer_framing_is_plain_digits_or_a_lone_chunked() {
        let framing = |head: &str| {
            let (mut buf, mut rest, mut reusable) = (BytesMut::from(head), Bytes::new(), true);
            match parse_head(&mut buf, &mut rest, &mut reusable, false) {
                Ok(Parsed::Final(h)) => Ok(h.framing),
                Ok(_) => Err("not a final head".to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let ok = |te_or_cl: &str| framing(&format!("HTTP/1.1 200 OK\r\n{te_or_cl}\r\n\r\n"));
        assert_eq!(ok("Content-Length: 5"), Ok(Framing::Length(5)));
        assert_eq!(ok("Content-Length:  12 "), Ok(Framing::Length(12)));
        assert_eq!(
            ok("Content-Length: 18446744073709551615"),
            Err("the response head is not valid HTTP/1.1: Content-Length is not a number: 18446744073709551615".into())
        );
        for bad in ["+5", "-1", "5 5", "0x10", ""] {
            let got = ok(&format!("Content-Length: {bad}"));
            assert!(
                got.as_ref().is_err_and(|e| e.contains("Content-Length")),
                "{bad}: {got:?}"
            );
        }
        assert_eq!(
            ok("Transfer-Encoding: Chunked"),
            Ok(Framing::Chunked(ChunkState::Size))
        );
        for bad in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "gzip",
            "gzip\r\nTransfer-Encoding: chunked",
            "chunked\r\nTransfer-Encoding: chunked",
        ] {
            let got = ok(&format!("Transfer-Encoding: {bad}"));
            assert!(
                got.as_ref().is_err_and(|e| e.contains("Transfer-Encoding")),
                "{bad}: {got:?}"
            );
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let tokens = |values: &[&str]| {
            let mut t = ConnectionTokens::default();
            for v in values {
                t.read(v.as_bytes());
            }
            t
        };
        assert!(tokens(&[]).keeps_alive(Version::HTTP_11));
        assert!(!tokens(&[]).keeps_alive(Version::HTTP_10));
        assert!(tokens(&["Keep-Alive"]).keeps_alive(Version::HTTP_10));
        assert!(!tokens(&["foo, close"]).keeps_alive(Version::HTTP_11));
        assert!(!tokens(&["keep-alive", "close"]).keeps_alive(Version::HTTP_10));
    }

    #[test]
    fn the_head_carries_our_framing_not_the_clients() {
        let mut req = http::Request::new(());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "/a?b=1".parse().unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("api.test"));
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        let mut overrides = Overrides::default();
        overrides.set(Overridden::RequestId, HeaderValue::from_static("a"));
        overrides.set(Overridden::RequestId, HeaderValue::from_static("b"));
        overrides.set(Overridden::Host, HeaderValue::from_static("routed.test"));
        let request = Outgoing {
            parts: &parts,
            headers: HeadersRef::Map(&parts.headers),
            overrides: &overrides,
        };
        write_head(&mut out, request, BodyKind::Length(3));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nx-request-id: b\r\nhost: routed.test\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
