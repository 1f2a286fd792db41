//! `docker save` and `docker load`: images as tar archives in Docker's format
//! (`manifest.json`, the config as `<id>.json`, and one `layer.tar` per layer), so
//! images move in and out without a registry. Saved layer tars are the layers'
//! original bytes (the backend reproduces them), so a saved and loaded image keeps its id.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::engine::Engine;
use crate::image_ops::index_key;
use crate::images::{ImageConfig, ImageRecord, chain_id, hex_of};
use crate::reference::Reference;
use crate::{Error, Result};

/// One entry of `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Reads everything and fails at the end unless the bytes hash to `digest`.
struct DigestReader<R> {
    inner: R,
    ctx: Option<ring::digest::Context>,
    want: String,
    what: String,
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(c) = self.ctx.as_mut() {
                c.update(&buf[..n]);
            }
        } else if let Some(c) = self.ctx.take() {
            let got = format!("sha256:{}", crate::ids::hex(c.finish().as_ref()));
            if got != self.want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: content has digest {got}, the image config says {}",
                        self.what, self.want
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// Sends what is written as chunks of a streamed body, from a blocking thread.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<bytes_chunk::Chunk>,
    buf: Vec<u8>,
}

/// The chunk type of streamed archives.
pub mod bytes_chunk {
    /// One chunk of a streamed archive.
    pub type Chunk = Vec<u8>;
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx
                .blocking_send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        }
        Ok(())
    }
}

fn tar_error(e: io::Error) -> Error {
    Error::Internal(format!("cannot write the archive: {e}"))
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, data).map_err(tar_error)
}

impl Engine {
    /// Writes the images `names` as one `docker save` archive into `tx`, chunk by
    /// chunk. Every name is resolved before the first byte is sent.
    pub async fn save_images(
        self: &Arc<Self>,
        names: &[String],
        tx: tokio::sync::mpsc::Sender<bytes_chunk::Chunk>,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let mut wanted: Vec<(ImageRecord, Vec<String>)> = Vec::new();
        for name in names {
            let view = self.inspect_image(name).await?;
            // Name only what was asked for: a tag keeps its tag, an id keeps all.
            let tags = match Reference::parse(name) {
                Ok(r) if r.digest.is_none() && view.repo_tags.contains(&r.to_string()) => {
                    vec![r.to_string()]
                }
                _ => view.repo_tags.clone(),
            };
            match wanted.iter_mut().find(|(r, _)| r.id == view.record.id) {
                Some((_, t)) => t.extend(tags),
                None => wanted.push((view.record, tags)),
            }
        }
        let engine = self.clone();
        let handle = tokio::runtime::Handle::current();
        Ok(tokio::task::spawn_blocking(move || -> Result<()> {
            let mut b = tar::Builder::new(ChannelWriter {
                tx,
                buf: Vec::new(),
            });
            let mut manifest = Vec::new();
            let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            let mut written = std::collections::BTreeSet::new();
            for (record, tags) in &wanted {
                let config: ImageConfig = record.parsed_config()?;
                let mut layers = Vec::new();
                for (layer, diff_id) in record.layers.iter().zip(&config.rootfs.diff_ids) {
                    let path = format!("{layer}/layer.tar");
                    layers.push(path.clone());
                    if !written.insert(layer.clone()) {
                        continue;
                    }
                    let disk = engine.images.layer_disk(layer);
                    let storage = engine.backend.storage.clone();
                    // First pass: size, and proof that the bytes are the layer's.
                    let mut counter = DigestReader {
                        inner: handle.block_on(storage.read_layer(&disk))?,
                        ctx: Some(ring::digest::Context::new(&ring::digest::SHA256)),
                        want: diff_id.clone(),
                        what: format!("layer {layer}"),
                    };
                    let size = io::copy(&mut counter, &mut io::sink()).map_err(|e| {
                        Error::Internal(format!("cannot read back layer {layer}: {e}"))
                    })?;
                    append_bytes(&mut b, &format!("{layer}/VERSION"), b"1.0")?;
                    append_bytes(
                        &mut b,
                        &format!("{layer}/json"),
                        serde_json::json!({ "id": layer }).to_string().as_bytes(),
                    )?;
                    let mut h = tar::Header::new_gnu();
                    h.set_size(size);
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_entry_type(tar::EntryType::Regular);
                    let content = handle.block_on(storage.read_layer(&disk))?;
                    b.append_data(&mut h, &path, content).map_err(tar_error)?;
                }
                let config_name = format!("{}.json", hex_of(&record.id));
                append_bytes(&mut b, &config_name, record.config.as_bytes())?;
                for t in tags {
                    if let Some((repo, tag)) = t.rsplit_once(':') {
                        repositories.entry(repo.to_string()).or_default().insert(
                            tag.to_string(),
                            record.layers.last().cloned().unwrap_or_default(),
                        );
                    }
                }
                manifest.push(ManifestEntry {
                    config: config_name,
                    repo_tags: Some(tags.clone()),
                    layers,
                });
            }
            append_bytes(&mut b, "manifest.json", &serde_json::to_vec(&manifest)?)?;
            append_bytes(&mut b, "repositories", &serde_json::to_vec(&repositories)?)?;
            let mut w = b.into_inner().map_err(tar_error)?;
            w.flush().map_err(tar_error)?;
            Ok(())
        }))
    }

    /// Loads a `docker save` archive read from `archive` (on a blocking thread): every
    /// layer is checked against the config's diff ids before it is published, and names
    /// are set last. Returns the names (or ids) loaded.
    pub async fn load_images(
        self: &Arc<Self>,
        archive: Box<dyn Read + Send>,
    ) -> Result<Vec<String>> {
        let scratch = tempfile::Builder::new()
            .prefix("vic-load-")
            .tempdir()
            .map_err(|e| Error::io("make a scratch folder for docker load", e))?;
        let root = scratch.path().to_path_buf();
        let unpack_root = root.clone();
        tokio::task::spawn_blocking(move || unpack_archive(archive, &unpack_root))
            .await
            .map_err(|e| Error::Internal(format!("docker load failed: {e}")))??;
        let manifest: Vec<ManifestEntry> =
            serde_json::from_slice(&std::fs::read(root.join("manifest.json")).map_err(|_| {
                Error::InvalidArgument(
                    "invalid archive: no manifest.json (is it a docker save archive?)".into(),
                )
            })?)
            .map_err(|e| Error::InvalidArgument(format!("invalid archive: manifest.json: {e}")))?;
        let mut added = Vec::new();
        let result = self.load_entries(&root, manifest, &mut added).await;
        if result.is_err() {
            self.discard_layers(&added).await;
        }
        result
    }

    async fn load_entries(
        &self,
        root: &Path,
        manifest: Vec<ManifestEntry>,
        added: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let root = root.to_path_buf();
        let mut loaded = Vec::new();
        for entry in manifest {
            let config_raw = std::fs::read(safe_join(&root, &entry.config)?).map_err(|e| {
                Error::InvalidArgument(format!("invalid archive: {}: {e}", entry.config))
            })?;
            let id = crate::digest::sha256_digest(&config_raw);
            let config: ImageConfig = serde_json::from_slice(&config_raw).map_err(|e| {
                Error::InvalidArgument(format!("invalid archive: image config: {e}"))
            })?;
            if config.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(Error::InvalidArgument(format!(
                    "invalid archive: {} layers for {} diff ids",
                    entry.layers.len(),
                    config.rootfs.diff_ids.len()
                )));
            }
            // Validate every reference before anything is stored.
            let tags = entry
                .repo_tags
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>>>()?;
            let mut parent: Option<String> = None;
            let mut chain = Vec::new();
            let mut size = 0;
            for (file, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
                let layer = hex_of(&chain_id(
                    parent.as_deref().map(|p| format!("sha256:{p}")).as_deref(),
                    diff_id,
                ))
                .to_string();
                if let Some(rec) = self.images.layer(&layer).await? {
                    size += rec.size;
                } else {
                    let f = std::fs::File::open(safe_join(&root, file)?).map_err(|e| {
                        Error::InvalidArgument(format!("invalid archive: {file}: {e}"))
                    })?;
                    let content = Box::new(DigestReader {
                        inner: io::BufReader::with_capacity(256 * 1024, f),
                        ctx: Some(ring::digest::Context::new(&ring::digest::SHA256)),
                        want: diff_id.clone(),
                        what: format!("layer {file}"),
                    });
                    let rec = self
                        .images
                        .add_layer(&layer, parent.as_deref(), diff_id, content)
                        .await?;
                    added.push(layer.clone());
                    size += rec.size;
                }
                chain.push(layer.clone());
                parent = Some(layer);
            }
            let existing = self.images.image(&id).await?;
            let config_str = String::from_utf8(config_raw)
                .map_err(|_| Error::InvalidArgument("image config is not UTF-8".into()))?;
            self.images
                .put_image(&ImageRecord {
                    id: id.clone(),
                    config: config_str,
                    layers: chain,
                    manifest_digests: existing.map(|e| e.manifest_digests).unwrap_or_default(),
                    size,
                })
                .await?;
            if tags.is_empty() {
                loaded.push(format!("Loaded image ID: {id}"));
            }
            for t in tags {
                self.images
                    .update_repositories(|m| {
                        m.insert(index_key(&t), id.clone());
                        Ok(())
                    })
                    .await?;
                loaded.push(format!("Loaded image: {t}"));
            }
            info!(image = %id, "loaded");
            self.events.emit("image", "load", &id, &[("name", &id)]);
        }
        Ok(loaded)
    }
}

/// `root` joined with an archive path that must stay inside it.
fn safe_join(root: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::InvalidArgument(format!(
            "invalid archive: bad path {name:?}"
        )));
    }
    Ok(root.join(rel))
}

/// Unpacks the regular files of a `docker save` archive under `root`; other entry
/// kinds are skipped, and names that would leave `root` are refused.
fn unpack_archive(archive: Box<dyn Read + Send>, root: &Path) -> Result<()> {
    let mut peek = io::BufReader::new(archive);
    let head = io::BufRead::fill_buf(&mut peek).map_err(|e| Error::io("read the archive", e))?;
    if head.starts_with(&[0x1f, 0x8b]) || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(Error::InvalidArgument(
            "compressed archives are not supported by vic's docker load; decompress it first"
                .into(),
        ));
    }
    let mut a = tar::Archive::new(peek);
    let entries = a
        .entries()
        .map_err(|e| Error::InvalidArgument(format!("invalid archive: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| Error::InvalidArgument(format!("invalid archive: {e}")))?;
        let kind = e.header().entry_type();
        let name = e
            .path()
            .map_err(|e| Error::InvalidArgument(format!("invalid archive: {e}")))?
            .to_string_lossy()
            .into_owned();
        if kind.is_dir() || !kind.is_file() {
            continue;
        }
        let dest = safe_join(root, name.trim_start_matches("./"))?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|err| Error::io("unpack the archive", err))?;
        }
        let mut f =
            std::fs::File::create(&dest).map_err(|err| Error::io("unpack the archive", err))?;
        io::copy(&mut e, &mut f)
            .map_err(|err| Error::InvalidArgument(format!("invalid archive: {name}: {err}")))?;
    }
    Ok(())
}
