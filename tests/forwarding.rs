//! End to end: what reaches the upstream and the client, and how failures are answered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Backends, get, raw_exchange, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ONE_ROUTE: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\", header_read_timeout: 300ms }]
admin: { bind: \"127.0.0.1:0\" }
geo: { trusted_proxies: [\"10.0.0.0/8\"] }
{REGIONS}
clusters:
  api: { endpoints: { eu-west-1: [\"{EU}\"] } }
routes:
  - name: api
    hosts: [\"api.example.com\"]
    cluster: api
";

#[tokio::test]
async fn headers_are_rewritten_both_ways() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ONE_ROUTE)).await;
    let answer = get(
        proxy.proxy_addr().unwrap(),
        "api.example.com",
        "/echo",
        &[
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-request-id", "forged"),
            ("x-app", "kept"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.region(), "eu-west-1");
    let seen = answer.json();
    let h = &seen["headers"];
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["x-app"], "kept");
    assert_eq!(h["host"], "api.example.com", "Host is preserved");
    // The peer (127.0.0.1) is not trusted: its X-Forwarded-For and request id are replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    let id = h["x-request-id"].as_str().unwrap();
    assert_ne!(id, "forged");
    assert_eq!(id.len(), 32);
    assert_eq!(
        answer.headers["x-request-id"], id,
        "the client sees the same id"
    );
    assert_eq!(answer.headers["x-meridian-region"], "eu-west-1");
}

async fn proxy_to(endpoint: &str, timeout: &str) -> meridian::server::RunningServer {
    start_proxy(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  api: {{ connect_timeout: 500ms, endpoints: {{ us-east-1: [\"{endpoint}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, timeout: {timeout} }}
"
    ))
    .await
}

#[tokio::test]
async fn refused_connection_is_502() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy_to(&port.to_string(), "2s").await;
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(
        answer.headers["x-meridian-error"],
        "upstream-connect-failure"
    );
    assert!(answer.body.contains("us-east-1"), "{}", answer.body);
    assert!(
        !answer.body.contains(&port.to_string()),
        "upstream address leaked: {}",
        answer.body
    );
}

#[tokio::test]
async fn silent_upstream_is_504_after_the_route_timeout() {
    // Accepts connections and reads, but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let proxy = proxy_to(&addr.to_string(), "200ms").await;
    let started = std::time::Instant::now();
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.headers["x-meridian-error"], "upstream-timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn upstream_that_hangs_up_is_502() {
    let rude = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = rude.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let proxy = proxy_to(&addr.to_string(), "2s").await;
    let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["x-meridian-error"], "upstream-reset");
}

#[tokio::test]
async fn missing_host_is_400_and_slow_headers_time_out() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ONE_ROUTE)).await;
    let addr = proxy.proxy_addr().unwrap();

    let (reply, _) = raw_exchange(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("missing-host"), "{reply}");

    // Half a request head, then silence: the header read timeout (300ms) closes it.
    let started = std::time::Instant::now();
    let (reply, _) = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: api.example.com\r\n").await;
    let waited = started.elapsed();
    assert!(!reply.contains("200 OK"), "{reply}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(backends.hits(), [0, 0, 0]);
}

/// The header read timeout counts from when the connection starts waiting for each head: a
/// keep-alive connection busy for longer than the timeout in all stays open, an idle one
/// is closed once the timeout has passed since its last answer, and a head that starts
/// arriving late on a used connection is timed from the end of the answer before it.
#[tokio::test]
async fn header_read_timeout_counts_from_each_wait() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ONE_ROUTE)).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut answered = 0;
    let mut pending = Vec::new();
    // Nine requests 100 ms apart: 800 ms on one connection, more than twice the 300 ms.
    for i in 0..9 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
            .await
            .unwrap();
        let mut chunk = [0u8; 4096];
        while pending.windows(4).filter(|w| w == b"\r\n\r\n").count() == 0 {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {answered} answers");
            pending.extend_from_slice(&chunk[..n]);
        }
        assert!(pending.starts_with(b"HTTP/1.1 200"), "{pending:?}");
        // Skip this answer (head and the backend's short body).
        let text = String::from_utf8_lossy(&pending).into_owned();
        let head_end = text.find("\r\n\r\n").unwrap() + 4;
        let length: usize = text[..head_end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        while pending.len() < head_end + length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            pending.extend_from_slice(&chunk[..n]);
        }
        pending.drain(..head_end + length);
        answered += 1;
    }
    assert_eq!(answered, 9);

    // Half a head 200 ms after the last answer, then silence: closed 300 ms after the
    // answer, not 300 ms after the half head.
    let idle_from = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut rest))
        .await
        .expect("the connection was never closed")
        .unwrap();
    let closed_after = idle_from.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        closed_after >= Duration::from_millis(250) && closed_after < Duration::from_millis(490),
        "closed {closed_after:?} after the last answer"
    );
}

#[tokio::test]
async fn admin_reports_health_and_readiness_until_drained() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ONE_ROUTE)).await;
    let admin = proxy.admin.unwrap();
    assert_eq!(get(admin, "admin", "/healthz", &[]).await.status, 200);
    assert_eq!(get(admin, "admin", "/readyz", &[]).await.body, "ready\n");
    let page = get(admin, "admin", "/", &[]).await;
    assert!(page.body.contains("<title>Meridian status</title>"));
    let clusters: serde_json::Value =
        serde_json::from_str(&get(admin, "admin", "/clusters", &[]).await.body).unwrap();
    assert_eq!(clusters["generation"], 1);
    assert_eq!(clusters["clusters"][0]["regions"][0]["region"], "eu-west-1");

    // A request in flight when shutdown starts still completes.
    let proxy_addr = proxy.proxy_addr().unwrap();
    let slow =
        tokio::spawn(async move { get(proxy_addr, "api.example.com", "/delay/300", &[]).await });
    let reached = tokio::time::timeout(Duration::from_secs(5), async {
        while backends.hits()[1] == 0 {
            tokio::task::yield_now().await;
        }
    });
    reached
        .await
        .expect("the slow request never reached the backend");
    let lifecycle = proxy.lifecycle.clone();
    proxy.shutdown(Duration::from_secs(5)).await;
    assert!(lifecycle.draining.load(std::sync::atomic::Ordering::SeqCst));
    let answer = slow.await.unwrap();
    assert_eq!(
        (answer.status.as_u16(), answer.region()),
        (200, "eu-west-1")
    );
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin listener closed after shutdown"
    );
    assert!(
        TcpStream::connect(proxy_addr).await.is_err(),
        "proxy listener closed after shutdown"
    );
}

#[tokio::test]
async fn h2c_clients_are_proxied_to_http1_upstreams() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(ONE_ROUTE)).await;
    let stream = TcpStream::connect(proxy.proxy_addr().unwrap())
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for path in ["/echo", "/nowhere"] {
        let req = http::Request::get(format!("http://api.example.com{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-meridian-region"], "eu-west-1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        if path == "/echo" {
            let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                seen["headers"]["host"], "api.example.com",
                "authority becomes Host upstream"
            );
        }
    }
    let req = http::Request::get("http://other.example.com/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 404);
}

#[tokio::test]
async fn stalled_bodies_time_out_both_ways() {
    use http_body_util::BodyExt;
    // An upstream that sends a head and five of a hundred body bytes, then stalls.
    let stalling = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = stalling.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = stalling.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
                .await;
            held.push(stream);
        }
    });
    let proxy = start_proxy(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{upstream}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, response_idle_timeout: 300ms, body_idle_timeout: 300ms }}
"
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();

    // Response side: the head arrives, then the body is cut off after the idle timeout.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let started = std::time::Instant::now();
    let req = http::Request::get("/")
        .header("host", "a.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await;
    assert!(body.is_err(), "the stalled body must not look complete");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Request side: a streamed body (larger than the replay buffer) that stalls is given up on.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 200000\r\n\r\nsome bytes")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "the stalled request body was waited on for {waited:?}"
    );
}

#[tokio::test]
async fn ambiguous_or_oversized_upstream_responses_become_502() {
    // Backends that answer with both framings, with Content-Length twice, or with 150 headers.
    let mut upstreams = Vec::new();
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    for reply in [
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_owned(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_owned(),
        format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 2\r\n\r\nok"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        upstreams.push(listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
    }
    for upstream in upstreams {
        let proxy = proxy_to(&upstream.to_string(), "2s").await;
        let answer = get(proxy.proxy_addr().unwrap(), "a.test", "/", &[]).await;
        assert_eq!(answer.status, 502, "{upstream}: {}", answer.body);
    }
}
