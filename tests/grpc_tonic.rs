//! A real gRPC client (tonic's channel, prost messages) through Meridian: calls, a server
//! stream, a status in trailers, and Meridian's own failures read as gRPC statuses — a
//! deadline, no reachable endpoint — with the codes and messages a gRPC client reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod grpc_support;

use std::net::SocketAddr;
use std::time::Duration;

use common::{REGIONS_YAML, start_proxy};
use grpc_support::{GrpcServer, ServerOptions, Text};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_prost::ProstCodec;

const LIMIT: Duration = Duration::from_secs(20);

fn config(backend: SocketAddr) -> String {
    format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
{REGIONS_YAML}
clusters:
  grpc:
    protocol: h2c
    endpoints: {{ us-east-1: [\"{backend}\"] }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: grpc, hosts: [\"g.test\"], cluster: grpc, timeout: 1s, retries: {{ attempts: 0 }} }}
"
    )
}

async fn client(proxy: SocketAddr) -> Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .origin("http://g.test".parse().unwrap())
        .connect()
        .await
        .unwrap();
    Grpc::new(channel)
}

async fn unary(
    grpc: &mut Grpc<Channel>,
    method: &'static str,
    request: Request<Text>,
) -> Result<Text, tonic::Status> {
    grpc.ready().await.unwrap();
    grpc.unary(
        request,
        PathAndQuery::from_static(method),
        ProstCodec::<Text, Text>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

fn text(s: &str) -> Request<Text> {
    Request::new(Text { text: s.to_owned() })
}

#[tokio::test]
async fn tonic_calls_and_streams_through_meridian() {
    let backend = GrpcServer::start("us", ServerOptions::default()).await;
    let proxy = start_proxy(&config(backend.addr)).await;
    let mut grpc = client(proxy.proxy_addr().unwrap()).await;

    let reply = tokio::time::timeout(LIMIT, unary(&mut grpc, "/test.Echo/ProtoUnary", text("hi")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.text, "us:hi");

    grpc.ready().await.unwrap();
    let mut stream = grpc
        .server_streaming(
            text("1000"),
            PathAndQuery::from_static("/test.Echo/ProtoStream"),
            ProstCodec::<Text, Text>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(message) = tokio::time::timeout(LIMIT, stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        got.push(message.text);
    }
    let want: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(got, want);

    // A status the backend sent in trailers, as the client library reports it.
    let status = unary(&mut grpc, "/test.Echo/ProtoDenied", text("x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "no entry");
}

#[tokio::test]
async fn tonic_reads_meridians_own_failures_as_statuses() {
    let backend = GrpcServer::start("us", ServerOptions::default()).await;
    let proxy = start_proxy(&config(backend.addr)).await;
    let mut grpc = client(proxy.proxy_addr().unwrap()).await;

    // A call's deadline is capped by the route timeout (1s): Meridian gives up there, well
    // before the client would, and says so.
    let mut request = text("x");
    request.set_timeout(Duration::from_secs(15));
    let status = tokio::time::timeout(LIMIT, unary(&mut grpc, "/test.Echo/Hang", request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().starts_with("meridian: "), "{status:?}");
    assert_eq!(
        status.metadata().get("x-meridian-error").unwrap(),
        "upstream-timeout"
    );

    // A status in a trailers-only answer.
    let status = unary(&mut grpc, "/test.Echo/Unavailable", text("x"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "busy")
    );

    // The backend gone: UNAVAILABLE, readable, not a bare 502.
    backend.kill();
    drop(backend);
    let status = tokio::time::timeout(LIMIT, unary(&mut grpc, "/test.Echo/ProtoUnary", text("x")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("could not connect to an upstream in us-east-1"),
        "{status:?}"
    );
}
