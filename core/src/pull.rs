//! Pulling images: the engine resolves a reference through a [`Registry`] (implemented
//! by `vic-registry`), streams every missing layer from the registry through
//! decompression and digest checks into a new layer disk, and records the image and its
//! names only when every layer is in place. Progress is reported as [`PullEvent`]s that
//! the endpoint renders as Docker's JSON progress stream.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use crate::engine::Engine;
use crate::image_ops::index_key;
use crate::images::{ImageRecord, chain_id, hex_of};
use crate::reference::Reference;
use crate::{Error, Result};

/// Credentials for a registry, as `docker login` gave them.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A layer of a remote image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLayer {
    /// Digest of the (compressed) blob.
    pub digest: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Media type (tells the compression).
    pub media_type: String,
    /// The config's diff id for this layer.
    pub diff_id: String,
}

/// A remote image resolved for one platform.
#[derive(Clone, Debug)]
pub struct RemoteImage {
    /// The digest the reference names (a list's or index's digest, or the manifest's).
    pub digest: String,
    /// The config's digest: the image id.
    pub config_digest: String,
    /// The config exactly as served (verified against `config_digest`).
    pub config_raw: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<RemoteLayer>,
}

/// What the engine needs from a registry client.
#[async_trait]
pub trait Registry: Send + Sync + Debug {
    /// Resolves `reference` for `platform` (`linux/amd64` when `None`).
    async fn resolve(
        &self,
        reference: &Reference,
        platform: Option<&str>,
        auth: Option<&RegistryAuth>,
    ) -> Result<RemoteImage>;
    /// Opens a layer as its uncompressed tar stream, to be read on a blocking thread. The
    /// stream fails (at the latest at its end) when the blob or diff id do not match;
    /// compressed bytes received are added to `received` as they arrive.
    async fn open_layer(
        &self,
        reference: &Reference,
        layer: &RemoteLayer,
        auth: Option<&RegistryAuth>,
        received: Arc<AtomicU64>,
    ) -> Result<Box<dyn Read + Send>>;
    /// Downloads a layer's blob into the file `to`, verified against its digest, adding
    /// bytes received to `received`.
    async fn download_layer(
        &self,
        reference: &Reference,
        layer: &RemoteLayer,
        auth: Option<&RegistryAuth>,
        received: Arc<AtomicU64>,
        to: &std::path::Path,
    ) -> Result<()>;
    /// A blob being downloaded (or downloaded) as its uncompressed tar stream (diff id
    /// checked at its end).
    fn open_downloaded(
        &self,
        layer: &RemoteLayer,
        blob: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>>;
    /// Checks credentials against a registry (`docker login`).
    async fn login(&self, registry: &str, auth: &RegistryAuth) -> Result<()>;
}

/// One progress message of a pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullEvent {
    /// The layer's short id, or the tag for the first line, or none.
    pub id: Option<String>,
    /// Docker's status text.
    pub status: String,
    /// Bytes done and total, for progress bars.
    pub progress: Option<(u64, u64)>,
}

impl PullEvent {
    fn status(id: Option<&str>, status: impl Into<String>) -> Self {
        PullEvent {
            id: id.map(str::to_string),
            status: status.into(),
            progress: None,
        }
    }
}

/// A layer downloading into a spool file: the task, the file, and how far it got.
type Download = (
    tokio::task::JoinHandle<Result<()>>,
    std::path::PathBuf,
    Arc<SpoolState>,
);

/// How far a spool file has been written, and how its download ended.
struct SpoolState {
    /// Bytes in the file.
    received: Arc<AtomicU64>,
    /// `Some` once the download ended: `Ok` complete and verified, or why it failed.
    end: std::sync::Mutex<Option<std::result::Result<(), String>>>,
    changed: std::sync::Condvar,
}

impl SpoolState {
    fn finish(&self, end: std::result::Result<(), String>) {
        let mut e = self.end.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(end);
        }
        self.changed.notify_all();
    }
}

/// Reads a spool file while its download still writes it: waits for more bytes, ends
/// only when the download ended complete (and verified), fails when it failed.
struct GrowingReader {
    file: std::fs::File,
    pos: u64,
    state: Arc<SpoolState>,
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let avail = self
                .state
                .received
                .load(Ordering::Acquire)
                .saturating_sub(self.pos);
            if avail > 0 && !buf.is_empty() {
                let want = buf.len().min(usize::try_from(avail).unwrap_or(usize::MAX));
                let n = self.file.read(&mut buf[..want])?;
                if n > 0 {
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
            let end = self.state.end.lock().unwrap_or_else(|p| p.into_inner());
            match &*end {
                Some(Err(m)) => return Err(std::io::Error::other(m.clone())),
                Some(Ok(())) if self.state.received.load(Ordering::Acquire) <= self.pos => {
                    return Ok(0);
                }
                Some(Ok(())) => continue,
                None => {
                    // Woken by the end of the download, or polled for new bytes.
                    let _ = self
                        .state
                        .changed
                        .wait_timeout(end, Duration::from_millis(20))
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

/// How many layers download at once, besides the one being unpacked (dockerd's default).
pub const MAX_PARALLEL_DOWNLOADS: usize = 3;

/// Reports `Downloading` progress of one layer from its byte counter until aborted.
fn progress_ticker(
    events: UnboundedSender<PullEvent>,
    sid: String,
    total: u64,
    received: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            let now = received.load(Ordering::Relaxed);
            if now != last {
                last = now;
                let _ = events.send(PullEvent {
                    id: Some(sid.clone()),
                    status: "Downloading".into(),
                    progress: Some((now, total)),
                });
                if now >= total {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn short(digest: &str) -> String {
    hex_of(digest).chars().take(12).collect()
}

impl Engine {
    /// Pulls `reference` for `platform`, reporting progress on `events`; returns the
    /// image id. Nothing of a failed pull stays visible: layers are published whole,
    /// and names are recorded after the last layer.
    pub async fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        auth: Option<&RegistryAuth>,
        events: &UnboundedSender<PullEvent>,
    ) -> Result<String> {
        let registry = self
            .registry
            .clone()
            .ok_or_else(|| Error::NotSupported("this VCH has no registry access".into()))?;
        let r = Reference::parse(reference)?;
        let send = |e: PullEvent| {
            let _ = events.send(e);
        };
        // dockerd answers refused pulls as "not found", so that clients do not prompt
        // for credentials (the docker CLI does on 401); logins keep their 401.
        let remote = registry
            .resolve(&r, platform, auth)
            .await
            .map_err(|e| match e {
                Error::Unauthorized(m) => Error::Missing(m),
                e => e,
            })?;
        let shown_ref = r.tag.clone().or(r.digest.clone()).unwrap_or_default();
        send(PullEvent::status(
            Some(&shown_ref),
            format!("Pulling from {}", r.familiar_name_path()),
        ));
        let config: crate::images::ImageConfig = serde_json::from_slice(&remote.config_raw)
            .map_err(|e| Error::InvalidArgument(format!("malformed image config: {e}")))?;
        if config.rootfs.diff_ids.len() != remote.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "image {r} is malformed: {} layers in the manifest, {} diff ids in the config",
                remote.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        // Chain ids and what is already here.
        let mut chain = Vec::new();
        let mut parent: Option<String> = None;
        for l in &remote.layers {
            let id = chain_id(parent.as_deref(), &l.diff_id);
            parent = Some(id.clone());
            chain.push(hex_of(&id).to_string());
        }
        let mut present = Vec::new();
        for (l, id) in remote.layers.iter().zip(&chain) {
            // The size of a layer already in the store, kept for the image's size.
            let have = self.images.layer(id).await?.map(|rec| rec.size);
            present.push(have);
            send(PullEvent::status(
                Some(&short(&l.digest)),
                if have.is_some() {
                    "Already exists"
                } else {
                    "Pulling fs layer"
                },
            ));
        }
        let mut added = Vec::new();
        let fetched = self
            .fetch_layers(
                &registry, &r, &remote, &chain, &present, auth, events, &mut added,
            )
            .await;
        let size = match fetched {
            Ok(size) => size,
            Err(e) => {
                self.discard_layers(&added).await;
                return Err(e);
            }
        };
        self.record_pulled(&r, &remote, chain, size, events).await
    }

    /// Nothing of a failed pull or load is kept: drops the layers it `added` that no
    /// image uses, top first.
    pub(crate) async fn discard_layers(&self, added: &[String]) {
        let used: std::collections::BTreeSet<String> = self
            .images
            .images()
            .await
            .map(|v| v.into_iter().flat_map(|i| i.layers).collect())
            .unwrap_or_default();
        for l in added.iter().rev() {
            if !used.contains(l)
                && let Err(err) = self.images.delete_layer(l).await
            {
                tracing::warn!(layer = %l, error = %err, "cannot remove a layer of a failed pull or load");
            }
        }
    }

    /// Streams the missing layers into the store, in order; returns the image's size.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_layers(
        &self,
        registry: &Arc<dyn Registry>,
        r: &Reference,
        remote: &RemoteImage,
        chain: &[String],
        present: &[Option<u64>],
        auth: Option<&RegistryAuth>,
        events: &UnboundedSender<PullEvent>,
        added: &mut Vec<String>,
    ) -> Result<u64> {
        let send = |e: PullEvent| {
            let _ = events.send(e);
        };
        let missing: Vec<usize> = (0..remote.layers.len())
            .filter(|i| present[*i].is_none())
            .collect();
        // The first missing layer streams straight into its disk; the others download
        // meanwhile (at most MAX_PARALLEL_DOWNLOADS at a time, as dockerd) into spool
        // files, verified as they arrive, and are unpacked in order once their turn comes.
        let spool = tempfile::Builder::new()
            .prefix("vic-pull-")
            .tempdir()
            .map_err(|e| Error::io("make a spool folder for the pull", e))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_DOWNLOADS));
        let mut downloads = std::collections::BTreeMap::new();
        let mut tickers = Vec::new();
        let counters: Vec<Arc<AtomicU64>> = remote
            .layers
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        for &i in &missing {
            let l = &remote.layers[i];
            tickers.push(progress_ticker(
                events.clone(),
                short(&l.digest),
                l.size,
                counters[i].clone(),
            ));
            if Some(&i) == missing.first() {
                continue;
            }
            let (registry, r, l, auth) = (registry.clone(), r.clone(), l.clone(), auth.cloned());
            let (slots, received) = (slots.clone(), counters[i].clone());
            let path = spool.path().join(format!("layer-{i}"));
            std::fs::File::create(&path).map_err(|e| Error::io("create a layer spool file", e))?;
            let growing = Arc::new(SpoolState {
                received: received.clone(),
                end: std::sync::Mutex::new(None),
                changed: std::sync::Condvar::new(),
            });
            let events = events.clone();
            let state = growing.clone();
            let job_path = path.clone();
            let job = tokio::spawn(async move {
                let result = async {
                    let _slot = slots
                        .acquire_owned()
                        .await
                        .map_err(|_| Error::Internal("download slots closed".into()))?;
                    registry
                        .download_layer(&r, &l, auth.as_ref(), received, &job_path)
                        .await
                }
                .await;
                if result.is_ok() {
                    for s in ["Verifying Checksum", "Download complete"] {
                        let _ = events.send(PullEvent::status(Some(&short(&l.digest)), s));
                    }
                }
                state.finish(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                result
            });
            downloads.insert(i, (job, path, growing));
        }
        let stop_all = |downloads: &std::collections::BTreeMap<usize, Download>,
                        tickers: &[tokio::task::JoinHandle<()>]| {
            for (job, _, state) in downloads.values() {
                job.abort();
                state.finish(Err("pull stopped".into()));
            }
            for t in tickers {
                t.abort();
            }
        };
        let mut size = 0;
        for (i, (l, id)) in remote.layers.iter().zip(chain).enumerate() {
            if let Some(have) = present[i] {
                size += have;
                continue;
            }
            let sid = short(&l.digest);
            // A layer downloading meanwhile is unpacked from its spool file as it grows.
            let content = match downloads.get(&i) {
                None => registry.open_layer(r, l, auth, counters[i].clone()).await,
                Some((_, path, state)) => std::fs::File::open(path)
                    .map_err(|e| Error::io("open a layer spool file", e))
                    .and_then(|file| {
                        registry.open_downloaded(
                            l,
                            Box::new(GrowingReader {
                                file,
                                pos: 0,
                                state: state.clone(),
                            }),
                        )
                    }),
            };
            let content = match content {
                Ok(c) => c,
                Err(e) => {
                    stop_all(&downloads, &tickers);
                    return Err(e);
                }
            };
            let parent = if i == 0 {
                None
            } else {
                Some(chain[i - 1].as_str())
            };
            let result = self.images.add_layer(id, parent, &l.diff_id, content).await;
            let rec = match result {
                Ok(rec) => {
                    added.push(id.clone());
                    rec
                }
                // Another pull published the same layer meanwhile.
                Err(e) => match self.images.layer(id).await {
                    Ok(Some(rec)) => rec,
                    _ => {
                        stop_all(&downloads, &tickers);
                        return Err(e);
                    }
                },
            };
            size += rec.size;
            if Some(&i) == missing.first() {
                for s in ["Verifying Checksum", "Download complete"] {
                    send(PullEvent::status(Some(&sid), s));
                }
            }
            send(PullEvent {
                id: Some(sid.clone()),
                status: "Extracting".into(),
                progress: Some((l.size, l.size)),
            });
            send(PullEvent::status(Some(&sid), "Pull complete"));
        }
        stop_all(&downloads, &tickers);
        Ok(size)
    }

    /// Records a pulled image and its names, and reports the end of the pull.
    async fn record_pulled(
        &self,
        r: &Reference,
        remote: &RemoteImage,
        chain: Vec<String>,
        size: u64,
        events: &UnboundedSender<PullEvent>,
    ) -> Result<String> {
        let send = |e: PullEvent| {
            let _ = events.send(e);
        };
        let id = remote.config_digest.clone();
        let existed = self.images.image(&id).await?;
        let mut manifest_digests = existed
            .as_ref()
            .map(|e| e.manifest_digests.clone())
            .unwrap_or_default();
        manifest_digests.insert(r.full_name(), remote.digest.clone());
        let config_raw = String::from_utf8(remote.config_raw.clone())
            .map_err(|_| Error::InvalidArgument("image config is not UTF-8".into()))?;
        self.images
            .put_image(&ImageRecord {
                id: id.clone(),
                config: config_raw,
                layers: chain,
                manifest_digests,
                size,
            })
            .await?;
        let key = index_key(r);
        let previous = self
            .images
            .update_repositories(|m| Ok(m.insert(key.clone(), id.clone())))
            .await?;
        send(PullEvent::status(
            None,
            format!("Digest: {}", remote.digest),
        ));
        let status = if previous.as_deref() == Some(id.as_str()) && existed.is_some() {
            format!("Status: Image is up to date for {r}")
        } else {
            format!("Status: Downloaded newer image for {r}")
        };
        send(PullEvent::status(None, status));
        info!(reference = %r, image = %id, "pulled");
        self.events.emit(
            "image",
            "pull",
            &r.to_string(),
            &[("name", &r.familiar_name())],
        );
        Ok(id)
    }

    /// Checks credentials against a registry and keeps them on the VCH's datastore
    /// (`kvStores/registry-auth.json`) for later pulls that bring none.
    pub async fn login_and_store(&self, server: &str, auth: &RegistryAuth) -> Result<()> {
        let client = self
            .registry
            .clone()
            .ok_or_else(|| Error::NotSupported("this VCH has no registry access".into()))?;
        let registry = normalize_server(server);
        client.login(&registry, auth).await?;
        let path = self.vch.store.join("kvStores/registry-auth.json");
        let _guard = self.auth_lock.lock().await;
        let mut all = self.read_auth_file().await?;
        all.insert(
            registry.clone(),
            StoredAuth {
                username: auth.username.clone(),
                password: auth.password.clone(),
            },
        );
        self.backend
            .storage
            .write_file(&path, &serde_json::to_vec(&all)?)
            .await?;
        info!(%registry, user = %auth.username, "registry credentials stored");
        Ok(())
    }

    async fn read_auth_file(&self) -> Result<BTreeMap<String, StoredAuth>> {
        let path = self.vch.store.join("kvStores/registry-auth.json");
        if !self.backend.storage.exists(&path).await? {
            return Ok(BTreeMap::new());
        }
        Ok(serde_json::from_slice(
            &self.backend.storage.read_file(&path).await?,
        )?)
    }

    /// The credentials stored for the registry of `reference`, if any.
    pub async fn stored_auth(&self, reference: &str) -> Result<Option<RegistryAuth>> {
        let r = Reference::parse(reference)?;
        Ok(self
            .read_auth_file()
            .await?
            .remove(&r.registry)
            .map(|s| RegistryAuth {
                username: s.username,
                password: s.password,
            }))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAuth {
    username: String,
    password: String,
}

/// A registry as `docker login` names it (`https://index.docker.io/v1/`, `host:port`)
/// reduced to the host and port that references use.
pub fn normalize_server(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(normalize_server("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_server("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            normalize_server("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
    }
}
