//! Token auth for the tests: a small bearer-token server that knows the users and
//! passwords it is given and signs ES256 JWTs the way Debian's docker-registry verifies
//! them under `auth: token` (an `x5c` header chained to the registry's
//! `rootcertbundle`); and [`TokenRegistry`], such a registry together with its token
//! server. Keys and certificates are made with `openssl`, tokens are signed with `ring`.
//!
//! ```no_run
//! use vic_tests::fixtures::push_busybox;
//! use vic_tests::token::TokenRegistry;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (reg, pushed) = TokenRegistry::start(dir.path(), &[("vic", "s3cret")], |open| {
//!     push_busybox(open, "private/busybox", "latest")
//! });
//! // `docker login reg.addr()` as vic / s3cret, then pull `ADDR/private/busybox`.
//! # let _ = (reg, pushed);
//! ```

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::registry::TestRegistry;
use crate::run_checked;

/// The `service` the registry names in its challenges and the token server accepts; the
/// tokens' audience.
pub const TOKEN_SERVICE: &str = "vic-test-registry";
/// The tokens' issuer, as the registry expects it.
pub const TOKEN_ISSUER: &str = "vic-test-token-issuer";
/// How long a token is valid, in seconds.
pub const TOKEN_LIFETIME_SECS: u64 = 300;

/// The largest request head the token server reads.
const MAX_HEAD_BYTES: u64 = 64 * 1024;

/// What a token grants: `actions` on the resource `kind:name` (`repository:team/app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The resource type (`repository`, `registry`).
    pub kind: String,
    /// The resource name (`team/app`, `catalog`).
    pub name: String,
    /// The actions (`pull`, `push`, `*`).
    pub actions: Vec<String>,
}

impl Access {
    /// `actions` on the repository `name`.
    pub fn repository(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".to_string(),
            name: name.to_string(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// A token request's `scope` (`TYPE:NAME:ACTION[,ACTION]`); `None` when malformed.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() || actions.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').map(str::to_string).collect(),
        })
    }
}

/// An ES256 signing key and its self-signed certificate (made with openssl), signing the
/// JWTs docker-registry's token auth accepts.
pub struct TokenIssuer {
    key: EcdsaKeyPair,
    cert_der_b64: String,
    cert_pem: PathBuf,
    rng: SystemRandom,
    serial: AtomicUsize,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Makes a P-256 key and a self-signed certificate for it in `dir` (created if
    /// missing): `token-key.pem`, `token-key.p8`, `token-cert.pem`, `token-cert.der`.
    pub fn new(dir: &Path) -> TokenIssuer {
        std::fs::create_dir_all(dir).expect("create the token issuer folder");
        let key_pem = dir.join("token-key.pem");
        let key_p8 = dir.join("token-key.p8");
        let cert_pem = dir.join("token-cert.pem");
        let cert_der = dir.join("token-cert.der");
        run_checked(
            Command::new("openssl")
                .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout"])
                .arg("-out")
                .arg(&key_pem),
        );
        run_checked(
            Command::new("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
                .arg(&key_pem)
                .arg("-out")
                .arg(&key_p8),
        );
        run_checked(
            Command::new("openssl")
                .args(["req", "-x509", "-new", "-days", "2"])
                .arg("-subj")
                .arg(format!("/CN={TOKEN_ISSUER}"))
                .arg("-key")
                .arg(&key_pem)
                .arg("-out")
                .arg(&cert_pem),
        );
        run_checked(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert_pem)
                .arg("-out")
                .arg(&cert_der),
        );
        let rng = SystemRandom::new();
        let p8 = std::fs::read(&key_p8).expect("the PKCS#8 key openssl wrote");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &p8, &rng)
            .expect("ring reads the key openssl made");
        let der = std::fs::read(&cert_der).expect("the certificate openssl wrote");
        TokenIssuer {
            key,
            cert_der_b64: STANDARD.encode(der),
            cert_pem,
            rng,
            serial: AtomicUsize::new(0),
        }
    }

    /// The certificate (PEM) a registry trusts as its `rootcertbundle`.
    pub fn cert_pem(&self) -> &Path {
        &self.cert_pem
    }

    /// The public key, uncompressed (`04 || X || Y`), to verify tokens with.
    pub fn public_key(&self) -> &[u8] {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref()
    }

    /// A JWT for `subject` (empty: anonymous) granting `access`, valid for
    /// [`TOKEN_LIFETIME_SECS`].
    pub fn token(&self, subject: &str, access: &[Access]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let access: Vec<serde_json::Value> = access
            .iter()
            .map(|a| serde_json::json!({"type": a.kind, "name": a.name, "actions": a.actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + TOKEN_LIFETIME_SECS,
            "nbf": now.saturating_sub(10),
            "iat": now,
            "jti": format!("vic-test-{}", self.serial.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("ECDSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The `auth:` section of a docker-registry `config.yml` trusting this issuer, with
    /// token server `realm` (`http://HOST:PORT/token`).
    pub fn registry_auth_config(&self, realm: &str) -> String {
        format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.cert_pem.display()
        )
    }
}

/// One request the token server answered, as it saw it. Passwords are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET`, ….
    pub method: String,
    /// The path (`/token`).
    pub path: String,
    /// The query parameters, decoded, in order (`scope` may repeat).
    pub query: Vec<(String, String)>,
    /// The user name of the request's basic auth, if any.
    pub user: Option<String>,
    /// The status of the answer.
    pub status: u16,
}

impl TokenRequest {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `scope` parameter.
    pub fn scopes(&self) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the server thread shares with its owner.
struct State {
    issuer: TokenIssuer,
    users: Vec<(String, String)>,
    seen: Mutex<Vec<TokenRequest>>,
}

/// A bearer-token server on a loopback port, in a thread of the test process, stopped
/// (and joined) when dropped. `GET /token?service=…&scope=…` answers:
///
/// - with basic auth of a known user and password: `200 {"access_token": JWT}` granting
///   every scope asked for (`access_token` is the OAuth2 name the spec also allows);
/// - without credentials: `200 {"token": JWT}` granting nothing, as registries treat
///   anonymous users of private repositories;
/// - with other credentials: `401` with an `UNAUTHORIZED` error;
/// - for another service: `400`; another path: `404`; another method: `405`.
///
/// Connections are served one at a time and closed after each answer.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.state.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("TokenServer")
            .field("addr", &self.addr)
            .field("users", &users)
            .field("issuer", &self.state.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenServer {
    /// Starts serving tokens signed by `issuer` to `users` (name, password).
    pub fn start(issuer: TokenIssuer, users: &[(&str, &str)]) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        let addr = listener.local_addr().expect("token server address");
        // Non-blocking accepts, so that the thread sees the stop flag.
        listener
            .set_nonblocking(true)
            .expect("non-blocking token server socket");
        let state = Arc::new(State {
            issuer,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            seen: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("token-server-{}", addr.port()))
                .spawn(move || serve(&listener, &state, &stop))
                .expect("start the token server thread")
        };
        TokenServer {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token`: the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The issuer of its tokens.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.state.issuer
    }

    /// The `auth:` section of a docker-registry `config.yml` trusting this server.
    pub fn registry_auth_config(&self) -> String {
        self.state.issuer.registry_auth_config(&self.realm())
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, state: &State, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => handle(stream, state),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads one request head from `stream`, answers it and closes the connection. A client
/// that sends nothing useful within the timeouts just loses its connection.
fn handle(mut stream: TcpStream, state: &State) {
    let timeout = Some(Duration::from_secs(10));
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(timeout).is_err()
        || stream.set_write_timeout(timeout).is_err()
    {
        return;
    }
    let Some((method, target, headers)) = read_head(&stream) else {
        return;
    };
    let authorization = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    let (status, body) = state.answer(&method, &target, authorization);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .and_then(|()| stream.flush());
}

/// The method, target and headers (names lower-case) of a request head.
type Head = (String, String, Vec<(String, String)>);

fn read_head(stream: &TcpStream) -> Option<Head> {
    let mut r = BufReader::new(stream.take(MAX_HEAD_BYTES));
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Some((method, target, headers));
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
}

/// A registry-style error body.
fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string()
}

/// The user and password of a `Basic` authorization value.
fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, value) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(value.trim()).ok()?;
    let (u, p) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl State {
    /// The status and JSON body for a request, which is also recorded.
    fn answer(&self, method: &str, target: &str, authorization: Option<&str>) -> (u16, String) {
        let url = reqwest::Url::parse(&format!("http://token.invalid{target}")).ok();
        let path = url
            .as_ref()
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let query: Vec<(String, String)> = url
            .as_ref()
            .map(|u| u.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let creds = authorization.map(basic_credentials);
        let mut seen = TokenRequest {
            method: method.to_string(),
            path,
            query,
            user: creds.clone().flatten().map(|(u, _)| u),
            status: 0,
        };
        let (status, body) = self.decide(&seen, creds);
        seen.status = status;
        if let Ok(mut s) = self.seen.lock() {
            s.push(seen);
        }
        (status, body)
    }

    /// `creds`: `None` without an Authorization header, `Some(None)` when it is not basic
    /// auth.
    fn decide(&self, req: &TokenRequest, creds: Option<Option<(String, String)>>) -> (u16, String) {
        if req.method != "GET" {
            return (405, error_body("UNSUPPORTED", "only GET is served"));
        }
        if req.path != "/token" {
            return (404, error_body("NOT_FOUND", "no such endpoint"));
        }
        if req.param("service") != Some(TOKEN_SERVICE) {
            return (
                400,
                error_body(
                    "UNSUPPORTED",
                    &format!("unknown service, not {TOKEN_SERVICE}"),
                ),
            );
        }
        let user = match creds {
            None => {
                let token = self.issuer.token("", &[]);
                let body = serde_json::json!({"token": token, "expires_in": TOKEN_LIFETIME_SECS});
                return (200, body.to_string());
            }
            Some(Some((u, p))) if self.users.iter().any(|(ku, kp)| *ku == u && *kp == p) => u,
            Some(_) => {
                return (
                    401,
                    error_body("UNAUTHORIZED", "incorrect username or password"),
                );
            }
        };
        let mut grants = Vec::new();
        for s in req.scopes() {
            match Access::parse_scope(s) {
                Some(a) => grants.push(a),
                None => return (400, error_body("UNSUPPORTED", &format!("bad scope {s:?}"))),
            }
        }
        let token = self.issuer.token(&user, &grants);
        let body = serde_json::json!({"access_token": token, "expires_in": TOKEN_LIFETIME_SECS});
        (200, body.to_string())
    }
}

/// A docker-registry with token auth and the [`TokenServer`] it trusts. The registry
/// (stopped by the PID `tests/servers.sh` recorded) and the token server stop when it
/// is dropped. Declare the `TempDir` holding its folder before it.
#[derive(Debug)]
pub struct TokenRegistry {
    // Field order is drop order: the registry goes before its token server.
    registry: TestRegistry,
    tokens: TokenServer,
}

impl TokenRegistry {
    /// In `dir` (created if missing): starts an open registry in `dir/registry`, lets
    /// `fill` push to it, stops it, then starts a token server for `users` (name,
    /// password; key and certificate in `dir/token`) and the registry again on the same
    /// data with token auth (`dir/token-auth.yml`), on a new port. Returns it and what
    /// `fill` returned.
    pub fn start<T>(
        dir: &Path,
        users: &[(&str, &str)],
        fill: impl FnOnce(&TestRegistry) -> T,
    ) -> (TokenRegistry, T) {
        std::fs::create_dir_all(dir).expect("create the token registry folder");
        let dir = dir.canonicalize().expect("token registry folder path");
        let reg_dir = dir.join("registry");
        let open = TestRegistry::start(&reg_dir, None);
        let filled = fill(&open);
        open.stop();
        let tokens = TokenServer::start(TokenIssuer::new(&dir.join("token")), users);
        let auth = dir.join("token-auth.yml");
        std::fs::write(&auth, tokens.registry_auth_config()).expect("write the auth config");
        let registry = TestRegistry::start_with_auth_config(&reg_dir, &auth);
        (TokenRegistry { registry, tokens }, filled)
    }

    /// The registry's `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.registry.addr()
    }

    /// The registry's `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.registry.url()
    }

    /// The registry (its folder, log and blob paths; its `get` sends no token).
    pub fn registry(&self) -> &TestRegistry {
        &self.registry
    }

    /// The token server.
    pub fn tokens(&self) -> &TokenServer {
        &self.tokens
    }

    /// Stops the registry now (panicking when that fails), then the token server.
    pub fn stop(self) {
        let TokenRegistry { registry, tokens } = self;
        registry.stop();
        drop(tokens);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::registry::{block_on, client};
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn scopes_parse() {
        assert_eq!(
            Access::parse_scope("repository:team/app:pull,push"),
            Some(Access::repository("team/app", &["pull", "push"]))
        );
        assert_eq!(
            Access::parse_scope("registry:catalog:*").map(|a| (a.kind, a.name)),
            Some(("registry".to_string(), "catalog".to_string()))
        );
        assert_eq!(Access::parse_scope("repository:pull"), None);
        assert_eq!(Access::parse_scope("repository::pull"), None);
    }

    /// `GET realm?query` with optional basic auth: status and JSON body.
    fn get(
        server: &TokenServer,
        query: &str,
        auth: Option<(&str, &str)>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}?{query}", server.realm());
        block_on(async {
            let mut req = client().get(&url);
            if let Some((u, p)) = auth {
                req = req.basic_auth(u, Some(p));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap())
        })
    }

    /// The claims of `jwt`, after checking its signature with `issuer`'s key.
    fn verified_claims(issuer: &TokenIssuer, jwt: &str) -> serde_json::Value {
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, issuer.public_key())
            .verify(input.as_bytes(), &sig)
            .expect("the token's signature verifies");
        let claims = input.split_once('.').unwrap().1;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn serves_tokens_to_users_and_empty_ones_to_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let server = TokenServer::start(TokenIssuer::new(dir.path()), &[("vic", "s3cret")]);
        let q = format!("service={TOKEN_SERVICE}&scope=repository%3Ateam%2Fapp%3Apull");

        let (status, body) = get(&server, &q, Some(("vic", "s3cret")));
        assert_eq!(status, 200, "{body}");
        let claims = verified_claims(server.issuer(), body["access_token"].as_str().unwrap());
        assert_eq!(claims["sub"], "vic");
        assert_eq!(claims["aud"], TOKEN_SERVICE);
        assert_eq!(claims["iss"], TOKEN_ISSUER);
        assert_eq!(
            claims["access"],
            serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull"]}])
        );

        let (status, body) = get(&server, &q, None);
        assert_eq!(status, 200, "{body}");
        let claims = verified_claims(server.issuer(), body["token"].as_str().unwrap());
        assert_eq!(claims["access"], serde_json::json!([]));

        let (status, body) = get(&server, &q, Some(("vic", "wrong")));
        assert_eq!(status, 401);
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
        let (status, _) = get(&server, "service=other", Some(("vic", "s3cret")));
        assert_eq!(status, 400);

        let seen = server.requests();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].scopes(), ["repository:team/app:pull"]);
        assert_eq!(seen[0].user.as_deref(), Some("vic"));
        assert_eq!(seen[1].user, None);
        assert_eq!(
            seen.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 200, 401, 400]
        );
        assert!(!format!("{seen:?}{server:?}").contains("s3cret"));
    }
}
