//! gRPC end to end through Meridian to HTTP/2 upstreams (h2c and TLS with ALPN h2): unary,
//! server, client and bidirectional streaming, statuses in trailers, grpc-timeout deadlines,
//! Meridian's own failures as gRPC statuses, failover of calls to the next region, GOAWAY,
//! the peer's stream limit, flow control, cancellation, and floods past max_requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod grpc_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{REGIONS_YAML, start_proxy};
use grpc_support::{GrpcClient, GrpcServer, ServerOptions, frame, read_reply, unframe, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn config(g1: SocketAddr, g2: SocketAddr, cluster_extra: &str, route_extra: &str) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  grpc:
    protocol: h2c
    endpoints: {{ us-east-1: [\"{g1}\"], eu-west-1: [\"{g2}\"] }}
{cluster_extra}
routes:
  - name: grpc
    hosts: [\"g.test\"]
    cluster: grpc
{route_extra}
"
    )
}

async fn two_servers(options: ServerOptions) -> (GrpcServer, GrpcServer) {
    (
        GrpcServer::start("us", options.clone()).await,
        GrpcServer::start("eu", options).await,
    )
}

#[tokio::test]
async fn unary_streaming_and_trailers_pass_through_h2c() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;

    let reply = tokio::time::timeout(LIMIT, client.unary("hello"))
        .await
        .unwrap();
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(0)),
        "{reply:?}"
    );
    assert_eq!(reply.texts(), ["us:hello"]);
    let seen = us.seen.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen["te"], "trailers",
        "gRPC servers may insist on te: trailers"
    );
    assert_eq!(seen["content-type"], "application/grpc");

    // Server streaming: 1,000 messages in order, then the status.
    let reply = tokio::time::timeout(
        LIMIT,
        client.call("/test.Echo/ServerStream", &[b"1000"], &[]),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, Some(0), "{reply:?}");
    let want: Vec<String> = (0..1000).map(|i| format!("{i:06}")).collect();
    assert_eq!(reply.texts(), want);

    // Client streaming: three messages, one answer.
    let reply = tokio::time::timeout(
        LIMIT,
        client.call("/test.Echo/ClientStream", &[b"a", b"b", b"c"], &[]),
    )
    .await
    .unwrap();
    assert_eq!(
        (reply.status, reply.texts()),
        (Some(0), vec!["3".to_owned()])
    );

    // A status in trailers, after a message, reaches the client as sent.
    let reply = tokio::time::timeout(LIMIT, client.call("/test.Echo/Denied", &[b"x"], &[]))
        .await
        .unwrap();
    assert_eq!(reply.http_status, 200);
    assert_eq!(reply.texts(), ["partial"]);
    assert_eq!(
        (reply.status, reply.message.as_deref()),
        (Some(7), Some("no%20entry"))
    );
}

#[tokio::test]
async fn bidi_stream_answers_each_message_before_the_next_is_sent() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    let (response, mut send) = client.open("/test.Echo/Bidi", &[]).await;
    send.send_data(frame(b"m0"), false).unwrap();
    // The head comes with the first answer: nothing waits for the request to end.
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    for i in 0..20 {
        if i > 0 {
            send.send_data(frame(format!("m{i}").as_bytes()), false)
                .unwrap();
        }
        let message = loop {
            if let Some(m) = unframe(&mut buf).into_iter().next() {
                break m;
            }
            let chunk = tokio::time::timeout(LIMIT, body.data())
                .await
                .expect("an answer to each message before the next is sent")
                .unwrap()
                .unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        };
        assert_eq!(message, format!("us:m{i}").as_bytes());
    }
    send.send_data(bytes::Bytes::new(), true).unwrap();
    assert!(
        tokio::time::timeout(LIMIT, body.data())
            .await
            .unwrap()
            .is_none()
    );
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn grpc_timeout_is_a_deadline_capped_by_the_route_and_frees_the_upstream() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "",
        "    timeout: 1s\n    retries: { attempts: 0 }",
    ))
    .await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;

    // No answer within 150ms: DEADLINE_EXCEEDED, as HTTP 200, well before the route timeout.
    let started = Instant::now();
    let reply = tokio::time::timeout(
        LIMIT,
        client.call("/test.Echo/Hang", &[b"x"], &[("grpc-timeout", "150m")]),
    )
    .await
    .unwrap();
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(4)),
        "{reply:?}"
    );
    assert_eq!(reply.headers["x-meridian-error"], "upstream-timeout");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The upstream stream was cancelled, and its permit is back.
    assert!(
        wait_for(&us.seen.reset, LIMIT, || us
            .seen
            .cancelled
            .load(Ordering::SeqCst)
            >= 1)
        .await
    );
    let table = proxy.table.load();
    assert_eq!(table.clusters[0].pool.active_requests(), 0);

    // A deadline that passes mid-stream ends the stream with DEADLINE_EXCEEDED trailers and
    // cancels the upstream's stream: a stalled stream holds no permit past it.
    let reply = tokio::time::timeout(
        LIMIT,
        client.call(
            "/test.Echo/HangAfterHead",
            &[b"x"],
            &[("grpc-timeout", "150m")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(4)),
        "{reply:?}"
    );
    assert!(
        wait_for(&us.seen.reset, LIMIT, || us
            .seen
            .cancelled
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    assert_eq!(table.clusters[0].pool.active_requests(), 0);

    // Huge and malformed values: the route timeout (1s) decides.
    for value in ["99999999H", "abc", "1.5S", "123456789S", ""] {
        let reply = tokio::time::timeout(
            LIMIT,
            client.call("/test.Echo/Unary", &[b"x"], &[("grpc-timeout", value)]),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, Some(0), "grpc-timeout {value:?}: {reply:?}");
    }
    let started = Instant::now();
    let reply = tokio::time::timeout(
        LIMIT,
        client.call("/test.Echo/Hang", &[b"x"], &[("grpc-timeout", "99999999H")]),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, Some(4), "{reply:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn meridian_failures_are_grpc_statuses() {
    // Nothing listens on this address.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let yaml = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  dead:
    protocol: h2c
    endpoints: {{ us-east-1: [\"{dead_addr}\"] }}
    outlier_detection: {{ enabled: false }}
  unhealthy:
    protocol: h2c
    panic_threshold: 0
    endpoints: {{ us-east-1: [\"{dead_addr}\"] }}
    health_check: {{ path: /, interval: 20ms, timeout: 20ms, unhealthy_threshold: 1 }}
routes:
  - {{ name: dead, hosts: [\"dead.test\"], cluster: dead, retries: {{ attempts: 0 }} }}
  - {{ name: unhealthy, hosts: [\"unhealthy.test\"], cluster: unhealthy }}
"
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();

    let dead_client = GrpcClient::connect(addr, "dead.test").await;
    let reply = tokio::time::timeout(LIMIT, dead_client.unary("x"))
        .await
        .unwrap();
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(14)),
        "{reply:?}"
    );
    assert_eq!(
        reply.headers["x-meridian-error"],
        "upstream-connect-failure"
    );
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert!(
        reply
            .message
            .unwrap()
            .starts_with("meridian: could not connect")
    );

    // Once the health check has marked the endpoint down: no healthy endpoint.
    let table = proxy.table.load();
    let cluster = table
        .clusters
        .iter()
        .find(|c| c.name == "unhealthy")
        .unwrap();
    let state = cluster
        .regions
        .iter()
        .find_map(|r| r.members().endpoints.first().cloned())
        .unwrap()
        .state
        .clone();
    let mut down = false;
    for _ in 0..500 {
        if !state.healthy.load(Ordering::SeqCst) {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(down, "the health check marks the endpoint down");
    let client = GrpcClient::connect(addr, "unhealthy.test").await;
    let reply = tokio::time::timeout(LIMIT, client.unary("x"))
        .await
        .unwrap();
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(14)),
        "{reply:?}"
    );
    assert_eq!(reply.headers["x-meridian-error"], "no-healthy-endpoint");
    assert!(reply.messages.is_empty());

    // An HTTP/2 request that is not gRPC still gets the plain status.
    let (mut send, conn) =
        h2::client::handshake(tokio::net::TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("http://unhealthy.test/")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 503);
}

#[tokio::test]
async fn a_flood_past_max_requests_is_resource_exhausted_and_cancels_free_permits() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "    connection_pool: { max_requests: 4 }",
        "",
    ))
    .await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    // Four calls held open upstream take every permit.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (response, mut send) = client.open("/test.Echo/Hang", &[]).await;
        send.send_data(frame(b"x"), true).unwrap();
        held.push((response, send));
    }
    assert!(
        wait_for(&us.seen.arrived, LIMIT, || us
            .seen
            .open
            .load(Ordering::SeqCst)
            == 4)
        .await
    );
    // A flood of 200 more: each refused at once, as gRPC RESOURCE_EXHAUSTED.
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.unary("flood").await })
        })
        .collect();
    for call in flood {
        let reply = tokio::time::timeout(LIMIT, call).await.unwrap().unwrap();
        assert_eq!(
            (reply.http_status, reply.status),
            (200, Some(8)),
            "{reply:?}"
        );
        assert_eq!(reply.headers["x-meridian-overflow"], "max_requests");
    }
    assert_eq!(
        us.seen.calls.load(Ordering::SeqCst),
        4,
        "the flood never reached the upstream"
    );
    // The client resets the held calls: Meridian cancels them upstream and frees the permits.
    drop(held);
    assert!(
        wait_for(&us.seen.reset, LIMIT, || us
            .seen
            .cancelled
            .load(Ordering::SeqCst)
            == 4)
        .await
    );
    let table = proxy.table.load();
    let pool = table.clusters[0].pool.clone();
    let mut freed = false;
    for _ in 0..500 {
        if pool.active_requests() == 0 {
            freed = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(freed, "permits held: {}", pool.active_requests());
    let reply = tokio::time::timeout(LIMIT, client.unary("after"))
        .await
        .unwrap();
    assert_eq!(reply.status, Some(0), "{reply:?}");
}

#[tokio::test]
async fn unary_calls_fail_over_to_the_next_region_with_none_lost() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "",
        "    retries: { attempts: 2, retry_on: [connect-failure, reset, refused-stream, unavailable], retry_non_idempotent: true }",
    ))
    .await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    let us = Arc::new(us);
    let mut tasks = Vec::new();
    // Eight callers, 25 calls each; the nearest region's backend dies a quarter of the way.
    for caller in 0..8 {
        let client = client.clone();
        let us = us.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut served = Vec::new();
            for i in 0..25 {
                if caller == 0 && i == 6 {
                    us.kill();
                }
                let reply = client.unary(&format!("{caller}-{i}")).await;
                if reply.status == Some(0) {
                    served.push(reply.texts()[0].split(':').next().unwrap().to_owned());
                } else {
                    failed.push(format!("{reply:?}"));
                }
            }
            (served, failed)
        }));
    }
    let mut served = Vec::new();
    for task in tasks {
        let (s, failed) = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        served.extend(s);
    }
    assert_eq!(served.len(), 200);
    assert!(
        served.iter().any(|r| r == "us"),
        "the nearest region served first"
    );
    assert!(served.iter().any(|r| r == "eu"), "then the next region");
    // After the kill every call goes to eu.
    let reply = client.unary("last").await;
    assert_eq!(reply.texts(), ["eu:last"]);
}

#[tokio::test]
async fn streams_refused_by_goaway_go_again_on_a_new_connection() {
    let options = ServerOptions {
        goaway_first: true,
        ..ServerOptions::default()
    };
    let (us, eu) = two_servers(options).await;
    // No retries: sending a stream the upstream left unprocessed again is not a retry.
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "",
        "    retries: { attempts: 0 }",
    ))
    .await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    let reply = tokio::time::timeout(LIMIT, client.unary("again"))
        .await
        .unwrap();
    assert_eq!(reply.status, Some(0), "{reply:?}");
    assert_eq!(reply.texts(), ["us:again"]);
    assert_eq!(us.seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(us.seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(eu.seen.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_peers_stream_limit_opens_more_connections_and_resets_cancel_upstream() {
    let options = ServerOptions {
        max_concurrent_streams: Some(2),
        ..ServerOptions::default()
    };
    let (us, eu) = two_servers(options).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    // Warm one connection so the pool has heard the server's SETTINGS.
    assert_eq!(client.unary("warm").await.status, Some(0));
    let mut held = Vec::new();
    for _ in 0..6 {
        let (response, mut send) = client.open("/test.Echo/Hang", &[]).await;
        send.send_data(frame(b"x"), true).unwrap();
        held.push((response, send));
    }
    assert!(
        wait_for(&us.seen.arrived, LIMIT, || us
            .seen
            .open
            .load(Ordering::SeqCst)
            == 6)
        .await,
        "all six calls open upstream at once: {}",
        us.seen.open.load(Ordering::SeqCst)
    );
    assert_eq!(
        us.seen.connections.load(Ordering::SeqCst),
        3,
        "two streams per connection"
    );
    // The client resets its streams: each is cancelled upstream.
    drop(held);
    assert!(
        wait_for(&us.seen.reset, LIMIT, || us
            .seen
            .cancelled
            .load(Ordering::SeqCst)
            == 6)
        .await
    );
}

#[tokio::test]
async fn a_long_server_stream_is_not_buffered_and_a_killed_backend_ends_it() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    // 200,000 messages (2.2 MB) for a client that reads nothing yet.
    let (response, mut send) = client.open("/test.Echo/ServerStream", &[]).await;
    send.send_data(frame(b"200000"), true).unwrap();
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait_for(&us.seen.blocked, LIMIT, || us
            .seen
            .stalled
            .load(Ordering::SeqCst))
        .await,
        "the upstream waits for window"
    );
    let sent = us.seen.sent.load(Ordering::SeqCst);
    // Windows on both sides hold a few hundred KB at most; the rest waits upstream.
    assert!(
        sent * 11 < 1_600_000,
        "{sent} messages left the upstream unread"
    );
    // Read some, then kill the backend: the client sees the stream fail, not hang.
    let mut body = response.into_body();
    let mut got = 0;
    while got < 100_000 {
        let chunk = tokio::time::timeout(LIMIT, body.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got += chunk.len();
    }
    us.kill();
    let ended = tokio::time::timeout(LIMIT, async {
        loop {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(body.trailers().await),
            }
        }
    })
    .await
    .expect("the stream ends when the backend dies");
    match ended {
        Err(_) => {}
        Ok(Ok(Some(trailers))) => assert_ne!(trailers["grpc-status"], "0"),
        Ok(other) => panic!("a stream cut short must not look complete: {other:?}"),
    }
}

#[tokio::test]
async fn retry_on_unavailable_reads_trailers_only_answers() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "",
        "  - name: plain\n    hosts: [\"plain.test\"]\n    cluster: grpc\n    retries: { attempts: 2, retry_non_idempotent: true }\n  - name: retried\n    hosts: [\"retried.test\"]\n    cluster: grpc\n    retries: { attempts: 2, retry_on: [unavailable], retry_non_idempotent: true, backoff: { base: 1ms, max: 2ms } }",
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let calls = || us.seen.calls.load(Ordering::SeqCst) + eu.seen.calls.load(Ordering::SeqCst);
    let reply = GrpcClient::connect(addr, "plain.test")
        .await
        .call("/test.Echo/Unavailable", &[b"x"], &[])
        .await;
    assert_eq!((reply.http_status, reply.status), (200, Some(14)));
    assert_eq!(calls(), 1, "unavailable is not retried unless asked");
    let reply = GrpcClient::connect(addr, "retried.test")
        .await
        .call("/test.Echo/Unavailable", &[b"x"], &[])
        .await;
    assert_eq!(
        (reply.status, reply.message.as_deref()),
        (Some(14), Some("busy"))
    );
    // Retries go to endpoints not tried yet: the one in the next region, then none is left.
    assert_eq!(calls(), 3, "one retry, to the other endpoint");
    assert_eq!(eu.seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_over_tls_negotiates_h2_by_alpn() {
    let certified = rcgen::generate_simple_self_signed(vec!["grpc.test".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let options = ServerOptions {
        tls: Some((
            certified.cert.der().to_vec(),
            certified.signing_key.serialize_der(),
        )),
        ..ServerOptions::default()
    };
    let server = GrpcServer::start("tls", options).await;
    for protocol in ["http2", "auto"] {
        let yaml = format!(
            "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  grpc:
    protocol: {protocol}
    tls: {{ sni: grpc.test, ca_file: \"{}\" }}
    endpoints: {{ us-east-1: [\"{}\"] }}
routes:
  - {{ name: grpc, hosts: [\"g.test\"], cluster: grpc }}
",
            ca_file.display(),
            server.addr
        );
        let proxy = start_proxy(&yaml).await;
        let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
        let reply = tokio::time::timeout(LIMIT, client.unary(protocol))
            .await
            .unwrap();
        assert_eq!(reply.status, Some(0), "{protocol}: {reply:?}");
        assert_eq!(reply.texts(), [format!("tls:{protocol}")]);
        let reply = tokio::time::timeout(
            LIMIT,
            client.call("/test.Echo/ServerStream", &[b"1000"], &[]),
        )
        .await
        .unwrap();
        assert_eq!((reply.status, reply.messages.len()), (Some(0), 1000));
    }
}

#[tokio::test]
async fn protocols_that_need_tls_are_refused_without_it() {
    for (protocol, tls, message) in [
        ("http2", "", "add a `tls` block"),
        ("auto", "", "add a `tls` block"),
        (
            "h2c",
            "    tls: { sni: a.test }\n",
            "`h2c` is HTTP/2 without TLS",
        ),
        ("h3", "", "protocol"),
    ] {
        let yaml = format!(
            "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  grpc:
    protocol: {protocol}
{tls}    endpoints: {{ us-east-1: [\"127.0.0.1:9\"] }}
routes:
  - {{ name: grpc, hosts: [\"g.test\"], cluster: grpc }}
"
        );
        let error = match meridian::config::load_str(&yaml, std::path::Path::new("test.yaml")) {
            Err(e) => e.to_string(),
            Ok(loaded) => match meridian::table::compile(&loaded, Default::default()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{protocol} with tls {tls:?} compiled"),
            },
        };
        assert!(error.contains(message), "{protocol}: {error}");
        let line = yaml.lines().position(|l| l.contains("protocol:")).unwrap() + 1;
        assert!(
            error.contains(&format!("test.yaml:{line}")),
            "file and line of `protocol`: {error}"
        );
    }
}

/// Keep `read_reply` in use from this file too (a call opened by hand, read whole).
#[tokio::test]
async fn a_call_opened_by_hand_reads_whole() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    let (response, mut send) = client.open("/test.Echo/Unary", &[]).await;
    send.send_data(frame(b"hand"), true).unwrap();
    let reply = tokio::time::timeout(LIMIT, read_reply(response))
        .await
        .unwrap();
    assert_eq!(reply.texts(), ["us:hand"]);
}

/// Whether the endpoint at `addr` of the first cluster is healthy, once it is `want` (a
/// bounded wait on the health check task).
async fn health_becomes(
    proxy: &meridian::server::RunningServer,
    addr: SocketAddr,
    want: bool,
) -> bool {
    let table = proxy.table.load();
    let state = table.clusters[0]
        .endpoint(addr)
        .expect("endpoint in the cluster")
        .state
        .clone();
    for _ in 0..1000 {
        if state.healthy.load(Ordering::SeqCst) == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn grpc_health_checks_mark_a_not_serving_backend_down_and_back() {
    let not_serving = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let us = GrpcServer::start(
        "us",
        ServerOptions {
            not_serving: not_serving.clone(),
            ..ServerOptions::default()
        },
    )
    .await;
    let eu = GrpcServer::start("eu", ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "    health_check: { grpc: { service: test.Echo }, interval: 20ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1 }",
        "",
    ))
    .await;
    assert!(
        health_becomes(&proxy, us.addr, false).await,
        "NOT_SERVING marks us down"
    );
    assert!(
        health_becomes(&proxy, eu.addr, true).await,
        "SERVING keeps eu up"
    );
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    assert_eq!(client.unary("while down").await.texts(), ["eu:while down"]);
    not_serving.store(false, Ordering::SeqCst);
    assert!(
        health_becomes(&proxy, us.addr, true).await,
        "SERVING again brings us back"
    );
    assert_eq!(client.unary("back").await.texts(), ["us:back"]);
    // The checks are real calls of the health service.
    let checks = us.seen.calls.load(Ordering::SeqCst);
    assert!(checks >= 2, "{checks}");
}

#[tokio::test]
async fn a_grpc_health_check_takes_no_path() {
    let yaml = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  grpc:
    protocol: h2c
    endpoints: {{ us-east-1: [\"127.0.0.1:9\"] }}
    health_check: {{ grpc: {{}}, path: /healthz }}
routes:
  - {{ name: grpc, hosts: [\"g.test\"], cluster: grpc }}
"
    );
    let loaded = meridian::config::load_str(&yaml, std::path::Path::new("test.yaml")).unwrap();
    let error = match meridian::table::compile(&loaded, Default::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a gRPC check with a path compiled"),
    };
    assert!(error.contains("remove `path`"), "{error}");
}

/// An HTTPS/1.1 backend (ALPN `http/1.1` only) answering "h1 hello", with a certificate for
/// `grpc.test`; returns its address and the CA file that trusts it.
async fn http1_tls_backend(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["grpc.test".to_owned()]).unwrap();
    let ca_file = dir.join("h1-ca.pem");
    std::fs::write(&ca_file, certified.cert.pem()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certified.cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("h1 hello")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_file)
}

#[tokio::test]
async fn auto_falls_back_to_http1_and_http2_insists_on_h2() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, ca_file) = http1_tls_backend(dir.path()).await;
    let yaml = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  auto:
    protocol: auto
    tls: {{ sni: grpc.test, ca_file: \"{ca}\" }}
    endpoints: {{ us-east-1: [\"{backend}\"] }}
  strict:
    protocol: http2
    tls: {{ sni: grpc.test, ca_file: \"{ca}\" }}
    endpoints: {{ us-east-1: [\"{backend}\"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: auto, hosts: [\"auto.test\"], cluster: auto }}
  - {{ name: strict, hosts: [\"strict.test\"], cluster: strict, retries: {{ attempts: 0 }} }}
",
        ca = ca_file.display()
    );
    let proxy = start_proxy(&yaml).await;
    let addr = proxy.proxy_addr().unwrap();
    for _ in 0..3 {
        let answer = common::get(addr, "auto.test", "/", &[]).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str()),
            (200, "h1 hello")
        );
    }
    let answer = common::get(addr, "strict.test", "/", &[]).await;
    // The TLS handshake succeeded but the backend would not speak HTTP/2: a TLS failure.
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["x-meridian-error"], "upstream-tls-failure");
}

#[tokio::test]
async fn max_requests_per_connection_retires_http2_connections() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(
        us.addr,
        eu.addr,
        "    connection_pool: { max_requests_per_connection: 2 }",
        "",
    ))
    .await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    for i in 0..5 {
        let reply = client.unary(&i.to_string()).await;
        assert_eq!(reply.status, Some(0), "{reply:?}");
    }
    assert_eq!(us.seen.calls.load(Ordering::SeqCst), 5);
    assert_eq!(
        us.seen.connections.load(Ordering::SeqCst),
        3,
        "two streams per connection, then a new one"
    );
}

#[tokio::test]
async fn a_backend_that_stops_reading_holds_the_client_back() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let proxy = start_proxy(&config(us.addr, eu.addr, "", "")).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    // The backend reads the first message, then nothing more.
    let (_response, mut send) = client.open("/test.Echo/Hang", &[]).await;
    let chunk = frame(&vec![b'x'; 16 * 1024]);
    let mut sent = 0usize;
    for _ in 0..10_000 {
        if sent >= 8 << 20 {
            break;
        }
        send.reserve_capacity(chunk.len());
        let capacity = std::future::poll_fn(|cx| send.poll_capacity(cx));
        // A window that stays shut this long is the back-pressure under test (a slow
        // machine can only end the loop early, never make it fail).
        match tokio::time::timeout(Duration::from_millis(500), capacity).await {
            Ok(Some(Ok(n))) if n >= chunk.len() => {
                send.send_data(chunk.clone(), false).unwrap();
                sent += chunk.len();
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the stream failed: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(sent >= 16 * 1024, "the first message went through");
    assert!(
        sent < 3 << 20,
        "{sent} bytes left the client while the backend read 16 KiB"
    );
    assert_eq!(us.seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reload_changes_the_protocol_and_a_bad_one_keeps_the_old_table() {
    let (us, eu) = two_servers(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.yaml");
    let with = |protocol: &str| {
        config(us.addr, eu.addr, "", "")
            .replace("admin: { bind: null }", "admin: { bind: \"127.0.0.1:0\" }")
            .replace("protocol: h2c", &format!("protocol: {protocol}"))
    };
    std::fs::write(&path, with("h2c")).unwrap();
    let mut loaded = meridian::config::load_file(&path).unwrap();
    common::quiet(&mut loaded);
    let table = meridian::table::compile(&loaded, Default::default()).unwrap();
    let proxy = meridian::server::start_with(table, Some(path.clone()))
        .await
        .unwrap();
    let admin = proxy.admin.unwrap();
    let reload = async || {
        let mut admin_client = common::Client::connect(admin, None).await;
        let answer = admin_client
            .request(http::Method::POST, "admin", "/reload", &[])
            .await;
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        body["result"].as_str().unwrap_or_default().to_owned()
    };
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    assert_eq!(client.unary("a").await.texts(), ["us:a"]);

    // `http2` without a tls block is refused; the table in service keeps serving.
    std::fs::write(&path, with("http2")).unwrap();
    assert_ne!(reload().await, "applied");
    assert_eq!(client.unary("b").await.texts(), ["us:b"]);

    // http1 to backends that speak only HTTP/2: the change takes effect (and fails, as gRPC
    // statuses); back to h2c, calls work again.
    std::fs::write(&path, with("http1")).unwrap();
    assert_eq!(reload().await, "applied");
    let reply = client.unary("c").await;
    assert_eq!(
        (reply.http_status, reply.status),
        (200, Some(14)),
        "{reply:?}"
    );
    std::fs::write(&path, with("h2c")).unwrap();
    assert_eq!(reload().await, "applied");
    assert_eq!(client.unary("d").await.texts(), ["us:d"]);
}

#[tokio::test]
async fn requests_waiting_on_a_connect_share_its_failure() {
    // A listener whose accept queue is full and never drained: connects to it hang (or never
    // get an HTTP/2 answer) until connect_timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let hole = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let yaml = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  hole:
    protocol: h2c
    connect_timeout: 300ms
    endpoints: {{ us-east-1: [\"{hole}\"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: hole, hosts: [\"g.test\"], cluster: hole, timeout: 10s, retries: {{ attempts: 0 }} }}
"
    );
    let proxy = start_proxy(&yaml).await;
    let client = GrpcClient::connect(proxy.proxy_addr().unwrap(), "g.test").await;
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.unary(&i.to_string()).await })
        })
        .collect();
    for call in calls {
        let reply = tokio::time::timeout(LIMIT, call).await.unwrap().unwrap();
        assert_eq!(
            (reply.http_status, reply.status),
            (200, Some(14)),
            "{reply:?}"
        );
    }
    // One connect timed out for all ten; one after another they would take 3 seconds.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    drop(fillers);
}
