use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::MoRef;
use crate::{DsPath, Result};

/// A datastore and its space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreInfo {
    /// Its reference.
    pub reference: MoRef,
    /// Its name, as in `[name] path`.
    pub name: String,
    /// Its URL (`ds:///vmfs/volumes/…`).
    pub url: String,
    /// Filesystem type: `VMFS`, `NFS`, `vsan`, `local`.
    pub kind: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Free bytes.
    pub free_space: u64,
}

/// An entry of a datastore folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its name within the folder.
    pub name: String,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Size in bytes (0 for folders).
    pub size: u64,
}

/// A virtual disk to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Its descriptor file.
    pub path: DsPath,
    /// Size in KiB; a child disk takes its parent's size when this is 0.
    pub capacity_kb: u64,
    /// The parent disk of the chain, if this is a child (delta) disk.
    pub parent: Option<DsPath>,
}

/// A virtual disk as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Its descriptor file.
    pub path: DsPath,
    /// Size in KiB.
    pub capacity_kb: u64,
    /// Its parent disk, if any.
    pub parent: Option<DsPath>,
}

/// Datastores, their files and folders, and parent-chained virtual disks.
#[async_trait]
pub trait Storage: Send + Sync + Debug {
    /// All datastores the backend can use.
    async fn datastores(&self) -> Result<Vec<DatastoreInfo>>;
    /// Creates a folder and its parents (`MakeDirectory`); an existing folder is fine.
    async fn make_dir(&self, path: &DsPath) -> Result<()>;
    /// The entries of a folder.
    async fn list_dir(&self, path: &DsPath) -> Result<Vec<FileEntry>>;
    /// Whether a file or folder exists.
    async fn exists(&self, path: &DsPath) -> Result<bool>;
    /// A whole file.
    async fn read_file(&self, path: &DsPath) -> Result<Vec<u8>>;
    /// The bytes of a file from `offset` on (empty at or past its end); what
    /// `docker logs -f` polls. The default reads the whole file.
    async fn read_file_from(&self, path: &DsPath, offset: u64) -> Result<Vec<u8>> {
        let mut all = self.read_file(path).await?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
        all.drain(..start);
        Ok(all)
    }
    /// Writes a whole file, replacing it atomically: readers see the old or the new.
    async fn write_file(&self, path: &DsPath, data: &[u8]) -> Result<()>;
    /// Moves a file or folder (`MoveDatastoreFile_Task`); fails if `to` exists.
    async fn move_path(&self, from: &DsPath, to: &DsPath) -> Result<()>;
    /// Deletes a file or a folder with everything in it (`DeleteDatastoreFile_Task`).
    async fn delete(&self, path: &DsPath) -> Result<()>;
    /// Creates a virtual disk, a child of `parent` when given (`CreateVirtualDisk_Task`).
    async fn create_disk(&self, spec: &DiskSpec) -> Result<DiskInfo>;
    /// A disk's size and parent.
    async fn disk_info(&self, path: &DsPath) -> Result<DiskInfo>;
    /// Deletes a disk (`DeleteVirtualDisk_Task`); fails while a child or a VM uses it.
    async fn delete_disk(&self, path: &DsPath) -> Result<()>;
    /// Fills the filesystem of a new disk from an uncompressed layer tar stream and
    /// returns the bytes unpacked. Entries that would leave the layer are refused. On
    /// vSphere this runs in the VCH appliance (attach the disk, make a filesystem, mount,
    /// unpack, detach); the simulator unpacks into a folder beside the descriptor.
    async fn write_layer(&self, disk: &DsPath, tar: Box<dyn std::io::Read + Send>) -> Result<u64>;
    /// The content written by [`Storage::write_layer`] as the same tar stream, byte for
    /// byte (so its digest is the layer's diff id), for `docker save`.
    async fn read_layer(&self, disk: &DsPath) -> Result<Box<dyn std::io::Read + Send>>;
}
