//! Malformed and smuggling HTTP/1.1 requests over raw sockets: each refused one gets the right
//! status, the connection closes, and the backend never sees it; each accepted one reaches the
//! backend exactly once with clean framing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Backends, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONFIG: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\", header_read_timeout: 2s }]
admin: { bind: null }
access_log: { enabled: false }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"] }, outlier_detection: { enabled: false } }
routes:
  - { name: api, hosts: [\"a.test\"], cluster: api, max_body: 1000, retries: { attempts: 0 } }
";

/// Send raw bytes, read until the server closes (bounded), return what came back.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    exchange_then(addr, bytes, false).await
}

/// As `exchange`; with `finish`, the client also ends its side after sending.
async fn exchange_then(addr: std::net::SocketAddr, bytes: &[u8], finish: bool) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if finish {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    // Well under the listener's 2 s header timeout: the close must come from the refusal.
    let closed = tokio::time::timeout(Duration::from_millis(1500), stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn req(head: &str) -> Vec<u8> {
    head.replace('\n', "\r\n").into_bytes()
}

#[tokio::test]
async fn refused_requests_never_reach_the_backend() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let addr = proxy.proxy_addr().unwrap();
    let long_uri = format!("GET /{} HTTP/1.1\nHost: a.test\n\n", "a".repeat(9000));
    let big_head = format!(
        "GET / HTTP/1.1\nHost: a.test\nX-Big: {}\n\n",
        "b".repeat(70 * 1024)
    );
    let many: String = (0..120).map(|i| format!("X-H{i}: v\n")).collect();
    let many_headers = format!("GET / HTTP/1.1\nHost: a.test\n{many}\n");
    let big_body = format!(
        "POST / HTTP/1.1\nHost: a.test\nContent-Length: 2000\n\n{}",
        "x".repeat(2000)
    );
    let big_chunked = format!(
        "POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\n7d0\n{}\n0\n\n",
        "x".repeat(2000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "CL and TE",
            req(
                "POST / HTTP/1.1\nHost: a.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n",
            ),
            "400",
        ),
        (
            "TE and CL",
            req(
                "POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\nContent-Length: 4\n\n0\n\n",
            ),
            "400",
        ),
        (
            "TE identity, chunked",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: identity, chunked\n\n0\n\n"),
            "400",
        ),
        (
            "TE gzip, chunked",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: gzip, chunked\n\n0\n\n"),
            "400",
        ),
        (
            "TE chunked, chunked",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked, chunked\n\n0\n\n"),
            "400",
        ),
        (
            "two TE lines",
            req(
                "POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n0\n\n",
            ),
            "400",
        ),
        (
            "TE xchunked",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: xchunked\n\n0\n\n"),
            "400",
        ),
        (
            "TE gzip only",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: gzip\n\nabc"),
            "400",
        ),
        (
            "TE in HTTP/1.0",
            req("POST / HTTP/1.0\nHost: a.test\nTransfer-Encoding: chunked\n\n0\n\n"),
            "400",
        ),
        (
            "Content_Length",
            req("POST / HTTP/1.1\nHost: a.test\nContent_Length: 4\n\nabcd"),
            "400",
        ),
        (
            "Transfer_Encoding",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer_Encoding: chunked\n\n"),
            "400",
        ),
        (
            "two different CL",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: 4\nContent-Length: 5\n\nabcd"),
            "400",
        ),
        (
            "CL list",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: 4, 4\n\nabcd"),
            "400",
        ),
        (
            "CL not a number",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: abc\n\n"),
            "400",
        ),
        (
            "CL negative",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: -1\n\n"),
            "400",
        ),
        (
            "CL plus sign",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: +4\n\nabcd"),
            "400",
        ),
        (
            "CL overflow",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: 99999999999999999999999\n\n"),
            "400",
        ),
        ("no Host", req("GET / HTTP/1.1\nX-A: 1\n\n"), "400"),
        (
            "absolute URI without Host",
            req("GET http://a.test/ HTTP/1.1\nX-A: 1\n\n"),
            "400",
        ),
        (
            "X_Forwarded_For",
            req("GET / HTTP/1.1\nHost: a.test\nX_Forwarded_For: 10.0.0.1\n\n"),
            "400",
        ),
        (
            "two Hosts",
            req("GET / HTTP/1.1\nHost: a.test\nHost: b.test\n\n"),
            "400",
        ),
        ("empty Host", req("GET / HTTP/1.1\nHost:\n\n"), "400"),
        (
            "absolute URI vs Host",
            req("GET http://a.test/ HTTP/1.1\nHost: evil.test\n\n"),
            "400",
        ),
        ("URI over 8 KiB", req(&long_uri), "414"),
        ("header block over 64 KiB", req(&big_head), "431"),
        ("over 100 headers", req(&many_headers), "431"),
        (
            "obs-fold",
            req("GET / HTTP/1.1\nHost: a.test\nX-A: 1\n  folded\n\n"),
            "400",
        ),
        (
            "bare CR in a value",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\rb\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "NUL in a value",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: a\0b\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "space before colon",
            req("GET / HTTP/1.1\nHost : a.test\n\n"),
            "400",
        ),
        (
            "space in a name",
            req("GET / HTTP/1.1\nHost: a.test\nX A: 1\n\n"),
            "400",
        ),
        ("bad method", req("G(T / HTTP/1.1\nHost: a.test\n\n"), "400"),
        ("bad version", req("GET / HTTP/9.9\nHost: a.test\n\n"), "40"),
        (
            "bad chunk size",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\nzz\nabc\n0\n\n"),
            "400",
        ),
        (
            "chunk longer than said",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\n2\nabcdef\n0\n\n"),
            "400",
        ),
        ("body over max_body (CL)", req(&big_body), "413"),
        ("body over max_body (chunked)", req(&big_chunked), "413"),
        (
            "CONNECT",
            req("CONNECT a.test:443 HTTP/1.1\nHost: a.test:443\n\n"),
            "405",
        ),
        (
            "unknown host",
            req("GET / HTTP/1.1\nHost: other.test\nConnection: close\n\n"),
            "404",
        ),
        (
            "request line only LF garbage",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            "400",
        ),
    ];
    assert!(cases.len() >= 38, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let before = backends.us.hits();
        let (reply, closed) = exchange(addr, bytes).await;
        let status = reply.split(' ').nth(1).unwrap_or("");
        if !status.starts_with(want) || !closed || backends.us.hits() != before {
            failures.push(format!(
                "{name}: want {want}, got {:?} closed={closed} reached={}",
                reply.lines().next(),
                backends.us.hits() != before
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn truncated_bodies_are_refused_before_the_backend() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let addr = proxy.proxy_addr().unwrap();
    for (name, bytes) in [
        (
            "truncated body",
            req("POST / HTTP/1.1\nHost: a.test\nContent-Length: 10\n\nabc"),
        ),
        (
            "truncated chunked body",
            req("POST / HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\n5\nab"),
        ),
    ] {
        let (reply, closed) = exchange_then(addr, &bytes, true).await;
        assert!(closed, "{name}");
        // The client is gone: whether a 400 still reaches it or not, the backend saw nothing.
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
            "{name}: {reply}"
        );
        assert_eq!(backends.us.hits(), 0, "{name}: reached the backend");
    }
}

#[tokio::test]
async fn accepted_requests_reach_the_backend_once_with_clean_framing() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let addr = proxy.proxy_addr().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "plain GET",
            req("GET /echo HTTP/1.1\nHost: a.test\nConnection: close\n\n"),
            "",
        ),
        (
            "POST with Content-Length",
            req("POST /echo HTTP/1.1\nHost: a.test\nContent-Length: 5\nConnection: close\n\nhello"),
            "hello",
        ),
        (
            "chunked POST",
            req(
                "POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\nConnection: close\n\n5\nhello\n6\n world\n0\n\n",
            ),
            "hello world",
        ),
        // RFC 9110 §8.6: identical Content-Length values may be folded into one.
        (
            "two equal CL",
            req(
                "POST /echo HTTP/1.1\nHost: a.test\nContent-Length: 2\nContent-Length: 2\nConnection: close\n\nok",
            ),
            "ok",
        ),
        (
            "TE upper case",
            req(
                "POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding: CHUNKED\nConnection: close\n\n2\nok\n0\n\n",
            ),
            "ok",
        ),
        (
            "absolute URI matching Host",
            req("GET http://a.test/echo HTTP/1.1\nHost: a.test\nConnection: close\n\n"),
            "",
        ),
        (
            "Upgrade: h2c is not forwarded",
            req(
                "GET /echo HTTP/1.1\nHost: a.test\nConnection: Upgrade, HTTP2-Settings, close\nUpgrade: h2c\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\n\n",
            ),
            "",
        ),
    ];
    for (name, bytes, body) in &cases {
        let before = backends.us.hits();
        let (reply, _) = exchange(addr, bytes).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{name}: {reply}");
        assert_eq!(
            backends.us.hits(),
            before + 1,
            "{name}: forwarded exactly once"
        );
        let json: serde_json::Value =
            serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let headers = json["headers"].as_object().unwrap();
        assert!(
            !(headers.contains_key("content-length") && headers.contains_key("transfer-encoding")),
            "{name}: ambiguous framing upstream: {headers:?}"
        );
        for hop in ["upgrade", "http2-settings", "connection"] {
            assert!(!headers.contains_key(hop), "{name}: {hop} forwarded");
        }
        assert_eq!(json["body"], *body, "{name}");
    }

    // Pipelined: an empty POST then a GET on one connection, each forwarded once.
    let before = backends.us.hits();
    let (reply, _) = exchange(
        addr,
        &req("POST /echo HTTP/1.1\nHost: a.test\nContent-Length: 0\n\nGET /echo HTTP/1.1\nHost: a.test\nConnection: close\n\n"),
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
    assert_eq!(backends.us.hits(), before + 2);

    // Pipelined: a good request, then one with both framings: the first is served, the
    // second refused, and only the first reaches the backend.
    let before = backends.us.hits();
    let (reply, closed) = exchange(
        addr,
        &req("GET /echo HTTP/1.1\nHost: a.test\n\nPOST /echo HTTP/1.1\nHost: a.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert!(closed);
    assert_eq!(backends.us.hits(), before + 1);

    // The same after a chunked request (extensions and trailers included) on one connection.
    let before = backends.us.hits();
    let (reply, closed) = exchange(
        addr,
        &req("POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\n\n5;x=1\nhello\n0\nX-T: 1\n\nPOST /echo HTTP/1.1\nHost: a.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n"),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("hello"), "{reply}");
    assert!(reply.contains("HTTP/1.1 400"), "{reply}");
    assert!(closed);
    assert_eq!(backends.us.hits(), before + 1);
}

/// Requests without a body are served by Meridian's own HTTP/1.1 loop; the first one with a
/// body hands the connection over mid-stream. A request with both framings after such
/// requests is refused just as a first one is, sent after the answers or pipelined behind
/// them.
#[tokio::test]
async fn both_framings_are_refused_after_requests_without_a_body() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let addr = proxy.proxy_addr().unwrap();
    let smuggle = req(
        "POST / HTTP/1.1\nHost: a.test\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n",
    );

    // Sequential: two answered GETs, then the smuggling attempt on the same connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(&req("GET / HTTP/1.1\nHost: a.test\n\n"))
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    }
    assert_eq!(backends.us.hits(), 2);
    stream.write_all(&smuggle).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_millis(1500), stream.read_to_end(&mut out))
        .await
        .expect("connection closed after the refusal")
        .unwrap();
    let reply = String::from_utf8_lossy(&out);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        backends.us.hits(),
        2,
        "the smuggling request reached the backend"
    );

    // Empty lines before the smuggling attempt (hyper's parser skips them).
    for blank in ["\n\n", "\r\n\n", "\n\r\n", "\r\n\r\n"] {
        let mut bytes = blank.as_bytes().to_vec();
        bytes.extend_from_slice(&smuggle);
        let (reply, closed) = exchange(addr, &bytes).await;
        assert!(closed, "{blank:?}: {reply}");
        assert!(reply.starts_with("HTTP/1.1 400"), "{blank:?}: {reply}");
        assert_eq!(
            backends.us.hits(),
            2,
            "{blank:?}: the smuggling request reached the backend"
        );
    }

    // Pipelined: a GET and the smuggling attempt in one write; the GET's lines ending in
    // CRLF, or in a bare LF (hyper's parser takes those too).
    let firsts = [
        ("CRLF", req("GET / HTTP/1.1\nHost: a.test\n\n")),
        ("bare LF", b"GET / HTTP/1.1\nHost: a.test\n\n".to_vec()),
    ];
    for (hits, (line_ends, first)) in (3..).zip(firsts) {
        let mut both = first;
        both.extend_from_slice(&smuggle);
        let (reply, closed) = exchange(addr, &both).await;
        assert!(closed, "{line_ends}: {reply}");
        assert!(reply.starts_with("HTTP/1.1 200"), "{line_ends}: {reply}");
        assert_eq!(
            reply.matches("HTTP/1.1 400").count(),
            1,
            "{line_ends}: the second request was not refused: {reply}"
        );
        assert_eq!(
            backends.us.hits(),
            hits,
            "{line_ends}: the smuggling request reached the backend"
        );
    }
}

/// Every host goes to the backend, so a refused Host is refused by the check, not by routing.
const CONFIG_ANY_HOST: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\", header_read_timeout: 2s }]
admin: { bind: null }
access_log: { enabled: false }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"] }, outlier_detection: { enabled: false } }
routes:
  - { name: any, hosts: [\"*\"], cluster: api, max_body: 1000, retries: { attempts: 0 } }
";

/// Host values that are not `host[:port]`, as raw bytes.
const BAD_HOSTS: &[&[u8]] = &[
    b"a b.test",
    b"a/b.test",
    b"a,b.test",
    b"a?b.test",
    b"a#b.test",
    b"a\\b.test",
    b"a.test:abc",
    b"a.test:99999",
    b"[::1",
    b"..",
    b"a\"b.test",
    b"a.test:0",
    b"a.test:",
    b"a.test:+80",
    b"a.test:8080:1",
    b"a@b.test",
    b"a..b.test",
    b".a.test",
    b".",
    b":80",
    b"a%2eb.test",
    b"a\tb.test",
    b"a{b}.test",
    b"\xc3\xa9.test",
    b"[::1]x",
    b"[::1]:",
    b"[v1.x]",
    b"[1.2.3.4]",
    b"[::1%25eth0]",
];

#[tokio::test]
async fn malformed_hosts_and_methods_never_reach_a_backend() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG_ANY_HOST)).await;
    let addr = proxy.proxy_addr().unwrap();
    let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
    for host in BAD_HOSTS {
        let mut bytes = b"GET /echo HTTP/1.1\r\nHost: ".to_vec();
        bytes.extend_from_slice(host);
        bytes.extend_from_slice(b"\r\n\r\n");
        cases.push((
            format!("Host {:?}", host.escape_ascii().to_string()),
            bytes,
            "400",
        ));
        // The same in HTTP/1.0, which hyper serves rather than the own loop.
        let mut bytes = b"GET /echo HTTP/1.0\r\nHost: ".to_vec();
        bytes.extend_from_slice(host);
        bytes.extend_from_slice(b"\r\n\r\n");
        cases.push((
            format!("HTTP/1.0 Host {:?}", host.escape_ascii().to_string()),
            bytes,
            "400",
        ));
    }
    for (name, head) in [
        (
            "absolute-form, port out of range",
            "GET http://a.test:99999/echo HTTP/1.1\nHost: a.test:99999\n\n",
        ),
        (
            "absolute-form, userinfo",
            "GET http://u@a.test/echo HTTP/1.1\nHost: u@a.test\n\n",
        ),
        ("lowercase get", "get /echo HTTP/1.1\nHost: a.test\n\n"),
        ("mixed-case Get", "Get /echo HTTP/1.1\nHost: a.test\n\n"),
        (
            "lowercase post",
            "post /echo HTTP/1.1\nHost: a.test\nContent-Length: 2\n\nok",
        ),
        (
            "lowercase get in HTTP/1.0",
            "get /echo HTTP/1.0\nHost: a.test\n\n",
        ),
        (
            "lowercase extension method",
            "purge /echo HTTP/1.1\nHost: a.test\n\n",
        ),
        (
            "TE after a tab",
            "POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding:\tchunked\n\n2\nok\n0\n\n",
        ),
        (
            "TE before a tab",
            "POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding: chunked\t\n\n2\nok\n0\n\n",
        ),
        (
            "CL after a tab",
            "POST /echo HTTP/1.1\nHost: a.test\nContent-Length:\t2\n\nok",
        ),
        (
            "CL after a tab, large body",
            "POST /echo HTTP/1.1\nHost: a.test\nContent-Length:\t900\n\n",
        ),
    ] {
        cases.push((name.to_string(), req(head), "400"));
    }
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let (reply, closed) = exchange(addr, bytes).await;
        let status = reply.split(' ').nth(1).unwrap_or("");
        if !status.starts_with(want) || !closed {
            failures.push(format!(
                "{name}: want {want}, got {:?} closed={closed}",
                reply.lines().next()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        backends.hits(),
        [0, 0, 0],
        "a refused request reached a backend"
    );

    // What is well formed still goes through, once each.
    let good_hosts = [
        "a.test",
        "A.Test",
        "a.test.",
        "a.test:8080",
        "a.test:65535",
        "127.0.0.1",
        "127.0.0.1:80",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::ffff:1.2.3.4]",
        "a-b_c~d.test",
        "xn--bcher-kva.example",
        "localhost",
    ];
    for (n, host) in (1..).zip(good_hosts) {
        let (reply, _) = exchange(
            addr,
            &req(&format!(
                "GET /echo HTTP/1.1\nHost: {host}\nConnection: close\n\n"
            )),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{host}: {reply}");
        assert_eq!(backends.us.hits(), n, "{host}");
    }
    for (method, head) in [
        (
            "PURGE",
            "PURGE /echo HTTP/1.1\nHost: a.test\nConnection: close\n\n",
        ),
        (
            "POST",
            "POST /echo HTTP/1.1\nHost: a.test\nTransfer-Encoding:  chunked \nConnection: close\n\n2\nok\n0\n\n",
        ),
        (
            "POST",
            "POST /echo HTTP/1.1\nHost: a.test\nContent-Length:2\nConnection: close\n\nok",
        ),
    ] {
        let before = backends.us.hits();
        let (reply, _) = exchange(addr, &req(head)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{head}: {reply}");
        assert_eq!(backends.us.hits(), before + 1, "{head}");
        let json: serde_json::Value =
            serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json["method"], method, "{head}");
    }
}

/// An h2 client connection to `addr`.
async fn h2_client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    (send, tokio::spawn(conn))
}

/// How a hand-framed HTTP/2 request ended.
#[derive(Debug, PartialEq)]
enum H2End {
    /// Response headers, by the first byte of their block (an indexed `:status`).
    Status(u8),
    Reset(u32),
    GoAway(u32),
}

/// Send one HTTP/2 GET whose `:authority` is exactly `authority`, framed by hand (HPACK
/// literals, no Huffman coding), so values an HTTP/2 client library would refuse to send can
/// be sent; say how its stream ended.
async fn h2_get_with_raw_authority(addr: std::net::SocketAddr, authority: &[u8]) -> H2End {
    assert!(authority.len() < 127, "one-byte HPACK length");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // :method GET, :scheme http, :path / (static table), then :authority as a literal.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    block.extend_from_slice(authority);
    let len = (block.len() as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], 1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    stream.write_all(&out).await.unwrap();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.unwrap();
            let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
            match head[3] {
                4 if head[4] & 1 == 0 => {
                    stream
                        .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                        .await
                        .unwrap();
                }
                1 if stream_id == 1 => return H2End::Status(payload[0]),
                3 if stream_id == 1 => return H2End::Reset(code(0)),
                7 => return H2End::GoAway(code(4)),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .expect("the stream was neither answered nor reset")
}

#[tokio::test]
async fn malformed_authorities_over_http2_never_reach_a_backend() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG_ANY_HOST)).await;
    let addr = proxy.proxy_addr().unwrap();
    // The values an HTTP/2 stack lets through as :authority (it refuses the rest itself).
    let bad = [
        "a,b.test",
        "a.test:abc",
        "a.test:99999",
        "..",
        "a.test:0",
        "a.test:",
        "a.test:+80",
        "a@b.test",
        "a..b.test",
        ".",
        "a!b.test",
        "a;b.test",
    ];
    let (mut send, _conn) = h2_client(addr).await;
    for authority in bad {
        send = send.ready().await.unwrap();
        let request = http::Request::get(format!("http://{authority}/echo"))
            .body(())
            .unwrap();
        assert_eq!(
            request.uri().authority().unwrap().as_str(),
            authority,
            "sent as given"
        );
        let (response, _) = send.send_request(request, true).unwrap();
        let status = response.await.map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(400), "{authority}");
    }
    // A request without :authority is routed by its host header, which is held to the same.
    for host in ["a.test:99999", "a b.test"] {
        send = send.ready().await.unwrap();
        let request = http::Request::get("/echo")
            .header("host", host)
            .body(())
            .unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let status = response.await.map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(400), "host {host}");
    }
    // Lowercase methods are not GET here either.
    send = send.ready().await.unwrap();
    let request = http::Request::builder()
        .method(http::Method::from_bytes(b"get").unwrap())
        .uri("http://a.test/echo")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    assert_eq!(response.await.map(|r| r.status().as_u16()).ok(), Some(400));
    // Every other value, sent as it is: refused as a malformed request by the HTTP/2 stack
    // (a reset stream) or answered 400 by Meridian.
    const STATUS_400: u8 = 0x80 | 12;
    for authority in BAD_HOSTS {
        let end = h2_get_with_raw_authority(addr, authority).await;
        assert!(
            matches!(end, H2End::Status(STATUS_400) | H2End::Reset(_)),
            "{}: {end:?}",
            authority.escape_ascii()
        );
    }
    assert_eq!(
        h2_get_with_raw_authority(addr, b"a.test").await,
        H2End::Status(0x80 | 8),
        "the hand-framed request itself is good (200)"
    );
    assert_eq!(backends.us.hits(), 1);
    assert_eq!(
        h2_get_with_raw_authority(addr, b"a.test:99999").await,
        H2End::Status(STATUS_400)
    );
    assert_eq!(
        backends.hits(),
        [1, 0, 0],
        "a refused request reached a backend"
    );

    for (n, authority) in (2..).zip(["a.test", "a.test:8443", "[::1]:8443", "10.0.0.1"]) {
        send = send.ready().await.unwrap();
        let request = http::Request::get(format!("http://{authority}/echo"))
            .body(())
            .unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200, "{authority}");
        assert_eq!(backends.us.hits(), n, "{authority}");
    }
}
