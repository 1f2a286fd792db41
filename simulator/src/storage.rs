//! The [`Storage`] provider: datastores as host folders, their files, and VMDK disks.
//!
//! Every datastore path is validated and resolved under its datastore's folder without
//! leaving it (see [`crate::host`]). Disks are descriptor files; the inventory keeps an
//! index of the disks the simulator created (path → size, parent) so that deleting a
//! disk that another disk names as its parent is refused without scanning datastores.
//! Deleting or moving folders keeps the index in step.

use std::fs;
use std::io::{self, Read};

use async_trait::async_trait;
use vic_core::provider::{
    DatastoreInfo, Device, DiskInfo, DiskSpec, FileEntry, PowerState, Storage,
};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::host::{Roots, ds_io, fs_space, is_missing, write_atomic};
use crate::inventory::{DiskRecord, Inventory, ds_within, kinds};
use crate::sim::{Simulator, TMP_MARK, Txn};
use vic_core::vmdk::{self, Descriptor};

/// Reads and parses the descriptor of the disk at `p`.
pub(crate) fn read_descriptor(roots: &Roots, p: &DsPath) -> Result<Descriptor> {
    let host = roots.resolve(p, true)?;
    let missing = || Error::not_found("disk", p.to_string());
    let meta = fs::metadata(&host).map_err(|e| {
        if is_missing(&e) {
            missing()
        } else {
            Error::io(format!("look up {p}"), e)
        }
    })?;
    if !meta.is_file() || meta.len() > vmdk::MAX_DESCRIPTOR {
        return Err(Error::InvalidArgument(format!("{p} is not a virtual disk")));
    }
    let mut text = String::new();
    fs::File::open(&host)
        .and_then(|f| f.take(vmdk::MAX_DESCRIPTOR).read_to_string(&mut text))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => missing(),
            io::ErrorKind::InvalidData => {
                Error::InvalidArgument(format!("{p} is not a virtual disk"))
            }
            _ => Error::io(format!("read {p}"), e),
        })?;
    vmdk::parse(p, &text)
}

/// Creates the disk of `spec` inside change `txn`: writes its descriptor (the folder must
/// exist; a parent disk must exist) and adds it to the disk index.
pub(crate) fn create_disk_in(txn: &mut Txn<'_>, spec: &DiskSpec) -> Result<DiskInfo> {
    spec.path.validate()?;
    if !spec.path.file_name().ends_with(".vmdk") {
        return Err(Error::InvalidArgument(format!(
            "disk path {} must end in .vmdk",
            spec.path
        )));
    }
    let (capacity_kb, parent) = match &spec.parent {
        Some(parent) => {
            if *parent == spec.path {
                return Err(Error::InvalidArgument(format!(
                    "disk {} cannot be its own parent",
                    spec.path
                )));
            }
            let d = read_descriptor(txn.roots(), parent)?;
            if spec.capacity_kb != 0 && spec.capacity_kb < d.capacity_kb {
                return Err(Error::InvalidArgument(format!(
                    "a child disk cannot be smaller than its parent {parent} ({} KB)",
                    d.capacity_kb
                )));
            }
            let cap = if spec.capacity_kb == 0 {
                d.capacity_kb
            } else {
                spec.capacity_kb
            };
            (cap, Some((parent, d.cid)))
        }
        None => {
            if spec.capacity_kb == 0 {
                return Err(Error::InvalidArgument(format!(
                    "disk {} needs a capacity",
                    spec.path
                )));
            }
            (spec.capacity_kb, None)
        }
    };
    let text = vmdk::render(&spec.path, capacity_kb, vmdk::new_cid(), parent);
    txn.create_file(&spec.path, text.as_bytes())?;
    let parent = parent.map(|(p, _)| p.clone());
    txn.inv_mut().disks.insert(
        spec.path.clone(),
        DiskRecord {
            capacity_kb,
            parent: parent.clone(),
        },
    );
    Ok(DiskInfo {
        path: spec.path.clone(),
        capacity_kb,
        parent,
    })
}

/// Refuses to delete or move `p` while a powered-on VM has files in it (vSphere's
/// locked files).
fn check_unlocked(inv: &Inventory, p: &DsPath) -> Result<()> {
    for (_, name, vm) in inv.vms() {
        if vm.power_state != PowerState::PoweredOn {
            continue;
        }
        let mut files = vec![&vm.files];
        for d in &vm.devices {
            match d {
                Device::Disk { file, .. } | Device::Serial { file, .. } => files.push(file),
                _ => {}
            }
        }
        if files.iter().any(|f| ds_within(f, p)) {
            return Err(Error::InvalidState(format!(
                "{p} holds files of the powered-on VM {name}"
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for Simulator {
    async fn datastores(&self) -> Result<Vec<DatastoreInfo>> {
        let inv = self.snapshot();
        let mut out = Vec::new();
        for (id, name, rec) in inv.datastores() {
            let root = self.inner.roots.root(name)?;
            let free = fs_space(root)
                .map_err(|e| Error::io(format!("statvfs {}", root.display()), e))?
                .free;
            out.push(DatastoreInfo {
                reference: MoRef::new(kinds::DATASTORE, id),
                name: name.to_string(),
                url: rec.url.clone(),
                kind: rec.kind.clone(),
                capacity: rec.capacity,
                free_space: free.min(rec.capacity),
            });
        }
        Ok(out)
    }

    async fn make_dir(&self, path: &DsPath) -> Result<()> {
        path.validate()?;
        self.update("MakeDirectory", None, |txn| txn.make_dirs(path))
            .await
    }

    async fn list_dir(&self, path: &DsPath) -> Result<Vec<FileEntry>> {
        let host = self.inner.roots.resolve(path, true)?;
        let meta = fs::metadata(&host).map_err(|e| ds_io("list", path, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument(format!("{path} is not a folder")));
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&host).map_err(|e| ds_io("list", path, e))? {
            let entry = entry.map_err(|e| ds_io("list", path, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(TMP_MARK) {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            out.push(FileEntry {
                name,
                is_dir: m.is_dir(),
                size: if m.is_dir() { 0 } else { m.len() },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn exists(&self, path: &DsPath) -> Result<bool> {
        let host = self.inner.roots.resolve(path, false)?;
        match fs::symlink_metadata(&host) {
            Ok(_) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(Error::io(format!("look up {path}"), e)),
        }
    }

    async fn read_file(&self, path: &DsPath) -> Result<Vec<u8>> {
        let host = self.inner.roots.resolve(path, true)?;
        let meta = fs::metadata(&host).map_err(|e| ds_io("read", path, e))?;
        if meta.is_dir() {
            return Err(Error::InvalidArgument(format!("{path} is a folder")));
        }
        fs::read(&host).map_err(|e| ds_io("read", path, e))
    }

    async fn read_file_from(&self, path: &DsPath, offset: u64) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let host = self.inner.roots.resolve(path, true)?;
        let mut f = fs::File::open(&host).map_err(|e| ds_io("read", path, e))?;
        if f.metadata().map_err(|e| ds_io("read", path, e))?.is_dir() {
            return Err(Error::InvalidArgument(format!("{path} is a folder")));
        }
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| ds_io("read", path, e))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| ds_io("read", path, e))?;
        Ok(out)
    }

    async fn write_file(&self, path: &DsPath, data: &[u8]) -> Result<()> {
        path.check_not_root("write")?;
        self.update("PutDatastoreFile", None, |txn| {
            let host = txn.roots().resolve(path, false)?;
            match host.parent().map(fs::metadata) {
                Some(Ok(m)) if m.is_dir() => {}
                _ => return Err(Error::not_found("file", path.parent().to_string())),
            }
            if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                return Err(Error::InvalidArgument(format!("{path} is a folder")));
            }
            let tmp = txn.temp_beside(&host);
            write_atomic(&host, &tmp, data).map_err(|e| ds_io("write", path, e))
        })
        .await
    }

    async fn move_path(&self, from: &DsPath, to: &DsPath) -> Result<()> {
        from.check_not_root("move")?;
        to.check_not_root("replace")?;
        if ds_within(to, from) {
            return Err(Error::InvalidArgument(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        self.update("MoveDatastoreFile_Task", None, |txn| {
            let src = txn.roots().resolve(from, false)?;
            let dst = txn.roots().resolve(to, false)?;
            fs::symlink_metadata(&src).map_err(|e| ds_io("move", from, e))?;
            if fs::symlink_metadata(&dst).is_ok() {
                return Err(Error::Conflict(format!("file {to} already exists")));
            }
            match dst.parent().map(fs::metadata) {
                Some(Ok(m)) if m.is_dir() => {}
                _ => return Err(Error::not_found("file", to.parent().to_string())),
            }
            check_unlocked(txn.inv(), from)?;
            txn.rename(src, dst).map_err(|e| {
                if e.raw_os_error() == Some(libc::EXDEV) {
                    Error::NotSupported(format!("moving {from} to {to} crosses filesystems"))
                } else {
                    ds_io("move", from, e)
                }
            })?;
            let moved: Vec<DsPath> = txn
                .inv()
                .disks
                .keys()
                .filter(|k| ds_within(k, from))
                .cloned()
                .collect();
            if !moved.is_empty() {
                let disks = &mut txn.inv_mut().disks;
                for old in moved {
                    if let Some(rec) = disks.remove(&old) {
                        let rest = old.path[from.path.len()..].trim_start_matches('/');
                        let new = if rest.is_empty() {
                            to.clone()
                        } else {
                            to.join(rest)
                        };
                        disks.insert(new, rec);
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, path: &DsPath) -> Result<()> {
        path.check_not_root("delete")?;
        self.update("DeleteDatastoreFile_Task", None, |txn| {
            check_unlocked(txn.inv(), path)?;
            txn.trash(path)?;
            forget_disks_within(txn, path);
            Ok(())
        })
        .await
    }

    async fn create_disk(&self, spec: &DiskSpec) -> Result<DiskInfo> {
        self.update("CreateVirtualDisk_Task", None, |txn| {
            create_disk_in(txn, spec)
        })
        .await
    }

    async fn disk_info(&self, path: &DsPath) -> Result<DiskInfo> {
        let d = read_descriptor(&self.inner.roots, path)?;
        Ok(DiskInfo {
            path: path.clone(),
            capacity_kb: d.capacity_kb,
            parent: d.parent,
        })
    }

    async fn delete_disk(&self, path: &DsPath) -> Result<()> {
        self.update("DeleteVirtualDisk_Task", None, |txn| {
            read_descriptor(txn.roots(), path)?;
            let inv = txn.inv();
            for (_, name, vm) in inv.vms() {
                let uses = vm
                    .devices
                    .iter()
                    .any(|d| matches!(d, Device::Disk { file, .. } if file == path));
                if uses {
                    return Err(Error::InvalidState(format!(
                        "disk {path} is in use by VM {name}"
                    )));
                }
            }
            if let Some((child, _)) = inv
                .disks
                .iter()
                .find(|(_, r)| r.parent.as_ref() == Some(path))
            {
                return Err(Error::InvalidState(format!(
                    "disk {path} is the parent of disk {child}"
                )));
            }
            txn.trash(path)?;
            let host = txn.roots().resolve(path, false)?;
            if fs::symlink_metadata(layer_tree(&host)).is_ok() {
                txn.trash(&path.parent().join(tree_name(path)))?;
            }
            if fs::symlink_metadata(layer_split(&host)).is_ok() {
                txn.trash(&path.parent().join(split_name(path)))?;
            }
            forget_disks_within(txn, path);
            Ok(())
        })
        .await
    }

    async fn write_layer(&self, disk: &DsPath, tar: Box<dyn Read + Send>) -> Result<u64> {
        // Checks (and fault injection, and the task record) through the update path;
        // the unpacking itself runs outside it, on a blocking thread.
        let (tree, split, tmp) = self
            .update("ImportLayer", None, |txn| {
                if !txn.inv().disks.contains_key(disk) {
                    return Err(Error::not_found("disk", disk.to_string()));
                }
                check_unlocked(txn.inv(), disk)?;
                let host = txn.roots().resolve(disk, false)?;
                let (tree, split) = (layer_tree(&host), layer_split(&host));
                if fs::symlink_metadata(&tree).is_ok() || fs::symlink_metadata(&split).is_ok() {
                    return Err(Error::Conflict(format!("disk {disk} already has content")));
                }
                let tmp = txn.temp_beside(&split);
                Ok((tree, split, tmp))
            })
            .await?;
        let shown = disk.clone();
        let job = tokio::task::spawn_blocking(move || -> Result<u64> {
            fs::create_dir(&tree).map_err(|e| ds_io("fill", &shown, e))?;
            // Reads the stream to its end, where it checks its digests.
            let result = vic_layer::extract_layer_split(
                tar,
                &tree,
                &vic_layer::ExtractOptions::for_current_user(),
            )
            .map_err(|e| match e {
                // The stream says its content is wrong (a digest that does not match,
                // data that does not decompress).
                Error::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                    Error::InvalidArgument(format!("layer for {shown}: {source}"))
                }
                e => e,
            })
            .and_then(|(stats, skeleton)| {
                // Last, so that a disk with a skeleton has all of its tree.
                write_atomic(&split, &tmp, &skeleton.to_bytes())
                    .map_err(|e| ds_io("fill", &shown, e))?;
                Ok(stats.bytes)
            });
            if result.is_err() {
                let _ = crate::sim::remove_any(&tree);
                let _ = fs::remove_file(&split);
            }
            result
        });
        job.await
            .map_err(|e| Error::Internal(format!("layer unpacking failed: {e}")))?
    }

    async fn read_layer(&self, disk: &DsPath) -> Result<Box<dyn Read + Send>> {
        let (tree, split) = self
            .update("ExportLayer", None, |txn| {
                if !txn.inv().disks.contains_key(disk) {
                    return Err(Error::not_found("disk", disk.to_string()));
                }
                let host = txn.roots().resolve(disk, false)?;
                Ok((layer_tree(&host), layer_split(&host)))
            })
            .await?;
        let bytes = match fs::read(&split) {
            Ok(bytes) => bytes,
            Err(e) if is_missing(&e) => {
                return Err(if fs::symlink_metadata(&tree).is_ok() {
                    Error::NotSupported(format!(
                        "disk {disk} has content without a tar split to read it back"
                    ))
                } else {
                    Error::not_found("layer", disk.to_string())
                });
            }
            Err(e) => return Err(Error::io(format!("read the tar split of {disk}"), e)),
        };
        let skeleton = vic_layer::TarSplit::from_bytes(&bytes)
            .map_err(|e| Error::Internal(format!("layer of {disk}: {e}")))?;
        Ok(Box::new(vic_layer::reassemble(&skeleton, &tree)))
    }
}

/// The folder name of a disk's filesystem tree: `<stem>-fs` beside `<stem>.vmdk`.
fn tree_name(disk: &DsPath) -> String {
    let name = disk.file_name();
    format!("{}-fs", name.strip_suffix(".vmdk").unwrap_or(name))
}

/// The file name of a disk's tar-split skeleton: `<stem>-split` beside `<stem>.vmdk`.
fn split_name(disk: &DsPath) -> String {
    let name = disk.file_name();
    format!("{}-split", name.strip_suffix(".vmdk").unwrap_or(name))
}

/// The host path `<stem><suffix>` beside the disk descriptor `host`.
fn beside_disk(host: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".vmdk").unwrap_or(&name);
    host.with_file_name(format!("{stem}{suffix}"))
}

/// The host folder holding the filesystem of the disk whose descriptor is `host`.
pub(crate) fn layer_tree(host: &std::path::Path) -> std::path::PathBuf {
    beside_disk(host, "-fs")
}

/// The host file holding the tar-split skeleton of the layer written to the disk whose
/// descriptor is `host`: with the tree, it gives back the layer's tar byte for byte.
pub(crate) fn layer_split(host: &std::path::Path) -> std::path::PathBuf {
    beside_disk(host, "-split")
}

impl Simulator {
    /// The host folder that holds the filesystem of `disk` (a layer's unpacked tree),
    /// for the guest runner that assembles root filesystems.
    pub fn disk_tree(&self, disk: &DsPath) -> Result<std::path::PathBuf> {
        Ok(layer_tree(&self.host_path(disk)?))
    }
}

/// Drops the index entries of disks at or under `path`.
pub(crate) fn forget_disks_within(txn: &mut Txn<'_>, path: &DsPath) {
    let gone: Vec<DsPath> = txn
        .inv()
        .disks
        .keys()
        .filter(|k| ds_within(k, path))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let disks = &mut txn.inv_mut().disks;
        for k in gone {
            disks.remove(&k);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::open_temp;

    fn ds(p: &str) -> DsPath {
        DsPath::new("LocalDS_0", p)
    }

    #[tokio::test]
    async fn files_and_folders() {
        let (_dir, sim) = open_temp();
        let st = sim.backend().storage;
        let dss = st.datastores().await.unwrap();
        assert_eq!(dss.len(), 1);
        assert_eq!(dss[0].url, "ds:///vmfs/volumes/LocalDS_0/");
        assert_eq!(dss[0].kind, "local");
        assert!(dss[0].capacity > 0 && dss[0].free_space <= dss[0].capacity);

        st.make_dir(&ds("a/b/c")).await.unwrap();
        st.make_dir(&ds("a/b/c")).await.unwrap();
        st.write_file(&ds("a/b/c/f.txt"), b"one").await.unwrap();
        st.write_file(&ds("a/b/c/f.txt"), b"two").await.unwrap();
        assert_eq!(st.read_file(&ds("a/b/c/f.txt")).await.unwrap(), b"two");
        assert!(st.exists(&ds("a/b")).await.unwrap());
        assert!(!st.exists(&ds("a/x")).await.unwrap());
        let ls = st.list_dir(&ds("a/b/c")).await.unwrap();
        assert_eq!(ls.len(), 1);
        assert_eq!(
            (ls[0].name.as_str(), ls[0].is_dir, ls[0].size),
            ("f.txt", false, 3)
        );
        assert!(
            st.write_file(&ds("nope/f"), b"x")
                .await
                .unwrap_err()
                .is_not_found()
        );
        assert!(st.read_file(&ds("nope")).await.unwrap_err().is_not_found());
        assert!(!st.exists(&ds("a/b/c/f.txt/x")).await.unwrap());
        assert!(
            st.read_file(&ds("a/b/c/f.txt/x"))
                .await
                .unwrap_err()
                .is_not_found()
        );

        st.make_dir(&ds("m")).await.unwrap();
        st.move_path(&ds("a/b"), &ds("m/b")).await.unwrap();
        assert!(st.exists(&ds("m/b/c/f.txt")).await.unwrap());
        st.make_dir(&ds("a/b")).await.unwrap();
        assert!(matches!(
            st.move_path(&ds("a/b"), &ds("m/b")).await,
            Err(Error::Conflict(_))
        ));
        assert!(st.move_path(&ds("m"), &ds("m/x")).await.is_err());
        st.delete(&ds("m")).await.unwrap();
        assert!(!st.exists(&ds("m")).await.unwrap());
        assert!(st.delete(&ds("m")).await.unwrap_err().is_not_found());
        assert!(st.delete(&ds("")).await.is_err());
        // nothing left in the trash
        let trash = sim.state_dir().join("trash");
        assert_eq!(fs::read_dir(trash).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn paths_cannot_escape() {
        let (dir, sim) = open_temp();
        let st = sim.backend().storage;
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        let root = sim.host_path(&ds("")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let bad = DsPath {
            datastore: "LocalDS_0".into(),
            path: "../outside/secret".into(),
        };
        assert!(st.read_file(&bad).await.is_err());
        assert!(st.write_file(&bad, b"x").await.is_err());
        assert!(st.make_dir(&bad).await.is_err());
        assert!(st.read_file(&ds("link/secret")).await.is_err());
        assert!(st.list_dir(&ds("link")).await.is_err());
        assert!(st.write_file(&ds("link/new"), b"x").await.is_err());
        assert!(st.make_dir(&ds("link/d")).await.is_err());
        assert!(!outside.join("new").exists() && !outside.join("d").exists());
        assert!(
            st.read_file(&DsPath::new("Other", "x"))
                .await
                .unwrap_err()
                .is_not_found()
        );
        // deleting the link removes the link, not what it points to
        st.delete(&ds("link")).await.unwrap();
        assert!(outside.join("secret").exists());
    }

    #[tokio::test]
    async fn disk_chain_and_delete_refusal() {
        let (_dir, sim) = open_temp();
        let st = sim.backend().storage;
        st.make_dir(&ds("images/base")).await.unwrap();
        st.make_dir(&ds("c1")).await.unwrap();
        let base = ds("images/base/base.vmdk");
        let child = ds("c1/c1.vmdk");
        let info = st
            .create_disk(&DiskSpec {
                path: base.clone(),
                capacity_kb: 8 * 1024 * 1024,
                parent: None,
            })
            .await
            .unwrap();
        assert_eq!(info.parent, None);
        let text = String::from_utf8(st.read_file(&base).await.unwrap()).unwrap();
        assert!(text.starts_with("# Disk DescriptorFile"));
        assert!(text.contains("createType=\"vmfs\""));

        let c = st
            .create_disk(&DiskSpec {
                path: child.clone(),
                capacity_kb: 0,
                parent: Some(base.clone()),
            })
            .await
            .unwrap();
        assert_eq!(c.capacity_kb, 8 * 1024 * 1024);
        assert_eq!(st.disk_info(&child).await.unwrap(), c);
        let text = String::from_utf8(st.read_file(&child).await.unwrap()).unwrap();
        assert!(text.contains("parentFileNameHint=\"[LocalDS_0] images/base/base.vmdk\""));

        // refusals
        assert!(matches!(
            st.delete_disk(&base).await,
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            st.create_disk(&DiskSpec {
                path: child.clone(),
                capacity_kb: 1,
                parent: None
            })
            .await,
            Err(Error::Conflict(_))
        ));
        let e = st
            .create_disk(&DiskSpec {
                path: ds("c2/c2.vmdk"),
                capacity_kb: 0,
                parent: Some(base.clone()),
            })
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = st
            .create_disk(&DiskSpec {
                path: ds("c1/x.vmdk"),
                capacity_kb: 0,
                parent: Some(ds("images/none.vmdk")),
            })
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotFound { kind: "disk", .. }), "{e}");
        assert!(!st.exists(&ds("c1/x.vmdk")).await.unwrap());

        // a moved child keeps blocking; deleting it frees the parent
        st.move_path(&ds("c1"), &ds("c9")).await.unwrap();
        assert!(st.delete_disk(&base).await.is_err());
        st.delete_disk(&ds("c9/c1.vmdk")).await.unwrap();
        st.delete_disk(&base).await.unwrap();
        assert!(!st.exists(&base).await.unwrap());
        assert!(st.disk_info(&base).await.unwrap_err().is_not_found());
        assert_eq!(sim.snapshot().disks().count(), 0);
    }

    /// A layer tar with what a tree alone cannot give back: a path written twice, a
    /// whiteout with data and bytes after the end-of-archive blocks.
    fn layer_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |kind: tar::EntryType, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
        add(tar::EntryType::Directory, "etc/", b"");
        add(
            tar::EntryType::Regular,
            "etc/hosts",
            b"127.0.0.1 localhost\n",
        );
        add(tar::EntryType::Regular, "etc/hosts", b"::1 localhost\n");
        add(tar::EntryType::Regular, "etc/.wh.gone", b"whiteout data");
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        add(tar::EntryType::Regular, "bin/tool", &big);
        let mut tar = b.into_inner().unwrap();
        tar.extend_from_slice(&[0u8; 4096]);
        tar
    }

    async fn read_back(st: &dyn Storage, disk: &DsPath) -> Result<Vec<u8>> {
        let mut r = st.read_layer(disk).await?;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        })
        .await
        .unwrap()
        .map_err(|e| Error::io("read back", e))
    }

    /// A new empty 1 MiB disk `[ds] NAME/NAME.vmdk` without a parent.
    async fn new_disk(st: &dyn Storage, name: &str) -> DsPath {
        st.make_dir(&ds(name)).await.unwrap();
        let disk = ds(&format!("{name}/{name}.vmdk"));
        st.create_disk(&DiskSpec {
            path: disk.clone(),
            capacity_kb: 1024,
            parent: None,
        })
        .await
        .unwrap();
        disk
    }

    #[tokio::test]
    async fn layers_are_read_back_byte_for_byte() {
        let (_dir, sim) = open_temp();
        let st = sim.backend().storage;
        let disk = new_disk(&*st, "l1").await;
        let e = read_back(&*st, &disk).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { kind: "layer", .. }), "{e}");
        let e = read_back(&*st, &ds("l1/none.vmdk")).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { kind: "disk", .. }), "{e}");

        let tar = layer_tar();
        let size = st
            .write_layer(&disk, Box::new(io::Cursor::new(tar.clone())))
            .await
            .unwrap();
        // Every regular file written counts, the replaced one too.
        assert_eq!(size, 20 + 14 + 300_000);
        let names: Vec<String> = st
            .list_dir(&ds("l1"))
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["l1-fs", "l1-split", "l1.vmdk"]);
        assert!(read_back(&*st, &disk).await.unwrap() == tar);
        assert!(matches!(
            st.write_layer(&disk, Box::new(io::Cursor::new(tar.clone())))
                .await,
            Err(Error::Conflict(_))
        ));

        // Faults reach it as they reach every operation.
        sim.faults()
            .inject("ExportLayer", crate::Fault::Fail("no".into()), 1);
        assert!(matches!(
            read_back(&*st, &disk).await,
            Err(Error::Internal(_))
        ));

        // The skeleton moves with its folder, as a pulled layer's does.
        st.move_path(&ds("l1"), &ds("l2")).await.unwrap();
        let disk = ds("l2/l1.vmdk");
        assert!(read_back(&*st, &disk).await.unwrap() == tar);

        // A tree changed behind its back is an error, not another stream.
        let tree = sim.disk_tree(&disk).unwrap();
        fs::write(tree.join("etc/hosts"), b"::1 changed!!\n").unwrap();
        let e = read_back(&*st, &disk).await.unwrap_err();
        assert!(e.to_string().contains("etc/hosts"), "{e}");

        st.delete_disk(&disk).await.unwrap();
        assert_eq!(st.list_dir(&ds("l2")).await.unwrap(), []);
        let trash = sim.state_dir().join("trash");
        assert_eq!(fs::read_dir(trash).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_failed_layer_leaves_no_content() {
        /// The layer, then the error a stream gives when its digest does not match.
        struct Mismatch(io::Cursor<Vec<u8>>);
        impl Read for Mismatch {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "digest mismatch",
                    )),
                    n => Ok(n),
                }
            }
        }
        let (_dir, sim) = open_temp();
        let st = sim.backend().storage;
        let disk = new_disk(&*st, "l").await;
        let bad = Mismatch(io::Cursor::new(layer_tar()));
        let e = st.write_layer(&disk, Box::new(bad)).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("digest mismatch")),
            "{e}"
        );
        let names: Vec<String> = fs::read_dir(sim.host_path(&ds("l")).unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["l.vmdk"]);
        let e = read_back(&*st, &disk).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // And the disk takes a good layer afterwards.
        st.write_layer(&disk, Box::new(io::Cursor::new(layer_tar())))
            .await
            .unwrap();
        assert!(read_back(&*st, &disk).await.unwrap() == layer_tar());
    }
}
