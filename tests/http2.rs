//! HTTP/2 at the edge with a real h2 client: :authority wins over host, the stream limit is
//! advertised, a storm of reset streams is answered with GOAWAY, answers stalled on a zero
//! flow-control window are reset after send_timeout (over h2c and TLS), and idle connections
//! are sent GOAWAY after idle_timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backends, start_proxy};
use http::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONFIG: &str = "
local_region: us-east-1
listeners: [{ name: http, bind: \"127.0.0.1:0\" }]
admin: { bind: null }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"] } }
routes:
  - { name: api, hosts: [\"a.test\"], cluster: api }
";

async fn client(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(stream).await.unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test]
async fn authority_wins_over_host_and_the_stream_limit_is_advertised() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let (send, _conn) = client(proxy.proxy_addr().unwrap()).await;
    let mut send = send.ready().await.unwrap();
    let request = Request::get("http://a.test/echo")
        .header("host", "evil.test")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let seen: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        seen["headers"]["host"], "a.test",
        "routed by :authority and forwarded with it"
    );
    assert_eq!(
        send.current_max_send_streams(),
        meridian::server::MAX_CONCURRENT_STREAMS as usize
    );
}

#[tokio::test]
async fn a_reset_storm_gets_goaway() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(CONFIG)).await;
    let (mut send, conn) = client(proxy.proxy_addr().unwrap()).await;
    let mut sent = 0;
    for _ in 0..2_000 {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => break,
        };
        let request = Request::get("http://a.test/delay/1000").body(()).unwrap();
        match send.send_request(request, false) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    // The server answers the storm with GOAWAY and closes: the client's connection ends with
    // the GOAWAY, or with a broken pipe when it was still writing resets at that moment.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        matches!(ended, Ok(Ok(Err(_)))),
        "the connection survived {sent} rapid resets: {ended:?}"
    );
    assert!(
        backends.us.hits() < 2_000,
        "every reset stream reached the backend"
    );
}

/// An HTTP/1.1 upstream: `/big` is answered with 32 MiB (far more than the sockets between it
/// and the proxy hold, so its writes block once the proxy stops reading), `/slow` with `a`,
/// then `b` two seconds later, anything else with `ok`. Counts the `/big` exchanges the
/// proxy gave up (the connection closed mid-answer).
async fn big_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let given_up = Arc::new(AtomicUsize::new(0));
    let counted = given_up.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let given_up = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    if head.starts_with("GET /slow ") {
                        let a = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na";
                        if stream.write_all(a).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if stream.write_all(b"b").await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if !head.starts_with("GET /big ") {
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    const BIG: usize = 32 << 20;
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                    let mut sent = stream.write_all(head.as_bytes()).await;
                    let block = vec![b'b'; 64 * 1024];
                    for _ in 0..BIG / block.len() {
                        if sent.is_err() {
                            break;
                        }
                        sent = stream.write_all(&block).await;
                    }
                    if sent.is_err() {
                        given_up.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
            });
        }
    });
    (addr, given_up)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A self-signed certificate for `a.test` as PEM files in `dir`, and a TLS client trusting it
/// that offers h2 only.
fn tls_setup(dir: &Path) -> (String, tokio_rustls::TlsConnector) {
    let certified = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
    let (cert, key) = (dir.join("a.pem"), dir.join("a.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = format!(
        ", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}",
        cert.display(),
        key.display()
    );
    (tls, tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connect(addr: SocketAddr, tls: Option<&tokio_rustls::TlsConnector>) -> Box<dyn Io> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tls {
        Some(connector) => {
            let name = rustls_pki_types::ServerName::try_from("a.test").unwrap();
            let stream = connector.connect(name, tcp).await.unwrap();
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Box::new(stream)
        }
        None => Box::new(tcp),
    }
}

/// GET `path` on a fresh HTTP/2 connection with default settings: status, overflow header,
/// body.
async fn h2_get(
    addr: SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    path: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let (send, conn) = h2::client::handshake(connect(addr, tls).await)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let request = Request::get(format!("http://a.test{path}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    let overflow = response
        .headers()
        .get("x-meridian-overflow")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, overflow, bytes)
}

/// Streams whose client grants no window (and answers pings) hold the cluster's only
/// permits until send_timeout: then they are reset, the upstream exchanges given up, and
/// other clients are served again.
async fn zero_window_streams_do_not_starve_other_clients(tls: bool) {
    const SEND_TIMEOUT: Duration = Duration::from_millis(1500);
    let (upstream, given_up) = big_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (tls_yaml, connector) = tls_setup(dir.path());
    let connector = tls.then_some(&connector);
    let yaml = format!(
        "
local_region: us-east-1
listeners: [{{ name: edge, bind: \"127.0.0.1:0\", send_timeout: {}ms{} }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  api:
    endpoints: {{ us-east-1: [\"{upstream}\"] }}
    outlier_detection: {{ enabled: false }}
    connection_pool: {{ max_requests: 2 }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api, timeout: 10s }}
",
        SEND_TIMEOUT.as_millis(),
        if tls { tls_yaml.as_str() } else { "" },
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();

    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(connect(addr, connector).await)
        .await
        .unwrap();
    // The connection task answers the proxy's pings all along.
    tokio::spawn(conn);
    let mut send = send;
    let mut asked = Vec::new();
    // Before the requests: each answer's wait on the window starts on the proxy after this.
    let sent = Instant::now();
    for _ in 0..2 {
        send = send.ready().await.unwrap();
        let request = Request::get("http://a.test/big").body(()).unwrap();
        asked.push(send.send_request(request, true).unwrap().0);
    }
    let mut bodies = Vec::new();
    for response in asked {
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    // Both permits are held by answers nobody can receive: another client is turned away.
    let (status, overflow, _) = h2_get(addr, connector, "/small").await;
    assert_eq!(status, 503);
    assert_eq!(overflow.as_deref(), Some("max_requests"));
    assert!(
        sent.elapsed() < SEND_TIMEOUT,
        "the check above came too late to show the permits held"
    );

    // Each stalled stream is reset once its answer has waited send_timeout on the window.
    for mut body in bodies {
        let got = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .expect("the stalled stream was never reset");
        let err = got.expect("a reset, not the end").unwrap_err();
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    }
    assert!(sent.elapsed() >= SEND_TIMEOUT, "{:?}", sent.elapsed());
    // The upstream exchanges were given up with them, and their permits with them.
    for _ in 0..200 {
        if given_up.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(given_up.load(Ordering::SeqCst), 2);
    let (status, _, body) = h2_get(addr, connector, "/small").await;
    assert_eq!(status, 200, "the permits are free again");
    assert_eq!(body, b"ok");
    // An answer that waits on the upstream longer than send_timeout is not the client's doing.
    let (status, _, body) = h2_get(addr, connector, "/slow").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"ab", "not reset while the upstream paused");
}

#[tokio::test]
async fn zero_window_streams_are_reset_after_send_timeout_over_h2c() {
    zero_window_streams_do_not_starve_other_clients(false).await;
}

#[tokio::test]
async fn zero_window_streams_are_reset_after_send_timeout_over_tls() {
    zero_window_streams_do_not_starve_other_clients(true).await;
}

#[tokio::test]
async fn idle_connections_get_goaway_and_busy_ones_finish_their_answers() {
    const IDLE: Duration = Duration::from_secs(1);
    let backends = Backends::start().await;
    let yaml = backends.fill(CONFIG).replace(
        "bind: \"127.0.0.1:0\" }",
        "bind: \"127.0.0.1:0\", idle_timeout: 1s }",
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();

    // One request, then nothing but the pings its connection task answers.
    let (send, conn) = client(addr).await;
    let mut idle = send.ready().await.unwrap();
    let request = Request::get("http://a.test/echo").body(()).unwrap();
    // Before the request: its stream ends on the proxy's side some time after this.
    let asked = Instant::now();
    let (response, _) = idle.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // A stream that takes longer than the idle timeout on another connection.
    let (busy, busy_conn) = client(addr).await;
    let mut busy = busy.ready().await.unwrap();
    let request = Request::get("http://a.test/delay/2500").body(()).unwrap();
    let (slow, _) = busy.send_request(request, true).unwrap();

    // The idle one is sent GOAWAY (no error) and closed after the idle timeout.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the idle connection stayed open");
    assert!(
        matches!(ended, Ok(Ok(()))),
        "closed without a clean GOAWAY: {ended:?}"
    );
    assert!(asked.elapsed() >= IDLE, "{:?}", asked.elapsed());
    assert!(idle.ready().await.is_err(), "no stream after GOAWAY");

    // The busy one's answer arrives whole, past the idle timeout.
    let response = slow.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the answer is not cut");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes += chunk.len();
    }
    assert!(bytes > 0);
    assert!(asked.elapsed() >= Duration::from_millis(2500));
    assert!(
        !busy_conn.is_finished(),
        "the busy connection is still open"
    );
}

#[test]
fn idle_timeout_out_of_range_is_a_problem_with_its_line() {
    for (value, want) in [
        ("0s", "`0s` is too short (this field takes 1s to 1h)"),
        ("500ms", "`500ms` is too short (this field takes 1s to 1h)"),
        ("2h", "`2h` is too long (this field takes 1s to 1h)"),
        ("soon", "`soon` is not a duration"),
    ] {
        let yaml = CONFIG
            .replace("{REGIONS}", common::REGIONS_YAML)
            .replace("{US}", "127.0.0.1:1")
            .replace(
                "bind: \"127.0.0.1:0\" }",
                &format!("bind: \"127.0.0.1:0\", idle_timeout: {value} }}"),
            );
        let loaded = meridian::config::load_str(&yaml, Path::new("h2.yaml")).unwrap();
        let err = meridian::table::compile(&loaded, meridian::table::CompileContext::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("h2.yaml:3: listeners[0].idle_timeout: {want}")),
            "{value}: {err}"
        );
    }
}
