//! PROXY protocol v1 and v2 on listeners that ask for it: the header the L4 load balancer
//! sends before the HTTP bytes names the real client. Parsed with the `ppp` crate.
//!
//! Only a peer inside `geo.trusted_proxies` may send one; a connection from anyone else, or one
//! without a valid header, is closed before any HTTP is read.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::HeaderResult;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (RFC: 107 bytes including CRLF).
const V1_MAX: usize = 107;

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
    #[error("invalid PROXY protocol header: {0}")]
    V1(#[source] ppp::v1::BinaryParseError),
    #[error("invalid PROXY protocol header: {0}")]
    V2(#[source] ppp::v2::ParseError),
    #[error("the PROXY protocol header did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Read exactly the PROXY header from `stream` (nothing past it) and return the client it
/// names; `None` for LOCAL/UNKNOWN (health checks of the balancer itself: keep the peer).
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match tokio::time::timeout(timeout, read(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::Timeout(timeout)),
    }
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0u8; 12];
    stream.read_exact(&mut buf).await?;
    if buf.as_slice() == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream.read_exact(&mut fixed).await?;
        buf.extend_from_slice(&fixed);
        let length = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
        let start = buf.len();
        buf.resize(start + length, 0);
        stream.read_exact(&mut buf[start..]).await?;
    } else if buf.starts_with(b"PROXY ") {
        // v1 ends at CRLF; read byte by byte so no HTTP byte is taken.
        while !buf.ends_with(b"\r\n") {
            if buf.len() >= V1_MAX {
                return Err(ProxyHeaderError::Invalid("v1 header longer than 107 bytes"));
            }
            buf.push(stream.read_u8().await?);
        }
    } else {
        return Err(ProxyHeaderError::Missing);
    }
    source(&buf)
}

/// The client address a complete header names.
pub fn source(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) => Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(h)) => Ok(match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            (_, ppp::v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            _ => None,
        }),
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::V1(e)),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::V2(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_sources() {
        let v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 80\r\n";
        assert_eq!(
            source(v1).unwrap(),
            Some("198.51.100.7:5555".parse().unwrap())
        );
        assert_eq!(source(b"PROXY UNKNOWN\r\n").unwrap(), None);
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n";
        assert_eq!(
            source(v6).unwrap(),
            Some("[2001:db8::7]:4000".parse().unwrap())
        );
        let addrs: (SocketAddr, SocketAddr) = (
            "203.0.113.9:1234".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        let v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            addrs,
        )
        .build()
        .unwrap();
        assert_eq!(
            source(&v2).unwrap(),
            Some("203.0.113.9:1234".parse().unwrap())
        );
        assert!(source(b"PROXY TCP4 nonsense\r\n").is_err());
    }
}
