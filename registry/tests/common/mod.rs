//! Helpers of the registry client's integration tests: a real `docker-registry` started
//! by `tests/servers.sh` (stopped by PID when dropped), the busybox fixture pushed into
//! it, a token server signing ES256 JWTs for docker-registry's token auth, and a small
//! fake registry for behaviours a real one does not show.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use vic_registry::{RegistryClient, RegistryConfig};

/// The workspace root (`registry/..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn servers_sh() -> PathBuf {
    workspace().join("tests/servers.sh")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n(run `bash tests/servers.sh install` for the test packages)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A docker-registry on a free loopback port in a folder of its own; stopped (by the
/// PID `servers.sh` recorded) when dropped.
pub struct Registry {
    pub dir: PathBuf,
    pub addr: String,
}

impl Registry {
    /// Starts one in `dir` with `servers.sh registry-start` extra `args`.
    pub fn start(dir: &Path, args: &[&str]) -> Registry {
        let addr = run(Command::new("bash")
            .arg(servers_sh())
            .arg("registry-start")
            .arg(dir)
            .args(args));
        Registry {
            dir: dir.to_path_buf(),
            addr,
        }
    }

    /// Stops it now.
    pub fn stop(self) {}
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(servers_sh())
            .arg("registry-stop")
            .arg(&self.dir)
            .output();
    }
}

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
    cmd.arg(workspace().join("tests/fixtures/push-busybox.sh"))
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

/// Appends a bcrypt htpasswd entry.
pub fn htpasswd(file: &Path, user: &str, pass: &str) {
    run(Command::new("bash")
        .arg(servers_sh())
        .arg("htpasswd")
        .arg(file)
        .arg(user)
        .arg(pass));
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
// Token auth: an ES256 key and self-signed certificate made with openssl, JWTs signed
// with ring, as docker-registry's `auth: token:` verifies them (x5c header chained to
// the rootcertbundle).

pub const TOKEN_SERVICE: &str = "vic-test-registry";
pub const TOKEN_ISSUER: &str = "vic-test-token-issuer";

/// The token signer.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    cert_der_b64: String,
    /// The certificate (PEM) the registry trusts.
    pub cert_pem: PathBuf,
    rng: SystemRandom,
    serial: AtomicUsize,
}

impl TokenIssuer {
    /// Makes a P-256 key and a self-signed certificate in `dir` with openssl.
    pub fn new(dir: &Path) -> TokenIssuer {
        let key_pem = dir.join("token-key.pem");
        let key_p8 = dir.join("token-key.p8");
        let cert_pem = dir.join("token-cert.pem");
        let cert_der = dir.join("token-cert.der");
        run(Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key_pem));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key_pem)
            .arg("-out")
            .arg(&key_p8));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-subj",
                "/CN=vic-test-token-issuer",
                "-days",
                "2",
                "-key",
            ])
            .arg(&key_pem)
            .arg("-out")
            .arg(&cert_pem));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert_pem)
            .arg("-out")
            .arg(&cert_der));
        let rng = SystemRandom::new();
        let p8 = std::fs::read(&key_p8).expect("pkcs8 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &p8, &rng)
            .expect("ring reads the key");
        let cert_der_b64 = STANDARD.encode(std::fs::read(&cert_der).expect("cert der"));
        TokenIssuer {
            key,
            cert_der_b64,
            cert_pem,
            rng,
            serial: AtomicUsize::new(0),
        }
    }

    /// A JWT for `subject` granting `actions` on `repository` (none when empty).
    pub fn token(&self, subject: &str, access: Option<(&str, &[&str])>) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let access: Vec<serde_json::Value> = access
            .map(|(name, actions)| serde_json::json!({"type": "repository", "name": name, "actions": actions}))
            .into_iter()
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("vic-test-{}", self.serial.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The `auth:` section of a registry config using this issuer and `realm`.
    pub fn registry_auth_config(&self, realm: &str) -> String {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.cert_pem.display()
        )
    }
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
