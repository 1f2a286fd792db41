//! The vim25 SOAP client: service content, the session (login with the session cookie,
//! renewed when the server says `NotAuthenticated`), method calls, the property
//! collector (`RetrievePropertiesEx` with continuation, `WaitForUpdatesEx`), tasks, and
//! datastore file transfer over HTTP. It counts its SOAP round trips.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode, Url};
use tracing::{debug, warn};
use vic_core::{DsPath, MoRef};

use crate::fault::{Error, Fault};
use crate::tls::{self, Tls};
use crate::xml::{Element, SOAPENV, envelope};

/// The vim25 version the client speaks (the `SOAPAction` header).
pub const API_VERSION: &str = "6.5";
const SESSION_COOKIE: &str = "vmware_soap_session";

/// How to reach and log in to a vCenter or ESXi.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// User name (overrides one in the URL).
    pub user: Option<String>,
    /// Password (overrides one in the URL).
    pub password: Option<String>,
    /// The server certificate check.
    pub tls: Tls,
    /// Timeout of one HTTP request (default 5 minutes).
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// The managed objects of the service instance that the client uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceContent {
    /// The root folder of the inventory.
    pub root_folder: MoRef,
    /// The session's property collector.
    pub property_collector: MoRef,
    /// The session manager.
    pub session_manager: MoRef,
    /// The search index (inventory paths).
    pub search_index: Option<MoRef>,
    /// The file manager (datastore folders and files).
    pub file_manager: Option<MoRef>,
    /// The virtual disk manager.
    pub virtual_disk_manager: Option<MoRef>,
    /// `about.fullName`, e.g. "VMware vCenter Server 6.5.0 build-5973321".
    pub full_name: String,
    /// `about.apiType`: `VirtualCenter` or `HostAgent`.
    pub api_type: String,
}

impl ServiceContent {
    fn parse(rv: &Element) -> Result<Self, Error> {
        let need = |n: &str| {
            rv.moref_of(n)
                .ok_or_else(|| Error::Protocol(format!("service content has no {n}")))
        };
        Ok(ServiceContent {
            root_folder: need("rootFolder")?,
            property_collector: need("propertyCollector")?,
            session_manager: need("sessionManager")?,
            search_index: rv.moref_of("searchIndex"),
            file_manager: rv.moref_of("fileManager"),
            virtual_disk_manager: rv.moref_of("virtualDiskManager"),
            full_name: rv
                .at(&["about", "fullName"])
                .map(|e| e.text.clone())
                .unwrap_or_default(),
            api_type: rv
                .at(&["about", "apiType"])
                .map(|e| e.text.clone())
                .unwrap_or_default(),
        })
    }
}

/// One object of a property collector result: its reference, the properties read,
/// and the properties that could not be read with their faults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectContent {
    /// The object.
    pub obj: Option<MoRef>,
    /// `(path, value)` pairs.
    pub props: Vec<(String, Element)>,
    /// `(path, fault)` pairs.
    pub missing: Vec<(String, Fault)>,
}

impl ObjectContent {
    /// Decodes an `objects` element.
    pub fn parse(e: &Element) -> ObjectContent {
        ObjectContent {
            obj: e.moref_of("obj"),
            props: e
                .children_named("propSet")
                .filter_map(|p| Some((p.text_of("name")?.to_string(), p.child("val")?.clone())))
                .collect(),
            missing: e
                .children_named("missingSet")
                .map(|m| {
                    let path = m.text_of("path").unwrap_or_default().to_string();
                    let fault = m.child("fault").map(Fault::from_localized);
                    (path, fault.unwrap_or_else(unknown_fault))
                })
                .collect(),
        }
    }

    /// A property's value.
    pub fn get(&self, path: &str) -> Option<&Element> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// A property's text.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|v| v.text.as_str())
    }
}

fn unknown_fault() -> Fault {
    Fault {
        kind: "SystemError".into(),
        message: "no fault given".into(),
        detail: Element::default(),
    }
}

/// What to read: the properties of one type, and where to start and traverse.
#[derive(Clone, Debug)]
pub struct PropertySpec {
    /// The managed object type.
    pub kind: String,
    /// Property paths.
    pub paths: Vec<String>,
}

impl PropertySpec {
    /// The properties `paths` of objects of type `kind`.
    pub fn new(kind: impl Into<String>, paths: &[&str]) -> PropertySpec {
        PropertySpec {
            kind: kind.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The `propSet` element of a filter spec.
    pub(crate) fn to_prop_set(&self) -> Element {
        let mut ps = Element::new("propSet").with_text("type", &self.kind);
        for path in &self.paths {
            ps = ps.with_text("pathSet", path);
        }
        ps
    }
}

/// Builds a `specSet` (`PropertyFilterSpec`) element.
pub fn filter_spec(
    name: &str,
    props: &[PropertySpec],
    obj: &MoRef,
    skip: bool,
    traversal: Vec<Element>,
) -> Element {
    let mut spec = Element::new(name);
    for p in props {
        spec = spec.with(p.to_prop_set());
    }
    let mut os = Element::new("objectSet")
        .with_moref("obj", obj)
        .with_text("skip", skip.to_string());
    os.children.extend(traversal);
    spec.with(os)
}

/// A `TraversalSpec` selection: from objects of `kind` follow `path`, then the named
/// selections `next`.
pub fn traversal(name: &str, kind: &str, path: &str, next: &[&str]) -> Element {
    let mut t = Element::typed("selectSet", "TraversalSpec")
        .with_text("name", name)
        .with_text("type", kind)
        .with_text("path", path)
        .with_text("skip", "false");
    for n in next {
        t = t.with(Element::new("selectSet").with_text("name", *n));
    }
    t
}

/// A filter spec (element `name`) on a task's `info.state`, `info.error` and `info.result`.
fn task_info_spec(name: &str, task: &MoRef) -> Element {
    filter_spec(
        name,
        &[PropertySpec::new(
            "Task",
            &["info.state", "info.error", "info.result"],
        )],
        task,
        false,
        vec![],
    )
}

/// The state of a finished task.
#[derive(Debug)]
enum TaskEnd {
    Success(Option<Element>),
    Error(Fault),
}

/// Reads a task's terminal state from its `info.*` properties (`None` while it runs).
fn task_end(
    state: Option<&str>,
    error: Option<&Element>,
    result: Option<&Element>,
) -> Option<TaskEnd> {
    match state? {
        "success" => Some(TaskEnd::Success(result.cloned())),
        "error" => Some(TaskEnd::Error(
            error
                .map(Fault::from_localized)
                .unwrap_or_else(unknown_fault),
        )),
        _ => None,
    }
}

/// A connection to one vCenter or ESXi: cheap to clone, shared by the providers.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    sdk: Url,
    user: String,
    password: String,
    /// `vmware_soap_session=…` of the current session.
    cookie: Mutex<Option<String>>,
    /// The session key (for `TerminateSession`) of the current session.
    session_key: Mutex<Option<String>>,
    /// Serializes logins, so that callers that all see `NotAuthenticated` log in once.
    login: tokio::sync::Mutex<()>,
    content: ServiceContent,
    soap_calls: AtomicU64,
    http_transfers: AtomicU64,
    logins: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("sdk", &self.inner.sdk.as_str())
            .field("user", &self.inner.user)
            .field("round_trips", &self.round_trips())
            .finish()
    }
}

/// The SDK URL without credentials (`https://host/sdk`), and the credentials it held.
fn split_url(url: &str) -> Result<(Url, String, String), Error> {
    let mut u =
        Url::parse(url).map_err(|e| Error::Protocol(format!("bad vSphere URL {url:?}: {e}")))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(Error::Protocol(format!(
            "vSphere URL {url:?} must be https:// (or http://)"
        )));
    }
    let user = percent_decode(u.username());
    let password = u.password().map(percent_decode).unwrap_or_default();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.path().is_empty() || u.path() == "/" {
        u.set_path("/sdk");
    }
    u.set_query(None);
    u.set_fragment(None);
    Ok((u, user, password))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Client {
    /// Connects to `url` (`https://user:pass@host/sdk`), reads the service content and
    /// logs in.
    pub async fn connect(url: &str, options: &ClientOptions) -> Result<Client, Error> {
        let (sdk, url_user, url_password) = split_url(url)?;
        let user = options.user.clone().unwrap_or(url_user);
        let password = options.password.clone().unwrap_or(url_password);
        let builder = reqwest::Client::builder()
            .timeout(options.timeout.unwrap_or(Duration::from_secs(300)))
            .connect_timeout(Duration::from_secs(30));
        let http = tls::configure(builder, &options.tls)?
            .build()
            .map_err(|e| Error::Tls(format!("HTTP client: {e}")))?;
        let service_instance = MoRef::new("ServiceInstance", "ServiceInstance");
        let counted = AtomicU64::new(0);
        let rv = raw_call(
            &http,
            &sdk,
            None,
            &Element::new("RetrieveServiceContent").with_moref("_this", &service_instance),
            &counted,
        )
        .await?
        .0;
        let rv = rv
            .child("returnval")
            .ok_or_else(|| Error::Protocol("RetrieveServiceContent has no returnval".into()))?;
        let content = ServiceContent::parse(rv)?;
        let client = Client {
            inner: Arc::new(Inner {
                http,
                sdk,
                user,
                password,
                cookie: Mutex::new(None),
                session_key: Mutex::new(None),
                login: tokio::sync::Mutex::new(()),
                content,
                soap_calls: AtomicU64::new(counted.load(Ordering::Relaxed)),
                http_transfers: AtomicU64::new(0),
                logins: AtomicU64::new(0),
            }),
        };
        {
            let _guard = client.inner.login.lock().await;
            client.login().await?;
        }
        Ok(client)
    }

    /// The service content.
    pub fn content(&self) -> &ServiceContent {
        &self.inner.content
    }

    /// The SDK URL (without credentials).
    pub fn url(&self) -> &Url {
        &self.inner.sdk
    }

    /// SOAP round trips made so far (every POST to the SDK, logins included).
    pub fn round_trips(&self) -> u64 {
        self.inner.soap_calls.load(Ordering::Relaxed)
    }

    /// Datastore file transfers (HTTP GET/PUT of `/folder`) made so far.
    pub fn http_transfers(&self) -> u64 {
        self.inner.http_transfers.load(Ordering::Relaxed)
    }

    /// Logins made so far (1 after connecting; more when sessions were renewed).
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(Ordering::Relaxed)
    }

    /// The key of the current session (what `SessionManager.TerminateSession` takes).
    pub fn session_key(&self) -> Option<String> {
        lock(&self.inner.session_key).clone()
    }

    fn cookie(&self) -> Option<String> {
        lock(&self.inner.cookie).clone()
    }

    /// Logs in (the caller holds the login lock).
    async fn login(&self) -> Result<(), Error> {
        let m = Element::new("Login")
            .with_moref("_this", &self.inner.content.session_manager)
            .with_text("userName", &self.inner.user)
            .with_text("password", &self.inner.password);
        self.inner.logins.fetch_add(1, Ordering::Relaxed);
        let (resp, cookie) = raw_call(
            &self.inner.http,
            &self.inner.sdk,
            None,
            &m,
            &self.inner.soap_calls,
        )
        .await
        .map_err(|e| match e {
            Error::Fault { fault, .. } if fault.kind == "InvalidLogin" => Error::Login {
                url: self.inner.sdk.to_string(),
                user: self.inner.user.clone(),
                message: if fault.message.is_empty() {
                    "incorrect user name or password".into()
                } else {
                    format!("{} (incorrect user name or password)", fault.message)
                },
            },
            e => e,
        })?;
        let cookie = cookie
            .ok_or_else(|| Error::Protocol(format!("Login set no {SESSION_COOKIE} cookie")))?;
        *lock(&self.inner.cookie) = Some(cookie);
        *lock(&self.inner.session_key) = resp.at(&["returnval", "key"]).map(|k| k.text.clone());
        debug!(user = %self.inner.user, "logged in to {}", self.inner.sdk);
        Ok(())
    }

    /// Logs in again unless another caller already renewed the session that `stale`
    /// was the cookie of.
    async fn renew(&self, stale: Option<&str>) -> Result<(), Error> {
        let _guard = self.inner.login.lock().await;
        if self.cookie().as_deref() != stale {
            return Ok(());
        }
        warn!("vSphere session expired; logging in again");
        self.login().await
    }

    /// Ends the session (`Logout`).
    pub async fn logout(&self) -> Result<(), Error> {
        let m = Element::new("Logout").with_moref("_this", &self.inner.content.session_manager);
        let cookie = self.cookie();
        raw_call(
            &self.inner.http,
            &self.inner.sdk,
            cookie.as_deref(),
            &m,
            &self.inner.soap_calls,
        )
        .await?;
        *lock(&self.inner.cookie) = None;
        Ok(())
    }

    /// Calls a method and returns its `…Response` element; a `NotAuthenticated` fault
    /// renews the session and retries once.
    pub async fn call(&self, method: Element) -> Result<Element, Error> {
        for attempt in 0..2 {
            let cookie = self.cookie();
            match raw_call(
                &self.inner.http,
                &self.inner.sdk,
                cookie.as_deref(),
                &method,
                &self.inner.soap_calls,
            )
            .await
            {
                Err(e) if attempt == 0 && e.fault().is_some_and(Fault::is_not_authenticated) => {
                    self.renew(cookie.as_deref()).await?;
                }
                r => return r.map(|(e, _)| e),
            }
        }
        Err(Error::Protocol(format!(
            "{}: still not authenticated after logging in again",
            method.name
        )))
    }

    /// Calls a method and returns its `returnval` (if any).
    pub async fn call_rv(&self, method: Element) -> Result<Option<Element>, Error> {
        let mut resp = self.call(method).await?;
        Ok(
            match resp.children.iter().position(|c| c.name == "returnval") {
                Some(i) => Some(resp.children.swap_remove(i)),
                None => None,
            },
        )
    }

    /// Calls a method that returns a managed object reference.
    pub async fn call_moref(&self, method: Element) -> Result<MoRef, Error> {
        let name = method.name.clone();
        self.call_rv(method)
            .await?
            .and_then(|rv| rv.as_moref())
            .ok_or_else(|| Error::Protocol(format!("{name} returned no reference")))
    }

    /// Starts a task and waits for it; returns the task's `info.result`.
    pub async fn run_task(&self, method: Element) -> Result<Option<Element>, Error> {
        let name = method.name.clone();
        let task = self.call_moref(method).await?;
        self.wait_task(&task, &name).await
    }

    /// Waits for a task: one read of its state, which is enough when it has already
    /// ended (vcsim's tasks, quick vSphere ones), else [`Client::wait_task_updates`].
    pub async fn wait_task(&self, task: &MoRef, method: &str) -> Result<Option<Element>, Error> {
        let objs = self.retrieve(task_info_spec("specSet", task)).await?;
        let o = objs.first();
        let end = o.and_then(|o| {
            task_end(
                o.text("info.state"),
                o.get("info.error"),
                o.get("info.result"),
            )
        });
        match end {
            Some(end) => finish(end, method),
            None => self.wait_task_updates(task, method).await,
        }
    }

    /// Waits for a task with `WaitForUpdatesEx` on a property collector of its own with
    /// one filter on the task, so that other filters of the session do not interfere.
    pub async fn wait_task_updates(
        &self,
        task: &MoRef,
        method: &str,
    ) -> Result<Option<Element>, Error> {
        let pc = self
            .call_moref(
                Element::new("CreatePropertyCollector")
                    .with_moref("_this", &self.inner.content.property_collector),
            )
            .await?;
        let result = self.wait_task_on(&pc, task, method).await;
        let destroy = self
            .call(Element::new("DestroyPropertyCollector").with_moref("_this", &pc))
            .await;
        if let Err(e) = destroy {
            debug!("DestroyPropertyCollector {pc}: {e}");
        }
        result
    }

    async fn wait_task_on(
        &self,
        pc: &MoRef,
        task: &MoRef,
        method: &str,
    ) -> Result<Option<Element>, Error> {
        let spec = task_info_spec("spec", task);
        self.call(
            Element::new("CreateFilter")
                .with_moref("_this", pc)
                .with(spec)
                .with_text("partialUpdates", "false"),
        )
        .await?;
        let mut version = String::new();
        let mut state: Option<String> = None;
        let mut error: Option<Element> = None;
        let mut result: Option<Element> = None;
        loop {
            let rv = self
                .call_rv(
                    Element::new("WaitForUpdatesEx")
                        .with_moref("_this", pc)
                        .with_text("version", &version)
                        .with(Element::new("options").with_text("maxWaitSeconds", "60")),
                )
                .await?;
            let Some(set) = rv else { continue };
            if let Some(v) = set.text_of("version") {
                version = v.to_string();
            }
            for f in set.children_named("filterSet") {
                for o in f.children_named("objectSet") {
                    for c in o.children_named("changeSet") {
                        let val = c.child("val").cloned();
                        match c.text_of("name") {
                            Some("info.state") => state = val.map(|v| v.text),
                            Some("info.error") => error = val,
                            Some("info.result") => result = val,
                            _ => {}
                        }
                    }
                }
            }
            if let Some(end) = task_end(state.as_deref(), error.as_ref(), result.as_ref()) {
                return finish(end, method);
            }
        }
    }

    /// `RetrievePropertiesEx` with `ContinueRetrievePropertiesEx` until all results are
    /// in. A `NotAuthenticated` in a `missingSet` (how an expired session shows here)
    /// renews the session and retries once.
    pub async fn retrieve(&self, spec_set: Element) -> Result<Vec<ObjectContent>, Error> {
        for attempt in 0..2 {
            let cookie = self.cookie();
            let objs = self.retrieve_once(spec_set.clone()).await?;
            let expired = objs
                .iter()
                .any(|o| o.missing.iter().any(|(_, f)| f.is_not_authenticated()));
            if expired && attempt == 0 {
                self.renew(cookie.as_deref()).await?;
                continue;
            }
            if let Some((path, f)) = objs
                .iter()
                .flat_map(|o| o.missing.iter())
                .find(|(_, f)| f.is_not_authenticated() || f.kind == "NoPermission")
            {
                return Err(Error::Fault {
                    method: format!("RetrievePropertiesEx {path}"),
                    fault: Box::new(f.clone()),
                });
            }
            return Ok(objs);
        }
        Err(Error::Protocol(
            "RetrievePropertiesEx: not authenticated".into(),
        ))
    }

    async fn retrieve_once(&self, spec_set: Element) -> Result<Vec<ObjectContent>, Error> {
        let pc = &self.inner.content.property_collector;
        let mut out = Vec::new();
        let mut rv = self
            .call_rv(
                Element::new("RetrievePropertiesEx")
                    .with_moref("_this", pc)
                    .with(spec_set)
                    .with(Element::new("options")),
            )
            .await?;
        while let Some(r) = rv {
            out.extend(r.children_named("objects").map(ObjectContent::parse));
            match r.text_of("token") {
                Some(token) if !token.is_empty() => {
                    rv = self
                        .call_rv(
                            Element::new("ContinueRetrievePropertiesEx")
                                .with_moref("_this", pc)
                                .with_text("token", token),
                        )
                        .await?;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The names and references of the objects that `traversal` reaches from `obj`
    /// (`obj` itself left out), in the order the server gives them.
    pub async fn names_along(
        &self,
        obj: &MoRef,
        traversal: Element,
    ) -> Result<Vec<(String, MoRef)>, Error> {
        let objs = self
            .retrieve(filter_spec(
                "specSet",
                &[PropertySpec::new("ManagedEntity", &["name"])],
                obj,
                true,
                vec![traversal],
            ))
            .await?;
        Ok(objs
            .into_iter()
            .filter_map(|o| Some((o.text("name")?.to_string(), o.obj?)))
            .collect())
    }

    /// Properties of one object.
    pub async fn properties(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent, Error> {
        let spec = filter_spec(
            "specSet",
            &[PropertySpec::new(obj.kind.clone(), paths)],
            obj,
            false,
            vec![],
        );
        let objs = self.retrieve(spec).await?;
        objs.into_iter()
            .find(|o| o.obj.as_ref() == Some(obj))
            .ok_or_else(|| Error::Fault {
                method: "RetrievePropertiesEx".into(),
                fault: Box::new(Fault {
                    kind: "ManagedObjectNotFound".into(),
                    message: format!("{obj} not found"),
                    detail: Element::new("fault").with_moref("obj", obj),
                }),
            })
    }

    /// Calls the `SearchIndex` method `method`, its arguments added by `args`; the
    /// object found, if any.
    async fn search(
        &self,
        method: &str,
        args: impl FnOnce(Element) -> Element,
    ) -> Result<Option<MoRef>, Error> {
        let si = self
            .inner
            .content
            .search_index
            .clone()
            .ok_or_else(|| Error::Protocol("the server has no search index".into()))?;
        let rv = self
            .call_rv(args(Element::new(method).with_moref("_this", &si)))
            .await?;
        Ok(rv.and_then(|r| r.as_moref()))
    }

    /// `SearchIndex.FindByInventoryPath`: the object at `path` (`DC0/host/C0`), if any.
    pub async fn find_by_path(&self, path: &str) -> Result<Option<MoRef>, Error> {
        self.search("FindByInventoryPath", |m| {
            m.with_text("inventoryPath", path.trim_matches('/'))
        })
        .await
    }

    /// `SearchIndex.FindChild`: the child `name` of a folder, datacenter, compute
    /// resource or pool.
    pub async fn find_child(&self, parent: &MoRef, name: &str) -> Result<Option<MoRef>, Error> {
        self.search("FindChild", |m| {
            m.with_moref("entity", parent).with_text("name", name)
        })
        .await
    }

    /// The `/folder` URL of a datastore file.
    fn folder_url(&self, datacenter: &str, path: &DsPath) -> Result<Url, Error> {
        let mut u = self.inner.sdk.clone();
        u.set_path("/folder");
        {
            let mut seg = u
                .path_segments_mut()
                .map_err(|_| Error::Protocol("SDK URL cannot hold a path".into()))?;
            for s in path.path.split('/').filter(|s| !s.is_empty()) {
                seg.push(s);
            }
        }
        u.query_pairs_mut()
            .append_pair("dcPath", datacenter)
            .append_pair("dsName", &path.datastore);
        Ok(u)
    }

    async fn transfer(
        &self,
        method: Method,
        datacenter: &str,
        path: &DsPath,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, Error> {
        let url = self.folder_url(datacenter, path)?;
        for attempt in 0..2 {
            let cookie = self.cookie();
            let mut req = self.inner.http.request(method.clone(), url.clone());
            if let Some(c) = &cookie {
                req = req.header(COOKIE, c);
            }
            if let Some(b) = &body {
                req = req
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(b.clone());
            }
            self.inner.http_transfers.fetch_add(1, Ordering::Relaxed);
            let resp = req.send().await.map_err(|source| Error::Http {
                url: format!("{method} {path}"),
                source,
            })?;
            let status = resp.status();
            if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
                && attempt == 0
            {
                self.renew(cookie.as_deref()).await?;
                continue;
            }
            if !status.is_success() {
                return Err(Error::Status {
                    what: format!("{method} {path}"),
                    status: status.as_u16(),
                });
            }
            let bytes = resp.bytes().await.map_err(|source| Error::Http {
                url: format!("{method} {path}"),
                source,
            })?;
            return Ok(bytes.to_vec());
        }
        Err(Error::Status {
            what: format!("{method} {path}"),
            status: 401,
        })
    }

    /// Downloads a datastore file (`GET /folder/<path>?dcPath=…&dsName=…`).
    pub async fn download(&self, datacenter: &str, path: &DsPath) -> Result<Vec<u8>, Error> {
        self.transfer(Method::GET, datacenter, path, None).await
    }

    /// Uploads a datastore file, replacing it (`PUT /folder/…`).
    pub async fn upload(
        &self,
        datacenter: &str,
        path: &DsPath,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.transfer(Method::PUT, datacenter, path, Some(data))
            .await
            .map(|_| ())
    }
}

fn finish(end: TaskEnd, method: &str) -> Result<Option<Element>, Error> {
    match end {
        TaskEnd::Success(r) => Ok(r),
        TaskEnd::Error(fault) => Err(Error::Fault {
            method: method.to_string(),
            fault: Box::new(fault),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One POST: the method's `…Response` element and the session cookie it set, or the
/// fault it answered with.
async fn raw_call(
    http: &reqwest::Client,
    sdk: &Url,
    cookie: Option<&str>,
    method: &Element,
    counter: &AtomicU64,
) -> Result<(Element, Option<String>), Error> {
    let body = envelope(method);
    let mut req = http
        .post(sdk.clone())
        .header(CONTENT_TYPE, "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"urn:vim25/{API_VERSION}\""))
        .body(body);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    counter.fetch_add(1, Ordering::Relaxed);
    let resp = req.send().await.map_err(|source| Error::Http {
        url: format!("{} ({})", sdk, method.name),
        source,
    })?;
    let status = resp.status();
    let set_cookie = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|v| v.trim_start().starts_with(&format!("{SESSION_COOKIE}=")))
        .map(|v| v.trim().to_string());
    let bytes = resp.bytes().await.map_err(|source| Error::Http {
        url: format!("{} ({})", sdk, method.name),
        source,
    })?;
    let env = Element::parse(&bytes).map_err(|e| {
        if status.is_success() {
            Error::Protocol(format!("{}: {e}", method.name))
        } else {
            Error::Status {
                what: format!("{} {}", sdk, method.name),
                status: status.as_u16(),
            }
        }
    })?;
    let body = env
        .child("Body")
        .filter(|b| b.ns.as_deref() == Some(SOAPENV))
        .ok_or_else(|| Error::Protocol(format!("{}: no SOAP body", method.name)))?;
    let first = body
        .children
        .first()
        .ok_or_else(|| Error::Protocol(format!("{}: empty SOAP body", method.name)))?;
    if first.name == "Fault" {
        return Err(Error::Fault {
            method: method.name.clone(),
            fault: Box::new(Fault::from_soap(first)),
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            what: format!("{} {}", sdk, method.name),
            status: status.as_u16(),
        });
    }
    Ok((first.clone(), set_cookie))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        let (u, user, pass) = split_url("https://admin%40vsphere.local:p%3Ass@10.0.0.1").unwrap();
        assert_eq!(u.as_str(), "https://10.0.0.1/sdk");
        assert_eq!(user, "admin@vsphere.local");
        assert_eq!(pass, "p:ss");
        assert!(split_url("ftp://x").is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
