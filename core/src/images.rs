//! The image store of a VCH, on its image datastore in VIC's layout:
//!
//! ```text
//! [ds] VIC/<vch-id>/images/<layer-id>/<layer-id>.vmdk     a disk per layer, child of its parent layer
//! [ds] VIC/<vch-id>/images/<layer-id>/imageMetadata/layer.json
//! [ds] VIC/<vch-id>/kvStores/images/<image-id>.json       image config and manifest facts
//! [ds] VIC/<vch-id>/kvStores/repositories.json            name:tag and name@digest to image id
//! ```
//!
//! A layer's id is its chain id (sha256 over the parent's chain id and its diff id, as
//! OCI defines it), so images that share bottom layers share disks. A layer is made in
//! a temporary folder and published by one move, so a crash never leaves a partial
//! layer visible; temporary folders left by a crash are removed when the store opens.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::provider::{DiskSpec, Storage};
use crate::{DsPath, Error, Result};

/// Size of a layer disk, KiB (VIC's default base image size, 8 GiB).
pub const LAYER_DISK_KB: u64 = 8 * 1024 * 1024;

const TMP_PREFIX: &str = ".tmp-";

/// What the store keeps about one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Chain id, hex.
    pub id: String,
    /// Parent chain id, hex.
    pub parent: Option<String>,
    /// `sha256:` digest of the uncompressed tar.
    pub diff_id: String,
    /// Bytes unpacked.
    pub size: u64,
}

/// What the store keeps about one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:` digest of the config: the image id.
    pub id: String,
    /// The config JSON exactly as pulled (its digest is the id).
    pub config: String,
    /// Layer chain ids, bottom first.
    pub layers: Vec<String>,
    /// Manifest digests this image was pulled by, per repository (`docker.io/library/busybox`).
    pub manifest_digests: BTreeMap<String, String>,
    /// Sum of the layer sizes.
    pub size: u64,
}

/// The chain id of a layer with `diff_id` over a parent chain (`sha256:` form in and out).
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => format!(
            "sha256:{}",
            crate::digest::sha256_hex(format!("{p} {diff_id}").as_bytes())
        ),
    }
}

/// Strips `sha256:`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The image store of one VCH.
#[derive(Debug)]
pub struct ImageStore {
    storage: Arc<dyn Storage>,
    root: DsPath,
    /// Serializes read-modify-write of the repository index.
    index: Mutex<()>,
}

impl ImageStore {
    /// Opens the store under `root` (`[ds] VIC/<vch-id>`), creating its folders and
    /// removing what a crashed pull left behind.
    pub async fn open(storage: Arc<dyn Storage>, root: DsPath) -> Result<ImageStore> {
        for sub in ["images", "kvStores", "kvStores/images"] {
            storage.make_dir(&root.join(sub)).await?;
        }
        let store = ImageStore {
            storage,
            root,
            index: Mutex::new(()),
        };
        for e in store.storage.list_dir(&store.images_dir()).await? {
            if e.name.starts_with(TMP_PREFIX) {
                info!(folder = %e.name, "removing a partial layer left by a crash");
                if let Err(err) = store
                    .storage
                    .delete(&store.images_dir().join(&e.name))
                    .await
                {
                    warn!(folder = %e.name, error = %err, "cannot remove partial layer");
                }
            }
        }
        Ok(store)
    }

    fn images_dir(&self) -> DsPath {
        self.root.join("images")
    }

    /// The folder of layer `id` (hex chain id).
    pub fn layer_dir(&self, id: &str) -> DsPath {
        self.images_dir().join(id)
    }

    /// The disk of layer `id`.
    pub fn layer_disk(&self, id: &str) -> DsPath {
        self.layer_dir(id).join(format!("{id}.vmdk"))
    }

    fn layer_meta(dir: &DsPath) -> DsPath {
        dir.join("imageMetadata/layer.json")
    }

    /// A layer's record, if the layer is complete in the store.
    pub async fn layer(&self, id: &str) -> Result<Option<LayerRecord>> {
        let p = Self::layer_meta(&self.layer_dir(id));
        if !self.storage.exists(&p).await? {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(
            &self.storage.read_file(&p).await?,
        )?))
    }

    /// Adds layer `id` as a child of `parent`, filled from the uncompressed tar `content`.
    /// The content stream checks its own digests and fails at its end on a mismatch;
    /// any error leaves nothing behind.
    pub async fn add_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        diff_id: &str,
        content: Box<dyn Read + Send>,
    ) -> Result<LayerRecord> {
        let tmp = self.images_dir().join(format!(
            "{TMP_PREFIX}{}-{}",
            &id[..id.len().min(12)],
            &crate::ids::new_id()[..8]
        ));
        let result = async {
            self.storage.make_dir(&tmp).await?;
            let disk = tmp.join(format!("{id}.vmdk"));
            self.storage
                .create_disk(&DiskSpec {
                    path: disk.clone(),
                    capacity_kb: LAYER_DISK_KB,
                    parent: parent.map(|p| self.layer_disk(p)),
                })
                .await?;
            let size = self.storage.write_layer(&disk, content).await?;
            let record = LayerRecord {
                id: id.to_string(),
                parent: parent.map(str::to_string),
                diff_id: diff_id.to_string(),
                size,
            };
            let meta = Self::layer_meta(&tmp);
            self.storage.make_dir(&meta.parent()).await?;
            self.storage
                .write_file(&meta, &serde_json::to_vec_pretty(&record)?)
                .await?;
            self.storage.move_path(&tmp, &self.layer_dir(id)).await?;
            Ok(record)
        }
        .await;
        if result.is_err()
            && let Err(e) = self.storage.delete(&tmp).await
            && !e.is_not_found()
        {
            warn!(folder = %tmp, error = %e, "cannot remove partial layer");
        }
        result
    }

    fn image_path(&self, id: &str) -> DsPath {
        self.root
            .join(format!("kvStores/images/{}.json", hex_of(id)))
    }

    /// Stores an image record (replacing one with the same id).
    pub async fn put_image(&self, record: &ImageRecord) -> Result<()> {
        self.storage
            .write_file(&self.image_path(&record.id), &serde_json::to_vec(record)?)
            .await
    }

    /// An image by id.
    pub async fn image(&self, id: &str) -> Result<Option<ImageRecord>> {
        let p = self.image_path(id);
        if !self.storage.exists(&p).await? {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(
            &self.storage.read_file(&p).await?,
        )?))
    }

    /// Every image record.
    pub async fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("kvStores/images");
        let mut out = Vec::new();
        for e in self.storage.list_dir(&dir).await? {
            if e.is_dir || !e.name.ends_with(".json") {
                continue;
            }
            let bytes = self.storage.read_file(&dir.join(&e.name)).await?;
            match serde_json::from_slice(&bytes) {
                Ok(r) => out.push(r),
                Err(err) => warn!(file = %e.name, error = %err, "skipping unreadable image record"),
            }
        }
        Ok(out)
    }

    /// Removes an image record (its layers stay until no image uses them).
    pub async fn delete_image(&self, id: &str) -> Result<()> {
        self.storage.delete(&self.image_path(id)).await
    }

    fn repositories_path(&self) -> DsPath {
        self.root.join("kvStores/repositories.json")
    }

    /// The repository index: `registry/repo:tag` and `registry/repo@digest` to image id.
    pub async fn repositories(&self) -> Result<BTreeMap<String, String>> {
        let p = self.repositories_path();
        if !self.storage.exists(&p).await? {
            return Ok(BTreeMap::new());
        }
        Ok(serde_json::from_slice(&self.storage.read_file(&p).await?)?)
    }

    /// Changes the repository index with `f`, atomically with respect to other changes.
    pub async fn update_repositories<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.index.lock().await;
        let mut map = self.repositories().await?;
        let out = f(&mut map)?;
        self.storage
            .write_file(&self.repositories_path(), &serde_json::to_vec_pretty(&map)?)
            .await?;
        Ok(out)
    }

    /// Deletes a layer that no image uses any more.
    pub async fn delete_layer(&self, id: &str) -> Result<()> {
        self.storage.delete(&self.layer_dir(id)).await
    }

    /// The storage provider.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Missing-layer error for an id.
    pub fn missing_layer(id: &str) -> Error {
        Error::not_found("layer", id)
    }
}

/// For `#[serde(deserialize_with = "nullable")]`: `null` and a missing field both become
/// the type's default, as image configs in the wild write either.
pub fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The parts of an image config (`application/vnd.oci.image.config.v1+json`) vic reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`).
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    /// OS (`linux`).
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Defaults for containers.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The layers' diff ids.
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
    /// How the image was built.
    #[serde(default, deserialize_with = "nullable")]
    pub history: Vec<History>,
}

/// Container defaults in an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports (`80/tcp` → `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom first.
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<String>,
}

/// One history entry of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The build step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

impl ImageRecord {
    /// The parsed config.
    pub fn parsed_config(&self) -> Result<ImageConfig> {
        Ok(serde_json::from_str(&self.config)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn configs_with_nulls_parse_as_the_registry_client_reads_them() {
        let c: ImageConfig = serde_json::from_str(
            r#"{"architecture":null,"os":"linux","config":null,"history":null,
                "rootfs":{"type":null,"diff_ids":null}}"#,
        )
        .unwrap();
        assert_eq!((c.architecture.as_str(), c.os.as_str()), ("", "linux"));
        assert!(c.config.is_none() && c.history.is_empty() && c.rootfs.diff_ids.is_empty());
        let c: ImageConfig = serde_json::from_str(r#"{"rootfs":null}"#).unwrap();
        assert!(c.rootfs.kind.is_empty());
    }
}
