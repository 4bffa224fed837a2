//! HTTP/1.1 client connections served by Meridian itself, for the common case.
//!
//! A request that is plain HTTP/1.1 with no body or a small one given by Content-Length (the
//! bulk of proxied traffic: GETs and API calls) is read, handled and answered here: the head
//! is parsed with httparse straight into the request's parts, the body read whole, the answer
//! written in one go, and between requests the connection holds no buffer at all. Anything
//! else — a chunked or larger body, an upgrade, `Expect`, HTTP/1.0, HTTP/2 prior knowledge, a
//! head that does not parse cleanly — hands the connection, with every byte read so far, to
//! hyper's server for the rest of its life, so all the edge cases keep hyper's behaviour.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http::{Method, Request, Uri, Version};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::http1::answer::{Answer, ClientBody};
use crate::http1::buffers::{self as spare, CLIENT_READS, FIRST_READ};
use crate::http1::framing::FramingLog;
use crate::http1::handoff::HandedOff;
use crate::http1::headers::{
    Known, X_MERIDIAN_REGION, X_REQUEST_ID, known, plain_length, put_content_length, put_field,
};
use crate::http1::raw_fields::Fields;

/// Largest request body this loop reads itself (by Content-Length, whole, before the request
/// is handled; as much as the proxy keeps for replaying a request by default). Larger bodies
/// go to hyper and are streamed.
const MAX_OWN_BODY: u64 = 64 * 1024;

/// What the loop needs to know about a connection.
#[derive(Clone)]
pub(crate) struct ConnectionContext {
    pub peer: SocketAddr,
    pub framing: Option<Arc<FramingLog>>,
    /// Time allowed for a request body, from the end of its head.
    pub header_read_timeout: Duration,
    /// Time allowed for each request head, counted from the start of its wait: the head read
    /// timeout, or the listener's idle timeout when shorter (the wait is also idle time).
    pub head_wait: Duration,
    pub max_head: usize,
    pub max_headers: usize,
}

/// Serve one client connection: requests this module can answer are answered here by
/// `handler`, and the first one it cannot goes, with the connection and every byte read so
/// far, to `hand_off` (hyper's server, in practice).
pub(crate) async fn serve<I, H, F, B, O, OF>(
    mut io: I,
    context: ConnectionContext,
    handler: H,
    hand_off: O,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<ClientBody>, Fields) -> F,
    F: Future<Output = Result<Box<Answer<B>>, Infallible>>,
    B: Body<Data = Bytes, Error = Box<dyn StdError + Send + Sync>> + Unpin,
    O: FnOnce(HandedOff<I>) -> OF,
    OF: Future<Output = ()>,
{
    let mut buf = BytesMut::new();
    // One shutdown waiter and one timer for the connection's life, not one of each per
    // request: the timer is armed at the first deadline and, when it fires, moved to the
    // deadline of the head being waited for then, so a busy connection never touches the
    // timer wheel between requests.
    let stopping = shutdown.clone().cancelled_owned();
    let timer = tokio::time::sleep(context.head_wait);
    tokio::pin!(stopping, timer);
    // Set when a large head or body grew the read buffer's allocation: what is left of it is
    // let go once empty (see `let_go_if_grown`), not kept by an idle connection or the spares.
    let mut grown = false;
    loop {
        // Wait for a head; between requests nothing is allocated.
        let deadline = crate::deadline::from_now(context.head_wait);
        let read = loop {
            tokio::select! {
                biased;
                read = read_head(&mut io, &mut buf, context.max_head) => break read,
                () = &mut stopping, if buf.is_empty() => return,
                () = &mut timer => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::debug!(client = %context.peer, "request head not read in time; closed");
                        return;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        };
        let head = match read {
            Ok(HeadRead::Head(len)) => {
                grown |= len > FIRST_READ;
                Some(buf.split_to(len).freeze())
            }
            // The client closed between requests, or the connection failed.
            Ok(HeadRead::Closed) | Err(_) => return,
            // Hyper answers what this loop does not take (400, 431, ...).
            Ok(HeadRead::HandOff) => None,
        };
        let parsed = head
            .as_ref()
            .and_then(|head| parse_simple(head, context.max_headers));
        let Some((parts, fields, asked, body_len)) = parsed else {
            // Everything read goes to hyper, the head first.
            let read = match head {
                Some(head) => {
                    let mut read = BytesMut::with_capacity(head.len() + buf.len());
                    read.extend_from_slice(&head);
                    read.extend_from_slice(&buf);
                    // The head's read buffer goes now, not with the connection handed over.
                    drop((head, std::mem::take(&mut buf)));
                    read
                }
                None => buf,
            };
            return Box::pin(hand_off(HandedOff::new(read, io, context.framing))).await;
        };
        drop(head);
        let body = if body_len == 0 {
            ClientBody::Empty
        } else {
            // The body's own deadline, counted from the end of its head.
            let body_deadline = crate::deadline::from_now(context.header_read_timeout);
            match read_body(
                &mut io,
                &mut buf,
                body_len as usize,
                timer.as_mut(),
                body_deadline,
            )
            .await
            {
                BodyRead::Whole(body) => {
                    // The body shares the read buffer's allocation (up to 64 KiB).
                    grown |= body.len() > FIRST_READ;
                    ClientBody::Full(body)
                }
                BodyRead::Closed => {
                    tracing::debug!(client = %context.peer, "client closed the connection mid-body");
                    return;
                }
                BodyRead::TimedOut => {
                    tracing::debug!(client = %context.peer, "request body not read in time; 408, closed");
                    let _ = io.write_all(&request_timeout_answer()).await;
                    let _ = io.shutdown().await;
                    return;
                }
            }
        };
        let_go_if_grown(&mut buf, &mut grown);
        let head_method = parts.method == Method::HEAD;
        let request = Request::from_parts(parts, body);
        let handler = boxed(|| handler(request, fields));
        // As with hyper (without half-close): a client that goes away mid-request takes the
        // request with it, so the upstream is not kept busy for nobody.
        // Biased: the answer is looked at first, and no random draw is made per poll.
        let response = tokio::select! {
            biased;
            Ok(response) = handler => response,
            () = client_gone(&mut io, &mut buf, context.max_head) => {
                tracing::debug!(client = %context.peer, "client closed the connection mid-request");
                return;
            }
        };
        let keep = !asked.close && !shutdown.is_cancelled();
        // Boxed: the largest state of a connection, held only while an answer is written.
        match boxed(|| write_response(&mut io, response, head_method, keep, asked.trailers)).await {
            // Flushed: a TLS stream may still hold the answer's last record.
            Ok(true) => {
                if io.flush().await.is_err() {
                    return;
                }
            }
            Ok(false) | Err(_) => {
                let _ = io.shutdown().await;
                return;
            }
        }
        let_go_if_grown(&mut buf, &mut grown);
    }
}

/// Drop what is left of a read buffer that a large head or body grew, once it is empty: the
/// rest of a 64 KiB allocation would otherwise stay with the connection, or in the spares.
fn let_go_if_grown(buf: &mut BytesMut, grown: &mut bool) {
    if buf.is_empty() && (*grown || buf.capacity() > FIRST_READ) {
        *buf = BytesMut::new();
        *grown = false;
    }
}

/// A future moved to the heap. The box is allocated first so the future can be built
/// straight into it: `Box::pin(future)` builds it on the stack and copies all of it (the
/// handler's is several KB) into the box.
#[inline(always)]
pub(crate) fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Resolves when the client closes the connection (or it fails); bytes it pipelines
/// meanwhile are kept in `buf`, up to `max`.
async fn client_gone<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut, max: usize) {
    loop {
        if buf.len() >= max {
            return std::future::pending().await;
        }
        let read = std::future::poll_fn(|cx| {
            if buf.capacity() > buf.len() {
                return spare::poll_read_into(Pin::new(&mut *io), buf, cx);
            }
            // No room left (what was left went to the spares, or the head filled it): a
            // read on the stack, and a buffer only when the client did send something.
            let mut probe = [MaybeUninit::<u8>::uninit(); 512];
            let mut read = ReadBuf::uninit(&mut probe);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    buf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(read.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        match read.await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Read what the client sent into `buf`, grown (doubling) when less than half a first read
/// of room is left. The buffer is needed only for the read itself: an empty one goes to the
/// thread's spares while the client keeps the connection waiting and comes back from them
/// when there is something to read, so an idle keep-alive connection holds no buffer (as
/// nginx lets its header buffer go between requests).
async fn read_client<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        if buf.capacity() - buf.len() < FIRST_READ / 2 {
            let grow = FIRST_READ.max(buf.len());
            if !buf.try_reclaim(grow) {
                match buf.is_empty().then(|| spare::take(&CLIENT_READS)).flatten() {
                    Some(spare) => *buf = spare,
                    None => buf.reserve(grow),
                }
            }
        }
        let read = spare::poll_read_into(Pin::new(&mut *io), buf, cx);
        if read.is_pending() && buf.is_empty() {
            // Empty: any allocation a large head or body grew was let go before this wait.
            spare::put(&CLIENT_READS, std::mem::take(buf));
        }
        read
    })
    .await
}

/// What reading a request body came to.
enum BodyRead {
    Whole(Bytes),
    Closed,
    TimedOut,
}

/// Read a body of `len` bytes (some may already be in `buf`) by `deadline`, on the
/// connection's one timer.
async fn read_body<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    len: usize,
    mut timer: Pin<&mut tokio::time::Sleep>,
    deadline: tokio::time::Instant,
) -> BodyRead {
    while buf.len() < len {
        tokio::select! {
            biased;
            read = async {
                buf.reserve(len - buf.len());
                io.read_buf(buf).await
            } => match read {
                Ok(0) | Err(_) => return BodyRead::Closed,
                Ok(_) => {}
            },
            () = &mut timer => {
                if tokio::time::Instant::now() >= deadline {
                    return BodyRead::TimedOut;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
    BodyRead::Whole(buf.split_to(len).freeze())
}

/// The answer to a request whose body did not arrive in time.
fn request_timeout_answer() -> Vec<u8> {
    let mut out = b"HTTP/1.1 408 Request Timeout\r\nx-meridian-error: request-timeout\r\n\
        content-length: 0\r\nconnection: close\r\ndate: "
        .to_vec();
    crate::http1::date::write_now(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// What reading a request head came to.
enum HeadRead {
    /// A whole head of this length is at the start of the buffer.
    Head(usize),
    /// Something for hyper to judge: a head past the size limit, bare-LF line ends, or input
    /// that ended part-way.
    HandOff,
    /// The client closed before sending anything.
    Closed,
}

/// Read until `buf` holds a whole head (or it is clear hyper should have the connection).
async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<HeadRead> {
    let mut scanned = 0;
    loop {
        if let Some(at) = crate::http1::delimiters::head_end(&buf[scanned..]) {
            let len = scanned + at + 4;
            return Ok(if len > max {
                HeadRead::HandOff
            } else {
                HeadRead::Head(len)
            });
        }
        if buf.len() > max || !still_partial(buf) {
            return Ok(HeadRead::HandOff);
        }
        scanned = buf.len().saturating_sub(3);
        if read_client(io, buf).await? == 0 {
            return Ok(if buf.is_empty() {
                HeadRead::Closed
            } else {
                HeadRead::HandOff
            });
        }
    }
}

/// Whether bytes with no `\r\n\r\n` yet are the start of a head still arriving. A head
/// httparse already sees whole (bare-LF line ends) and bytes that cannot start a request
/// (garbage, a TLS hello on a plain listener) go to hyper at once, to be answered, not
/// waited on.
fn still_partial(partial: &[u8]) -> bool {
    if partial.is_empty() {
        return true;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut request = httparse::Request::new(&mut []);
    matches!(
        httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            partial,
            &mut slots
        ),
        Ok(httparse::Status::Partial)
    )
}

/// What the client asked of the connection and the answer.
#[derive(Default, Clone, Copy)]
struct Asked {
    /// `Connection: close`.
    close: bool,
    /// `TE: trailers`: a chunked answer may end with trailer fields.
    trailers: bool,
}

/// The request's parts and header fields, when it is one this module answers: HTTP/1.1,
/// origin-form target, no body or one Content-Length of plain digits up to
/// [`MAX_OWN_BODY`], no Transfer-Encoding, upgrade or expectation, and a head that parses
/// cleanly. Also whether the client asked to close, and the body's length. The parts'
/// header map stays empty: the fields and the target point into `head`.
fn parse_simple(
    head: &Bytes,
    max_headers: usize,
) -> Option<(http::request::Parts, Fields, Asked, u64)> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let slots = &mut slots[..max_headers.min(100)];
    let mut parsed = httparse::Request::new(&mut []);
    match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        head,
        slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let path = parsed.path?;
    if !path.starts_with('/') {
        return None;
    }
    let uri = Uri::from_maybe_shared(head.slice_ref(path.as_bytes())).ok()?;
    let mut fields = Fields::with_capacity(head.clone(), parsed.headers.len());
    let mut asked = Asked::default();
    let mut body_len = None;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let kind = known(name);
        if matches!(
            kind,
            Some(Known::TransferEncoding | Known::Upgrade | Known::Expect)
        ) {
            return None;
        }
        if kind == Some(Known::ContentLength) {
            // A tab around the value is refused where hyper serves (see `framing`).
            if crate::http1::framing::tab_in_field(head, name) {
                return None;
            }
            // One, plain digits, small: anything else is hyper's (and the strict checks').
            match plain_length(h.value) {
                Some(n) if body_len.is_none() && n <= MAX_OWN_BODY => body_len = Some(n),
                _ => return None,
            }
        }
        if kind == Some(Known::Connection) {
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    asked.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return None;
                }
            }
        }
        if kind == Some(Known::Te)
            && h.value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        {
            asked.trailers = true;
        }
        fields.push_known(name, h.value, kind);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    Some((parts, fields, asked, body_len.unwrap_or(0)))
}

/// Write the response; `Ok(true)` when the connection may carry another request.
async fn write_response<I: AsyncWrite + Unpin, B>(
    io: &mut I,
    answer: Box<Answer<B>>,
    head_method: bool,
    keep: bool,
    trailers_accepted: bool,
) -> std::io::Result<bool>
where
    B: Body<Data = Bytes, Error = Box<dyn StdError + Send + Sync>> + Unpin,
{
    use std::io::Write as _;
    let mut out = Vec::with_capacity(512);
    let status = answer.response.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut keep = keep;
    let mut has_length = false;
    let mut has_date = false;
    // The upstream's fields as received (hop-by-hop ones already left out), except those
    // Meridian sets itself.
    answer.upstream.write_lines(&mut out, |name, _| {
        if answer.replaces(name) {
            return false;
        }
        has_length |= name.eq_ignore_ascii_case(b"content-length");
        has_date |= name.eq_ignore_ascii_case(b"date");
        true
    });
    let Answer {
        response,
        region,
        request_id,
        ..
    } = *answer;
    let (parts, mut body) = response.into_parts();
    for (name, value) in &parts.headers {
        if name == header::CONNECTION {
            if value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep = false;
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        has_length |= name == header::CONTENT_LENGTH;
        has_date |= name == header::DATE;
        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in [
        (X_MERIDIAN_REGION, region.as_ref()),
        (X_REQUEST_ID, request_id.as_ref()),
    ] {
        if let Some(value) = value {
            put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // 1xx, 204 and 304 never carry a body; HEAD announces the length a GET would get.
    let no_body = status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED;
    let mut chunked = false;
    if !has_length && !no_body {
        match body.size_hint().exact() {
            Some(n) if !head_method || n > 0 => {
                put_content_length(&mut out, n);
            }
            Some(_) => {}
            None if head_method => {}
            None => {
                chunked = true;
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
    }
    let bodiless = head_method || no_body;
    if !has_date {
        out.extend_from_slice(b"date: ");
        crate::http1::date::write_now(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        io.write_all(&out).await?;
        return Ok(keep);
    }
    // The head goes out with the first piece of the body when it is already there.
    let mut first = true;
    loop {
        let frame = if first {
            first = false;
            match std::future::poll_fn(|cx| Poll::Ready(poll_frame(&mut body, cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    io.write_all(&std::mem::take(&mut out)).await?;
                    std::future::poll_fn(|cx| poll_frame(&mut body, cx)).await
                }
            }
        } else {
            std::future::poll_fn(|cx| poll_frame(&mut body, cx)).await
        };
        match frame {
            None => {
                if chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                io.write_all(&out).await?;
                return Ok(keep);
            }
            Some(Err(e)) => {
                // The answer cannot be finished: the client must see the connection end.
                tracing::debug!(error = %e, "response body failed; connection closed");
                if !out.is_empty() {
                    let _ = io.write_all(&out).await;
                }
                return Ok(false);
            }
            Some(Ok(frame)) if frame.is_trailers() => {
                if let (true, true, Ok(fields)) =
                    (chunked, trailers_accepted, frame.into_trailers())
                {
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in &fields {
                        put_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    chunked = false;
                }
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    let _ = write!(out, "{:x}\r\n", data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
                io.write_all(&out).await?;
                out.clear();
            }
        }
    }
}

type FrameResult = Option<Result<hyper::body::Frame<Bytes>, Box<dyn StdError + Send + Sync>>>;

fn poll_frame<B>(body: &mut B, cx: &mut Context<'_>) -> Poll<FrameResult>
where
    B: Body<Data = Bytes, Error = Box<dyn StdError + Send + Sync>> + Unpin,
{
    Pin::new(body).poll_frame(cx)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::Waker;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_connection_waiting_for_its_next_request_holds_no_read_buffer() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut buf = BytesMut::new();
        let mut cx = Context::from_waker(Waker::noop());
        {
            let read = pin!(read_client(&mut server, &mut buf));
            assert!(read.poll(&mut cx).is_pending(), "nothing sent yet");
        }
        assert_eq!(
            buf.capacity(),
            0,
            "the buffer went to the spares while waiting"
        );
        let spare = spare::take(&CLIENT_READS).expect("kept for the next read");
        assert!(spare.capacity() >= FIRST_READ / 2);
        spare::put(&CLIENT_READS, spare);

        client
            .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let n = read_client(&mut server, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        assert!(
            spare::take(&CLIENT_READS).is_none(),
            "the spare was read into"
        );
    }

    #[tokio::test]
    async fn bytes_pipelined_during_a_request_are_kept_with_or_without_room() {
        for room in [0, 8, FIRST_READ] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let mut buf = BytesMut::with_capacity(room);
            client
                .write_all(b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
            drop(client);
            client_gone(&mut server, &mut buf, 16 * 1024).await;
            assert_eq!(
                &buf[..],
                b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n",
                "room {room}"
            );
        }
    }
}
