//! Helpers of the registry client's integration tests: the busybox fixture pushed into a
//! real `docker-registry` (started and stopped by PID through
//! `vic_tests::registry::TestRegistry`, or with token auth through
//! `vic_tests::token::TokenRegistry`), and a small fake registry for behaviours a real
//! one does not show.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use vic_registry::{RegistryClient, RegistryConfig};
pub use vic_tests::registry::TestRegistry;
use vic_tests::registry::repo_root;
use vic_tests::run_checked as run;
pub use vic_tests::token::TokenRegistry;

/// What `push-busybox.sh` pushed.
pub struct Pushed {
    /// The manifest digest it printed.
    pub digest: String,
    /// Its build folder (`layer.tar`, `layer.tar.gz`, `config.json`, `manifest.json`).
    pub files: PathBuf,
}

/// Pushes the busybox fixture to `addr` as `repo_tag`, with basic auth when `user` is
/// given, keeping its files in `keep`.
pub fn push_busybox(addr: &str, repo_tag: &str, user: Option<(&str, &str)>, keep: &Path) -> Pushed {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/fixtures/push-busybox.sh"))
        .arg(addr)
        .arg(repo_tag)
        .env("KEEP_DIR", keep);
    if let Some((u, p)) = user {
        cmd.env("REGISTRY_USER", u).env("REGISTRY_PASS", p);
    }
    let digest = run(&mut cmd);
    assert!(
        digest.starts_with("sha256:"),
        "push-busybox printed {digest:?}"
    );
    Pushed {
        digest,
        files: keep.to_path_buf(),
    }
}

/// A client for which `insecure` registries may be reached over plain HTTP.
pub fn client(insecure: &[&str]) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        insecure_registries: insecure.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .expect("client")
}

/// sha256 of a file, as `sha256:…`.
pub fn file_digest(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    vic_registry::Digest::of(&data).to_string()
}

// ---------------------------------------------------------------------------------------
// A tiny HTTP server on hyper: every request goes to a handler closure.

/// A request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
}

/// A response from a handler.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// A loopback HTTP server running `handler` on the current Tokio runtime; it also
/// keeps every request it saw.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A plain HTTP server.
    pub async fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Server {
        Self::start_with(handler, None).await
    }

    /// An HTTPS server presenting `tls`'s certificate.
    pub async fn start_tls(
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
        tls: &TestTls,
    ) -> Server {
        Self::start_with(handler, Some(tls.acceptor())).await
    }

    async fn start_with(
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen: Arc<Mutex<Vec<Req>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        async move {
                            let r = to_req(&req);
                            seen.lock().expect("request log").push(r.clone());
                            let out = handler(&r);
                            let mut b = Response::builder().status(out.status);
                            for (k, v) in &out.headers {
                                b = b.header(k, v);
                            }
                            Ok::<_, Infallible>(
                                b.body(Full::new(Bytes::from(out.body))).expect("response"),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (an untrusting client) just ends the connection.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Server { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests had this path.
    pub fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .expect("request log")
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn to_req(req: &Request<Incoming>) -> Req {
    let query = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Req {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query,
        headers,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user name and password from a `Basic` Authorization header.
pub fn basic_user(req: &Req) -> Option<(String, String)> {
    let v = req.headers.get("authorization")?.strip_prefix("Basic ")?;
    let raw = STANDARD.decode(v).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

// ---------------------------------------------------------------------------------------
// TLS: a test CA and a certificate for 127.0.0.1 signed by it, made with openssl.

/// A CA (PEM, for clients) and a server certificate and key (DER, for the server).
pub struct TestTls {
    pub ca_pem: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestTls {
    pub fn new(dir: &Path) -> TestTls {
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-subj", "/CN=vic-test-ca", "-days", "2", "-keyout"])
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")));
        run(Command::new("openssl")
            .args(["req", "-new"])
            .args(ec)
            .args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(p("leaf.key"))
            .arg("-out")
            .arg(p("leaf.csr")));
        std::fs::write(
            p("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("leaf.ext");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(p("leaf.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("leaf.ext"))
            .arg("-out")
            .arg(p("leaf.pem")));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(p("leaf.pem"))
            .arg("-out")
            .arg(p("leaf.der")));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(p("leaf.key"))
            .arg("-out")
            .arg(p("leaf.p8")));
        let read = |n: &str| std::fs::read(p(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        TestTls {
            ca_pem: read("ca.pem"),
            cert_der: read("leaf.der"),
            key_der: read("leaf.p8"),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .expect("server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
