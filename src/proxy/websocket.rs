//! WebSocket: the handshake goes to the region steering chose, over a connection of its own
//! (an upgraded connection never returns to a pool); after the 101 both sides are spliced.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::proxy::{AttemptError, ProxyBody, ProxyError};
use crate::route::decision::RouteDecision;
use crate::table::EndpointState;
use crate::upstream::pool::UpstreamError;

/// Counts the session against its endpoint while it lasts.
struct Session(Arc<EndpointState>);

impl Drop for Session {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Send the handshake upstream and, on 101, splice the two connections.
pub async fn forward(
    region: &str,
    decision: &RouteDecision<'_>,
    mut parts: http::request::Parts,
    client: OnUpgrade,
) -> Result<Response<ProxyBody>, ProxyError> {
    let endpoint = decision.endpoint.clone();
    let addr = endpoint.address;
    let failed = |cause: AttemptError| ProxyError::Connect {
        endpoint: addr,
        region: region.to_owned(),
        cause: Box::new(cause),
    };
    let after = decision.cluster.pool.limits().connect_timeout;
    let stream = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(failed(UpstreamError::Connect { addr, source }.into())),
        Err(_) => return Err(failed(UpstreamError::ConnectTimeout { addr, after }.into())),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| failed(AttemptError::WebSocket(e)))?;
    tokio::spawn(connection.with_upgrades());

    // The hop-by-hop headers were stripped; the handshake needs these two back.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from(path);
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers;

    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| ProxyError::Upstream {
            endpoint: endpoint.address,
            region: region.to_owned(),
            cause: Box::new(AttemptError::WebSocket(e)),
        })?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused upstream: pass its answer on.
        let (head, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Response::from_parts(head, crate::proxy::made_body(body)));
    }
    let upstream = hyper::upgrade::on(&mut response);
    endpoint
        .state
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let session = Session(endpoint.state.clone());
    let address = endpoint.address;
    tokio::spawn(async move {
        let _session = session;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(upstream = %address, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(upstream = %address, error = %e, "websocket session ended with an error");
        }
    });
    let (head, _) = response.into_parts();
    Ok(Response::from_parts(
        head,
        crate::proxy::made_body(Bytes::new()),
    ))
}
