//! WebSocket through Meridian to the nearest region, with a real client and real servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket server that answers every text message with `<region>: <message>`.
async fn echo_server(region: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(text) = msg {
                        let _ = ws.send(Message::text(format!("{region}: {text}"))).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_sessions_go_to_the_nearest_region() {
    let us = echo_server("us-east-1").await;
    let eu = echo_server("eu-west-1").await;
    let config = format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
geo: {{ database: \"{}\", trusted_proxies: [\"127.0.0.1/32\"] }}
{}
clusters:
  ws: {{ endpoints: {{ us-east-1: [\"{us}\"], eu-west-1: [\"{eu}\"] }} }}
routes:
  - {{ name: ws, hosts: [\"*\"], cluster: ws }}
",
        common::demo_db().display(),
        common::REGIONS_YAML
    );
    let proxy = common::start_proxy(&config).await;
    let addr = proxy.proxy_addr().unwrap();
    for (xff, region) in [("198.51.100.7", "eu-west-1"), ("192.0.2.10", "us-east-1")] {
        let mut request = format!("ws://{addr}/chat").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["x-meridian-region"], region);
        for i in 0..3 {
            ws.send(Message::text(format!("hello {i}"))).await.unwrap();
            let answer = ws.next().await.unwrap().unwrap();
            assert_eq!(answer, Message::text(format!("{region}: hello {i}")));
        }
        ws.close(None).await.unwrap();
    }
}
