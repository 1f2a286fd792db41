//! The registry client: endpoints (HTTPS first, plain HTTP only for registries the
//! caller lists as insecure), authentication (anonymous, Basic, Bearer tokens cached per
//! registry, scope and user), manifests (fetched, digest-checked, a platform picked from
//! lists), configs and blobs, and registry errors turned into [`vic_core::Error`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tracing::{debug, instrument};
use vic_core::reference::{DEFAULT_REGISTRY, Reference};
use vic_core::{Error, Result};

use crate::auth::{Challenge, Credentials, TokenResponse, pick_challenge};
use crate::blob::{BlobReader, BlobStream, Compression, LayerReader};
use crate::digest::{Digest, Verifier};
use crate::image::ImageConfig;
use crate::manifest::{
    ImageManifest, Manifest, ManifestKind, Platform, available_platforms, media_type,
    parse_manifest, select_platform,
};

/// The API host of Docker Hub, whose image names say `docker.io`.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// The largest manifest vic reads (dockerd's limit).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest image config vic reads.
const MAX_CONFIG_BYTES: usize = 16 << 20;
/// The largest token server answer vic reads.
const MAX_TOKEN_BYTES: usize = 1 << 20;
/// How much of an error body vic reads.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// How a [`RegistryClient`] reaches registries.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Registries (`host:port` as in image names, `host` when the name has no port) that
    /// may be reached over plain HTTP and whose HTTPS certificates are not checked, as
    /// dockerd's `--insecure-registry`. HTTPS is still tried first. Loopback registries
    /// are not insecure unless listed here (dockerd treats 127.0.0.0/8 as insecure by
    /// default; vic leaves that choice to the caller).
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM, one or more per entry) trusted for HTTPS registries
    /// and token servers, on top of the built-in Mozilla roots.
    pub ca_certificates_pem: Vec<Vec<u8>>,
    /// The `User-Agent` of every request.
    pub user_agent: String,
    /// Time allowed to connect (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for a whole small request: ping, token, manifest, config.
    pub request_timeout: Duration,
    /// Time a blob download may stall without receiving a byte.
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_registries: Vec::new(),
            ca_certificates_pem: Vec::new(),
            user_agent: format!("vic/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// How to reach one registry, learnt from `GET /v2/`.
#[derive(Clone, Debug)]
struct Endpoint {
    /// `https://host:port` or `http://host:port`.
    base: String,
    /// True when TLS certificates are not checked (insecure registry).
    insecure: bool,
    /// What the registry asks for, if anything.
    challenge: Option<Challenge>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    registry: String,
    realm: String,
    service: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    /// sha256 of the password, so a changed password gets a new token.
    password: Option<Digest>,
}

#[derive(Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// A pulled image's metadata: the manifest chosen for the platform, its config, and the
/// digests Docker reports.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The reference as asked for.
    pub reference: Reference,
    /// The digest of what the reference names: the manifest list's or index's when it is
    /// one (Docker's repo digest), else the image manifest's.
    pub digest: Digest,
    /// The digest of the image manifest.
    pub manifest_digest: Digest,
    /// The kind of the image manifest.
    pub manifest_kind: ManifestKind,
    /// The image manifest.
    pub manifest: ImageManifest,
    /// The image manifest as the registry sent it.
    pub manifest_raw: Vec<u8>,
    /// The config blob's digest: the image ID.
    pub config_digest: Digest,
    /// The parsed config.
    pub config: ImageConfig,
    /// The config as the registry sent it (its sha256 is `config_digest`).
    pub config_raw: Vec<u8>,
}

/// A manifest as fetched: kind, parsed form, verified digest and body.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// What kind of manifest it is.
    pub kind: ManifestKind,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The sha256 of the body (checked against the requested digest and the registry's
    /// `Docker-Content-Digest`).
    pub digest: Digest,
    /// The body.
    pub raw: Vec<u8>,
}

/// A client of Docker registries (distribution API v2). Cheap to clone; clones share
/// connections, the endpoints learnt and the cached tokens.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    /// Checks certificates.
    http: reqwest::Client,
    /// Does not check certificates; used only for insecure registries.
    http_insecure: reqwest::Client,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field(
                "insecure_registries",
                &self.inner.config.insecure_registries,
            )
            .field("user_agent", &self.inner.config.user_agent)
            .finish_non_exhaustive()
    }
}

/// A request's repository and credentials.
struct Target<'a> {
    registry: &'a str,
    /// Repository path; `None` for registry-wide requests (`/v2/`).
    repository: Option<&'a str>,
    creds: Option<&'a Credentials>,
}

impl Target<'_> {
    fn scope(&self) -> Option<String> {
        self.repository.map(|r| format!("repository:{r}:pull"))
    }
}

/// The error and its sources, joined with `: ` (reqwest's own message leaves them out).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

/// Credentials missing or refused. One place, so the variant can change with vic-core.
fn unauthorized(msg: String) -> Error {
    Error::Unauthorized(msg)
}

/// The host (and port) to connect to for a registry name.
pub fn api_host(registry: &str) -> &str {
    match registry {
        DEFAULT_REGISTRY | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_API_HOST,
        other => other,
    }
}

/// A registry's `{"errors":[{"code","message"}]}` body as Docker prints it
/// (`manifest unknown: manifest unknown`), or a short piece of the body otherwise.
fn error_message(body: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body)
        && !e.errors.is_empty()
    {
        let first = e.errors.first().map(|x| x.code.clone());
        let text = e
            .errors
            .iter()
            .map(|x| {
                let code = x.code.to_ascii_lowercase().replace('_', " ");
                match (code.is_empty(), x.message.is_empty()) {
                    (false, false) => format!("{code}: {}", x.message),
                    (false, true) => code,
                    _ => x.message.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return (first, text);
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).collect();
    (None, text)
}

impl RegistryClient {
    /// A client with `config`. Fails on unreadable CA certificates.
    pub fn new(config: RegistryConfig) -> Result<RegistryClient> {
        let mut certs = Vec::new();
        for pem in &config.ca_certificates_pem {
            let found = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::InvalidArgument(format!("invalid CA certificate PEM: {}", chain(&e)))
            })?;
            if found.is_empty() {
                return Err(Error::InvalidArgument(
                    "CA certificate PEM holds no certificate".to_string(),
                ));
            }
            certs.extend(found);
        }
        let builder = |insecure: bool| {
            let mut b = reqwest::Client::builder()
                .use_rustls_tls()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .redirect(reqwest::redirect::Policy::limited(10));
            for c in &certs {
                b = b.add_root_certificate(c.clone());
            }
            if insecure {
                b = b.danger_accept_invalid_certs(true);
            }
            b.build().map_err(|e| {
                Error::InvalidArgument(format!("registry client configuration: {}", chain(&e)))
            })
        };
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                http: builder(false)?,
                http_insecure: builder(true)?,
                config,
                endpoints: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// True when `registry` (`host:port`) was listed as insecure.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.inner
            .config
            .insecure_registries
            .iter()
            .any(|r| r.trim().eq_ignore_ascii_case(registry))
    }

    fn http(&self, insecure: bool) -> &reqwest::Client {
        if insecure {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        }
    }

    fn forget_endpoint(&self, registry: &str) {
        if let Ok(mut m) = self.inner.endpoints.lock() {
            m.remove(registry);
        }
    }

    /// How to reach `registry`: cached, or learnt with `GET /v2/` over HTTPS, then plain
    /// HTTP when the registry is insecure and HTTPS failed.
    async fn endpoint(&self, registry: &str) -> Result<Endpoint> {
        if let Some(ep) = self
            .inner
            .endpoints
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(ep);
        }
        let host = api_host(registry);
        let insecure = self.is_insecure(registry);
        let https = format!("https://{host}");
        let ep = match self.ping(&https, insecure).await {
            Ok(ep) => ep,
            Err(https_err) if insecure => {
                debug!(registry, error = %https_err, "HTTPS failed; trying plain HTTP (insecure registry)");
                self.ping(&format!("http://{host}"), insecure).await.map_err(|http_err| {
                    Error::Unavailable(format!(
                        "registry {registry} unreachable: over HTTPS: {https_err}; over HTTP: {http_err}"
                    ))
                })?
            }
            Err(e) => {
                let hint = if e.to_ascii_lowercase().contains("certificate") {
                    "add the CA certificate that signed its certificate, or list it among the insecure registries"
                } else {
                    "a registry served over plain HTTP must be listed among the insecure registries"
                };
                return Err(Error::Unavailable(format!(
                    "registry {registry} unreachable over HTTPS: {e} ({hint})"
                )));
            }
        };
        if let Ok(mut m) = self.inner.endpoints.lock() {
            m.insert(registry.to_string(), ep.clone());
        }
        Ok(ep)
    }

    /// `GET {base}/v2/`: the registry answers 200 (open) or 401 with its challenge.
    async fn ping(&self, base: &str, insecure: bool) -> std::result::Result<Endpoint, String> {
        let url = format!("{base}/v2/");
        let resp = self
            .http(insecure)
            .get(&url)
            .timeout(self.inner.config.request_timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        let status = resp.status();
        let challenge = challenge_of(resp.headers());
        if status.is_success() || status == StatusCode::UNAUTHORIZED {
            debug!(%url, %status, ?challenge, "registry endpoint");
            return Ok(Endpoint {
                base: base.to_string(),
                insecure,
                challenge: if status.is_success() { None } else { challenge },
            });
        }
        Err(format!(
            "GET {url}: HTTP {status}: not a registry v2 API endpoint"
        ))
    }

    /// A Bearer token for `target` at `realm`: cached, or fetched from the token server.
    async fn token(
        &self,
        target: &Target<'_>,
        realm: &str,
        service: Option<&str>,
        scope: Option<String>,
        fresh: bool,
    ) -> Result<String> {
        let key = TokenKey {
            registry: target.registry.to_string(),
            realm: realm.to_string(),
            service: service.map(str::to_string),
            scope: scope.clone(),
            username: target.creds.map(|c| c.username.clone()),
            password: target.creds.map(|c| Digest::of(c.password.as_bytes())),
        };
        if !fresh
            && let Some(t) = self
                .inner
                .tokens
                .lock()
                .ok()
                .and_then(|m| m.get(&key).cloned())
            && t.expires > Instant::now()
        {
            return Ok(t.token);
        }
        let registry = target.registry;
        let mut url = Url::parse(realm).map_err(|e| {
            Error::Unavailable(format!(
                "registry {registry}: bad token realm {realm:?}: {e}"
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Error::Unavailable(format!(
                "registry {registry}: bad token realm {realm:?}"
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = &scope {
                q.append_pair("scope", s);
            }
        }
        let realm_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        };
        let insecure = self.is_insecure(&realm_host);
        let started = Instant::now();
        let mut req = self
            .http(insecure)
            .get(url.clone())
            .timeout(self.inner.config.request_timeout);
        if let Some(c) = target.creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        debug!(registry, realm, ?service, ?scope, user = ?target.creds.map(|c| &c.username), "fetching a token");
        let mut resp = req.send().await.map_err(|e| {
            Error::Unavailable(format!(
                "registry {registry}: token server {realm}: {}",
                chain(&e)
            ))
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body = read_limited(&mut resp, MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let (_, msg) = error_message(&body);
            return Err(unauthorized(auth_failure(
                registry,
                target.creds.is_some(),
                &msg,
            )));
        }
        if !status.is_success() {
            let body = read_limited(&mut resp, MAX_ERROR_BYTES)
                .await
                .unwrap_or_default();
            let (_, msg) = error_message(&body);
            return Err(Error::Unavailable(format!(
                "registry {registry}: token server {realm}: HTTP {status}: {msg}"
            )));
        }
        let body = read_limited(&mut resp, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| {
                Error::Unavailable(format!("registry {registry}: token server {realm}: {e}"))
            })?;
        let answer: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::Unavailable(format!(
                "registry {registry}: token server {realm}: malformed answer: {e}"
            ))
        })?;
        // 60 s when absent or shorter (the spec's minimum); at most a day, so a peer's
        // huge value cannot overflow the clock arithmetic below.
        let expires_in = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(60, 86_400));
        let token = answer.into_token().ok_or_else(|| {
            Error::Unavailable(format!(
                "registry {registry}: token server {realm} sent no token"
            ))
        })?;
        // Renew a little before the server's deadline.
        let margin = (expires_in / 10).min(Duration::from_secs(30));
        let cached = CachedToken {
            token: token.clone(),
            expires: started + expires_in - margin,
        };
        if let Ok(mut m) = self.inner.tokens.lock() {
            m.retain(|_, t| t.expires > Instant::now());
            m.insert(key, cached);
        }
        Ok(token)
    }

    /// Sends `method path` to the target's registry with the auth it asks for; on a 401
    /// learns the challenge of that answer and tries once more with a fresh token.
    /// Non-2xx answers are returned for the caller to turn into errors.
    async fn send(
        &self,
        target: &Target<'_>,
        method: Method,
        path: &str,
        accept: Option<&str>,
        whole_request_timeout: bool,
    ) -> Result<reqwest::Response> {
        let registry = target.registry;
        let mut ep = self.endpoint(registry).await?;
        let mut fresh = false;
        for attempt in 0..2 {
            let url = format!("{}{path}", ep.base);
            let mut req = self.http(ep.insecure).request(method.clone(), &url);
            if whole_request_timeout {
                req = req.timeout(self.inner.config.request_timeout);
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            match &ep.challenge {
                None => {}
                Some(Challenge::Basic { .. }) => {
                    if let Some(c) = target.creds {
                        req = req.basic_auth(&c.username, Some(&c.password));
                    }
                }
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope,
                }) => {
                    let scope = target.scope().or_else(|| scope.clone());
                    let token = self
                        .token(target, realm, service.as_deref(), scope, fresh)
                        .await?;
                    req = req.bearer_auth(token);
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.forget_endpoint(registry);
                    return Err(Error::Unavailable(format!(
                        "registry {registry}: {method} {url}: {}",
                        chain(&e)
                    )));
                }
            };
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            // 401: the registry may want auth only now (per repository), or another kind,
            // or our cached token went stale.
            let Some(challenge) = challenge_of(resp.headers()) else {
                return Ok(resp);
            };
            let can_answer = match &challenge {
                Challenge::Basic { .. } => {
                    target.creds.is_some() && !matches!(ep.challenge, Some(Challenge::Basic { .. }))
                }
                Challenge::Bearer { .. } => true,
            };
            if !can_answer {
                return Ok(resp);
            }
            debug!(
                registry,
                ?challenge,
                "401; retrying with the registry's challenge"
            );
            ep.challenge = Some(challenge);
            fresh = true;
            if let Ok(mut m) = self.inner.endpoints.lock() {
                m.insert(registry.to_string(), ep.clone());
            }
        }
        Err(Error::Internal("unreachable retry loop end".to_string()))
    }

    /// Checks `creds` against `registry` (`docker login`): fine when the registry needs
    /// no auth; [`Error::Unauthorized`] naming the registry when it refuses them.
    #[instrument(skip(self, creds), fields(user = %creds.username))]
    pub async fn login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let target = Target {
            registry,
            repository: None,
            creds: Some(creds),
        };
        let ep = self.endpoint(registry).await?;
        if let Some(Challenge::Bearer { realm, service, .. }) = &ep.challenge {
            // The token server is what checks the password; do not reuse a cached token.
            self.token(&target, realm, service.as_deref(), None, true)
                .await?;
        }
        let mut resp = self.send(&target, Method::GET, "/v2/", None, true).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_limited(&mut resp, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        let (_, msg) = error_message(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(auth_failure(registry, true, &msg)));
        }
        Err(Error::Unavailable(format!(
            "registry {registry}: GET /v2/: HTTP {status}: {msg}"
        )))
    }

    /// Fetches the manifest `reference` names (by digest when it has one, else by tag),
    /// checks its sha256 against the requested digest and the registry's
    /// `Docker-Content-Digest`, and parses it.
    #[instrument(skip(self, creds), fields(reference = %reference))]
    pub async fn fetch_manifest(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<FetchedManifest> {
        let wanted = match &reference.digest {
            Some(d) => Some(Digest::parse(d)?),
            None => None,
        };
        let tag_or_digest = match (&wanted, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        };
        self.fetch_manifest_at(reference, &tag_or_digest, wanted.as_ref(), None, creds)
            .await
    }

    async fn fetch_manifest_at(
        &self,
        reference: &Reference,
        tag_or_digest: &str,
        wanted: Option<&Digest>,
        size: Option<u64>,
        creds: Option<&Credentials>,
    ) -> Result<FetchedManifest> {
        let target = Target {
            registry: &reference.registry,
            repository: Some(&reference.repository),
            creds,
        };
        let path = format!("/v2/{}/manifests/{tag_or_digest}", reference.repository);
        let mut resp = self
            .send(
                &target,
                Method::GET,
                &path,
                Some(media_type::MANIFEST_ACCEPT),
                true,
            )
            .await?;
        let shown = match wanted {
            Some(d) if reference.digest.as_deref() != Some(d.as_str()) => {
                format!("{reference} ({d})")
            }
            _ => reference.to_string(),
        };
        if !resp.status().is_success() {
            return Err(response_error(
                &mut resp,
                &reference.registry,
                "manifest",
                &shown,
                &reference.familiar_name(),
            )
            .await);
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE);
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let raw = read_limited(&mut resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "registry {}: manifest {shown}: {e}",
                    reference.registry
                ))
            })?;
        let digest = Digest::of(&raw);
        if let Some(w) = wanted
            && *w != digest
        {
            return Err(Error::Internal(format!(
                "manifest verification failed for {shown}: the registry sent content with digest {digest}"
            )));
        }
        if let Some(size) = size
            && raw.len() as u64 != size
        {
            return Err(Error::Internal(format!(
                "manifest verification failed for {shown}: expected {size} bytes, got {}",
                raw.len()
            )));
        }
        if let Some(h) = header_digest
            .as_deref()
            .filter(|h| h.starts_with("sha256:"))
            && h != digest.as_str()
        {
            return Err(Error::Internal(format!(
                "manifest verification failed for {shown}: Docker-Content-Digest says {h}, content has {digest}"
            )));
        }
        let (kind, manifest) = parse_manifest(&raw, content_type.as_deref())?;
        debug!(%digest, ?kind, "manifest");
        Ok(FetchedManifest {
            kind,
            manifest,
            digest,
            raw,
        })
    }

    /// Resolves `reference` to one image for `platform` (default `linux/amd64`): fetches
    /// the manifest, picks the platform's entry from a list or index (as dockerd does),
    /// fetches and checks the config blob. With an explicit `platform`, a single-platform
    /// image of another platform is refused; without one it is accepted (dockerd warns).
    #[instrument(skip(self, creds), fields(reference = %reference, platform = ?platform.map(|p| p.to_string())))]
    pub async fn pull_manifest(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        creds: Option<&Credentials>,
    ) -> Result<PulledImage> {
        let top = self.fetch_manifest(reference, creds).await?;
        let want = platform.cloned().unwrap_or_default();
        let (image, manifest_digest, manifest_kind, manifest_raw) = match top.manifest {
            Manifest::Image(m) => (m, top.digest.clone(), top.kind, top.raw),
            Manifest::Index(index) => {
                let entry = select_platform(&index.manifests, &want).ok_or_else(|| {
                    Error::not_found(
                        "manifest",
                        format!(
                            "{reference} for platform {want} (the {} offers: {})",
                            if top.kind == ManifestKind::DockerList {
                                "manifest list"
                            } else {
                                "image index"
                            },
                            available_platforms(&index.manifests)
                        ),
                    )
                })?;
                let m = self
                    .fetch_manifest_at(
                        reference,
                        entry.digest.as_str(),
                        Some(&entry.digest),
                        Some(entry.size),
                        creds,
                    )
                    .await?;
                match m.manifest {
                    Manifest::Image(image) => (image, m.digest, m.kind, m.raw),
                    Manifest::Index(_) => {
                        return Err(Error::NotSupported(format!(
                            "{reference}: the entry for {want} is itself an index; nested indexes are not supported"
                        )));
                    }
                }
            }
        };
        let config_desc = image.config.clone();
        match config_desc
            .media_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
        {
            media_type::DOCKER_CONFIG | media_type::OCI_CONFIG => {}
            other => {
                return Err(Error::NotSupported(format!(
                    "{reference} is not a container image (config media type {other:?})"
                )));
            }
        }
        for layer in &image.layers {
            Compression::from_media_type(&layer.media_type)
                .map_err(|e| Error::NotSupported(format!("{reference}: {e}")))?;
        }
        let config_raw = self
            .fetch_small_blob(reference, &config_desc.digest, config_desc.size, creds)
            .await?;
        let config = ImageConfig::parse(&config_raw)?;
        if config.rootfs.diff_ids.len() != image.layers.len() {
            return Err(Error::Internal(format!(
                "{reference}: image config lists {} layer diff IDs for {} layers in the manifest",
                config.rootfs.diff_ids.len(),
                image.layers.len()
            )));
        }
        // A list entry was chosen by its platform already (and configs often leave the
        // variant out); a single manifest is checked when a platform was asked for.
        if let (Some(p), false) = (platform, top.kind.is_index()) {
            let have = config.platform();
            if !p.accepts(&have) {
                return Err(Error::not_found(
                    "manifest",
                    format!("{reference} for platform {p} (the image is {have})"),
                ));
            }
        }
        Ok(PulledImage {
            reference: reference.clone(),
            digest: top.digest,
            manifest_digest,
            manifest_kind,
            manifest: image,
            manifest_raw,
            config_digest: config_desc.digest,
            config,
            config_raw,
        })
    }

    /// A small blob (a config) read whole, with its digest and size checked.
    async fn fetch_small_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        creds: Option<&Credentials>,
    ) -> Result<Vec<u8>> {
        if size > MAX_CONFIG_BYTES as u64 {
            return Err(Error::NotSupported(format!(
                "{reference}: config blob {digest} is {size} bytes, more than vic reads ({MAX_CONFIG_BYTES})"
            )));
        }
        let mut stream = self.blob(reference, digest, Some(size), creds).await?;
        let mut out = Vec::with_capacity(size as usize);
        while let Some(c) = stream.next_chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    /// Starts downloading blob `digest` of `reference`'s repository (redirects followed),
    /// verified against `digest` and, when given, `size` as it streams.
    #[instrument(skip(self, creds), fields(repository = %reference.full_name(), %digest))]
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: Option<u64>,
        creds: Option<&Credentials>,
    ) -> Result<BlobStream> {
        let target = Target {
            registry: &reference.registry,
            repository: Some(&reference.repository),
            creds,
        };
        let path = format!("/v2/{}/blobs/{digest}", reference.repository);
        let mut resp = self.send(&target, Method::GET, &path, None, false).await?;
        let shown = format!("{}@{digest}", reference.familiar_name());
        if !resp.status().is_success() {
            return Err(response_error(
                &mut resp,
                &reference.registry,
                "blob",
                &shown,
                &reference.familiar_name(),
            )
            .await);
        }
        if let (Some(want), Some(len)) = (size, resp.content_length())
            && want != len
        {
            return Err(Error::Internal(format!(
                "blob {shown}: the registry announces {len} bytes, the manifest {want}"
            )));
        }
        Ok(BlobStream::new(
            resp,
            Verifier::new("blob", digest.clone(), size),
        ))
    }

    /// A layer as its uncompressed tar stream, for a blocking thread: downloads the blob
    /// of `layer` (a manifest's layer descriptor), checks it against the descriptor's
    /// digest and size, decompresses it by media type, and checks the diff ID against
    /// `diff_id` (the config's `rootfs.diff_ids` entry) when given. Call within a Tokio
    /// runtime; read the result on a blocking thread.
    pub async fn layer_reader(
        &self,
        reference: &Reference,
        layer: &crate::manifest::Descriptor,
        diff_id: Option<&Digest>,
        creds: Option<&Credentials>,
    ) -> Result<LayerReader<BlobReader>> {
        let compression = Compression::from_media_type(&layer.media_type)?;
        let stream = self
            .blob(reference, &layer.digest, Some(layer.size), creds)
            .await?;
        Ok(LayerReader::new(
            stream.into_reader()?,
            compression,
            diff_id.cloned(),
        ))
    }
}

fn header_str(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    pick_challenge(
        headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// The message of a refused login or token request.
fn auth_failure(registry: &str, had_creds: bool, registry_msg: &str) -> String {
    let detail = if registry_msg.is_empty() {
        String::new()
    } else {
        format!(" ({registry_msg})")
    };
    if had_creds {
        format!("unauthorized: incorrect username or password for registry {registry}{detail}")
    } else {
        format!("unauthorized: registry {registry} requires authentication{detail}")
    }
}

/// Reads at most `limit` bytes of a body; more is an error.
async fn read_limited(
    resp: &mut reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    if let Some(len) = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(format!("body of {len} bytes is larger than {limit}"));
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| chain(&e))? {
        if out.len() + c.len() > limit {
            return Err(format!("body larger than {limit} bytes"));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// The error for a non-2xx answer about `kind` (`manifest`, `blob`) `what`.
async fn response_error(
    resp: &mut reqwest::Response,
    registry: &str,
    kind: &'static str,
    what: &str,
    repository: &str,
) -> Error {
    let status = resp.status();
    let body = read_limited(resp, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let (code, msg) = error_message(&body);
    match status {
        StatusCode::NOT_FOUND => match code.as_deref() {
            Some("NAME_UNKNOWN") => Error::not_found("repository", repository),
            Some("BLOB_UNKNOWN") => Error::not_found("blob", what),
            Some("MANIFEST_UNKNOWN") => Error::not_found("manifest", what),
            _ => Error::not_found(kind, what),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => unauthorized(format!(
            "pull access denied for {repository}, repository does not exist or may require 'docker login': {}",
            if msg.is_empty() {
                status.to_string()
            } else {
                msg
            }
        )),
        _ => Error::Unavailable(format!(
            "registry {registry}: {kind} {what}: HTTP {status}{}",
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_map_to_its_api_host() {
        assert_eq!(api_host("docker.io"), DOCKER_HUB_API_HOST);
        assert_eq!(api_host("index.docker.io"), DOCKER_HUB_API_HOST);
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn registry_error_bodies_read_like_docker() {
        let (code, msg) =
            error_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#);
        assert_eq!(code.as_deref(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(msg, "manifest unknown: manifest unknown");
        let (_, msg) = error_message(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"},{"code":"DENIED"}]}"#,
        );
        assert_eq!(msg, "unauthorized: authentication required; denied");
        let (code, msg) = error_message(b"  <html>oops</html>\n");
        assert_eq!((code, msg.as_str()), (None, "<html>oops</html>"));
    }

    #[test]
    fn insecure_registries_are_only_those_listed() {
        let c = RegistryClient::new(RegistryConfig {
            insecure_registries: vec!["127.0.0.1:5000".into(), "Reg.Local".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(c.is_insecure("127.0.0.1:5000"));
        assert!(c.is_insecure("reg.local"));
        assert!(!c.is_insecure("127.0.0.1:5001"));
        assert!(!c.is_insecure("localhost:5000"));
        assert_eq!(
            c.config().user_agent,
            format!("vic/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn bad_ca_certificates_are_refused() {
        for pem in [
            &b"not a certificate"[..],
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let e = RegistryClient::new(RegistryConfig {
                ca_certificates_pem: vec![pem.to_vec()],
                ..Default::default()
            })
            .unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }
}
