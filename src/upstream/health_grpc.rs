//! The gRPC kind of active health check: `grpc.health.v1.Health/Check` over HTTP/2 (h2c, or
//! TLS with ALPN h2 when the cluster has TLS), one connection per check. Used by
//! `upstream::health` when a cluster's `health_check` has `grpc`.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, header};
use tokio::net::TcpStream;

use crate::upstream::endpoints::Endpoint;
use crate::upstream::error::{UpstreamError, server_name};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// The answer is a handful of bytes; anything much larger is not a health answer.
const MAX_ANSWER: usize = 64 * 1024;

/// One check: whether the endpoint says SERVING for `service`.
pub(super) async fn check(
    endpoint: &Endpoint,
    service: &str,
    tls: Option<&crate::tls::UpstreamTls>,
) -> Result<bool, UpstreamError> {
    let addr = endpoint.address;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, endpoint, service, false).await,
        Some(tls) => {
            let mut config = (**tls.connector().config()).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = server_name(tls, addr)?;
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|source| UpstreamError::Tls { addr, source })?;
            exchange(stream, endpoint, service, true).await
        }
    }
}

async fn exchange<T>(
    io: T,
    endpoint: &Endpoint,
    service: &str,
    tls: bool,
) -> Result<bool, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = endpoint.address;
    let failed = |source| UpstreamError::GrpcCheck { addr, source };
    let (send, connection) = h2::client::handshake(io).await.map_err(failed)?;
    // Ends with the check: the connection is dropped with the last handle to it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let uri = format!(
        "{}://{}{CHECK_PATH}",
        if tls { "https" } else { "http" },
        endpoint.authority
    );
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "meridian-health-check")
        .body(())
        .map_err(|source| UpstreamError::CheckRequest { addr, source })?;
    let mut send = send.ready().await.map_err(failed)?;
    let (response, mut body) = send.send_request(request, false).map_err(failed)?;
    body.send_data(request_message(service), true)
        .map_err(failed)?;
    let response = response.await.map_err(failed)?;
    let head_status = grpc_status(response.headers().get("grpc-status"));
    let mut recv = response.into_body();
    let mut answer = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(failed)?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        if answer.len() + chunk.len() > MAX_ANSWER {
            return Ok(false);
        }
        answer.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.map_err(failed)?;
    let status = trailers
        .as_ref()
        .map(|t| grpc_status(t.get("grpc-status")))
        .unwrap_or(head_status);
    if status.as_deref() != Some("0") {
        return Err(UpstreamError::GrpcCheckStatus {
            addr,
            status: status.unwrap_or_else(|| "(none)".to_owned()),
        });
    }
    Ok(serving_status(&answer) == Some(SERVING))
}

fn grpc_status(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `HealthCheckRequest { service }`, framed: field 1, length-delimited (omitted when empty).
fn request_message(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(out: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        out.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// The `status` (field 1, varint) of a framed `HealthCheckResponse`; `None` when the answer
/// is not one well-formed uncompressed message. A message without the field says UNKNOWN (0).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&flag, rest) = framed.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let mut message = rest.get(4..)?;
    if message.len() != len {
        return None;
    }
    let mut status = 0;
    while let Some((&key, after)) = message.split_first() {
        let (value, after) = varint(after)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = value,
            // Another varint field: skipped.
            (_, 0) => {}
            // A length-delimited field: skipped.
            (_, 2) => {
                let skip = usize::try_from(value).ok()?;
                message = after.get(skip..)?;
                continue;
            }
            _ => return None,
        }
        message = after;
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_status_reads_the_answer_and_refuses_junk() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (&[0, 0, 0, 0, 2, 0x08, 1], Some(1)),
            (&[0, 0, 0, 0, 2, 0x08, 2], Some(2)),
            // Empty message: UNKNOWN.
            (&[0, 0, 0, 0, 0], Some(0)),
            // An unknown string field before the status is skipped.
            (&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1], Some(1)),
            // Compressed, short, lying lengths, truncated varints.
            (&[1, 0, 0, 0, 2, 0x08, 1], None),
            (&[0, 0, 0], None),
            (&[0, 0, 0, 0, 9, 0x08, 1], None),
            (&[0, 0, 0, 0, 2, 0x08, 0x80], None),
            (&[0, 0, 0, 0, 3, 0x12, 9, b'x'], None),
            (&[], None),
        ];
        for (framed, want) in cases {
            assert_eq!(serving_status(framed), *want, "{framed:?}");
        }
    }

    #[test]
    fn request_names_the_service() {
        assert_eq!(&request_message("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_message("pkg.Svc")[..],
            &[
                0, 0, 0, 0, 9, 0x0a, 7, b'p', b'k', b'g', b'.', b'S', b'v', b'c'
            ]
        );
    }
}
