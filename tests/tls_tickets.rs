//! TLS session tickets, with certificates generated in the test (rcgen) and rustls as the
//! client: a second connection resumes with the first one's ticket; a reload rotates random
//! keys; instances given the same key file resume each other's sessions (TLS 1.3 and 1.2),
//! instances with their own keys do not; a key file's new first key seals while the old ones
//! still open, and a key dropped from the file no longer opens; a bad key file is a config
//! problem with its file and line, and a reload that meets one keeps the keys in service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bytes::Bytes;
use common::Backends;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use meridian::reload::{ReloadResult, Trigger};
use meridian::server::RunningServer;
use rcgen::{CertificateParams, KeyPair};
use rustls::HandshakeKind;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `a.test`, written as PEM files; returns its DER.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let (cert, key) = (dir.join("a.pem"), dir.join("a.key"));
    let params = CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
    let key_pair = KeyPair::generate().unwrap();
    let issued = params.self_signed(&key_pair).unwrap();
    std::fs::write(&cert, issued.pem()).unwrap();
    std::fs::write(&key, key_pair.serialize_pem()).unwrap();
    (cert, key, issued.der().clone())
}

fn random_keys(count: usize) -> Vec<u8> {
    let mut keys = vec![0u8; 80 * count];
    SystemRandom::new().fill(&mut keys).unwrap();
    keys
}

/// Write beside and rename over, as key distribution tooling does.
fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Write a config with one TLS listener named `https` and start Meridian on it.
async fn start(
    backends: &Backends,
    dir: &Path,
    name: &str,
    (cert, key): (&Path, &Path),
    session_tickets: &str,
) -> RunningServer {
    let config_path = dir.join(format!("{name}.yaml"));
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
      {session_tickets}
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
        )),
    )
    .unwrap();
    let loaded = meridian::config::load_file(&config_path).unwrap();
    let table =
        meridian::table::compile(&loaded, meridian::table::CompileContext::default()).unwrap();
    meridian::server::start_with(table, Some(config_path))
        .await
        .unwrap()
}

/// A TLS client trusting `cert`, with rustls's in-memory session cache: it offers the newest
/// ticket it holds for `a.test`, whichever Meridian gave it.
struct Client {
    connector: TlsConnector,
}

impl Client {
    fn new(
        cert: &CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    fn tls13(cert: &CertificateDer<'static>) -> Self {
        Self::new(cert, &[&rustls::version::TLS13])
    }

    /// Handshake, then one request: reading its answer takes in the tickets the server sent
    /// after the handshake. Returns how the handshake went.
    async fn visit(&self, addr: SocketAddr) -> HandshakeKind {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream = self
            .connector
            .connect(ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
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
        kind
    }
}

/// `meridian_tls_handshakes_total{listener="https"}`: (full, resumed).
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

async fn reload(proxy: &RunningServer) -> ReloadResult {
    proxy.server.reload(Trigger::Admin).await.unwrap()
}

/// Wait (at most 5 s) until the file watcher has applied a reload past `generation`.
async fn reloaded_past(proxy: &RunningServer, generation: u64) {
    let start = Instant::now();
    while proxy.table.load().generation <= generation {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the key file change was not reloaded within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resume_sessions_and_a_reload_rotates_random_keys() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    // Tickets are on without a word in the config.
    let proxy = start(&backends, dir.path(), "a", (&cert, &key), "").await;
    let addr = proxy.proxy_addr().unwrap();

    let client = Client::tls13(&der);
    assert_ne!(client.visit(addr).await, HandshakeKind::Resumed);
    assert_eq!(client.visit(addr).await, HandshakeKind::Resumed);
    assert_eq!(handshakes(&proxy), (1, 1));

    // A reload makes new keys: a ticket from before it no longer resumes.
    let before = Client::tls13(&der);
    assert_ne!(before.visit(addr).await, HandshakeKind::Resumed);
    assert_eq!(reload(&proxy).await, ReloadResult::Applied);
    assert_ne!(
        before.visit(addr).await,
        HandshakeKind::Resumed,
        "a ticket from before the reload resumed: the keys were not rotated"
    );
    // The ticket that connection got is sealed with the new keys.
    assert_eq!(before.visit(addr).await, HandshakeKind::Resumed);
    assert_eq!(handshakes(&proxy), (3, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_one_key_file_resume_each_others_sessions() {
    let backends = Backends::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = certificate(dir.path());
    let key_file = dir.path().join("ticket.key");
    let first_key = random_keys(1);
    replace_file(&key_file, &first_key);
    let shared = format!(
        "session_tickets: {{ enabled: true, key_file: \"{}\" }}",
        key_file.display()
    );
    let a = start(&backends, dir.path(), "a", (&cert, &key), &shared).await;
    let b = start(&backends, dir.path(), "b", (&cert, &key), &shared).await;
    let own = start(&backends, dir.path(), "own", (&cert, &key), "").await;
    // A follows its files like a deployed instance; B is reloaded by hand.
    meridian::reload::spawn_watchers(a.server.clone(), Duration::from_secs(3600));
    let (a_addr, b_addr) = (a.proxy_addr().unwrap(), b.proxy_addr().unwrap());
    let own_addr = own.proxy_addr().unwrap();

    // A ticket from A resumes on B, over TLS 1.3 and over TLS 1.2.
    let client = Client::tls13(&der);
    assert_ne!(client.visit(a_addr).await, HandshakeKind::Resumed);
    assert_eq!(client.visit(b_addr).await, HandshakeKind::Resumed);
    assert_eq!(handshakes(&b), (0, 1));
    let tls12 = Client::new(&der, &[&rustls::version::TLS12]);
    assert_ne!(tls12.visit(a_addr).await, HandshakeKind::Resumed);
    assert_eq!(tls12.visit(b_addr).await, HandshakeKind::Resumed);
    assert_eq!(handshakes(&b), (0, 2));
    // An instance with its own random keys cannot open it.
    let stranger = Client::tls13(&der);
    assert_ne!(stranger.visit(a_addr).await, HandshakeKind::Resumed);
    assert_ne!(stranger.visit(own_addr).await, HandshakeKind::Resumed);
    assert_eq!(handshakes(&own), (1, 0));

    // Rotation across instances: a new key goes first, the old one stays to open tickets.
    let old_ticket = Client::tls13(&der);
    assert_ne!(old_ticket.visit(a_addr).await, HandshakeKind::Resumed);
    let rotating = Client::tls13(&der);
    assert_ne!(rotating.visit(a_addr).await, HandshakeKind::Resumed);
    let second_key = random_keys(1);
    let generation = a.table.load().generation;
    replace_file(&key_file, &[second_key.clone(), first_key].concat());
    reloaded_past(&a, generation).await;
    assert_eq!(reload(&b).await, ReloadResult::Applied);
    assert_eq!(
        rotating.visit(b_addr).await,
        HandshakeKind::Resumed,
        "the old key no longer opens tickets"
    );
    // Then the old key goes: its tickets no longer resume; the new key's still do.
    let generation = a.table.load().generation;
    replace_file(&key_file, &second_key);
    reloaded_past(&a, generation).await;
    assert_eq!(reload(&b).await, ReloadResult::Applied);
    assert_ne!(
        old_ticket.visit(b_addr).await,
        HandshakeKind::Resumed,
        "a key dropped from the file still opened a ticket"
    );
    assert_eq!(
        rotating.visit(a_addr).await,
        HandshakeKind::Resumed,
        "the new first key did not seal the tickets"
    );

    // A broken key file is refused with its name and what is wrong; the keys in service stay.
    replace_file(&key_file, &[second_key.clone(), vec![1]].concat());
    let err = b
        .server
        .reload(Trigger::Admin)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listeners[0].tls.session_tickets.key_file")
            && err.contains(&format!("{} is 81 bytes", key_file.display())),
        "{err}"
    );
    std::fs::remove_file(&key_file).unwrap();
    let err = b
        .server
        .reload(Trigger::Admin)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "cannot read session ticket keys from {}",
            key_file.display()
        )),
        "{err}"
    );
    assert_eq!(rotating.visit(b_addr).await, HandshakeKind::Resumed);
    assert_eq!(rotating.visit(a_addr).await, HandshakeKind::Resumed);
}

/// A config with one TLS listener whose `session_tickets` is `tickets`, compiled; the error's
/// text when it is refused.
fn compile_error(dir: &Path, tickets: &str) -> String {
    let (cert, key, _) = certificate(dir);
    let text = format!(
        "local_region: r
regions: {{ r: {{ lat: 0, lon: 0 }} }}
listeners:
  - name: https
    bind: \"127.0.0.1:0\"
    tls:
      certificates: [{{ cert: \"{}\", key: \"{}\" }}]
      session_tickets: {tickets}
routes: [{{ name: r, hosts: [\"*\"], cluster: c }}]
clusters: {{ c: {{ endpoints: {{ r: [\"127.0.0.1:1\"] }} }} }}
",
        cert.display(),
        key.display()
    );
    let loaded = meridian::config::load_str(&text, Path::new("t.yaml")).unwrap();
    match meridian::table::compile(&loaded, meridian::table::CompileContext::default()) {
        Ok(_) => panic!("`session_tickets: {tickets}` was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_bad_ticket_key_file_is_a_config_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let huge = dir.path().join("huge.key");
    // Sparse: a gigabyte on paper, nothing on disk; only what a key file may hold is read.
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            dir.path().join("missing.key"),
            "cannot read session ticket keys from",
        ),
        (file("empty.key", b""), "is empty"),
        (file("short.key", &[7; 48]), "is 48 bytes"),
        (file("long.key", &[7; 81]), "is 81 bytes"),
        (file("zero.key", &[0; 80]), "key 1 is all zero bytes"),
        (
            file("twice.key", &[7; 160]),
            "keys 1 and 2 have the same name",
        ),
        (huge, "is larger than 1280 bytes"),
        (dir.path().to_path_buf(), "is not a regular file"),
        (PathBuf::from("/dev/zero"), "is not a regular file"),
    ];
    for (path, what) in cases {
        let text = compile_error(
            dir.path(),
            &format!("{{ key_file: \"{}\" }}", path.display()),
        );
        assert!(
            text.contains("t.yaml:8: listeners[0].tls.session_tickets.key_file:")
                && text.contains(&path.display().to_string())
                && text.contains(what),
            "{}: {text}",
            path.display()
        );
    }
    let text = compile_error(
        dir.path(),
        &format!(
            "{{ enabled: false, key_file: \"{}\" }}",
            dir.path().join("x.key").display()
        ),
    );
    assert!(
        text.contains(
            "listeners[0].tls.session_tickets.key_file: has no use with `enabled: false`"
        ),
        "{text}"
    );
}

#[test]
fn meridian_check_names_the_key_file_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let key_file = dir.path().join("ticket.key");
    std::fs::write(&key_file, random_keys(1)).unwrap();
    let config = dir.path().join("meridian.yaml");
    let text = |key_file: &Path| {
        format!(
            "local_region: r
regions: {{ r: {{ lat: 0, lon: 0 }} }}
listeners:
  - name: https
    bind: \"127.0.0.1:0\"
    tls:
      certificates: [{{ cert: \"{}\", key: \"{}\" }}]
      session_tickets:
        key_file: \"{}\"
routes: [{{ name: r, hosts: [\"*\"], cluster: c }}]
clusters: {{ c: {{ endpoints: {{ r: [\"127.0.0.1:1\"] }} }} }}
",
            cert.display(),
            key.display(),
            key_file.display()
        )
    };
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["check", "-c", config.to_str().unwrap()])
            .env("MERIDIAN_LOG", "error")
            .output()
            .unwrap()
    };
    std::fs::write(&config, text(&key_file)).unwrap();
    let out = check();
    assert!(out.status.success(), "{out:?}");
    // A changed key file is a reload.
    let loaded = meridian::config::load_file(&config).unwrap();
    assert!(meridian::reload::named_files(&loaded.config).contains(&key_file));

    std::fs::write(&key_file, [1u8; 100]).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:9: listeners[0].tls.session_tickets.key_file: session ticket key file {} is 100 bytes",
            config.display(),
            key_file.display()
        )),
        "{stderr}"
    );
}
