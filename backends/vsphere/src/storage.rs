//! The [`Storage`] provider on vSphere: datastore folders and files through the
//! `FileManager`, the datastore browser and `/folder` HTTP transfers, and virtual disks
//! through the `VirtualDiskManager`.
//!
//! Disks: vSphere writes a disk's descriptor when it creates the disk; vcsim creates an
//! empty file. So after creating a disk the backend reads the descriptor and, when it
//! is not one (vcsim), writes its own: capacity, content id and, for a child disk, the
//! parent's content id and `parentFileNameHint`. That is where the parent chain is
//! recorded on the datastore, as on VMFS.
//!
//! Layers: a VCH appliance on vSphere attaches a layer's disk, makes a filesystem on
//! it, unpacks the tar and detaches it (see the README). Here the layer tar is kept as a
//! datastore file beside the disk (`<stem>.tar`), uploaded over HTTP after its entries
//! were checked, and read back byte for byte.

use std::io::Read;

use async_trait::async_trait;
use tracing::{Instrument, info_span};
use vic_core::provider::{DatastoreInfo, DiskInfo, DiskSpec, FileEntry, Storage};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::client::{PropertySpec, filter_spec, traversal};
use crate::fault;
use crate::vmdk;
use crate::xml::Element;
use crate::{Shared, VsphereBackend};

/// Largest layer tar kept as one datastore file.
const MAX_LAYER: u64 = 8 << 30;

/// The datastore file holding a layer's tar: `<stem>.tar` beside `<stem>.vmdk`.
pub(crate) fn layer_file(disk: &DsPath) -> DsPath {
    let name = disk.file_name();
    let stem = name.strip_suffix(".vmdk").unwrap_or(name);
    disk.parent().join(format!("{stem}.tar"))
}

/// Maps a file fault onto the engine's error with the datastore path (vcsim names host
/// paths in its faults).
fn file_error(e: fault::Error, path: &DsPath) -> Error {
    if e.is_fault("FileNotFound") || matches!(e, fault::Error::Status { status: 404, .. }) {
        return Error::not_found("file", path.to_string());
    }
    if e.is_fault("FileAlreadyExists") {
        return Error::Conflict(format!("file {path} already exists"));
    }
    e.into()
}

/// Checks a layer tar's entries: every name and hard link target must stay inside the
/// layer. Returns the bytes of content it unpacks to.
fn check_layer(data: &[u8], disk: &DsPath) -> Result<u64> {
    let bad = |why: String| Error::InvalidArgument(format!("layer for {disk}: {why}"));
    let inside = |p: &std::path::Path| {
        p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    };
    let mut archive = tar::Archive::new(data);
    let mut bytes = 0u64;
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if !inside(&path) {
            return Err(bad(format!("entry {} leaves the layer", path.display())));
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            let target = entry.link_name().map_err(|e| bad(e.to_string()))?;
            if let Some(target) = target.filter(|t| !inside(t)) {
                return Err(bad(format!(
                    "hard link {} points out of the layer ({})",
                    path.display(),
                    target.display()
                )));
            }
        }
        if kind.is_file() {
            bytes = bytes.saturating_add(entry.size());
        }
    }
    Ok(bytes)
}

impl Shared {
    pub(crate) fn dc(&self) -> &str {
        &self.inv.dc_name
    }

    fn file_manager(&self) -> Result<MoRef> {
        self.client
            .content()
            .file_manager
            .clone()
            .ok_or_else(|| Error::NotSupported("the server has no file manager".into()))
    }

    fn disk_manager(&self) -> Result<MoRef> {
        self.client
            .content()
            .virtual_disk_manager
            .clone()
            .ok_or_else(|| Error::NotSupported("the server has no virtual disk manager".into()))
    }

    fn browser(&self, ds: &str) -> Result<MoRef> {
        self.inv
            .datastores
            .get(ds)
            .and_then(|d| d.browser.clone())
            .ok_or_else(|| Error::not_found("datastore", ds.to_string()))
    }

    /// `SearchDatastore_Task` in `folder` for names matching `pattern`.
    async fn search(&self, folder: &DsPath, pattern: &str) -> Result<Vec<FileEntry>> {
        let browser = self.browser(&folder.datastore)?;
        let spec = Element::new("searchSpec")
            .with(
                Element::new("details")
                    .with_text("fileType", "true")
                    .with_text("fileSize", "true")
                    .with_text("modification", "false")
                    .with_text("fileOwner", "false"),
            )
            .with_text("matchPattern", pattern);
        let mut dir = folder.to_string();
        if !folder.path.is_empty() {
            dir.push('/');
        }
        let res = self
            .client
            .run_task(
                Element::new("SearchDatastore_Task")
                    .with_moref("_this", &browser)
                    .with_text("datastorePath", dir)
                    .with(spec),
            )
            .await
            .map_err(|e| file_error(e, folder))?;
        let mut out: Vec<FileEntry> = res
            .iter()
            .flat_map(|r| r.children_named("file"))
            .map(|f| {
                let is_dir = f.type_name() == "FolderFileInfo";
                FileEntry {
                    name: f.text_of("path").unwrap_or_default().to_string(),
                    is_dir,
                    size: if is_dir {
                        0
                    } else {
                        f.text_of("fileSize")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes a file or folder (`DeleteDatastoreFile_Task`).
    pub(crate) async fn delete_path(&self, path: &DsPath) -> Result<()> {
        let fm = self.file_manager()?;
        self.client
            .run_task(
                Element::new("DeleteDatastoreFile_Task")
                    .with_moref("_this", &fm)
                    .with_text("name", path.to_string())
                    .with_moref("datacenter", &self.inv.datacenter),
            )
            .await
            .map_err(|e| {
                // vcsim answers a missing file with CannotDeleteFile naming it.
                if e.is_fault("CannotDeleteFile") || e.is_fault("FileNotFound") {
                    Error::not_found("file", path.to_string())
                } else {
                    file_error(e, path)
                }
            })?;
        Ok(())
    }

    /// Reads and parses a disk's descriptor.
    pub(crate) async fn read_disk(&self, path: &DsPath) -> Result<vmdk::Descriptor> {
        path.validate()?;
        let bytes =
            self.client
                .download(self.dc(), path)
                .await
                .map_err(|e| match file_error(e, path) {
                    Error::NotFound { .. } => Error::not_found("disk", path.to_string()),
                    e => e,
                })?;
        if bytes.len() as u64 > vmdk::MAX_DESCRIPTOR {
            return Err(Error::InvalidArgument(format!(
                "{path} is not a virtual disk"
            )));
        }
        vmdk::parse(path, &String::from_utf8_lossy(&bytes))
    }

    /// Makes sure the disk at `path` has a descriptor that records its size and parent:
    /// one written by the server is kept; an empty file (vcsim) gets ours.
    pub(crate) async fn ensure_descriptor(
        &self,
        path: &DsPath,
        capacity_kb: u64,
        parent: Option<&DsPath>,
    ) -> Result<vmdk::Descriptor> {
        if let Ok(d) = self.read_disk(path).await
            && d.parent.as_ref() == parent
        {
            return Ok(d);
        }
        let parent = match parent {
            Some(p) => Some((p, self.read_disk(p).await?.cid)),
            None => None,
        };
        let cid = vmdk::new_cid();
        let text = vmdk::render(path, capacity_kb, cid, parent);
        self.client
            .upload(self.dc(), path, text.clone().into_bytes())
            .await
            .map_err(|e| file_error(e, path))?;
        vmdk::parse(path, &text)
    }
}

#[async_trait]
impl Storage for VsphereBackend {
    async fn datastores(&self) -> Result<Vec<DatastoreInfo>> {
        let s = &self.shared;
        let objs = s
            .client
            .retrieve(filter_spec(
                "specSet",
                &[PropertySpec {
                    kind: "Datastore".into(),
                    paths: [
                        "name",
                        "summary.url",
                        "summary.type",
                        "summary.capacity",
                        "summary.freeSpace",
                    ]
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                }],
                &s.inv.datacenter,
                true,
                vec![traversal("ds", "Datacenter", "datastore", &[])],
            ))
            .await?;
        let num = |o: &crate::client::ObjectContent, p: &str| {
            o.text(p)
                .and_then(|t| t.trim().parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as u64
        };
        let mut out: Vec<DatastoreInfo> = objs
            .iter()
            .filter_map(|o| {
                Some(DatastoreInfo {
                    reference: o.obj.clone()?,
                    name: o.text("name")?.to_string(),
                    url: o.text("summary.url").unwrap_or_default().to_string(),
                    kind: o.text("summary.type").unwrap_or_default().to_string(),
                    capacity: num(o, "summary.capacity"),
                    free_space: num(o, "summary.freeSpace"),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn make_dir(&self, path: &DsPath) -> Result<()> {
        let s = &self.shared;
        path.validate()?;
        s.browser(&path.datastore)?;
        if path.path.is_empty() {
            return Ok(());
        }
        let fm = s.file_manager()?;
        match s
            .client
            .call(
                Element::new("MakeDirectory")
                    .with_moref("_this", &fm)
                    .with_text("name", path.to_string())
                    .with_moref("datacenter", &s.inv.datacenter)
                    .with_text("createParentDirectories", "true"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_fault("FileAlreadyExists") => Ok(()),
            Err(e) => Err(file_error(e, path)),
        }
    }

    async fn list_dir(&self, path: &DsPath) -> Result<Vec<FileEntry>> {
        path.validate()?;
        self.shared.search(path, "*").await
    }

    async fn exists(&self, path: &DsPath) -> Result<bool> {
        path.validate()?;
        let s = &self.shared;
        s.browser(&path.datastore)?;
        if path.path.is_empty() {
            return Ok(true);
        }
        let name = path.file_name();
        // The pattern is a glob: names with glob characters are matched after listing.
        let pattern = if name.contains(['*', '?', '[', ']', '\\']) {
            "*"
        } else {
            name
        };
        match s.search(&path.parent(), pattern).await {
            Ok(entries) => Ok(entries.iter().any(|e| e.name == name)),
            Err(e) if e.is_not_found() => Ok(false),
            // The parent is a file.
            Err(Error::InvalidArgument(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn read_file(&self, path: &DsPath) -> Result<Vec<u8>> {
        path.check_not_root("read")?;
        let s = &self.shared;
        s.client
            .download(s.dc(), path)
            .instrument(info_span!("read_file", %path))
            .await
            .map_err(|e| file_error(e, path))
    }

    async fn write_file(&self, path: &DsPath, data: &[u8]) -> Result<()> {
        path.check_not_root("write")?;
        let s = &self.shared;
        s.browser(&path.datastore)?;
        s.client
            .upload(s.dc(), path, data.to_vec())
            .instrument(info_span!("write_file", %path))
            .await
            .map_err(|e| file_error(e, path))
    }

    async fn move_path(&self, from: &DsPath, to: &DsPath) -> Result<()> {
        from.check_not_root("move")?;
        to.check_not_root("replace")?;
        if to.datastore == from.datastore
            && (to.path == from.path || to.path.starts_with(&format!("{}/", from.path)))
        {
            return Err(Error::InvalidArgument(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let s = &self.shared;
        let fm = s.file_manager()?;
        s.client
            .run_task(
                Element::new("MoveDatastoreFile_Task")
                    .with_moref("_this", &fm)
                    .with_text("sourceName", from.to_string())
                    .with_moref("sourceDatacenter", &s.inv.datacenter)
                    .with_text("destinationName", to.to_string())
                    .with_moref("destinationDatacenter", &s.inv.datacenter)
                    .with_text("force", "false"),
            )
            .await
            .map_err(|e| {
                if e.is_fault("FileAlreadyExists") {
                    Error::Conflict(format!("file {to} already exists"))
                } else {
                    file_error(e, from)
                }
            })?;
        Ok(())
    }

    async fn delete(&self, path: &DsPath) -> Result<()> {
        path.check_not_root("delete")?;
        self.shared.delete_path(path).await
    }

    async fn create_disk(&self, spec: &DiskSpec) -> Result<DiskInfo> {
        let s = &self.shared;
        spec.path.validate()?;
        s.browser(&spec.path.datastore)?;
        if !spec.path.file_name().ends_with(".vmdk") {
            return Err(Error::InvalidArgument(format!(
                "disk path {} must end in .vmdk",
                spec.path
            )));
        }
        let capacity_kb = match &spec.parent {
            Some(parent) => {
                if *parent == spec.path {
                    return Err(Error::InvalidArgument(format!(
                        "disk {} cannot be its own parent",
                        spec.path
                    )));
                }
                let d = s.read_disk(parent).await?;
                if spec.capacity_kb != 0 && spec.capacity_kb < d.capacity_kb {
                    return Err(Error::InvalidArgument(format!(
                        "a child disk cannot be smaller than its parent {parent} ({} KB)",
                        d.capacity_kb
                    )));
                }
                spec.capacity_kb.max(d.capacity_kb)
            }
            None if spec.capacity_kb == 0 => {
                return Err(Error::InvalidArgument(format!(
                    "disk {} needs a capacity",
                    spec.path
                )));
            }
            None => spec.capacity_kb,
        };
        let vdm = s.disk_manager()?;
        let disk_spec = Element::typed("spec", "FileBackedVirtualDiskSpec")
            .with_text("diskType", "thin")
            .with_text("adapterType", "lsiLogic")
            .with_text("capacityKb", capacity_kb.to_string());
        s.client
            .run_task(
                Element::new("CreateVirtualDisk_Task")
                    .with_moref("_this", &vdm)
                    .with_text("name", spec.path.to_string())
                    .with_moref("datacenter", &s.inv.datacenter)
                    .with(disk_spec),
            )
            .instrument(info_span!("create_disk", path = %spec.path))
            .await
            .map_err(|e| {
                if e.is_fault("FileAlreadyExists") {
                    Error::Conflict(format!("disk {} already exists", spec.path))
                } else {
                    file_error(e, &spec.path)
                }
            })?;
        match s
            .ensure_descriptor(&spec.path, capacity_kb, spec.parent.as_ref())
            .await
        {
            Ok(d) => Ok(DiskInfo {
                path: spec.path.clone(),
                capacity_kb: d.capacity_kb,
                parent: d.parent,
            }),
            Err(e) => {
                let _ = self.delete_disk(&spec.path).await;
                Err(e)
            }
        }
    }

    async fn disk_info(&self, path: &DsPath) -> Result<DiskInfo> {
        let d = self.shared.read_disk(path).await?;
        Ok(DiskInfo {
            path: path.clone(),
            capacity_kb: d.capacity_kb,
            parent: d.parent,
        })
    }

    async fn delete_disk(&self, path: &DsPath) -> Result<()> {
        let s = &self.shared;
        path.validate()?;
        s.read_disk(path).await?;
        // A disk attached to a VM is locked on vSphere; vcsim does not lock, so look.
        if let Some(vm) = s.read_vms(None, &[]).await?.into_iter().find(|vm| {
            vm.devices
                .iter()
                .any(|d| matches!(d, vic_core::provider::Device::Disk { file, .. } if file == path))
        }) {
            return Err(Error::InvalidState(format!(
                "disk {path} is in use by VM {}",
                vm.name
            )));
        }
        let vdm = s.disk_manager()?;
        s.client
            .run_task(
                Element::new("DeleteVirtualDisk_Task")
                    .with_moref("_this", &vdm)
                    .with_text("name", path.to_string())
                    .with_moref("datacenter", &s.inv.datacenter),
            )
            .await
            .map_err(|e| file_error(e, path))?;
        match s.delete_path(&layer_file(path)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn write_layer(&self, disk: &DsPath, mut tar: Box<dyn Read + Send>) -> Result<u64> {
        let s = &self.shared;
        s.read_disk(disk).await?;
        let file = layer_file(disk);
        if self.exists(&file).await? {
            return Err(Error::Conflict(format!("disk {disk} already has content")));
        }
        let shown = disk.clone();
        let (data, bytes) = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, u64)> {
            let mut data = Vec::new();
            (&mut tar)
                .take(MAX_LAYER + 1)
                .read_to_end(&mut data)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        Error::InvalidArgument(format!("layer for {shown}: {e}"))
                    }
                    _ => Error::io(format!("read the layer for {shown}"), e),
                })?;
            if data.len() as u64 > MAX_LAYER {
                return Err(Error::InsufficientResources(format!(
                    "layer for {shown} is larger than {MAX_LAYER} bytes"
                )));
            }
            let bytes = check_layer(&data, &shown)?;
            Ok((data, bytes))
        })
        .await
        .map_err(|e| Error::Internal(format!("layer check failed: {e}")))??;
        s.client
            .upload(s.dc(), &file, data)
            .instrument(info_span!("write_layer", %disk))
            .await
            .map_err(|e| file_error(e, &file))?;
        Ok(bytes)
    }

    async fn read_layer(&self, disk: &DsPath) -> Result<Box<dyn Read + Send>> {
        let s = &self.shared;
        s.read_disk(disk).await?;
        let file = layer_file(disk);
        let data =
            s.client
                .download(s.dc(), &file)
                .await
                .map_err(|e| match file_error(e, &file) {
                    Error::NotFound { .. } => Error::not_found("layer", disk.to_string()),
                    e => e,
                })?;
        Ok(Box::new(std::io::Cursor::new(data)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tar_with(name: &str, link: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        match link {
            Some(target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, name, target).unwrap();
            }
            None => {
                h.set_size(5);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, &b"hello"[..]).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layer_entries_must_stay_inside() {
        let d = DsPath::new("ds", "l/l.vmdk");
        assert_eq!(check_layer(&tar_with("etc/hosts", None), &d).unwrap(), 5);
        assert!(check_layer(&tar_with("etc/x", Some("../../etc/passwd")), &d).is_err());
        assert_eq!(layer_file(&d), DsPath::new("ds", "l/l.tar"));
    }
}
