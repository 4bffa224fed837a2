//! HTTP/2 at the edge with a real h2 client: :authority wins over host, the stream limit is
//! advertised, and a storm of reset streams is answered with GOAWAY.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Backends, start_proxy};
use http::Request;
use tokio::net::TcpStream;

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
