//! What the simulator needs from this machine: atomic file replacement, the state
//! folder's lock, filesystem sizes, the CPU and memory of the host, and the mapping of
//! datastore paths onto host folders that never leaves a datastore.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use vic_core::{DsPath, Error, Result};

/// Flushes a folder's entries (a rename or a new file in it) to disk.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` through `tmp` (same folder): readers see the old or the
/// new content, and after a crash the file is one or the other.
pub(crate) fn write_atomic(path: &Path, tmp: &Path, data: &[u8]) -> io::Result<()> {
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(tmp, path)?;
        if let Some(dir) = path.parent() {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Takes an exclusive, non-blocking `flock` on `file`. `Ok(false)` when another open
/// file description holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock takes a valid descriptor that `file` owns for the whole call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Size and free space of the filesystem holding a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FsSpace {
    /// Total bytes.
    pub total: u64,
    /// Bytes available to unprivileged users.
    pub free: u64,
}

/// `statvfs` of `path`.
pub(crate) fn fs_space(path: &Path) -> io::Result<FsSpace> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string and `st` points to writable memory of the
    // right type; statvfs fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, avail) = (st.f_frsize as u64, st.f_blocks as u64, st.f_bavail as u64);
    Ok(FsSpace {
        total: blocks.saturating_mul(frsize),
        free: avail.saturating_mul(frsize),
    })
}

/// The CPU cores this process may use.
pub(crate) fn cpu_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// The machine's memory in MiB, from `/proc/meminfo`'s `MemTotal`.
pub(crate) fn memory_mb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// The host folders behind the datastores, canonical, by datastore name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Roots {
    map: BTreeMap<String, PathBuf>,
}

impl Roots {
    /// Registers datastore `name` at `folder`, creating the folder if missing.
    pub(crate) fn add(&mut self, name: &str, folder: &Path) -> Result<()> {
        fs::create_dir_all(folder)
            .map_err(|e| Error::io(format!("create datastore folder {}", folder.display()), e))?;
        let canon = fs::canonicalize(folder)
            .map_err(|e| Error::io(format!("resolve datastore folder {}", folder.display()), e))?;
        self.map.insert(name.to_string(), canon);
        Ok(())
    }

    /// Every datastore folder.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Path> {
        self.map.values().map(PathBuf::as_path)
    }

    /// The host folder of datastore `name`.
    pub(crate) fn root(&self, name: &str) -> Result<&Path> {
        self.map
            .get(name)
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::not_found("datastore", name))
    }

    /// The host path of `p`. Every symbolic link met on the way is resolved and must stay
    /// inside the datastore; the last component is resolved only when `follow_leaf`
    /// (operations on the entry itself, like delete and move, do not follow it).
    pub(crate) fn resolve(&self, p: &DsPath, follow_leaf: bool) -> Result<PathBuf> {
        p.validate()?;
        let root = self.root(&p.datastore)?;
        let comps: Vec<&str> = p.path.split('/').filter(|c| !c.is_empty()).collect();
        let escape = || Error::InvalidArgument(format!("datastore path {p} leaves its datastore"));
        let mut cur = root.to_path_buf();
        for (i, c) in comps.iter().enumerate() {
            let next = cur.join(c);
            if i + 1 == comps.len() && !follow_leaf {
                return Ok(next);
            }
            match fs::symlink_metadata(&next) {
                Ok(m) if m.file_type().is_symlink() => {
                    let real = fs::canonicalize(&next).map_err(|_| escape())?;
                    if !real.starts_with(root) {
                        return Err(escape());
                    }
                    cur = real;
                }
                Ok(_) => cur = next,
                Err(e) if is_missing(&e) => {
                    cur = next;
                    for rest in &comps[i + 1..] {
                        cur.push(rest);
                    }
                    return Ok(cur);
                }
                Err(e) => return Err(Error::io(format!("look up {p}"), e)),
            }
        }
        Ok(cur)
    }
}

/// Whether an error says the entry is not there (also: a parent is not a folder).
pub(crate) fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Maps an I/O error on datastore path `p` to the provider's error: a missing entry is
/// `NotFound { kind: "file" }`.
pub(crate) fn ds_io(what: &str, p: &DsPath, e: io::Error) -> Error {
    if is_missing(&e) {
        Error::not_found("file", p.to_string())
    } else {
        Error::io(format!("{what} {p}"), e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24684312 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(text), Some(24105));
        assert_eq!(parse_mem_total("nothing"), None);
        assert!(memory_mb().is_some_and(|m| m > 0));
        assert!(cpu_cores() >= 1);
    }

    #[test]
    fn space_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = fs_space(dir.path()).unwrap();
        assert!(s.total > 0 && s.free <= s.total);
        let a = File::create(dir.path().join("lock")).unwrap();
        let b = File::open(dir.path().join("lock")).unwrap();
        assert!(try_lock_exclusive(&a).unwrap());
        assert!(!try_lock_exclusive(&b).unwrap());
        drop(a);
        assert!(try_lock_exclusive(&b).unwrap());
    }

    #[test]
    fn resolution_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("ds");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let mut roots = Roots::default();
        roots.add("ds", &ds).unwrap();
        let root = roots.root("ds").unwrap().to_path_buf();
        fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink("a/b", root.join("in")).unwrap();

        let p = |s: &str| DsPath::new("ds", s);
        assert_eq!(
            roots.resolve(&p("a/b/c"), true).unwrap(),
            root.join("a/b/c")
        );
        assert_eq!(roots.resolve(&p("in/x"), true).unwrap(), root.join("a/b/x"));
        assert!(roots.resolve(&p("out/x"), true).is_err());
        assert!(roots.resolve(&p("out"), true).is_err());
        // the link itself may be named (to delete it) without following it
        assert_eq!(roots.resolve(&p("out"), false).unwrap(), root.join("out"));
        assert!(roots.resolve(&p("a/../../x"), true).is_err());
        assert!(roots.resolve(&DsPath::new("nope", "x"), true).is_err());
    }
}
