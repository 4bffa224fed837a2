//! TLS with several worker threads: a session ticket issued on one worker resumes on the
//! others (the ticketer is shared), and a reload's new certificate is served by every worker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::Backends;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use meridian::reload::{ReloadResult, Trigger};
use meridian::server::RunningServer;
use meridian::worker::Workers;
use rcgen::{CertificateParams, KeyPair};
use rustls::HandshakeKind;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const WORKERS: usize = 2;

/// A new self-signed certificate for `a.test`, written over `dir/a.pem` and `dir/a.key`.
fn certificate(dir: &Path) -> CertificateDer<'static> {
    let params = CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
    let key_pair = KeyPair::generate().unwrap();
    let issued = params.self_signed(&key_pair).unwrap();
    std::fs::write(dir.join("a.pem"), issued.pem()).unwrap();
    std::fs::write(dir.join("a.key"), key_pair.serialize_pem()).unwrap();
    issued.der().clone()
}

async fn start(backends: &Backends, dir: &Path) -> RunningServer {
    let path = dir.join("meridian.yaml");
    std::fs::write(
        &path,
        backends.fill(&format!(
            "
local_region: us-east-1
listeners:
  - name: https
    bind: \"127.0.0.1:0\"
    tls:
      certificates: [{{ cert: \"{}\", key: \"{}\" }}]
admin: {{ bind: null }}
access_log: {{ enabled: false }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
            dir.join("a.pem").display(),
            dir.join("a.key").display(),
        )),
    )
    .unwrap();
    let loaded = meridian::config::load_file(&path).unwrap();
    let table =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
    let workers = Arc::new(Workers::start(WORKERS, None).unwrap());
    meridian::server::start_on(table, Some(path), workers)
        .await
        .unwrap()
}

/// A TLS 1.3 client trusting only `cert`, with rustls's in-memory session cache.
fn client(cert: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A new connection, its handshake and one request (whose answer brings the tickets in):
/// how the handshake went, or why it failed.
async fn visit(connector: &TlsConnector, addr: SocketAddr) -> Result<HandshakeKind, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let kind = stream.get_ref().1.handshake_kind().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    drop(sender);
    conn.await.unwrap().unwrap();
    Ok(kind)
}

/// Connections accepted per worker, from the table's metrics.
fn accepted(proxy: &RunningServer) -> Vec<u64> {
    let table = proxy.table.load();
    (0..WORKERS)
        .map(|w| {
            table
                .metrics
                .worker_connections
                .with_label_values(&[w.to_string().as_str()])
                .get()
        })
        .collect()
}

fn handshakes(proxy: &RunningServer) -> (u64, u64) {
    let table = proxy.table.load();
    let count = |resumed| {
        table
            .metrics
            .tls_handshakes
            .with_label_values(&["https", resumed])
            .get()
    };
    (count("false"), count("true"))
}

#[tokio::test]
async fn tickets_resume_across_workers_and_a_new_certificate_reaches_every_worker() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let old = certificate(dir.path());
    let proxy = start(&backends, dir.path()).await;
    let addr = proxy.proxy_addr().unwrap();

    // One full handshake, then every new connection resumes, whichever worker took it.
    let connector = client(&old);
    let first = visit(&connector, addr).await;
    assert!(
        first.is_ok() && first != Ok(HandshakeKind::Resumed),
        "{first:?}"
    );
    for _ in 0..39 {
        assert_eq!(visit(&connector, addr).await, Ok(HandshakeKind::Resumed));
    }
    assert_eq!(handshakes(&proxy), (1, 39));
    let before = accepted(&proxy);
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    // A new certificate and a reload: every worker serves it to new connections.
    let new = certificate(dir.path());
    assert_eq!(
        proxy.server.reload(Trigger::Admin).await.unwrap(),
        ReloadResult::Applied
    );
    let (fresh, stale) = (client(&new), client(&old));
    for _ in 0..40 {
        assert!(visit(&fresh, addr).await.is_ok());
        assert!(
            visit(&stale, addr).await.is_err(),
            "a worker still serves the old certificate"
        );
    }
    let spread: Vec<u64> = accepted(&proxy)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    assert!(spread.iter().all(|&n| n > 0), "{spread:?}");
    proxy.shutdown(std::time::Duration::from_secs(5)).await;
}
