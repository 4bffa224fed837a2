//! End to end: Meridian's HTTP/1.1 to upstreams against scripted backends that answer with
//! exact bytes: chunked and close-delimited bodies, interim responses, stale keep-alive
//! connections, early answers to a body still being sent, and the idle connection cap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Client, start_proxy};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream saw.
#[derive(Default)]
struct Seen {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Connections the proxy closed (EOF read while waiting for a request).
    closed_by_proxy: AtomicUsize,
    /// Connections the upstream closed after an answer that the proxy then closed too.
    closed_after_upstream: AtomicUsize,
    /// Answers whose writing failed (the proxy closed the connection while it was sent).
    write_failed: AtomicUsize,
    /// Request heads and bodies, in arrival order.
    requests: Mutex<Vec<(String, Vec<u8>)>>,
    /// Signalled whenever any of the above changes.
    changed: tokio::sync::Notify,
}

impl Seen {
    /// Wait (at most 3 s) until `condition` holds.
    async fn until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if condition(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("{what}");
            }
        }
    }
}

/// How a scripted upstream answers the `n`th request (from 0) on a connection.
struct Reply {
    bytes: Vec<u8>,
    /// Close the connection after writing.
    close: bool,
    /// Answer after the head, without reading the body.
    before_body: bool,
    /// Never answer; wait for the proxy to close.
    hang: bool,
    /// Written right after the head, before the body is read (interim answers).
    interim: &'static [u8],
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        bytes: bytes.into(),
        close: false,
        before_body: false,
        hang: false,
        interim: b"",
    }
}

async fn scripted<F>(answer: F) -> (SocketAddr, Arc<Seen>)
where
    F: Fn(usize, &str) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let answer = Arc::new(answer);
    let for_task = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            for_task.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, for_task.clone(), answer.clone()));
        }
    });
    (addr, seen)
}

async fn serve<F>(mut stream: TcpStream, seen: Arc<Seen>, answer: Arc<F>)
where
    F: Fn(usize, &str) -> Reply + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    for n in 0.. {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    seen.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
                    seen.changed.notify_waiters();
                    return;
                }
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let r = answer(n, &head);
        if !r.interim.is_empty() && stream.write_all(r.interim).await.is_err() {
            return;
        }
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if !r.before_body {
            if let Some(len) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                while buf.len() < len {
                    let mut chunk = [0u8; 65536];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                body = buf.drain(..len).collect();
            } else if lower.contains("transfer-encoding: chunked") {
                loop {
                    if let Some(i) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                        body = buf.drain(..i + 5).collect();
                        break;
                    }
                    let mut chunk = [0u8; 65536];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
            }
        }
        seen.requests.lock().unwrap().push((head, body));
        seen.changed.notify_waiters();
        if r.hang {
            let mut sink = [0u8; 4096];
            while let Ok(k) = stream.read(&mut sink).await {
                if k == 0 {
                    break;
                }
            }
            seen.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
            seen.changed.notify_waiters();
            return;
        }
        if stream.write_all(&r.bytes).await.is_err() {
            seen.write_failed.fetch_add(1, Ordering::SeqCst);
            seen.changed.notify_waiters();
            return;
        }
        if r.close {
            // Lingering close, as real servers do: unread bytes would turn the close into a
            // reset that destroys the answer in flight.
            let _ = stream.shutdown().await;
            let mut sink = [0u8; 65536];
            while let Ok(k) = stream.read(&mut sink).await {
                if k == 0 {
                    seen.closed_after_upstream.fetch_add(1, Ordering::SeqCst);
                    seen.changed.notify_waiters();
                    break;
                }
            }
            return;
        }
    }
}

fn config(endpoint: SocketAddr, pool: &str) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{endpoint}\"] }}
    outlier_detection: {{ enabled: false }}
    {pool}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, timeout: 5s, max_replay_body: 1024 }}
"
    )
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_the_connection_is_reused() {
    let (upstream, seen) = scripted(|_, _| {
        reply(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        )
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..3 {
        let answer = client.get("a.test", "/", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "hello world");
    }
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "one upstream connection for all three"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_and_heads_have_no_body() {
    let (upstream, seen) = scripted(|_, head| {
        if head.starts_with("HEAD") {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
        } else {
            reply(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                 HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone",
            )
        }
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let answer = client
        .request_with_body(
            Method::POST,
            "a.test",
            "/",
            &[],
            Bytes::from_static(b"data"),
        )
        .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, "done");
    let answer = client.request(Method::HEAD, "a.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-length"], "42");
    assert_eq!(answer.body, "");
    // The HEAD answer had no body: the same connection carries the next request.
    let answer = client
        .request_with_body(Method::POST, "a.test", "/", &[], Bytes::new())
        .await;
    assert_eq!(answer.status, 201);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests[0].1, b"data");
    assert!(
        requests[2]
            .0
            .to_ascii_lowercase()
            .contains("content-length: 0\r\n"),
        "an empty POST says so: {}",
        requests[2].0
    );
}

#[tokio::test]
async fn close_delimited_bodies_arrive_whole_and_the_connection_is_not_reused() {
    let (upstream, seen) = scripted(|_, _| Reply {
        close: true,
        ..reply("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for _ in 0..2 {
        let answer = client.get("a.test", "/", &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "until the end");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_keep_alive_connection_the_upstream_closed_is_replaced_without_an_error() {
    // Every connection answers once, announcing keep-alive, then closes.
    let (upstream, seen) = scripted(|_, _| Reply {
        close: true,
        ..reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    for i in 0..4 {
        let answer = client
            .get("a.test", "/", &[("x-meridian-debug", "1")])
            .await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
        assert_eq!(answer.body, "ok");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 4);
    // Whether the close was noticed before the pooled connection was taken or only when
    // the request got no answer, it is not a failed try.
    let table = proxy.table.load();
    assert_eq!(table.clusters[0].stats.retries.get(), 0);
    assert_eq!(table.clusters[0].stats.attempts_reset.get(), 0);
}

#[tokio::test]
async fn only_idempotent_requests_are_resent_after_a_close_without_answer() {
    // The first request on a connection is answered; the second is read and the connection
    // closed without a word.
    let (upstream, seen) = scripted(|n, _| match n {
        0 => reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        _ => Reply {
            close: true,
            ..reply("")
        },
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    assert_eq!(client.get("a.test", "/", &[]).await.status, 200);
    // GET on the reused connection: closed on, sent again on a fresh one.
    let answer = client.get("a.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "ok");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    // POST on the reused connection: it may have been acted on, so it is not sent again.
    let answer = client
        .request_with_body(
            Method::POST,
            "a.test",
            "/",
            &[],
            Bytes::from_static(b"once"),
        )
        .await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert_eq!(answer.headers["x-meridian-error"], "upstream-reset");
    let posts = seen
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(head, _)| head.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "the POST reached the upstream exactly once");
}

#[tokio::test]
async fn an_early_answer_stops_a_streamed_body_and_reaches_the_client() {
    let (upstream, seen) = scripted(|_, _| Reply {
        close: true,
        before_body: true,
        ..reply("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo much")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    // Larger than max_replay_body (1 KiB): streamed, not buffered.
    let body = Bytes::from(vec![b'x'; 4 * 1024 * 1024]);
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_body(Method::PUT, "a.test", "/", &[], body),
    )
    .await
    .expect("the early answer is passed on, not waited past");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.body, "too much");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_answers_while_a_body_is_sent_do_not_stop_it() {
    // The upstream answers 100 Continue and 103 Early Hints before it reads the body, as
    // servers that honour Expect (or send hints early) do; the body must still arrive whole.
    let (upstream, seen) = scripted(|_, _| Reply {
        interim: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
        ..reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut raw = TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    // Larger than max_replay_body (1 KiB): streamed, not buffered.
    let len = 200_000;
    raw.write_all(
        format!("POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_until = |answer: &Vec<u8>, what: &[u8]| answer.windows(what.len()).any(|w| w == what);
    while !read_until(&answer, b"100 Continue\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(3), raw.read(&mut chunk))
            .await
            .expect("the client is told to go on")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    raw.write_all(&vec![b'z'; len]).await.unwrap();
    while !read_until(&answer, b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(3), raw.read(&mut chunk))
            .await
            .expect("the final answer arrives")
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("HTTP/1.1 200 OK\r\n"), "{text}");
    let requests = seen.requests.lock().unwrap();
    let (head, body) = &requests[0];
    assert_eq!(body.len(), len);
    // The client's Expect was answered by Meridian; the upstream is not asked again.
    assert!(!head.to_ascii_lowercase().contains("expect:"), "{head}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_send_timeout_and_frees_its_permit() {
    const BIG: usize = 32 << 20;
    let (upstream, seen) = scripted(|_, head| {
        if head.starts_with("GET /big ") {
            let mut bytes =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            bytes.resize(bytes.len() + BIG, b'b');
            reply(bytes)
        } else {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    // One request at a time: the stalled client's answer holds the only permit.
    let yaml = config(upstream, "connection_pool: { max_requests: 1 }").replace(
        "bind: \"127.0.0.1:0\" }",
        "bind: \"127.0.0.1:0\", send_timeout: 300ms }",
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    seen.until("the big answer is requested", |s| {
        s.requests.lock().unwrap().len() == 1
    })
    .await;
    let asked = std::time::Instant::now();
    // The stalled client reads nothing: once Meridian's writes to it have been blocked for
    // 300 ms it closes the connection, and with it the upstream exchange.
    seen.until("the stalled exchange is given up", |s| {
        s.write_failed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(asked.elapsed() >= Duration::from_millis(300));
    let answer = common::get(addr, "a.test", "/small", &[]).await;
    assert_eq!(answer.status, 200, "the permit is free again");
    assert_eq!(answer.body, "ok");
    // The stalled client gets what was sent before the close, then the end.
    let mut sink = vec![0u8; 1 << 20];
    let mut received = 0;
    loop {
        match stalled.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < BIG,
        "the answer was cut off, not finished ({received} bytes)"
    );
}

#[tokio::test]
async fn streamed_request_bodies_keep_their_length_or_go_chunked() {
    let (upstream, seen) =
        scripted(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut client = Client::connect(proxy.proxy_addr().unwrap(), None).await;
    let body = Bytes::from(vec![b'y'; 5000]);
    let answer = client
        .request_with_body(Method::POST, "a.test", "/", &[], body.clone())
        .await;
    assert_eq!(answer.status, 200);
    // A chunked client body past the replay limit goes upstream chunked.
    let mut raw = TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    let mut req = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
    req.extend_from_slice(&body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    raw.write_all(&req).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = raw.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    let requests = seen.requests.lock().unwrap();
    let (head, sent) = &requests[0];
    assert!(
        head.to_ascii_lowercase()
            .contains("content-length: 5000\r\n"),
        "{head}"
    );
    assert_eq!(sent.len(), 5000);
    let (head, sent) = &requests[1];
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(sent.ends_with(b"0\r\n\r\n"));
    let data: usize = sent.iter().filter(|b| **b == b'y').count();
    assert_eq!(data, 5000);
}

#[tokio::test]
async fn idle_connections_past_the_cap_are_closed() {
    // Answers wait until six requests are in, so six connections open at once.
    let arrived = Arc::new(tokio::sync::Barrier::new(6));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (closed, mut closes) = tokio::sync::mpsc::unbounded_channel::<()>();
    {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (arrived, closed) = (arrived.clone(), closed.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    arrived.wait().await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    if let Ok(0) = stream.read(&mut buf).await {
                        let _ = closed.send(());
                    }
                });
            }
        });
    }
    let proxy = start_proxy(&config(
        upstream,
        "connection_pool: { max_idle_per_endpoint: 2 }",
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(tokio::spawn(async move {
            common::get(addr, "a.test", "/", &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    for i in 0..4 {
        tokio::time::timeout(Duration::from_secs(5), closes.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of six connections were closed"));
    }
    assert_eq!(
        proxy.table.load().clusters[0].pool.open_connections(),
        2,
        "two kept idle"
    );
    assert!(closes.try_recv().is_err(), "no fifth connection was closed");
}

#[tokio::test]
async fn a_connection_given_up_mid_exchange_frees_its_place_for_a_waiting_request() {
    // /slow is never answered; anything else is.
    let (upstream, _seen) = scripted(|_, head| {
        if head.starts_with("GET /slow") {
            Reply {
                hang: true,
                ..reply("")
            }
        } else {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{upstream}\"] }}
    outlier_detection: {{ enabled: false }}
    connection_pool: {{ max_connections: 1 }}
routes:
  - {{ name: slow, hosts: [\"*\"], match: {{ path_prefix: /slow }}, cluster: api, timeout: 5s,
       retries: {{ attempts: 0, per_try_timeout: 300ms }} }}
  - {{ name: rest, hosts: [\"*\"], cluster: api, timeout: 4s, retries: {{ attempts: 0 }} }}
"
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let slow = tokio::spawn(async move { common::get(addr, "a.test", "/slow", &[]).await });
    // Wait until the slow request holds the only connection.
    let pool = proxy.table.load().clusters[0].pool.clone();
    while pool.open_connections() == 0 {
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    let answer = common::get(addr, "a.test", "/fast", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the waiting request was woken when the slow try gave up, not at its own timeout ({:?})",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap().status, 504);
}

#[tokio::test]
async fn trailers_of_a_chunked_answer_reach_a_client_that_accepts_them() {
    let (upstream, _seen) = scripted(|_, _| {
        reply(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
             2\r\nok\r\n0\r\nx-checksum: abc\r\n\r\n",
        )
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let (answer, closed) = common::raw_exchange(
        proxy.proxy_addr().unwrap(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed);
    let answer = answer.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("\r\n2\r\nok\r\n"), "{answer}");
    assert!(answer.contains("0\r\nx-checksum: abc\r\n"), "{answer}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_takes_the_upstream_exchange_with_it() {
    let (upstream, seen) = scripted(|_, _| Reply {
        hang: true,
        ..reply("")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let mut raw = TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    raw.write_all(b"GET /wait HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    // The request reached the upstream; now the client goes away.
    seen.until("the request never reached the upstream", |s| {
        !s.requests.lock().unwrap().is_empty()
    })
    .await;
    drop(raw);
    seen.until(
        "the upstream connection was kept for a client that left",
        |s| s.closed_by_proxy.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert_eq!(proxy.table.load().clusters[0].pool.open_connections(), 0);
}

/// An answer whose body is the request's path, so each answer names the request it answers.
fn path_echo(_: usize, head: &str) -> Reply {
    let path = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
    reply(format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
        path.len()
    ))
}

/// What the client reads until it ends with `suffix` (within 3 s; a close first fails).
async fn read_until(client: &mut TcpStream, suffix: &str) -> String {
    let mut text = String::new();
    let mut chunk = [0u8; 4096];
    while !text.ends_with(suffix) {
        let n = tokio::time::timeout(Duration::from_secs(3), client.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer ending in {suffix} within 3 s: {text}"))
            .unwrap();
        assert!(n > 0, "closed instead of answered: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    text
}

#[tokio::test]
async fn small_bodies_by_content_length_are_read_by_the_own_loop() {
    let (upstream, seen) = scripted(path_echo).await;
    let yaml = config(upstream, "").replace(
        "bind: \"127.0.0.1:0\" }",
        "bind: \"127.0.0.1:0\", header_read_timeout: 500ms }",
    );
    let proxy = start_proxy(&yaml).await;
    let mut client = TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    client.set_nodelay(true).unwrap();
    // A body that comes in two writes, a GET pipelined behind it in the second.
    client
        .write_all(
            b"POST /one HTTP/1.1\r\nHost: a.test\r\nX-Case-Kept: 1\r\nContent-Length: 5\r\n\r\nhe",
        )
        .await
        .unwrap();
    client
        .write_all(b"lloGET /two HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut client, "/two").await;
    assert!(
        text.find("\r\n\r\n/one").unwrap() < text.find("\r\n\r\n/two").unwrap(),
        "{text}"
    );
    {
        let requests = seen.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        let (head, body) = &requests[0];
        assert_eq!(body, b"hello");
        // Header names keep their case on Meridian's own path (hyper's lowercases them).
        assert!(head.contains("\r\nX-Case-Kept: 1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("content-length: 5\r\n"),
            "{head}"
        );
        assert!(requests[1].0.starts_with("GET /two "));
    }
    // The body has its own deadline from the end of its head: idle time before the head and
    // a pause inside the body (300 ms each, 600 ms together) fit in 500 ms each.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .write_all(b"POST /three HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(b"cd").await.unwrap();
    read_until(&mut client, "/three").await;
    assert_eq!(seen.requests.lock().unwrap()[2].1, b"abcd");
    // A body that never arrives whole: 408 at its deadline, nothing sent upstream.
    client
        .write_all(b"POST /four HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest))
        .await
        .expect("closed at the deadline")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 408 "), "{rest}");
    assert!(
        rest.contains("x-meridian-error: request-timeout\r\n"),
        "{rest}"
    );
    assert_eq!(seen.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_off_to_hyper() {
    let (upstream, _seen) = scripted(path_echo).await;
    let proxy = start_proxy(&config(upstream, "")).await;
    // Two body-less requests Meridian answers itself, one with a chunked body (handed to
    // hyper with everything read so far), then one more on hyper's side, the last asking to
    // close.
    let (text, closed) = common::raw_exchange(
        proxy.proxy_addr().unwrap(),
        b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n\
          HEAD /two HTTP/1.1\r\nHost: a.test\r\n\r\n\
          POST /three HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed, "the connection is closed after the last answer");
    let text = text.to_ascii_lowercase();
    assert_eq!(text.matches("http/1.1 200 ok").count(), 4, "{text}");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {text}"))
    };
    assert!(
        at("\r\n\r\n/one") < at("\r\n\r\n/three") && at("\r\n\r\n/three") < at("\r\n\r\n/four")
    );
    assert!(!text.contains("/two"), "HEAD answers carry no body: {text}");
    assert!(
        text.contains("content-length: 4\r\n"),
        "HEAD keeps the length: {text}"
    );
    assert_eq!(
        text.matches("\r\ndate: ").count(),
        4,
        "every answer is dated, on either side of the hand-off"
    );
}

#[tokio::test]
async fn answers_meridian_writes_itself_carry_a_date_and_honour_close() {
    let proxy = start_proxy(&config("127.0.0.1:9".parse().unwrap(), "")).await;
    let (text, closed) = common::raw_exchange(
        proxy.proxy_addr().unwrap(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed);
    let text = text.to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 502 bad gateway\r\n"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: "), "{text}");
}

#[tokio::test]
async fn a_head_with_bare_line_feeds_is_answered_not_waited_on() {
    let (upstream, _seen) =
        scripted(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = start_proxy(&config(upstream, "")).await;
    for head in [
        &b"GET / HTTP/1.1\nHost: a.test\n\n"[..],
        b"GET / HTTP/1.1\nHost: a.test\n\r\n",
    ] {
        let mut raw = TcpStream::connect(proxy.proxy_addr().unwrap())
            .await
            .unwrap();
        raw.write_all(head).await.unwrap();
        let mut answer = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), raw.read(&mut answer))
            .await
            .expect("answered at once, not at the header timeout")
            .unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 "),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
    }
}

#[tokio::test]
async fn hop_by_hop_fields_of_an_answer_stay_behind_on_either_side_of_the_hand_off() {
    let (upstream, _seen) = scripted(|_, _| {
        reply(
            "HTTP/1.1 200 OK\r\nServer: scripted\r\nContent-Length: 2\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\nX-Request-Id: upstream-id\r\n\
             X-Meridian-Region: forged\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             Trailer: x-sum\r\n\r\nok",
        )
    })
    .await;
    let proxy = start_proxy(&config(upstream, "")).await;
    // The first answer is written by Meridian's own HTTP/1.1 loop, the second and third by
    // hyper (the request with a body hands the connection over).
    let (text, closed) = common::raw_exchange(
        proxy.proxy_addr().unwrap(),
        b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc\
          GET /three HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(closed);
    let text = text.to_ascii_lowercase();
    let answers: Vec<&str> = text.split("http/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text}");
    for answer in answers {
        assert!(answer.starts_with("200 ok\r\n"), "{answer}");
        for gone in [
            "x-hop:",
            "keep-alive:",
            "proxy-authenticate:",
            "upgrade:",
            "upstream-id",
            "forged",
        ] {
            assert!(!answer.contains(gone), "{gone} passed on: {answer}");
        }
        for kept in [
            "\r\nserver: scripted\r\n",
            "\r\nset-cookie: a=1\r\n",
            "\r\nset-cookie: b=2\r\n",
            "\r\ntrailer: x-sum\r\n",
            "\r\ncontent-length: 2\r\n",
        ] {
            assert!(answer.contains(kept), "{kept} missing: {answer}");
        }
        assert_eq!(
            answer
                .matches("\r\nx-meridian-region: us-east-1\r\n")
                .count(),
            1,
            "{answer}"
        );
        assert_eq!(answer.matches("\r\nx-request-id: ").count(), 1, "{answer}");
        assert_eq!(
            answer.matches("\r\ncontent-length: ").count(),
            1,
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    }
}

#[tokio::test]
async fn request_headers_reach_the_upstream_cleaned_on_either_side_of_the_hand_off() {
    let (upstream, seen) =
        scripted(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = start_proxy(&config(upstream, "")).await;
    // The first request is read by Meridian's own HTTP/1.1 loop, the second (with a body)
    // by hyper. The peer is not a trusted proxy: its forwarding headers are replaced.
    let headers = "X-Custom: Kept As Sent\r\nConnection: X-Drop\r\nX-Drop: 1\r\n\
                   Keep-Alive: timeout=5\r\nX-Meridian-Debug: 1\r\nX-Forwarded-For: 192.0.2.9\r\n\
                   X-Request-Id: forged\r\nX-Forwarded-Proto: https\r\nAccept: a\r\nAccept: b\r\n";
    let request = format!(
        "GET /one HTTP/1.1\r\nHost: a.test\r\n{headers}\r\n\
         POST /two HTTP/1.1\r\nHost: a.test\r\n{headers}Content-Length: 3\r\n\r\nabc\
         GET /three HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    );
    let (text, closed) =
        common::raw_exchange(proxy.proxy_addr().unwrap(), request.as_bytes()).await;
    assert!(closed);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    // Names keep the case they were sent in on the own loop's side.
    assert!(
        requests[0].0.contains("\r\nX-Custom: Kept As Sent\r\n"),
        "{}",
        requests[0].0
    );
    for (head, _) in &requests[..2] {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nx-custom: kept as sent\r\n"), "{head}");
        for gone in [
            "x-drop",
            "keep-alive",
            "connection:",
            "x-meridian-debug",
            "192.0.2.9",
            "forged",
            "https",
        ] {
            assert!(!lower.contains(gone), "{gone} reached the upstream: {head}");
        }
        for one in [
            "\r\nhost: ",
            "\r\nx-forwarded-for: 127.0.0.1\r\n",
            "\r\nx-request-id: ",
            "\r\nx-forwarded-proto: http\r\n",
        ] {
            assert_eq!(lower.matches(one).count(), 1, "{one}: {head}");
        }
        assert_eq!(
            lower.matches("\r\naccept: ").count(),
            2,
            "repeated headers pass: {head}"
        );
    }
    assert_eq!(requests[1].1, b"abc");
}

#[tokio::test]
async fn a_host_the_connection_header_names_is_put_back_for_the_upstream() {
    let (upstream, seen) =
        scripted(|_, _| reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let proxy = start_proxy(&config(upstream, "")).await;
    let (text, _) = common::raw_exchange(
        proxy.proxy_addr().unwrap(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let head = seen.requests.lock().unwrap()[0].0.to_ascii_lowercase();
    assert_eq!(head.matches("\r\nhost: a.test\r\n").count(), 1, "{head}");
}

/// Wait (at most 3 s) until the cluster's pool holds no connection.
async fn until_no_connections(proxy: &meridian::server::RunningServer) {
    for _ in 0..300 {
        if proxy.table.load().clusters[0].pool.open_connections() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pool still counts a connection");
}

#[tokio::test]
async fn idle_pooled_connections_are_closed_once_idle_timeout_passes() {
    // Answers wait until three requests are in, so three connections open at once.
    let arrived = Arc::new(tokio::sync::Barrier::new(3));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    {
        let (arrived, seen) = (arrived.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                let (arrived, seen) = (arrived.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut first = true;
                    // Answer every request, keeping the connection, until the proxy closes it.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            seen.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
                            seen.changed.notify_waiters();
                            return;
                        }
                        if std::mem::take(&mut first) {
                            arrived.wait().await;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
    let proxy = start_proxy(&config(upstream, "connection_pool: { idle_timeout: 1s }")).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(async move {
            common::get(addr, "a.test", "/", &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Reused while fresh: one more request takes a pooled connection.
    assert_eq!(common::get(addr, "a.test", "/", &[]).await.status, 200);
    let last_use = tokio::time::Instant::now();
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(seen.closed_by_proxy.load(Ordering::SeqCst), 0);
    // Nothing else arrives: Meridian closes all three itself once they have idled 1 s.
    seen.until("idle pooled connections outlived idle_timeout", |s| {
        s.closed_by_proxy.load(Ordering::SeqCst) == 3
    })
    .await;
    // The last one closed is the one used last (loose: it went back to the pool a little
    // before the client had its answer).
    assert!(
        last_use.elapsed() >= Duration::from_millis(500),
        "closed {:?} after the last use, well before idle_timeout",
        last_use.elapsed()
    );
    until_no_connections(&proxy).await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closes_is_closed_without_waiting_for_a_request() {
    // The upstream answers with keep-alive, and closes its side only when told to, while the
    // connection idles in the pool; then it waits for the proxy to close its own.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let close = Arc::new(tokio::sync::Notify::new());
    {
        let (seen, close) = (seen.clone(), close.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, close) = (seen.clone(), close.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    stream.write_all(answer).await.unwrap();
                    close.notified().await;
                    stream.shutdown().await.unwrap();
                    if let Ok(0) = stream.read(&mut buf).await {
                        seen.closed_after_upstream.fetch_add(1, Ordering::SeqCst);
                        seen.changed.notify_waiters();
                    }
                });
            }
        });
    }
    let proxy = start_proxy(&config(upstream, "connection_pool: { idle_timeout: 60s }")).await;
    let answer = common::get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        proxy.table.load().clusters[0].pool.open_connections(),
        1,
        "pooled"
    );
    close.notify_one();
    // No request follows; the proxy's side must not sit in CLOSE-WAIT until one does.
    seen.until("the proxy kept a connection the upstream had closed", |s| {
        s.closed_after_upstream.load(Ordering::SeqCst) == 1
    })
    .await;
    until_no_connections(&proxy).await;
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closes_as_it_answers_is_not_pooled() {
    // Keep-alive announced, then the upstream closes at once: the close is there by the time
    // the answer has been read, and the connection is not put back.
    let (upstream, seen) = scripted(|_, _| Reply {
        close: true,
        ..reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let proxy = start_proxy(&config(upstream, "connection_pool: { idle_timeout: 60s }")).await;
    let answer = common::get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    seen.until("the proxy kept a connection the upstream had closed", |s| {
        s.closed_after_upstream.load(Ordering::SeqCst) == 1
    })
    .await;
    until_no_connections(&proxy).await;
}
