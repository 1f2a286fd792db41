//! What the engine does with images already in the store: resolve names, list,
//! inspect, history, tag, remove and prune. Pulling and loading live in [`crate::pull`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::Engine;
use crate::images::{ImageConfig, ImageRecord, hex_of};
use crate::model::keys;
use crate::reference::Reference;
use crate::{Error, Result};

/// An image with the names it is known by, as `docker images` and `inspect` need it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageView {
    /// The stored record.
    pub record: ImageRecord,
    /// Its parsed config.
    pub config: ImageConfig,
    /// `busybox:latest` style names.
    pub repo_tags: Vec<String>,
    /// `busybox@sha256:…` style names.
    pub repo_digests: Vec<String>,
}

/// One line of what `docker rmi` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RemovedImage {
    /// A name was removed.
    Untagged(String),
    /// An image or layer was deleted.
    Deleted(String),
}

/// The key of a reference in the repository index.
pub fn index_key(r: &Reference) -> String {
    match (&r.tag, &r.digest) {
        (_, Some(d)) => format!("{}@{d}", r.full_name()),
        (Some(t), None) => format!("{}:{t}", r.full_name()),
        (None, None) => format!("{}:latest", r.full_name()),
    }
}

/// The familiar form of an index key (`busybox:latest`).
fn familiar(key: &str) -> String {
    Reference::parse(key)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| key.to_string())
}

impl Engine {
    /// Resolves an image name as dockerd does: a full or `sha256:` id, a reference in
    /// the repository index, then a unique id prefix.
    pub async fn resolve_image(&self, name: &str) -> Result<String> {
        let hexpart = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = !hexpart.is_empty() && hexpart.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex && hexpart.len() == 64 {
            let id = format!("sha256:{hexpart}");
            if self.images.image(&id).await?.is_some() {
                return Ok(id);
            }
        }
        if let Ok(r) = Reference::parse(name)
            && let Some(id) = self.images.repositories().await?.get(&index_key(&r))
        {
            return Ok(id.clone());
        }
        if is_hex {
            let ids: Vec<String> = self
                .images
                .images()
                .await?
                .into_iter()
                .map(|r| r.id)
                .filter(|id| hex_of(id).starts_with(hexpart))
                .collect();
            match ids.len() {
                1 => return Ok(ids[0].clone()),
                0 => {}
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "multiple images found with provided prefix: {name}"
                    )));
                }
            }
        }
        let shown = Reference::parse(name)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| name.to_string());
        Err(Error::not_found("image", shown))
    }

    fn view(record: ImageRecord, index: &BTreeMap<String, String>) -> Result<ImageView> {
        let config = record.parsed_config()?;
        let mut repo_tags = Vec::new();
        let mut repo_digests = BTreeSet::new();
        for (key, id) in index {
            if *id != record.id {
                continue;
            }
            if key.contains('@') {
                repo_digests.insert(familiar(key));
            } else {
                repo_tags.push(familiar(key));
            }
        }
        for (repo, digest) in &record.manifest_digests {
            if let Ok(r) = Reference::parse(repo) {
                repo_digests.insert(format!("{}@{digest}", r.familiar_name()));
            }
        }
        Ok(ImageView {
            record,
            config,
            repo_tags,
            repo_digests: repo_digests.into_iter().collect(),
        })
    }

    /// Every image with its names.
    pub async fn list_images(&self) -> Result<Vec<ImageView>> {
        let index = self.images.repositories().await?;
        let mut out = Vec::new();
        for r in self.images.images().await? {
            out.push(Self::view(r, &index)?);
        }
        Ok(out)
    }

    /// One image by name or id.
    pub async fn inspect_image(&self, name: &str) -> Result<ImageView> {
        let id = self.resolve_image(name).await?;
        let record = self
            .images
            .image(&id)
            .await?
            .ok_or_else(|| Error::not_found("image", name))?;
        Self::view(record, &self.images.repositories().await?)
    }

    /// The disk of a layer, as `[ds] VIC/<vch>/images/<id>/<id>.vmdk`.
    pub fn layer_disk_path(&self, layer: &str) -> String {
        self.images.layer_disk(layer).to_string()
    }

    /// Layer sizes of an image, bottom first.
    pub async fn layer_sizes(&self, record: &ImageRecord) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for l in &record.layers {
            out.push(self.images.layer(l).await?.map(|r| r.size).unwrap_or(0));
        }
        Ok(out)
    }

    /// Adds the name `repo:tag` to an image.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let id = self.resolve_image(source).await?;
        let target = if tag.is_empty() {
            repo.to_string()
        } else {
            format!("{repo}:{tag}")
        };
        let r = Reference::parse(&target)?;
        if r.digest.is_some() {
            return Err(Error::InvalidArgument(format!(
                "refusing to create a tag with a digest reference: {target}"
            )));
        }
        self.images
            .update_repositories(|m| {
                m.insert(index_key(&r), id.clone());
                Ok(())
            })
            .await?;
        self.events
            .emit("image", "tag", &id, &[("name", &r.to_string())]);
        Ok(())
    }

    /// Containers (by id) whose VM uses image `id`, with whether they run.
    async fn image_users(&self, id: &str) -> Result<Vec<(String, bool)>> {
        Ok(self
            .container_vms()
            .await?
            .into_iter()
            .filter(|vm| vm.extra_config.get(keys::IMAGE_ID).map(String::as_str) == Some(id))
            .map(|vm| {
                (
                    vm.extra_config
                        .get(keys::CONTAINER_ID)
                        .cloned()
                        .unwrap_or_default(),
                    vm.power_state == crate::provider::PowerState::PoweredOn,
                )
            })
            .collect())
    }

    /// Removes an image name, or the image itself, as `docker rmi` does.
    pub async fn remove_image(
        &self,
        name: &str,
        force: bool,
        prune: bool,
    ) -> Result<Vec<RemovedImage>> {
        let removed = self.remove_image_inner(name, force, prune).await?;
        // The first deletion is the image; the ones after it are its layers.
        let mut image_deleted = false;
        for r in &removed {
            match r {
                RemovedImage::Untagged(n) => self.events.emit("image", "untag", n, &[("name", n)]),
                RemovedImage::Deleted(d) if !image_deleted => {
                    image_deleted = true;
                    self.events.emit("image", "delete", d, &[("name", d)]);
                }
                RemovedImage::Deleted(_) => {}
            }
        }
        Ok(removed)
    }

    async fn remove_image_inner(
        &self,
        name: &str,
        force: bool,
        prune: bool,
    ) -> Result<Vec<RemovedImage>> {
        let id = self.resolve_image(name).await?;
        let short = &hex_of(&id)[..12];
        let index = self.images.repositories().await?;
        let names: Vec<String> = index
            .iter()
            .filter(|(_, v)| **v == id)
            .map(|(k, _)| k.clone())
            .collect();
        // A name (not an id) that is one of several: only untag it.
        let by_name = Reference::parse(name)
            .ok()
            .map(|r| index_key(&r))
            .filter(|k| names.contains(k));
        if let Some(key) = &by_name {
            let tags = names.iter().filter(|k| !k.contains('@')).count();
            if tags > 1 || key.contains('@') && tags > 0 {
                return self.untag(&id, key).await;
            }
        } else if !force && names.iter().filter(|k| !k.contains('@')).count() > 1 {
            return Err(Error::Conflict(format!(
                "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
            )));
        }
        let users = self.image_users(&id).await?;
        if let Some((c, _)) = users.iter().find(|(_, running)| *running) {
            return Err(Error::Conflict(format!(
                "conflict: unable to delete {short} (cannot be forced) - image is being used by running container {}",
                crate::ids::short_id(c)
            )));
        }
        if let Some((c, _)) = users.first()
            && !force
        {
            return Err(Error::Conflict(format!(
                "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}",
                crate::ids::short_id(c)
            )));
        }
        let mut out = Vec::new();
        self.images
            .update_repositories(|m| {
                m.retain(|k, v| {
                    if *v == id {
                        out.push(RemovedImage::Untagged(familiar(k)));
                        false
                    } else {
                        true
                    }
                });
                Ok(())
            })
            .await?;
        if !users.is_empty() {
            // Forced with stopped users: the image stays, nameless, as dockerd does.
            return Ok(out);
        }
        let record = self.images.image(&id).await?;
        self.images.delete_image(&id).await?;
        out.push(RemovedImage::Deleted(id.clone()));
        if prune && let Some(record) = record {
            out.extend(self.prune_layers(&record.layers).await?);
        }
        Ok(out)
    }

    /// Removes the name `key` of image `id`; when it was the last tag of its repository,
    /// the repository's digest names of the image go too, as dockerd does.
    async fn untag(&self, id: &str, key: &str) -> Result<Vec<RemovedImage>> {
        let repo = key
            .split_once('@')
            .map(|(r, _)| r)
            .or_else(|| key.rsplit_once(':').map(|(r, _)| r))
            .unwrap_or(key)
            .to_string();
        let mut out = vec![RemovedImage::Untagged(familiar(key))];
        let last_of_repo = self
            .images
            .update_repositories(|m| {
                m.remove(key);
                let tag_left = m.iter().any(|(k, v)| {
                    v == id && !k.contains('@') && k.rsplit_once(':').map(|(r, _)| r) == Some(&repo)
                });
                if !tag_left {
                    m.retain(|k, v| {
                        let gone = v == id && k.split_once('@').map(|(r, _)| r) == Some(&repo);
                        if gone {
                            out.push(RemovedImage::Untagged(familiar(k)));
                        }
                        !gone
                    });
                }
                Ok(!tag_left)
            })
            .await?;
        if last_of_repo
            && let Some(mut record) = self.images.image(id).await?
            && let Some(digest) = record.manifest_digests.remove(&repo)
        {
            let shown = Reference::parse(&repo)
                .map(|r| r.familiar_name())
                .unwrap_or_else(|_| repo.clone());
            let name = RemovedImage::Untagged(format!("{shown}@{digest}"));
            if !out.contains(&name) {
                out.push(name);
            }
            self.images.put_image(&record).await?;
        }
        Ok(out)
    }

    /// Deletes, top first, the layers of `layers` that no remaining image uses.
    async fn prune_layers(&self, layers: &[String]) -> Result<Vec<RemovedImage>> {
        let used: BTreeSet<String> = self
            .images
            .images()
            .await?
            .into_iter()
            .flat_map(|r| r.layers)
            .collect();
        let mut out = Vec::new();
        for l in layers.iter().rev() {
            if used.contains(l) {
                break; // everything below is shared too
            }
            self.images.delete_layer(l).await?;
            out.push(RemovedImage::Deleted(format!("sha256:{l}")));
        }
        Ok(out)
    }

    /// Removes images without names (all unused ones when `all`), as `docker image prune`.
    pub async fn prune_images(&self, all: bool) -> Result<(Vec<RemovedImage>, u64)> {
        let index = self.images.repositories().await?;
        let named: BTreeSet<&String> = index.values().collect();
        let mut out = Vec::new();
        let mut reclaimed = 0;
        for r in self.images.images().await? {
            let dangling = !named.contains(&r.id);
            if !(dangling || all) || !self.image_users(&r.id).await?.is_empty() {
                continue;
            }
            let sizes = self.layer_sizes(&r).await?;
            let before = out.len();
            out.extend(self.remove_image(&r.id, true, true).await?);
            // Count what went: the layers deleted by this removal.
            let deleted_layers = out[before..]
                .iter()
                .filter(|e| matches!(e, RemovedImage::Deleted(d) if *d != r.id))
                .count();
            reclaimed += sizes.iter().rev().take(deleted_layers).sum::<u64>();
        }
        Ok((out, reclaimed))
    }
}
