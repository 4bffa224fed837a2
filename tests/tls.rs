//! TLS termination with certificates generated in the test (rcgen): SNI picks the certificate,
//! ALPN h2 works, old protocol versions are refused, a replaced certificate reaches new
//! connections within a second while open ones keep working, and http redirects to https.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::require_program;
use common::{Backends, get};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// Write a certificate for `names` signed by `ca` as PEM files; returns its DER.
fn leaf(ca: &Ca, names: &[&str], cert: &Path, key: &Path) -> CertificateDer<'static> {
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let key_pair = KeyPair::generate().unwrap();
    let issued = params.signed_by(&key_pair, &ca.issuer).unwrap();
    // Write beside and rename over, as certificate tooling does.
    std::fs::write(cert.with_extension("tmp"), issued.pem()).unwrap();
    std::fs::write(key.with_extension("tmpk"), key_pair.serialize_pem()).unwrap();
    std::fs::rename(key.with_extension("tmpk"), key).unwrap();
    std::fs::rename(cert.with_extension("tmp"), cert).unwrap();
    issued.der().clone()
}

fn connector(ca: &Ca, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

fn peer_cert(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn http1_get(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    http::Response<Bytes>,
) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = send(&mut sender, host).await;
    (sender, response)
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> http::Response<Bytes> {
    let req = http::Request::get("/echo")
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (head, body) = response.into_parts();
    http::Response::from_parts(head, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_with_sni_alpn_versions_and_hot_certificates() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (a_cert, a_key) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    let (b_cert, b_key) = (dir.path().join("b.pem"), dir.path().join("b.key"));
    let a_der = leaf(&ca, &["a.test"], &a_cert, &a_key);
    let b_der = leaf(&ca, &["*.b.test"], &b_cert, &b_key);
    let config_path = dir.path().join("meridian.yaml");
    std::fs::write(
        &config_path,
        backends.fill(&format!(
            "
local_region: us-east-1
listeners:
  - name: https
    bind: \"127.0.0.1:0\"
    tls:
      certificates:
        - {{ cert: \"{}\", key: \"{}\" }}
        - {{ cert: \"{}\", key: \"{}\" }}
  - {{ name: http, bind: \"127.0.0.1:0\", redirect_https: true, https_port: 8443 }}
admin: {{ bind: null }}
access_log: {{ enabled: false }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
            a_cert.display(),
            a_key.display(),
            b_cert.display(),
            b_key.display()
        )),
    )
    .unwrap();
    let loaded = meridian::config::load_file(&config_path).unwrap();
    let table =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
    let proxy = meridian::server::start_with(table, Some(config_path.clone()))
        .await
        .unwrap();
    meridian::reload::spawn_watchers(proxy.server.clone(), Duration::from_secs(3600));
    let https = proxy.listeners[0].1;
    let http = proxy.listeners[1].1;

    // SNI picks the certificate; the wildcard covers any subdomain.
    let tls = connector(&ca, &[b"http/1.1"]);
    let stream = handshake(&tls, https, "a.test").await;
    assert_eq!(peer_cert(&stream), a_der);
    let (mut open, response) = http1_get(stream, "a.test").await;
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    let stream = handshake(&tls, https, "api.b.test").await;
    assert_eq!(peer_cert(&stream), b_der);

    // ALPN h2: HTTP/2 over TLS end to end.
    let h2 = connector(&ca, &[b"h2"]);
    let stream = handshake(&h2, https, "a.test").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://a.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(
        (response.version(), response.status().as_u16()),
        (http::Version::HTTP_2, 200)
    );
    assert_eq!(response.headers()["x-meridian-region"], "us-east-1");

    // TLS 1.1 is refused; the same client speaking TLS 1.2 is served (openssl as the client).
    let openssl = require_program("openssl", "openssl");
    let s_client = |version: &str| {
        let out = std::process::Command::new(&openssl)
            .args([
                "s_client",
                "-connect",
                &https.to_string(),
                version,
                "-servername",
                "a.test",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE")
    };
    assert!(
        s_client("-tls1_2"),
        "openssl must complete a TLS 1.2 handshake"
    );
    assert!(!s_client("-tls1_1"), "TLS 1.1 must be refused");

    // A replaced certificate reaches new connections within a second; the open one still works.
    let new_der = leaf(&ca, &["a.test"], &a_cert, &a_key);
    assert_ne!(new_der, a_der);
    let replaced = Instant::now();
    loop {
        let stream = handshake(&tls, https, "a.test").await;
        if peer_cert(&stream) == new_der {
            break;
        }
        assert!(
            replaced.elapsed() < Duration::from_secs(1),
            "the new certificate was not served within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        send(&mut open, "a.test").await.status(),
        200,
        "the open connection keeps working"
    );

    // A broken new certificate keeps the one in service and reports the error.
    std::fs::write(&a_cert, "garbage").unwrap();
    let err = proxy
        .server
        .reload(meridian::reload::Trigger::Admin)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("listeners[0].tls.certificates[0]"),
        "{err}"
    );
    let stream = handshake(&tls, https, "a.test").await;
    assert_eq!(peer_cert(&stream), new_der);

    // Plain http redirects to https.
    let answer = get(http, "a.test", "/x?y=1", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.headers["location"], "https://a.test:8443/x?y=1");
    // A Host that is not `host[:port]` would point the Location elsewhere.
    for host in ["evil.test/x?", "evil.test#", "a.test:99999"] {
        let answer = get(http, host, "/x", &[]).await;
        assert_eq!(answer.status, 400, "{host}");
        assert!(!answer.headers.contains_key("location"), "{host}");
    }
}

#[test]
fn a_broken_certificate_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let text = format!(
        "local_region: r\nregions: {{ r: {{ lat: 0, lon: 0 }} }}\nlisteners: [{{ name: https, bind: \"127.0.0.1:0\", tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], min_version: \"1.1\" }} }}]\nroutes: [{{ name: r, hosts: [\"*\"], cluster: c }}]\nclusters: {{ c: {{ endpoints: {{ r: [\"127.0.0.1:1\"] }} }} }}\n",
        cert.display(),
        key.display()
    );
    let loaded = meridian::config::load_str(&text, Path::new("t.yaml")).unwrap();
    let err =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("listeners[0].tls.certificates[0]"), "{text}");
    assert!(text.contains("listeners[0].tls.min_version"), "{text}");
}

/// An HTTPS backend answering "secure hello" with a certificate for `name` signed by `ca`.
async fn tls_backend(ca: &Ca, name: &str, dir: &Path) -> SocketAddr {
    let (cert, key) = (dir.join("backend.pem"), dir.join("backend.key"));
    leaf(ca, &[name], &cert, &key);
    let certified = meridian::tls::load_pair(&cert, &key).unwrap();
    let resolver = meridian::tls::SniResolver::new(vec![certified]);
    let config =
        meridian::tls::server_config(resolver, meridian::tls::MinVersion::Tls12, None, None)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
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
                        http_body_util::Full::new(Bytes::from("secure hello")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_tls_verifies_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let backend = tls_backend(&ca, "backend.test", dir.path()).await;
    let ca_file = dir.path().join("ca.pem");
    let ca_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.der.as_ref())
    );
    std::fs::write(&ca_file, ca_pem).unwrap();
    let other = self::ca();
    let other_file = dir.path().join("other.pem");
    std::fs::write(
        &other_file,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                other.der.as_ref()
            )
        ),
    )
    .unwrap();
    let proxy = common::start_proxy(&format!(
        "
local_region: us-east-1
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
clusters:
  secure:
    endpoints: {{ us-east-1: [\"{backend}\"] }}
    tls: {{ sni: backend.test, ca_file: \"{}\" }}
    health_check: {{ path: /, interval: 100ms, timeout: 500ms }}
  untrusted:
    endpoints: {{ us-east-1: [\"{backend}\"] }}
    tls: {{ sni: backend.test, ca_file: \"{}\" }}
    outlier_detection: {{ enabled: false }}
routes:
  - {{ name: secure, hosts: [\"secure.test\"], cluster: secure }}
  - {{ name: untrusted, hosts: [\"untrusted.test\"], cluster: untrusted, retries: {{ attempts: 0 }} }}
",
        ca_file.display(),
        other_file.display()
    ))
    .await;
    let addr = proxy.proxy_addr().unwrap();
    let answer = get(addr, "secure.test", "/", &[]).await;
    assert_eq!(
        (answer.status.as_u16(), answer.body.as_str()),
        (200, "secure hello")
    );
    // A backend whose certificate the cluster does not trust is never talked to.
    let answer = get(addr, "untrusted.test", "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["x-meridian-error"], "upstream-tls-failure");
    // Health checks speak TLS too: after three check intervals (plain HTTP would have failed
    // all three) the endpoint is still healthy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let table = proxy.table.load();
    assert!(
        table.clusters[0].regions[0].members().endpoints[0]
            .state
            .healthy
            .load(std::sync::atomic::Ordering::SeqCst)
    );
}
