//! How the guest-protocol keys travel between the VCH and the tether.
//!
//! [`Transport`] is the tether's side: read the configuration, write the status.
//!
//! - [`FileTransport`] is the simulator's: the VCH (the simulator's guest runner) writes
//!   the VM's `guestinfo.*` extraConfig keys as a JSON map to
//!   `<vm-folder>/guestinfo.json` before powering on; the tether writes its keys as a
//!   JSON map to `<vm-folder>/guestinfo-out.json`, each time whole and atomically (a
//!   temporary file renamed over it), so a reader never sees half a document.
//!   [`write_config`] and [`read_status`] are the VCH's side of it.
//! - On a real VM a `Transport` would use the VMware tools RPC channel (the backdoor):
//!   `read_config` sends `info-get guestinfo.vice./config` and parses the answer, and
//!   `write_status` sends `info-set guestinfo.vice./status <json>`; the VCH reads the
//!   key back from the VM's `config.extraConfig` (or `guest` properties) through the
//!   vSphere API. The documents are the same.
//!
//! The file transport keeps a descriptor of the VM folder and names files relative to
//! it, so it keeps working after the tether has pivoted into the container's root, where
//! the folder is no longer reachable by path.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use crate::protocol::{GuestConfig, GuestStatus, ProtocolError};

/// The file in the VM folder holding the VCH's keys (a JSON map).
pub const CONFIG_FILE: &str = "guestinfo.json";
/// The file in the VM folder holding the tether's keys (a JSON map).
pub const STATUS_FILE: &str = "guestinfo-out.json";

/// Errors of a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The channel failed.
    #[error("guestinfo i/o on {what}")]
    Io {
        /// Which file or operation.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The keys are not a JSON map of strings.
    #[error("malformed guestinfo map in {what}")]
    Map {
        /// Which file.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A key's document is wrong.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The tether's side of the guest protocol.
pub trait Transport: Send + Sync {
    /// The guest's configuration, as the VCH wrote it.
    fn read_config(&self) -> Result<GuestConfig, TransportError>;
    /// Report `status` to the VCH (replacing the previous report).
    fn write_status(&self, status: &GuestStatus) -> Result<(), TransportError>;
}

/// The simulator's transport: files in the VM folder (see the module documentation).
#[derive(Debug)]
pub struct FileTransport {
    dir: OwnedFd,
    /// The keys written so far (all of them are rewritten each time).
    out: Mutex<BTreeMap<String, String>>,
}

impl FileTransport {
    /// A transport on the VM folder `folder`.
    pub fn open(folder: &Path) -> Result<Self, TransportError> {
        let what = folder.display().to_string();
        let dir = File::open(folder).map_err(io_err(&what))?;
        if !dir.metadata().map_err(io_err(&what))?.is_dir() {
            return Err(TransportError::Io {
                what,
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        Ok(Self {
            dir: dir.into(),
            out: Mutex::new(BTreeMap::new()),
        })
    }

    fn open_at(&self, name: &str, flags: libc::c_int) -> io::Result<File> {
        let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn rename_at(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (cstr(from)?, cstr(to)?);
        let d = self.dir.as_raw_fd();
        // SAFETY: valid descriptors and NUL-terminated names.
        if unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let mut f = self.open_at(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
        f.write_all(data)?;
        f.sync_data()?;
        drop(f);
        self.rename_at(&tmp, name)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl Transport for FileTransport {
    fn read_config(&self) -> Result<GuestConfig, TransportError> {
        let mut s = String::new();
        self.open_at(CONFIG_FILE, libc::O_RDONLY)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map_err(io_err(CONFIG_FILE))?;
        let keys: BTreeMap<String, String> =
            serde_json::from_str(&s).map_err(|source| TransportError::Map {
                what: CONFIG_FILE.to_owned(),
                source,
            })?;
        Ok(GuestConfig::from_keys(&keys)?)
    }

    fn write_status(&self, status: &GuestStatus) -> Result<(), TransportError> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(status.to_keys());
        let json = serde_json::to_vec_pretty(&*out).map_err(|source| TransportError::Map {
            what: STATUS_FILE.to_owned(),
            source,
        })?;
        self.write_atomic(STATUS_FILE, &json)
            .map_err(io_err(STATUS_FILE))
    }
}

/// The VCH's side: write `extra_config` (the VM's `guestinfo.*` keys, including the
/// [`GuestConfig`] under [`CONFIG_KEY`](crate::protocol::CONFIG_KEY)) for the tether in
/// the VM folder `folder`, atomically.
pub fn write_config_keys(
    folder: &Path,
    extra_config: &BTreeMap<String, String>,
) -> Result<(), TransportError> {
    let json = serde_json::to_vec_pretty(extra_config).map_err(|source| TransportError::Map {
        what: CONFIG_FILE.to_owned(),
        source,
    })?;
    let what = folder.display().to_string();
    let tmp = folder.join(format!(".{CONFIG_FILE}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, folder.join(CONFIG_FILE)))
        .map_err(io_err(&what))
}

/// The VCH's side: write `config` for the tether in the VM folder `folder`.
pub fn write_config(folder: &Path, config: &GuestConfig) -> Result<(), TransportError> {
    write_config_keys(folder, &config.to_keys())
}

/// The VCH's side: the status the tether reported in the VM folder `folder`, `None`
/// before its first report.
pub fn read_status(folder: &Path) -> Result<Option<GuestStatus>, TransportError> {
    let path = folder.join(STATUS_FILE);
    let what = path.display().to_string();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&what)(e)),
    };
    let keys: BTreeMap<String, String> =
        serde_json::from_slice(&data).map_err(|source| TransportError::Map { what, source })?;
    Ok(GuestStatus::from_keys(&keys)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{GuestState, Session};

    #[test]
    fn config_and_status_round_trip_through_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let config = GuestConfig {
            id: "c1".into(),
            session: Session {
                path: "echo".into(),
                ..Session::default()
            },
            ..GuestConfig::default()
        };
        write_config(dir.path(), &config).unwrap();
        let t = FileTransport::open(dir.path()).unwrap();
        assert_eq!(t.read_config().unwrap(), config);

        assert_eq!(read_status(dir.path()).unwrap(), None);
        let mut s = GuestStatus {
            state: GuestState::Running,
            pid: Some(2),
            ..GuestStatus::default()
        };
        t.write_status(&s).unwrap();
        assert_eq!(read_status(dir.path()).unwrap(), Some(s.clone()));
        s.state = GuestState::Exited;
        s.exit_code = Some(0);
        t.write_status(&s).unwrap();
        assert_eq!(read_status(dir.path()).unwrap(), Some(s));
        // Only the two files: the temporary one was renamed.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [STATUS_FILE, CONFIG_FILE]);
    }

    #[test]
    fn missing_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let t = FileTransport::open(dir.path()).unwrap();
        assert!(matches!(t.read_config(), Err(TransportError::Io { .. })));
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        assert!(matches!(
            t.read_config(),
            Err(TransportError::Protocol(ProtocolError::MissingKey(_)))
        ));
    }
}
