//! gRPC over HTTP/2 for the tests, on the h2 crate (the HTTP/2 implementation gRPC's Rust
//! stacks are built on): length-prefixed messages, `grpc-status` in trailers or trailers-only
//! answers, `grpc-timeout`. A server with the methods the tests call, counters of what it
//! saw, and a client that speaks to Meridian's listener over h2c.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::RecvStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The protobuf message of the `Proto*` methods: `message Text { string text = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// One gRPC message, framed: uncompressed flag, big-endian length, bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Take every whole message off the front of `buf`.
pub fn unframe(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

/// What a server saw.
#[derive(Default)]
pub struct Seen {
    /// Calls received (every method).
    pub calls: AtomicUsize,
    /// Streams open now, and the most open at once.
    pub open: AtomicUsize,
    pub most_open: AtomicUsize,
    /// Streams reset by the client (Meridian) before the server finished them.
    pub cancelled: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// The `te` and `grpc-timeout` of the last call.
    pub last_headers: std::sync::Mutex<Option<HeaderMap>>,
    /// Notified when a stream is reset by the client.
    pub reset: Notify,
    /// Notified when a call arrives.
    pub arrived: Notify,
    /// Messages a server stream has sent so far.
    pub sent: AtomicUsize,
    /// Notified when a server stream has to wait for flow-control window; `stalled` says it
    /// is waiting now.
    pub blocked: Notify,
    pub stalled: AtomicBool,
}

/// How a test server behaves.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: Option<u32>,
    /// The first connection answers its first stream with GOAWAY(last stream 0), unprocessed.
    pub goaway_first: bool,
    /// `Health/Check` answers NOT_SERVING.
    pub not_serving: Arc<AtomicBool>,
    /// Serve TLS with ALPN h2 with this certificate and key (DER).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

pub struct GrpcServer {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl GrpcServer {
    pub async fn start(name: &str, options: ServerOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, name, options)
    }

    /// Serve on a listener bound already (to come back on the same address).
    pub fn serve(listener: TcpListener, name: &str, options: ServerOptions) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let conns = Arc::new(std::sync::Mutex::new(Vec::new()));
        let name_owned = name.to_owned();
        let acceptor = options.tls.clone().map(|(cert, key)| {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls_pki_types::CertificateDer::from(cert)],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let task = {
            let seen = seen.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                let mut first = true;
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    seen.connections.fetch_add(1, Ordering::SeqCst);
                    let goaway = options.goaway_first && std::mem::take(&mut first);
                    let (seen, options, name, acceptor) = (
                        seen.clone(),
                        options.clone(),
                        name_owned.clone(),
                        acceptor.clone(),
                    );
                    let handle = tokio::spawn(async move {
                        if goaway {
                            refuse_with_goaway(stream).await;
                            return;
                        }
                        match acceptor {
                            Some(acceptor) => {
                                let Ok(tls) = acceptor.accept(stream).await else {
                                    return;
                                };
                                serve_conn(tls, seen, options, name).await;
                            }
                            None => serve_conn(stream, seen, options, name).await,
                        }
                    });
                    conns.lock().unwrap().push(handle.abort_handle());
                }
            })
        };
        Self {
            addr,
            name: name.to_owned(),
            seen,
            task,
            conns,
        }
    }

    /// Stop listening and drop every connection (a killed process, to its peers).
    pub fn kill(&self) {
        self.task.abort();
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Read the client preface and frames until a HEADERS frame, then send GOAWAY with last
/// stream 0 (nothing processed) and close: the stream must go again elsewhere.
async fn refuse_with_goaway(mut stream: TcpStream) {
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    // Our SETTINGS (empty).
    let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
    for _ in 0..64 {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        match head[3] {
            // SETTINGS (not an ACK): acknowledge.
            4 if head[4] & 1 == 0 => {
                let _ = stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
            }
            // PING: answer it (a client may wait for that before its first stream).
            6 if head[4] & 1 == 0 => {
                let mut pong = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                let _ = stream.write_all(&pong).await;
            }
            // HEADERS: refuse everything.
            1 => {
                let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let _ = stream.write_all(&goaway).await;
                let _ = stream.flush().await;
                // Hold the socket open a moment, as a draining server does, reading on.
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            _ => {}
        }
    }
}

async fn serve_conn<T>(io: T, seen: Arc<Seen>, options: ServerOptions, name: String)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut builder = h2::server::Builder::new();
    if let Some(n) = options.max_concurrent_streams {
        builder.max_concurrent_streams(n);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(io).await else {
        return;
    };
    while let Some(Ok((request, respond))) = conn.accept().await {
        let (seen, name, options) = (seen.clone(), name.clone(), options.clone());
        tokio::spawn(async move {
            let open = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
            seen.most_open.fetch_max(open, Ordering::SeqCst);
            seen.calls.fetch_add(1, Ordering::SeqCst);
            *seen.last_headers.lock().unwrap() = Some(request.headers().clone());
            seen.arrived.notify_waiters();
            handle(request, respond, &seen, &name, &options).await;
            seen.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn trailers(status: u8, message: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from(u16::from(status)));
    if !message.is_empty() {
        map.insert("grpc-message", HeaderValue::from_str(message).unwrap());
    }
    map
}

fn ok_head() -> Response<()> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

/// Read messages off a request body as they come.
struct Messages {
    body: RecvStream,
    buf: BytesMut,
    ready: std::collections::VecDeque<Bytes>,
}

impl Messages {
    fn new(body: RecvStream) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            ready: Default::default(),
        }
    }

    /// The next message; `None` at the end of the stream (or on a reset).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(m);
            }
            let chunk = self.body.data().await?.ok()?;
            let _ = self.body.flow_control().release_capacity(chunk.len());
            self.buf.extend_from_slice(&chunk);
            self.ready.extend(unframe(&mut self.buf));
        }
    }
}

async fn handle(
    request: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    seen: &Seen,
    name: &str,
    options: &ServerOptions,
) {
    let path = request.uri().path().to_owned();
    let mut messages = Messages::new(request.into_body());
    match path.as_str() {
        "/test.Echo/Unary" => {
            let message = messages.next().await.unwrap_or_default();
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let reply = format!("{name}:{}", String::from_utf8_lossy(&message));
            let _ = send.send_data(frame(reply.as_bytes()), false);
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/ProtoUnary" => {
            use prost::Message as _;
            let message = messages.next().await.unwrap_or_default();
            let text = Text::decode(message).map(|t| t.text).unwrap_or_default();
            let reply = Text {
                text: format!("{name}:{text}"),
            };
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let _ = send.send_data(frame(&reply.encode_to_vec()), false);
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/ProtoDenied" => {
            use prost::Message as _;
            let _ = messages.next().await;
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let partial = Text {
                text: "partial".to_owned(),
            };
            let _ = send.send_data(frame(&partial.encode_to_vec()), false);
            let _ = send.send_trailers(trailers(7, "no%20entry"));
        }
        "/test.Echo/ProtoStream" => {
            use prost::Message as _;
            let message = messages.next().await.unwrap_or_default();
            let count: usize = Text::decode(message)
                .ok()
                .and_then(|t| t.text.parse().ok())
                .unwrap_or(0);
            let mut send = respond.send_response(ok_head(), false).unwrap();
            for i in 0..count {
                let m = Text {
                    text: i.to_string(),
                };
                if send.send_data(frame(&m.encode_to_vec()), false).is_err() {
                    return;
                }
            }
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/ServerStream" => {
            let message = messages.next().await.unwrap_or_default();
            let count: usize = String::from_utf8_lossy(&message).parse().unwrap_or(0);
            let mut send = respond.send_response(ok_head(), false).unwrap();
            for i in 0..count {
                let data = frame(format!("{i:06}").as_bytes());
                // Sent as the window allows: the stream waits on a slow reader.
                send.reserve_capacity(data.len());
                loop {
                    let capacity = std::future::poll_fn(|cx| {
                        let polled = send.poll_capacity(cx);
                        seen.stalled.store(polled.is_pending(), Ordering::SeqCst);
                        if polled.is_pending() {
                            seen.blocked.notify_waiters();
                        }
                        polled
                    });
                    match capacity.await {
                        Some(Ok(n)) if n >= data.len() => break,
                        Some(Ok(_)) => continue,
                        _ => {
                            seen.cancelled.fetch_add(1, Ordering::SeqCst);
                            seen.reset.notify_waiters();
                            return;
                        }
                    }
                }
                if send.send_data(data, false).is_err() {
                    seen.cancelled.fetch_add(1, Ordering::SeqCst);
                    seen.reset.notify_waiters();
                    return;
                }
                seen.sent.fetch_add(1, Ordering::SeqCst);
            }
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/Bidi" => {
            let mut send = respond.send_response(ok_head(), false).unwrap();
            while let Some(message) = messages.next().await {
                let reply = format!("{name}:{}", String::from_utf8_lossy(&message));
                if send.send_data(frame(reply.as_bytes()), false).is_err() {
                    return;
                }
            }
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/ClientStream" => {
            let mut count = 0;
            while messages.next().await.is_some() {
                count += 1;
            }
            // The client's trailers, when it sent any, are named in the answer.
            let trailer = match messages.body.trailers().await {
                Ok(Some(t)) => t
                    .get("x-client-trailer")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(":{v}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let _ = send.send_data(frame(format!("{count}{trailer}").as_bytes()), false);
            let _ = send.send_trailers(trailers(0, ""));
        }
        "/test.Echo/Denied" => {
            let _ = messages.next().await;
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let _ = send.send_data(frame(b"partial"), false);
            let _ = send.send_trailers(trailers(7, "no%20entry"));
        }
        "/test.Echo/Unavailable" => {
            let _ = messages.next().await;
            let mut head = ok_head();
            head.headers_mut().extend(trailers(14, "busy"));
            let _ = respond.send_response(head, true);
        }
        "/test.Echo/Hang" => {
            let _ = messages.next().await;
            // The stream stays open until the client resets it.
            let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            seen.cancelled.fetch_add(1, Ordering::SeqCst);
            seen.reset.notify_waiters();
        }
        "/test.Echo/HangAfterHead" => {
            let _ = messages.next().await;
            let mut send = respond.send_response(ok_head(), false).unwrap();
            let _ = std::future::poll_fn(|cx| send.poll_reset(cx)).await;
            seen.cancelled.fetch_add(1, Ordering::SeqCst);
            seen.reset.notify_waiters();
        }
        "/grpc.health.v1.Health/Check" => {
            let _ = messages.next().await;
            let mut send = respond.send_response(ok_head(), false).unwrap();
            // HealthCheckResponse { status = 1 SERVING | 2 NOT_SERVING }: field 1, varint.
            let status = if options.not_serving.load(Ordering::SeqCst) {
                2
            } else {
                1
            };
            let _ = send.send_data(frame(&[0x08, status]), false);
            let _ = send.send_trailers(trailers(0, ""));
        }
        _ => {
            let mut head = ok_head();
            head.headers_mut().extend(trailers(12, "unknown method"));
            let _ = respond.send_response(head, true);
        }
    }
}

/// A finished call as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub http_status: u16,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    /// From the trailers, or from the head of a trailers-only answer.
    pub status: Option<u8>,
    pub message: Option<String>,
}

impl Reply {
    pub fn texts(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }
}

fn status_of(map: &HeaderMap) -> (Option<u8>, Option<String>) {
    (
        map.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        map.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    )
}

/// A gRPC client over h2c to Meridian's listener.
#[derive(Clone)]
pub struct GrpcClient {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl GrpcClient {
    pub async fn connect(proxy: SocketAddr, authority: &str) -> Self {
        let stream = TcpStream::connect(proxy).await.unwrap();
        // Room for many small DATA frames unread: some tests read slowly on purpose.
        let (send, conn) = h2::client::Builder::new()
            .data_frame_budget(64 * 1024 * 1024)
            .handshake(stream)
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            send,
            authority: authority.to_owned(),
        }
    }

    /// Open a call: the request head sent, the body stream open.
    pub async fn open(
        &self,
        method: &str,
        headers: &[(&str, &str)],
    ) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
        let mut request = Request::post(format!("http://{}{method}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut send = self.send.clone().ready().await.unwrap();
        send.send_request(request.body(()).unwrap(), false).unwrap()
    }

    /// A call with `messages`, read to its end.
    pub async fn call(&self, method: &str, messages: &[&[u8]], headers: &[(&str, &str)]) -> Reply {
        let (response, mut body) = self.open(method, headers).await;
        for (i, m) in messages.iter().enumerate() {
            body.send_data(frame(m), i + 1 == messages.len()).unwrap();
        }
        if messages.is_empty() {
            body.send_data(Bytes::new(), true).unwrap();
        }
        read_reply(response).await
    }

    pub async fn unary(&self, message: &str) -> Reply {
        self.call("/test.Echo/Unary", &[message.as_bytes()], &[])
            .await
    }
}

/// Read an answer to its end: messages, then the status from trailers or the head.
pub async fn read_reply(response: h2::client::ResponseFuture) -> Reply {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            return Reply {
                http_status: 0,
                headers: HeaderMap::new(),
                messages: Vec::new(),
                status: None,
                message: Some(format!("stream error: {e}")),
            };
        }
    };
    let http_status = response.status().as_u16();
    let (parts, mut body) = response.into_parts();
    let (mut status, mut message) = status_of(&parts.headers);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut broken = None;
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                messages.extend(unframe(&mut buf));
            }
            Err(e) => {
                broken = Some(format!("stream error: {e}"));
                break;
            }
        }
    }
    if broken.is_none() {
        match body.trailers().await {
            Ok(Some(t)) => (status, message) = status_of(&t),
            Ok(None) => {}
            Err(e) => broken = Some(format!("stream error: {e}")),
        }
    }
    if let Some(b) = broken {
        status = None;
        message = Some(b);
    }
    Reply {
        http_status,
        headers: parts.headers,
        messages,
        status,
        message,
    }
}

/// Wait (at most `limit`) until `done` holds, woken by `notify`: no sleeping in between.
pub async fn wait_for(notify: &Notify, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return true;
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return done();
        }
    }
}
