//! Mutual TLS with certificates generated in the test (rcgen). Upstream: a backend that demands
//! a client certificate refuses Meridian without one and takes the one configured; a replaced
//! certificate file is picked up without a restart, a broken one keeps the old, and a changed
//! `ca_file` takes effect on reload. Downstream: a listener that requires client certificates
//! refuses clients without one or with one from another CA, an optional one serves both, and
//! the verified certificate reaches the upstream in a header only where configured, never a
//! client's forged copy. Abuse: broken, mismatched, huge and missing files are config problems
//! at their field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backends, get};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate with common name `cn` (and `dns` as its names) signed by `ca`, as PEM text:
/// (certificate, key, DER).
fn issue(ca: &Ca, cn: &str, dns: &[&str]) -> (String, String, CertificateDer<'static>) {
    let mut params =
        CertificateParams::new(dns.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names.push(SanType::URI(
        format!("spiffe://test/{cn}").try_into().unwrap(),
    ));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// Write a certificate and its key beside their paths and rename them over, as certificate
/// tooling does; returns the certificate's DER.
fn write_leaf(ca: &Ca, cn: &str, dns: &[&str], cert: &Path, key: &Path) -> CertificateDer<'static> {
    let (cert_pem, key_pem, der) = issue(ca, cn, dns);
    std::fs::write(key.with_extension("tmpk"), key_pem).unwrap();
    std::fs::write(cert.with_extension("tmpc"), cert_pem).unwrap();
    std::fs::rename(key.with_extension("tmpk"), key).unwrap();
    std::fs::rename(cert.with_extension("tmpc"), cert).unwrap();
    der
}

fn roots(ca: &Ca) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    roots
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A backend for `backend.test` (signed by `server_ca`) that demands a client certificate
/// signed by `client_ca`, records each one it is shown, and closes every connection after its
/// answer (so each request shows a certificate afresh).
struct MtlsBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<CertificateDer<'static>>>>,
}

impl MtlsBackend {
    async fn start(server_ca: &Ca, client_ca: &Ca) -> Self {
        let (cert, key, _) = issue(server_ca, "backend", &["backend.test"]);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca)), provider())
                .build()
                .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                    {
                        record.lock().unwrap().push(cert.clone().into_owned());
                    }
                    let service = hyper::service::service_fn(|_req| async {
                        let mut response = http::Response::new(Full::new(Bytes::from("mtls ok")));
                        response
                            .headers_mut()
                            .insert("connection", http::HeaderValue::from_static("close"));
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn last(&self) -> Option<CertificateDer<'static>> {
        self.seen.lock().unwrap().last().cloned()
    }
}

async fn reload(proxy: &meridian::server::RunningServer) -> Result<(), String> {
    proxy
        .server
        .reload(meridian::reload::Trigger::Admin)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_client_certificates_are_presented_hot_reloaded_and_kept_when_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (ca("backend-ca"), ca("client-ca"));
    let backend = MtlsBackend::start(&server_ca, &client_ca).await;
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &server_ca.pem).unwrap();
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    let first = write_leaf(&client_ca, "meridian-1", &[], &cert, &key);
    let config_path = dir.path().join("meridian.yaml");
    std::fs::write(
        &config_path,
        format!(
            "
local_region: us-east-1
regions: {{ us-east-1: {{ lat: 38.9, lon: -77.4 }} }}
listeners: [{{ name: http, bind: \"127.0.0.1:0\" }}]
admin: {{ bind: null }}
access_log: {{ enabled: false }}
clusters:
  secure:
    endpoints: {{ us-east-1: [\"{addr}\"] }}
    tls: {{ sni: backend.test, ca_file: \"{ca}\", cert: \"{cert}\", key: \"{key}\" }}
  nocert:
    endpoints: {{ us-east-1: [\"{addr}\"] }}
    tls: {{ sni: backend.test, ca_file: \"{ca}\" }}
routes:
  - {{ name: nocert, hosts: [nocert.test], cluster: nocert }}
  - {{ name: secure, hosts: [\"*\"], cluster: secure }}
",
            addr = backend.addr,
            ca = ca_file.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let loaded = meridian::config::load_file(&config_path).unwrap();
    let table =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
    let proxy = meridian::server::start_with(table, Some(config_path.clone()))
        .await
        .unwrap();
    meridian::reload::spawn_watchers(proxy.server.clone(), Duration::from_secs(3600));
    let http = proxy.listeners[0].1;

    // Without a client certificate the backend refuses Meridian, and the client is told why.
    let refused = get(http, "nocert.test", "/", &[]).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    assert_eq!(refused.headers["x-meridian-error"], "upstream-tls-failure");
    assert!(backend.seen.lock().unwrap().is_empty());

    // With one it is served, and the backend saw the configured certificate.
    let served = get(http, "secure.test", "/", &[]).await;
    assert_eq!(
        (served.status.as_u16(), served.body.as_str()),
        (200, "mtls ok")
    );
    assert_eq!(backend.last(), Some(first.clone()));

    // A certificate replaced on disk is picked up without a restart (the file is watched).
    let second = write_leaf(&client_ca, "meridian-2", &[], &cert, &key);
    let replaced = Instant::now();
    loop {
        let answer = get(http, "secure.test", "/", &[]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if backend.last() == Some(second.clone()) {
            break;
        }
        assert_eq!(backend.last(), Some(first.clone()));
        assert!(
            replaced.elapsed() < Duration::from_secs(10),
            "the new client certificate was not used within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken replacement fails the reload at its field and keeps the certificate in use.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    let err = reload(&proxy).await.unwrap_err();
    assert!(err.contains("clusters.secure.tls.cert"), "{err}");
    let answer = get(http, "secure.test", "/", &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(backend.last(), Some(second.clone()));
    // So does a key that belongs to another certificate.
    let (other_cert, _, _) = issue(&client_ca, "other", &[]);
    std::fs::write(&cert, other_cert).unwrap();
    let err = reload(&proxy).await.unwrap_err();
    assert!(err.contains("clusters.secure.tls.key"), "{err}");
    assert_eq!(get(http, "secure.test", "/", &[]).await.status, 200);
    assert_eq!(backend.last(), Some(second.clone()));

    // A changed ca_file takes effect on reload: trusting another CA, the backend is refused.
    let third = write_leaf(&client_ca, "meridian-3", &[], &cert, &key);
    std::fs::write(&ca_file, ca("stranger").pem).unwrap();
    reload(&proxy).await.unwrap();
    let answer = get(http, "secure.test", "/", &[]).await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.headers["x-meridian-error"], "upstream-tls-failure");
    std::fs::write(&ca_file, &server_ca.pem).unwrap();
    reload(&proxy).await.unwrap();
    assert_eq!(get(http, "secure.test", "/", &[]).await.status, 200);
    assert_eq!(backend.last(), Some(third));
}

/// A TLS client trusting `server_ca`, presenting a certificate for `cn` from `client_ca`.
fn client(server_ca: &Ca, client_ca: Option<(&Ca, &str)>) -> TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(server_ca));
    let mut config = match client_ca {
        None => builder.with_no_client_auth(),
        Some((ca, cn)) => {
            let (cert, key, _) = issue(ca, cn, &["client.example"]);
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One request over TLS: the echo backend's view of it, or the error that ended it.
async fn request(
    connector: &TlsConnector,
    addr: SocketAddr,
    method: http::Method,
    headers: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("proxy.test").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let body = if method == http::Method::POST {
        Full::new(Bytes::from_static(b"a body"))
    } else {
        Full::new(Bytes::new())
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri("/echo")
        .header("host", "proxy.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(req.body(body).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
}

/// One GET over HTTP/2 (ALPN h2), presenting a certificate from `client_ca` when given.
async fn h2_request(
    server_ca: &Ca,
    client_ca: Option<(&Ca, &str)>,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(server_ca));
    let mut config = match client_ca {
        None => builder.with_no_client_auth(),
        Some((ca, cn)) => {
            let (cert, key, _) = issue(ca, cn, &[]);
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("proxy.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get("https://proxy.test/echo");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Complete the client's side of a handshake and read: what the server's alert said.
async fn handshake_alert(connector: &TlsConnector, addr: SocketAddr) -> String {
    use tokio::io::AsyncReadExt;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = match connector
        .connect(ServerName::try_from("proxy.test").unwrap(), tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut byte)).await {
        Ok(Err(e)) => e.to_string(),
        other => panic!("the server did not refuse the connection: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_verify_client_certificates_and_forward_them_only_when_configured() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, stranger) = (ca("server-ca"), ca("client-ca"), ca("stranger"));
    let (cert, key) = (dir.path().join("proxy.pem"), dir.path().join("proxy.key"));
    write_leaf(&server_ca, "proxy", &["proxy.test"], &cert, &key);
    let client_ca_file = dir.path().join("clients.pem");
    std::fs::write(&client_ca_file, &client_ca.pem).unwrap();
    let tls = |extra: &str| {
        format!(
            "{{ certificates: [{{ cert: \"{}\", key: \"{}\" }}], client_ca: \"{}\"{extra} }}",
            cert.display(),
            key.display(),
            client_ca_file.display()
        )
    };
    let xfcc = ", forward_client_cert: { header: x-forwarded-client-cert }";
    let yaml = backends.fill(&format!(
        "
local_region: us-east-1
listeners:
  - {{ name: required, bind: \"127.0.0.1:0\", tls: {} }}
  - {{ name: optional, bind: \"127.0.0.1:0\", tls: {} }}
  - {{ name: silent, bind: \"127.0.0.1:0\", tls: {} }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
        tls(&format!(", require_client_cert: true{xfcc}")),
        tls(xfcc),
        tls(", require_client_cert: true"),
    ));
    let proxy = common::start_proxy(&yaml).await;
    let [required, optional, silent] = [0, 1, 2].map(|i| proxy.listeners[i].1);
    let anonymous = client(&server_ca, None);
    let member = client(&server_ca, Some((&client_ca, "alice")));
    let outsider = client(&server_ca, Some((&stranger, "mallory")));
    let spoof = [("x-forwarded-client-cert", "Subject=\"CN=admin\"")];
    let get = http::Method::GET;
    let post = http::Method::POST;

    // Required: no certificate, or one from another CA, is refused at the handshake (TLS 1.3
    // reports it on the first read), and nothing reaches the backend.
    let before = backends.hits();
    for (refused, alert) in [(&anonymous, "CertificateRequired"), (&outsider, "alert")] {
        assert!(request(refused, required, get.clone(), &[]).await.is_err());
        let err = handshake_alert(refused, required).await;
        assert!(err.contains(alert), "{err}");
    }
    assert_eq!(backends.hits(), before);

    // A certificate from client_ca is served; the backend learns who it was, and a forged copy
    // of the header is gone, whichever HTTP/1.1 server read the request.
    for method in [get.clone(), post.clone()] {
        let (status, seen) = request(&member, required, method.clone(), &spoof)
            .await
            .unwrap();
        assert_eq!(status, 200, "{method}");
        let header = seen["headers"]["x-forwarded-client-cert"].as_str().unwrap();
        assert!(header.starts_with("Hash="), "{header}");
        assert!(header.contains(";Subject=\"CN=alice\""), "{header}");
        assert!(header.contains(";URI=spiffe://test/alice"), "{header}");
        assert!(header.contains(";DNS=client.example"), "{header}");
        assert!(!header.contains("admin"), "{header}");
    }

    // Over HTTP/2 as well (the connection's header reaches every stream).
    let (status, seen) = h2_request(&server_ca, Some((&client_ca, "bob")), required, &spoof).await;
    assert_eq!(status, 200);
    let header = seen["headers"]["x-forwarded-client-cert"].as_str().unwrap();
    assert!(header.contains(";Subject=\"CN=bob\""), "{header}");
    let (status, seen) = h2_request(&server_ca, None, optional, &spoof).await;
    assert_eq!(status, 200);
    assert!(
        seen["headers"].get("x-forwarded-client-cert").is_none(),
        "{seen}"
    );

    // Optional: without a certificate the client is served and the forged header removed;
    // with one it is forwarded; one from another CA is still refused.
    for method in [get.clone(), post.clone()] {
        let (status, seen) = request(&anonymous, optional, method.clone(), &spoof)
            .await
            .unwrap();
        assert_eq!(status, 200, "{method}");
        assert!(
            seen["headers"].get("x-forwarded-client-cert").is_none(),
            "{seen}"
        );
    }
    let (status, seen) = request(&member, optional, get.clone(), &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        seen["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap()
            .contains("CN=alice")
    );
    assert!(
        request(&outsider, optional, get.clone(), &[])
            .await
            .is_err()
    );

    // A flood of clients without certificates (and with forged headers) is refused, none
    // reaches the backend, and a member is still served afterwards.
    let before = backends.hits();
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let anonymous = anonymous.clone();
            tokio::spawn(async move {
                request(&anonymous, required, http::Method::GET, &spoof)
                    .await
                    .is_err()
            })
        })
        .collect();
    for refused in flood {
        assert!(refused.await.unwrap());
    }
    assert_eq!(backends.hits(), before);
    assert_eq!(
        request(&member, required, get.clone(), &[])
            .await
            .unwrap()
            .0,
        200
    );

    // Without forward_client_cert nothing is forwarded.
    let (status, seen) = request(&member, silent, get.clone(), &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        seen["headers"].get("x-forwarded-client-cert").is_none(),
        "{seen}"
    );
    assert!(request(&anonymous, silent, get, &[]).await.is_err());
}

fn compile_problems(text: &str) -> String {
    let loaded = meridian::config::load_str(text, Path::new("t.yaml")).unwrap();
    meridian::table::compile(&loaded, meridian::table::CompileContext::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn broken_huge_mismatched_and_missing_files_are_problems_at_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (a, b) = (ca("a"), ca("b"));
    let (cert_pem, key_pem, _) = issue(&a, "meridian", &[]);
    let (_, other_key, _) = issue(&b, "other", &[]);
    std::fs::write(path("cert.pem"), &cert_pem).unwrap();
    std::fs::write(path("key.pem"), &key_pem).unwrap();
    std::fs::write(path("other.key"), other_key).unwrap();
    std::fs::write(path("garbage.pem"), "-----BEGIN CERTIFICATE-----\n%%%\n").unwrap();
    std::fs::write(path("empty.pem"), "no PEM here\n").unwrap();
    // 10 MB of certificates: refused by size before anything is parsed.
    let mut huge = String::new();
    while huge.len() < 10 * 1024 * 1024 {
        huge.push_str(&a.pem);
    }
    std::fs::write(path("huge.pem"), huge).unwrap();
    std::fs::write(path("ca.pem"), &a.pem).unwrap();

    let config = |listener_tls: &str, cluster_tls: &str| {
        format!(
            "local_region: r\nregions: {{ r: {{ lat: 0, lon: 0 }} }}\nlisteners:\n  - name: https\n    bind: \"127.0.0.1:0\"\n    tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}]{listener_tls} }}\nroutes: [{{ name: r, hosts: [\"*\"], cluster: c }}]\nclusters:\n  c:\n    endpoints: {{ r: [\"127.0.0.1:1\"] }}\n    tls: {{ ca_file: \"{}\"{cluster_tls} }}\n",
            path("cert.pem"),
            path("key.pem"),
            path("ca.pem"),
        )
    };
    // (listener tls extra, cluster tls extra, wanted: field and words of the message)
    let cases: Vec<(String, String, &str, &str)> = vec![
        (
            format!(", client_ca: \"{}\"", path("garbage.pem")),
            String::new(),
            "t.yaml:6: listeners[0].tls.client_ca",
            "garbage.pem",
        ),
        (
            format!(", client_ca: \"{}\"", path("empty.pem")),
            String::new(),
            "listeners[0].tls.client_ca",
            "holds no certificate",
        ),
        (
            format!(", client_ca: \"{}\"", path("huge.pem")),
            String::new(),
            "listeners[0].tls.client_ca",
            "more than the 1048576",
        ),
        (
            format!(", client_ca: \"{}\"", path("missing.pem")),
            String::new(),
            "listeners[0].tls.client_ca",
            "missing.pem",
        ),
        (
            ", require_client_cert: true".into(),
            String::new(),
            "listeners[0].tls.require_client_cert",
            "needs `client_ca`",
        ),
        (
            ", forward_client_cert: { header: x-forwarded-client-cert }".into(),
            String::new(),
            "listeners[0].tls.forward_client_cert",
            "needs `client_ca`",
        ),
        (
            format!(
                ", client_ca: \"{}\", forward_client_cert: {{ header: \"bad header\" }}",
                path("ca.pem")
            ),
            String::new(),
            "listeners[0].tls.forward_client_cert.header",
            "not a header name",
        ),
        (
            format!(
                ", client_ca: \"{}\", forward_client_cert: {{ header: x-forwarded-for }}",
                path("ca.pem")
            ),
            String::new(),
            "listeners[0].tls.forward_client_cert.header",
            "Meridian sets or strips",
        ),
        (
            String::new(),
            format!(
                ", cert: \"{}\", key: \"{}\"",
                path("garbage.pem"),
                path("key.pem")
            ),
            "t.yaml:11: clusters.c.tls.cert",
            "garbage.pem",
        ),
        (
            String::new(),
            format!(
                ", cert: \"{}\", key: \"{}\"",
                path("cert.pem"),
                path("other.key")
            ),
            "clusters.c.tls.key",
            "does not belong to",
        ),
        (
            String::new(),
            format!(
                ", cert: \"{}\", key: \"{}\"",
                path("cert.pem"),
                path("cert.pem")
            ),
            "clusters.c.tls.key",
            "private key",
        ),
        (
            String::new(),
            format!(
                ", cert: \"{}\", key: \"{}\"",
                path("missing.pem"),
                path("key.pem")
            ),
            "clusters.c.tls.cert",
            "missing.pem",
        ),
        (
            String::new(),
            format!(", cert: \"{}\"", path("cert.pem")),
            "clusters.c.tls.cert",
            "needs `key` too",
        ),
        (
            String::new(),
            ", sni: \"not a name!\"".into(),
            "clusters.c.tls.sni",
            "`not a name!` is not a DNS name or IP address",
        ),
        (
            String::new(),
            format!(", key: \"{}\"", path("key.pem")),
            "clusters.c.tls.key",
            "needs `cert` too",
        ),
    ];
    for (listener_tls, cluster_tls, field, words) in &cases {
        let text = compile_problems(&config(listener_tls, cluster_tls));
        assert!(text.contains(field), "{field}: {text}");
        assert!(text.contains(words), "{words}: {text}");
    }
    // A huge upstream CA file is refused the same way.
    let text = compile_problems(&config("", "").replace(&path("ca.pem"), &path("huge.pem")));
    assert!(text.contains("clusters.c.tls.ca_file"), "{text}");
    assert!(text.contains("more than the"), "{text}");
    // The good files compile.
    let good = config(
        &format!(
            ", client_ca: \"{}\", require_client_cert: true",
            path("ca.pem")
        ),
        &format!(
            ", cert: \"{}\", key: \"{}\"",
            path("cert.pem"),
            path("key.pem")
        ),
    );
    let loaded = meridian::config::load_str(&good, Path::new("t.yaml")).unwrap();
    meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
}

#[test]
fn import_istio_maps_mutual_and_simple_tls_and_says_what_istio_mutual_needs() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/istio/mtls.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["import", "istio"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let report = |resource: &str| {
        text.lines()
            .find(|l| l.contains(resource) && l.contains("spec.trafficPolicy.tls"))
            .unwrap_or_else(|| panic!("{resource} missing from the report:\n{text}"))
    };
    assert!(report("payments-mtls").contains("mapped"));
    assert!(report("payments-mtls").contains("clientCertificate → cert"));
    assert!(report("catalog-tls").contains("mapped"));
    let mesh = report("cart-mesh");
    assert!(mesh.contains("unsupported"), "{mesh}");
    for mount in [
        "cert-chain.pem",
        "key.pem",
        "root-cert.pem",
        "tls.cert",
        "tls.key",
    ] {
        assert!(mesh.contains(mount), "{mount}: {mesh}");
    }
    let config: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for line in [
        "sni: payments.internal.example.com",
        "cert: /etc/certs/myclientcert.pem",
        "key: /etc/certs/client_private_key.pem",
        "sni: catalog.internal.example.com",
    ] {
        assert!(config.contains(line), "{line}:\n{config}");
    }
    // Two clusters speak TLS (cart's ISTIO_MUTUAL is left to the operator), one with a client
    // certificate.
    assert_eq!(config.matches("tls:").count(), 2, "{config}");
    assert_eq!(config.matches("cert: ").count(), 1, "{config}");

    // With the files mounted where it says, the output passes `meridian check`.
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (ca("mesh"), ca("clients"));
    let (cert, key, _) = issue(&client_ca, "shop", &[]);
    let files = [
        ("rootcacerts.pem", server_ca.pem.clone()),
        ("myclientcert.pem", cert),
        ("client_private_key.pem", key),
    ];
    for (name, pem) in &files {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let mounted = text.replace("/etc/certs", &dir.path().display().to_string());
    let imported = dir.path().join("imported.yaml");
    std::fs::write(&imported, mounted).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "-c"])
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_ca_verifies_new_handshakes_and_a_broken_one_is_refused() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, old_ca, new_ca) = (ca("server-ca"), ca("old-clients"), ca("new-clients"));
    let (cert, key) = (dir.path().join("proxy.pem"), dir.path().join("proxy.key"));
    write_leaf(&server_ca, "proxy", &["proxy.test"], &cert, &key);
    let client_ca = dir.path().join("clients.pem");
    std::fs::write(&client_ca, &old_ca.pem).unwrap();
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
      certificates: [{{ cert: \"{}\", key: \"{}\" }}]
      client_ca: \"{}\"
      require_client_cert: true
admin: {{ bind: null }}
access_log: {{ enabled: false }}
{{REGIONS}}
clusters:
  api: {{ endpoints: {{ us-east-1: [\"{{US}}\"] }} }}
routes:
  - {{ name: api, hosts: [\"*\"], cluster: api }}
",
            cert.display(),
            key.display(),
            client_ca.display()
        )),
    )
    .unwrap();
    let loaded = meridian::config::load_file(&config_path).unwrap();
    let table =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
    let proxy = meridian::server::start_with(table, Some(config_path.clone()))
        .await
        .unwrap();
    let https = proxy.listeners[0].1;
    let old = client(&server_ca, Some((&old_ca, "old")));
    let new = client(&server_ca, Some((&new_ca, "new")));
    let get = http::Method::GET;
    assert_eq!(request(&old, https, get.clone(), &[]).await.unwrap().0, 200);
    assert!(request(&new, https, get.clone(), &[]).await.is_err());

    std::fs::write(&client_ca, &new_ca.pem).unwrap();
    // Same port, same listener: the verifier's CAs are swapped in place.
    reload(&proxy).await.unwrap();
    assert_eq!(request(&new, https, get.clone(), &[]).await.unwrap().0, 200);
    assert!(request(&old, https, get.clone(), &[]).await.is_err());

    std::fs::write(&client_ca, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    let err = reload(&proxy).await.unwrap_err();
    assert!(err.contains("listeners[0].tls.client_ca"), "{err}");
    assert_eq!(request(&new, https, get.clone(), &[]).await.unwrap().0, 200);
    assert!(request(&old, https, get, &[]).await.is_err());
}
