//! The extractor: one pass over the tar entries, then the metadata of directories.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs::{File, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use vic_core::Error;

use crate::path::{NameKind, classify, display, normalize};
use crate::sparse::{self, Chunks, Layout, MapError, SparseRecords};
use crate::split::{Recorder, TarSplit, Tee};
use crate::sys;

/// How [`extract_layer`] treats what only root may do. The default does neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Give every entry the owner (uid and gid) that the tar names, with `lchown`.
    /// Only root may; without it everything belongs to the extracting user.
    pub preserve_owner: bool,
    /// Create character and block devices and fifos. Without it they are skipped and
    /// counted in [`ExtractStats::skipped_devices`].
    pub allow_devices: bool,
}

impl ExtractOptions {
    /// Everything on when the process runs as root (effective uid 0), else off.
    pub fn for_current_user() -> Self {
        let root = sys::euid() == 0;
        ExtractOptions {
            preserve_owner: root,
            allow_devices: root,
        }
    }
}

/// What [`extract_layer`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Regular files, whiteouts and opaque markers not included.
    pub files: u64,
    /// Directory entries (the layer root's `./` included when the tar has it); parents
    /// that the tar only implies are created but not counted.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hardlinks to an earlier entry of the layer.
    pub hardlinks: u64,
    /// Character and block devices and fifos created.
    pub devices: u64,
    /// Whiteouts (`.wh.<name>`), kept as empty files.
    pub whiteouts: u64,
    /// Opaque markers (`.wh..wh..opq`), kept as empty files.
    pub opaque_dirs: u64,
    /// The length of the regular files written, holes included.
    pub bytes: u64,
    /// Devices and fifos not created because [`ExtractOptions::allow_devices`] is off.
    pub skipped_devices: u64,
    /// Entries that carry no file: AUFS metadata and global PAX headers.
    pub skipped: u64,
    /// Extended attributes that the file system or our privileges refused and that
    /// were left out: unsupported ones, `security.*` and `trusted.*` when not root,
    /// and `user.*` on symlinks and devices, where Linux allows none.
    pub skipped_xattrs: u64,
}

/// Unpacks the layer tar `tar` into `dest`, a new empty directory, and returns what it
/// wrote. See the [crate] documentation for the rules. Names are relative to `dest`
/// whatever their form: `/etc/passwd` and `./etc/passwd` both land at
/// `dest/etc/passwd`, as dockerd treats them.
///
/// An entry that would leave `dest`, pass through a symlink, or is otherwise malformed
/// rejects the whole layer with [`Error::InvalidArgument`]; what was written until then
/// stays in `dest` for the caller to remove. Failures to read the tar or to write the
/// tree are [`Error::Io`]. Blocks: run it on a blocking thread.
pub fn extract_layer(
    tar: impl Read,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<ExtractStats, Error> {
    let mut x = Extractor::new(dest, opts, None)?;
    x.entries(&mut tar::Archive::new(tar))?;
    x.finish_dirs()?;
    Ok(x.stats)
}

/// [`extract_layer`], and the skeleton of the tar stream, which gives the stream back
/// byte for byte with [`crate::reassemble`] as long as `dest` is left as it is (see
/// [`crate::split`]). Unlike [`extract_layer`], it reads `tar` to its end, past the
/// end-of-archive blocks, and records what follows them too.
pub fn extract_layer_split(
    tar: impl Read,
    dest: &Path,
    opts: &ExtractOptions,
) -> Result<(ExtractStats, TarSplit), Error> {
    let recorder = Rc::new(RefCell::new(Recorder::new()));
    let mut x = Extractor::new(dest, opts, Some(recorder.clone()))?;
    let mut archive = tar::Archive::new(Tee::new(tar, recorder.clone()));
    x.entries(&mut archive)?;
    // Whatever follows the last entry belongs to the stream (and a stream that checks
    // its digest does so at its end).
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_error)?;
    x.keep_unreachable()?;
    x.finish_dirs()?;
    let split = recorder.borrow_mut().finish().map_err(split_error)?;
    Ok((x.stats, split))
}

fn read_error(e: io::Error) -> Error {
    Error::io("read layer archive", e)
}

fn split_error(e: io::Error) -> Error {
    Error::Internal(format!("record the layer split: {e}"))
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// The type of an entry, as far as extraction cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// The metadata that an entry gives its file.
#[derive(Debug)]
struct Meta {
    /// Permission bits, setuid, setgid and sticky included.
    mode: u32,
    /// Uid and gid, when owners are preserved.
    owner: Option<(u32, u32)>,
    /// Seconds and nanoseconds since the epoch, for both atime and mtime.
    mtime: (i64, u32),
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// How a regular file's data is stored in its entry.
enum Content {
    /// All of it, in order (GNU `S` sparse entries are expanded by the tar crate).
    Plain,
    /// PAX sparse: only `chunks`, for a file of `real_size`.
    Sparse { chunks: Chunks, real_size: u64 },
}

/// Why walking down to a directory failed, with the path walked so far.
enum WalkError {
    Missing(String),
    Symlink(String),
    NotDir(String),
    Io(String, io::Error),
    Name,
}

/// Where an extended attribute goes.
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    /// A symlink or device node, set by path without following it.
    Path(&'a Path),
}

struct Extractor<'a> {
    dest: &'a Path,
    root: File,
    opts: ExtractOptions,
    is_root: bool,
    stats: ExtractStats,
    /// Directory entries whose metadata is applied after the last entry.
    dirs: BTreeMap<Vec<Vec<u8>>, Meta>,
    /// The last parent directory opened, by its components.
    cached: Option<(Vec<Vec<u8>>, OwnedFd)>,
    buf: Vec<u8>,
    /// The skeleton being recorded, for [`extract_layer_split`].
    split: Option<Rc<RefCell<Recorder>>>,
    /// The content of the current file is noted in the skeleton as a reference.
    track: bool,
}

impl<'a> Extractor<'a> {
    fn new(
        dest: &'a Path,
        opts: &ExtractOptions,
        split: Option<Rc<RefCell<Recorder>>>,
    ) -> Result<Self, Error> {
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dest)
            .map_err(|e| Error::io(format!("open layer directory {}", dest.display()), e))?;
        Ok(Extractor {
            dest,
            root,
            opts: *opts,
            is_root: sys::euid() == 0,
            stats: ExtractStats::default(),
            dirs: BTreeMap::new(),
            cached: None,
            buf: vec![0; 128 * 1024],
            split,
            track: false,
        })
    }

    fn entries<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), Error> {
        for entry in archive.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let flag = entry.header().as_old().linkflag[0];
        if flag == b'g' {
            // Global PAX headers carry nothing that a layer needs (dockerd ignores them).
            self.stats.skipped += 1;
            return Ok(());
        }

        let mut pax_mtime = None;
        let mut xattrs = Vec::new();
        let mut sparse = SparseRecords::default();
        if let Some(records) = entry.pax_extensions().map_err(read_error)? {
            for record in records {
                let record = record
                    .map_err(|e| invalid(format!("layer entry has a malformed pax record: {e}")))?;
                let (key, value) = (record.key_bytes(), record.value_bytes());
                if key == b"mtime" {
                    pax_mtime = Some(value.to_vec());
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), value.to_vec()));
                } else {
                    sparse.record(key, value);
                }
            }
        }
        let sparse_info = sparse.parse();
        let raw = match (&sparse_info, sparse.name) {
            (Ok(Some(_)), Some(name)) => name,
            _ => entry.path_bytes().into_owned(),
        };
        let comps = normalize(&raw, "layer entry")?;
        let sparse_info = sparse_info
            .map_err(|why| invalid(format!("layer entry {:?}: {why}", display(&raw))))?;

        let kind = match flag {
            b'0' | b'7' | b'S' => Kind::File,
            b'\0' if raw.ends_with(b"/") => Kind::Dir,
            b'\0' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            other => {
                return Err(invalid(format!(
                    "layer entry {:?} has the unsupported type {:?}",
                    display(&raw),
                    char::from(other)
                )));
            }
        };
        let name_kind = classify(&comps, &raw)?;
        if name_kind == NameKind::AufsMeta {
            self.stats.skipped += 1;
            return Ok(());
        }
        let meta = self.meta(entry.header(), pax_mtime, xattrs, &raw)?;

        if comps.is_empty() {
            if kind != Kind::Dir {
                return Err(invalid(format!(
                    "layer entry {:?} names the layer root but is no directory",
                    display(&raw)
                )));
            }
            self.dirs.insert(Vec::new(), meta);
            self.stats.dirs += 1;
            return Ok(());
        }

        match name_kind {
            NameKind::Whiteout | NameKind::Opaque => {
                // Kept as an empty file whatever the entry's type; the data is skipped.
                let (parent, name) = self.prepare(&comps, &raw, false)?;
                let file = sys::create_file(parent.as_fd(), &name)
                    .map_err(|e| Error::io(format!("create {:?}", display(&raw)), e))?;
                self.apply_fd_meta(&file, &meta, &raw)?;
                if name_kind == NameKind::Whiteout {
                    self.stats.whiteouts += 1;
                } else {
                    self.stats.opaque_dirs += 1;
                }
                return Ok(());
            }
            NameKind::Plain | NameKind::AufsMeta => {}
        }

        match kind {
            Kind::File => self.file(entry, &comps, &raw, &meta, sparse_info),
            Kind::Dir => self.dir(&comps, &raw, meta),
            Kind::Symlink => self.symlink(entry, &comps, &raw, &meta),
            Kind::Hardlink => self.hardlink(entry, &comps, &raw),
            Kind::Char | Kind::Block | Kind::Fifo => {
                self.device(entry.header(), kind, &comps, &raw, &meta)
            }
        }
    }

    /// The metadata of an entry from its header and PAX records.
    fn meta(
        &self,
        header: &tar::Header,
        pax_mtime: Option<Vec<u8>>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        raw: &[u8],
    ) -> Result<Meta, Error> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            invalid(format!(
                "layer entry {:?} has a bad {what}: {e}",
                display(raw)
            ))
        };
        let old = header.as_old();
        let mode = blank_is_zero(&old.mode, header.mode()).map_err(|e| bad("mode", &e))? & 0o7777;
        let owner = if self.opts.preserve_owner {
            let id = |v: io::Result<u64>, what: &str| -> Result<u32, Error> {
                let v = v.map_err(|e| bad(what, &e))?;
                u32::try_from(v)
                    .ok()
                    .filter(|&v| v != u32::MAX)
                    .ok_or_else(|| bad(what, &v))
            };
            Some((
                id(blank_is_zero(&old.uid, header.uid()), "uid")?,
                id(blank_is_zero(&old.gid, header.gid()), "gid")?,
            ))
        } else {
            None
        };
        let mtime = match pax_mtime.as_deref().and_then(pax_time) {
            Some(t) => t,
            None => {
                let secs =
                    blank_is_zero(&old.mtime, header.mtime()).map_err(|e| bad("mtime", &e))?;
                (i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        let xattrs = xattrs
            .into_iter()
            .map(|(name, value)| match CString::new(name) {
                Ok(name) if !name.is_empty() => Ok((name, value)),
                _ => Err(invalid(format!(
                    "layer entry {:?} has a bad extended attribute name",
                    display(raw)
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Meta {
            mode,
            owner,
            mtime,
            xattrs,
        })
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        raw: &[u8],
        meta: &Meta,
        sparse: Option<sparse::Sparse>,
    ) -> Result<(), Error> {
        let stored = entry.size();
        let bad_map = |why: &str| invalid(format!("layer entry {:?}: {why}", display(raw)));
        // Everything about the data is checked before anything is written.
        let content = match sparse {
            None => Content::Plain,
            Some(sparse::Sparse {
                layout: Layout::Records(chunks),
                real_size,
            }) => {
                sparse::validate(&chunks, real_size, stored).map_err(bad_map)?;
                Content::Sparse { chunks, real_size }
            }
            Some(sparse::Sparse {
                layout: Layout::InData,
                real_size,
            }) => {
                let (chunks, used) = sparse::read_map(entry).map_err(|e| match e {
                    MapError::Bad(why) => bad_map(why),
                    MapError::Read(e) => read_error(e),
                })?;
                let left = stored
                    .checked_sub(used)
                    .ok_or_else(|| bad_map("sparse map larger than the entry"))?;
                sparse::validate(&chunks, real_size, left).map_err(bad_map)?;
                Content::Sparse { chunks, real_size }
            }
        };

        let (parent, name) = self.prepare(comps, raw, false)?;
        let mut file = sys::create_file(parent.as_fd(), &name)
            .map_err(|e| Error::io(format!("create {:?}", display(raw)), e))?;
        let write_error = |e| Error::io(format!("write {:?}", display(raw)), e);
        // The skeleton refers to the file rather than keep its content, unless this
        // user could not read it back.
        self.track = self.split.is_some() && (self.is_root || meta.mode & 0o400 != 0);
        let length = match content {
            Content::Plain => {
                let (copied, hole_at_end) = self.copy(entry, &mut file, 0, stored, raw)?;
                if hole_at_end {
                    file.set_len(copied).map_err(write_error)?;
                }
                copied
            }
            Content::Sparse { chunks, real_size } => {
                for (offset, length) in chunks {
                    file.seek(SeekFrom::Start(offset)).map_err(write_error)?;
                    self.copy(entry, &mut file, offset, length, raw)?;
                }
                file.set_len(real_size).map_err(write_error)?;
                real_size
            }
        };
        self.track = false;
        if let Some(split) = &self.split {
            split
                .borrow_mut()
                .end_file(comps, length)
                .map_err(split_error)?;
        }
        self.apply_fd_meta(&file, meta, raw)?;
        self.stats.files += 1;
        self.stats.bytes += length;
        Ok(())
    }

    /// Copies exactly `length` bytes of `data` to `file` (where it is at `offset`),
    /// seeking over blocks of zeros rather than writing them. Returns the bytes copied
    /// and whether the last of them was a seek (which leaves the file short until its
    /// length is set).
    fn copy(
        &mut self,
        data: &mut impl Read,
        file: &mut File,
        offset: u64,
        length: u64,
        raw: &[u8],
    ) -> Result<(u64, bool), Error> {
        let write_error = |e| Error::io(format!("write {:?}", display(raw)), e);
        let mut copied = 0u64;
        let mut hole_at_end = false;
        while copied < length {
            let want = usize::try_from(length - copied)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.content_at(Some(offset + copied));
            let read = data.read(&mut self.buf[..want]);
            self.content_at(None);
            let n = match read {
                Ok(0) => {
                    return Err(read_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("archive ends inside {:?}", display(raw)),
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            let chunk = &self.buf[..n];
            if chunk.iter().all(|&b| b == 0) {
                let step = i64::try_from(n).unwrap_or(i64::MAX);
                file.seek(SeekFrom::Current(step)).map_err(write_error)?;
                hole_at_end = true;
            } else {
                file.write_all(chunk).map_err(write_error)?;
                hole_at_end = false;
            }
            copied += n as u64;
        }
        Ok((copied, hole_at_end))
    }

    /// Tells the skeleton where in the current file the bytes read next go (`None`:
    /// they are no content of it), when it notes the file as a reference.
    fn content_at(&self, at: Option<u64>) {
        if let (true, Some(split)) = (self.track, &self.split) {
            split.borrow_mut().content_at(at);
        }
    }

    /// Keeps in the skeleton the content of files at or below `comps`, which are about
    /// to be replaced or removed.
    fn release(&self, comps: &[Vec<u8>], raw: &[u8]) -> Result<(), Error> {
        let Some(split) = &self.split else {
            return Ok(());
        };
        split
            .borrow_mut()
            .release(self.root.as_fd(), comps)
            .map_err(|e| {
                Error::io(
                    format!("keep the content replaced by {:?}", display(raw)),
                    e,
                )
            })
    }

    /// Keeps in the skeleton the content of files that a non-root user could not read
    /// back once the directories above them get their modes: those whose entry leaves
    /// the owner no search permission.
    fn keep_unreachable(&self) -> Result<(), Error> {
        let Some(split) = &self.split else {
            return Ok(());
        };
        if self.is_root {
            return Ok(());
        }
        let blocked: BTreeSet<Vec<u8>> = self
            .dirs
            .iter()
            .filter(|(_, meta)| meta.mode & 0o100 == 0)
            .map(|(comps, _)| comps.join(&b'/'))
            .collect();
        split
            .borrow_mut()
            .release_below(self.root.as_fd(), &blocked)
            .map_err(|e| Error::io("keep the content of unreadable directories", e))
    }

    fn dir(&mut self, comps: &[Vec<u8>], raw: &[u8], meta: Meta) -> Result<(), Error> {
        let (parent, name) = self.prepare(comps, raw, true)?;
        match sys::mkdirat(parent.as_fd(), &name, 0o700) {
            Ok(()) => {}
            // An existing directory is kept: only its metadata changes.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::io(format!("create {:?}", display(raw)), e)),
        }
        // Mode, owner and times wait for the last entry: a read-only directory would
        // stop later entries below it, and each of them would change its mtime.
        self.dirs.insert(comps.to_vec(), meta);
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        raw: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        let target = entry
            .link_name_bytes()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(format!("symlink {:?} has no target", display(raw))))?;
        let target = CString::new(target.into_owned()).map_err(|_| {
            invalid(format!(
                "symlink {:?} has a NUL byte in its target",
                display(raw)
            ))
        })?;
        let (parent, name) = self.prepare(comps, raw, false)?;
        // The target is stored as it is: it may point anywhere, since nothing here
        // ever follows it.
        sys::symlinkat(&target, parent.as_fd(), &name)
            .map_err(|e| Error::io(format!("create {:?}", display(raw)), e))?;
        self.apply_at_meta(parent.as_fd(), &name, comps, meta, raw, false)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        raw: &[u8],
    ) -> Result<(), Error> {
        let shown = display(raw);
        let target_raw = entry
            .link_name_bytes()
            .ok_or_else(|| invalid(format!("hardlink {shown:?} has no target")))?
            .into_owned();
        let target = normalize(&target_raw, &format!("hardlink {shown:?} target"))?;
        let shown_target = display(&target_raw);
        let Some((target_name, target_parents)) = target.split_last() else {
            return Err(invalid(format!(
                "hardlink {shown:?} points to the layer root"
            )));
        };
        if target.starts_with(comps) {
            return Err(invalid(format!(
                "hardlink {shown:?} points to itself or below itself"
            )));
        }
        let not_found = || {
            invalid(format!(
                "hardlink {shown:?} points to {shown_target:?}, which is not in the layer"
            ))
        };
        let target_dir = self.walk(target_parents, false).map_err(|e| match e {
            WalkError::Missing(_) | WalkError::NotDir(_) => not_found(),
            WalkError::Symlink(at) => invalid(format!(
                "hardlink {shown:?} target {shown_target:?} passes through the symlink {at:?}"
            )),
            WalkError::Io(at, e) => Error::io(format!("open {at:?}"), e),
            WalkError::Name => not_found(),
        })?;
        let target_name = c_name(target_name, &target_raw)?;
        let st = sys::lstat_at(target_dir.as_fd(), &target_name)
            .map_err(|e| Error::io(format!("inspect {shown_target:?}"), e))?
            .ok_or_else(not_found)?;
        if sys::file_type(&st) == libc::S_IFDIR {
            return Err(invalid(format!(
                "hardlink {shown:?} points to the directory {shown_target:?}"
            )));
        }
        let (parent, name) = self.prepare(comps, raw, false)?;
        // A target that is a symlink is linked itself, not followed: the new name is
        // one more name of the symlink, which is as harmless as the symlink.
        sys::linkat(target_dir.as_fd(), &target_name, parent.as_fd(), &name)
            .map_err(|e| Error::io(format!("link {shown:?} to {shown_target:?}"), e))?;
        // The header's metadata is not applied: the inode is the target's, which got
        // its own from its entry.
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn device(
        &mut self,
        header: &tar::Header,
        kind: Kind,
        comps: &[Vec<u8>],
        raw: &[u8],
        meta: &Meta,
    ) -> Result<(), Error> {
        if !self.opts.allow_devices {
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let bad = |e: io::Error| {
            invalid(format!(
                "layer entry {:?} has a bad device number: {e}",
                display(raw)
            ))
        };
        let (major, minor) = match header.as_ustar() {
            Some(ustar) => (
                blank_is_zero(&ustar.dev_major, header.device_major()).map_err(bad)?,
                blank_is_zero(&ustar.dev_minor, header.device_minor()).map_err(bad)?,
            ),
            None => match header.as_gnu() {
                Some(gnu) => (
                    blank_is_zero(&gnu.dev_major, header.device_major()).map_err(bad)?,
                    blank_is_zero(&gnu.dev_minor, header.device_minor()).map_err(bad)?,
                ),
                None => (None, None),
            },
        };
        let (major, minor) = (major.unwrap_or(0), minor.unwrap_or(0));
        let (file_type, major, minor) = match kind {
            Kind::Char => (libc::S_IFCHR, major, minor),
            Kind::Block => (libc::S_IFBLK, major, minor),
            _ => (libc::S_IFIFO, 0, 0),
        };
        let (parent, name) = self.prepare(comps, raw, false)?;
        sys::mknodat(
            parent.as_fd(),
            &name,
            file_type | (meta.mode & 0o777) as libc::mode_t,
            major,
            minor,
        )
        .map_err(|e| Error::io(format!("create {:?}", display(raw)), e))?;
        self.apply_at_meta(parent.as_fd(), &name, comps, meta, raw, true)?;
        self.stats.devices += 1;
        Ok(())
    }

    /// Opens the parent directory of `comps` (creating missing directories) and
    /// clears the way for the entry: an existing non-directory is unlinked, an existing
    /// directory removed whole unless the entry is a directory too.
    fn prepare(
        &mut self,
        comps: &[Vec<u8>],
        raw: &[u8],
        entry_is_dir: bool,
    ) -> Result<(OwnedFd, CString), Error> {
        let Some((name, parents)) = comps.split_last() else {
            return Err(invalid(format!(
                "layer entry {:?} names the layer root",
                display(raw)
            )));
        };
        let parent = self.parent(parents, raw)?;
        let name = c_name(name, raw)?;
        let existing = sys::lstat_at(parent.as_fd(), &name)
            .map_err(|e| Error::io(format!("inspect {:?}", display(raw)), e))?;
        match existing {
            None => {}
            // A directory entry over a directory keeps it and only changes metadata.
            Some(st) if sys::file_type(&st) == libc::S_IFDIR && entry_is_dir => {}
            Some(st) if sys::file_type(&st) == libc::S_IFDIR => {
                self.release(comps, raw)?;
                // Its parents were just checked to be real directories, and
                // remove_dir_all follows no symlink below them.
                std::fs::remove_dir_all(self.host_path(comps))
                    .map_err(|e| Error::io(format!("remove {:?}", display(raw)), e))?;
                self.dirs.retain(|k, _| !k.starts_with(comps));
                if matches!(&self.cached, Some((c, _)) if c.starts_with(comps)) {
                    self.cached = None;
                }
            }
            Some(_) => {
                self.release(comps, raw)?;
                sys::unlinkat(parent.as_fd(), &name)
                    .map_err(|e| Error::io(format!("replace {:?}", display(raw)), e))?
            }
        }
        Ok((parent, name))
    }

    /// The directory `parents` below the root, created where missing, through the
    /// one-entry cache.
    fn parent(&mut self, parents: &[Vec<u8>], raw: &[u8]) -> Result<OwnedFd, Error> {
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| Error::io("duplicate a descriptor", e))
        };
        if let Some((cached, fd)) = &self.cached
            && cached.as_slice() == parents
        {
            return dup(fd);
        }
        let shown = display(raw);
        let fd = self.walk(parents, true).map_err(|e| match e {
            WalkError::Symlink(at) => invalid(format!(
                "layer entry {shown:?} passes through the symlink {at:?}"
            )),
            WalkError::NotDir(at) | WalkError::Missing(at) => invalid(format!(
                "layer entry {shown:?} is below {at:?}, which is not a directory"
            )),
            WalkError::Io(at, e) => Error::io(format!("open {at:?}"), e),
            WalkError::Name => invalid(format!("layer entry {shown:?} has a bad name")),
        })?;
        self.cached = Some((parents.to_vec(), dup(&fd)?));
        Ok(fd)
    }

    /// Opens the directory `comps` below the root one component at a time, never
    /// following a symlink; with `create`, missing directories are made (0755, as
    /// dockerd makes the parents that a tar only implies).
    fn walk(&self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, WalkError> {
        let mut cur: Option<OwnedFd> = None;
        for (i, comp) in comps.iter().enumerate() {
            let at = || display(&comps[..=i].join(&b'/'));
            let name = CString::new(comp.as_slice()).map_err(|_| WalkError::Name)?;
            let dir = cur.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            let next = match sys::open_dir_path(dir, &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    match sys::mkdirat(dir, &name, 0o755) {
                        Ok(()) => {
                            sys::chmod_at(dir, &name, 0o755).map_err(|e| WalkError::Io(at(), e))?
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(WalkError::Io(at(), e)),
                    }
                    sys::open_dir_path(dir, &name).map_err(|e| WalkError::Io(at(), e))?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(WalkError::Missing(at()));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(match sys::lstat_at(dir, &name) {
                        Ok(Some(st)) if sys::file_type(&st) == libc::S_IFLNK => {
                            WalkError::Symlink(at())
                        }
                        Ok(_) => WalkError::NotDir(at()),
                        Err(e) => WalkError::Io(at(), e),
                    });
                }
                Err(e) => return Err(WalkError::Io(at(), e)),
            };
            cur = Some(next);
        }
        match cur {
            Some(fd) => Ok(fd),
            None => self
                .root
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| WalkError::Io(".".into(), e)),
        }
    }

    /// Where `comps` is on the host, for the calls that only take a path.
    fn host_path(&self, comps: &[Vec<u8>]) -> PathBuf {
        let mut path = self.dest.to_path_buf();
        for comp in comps {
            path.push(OsStr::from_bytes(comp));
        }
        path
    }

    /// Owner, mode, extended attributes and times through an open file, in that order:
    /// chown clears setuid and file capabilities, so it goes first.
    fn apply_fd_meta(&mut self, file: &File, meta: &Meta, raw: &[u8]) -> Result<(), Error> {
        let shown = display(raw);
        if let Some((uid, gid)) = meta.owner {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("chown {shown:?}"), e))?;
        }
        file.set_permissions(Permissions::from_mode(meta.mode))
            .map_err(|e| Error::io(format!("chmod {shown:?}"), e))?;
        self.set_xattrs(XattrTarget::Fd(file.as_fd()), meta, raw, false)?;
        sys::set_times_fd(file.as_fd(), meta.mtime)
            .map_err(|e| Error::io(format!("set the times of {shown:?}"), e))
    }

    /// The same for a symlink or device node, by name in its parent; symlinks keep
    /// the mode they are created with, since Linux has no other.
    fn apply_at_meta(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CString,
        comps: &[Vec<u8>],
        meta: &Meta,
        raw: &[u8],
        device: bool,
    ) -> Result<(), Error> {
        let shown = display(raw);
        if let Some((uid, gid)) = meta.owner {
            sys::lchown_at(parent, name, uid, gid)
                .map_err(|e| Error::io(format!("chown {shown:?}"), e))?;
        }
        if device {
            sys::chmod_at(parent, name, meta.mode)
                .map_err(|e| Error::io(format!("chmod {shown:?}"), e))?;
        }
        if !meta.xattrs.is_empty() {
            let path = self.host_path(comps);
            self.set_xattrs(XattrTarget::Path(&path), meta, raw, true)?;
        }
        sys::set_times_at(parent, name, meta.mtime)
            .map_err(|e| Error::io(format!("set the times of {shown:?}"), e))
    }

    fn set_xattrs(
        &mut self,
        target: XattrTarget<'_>,
        meta: &Meta,
        raw: &[u8],
        special: bool,
    ) -> Result<(), Error> {
        for (name, value) in &meta.xattrs {
            let result = match target {
                XattrTarget::Fd(fd) => sys::fsetxattr(fd, name, value),
                XattrTarget::Path(path) => sys::lsetxattr(path, name, value),
            };
            let Err(e) = result else { continue };
            let key = name.as_bytes();
            let skippable = match e.raw_os_error() {
                // The file system keeps no such attribute (ENOTSUP is the same number).
                Some(libc::EOPNOTSUPP) => true,
                Some(libc::EPERM) => {
                    (!self.is_root
                        && (key.starts_with(b"security.") || key.starts_with(b"trusted.")))
                        || (special && key.starts_with(b"user."))
                }
                _ => false,
            };
            if !skippable {
                return Err(Error::io(
                    format!(
                        "set the extended attribute {:?} of {:?}",
                        display(key),
                        display(raw)
                    ),
                    e,
                ));
            }
            self.stats.skipped_xattrs += 1;
        }
        Ok(())
    }

    /// Applies the metadata of directory entries, deepest first, so that a directory
    /// made read-only does not stop the ones below it.
    fn finish_dirs(&mut self) -> Result<(), Error> {
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        // Stable: siblings stay together, so the parent cache serves them.
        dirs.sort_by_key(|(comps, _)| std::cmp::Reverse(comps.len()));
        for (comps, meta) in dirs {
            let raw = comps.join(&b'/');
            let dir = match comps.split_last() {
                None => self
                    .root
                    .try_clone()
                    .map_err(|e| Error::io("duplicate a descriptor", e))?,
                Some((name, parents)) => {
                    let parent = self.parent(parents, &raw)?;
                    let name = c_name(name, &raw)?;
                    sys::open_dir_file(parent.as_fd(), &name)
                        .map_err(|e| Error::io(format!("open {:?}", display(&raw)), e))?
                }
            };
            let shown = if raw.is_empty() { b"." as &[u8] } else { &raw };
            self.apply_fd_meta(&dir, &meta, shown)?;
        }
        Ok(())
    }
}

/// A numeric header field that is all NULs or spaces reads as zero, as Go's
/// archive/tar (and so dockerd) reads it; the `tar` crate calls it an error.
fn blank_is_zero<T: Default>(field: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    if field.iter().all(|&b| b == 0 || b == b' ') {
        Ok(T::default())
    } else {
        parsed
    }
}

/// A name component as a C string; components never hold NUL, so this only fails on
/// a bug upstream, which rejects the entry rather than panicking.
fn c_name(comp: &[u8], raw: &[u8]) -> Result<CString, Error> {
    CString::new(comp).map_err(|_| {
        invalid(format!(
            "layer entry {:?} has a NUL byte in its name",
            display(raw)
        ))
    })
}

/// A PAX time, `[-]seconds[.fraction]`, as seconds and nanoseconds.
fn pax_time(text: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(text).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let secs: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = 0u32;
    for i in 0..9 {
        let digit = fraction
            .as_bytes()
            .get(i)
            .map_or(0, |b| u32::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(match (negative, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, _) => (-secs - 1, 1_000_000_000 - nanos),
    })
}

#[cfg(test)]
mod tests;
