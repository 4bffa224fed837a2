//! PROXY protocol v1 and v2: from a trusted peer the header's source is the client (and its
//! location); from an untrusted peer, or without a header, the connection is closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Backends, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

async fn send(proxy: SocketAddr, from: &str, preamble: &[u8]) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream.write_all(preamble).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn proxy_header_sets_the_client_only_from_trusted_peers() {
    let backends = Backends::start().await;
    let proxy = start_proxy(&backends.fill(
        "
local_region: us-east-1
listeners: [{ name: l4, bind: \"127.0.0.1:0\", proxy_protocol: true, header_read_timeout: 2s }]
admin: { bind: null }
geo: { database: \"{DB}\", trusted_proxies: [\"127.0.0.1/32\"] }
{REGIONS}
clusters:
  api: { endpoints: { us-east-1: [\"{US}\"], eu-west-1: [\"{EU}\"], ap-southeast-1: [\"{AP}\"] } }
routes:
  - { name: api, hosts: [\"*\"], cluster: api }
",
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();

    // v1 from the trusted load balancer: a client in Germany.
    let reply = send(
        addr,
        "127.0.0.1",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n",
    )
    .await;
    assert!(reply.contains("x-meridian-region: eu-west-1"), "{reply}");
    assert!(
        reply.contains(r#""x-forwarded-for":"198.51.100.7""#),
        "{reply}"
    );

    // v2: a client in Singapore.
    let addrs: (SocketAddr, SocketAddr) = (
        "203.0.113.9:4444".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        addrs,
    )
    .build()
    .unwrap();
    let reply = send(addr, "127.0.0.1", &v2).await;
    assert!(
        reply.contains("x-meridian-region: ap-southeast-1"),
        "{reply}"
    );

    // LOCAL/UNKNOWN (the balancer's own checks): the peer stays the client.
    let reply = send(addr, "127.0.0.1", b"PROXY UNKNOWN\r\n").await;
    assert!(reply.contains("x-meridian-region: us-east-1"), "{reply}");
    let before = backends.hits();

    // From an untrusted peer: refused, whatever it claims.
    let reply = send(
        addr,
        "127.0.0.2",
        b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\n",
    )
    .await;
    assert!(reply.is_empty(), "{reply}");
    // Without a header (or a broken one): refused.
    assert!(send(addr, "127.0.0.1", b"").await.is_empty());
    assert!(
        send(addr, "127.0.0.1", b"PROXY TCP4 garbage\r\n")
            .await
            .is_empty()
    );
    assert_eq!(backends.hits(), before, "nothing refused reached a backend");
}
