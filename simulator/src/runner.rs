//! [`TetherRunner`]: the guest runner that makes a powered-on container VM run its
//! container, with the real `tether` binary as the guest's init.
//!
//! ## Powering on (`start`)
//! A VM whose extraConfig has no [`CONFIG_KEY`] has no guest to run (nothing happens).
//! Otherwise the runner
//! 1. finds the VM's read-write disk (the disk device with a parent) and walks the parent
//!    chain through the disk descriptors: the image's layer trees (`<stem>-fs/` beside
//!    each `<stem>.vmdk`), top first; the read-write disk's own tree is the upper layer
//!    (made when missing);
//! 2. assembles the root file system at `<vm-folder>/rootfs`: an overlay mount, made in
//!    the guest's own mount namespace just before the tether starts (lower =
//!    the layer trees, upper = the read-write tree, work = `<vm-folder>/work`). Layer
//!    trees keep AUFS whiteouts as plain files (`.wh.<name>`, `.wh..wh..opq`); a layer
//!    that has some is converted once into the overlay format in a cache beside it,
//!    `<stem>-ovl/<cid>/` (whiteouts become 0:0 character devices, opaque markers the
//!    xattr `trusted.overlay.opaque=y`, other files are hard links into the tree), made
//!    under a temporary name and renamed into place; `<stem>-ovl/<cid>.plain` records
//!    that a layer has no whiteouts, so it is used as it is and not scanned again (the
//!    `cid` is the disk's content id, so a new disk at the same path never sees a stale
//!    cache). When the overlay mount fails (or the options do not fit in a page), the
//!    layers are copy-merged into the read-write tree once (top layer first; whiteouts
//!    and opaque markers applied; `<vm-folder>/rootfs.merged` marks it done) and the
//!    read-write tree itself is the guest's root from then on. A log line says which
//!    path ran;
//! 3. writes the VM's `guestinfo.*` keys to `<vm-folder>/guestinfo.json`, removes the
//!    status file of an earlier run, starts `tether <vm-folder> <rootfs>` as PID 1 of new
//!    mount, PID, UTS, IPC and network namespaces (and user, when not root), detached
//!    (it outlives the endpoint; see [`vic_tether::launch`]), in its cgroups, and
//!    records its PID and start time in `<vm-folder>/guest.pid`. The overlay mount
//!    lives in the guest's mount namespace only: it goes when the guest goes.
//!
//! ## Powering off (`stop`)
//! A hard power-off, as of a VM: SIGKILL to the guest's PID 1 (the kernel ends its
//! whole PID namespace), a wait of at most [`KILL_WAIT`] for it to go, then its
//! cgroups are removed. A guest killed so writes no exit status; the runner writes
//! `exited` with 137. (A graceful stop, the container's stop signal and a timeout, is
//! the engine's, before it powers the VM off; a guest that ends by its stop signal
//! has written its own status, which is kept.)
//!
//! ## A guest that ends by itself (`check`, `release`)
//! [`crate::Simulator::reconcile_guests`] asks `check`: the guest's PID (and start time,
//! so a reused PID is not mistaken for it) alive → running; gone → exited, with the keys
//! of `guestinfo-out.json`. A guest gone without an `exited` status gets one: 137 when it
//! was running (killed), 128 with an error when it never got its process running.
//! `release` then removes its cgroups.
//!
//! ## CPU and memory limits
//! The guest runs in cgroups `vic/<vm>-<hash of the state folder>` with the VM's CPU
//! and memory limits, v2 or v1 (see [`cgroup`]); the tether is put into them before it
//! execs. Without permission to make cgroups (non-root, not delegated) it runs
//! without limits, with a warning.
//!
//! ## Non-root
//! When the endpoint is not root, the guest's namespaces come with a new user
//! namespace in which uid 0 and gid 0 are the endpoint's own ids (one id each, mapped
//! by the runner itself: no `newuidmap` helper, so `setgroups` is denied there and
//! users other than root in the image cannot be switched to). The overlay mount is
//! made inside that namespace with `userxattr`, so the converted layers mark opaque
//! folders with `user.overlay.opaque` (a cache of its own, `<stem>-ovl/<cid>-user/`;
//! whiteout devices 0:0 may be made unprivileged); where the overlay fails, the
//! copy-merge serves. Files of the layers owned by the endpoint's user are root's in
//! the guest; others are `nobody`'s. The tether binds the host's device nodes instead
//! of making them and binds the host's /sys read-only where it may not mount sysfs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};
use vic_core::provider::{Device, VmInfo};
use vic_core::{DsPath, Error, Result};
use vic_tether::protocol::{CONFIG_KEY, GuestConfig, GuestState, GuestStatus};
use vic_tether::transport::{CONFIG_FILE, STATUS_FILE};

use crate::guest::{GuestCheck, GuestHost, GuestRunner};
use crate::storage::{layer_tree, read_descriptor};

pub mod cgroup;

/// The environment variable naming the tether binary.
pub const TETHER_BIN_ENV: &str = "VIC_TETHER_BIN";
/// The file in the VM folder with the guest's PID and start time (`<pid> <start>`; the
/// start time in clock ticks after boot, field 22 of `/proc/<pid>/stat`).
pub const GUEST_PID_FILE: &str = "guest.pid";
/// The mount point of the guest's root file system in the VM folder.
pub const ROOTFS_DIR: &str = "rootfs";
/// The overlay work folder in the VM folder.
pub const WORK_DIR: &str = "work";
/// Marks a VM folder whose read-write tree holds the whole copy-merged root.
pub const MERGED_MARK: &str = "rootfs.merged";
/// How long a power-off waits for a guest to go after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(1);
/// How long cgroups of a guest that is gone are retried when still busy.
const CGROUP_RELEASE_WAIT: Duration = Duration::from_secs(30);
/// The most layers a disk chain may have.
const MAX_CHAIN: usize = 256;
/// The size limit of mount options (one page).
const MAX_MOUNT_DATA: usize = 4000;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const AUFS_META_PREFIX: &str = ".wh..wh.";
/// The opaque-folder xattr of overlay mounts made by root.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The opaque-folder xattr of overlay mounts with `userxattr` (in a user namespace).
const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The guest runner that runs container VMs with the `tether` (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct TetherRunner {
    tether: Option<PathBuf>,
    overlay: bool,
    cgroups: bool,
}

impl Default for TetherRunner {
    fn default() -> Self {
        Self::new()
    }
}

/// How the root file system of a guest was assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsMode {
    /// An overlay mount at `<vm-folder>/rootfs`.
    Overlay,
    /// The read-write tree, with the layers copy-merged into it.
    Merged,
}

/// The root file system of a guest about to start.
struct Root {
    /// The path given to the tether.
    path: PathBuf,
    /// The overlay mount to make in the guest's mount namespace (mode `Overlay`).
    mount: Option<vic_tether::launch::Mount>,
    /// What the copy-merge fallback needs: the read-write tree and the layer trees.
    upper: PathBuf,
    lowers: Vec<PathBuf>,
}

/// Whether this process runs as root (else the guests get a user namespace).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl TetherRunner {
    /// A runner that finds the tether binary when it starts a guest (see
    /// [`TetherRunner::find_tether`]).
    pub fn new() -> Self {
        Self {
            tether: None,
            overlay: true,
            cgroups: true,
        }
    }

    /// Uses the tether binary at `path`.
    pub fn with_tether(mut self, path: impl Into<PathBuf>) -> Self {
        self.tether = Some(path.into());
        self
    }

    /// Never tries overlay mounts: always copy-merges the layers (the fallback path).
    pub fn without_overlay(mut self) -> Self {
        self.overlay = false;
        self
    }

    /// Puts guests in no cgroups (no CPU and memory limits).
    pub fn without_cgroups(mut self) -> Self {
        self.cgroups = false;
        self
    }

    /// The tether binary: `VIC_TETHER_BIN`; else `tether` next to the current
    /// executable (or one folder up, for test executables in cargo's `deps/`); else
    /// `tether` on `PATH`.
    pub fn find_tether() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(TETHER_BIN_ENV) {
            return Ok(PathBuf::from(p));
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            let beside = dir.join("tether");
            if beside.is_file() {
                return Ok(beside);
            }
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
                && up.join("tether").is_file()
            {
                return Ok(up.join("tether"));
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let p = dir.join("tether");
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(Error::Unavailable(format!(
            "no tether binary to run guests: set {TETHER_BIN_ENV}, or put `tether` next to \
             the endpoint or on PATH"
        )))
    }

    fn tether(&self) -> Result<PathBuf> {
        match &self.tether {
            Some(p) => Ok(p.clone()),
            None => Self::find_tether(),
        }
    }

    /// Prepares the root file system of `vm` (see the module documentation): the
    /// overlay mount to make (`user`: inside a user namespace), or the copy-merged
    /// read-write tree.
    fn assemble(&self, host: &GuestHost, vm: &VmInfo, folder: &Path, user: bool) -> Result<Root> {
        let (rw_disk, layers) = disk_chain(host, vm)?;
        let upper = layer_tree(&host.host_path(&rw_disk)?);
        match fs::create_dir(&upper) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", upper.display()), e)),
        }
        if folder.join(MERGED_MARK).exists() {
            info!(vm = %vm.name, "root file system: the copy-merged read-write tree");
            return Ok(Root {
                path: upper.clone(),
                mount: None,
                upper,
                lowers: Vec::new(),
            });
        }
        let trees: Vec<(PathBuf, u32)> = layers
            .iter()
            .map(|(disk, cid)| Ok((layer_tree(&host.host_path(disk)?), *cid)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|(t, _)| t.is_dir())
            .collect();
        let lowers: Vec<PathBuf> = trees.iter().map(|(t, _)| t.clone()).collect();
        if self.overlay {
            match overlay_mount(folder, &upper, &trees, user) {
                Ok(m) => {
                    return Ok(Root {
                        path: m.target.clone(),
                        mount: Some(m),
                        upper,
                        lowers,
                    });
                }
                Err(e) => {
                    warn!(vm = %vm.name, error = %e, "no overlay for this root; copy-merging the layers");
                }
            }
        }
        let path = copy_merge(vm, folder, &upper, &lowers)?;
        Ok(Root {
            path,
            mount: None,
            upper,
            lowers,
        })
    }

    /// Starts the tether on `root`, in cgroups `groups`; falls back to the copy-merge
    /// when the overlay mount fails.
    fn launch(
        &self,
        vm: &VmInfo,
        tether: &Path,
        folder: &Path,
        root: &Root,
        groups: Option<&cgroup::Groups>,
    ) -> Result<(libc::pid_t, RootfsMode)> {
        use vic_tether::launch::{Launch, LaunchError};
        let start = |path: &Path, mount: Option<&vic_tether::launch::Mount>| {
            let mut l = Launch::new(tether, folder, path);
            if !is_root() {
                // SAFETY: getuid and getgid have no preconditions.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                l = l.user_namespace(uid, gid);
            }
            if let Some(m) = mount {
                l = l.mount_first(m.clone());
            }
            l.spawn(|pid| groups.map_or(Ok(()), |g| g.add(pid)))
        };
        let failed = |e: LaunchError| {
            let e = e.into_io();
            Error::io(format!("start the tether {}", tether.display()), e)
        };
        let Some(mount) = &root.mount else {
            return start(&root.path, None)
                .map(|pid| (pid, RootfsMode::Merged))
                .map_err(failed);
        };
        match start(&root.path, Some(mount)) {
            Ok(pid) => {
                info!(vm = %vm.name, layers = root.lowers.len(), user_namespace = !is_root(), "root file system: overlay mount");
                Ok((pid, RootfsMode::Overlay))
            }
            Err(LaunchError::Mount(e)) => {
                warn!(vm = %vm.name, error = %e, "overlay mount failed; copy-merging the layers");
                let path = copy_merge(vm, folder, &root.upper, &root.lowers)?;
                start(&path, None)
                    .map(|pid| (pid, RootfsMode::Merged))
                    .map_err(failed)
            }
            Err(e) => Err(failed(e)),
        }
    }
}

/// Copy-merges `lowers` into `upper` once (marked in `folder`); returns `upper`.
fn copy_merge(vm: &VmInfo, folder: &Path, upper: &Path, lowers: &[PathBuf]) -> Result<PathBuf> {
    let marked = folder.join(MERGED_MARK);
    if marked.exists() {
        return Ok(upper.to_path_buf());
    }
    merge_layers(upper, lowers)
        .map_err(|e| Error::io(format!("copy-merge the layers into {}", upper.display()), e))?;
    fs::write(&marked, b"").map_err(|e| Error::io(format!("write {}", marked.display()), e))?;
    info!(vm = %vm.name, layers = lowers.len(), "root file system: layers copy-merged into the read-write tree");
    Ok(upper.to_path_buf())
}

/// The name of a VM's cgroups: its reference and a hash of the simulator's state
/// folder (simulators sharing a host number their VMs alike).
fn cgroup_name(host: &GuestHost, vm: &VmInfo) -> String {
    // FNV-1a, 32 bits: stable across builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in host.state_dir().as_os_str().as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let id: String = vm
        .reference
        .value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}-{h:08x}")
}

impl GuestRunner for TetherRunner {
    fn start(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let Some(raw) = vm.extra_config.get(CONFIG_KEY) else {
            debug!(vm = %vm.name, "no guest configuration: no guest to run");
            return Ok(());
        };
        // Fail early, before anything is mounted, on a configuration the tether rejects.
        let config: GuestConfig = serde_json::from_str(raw).map_err(|e| {
            Error::InvalidArgument(format!("malformed {CONFIG_KEY} of VM {}: {e}", vm.name))
        })?;
        let tether = self.tether()?;
        let folder = host.host_path(&vm.files)?;
        // What an earlier run may have left: a guest (a crash between starting it and
        // recording the power-on), a mount (of an older runner), cgroups.
        if let Some(g) = read_guest(&folder)
            && g.alive()
        {
            warn!(vm = %vm.name, pid = g.pid, "a guest of an earlier run still runs; killing it");
            g.kill_and_wait(libc::SIGKILL, KILL_WAIT);
        }
        unmount(&folder.join(ROOTFS_DIR));
        if let Some(old) = cgroup::Groups::recorded(&folder) {
            old.remove(KILL_WAIT);
            remove_if_exists(&folder.join(cgroup::CGROUPS_FILE)).map_err(|e| {
                Error::io(format!("clear the guest files in {}", folder.display()), e)
            })?;
        }
        let root = self.assemble(host, vm, &folder, !is_root())?;
        let keys = vic_tether::protocol::keys_for_guest(&vm.extra_config);
        remove_if_exists(&folder.join(STATUS_FILE))
            .and_then(|()| remove_if_exists(&folder.join(GUEST_PID_FILE)))
            .map_err(|e| Error::io(format!("clear the guest files in {}", folder.display()), e))
            .and_then(|()| {
                vic_tether::transport::write_config_keys(&folder, &keys).map_err(|e| {
                    Error::Internal(format!("write {CONFIG_FILE} of VM {}: {e}", vm.name))
                })
            })?;
        let groups = if self.cgroups {
            let limits = cgroup::Limits::of(vm);
            let layout = cgroup::Layout::detect();
            let name = cgroup_name(host, vm);
            let g = cgroup::Groups::create(&layout, &name, &limits)
                .map_err(|e| Error::io(format!("make the cgroups of VM {}", vm.name), e))?;
            if let Some(g) = &g
                && let Err(e) = g.record(&folder)
            {
                g.remove(Duration::ZERO);
                return Err(Error::io(
                    format!("record the cgroups of VM {}", vm.name),
                    e,
                ));
            }
            g
        } else {
            None
        };
        let undo_groups = || {
            if let Some(g) = &groups {
                g.remove(KILL_WAIT);
                let _ = fs::remove_file(folder.join(cgroup::CGROUPS_FILE));
            }
        };
        let (pid, mode) = match self.launch(vm, &tether, &folder, &root, groups.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                undo_groups();
                return Err(e);
            }
        };
        // A guest that is already gone (a quick `true`) is recorded without a start
        // time: it is never alive again.
        let guest = Guest {
            pid,
            start: start_time(pid).unwrap_or(0),
        };
        let pid_file = folder.join(GUEST_PID_FILE);
        if let Err(e) = write_atomic(
            &pid_file,
            format!("{} {}\n", guest.pid, guest.start).as_bytes(),
        ) {
            guest.kill_and_wait(libc::SIGKILL, KILL_WAIT);
            undo_groups();
            return Err(Error::io(format!("write {}", pid_file.display()), e));
        }
        host.notify_when_gone(pid);
        info!(vm = %vm.name, container = %config.id, pid, ?mode, tether = %tether.display(), "guest started");
        Ok(())
    }

    fn stop(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let folder = host.host_path(&vm.files)?;
        let mut gone = true;
        if let Some(g) = read_guest(&folder)
            && g.alive()
        {
            debug!(vm = %vm.name, pid = g.pid, "powering the guest off: SIGKILL");
            gone = g.kill_and_wait(libc::SIGKILL, KILL_WAIT);
            if !gone {
                // Its processes are going (the kernel tears the PID namespace down);
                // the VM is off all the same.
                warn!(vm = %vm.name, pid = g.pid, wait = ?KILL_WAIT, "the guest is still going after SIGKILL");
            }
            record_killed(&folder, 128 + libc::SIGKILL);
        }
        unmount(&folder.join(ROOTFS_DIR));
        if gone {
            remove_work_dir(&folder);
        }
        cgroup::release(&folder, CGROUP_RELEASE_WAIT);
        Ok(())
    }

    fn check(&self, host: &GuestHost, vm: &VmInfo) -> GuestCheck {
        let Ok(folder) = host.host_path(&vm.files) else {
            return GuestCheck::Untracked;
        };
        let Some(g) = read_guest(&folder) else {
            return GuestCheck::Untracked;
        };
        // Liveness first: a guest found gone has written its last status already.
        let alive = g.alive();
        let mut keys = read_out_keys(&folder);
        if alive {
            // Guests of an earlier endpoint are watched from now on too.
            host.notify_when_gone(g.pid);
            return GuestCheck::Running(keys);
        }
        let status = GuestStatus::from_keys(&keys).ok().flatten();
        if status
            .as_ref()
            .is_none_or(|s| s.state != GuestState::Exited)
        {
            let (code, error) = match &status {
                Some(s) if s.state == GuestState::Running => (128 + libc::SIGKILL, None),
                _ => (
                    128,
                    Some(format!(
                        "the guest ended before it ran the process; see {}",
                        folder.join(vic_tether::launch::TETHER_LOG).display()
                    )),
                ),
            };
            let s = exited_status(status, code, error);
            write_out_keys(&folder, &s);
            keys.extend(s.to_keys());
        }
        GuestCheck::Exited(keys)
    }

    fn release(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let folder = host.host_path(&vm.files)?;
        unmount(&folder.join(ROOTFS_DIR));
        remove_work_dir(&folder);
        cgroup::release(&folder, CGROUP_RELEASE_WAIT);
        Ok(())
    }
}

/// The read-write disk of `vm` and the layers below it (path and content id), top first.
fn disk_chain(host: &GuestHost, vm: &VmInfo) -> Result<(DsPath, Vec<(DsPath, u32)>)> {
    let rw = vm
        .devices
        .iter()
        .find_map(|d| match d {
            Device::Disk {
                file,
                parent: Some(_),
                ..
            } => Some(file.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "VM {} has no child disk to hold the container's root file system",
                vm.name
            ))
        })?;
    let mut layers = Vec::new();
    let mut next = read_descriptor(&host.roots, &rw)?.parent;
    while let Some(p) = next {
        if layers.len() >= MAX_CHAIN || layers.iter().any(|(l, _)| *l == p) {
            return Err(Error::InvalidArgument(format!(
                "the disk chain of {rw} is too long or has a loop"
            )));
        }
        let d = read_descriptor(&host.roots, &p)?;
        next = d.parent;
        layers.push((p, d.cid));
    }
    Ok((rw, layers))
}

/// The overlay mount of `trees` (top first) under `upper` at `<folder>/rootfs`, to be
/// made in the guest's mount namespace; `user`: by the root of a user namespace
/// (`userxattr`, and the layers converted with `user.overlay.*` xattrs).
fn overlay_mount(
    folder: &Path,
    upper: &Path,
    trees: &[(PathBuf, u32)],
    user: bool,
) -> io::Result<vic_tether::launch::Mount> {
    let mut lowers = Vec::new();
    for (tree, cid) in trees {
        lowers.push(overlay_lower(tree, *cid, user)?);
    }
    let rootfs = folder.join(ROOTFS_DIR);
    let work = folder.join(WORK_DIR);
    for d in [&rootfs, &work] {
        match fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    if lowers.is_empty() {
        // overlay needs a lower layer: an empty one stands for the empty image.
        let empty = folder.join("empty-lower");
        match fs::create_dir(&empty) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        lowers.push(empty);
    }
    let lowerdir: Vec<String> = lowers.iter().map(|l| escape_option(l)).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        escape_option(upper),
        escape_option(&work)
    );
    if user {
        data.push_str(",userxattr");
    }
    if data.len() > MAX_MOUNT_DATA {
        return Err(io::Error::other(format!(
            "the overlay options of {} layers do not fit in a page ({} bytes)",
            lowers.len(),
            data.len()
        )));
    }
    Ok(vic_tether::launch::Mount {
        source: "overlay".into(),
        target: rootfs,
        fstype: "overlay".into(),
        data,
    })
}

/// Escapes the characters overlay's option parser treats specially.
fn escape_option(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The overlay lower folder of a layer tree: the tree itself when it has no whiteouts,
/// else its converted copy in the cache beside it (made once; `user`: the copy for
/// `userxattr` mounts, `<cid>-user`, with `user.overlay.opaque`).
fn overlay_lower(tree: &Path, cid: u32, user: bool) -> io::Result<PathBuf> {
    let name = tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix("-fs").unwrap_or(&name);
    let cache = tree.with_file_name(format!("{stem}-ovl"));
    let converted = if user {
        cache.join(format!("{cid:08x}-user"))
    } else {
        cache.join(format!("{cid:08x}"))
    };
    let opaque_xattr = if user {
        USER_OPAQUE_XATTR
    } else {
        OPAQUE_XATTR
    };
    let plain = cache.join(format!("{cid:08x}.plain"));
    if converted.is_dir() {
        return Ok(converted);
    }
    if plain.is_file() {
        return Ok(tree.to_path_buf());
    }
    match fs::create_dir(&cache) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    if !has_whiteouts(tree)? {
        write_atomic(&plain, b"")?;
        return Ok(tree.to_path_buf());
    }
    let tmp = cache.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let built = (|| {
        fs::create_dir(&tmp)?;
        convert_tree(tree, &tmp, opaque_xattr, &mut HashMap::new())?;
        copy_meta(tree, &tmp)?;
        fs::rename(&tmp, &converted)
    })();
    match built {
        Ok(()) => {
            debug!(tree = %tree.display(), "layer converted to the overlay format");
            Ok(converted)
        }
        // Someone else made it first.
        Err(_) if converted.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(converted)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn has_whiteouts(dir: &Path) -> io::Result<bool> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_name()
            .as_bytes()
            .starts_with(WHITEOUT_PREFIX.as_bytes())
        {
            return Ok(true);
        }
        if e.file_type()?.is_dir() && has_whiteouts(&e.path())? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies the folder `src` of a layer tree to `dst` (which exists) in the overlay
/// format: whiteouts become 0:0 character devices, opaque markers the xattr
/// `opaque_xattr`, files are hard links to the tree's.
fn convert_tree(
    src: &Path,
    dst: &Path,
    opaque_xattr: &str,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name();
        let bytes = name.as_bytes();
        if bytes == OPAQUE_MARKER.as_bytes() {
            set_xattr(dst, opaque_xattr, b"y")?;
            continue;
        }
        if bytes.starts_with(AUFS_META_PREFIX.as_bytes()) {
            continue;
        }
        if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let target = dst.join(std::ffi::OsStr::from_bytes(hidden));
            match mknod(&target, libc::S_IFCHR, 0) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
            continue;
        }
        let from = e.path();
        let to = dst.join(&name);
        let meta = fs::symlink_metadata(&from)?;
        if meta.is_dir() {
            fs::create_dir(&to)?;
            convert_tree(&from, &to, opaque_xattr, links)?;
            copy_meta(&from, &to)?;
        } else {
            copy_entry(&from, &to, &meta, true, links)?;
        }
    }
    Ok(())
}

/// Copies the non-folder entry `from` to the new `to`: a regular file as a hard link
/// (when `link`) or a copy (hard links among copies kept), a symbolic link, a device
/// or a fifo; sockets are skipped. Owner, mode, xattrs and times come along.
fn copy_entry(
    from: &Path,
    to: &Path,
    meta: &fs::Metadata,
    link: bool,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        if link && fs::hard_link(from, to).is_ok() {
            return Ok(());
        }
        let id = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = links.get(&id)
            && fs::hard_link(first, to).is_ok()
        {
            return Ok(());
        }
        fs::copy(from, to)?;
        if meta.nlink() > 1 {
            links.insert(id, to.to_path_buf());
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            return Ok(());
        }
        mknod(to, meta.mode() & libc::S_IFMT, meta.rdev())?;
    }
    copy_meta(from, to)
}

/// Gives `to` the owner, mode, xattrs and times of `from` (best effort for xattrs).
fn copy_meta(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let t = cpath(to)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::lchown(t.as_ptr(), meta.uid(), meta.gid()) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    copy_xattrs(from, to);
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            t.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) {
    let (Ok(f), Ok(t)) = (cpath(from), cpath(to)) else {
        return;
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: the buffer and its length.
    let n = unsafe { libc::llistxattr(f.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return;
    }
    names.truncate(n as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        // SAFETY: the buffer and its length.
        let len = unsafe {
            libc::lgetxattr(
                f.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            continue;
        }
        // SAFETY: the value and its length.
        unsafe {
            libc::lsetxattr(
                t.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            );
        }
    }
}

/// What higher layers hide from lower ones, as paths relative to the root.
#[derive(Default)]
struct Masks {
    hidden: HashSet<PathBuf>,
    opaque: HashSet<PathBuf>,
}

/// Copy-merges the layer trees `lowers` (top first, AUFS whiteouts) into the read-write
/// tree `upper`: every path takes the entry of the topmost layer that has it, unless a
/// whiteout or an opaque folder above hides it. What `upper` holds wins; overlay
/// whiteouts and opaque markers it holds (from earlier overlay runs) are applied and
/// removed.
fn merge_layers(upper: &Path, lowers: &[PathBuf]) -> io::Result<()> {
    let mut masks = Masks::default();
    scan_upper(upper, Path::new(""), &mut masks)?;
    for layer in lowers {
        merge_layer(layer, upper, Path::new(""), &mut masks, &mut HashMap::new())?;
    }
    Ok(())
}

fn scan_upper(root: &Path, rel: &Path, masks: &mut Masks) -> io::Result<()> {
    let dir = root.join(rel);
    for xattr in [OPAQUE_XATTR, USER_OPAQUE_XATTR] {
        if get_xattr(&dir, xattr).as_deref() == Some(b"y") {
            masks.opaque.insert(rel.to_path_buf());
            remove_xattr(&dir, xattr);
        }
    }
    for e in fs::read_dir(&dir)? {
        let e = e?;
        let p = rel.join(e.file_name());
        let meta = fs::symlink_metadata(e.path())?;
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            masks.hidden.insert(p);
            fs::remove_file(e.path())?;
        } else if meta.is_dir() {
            scan_upper(root, &p, masks)?;
        }
    }
    Ok(())
}

fn merge_layer(
    layer: &Path,
    dst_root: &Path,
    rel: &Path,
    masks: &mut Masks,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut whiteouts = Vec::new();
    let mut opaque = false;
    for e in fs::read_dir(layer.join(rel))? {
        let e = e?;
        let name = e.file_name();
        let bytes = name.as_bytes();
        if bytes == OPAQUE_MARKER.as_bytes() {
            opaque = true;
            continue;
        }
        if bytes.starts_with(AUFS_META_PREFIX.as_bytes()) {
            continue;
        }
        if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            whiteouts.push(rel.join(std::ffi::OsStr::from_bytes(hidden)));
            continue;
        }
        let p = rel.join(&name);
        if masks.hidden.contains(&p) {
            continue;
        }
        let src = e.path();
        let dst = dst_root.join(&p);
        let smeta = fs::symlink_metadata(&src)?;
        match fs::symlink_metadata(&dst) {
            Ok(d) => {
                if d.is_dir() && smeta.is_dir() && !masks.opaque.contains(&p) {
                    merge_layer(layer, dst_root, &p, masks, links)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if smeta.is_dir() {
                    fs::create_dir(&dst)?;
                    merge_layer(layer, dst_root, &p, masks, links)?;
                    copy_meta(&src, &dst)?;
                } else {
                    copy_entry(&src, &dst, &smeta, false, links)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
    // They hide what the layers below this one have, not this layer's own entries.
    masks.hidden.extend(whiteouts);
    if opaque {
        masks.opaque.insert(rel.to_path_buf());
    }
    Ok(())
}

/// A guest as recorded in `guest.pid`.
#[derive(Clone, Copy, Debug)]
struct Guest {
    pid: libc::pid_t,
    /// Its start time (0: it was gone when recorded).
    start: u64,
}

impl Guest {
    /// Whether the process still runs (a zombie does not).
    fn alive(&self) -> bool {
        if self.start == 0 || self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some((state, start)) if start == self.start => {
                if state == 'Z' {
                    // Reaps it when it is our own child (the caller is a subreaper);
                    // only then, so no other child of this process is ever reaped.
                    // SAFETY: waitpid with WNOHANG on the guest's pid; no memory passed.
                    unsafe {
                        libc::waitpid(self.pid, std::ptr::null_mut(), libc::WNOHANG);
                    }
                }
                state != 'Z' && state != 'X'
            }
            _ => false,
        }
    }

    /// Sends `signal` and waits up to `wait` for the guest to go; true when it went.
    fn kill_and_wait(&self, signal: libc::c_int, wait: Duration) -> bool {
        if !self.alive() {
            return true;
        }
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid, signal);
        }
        let deadline = Instant::now() + wait;
        loop {
            if !self.alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The state letter and start time of process `pid`.
fn proc_stat(pid: libc::pid_t) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: libc::pid_t) -> Option<u64> {
    proc_stat(pid).filter(|(s, _)| *s != 'Z').map(|(_, t)| t)
}

fn read_guest(folder: &Path) -> Option<Guest> {
    let s = fs::read_to_string(folder.join(GUEST_PID_FILE)).ok()?;
    let mut it = s.split_whitespace();
    Some(Guest {
        pid: it.next()?.parse().ok()?,
        start: it.next().and_then(|t| t.parse().ok()).unwrap_or(0),
    })
}

/// The tether's keys from `guestinfo-out.json`; empty when it wrote none (or a
/// malformed file).
fn read_out_keys(folder: &Path) -> BTreeMap<String, String> {
    fs::read(folder.join(STATUS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Merges `status` into `guestinfo-out.json` (as the tether writes it: whole, atomically).
fn write_out_keys(folder: &Path, status: &GuestStatus) {
    let mut keys = read_out_keys(folder);
    keys.extend(status.to_keys());
    let written = serde_json::to_vec_pretty(&keys)
        .map_err(io::Error::other)
        .and_then(|json| write_atomic(&folder.join(STATUS_FILE), &json));
    if let Err(e) = written {
        warn!(folder = %folder.display(), error = %e, "cannot record the guest's exit status");
    }
}

fn exited_status(last: Option<GuestStatus>, code: i32, error: Option<String>) -> GuestStatus {
    let mut s = last.unwrap_or_default();
    s.state = GuestState::Exited;
    s.finished_at = Some(SystemTime::now());
    s.exit_code = Some(code);
    if error.is_some() {
        s.error = error;
    }
    s
}

/// Records that the guest in `folder` was killed (it wrote no status of its own).
fn record_killed(folder: &Path, code: i32) {
    let last = GuestStatus::from_keys(&read_out_keys(folder))
        .ok()
        .flatten();
    if last.as_ref().is_some_and(|s| s.state == GuestState::Exited) {
        return;
    }
    write_out_keys(folder, &exited_status(last, code, None));
}

/// Unmounts `path` if something is mounted there (lazily when it is busy). Only root
/// mounts on the host (older runners did); a non-root runner's mounts live in its
/// guests' namespaces.
fn unmount(path: &Path) {
    if !is_root() {
        return;
    }
    let Ok(c) = cpath(path) else { return };
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        debug!(path = %path.display(), "unmounted");
        return;
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => {}
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        _ => warn!(path = %path.display(), error = %e, "cannot unmount"),
    }
}

/// Removes the overlay work folder of a guest that is gone. Overlay leaves
/// `work/work` with mode 000: removable by root only, unless made accessible first
/// (the folder of a non-root runner's VM could not be deleted otherwise).
fn remove_work_dir(folder: &Path) {
    let work = folder.join(WORK_DIR);
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    if !work.is_dir() {
        return;
    }
    open_up(&work);
    if let Err(e) = fs::remove_dir_all(&work) {
        warn!(path = %work.display(), error = %e, "cannot remove the overlay work folder");
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn mknod(p: &Path, kind: libc::mode_t, dev: u64) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev as libc::dev_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (c, n) = (cpath(p)?, CString::new(name).map_err(io::Error::other)?);
    // SAFETY: NUL-terminated strings and the value with its length.
    if unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (c, n) = (cpath(p).ok()?, CString::new(name).ok()?);
    let mut buf = vec![0u8; 256];
    // SAFETY: the buffer and its length.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

fn remove_xattr(p: &Path, name: &str) {
    if let (Ok(c), Ok(n)) = (cpath(p), CString::new(name)) {
        // SAFETY: NUL-terminated strings.
        unsafe {
            libc::lremovexattr(c.as_ptr(), n.as_ptr());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Cursor;
    use std::os::unix::fs::FileTypeExt;
    use std::process::Command;

    use vic_core::provider::{Compute, DeviceSpec, DiskMode, DiskSpec, FileOperation, PowerState};
    use vic_tether::protocol::Session;

    use super::*;
    use crate::Simulator;
    use crate::testutil::{open_temp, small_vm};

    const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    /// Root and a tether binary, or a message saying why the test is skipped.
    fn can_run() -> bool {
        if !is_root() {
            eprintln!("skipped: the guest runner tests need root (namespaces and mounts)");
            return false;
        }
        can_run_guests()
    }

    /// A tether binary and busybox, or a message saying why the test is skipped.
    fn can_run_guests() -> bool {
        if let Err(e) = TetherRunner::find_tether() {
            eprintln!("skipped: {e} (cargo build -p vic-tether --bin tether)");
            return false;
        }
        if !Path::new("/bin/busybox").is_file() {
            eprintln!("skipped: no /bin/busybox");
            return false;
        }
        true
    }

    fn ds(p: &str) -> DsPath {
        DsPath::new("LocalDS_0", p)
    }

    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        fn add(&mut self, kind: tar::EntryType, name: &str, mode: u32, data: &[u8]) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            self.0.append_data(&mut h, name, data).unwrap();
        }
        fn dir(&mut self, name: &str) {
            self.add(tar::EntryType::Directory, name, 0o755, b"");
        }
        fn file(&mut self, name: &str, data: &[u8]) {
            self.add(tar::EntryType::Regular, name, 0o644, data);
        }
        fn symlink(&mut self, name: &str, target: &str) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            self.0.append_link(&mut h, name, target).unwrap();
        }
        fn finish(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    /// The base layer: busybox and its applets, /etc, and what the upper layer hides.
    fn busybox_layer() -> Vec<u8> {
        let mut t = Tar::new();
        t.dir("bin/");
        t.add(
            tar::EntryType::Regular,
            "bin/busybox",
            0o755,
            &fs::read("/bin/busybox").unwrap(),
        );
        let out = Command::new("/bin/busybox")
            .arg("--list-full")
            .output()
            .unwrap();
        let mut dirs = HashSet::new();
        for applet in String::from_utf8(out.stdout).unwrap().lines() {
            if !applet.contains('/') || applet.ends_with('/') || applet == "bin/busybox" {
                continue;
            }
            let parent = Path::new(applet).parent().unwrap().to_str().unwrap();
            if dirs.insert(parent.to_string()) && parent != "bin" {
                let mut p = String::new();
                for part in parent.split('/') {
                    p.push_str(part);
                    p.push('/');
                    if dirs.insert(p.clone()) {
                        t.dir(&p);
                    }
                }
            }
            t.symlink(applet, "/bin/busybox");
        }
        t.dir("etc/");
        t.file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        t.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n");
        t.file("etc/lower-only", b"hidden above\n");
        t.file("etc/keep", b"kept\n");
        t.dir("opq/");
        t.file("opq/a", b"a\n");
        t.finish()
    }

    /// The upper layer: a whiteout of a lower file, an opaque folder.
    fn upper_layer() -> Vec<u8> {
        let mut t = Tar::new();
        t.dir("etc/");
        t.file("etc/.wh.lower-only", b"");
        t.file("etc/upper", b"upper\n");
        t.dir("opq/");
        t.file("opq/.wh..wh..opq", b"");
        t.file("opq/b", b"b\n");
        t.finish()
    }

    /// A two-layer busybox image; returns its top layer disk.
    async fn image(sim: &Simulator) -> DsPath {
        let st = sim.backend().storage;
        let mut parent = None;
        for (name, tar) in [("base", busybox_layer()), ("top", upper_layer())] {
            st.make_dir(&ds(&format!("images/{name}"))).await.unwrap();
            let disk = ds(&format!("images/{name}/{name}.vmdk"));
            st.create_disk(&DiskSpec {
                path: disk.clone(),
                capacity_kb: 1 << 20,
                parent: parent.clone(),
            })
            .await
            .unwrap();
            st.write_layer(&disk, Box::new(Cursor::new(tar)))
                .await
                .unwrap();
            parent = Some(disk);
        }
        parent.unwrap()
    }

    fn guest_config(path: &str, args: &[&str]) -> GuestConfig {
        GuestConfig {
            id: "c".repeat(64),
            name: "test".into(),
            hostname: "guesthost".into(),
            session: Session {
                path: path.into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: vec![PATH.into()],
                ..Session::default()
            },
            ..GuestConfig::default()
        }
    }

    /// Creates a container VM `name` on `top` running `config`.
    async fn container(sim: &Simulator, name: &str, top: &DsPath, config: &GuestConfig) -> VmInfo {
        let mut spec = small_vm(sim, name);
        spec.devices.push(DeviceSpec {
            device: Device::Disk {
                key: 200,
                controller_key: 100,
                unit: 0,
                file: ds(&format!("{name}/{name}.vmdk")),
                parent: Some(top.clone()),
                capacity_kb: 0,
                mode: DiskMode::Persistent,
            },
            file_operation: FileOperation::Create,
        });
        spec.extra_config = config.to_keys();
        sim.create_vm(&spec).await.unwrap()
    }

    async fn wait_off(sim: &Simulator, vm: &VmInfo, within: Duration) -> VmInfo {
        let deadline = Instant::now() + within;
        loop {
            let info = sim.vm_info(&vm.reference).await.unwrap();
            if info.power_state == PowerState::PoweredOff {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{} still powered on; tether.log: {}",
                vm.name,
                fs::read_to_string(sim.host_path(&vm.files).unwrap().join("tether.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn status(info: &VmInfo) -> GuestStatus {
        GuestStatus::from_keys(&info.extra_config)
            .unwrap()
            .expect("a status in extraConfig")
    }

    fn output(sim: &Simulator, vm: &VmInfo) -> String {
        let log = sim
            .host_path(&vm.files)
            .unwrap()
            .join(vic_tether::logs::LOG_FILE);
        let mut out = Vec::new();
        for r in vic_tether::logs::Reader::open(&log).unwrap() {
            out.extend(r.unwrap().data);
        }
        String::from_utf8(out).unwrap()
    }

    /// Runs `config` to its end in a new container VM; the VM as reconciled.
    /// A simulator with the tether runner and the test image, when guests can run here.
    async fn with_runner() -> Option<(tempfile::TempDir, Simulator, DsPath)> {
        if !can_run() {
            return None;
        }
        let (dir, sim) = open_temp();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        let top = image(&sim).await;
        Some((dir, sim, top))
    }

    /// A container VM powered on, once its guest runs.
    async fn started(
        sim: &Simulator,
        top: &DsPath,
        name: &str,
        config: &GuestConfig,
    ) -> (VmInfo, Guest) {
        let vm = container(sim, name, top, config).await;
        sim.power_on(&vm.reference).await.unwrap();
        let guest = wait_running(sim, &vm).await;
        (vm, guest)
    }

    async fn run(sim: &Simulator, top: &DsPath, name: &str, config: &GuestConfig) -> VmInfo {
        let vm = container(sim, name, top, config).await;
        sim.power_on(&vm.reference).await.unwrap();
        wait_off(sim, &vm, Duration::from_secs(20)).await
    }

    #[tokio::test]
    async fn echo_runs_and_exits_zero() {
        let Some((_dir, sim, top)) = with_runner().await else {
            return;
        };
        let info = run(&sim, &top, "echo", &guest_config("echo", &["hello"])).await;
        let s = status(&info);
        assert_eq!(s.state, GuestState::Exited);
        assert_eq!(s.exit_code, Some(0), "{s:?}");
        assert!(s.started_at.is_some() && s.finished_at.is_some());
        assert_eq!(output(&sim, &info), "hello\n");
        let folder = sim.host_path(&info.files).unwrap();
        assert!(folder.join(GUEST_PID_FILE).is_file());
        assert!(folder.join(CONFIG_FILE).is_file());
        // the guest's root was unmounted when it ended
        assert_eq!(fs::read_dir(folder.join(ROOTFS_DIR)).unwrap().count(), 0);
        assert!(
            !folder.join(WORK_DIR).exists(),
            "the overlay work folder went too"
        );
        let kinds: Vec<String> = sim.events().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last().unwrap(), "VmPoweredOffEvent");
        // the VM can run again: a restart appends to the log
        sim.power_on(&info.reference).await.unwrap();
        let again = wait_off(&sim, &info, Duration::from_secs(20)).await;
        assert_eq!(status(&again).exit_code, Some(0));
        assert_eq!(output(&sim, &info), "hello\nhello\n");
    }

    #[tokio::test]
    async fn exit_code_and_missing_command() {
        let Some((_dir, sim, top)) = with_runner().await else {
            return;
        };
        let info = run(&sim, &top, "three", &guest_config("sh", &["-c", "exit 3"])).await;
        assert_eq!(status(&info).exit_code, Some(3));
        let info = run(&sim, &top, "nocmd", &guest_config("no-such-command", &[])).await;
        let s = status(&info);
        assert_eq!(s.exit_code, Some(127), "{s:?}");
        assert!(s.error.is_some());
    }

    async fn whiteouts_hide_lower_files(runner: TetherRunner, expect_cache: bool) {
        let (_dir, sim) = open_temp();
        sim.set_guest_runner(std::sync::Arc::new(runner));
        let top = image(&sim).await;
        let script = "test ! -e /etc/lower-only && cat /etc/keep /etc/upper && ls /opq \
                      && echo new > /etc/keep && rm /etc/upper";
        let info = run(&sim, &top, "wh", &guest_config("sh", &["-c", script])).await;
        assert_eq!(status(&info).exit_code, Some(0), "{}", output(&sim, &info));
        assert_eq!(output(&sim, &info), "kept\nupper\nb\n");
        // the layers are untouched; the changes are in the container's tree
        let base = sim.disk_tree(&ds("images/base/base.vmdk")).unwrap();
        assert_eq!(fs::read(base.join("etc/keep")).unwrap(), b"kept\n");
        let upper = sim.disk_tree(&ds("images/top/top.vmdk")).unwrap();
        assert!(upper.join("etc/upper").is_file());
        let rw = sim.disk_tree(&ds("wh/wh.vmdk")).unwrap();
        assert_eq!(fs::read(rw.join("etc/keep")).unwrap(), b"new\n");
        let cache = sim.host_path(&ds("images/top/top-ovl")).unwrap();
        assert_eq!(cache.is_dir(), expect_cache);
        let merged = sim.host_path(&info.files).unwrap().join(MERGED_MARK);
        assert_eq!(merged.exists(), !expect_cache, "overlay or copy-merge");
        if expect_cache {
            // The cache of this runner's kind: `<cid>` for root, `<cid>-user` in a
            // user namespace.
            let (suffix, xattr) = if is_root() {
                ("", OPAQUE_XATTR)
            } else {
                ("-user", USER_OPAQUE_XATTR)
            };
            let converted = fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    p.is_dir()
                        && p.file_name().unwrap().len() == 8 + suffix.len()
                        && p.to_string_lossy().ends_with(suffix)
                })
                .unwrap();
            let wh = fs::symlink_metadata(converted.join("etc/lower-only")).unwrap();
            assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
            assert_eq!(
                get_xattr(&converted.join("opq"), xattr).as_deref(),
                Some(&b"y"[..])
            );
            // the base layer has no whiteouts: used as it is, recorded once
            let base_cache = sim.host_path(&ds("images/base/base-ovl")).unwrap();
            let names: Vec<String> = fs::read_dir(base_cache)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                names.len() == 1 && names[0].ends_with(".plain"),
                "{names:?}"
            );
        } else {
            assert!(
                sim.host_path(&info.files)
                    .unwrap()
                    .join(MERGED_MARK)
                    .is_file()
            );
        }
        // a second run sees the container's own changes
        sim.power_on(&info.reference).await.unwrap();
        let again = wait_off(&sim, &info, Duration::from_secs(20)).await;
        assert_eq!(status(&again).exit_code, Some(1), "upper was removed");
        let vm2 = container(&sim, "wh2", &top, &guest_config("cat", &["/etc/keep"])).await;
        sim.power_on(&vm2.reference).await.unwrap();
        let info2 = wait_off(&sim, &vm2, Duration::from_secs(20)).await;
        assert_eq!(
            output(&sim, &info2),
            "kept\n",
            "another container sees the image"
        );
    }

    #[tokio::test]
    async fn whiteouts_hide_lower_files_with_overlay() {
        if !can_run() {
            return;
        }
        whiteouts_hide_lower_files(TetherRunner::new(), true).await;
    }

    #[tokio::test]
    async fn whiteouts_hide_lower_files_when_copy_merged() {
        if !can_run() {
            return;
        }
        whiteouts_hide_lower_files(TetherRunner::new().without_overlay(), false).await;
    }

    /// The guest's PID once it runs its process (the tether reported `running`).
    async fn wait_running(sim: &Simulator, vm: &VmInfo) -> Guest {
        let folder = sim.host_path(&vm.files).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = vic_tether::transport::read_status(&folder)
                && s.state == GuestState::Running
            {
                return read_guest(&folder).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "not running; tether.log: {}",
                fs::read_to_string(folder.join("tether.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The guest's status once the reconciler has merged an `exited` one.
    async fn wait_exited(sim: &Simulator, vm: &VmInfo) -> GuestStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            sim.reconcile_guests().await.unwrap();
            let info = sim.vm_info(&vm.reference).await.unwrap();
            if let Ok(Some(s)) = GuestStatus::from_keys(&info.extra_config)
                && s.state == GuestState::Exited
                && info.power_state == PowerState::PoweredOff
            {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit status merged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn power_off_is_a_prompt_hard_stop() {
        let Some((_dir, sim, top)) = with_runner().await else {
            return;
        };
        // A process that ignores the usual stop signal makes no difference.
        let config = guest_config("sh", &["-c", "trap '' TERM; sleep 100"]);
        let (vm, guest) = started(&sim, &top, "stubborn", &config).await;
        assert!(guest.alive());
        let t = Instant::now();
        sim.power_off(&vm.reference).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        assert!(!guest.alive());
        let folder = sim.host_path(&vm.files).unwrap();
        let s = vic_tether::transport::read_status(&folder)
            .unwrap()
            .unwrap();
        assert_eq!(s.state, GuestState::Exited);
        assert_eq!(s.exit_code, Some(137));
        assert!(s.started_at.is_some() && s.finished_at.is_some());
        // The status follows through the reconciler.
        assert_eq!(wait_exited(&sim, &vm).await.exit_code, Some(137));
    }

    #[tokio::test]
    async fn a_guest_ended_by_its_stop_signal_keeps_its_exit_status() {
        let Some((_dir, sim, top)) = with_runner().await else {
            return;
        };
        let config = guest_config("sh", &["-c", "trap 'exit 42' TERM; sleep 100 & wait"]);
        let (vm, guest) = started(&sim, &top, "graceful", &config).await;
        // Someone else (the engine's graceful stop) sends the stop signal to the
        // guest's init, which forwards it to the process.
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(guest.pid, libc::SIGTERM) }, 0);
        let s = wait_exited(&sim, &vm).await;
        assert_eq!(s.exit_code, Some(42), "{s:?}");
        assert!(s.error.is_none());
        // A plain process killed by it: 128 + SIGTERM.
        let vm2 = container(&sim, "plain", &top, &guest_config("sleep", &["100"])).await;
        sim.power_on(&vm2.reference).await.unwrap();
        let guest = wait_running(&sim, &vm2).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(guest.pid, libc::SIGTERM) }, 0);
        assert_eq!(
            wait_exited(&sim, &vm2).await.exit_code,
            Some(128 + libc::SIGTERM)
        );
        // A guest killed from outside (no status of its own): 137, from the reconciler.
        let vm3 = container(&sim, "killed", &top, &guest_config("sleep", &["100"])).await;
        sim.power_on(&vm3.reference).await.unwrap();
        let guest = wait_running(&sim, &vm3).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(guest.pid, libc::SIGKILL) }, 0);
        let s = wait_exited(&sim, &vm3).await;
        assert_eq!(s.exit_code, Some(137), "{s:?}");
        assert!(s.error.is_none());
    }

    /// The folder of the guest's group in the hierarchy that has `file`, from
    /// `/proc/<pid>/cgroup`.
    fn guest_group_file(pid: libc::pid_t, ctrl: &str, file: &str) -> PathBuf {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let lines = cgroup::parse_proc_cgroup(&text);
        match cgroup::Layout::detect() {
            cgroup::Layout::V2(_) => {
                let (_, path) = lines.iter().find(|(c, _)| c.is_empty()).unwrap();
                let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
                let point = mountinfo
                    .lines()
                    .find(|l| l.contains(" - cgroup2 "))
                    .and_then(|l| l.split(' ').nth(4))
                    .unwrap();
                Path::new(point)
                    .join(path.trim_start_matches('/'))
                    .join(file)
            }
            cgroup::Layout::V1(ctrls) => {
                let (_, path) = lines
                    .iter()
                    .find(|(c, _)| c.iter().any(|c| c == ctrl))
                    .unwrap();
                // The base of v1 groups is the hierarchy's mount point.
                let (_, point) = ctrls.iter().find(|(c, _)| *c == ctrl).unwrap();
                assert!(
                    path.contains("/vic/"),
                    "the guest is in a vic group: {path}"
                );
                point.join(path.trim_start_matches('/')).join(file)
            }
            cgroup::Layout::None => panic!("no cgroups"),
        }
    }

    #[tokio::test]
    async fn limits_apply_through_cgroups_until_the_guest_ends() {
        if !can_run() {
            return;
        }
        if cgroup::Layout::detect() == cgroup::Layout::None {
            eprintln!("skipped: no cgroup hierarchy with memory and cpu");
            return;
        }
        let v2 = matches!(cgroup::Layout::detect(), cgroup::Layout::V2(_));
        let (_dir, sim) = open_temp();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        let top = image(&sim).await;
        let mut spec_config = guest_config("sh", &["-c", "sleep 100 & wait"]);
        spec_config.name = "limited".into();
        let mut vm = small_vm(&sim, "limited");
        vm.devices.push(DeviceSpec {
            device: Device::Disk {
                key: 200,
                controller_key: 100,
                unit: 0,
                file: ds("limited/limited.vmdk"),
                parent: Some(top.clone()),
                capacity_kb: 0,
                mode: DiskMode::Persistent,
            },
            file_operation: FileOperation::Create,
        });
        vm.extra_config = spec_config.to_keys();
        vm.extra_config.insert(
            cgroup::LIMITS_KEY.into(),
            r#"{"nano_cpus": 500000000, "memory_bytes": 67108864}"#.into(),
        );
        let vm = sim.create_vm(&vm).await.unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        let guest = wait_running(&sim, &vm).await;
        let folder = sim.host_path(&vm.files).unwrap();
        let recorded = cgroup::Groups::recorded(&folder).expect("groups recorded");
        assert!(!recorded.dirs.is_empty());
        let (mem, cpu) = if v2 {
            ("memory.max", "cpu.max")
        } else {
            ("memory.limit_in_bytes", "cpu.cfs_quota_us")
        };
        let mem_file = guest_group_file(guest.pid, "memory", mem);
        let cpu_file = guest_group_file(guest.pid, "cpu", cpu);
        assert_eq!(fs::read_to_string(&mem_file).unwrap().trim(), "67108864");
        let cpu_value = fs::read_to_string(&cpu_file).unwrap();
        if v2 {
            assert_eq!(cpu_value.trim(), "50000 100000");
        } else {
            let period = fs::read_to_string(cpu_file.with_file_name("cpu.cfs_period_us"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap();
            assert_eq!(cpu_value.trim(), (period / 2).to_string());
        }
        // Every process of the guest is in the group (the process, its children).
        let procs = fs::read_to_string(mem_file.with_file_name("cgroup.procs")).unwrap();
        let pids: Vec<&str> = procs.lines().collect();
        assert!(pids.len() >= 3, "tether, sh and sleep: {pids:?}");
        assert!(pids.contains(&guest.pid.to_string().as_str()));
        // The guest ends by itself: the reconciler's release removes the groups.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(guest.pid, libc::SIGTERM) };
        wait_exited(&sim, &vm).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded.dirs.iter().any(|d| d.exists()) {
            assert!(
                Instant::now() < deadline,
                "groups left: {:?}",
                recorded.dirs
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!mem_file.parent().unwrap().exists());
        assert!(cgroup::Groups::recorded(&folder).is_none());

        // Without the finer key, the VM's memory_mb and num_cpus; a power-off removes
        // the groups too.
        let mut change = vic_core::provider::VmChange::default();
        change.extra_config.insert(cgroup::LIMITS_KEY.into(), None);
        sim.backend()
            .compute
            .reconfigure(&vm.reference, &change)
            .await
            .unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        let guest = wait_running(&sim, &vm).await;
        let mem_file = guest_group_file(guest.pid, "memory", mem);
        assert_eq!(
            fs::read_to_string(&mem_file).unwrap().trim(),
            (256u64 << 20).to_string()
        );
        let recorded = cgroup::Groups::recorded(&folder).unwrap();
        sim.power_off(&vm.reference).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while recorded.dirs.iter().any(|d| d.exists()) {
            assert!(
                Instant::now() < deadline,
                "groups left: {:?}",
                recorded.dirs
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn guest_outlives_the_simulator() {
        if !can_run() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let sim = Simulator::open(&state).unwrap();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        let top = image(&sim).await;
        let config = guest_config("sh", &["-c", "sleep 1; echo done; exit 5"]);
        let vm = container(&sim, "survivor", &top, &config).await;
        sim.power_on(&vm.reference).await.unwrap();
        let folder = sim.host_path(&vm.files).unwrap();
        drop(sim);

        // A new simulator while the guest still runs: it stays powered on.
        let sim = Simulator::open(&state).unwrap();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        assert_eq!(sim.reconcile_guests().await.unwrap(), 0);
        let info = sim.vm_info(&vm.reference).await.unwrap();
        assert_eq!(info.power_state, PowerState::PoweredOn);
        let guest = read_guest(&folder).unwrap();
        assert!(guest.alive());
        drop(sim);

        // It ends while no simulator is open; the next one records its exit.
        let deadline = Instant::now() + Duration::from_secs(20);
        while guest.alive() {
            assert!(Instant::now() < deadline, "the guest does not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sim = Simulator::open(&state).unwrap();
        assert_eq!(
            sim.vm_info(&vm.reference).await.unwrap().power_state,
            PowerState::PoweredOn
        );
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        assert_eq!(sim.reconcile_guests().await.unwrap(), 1);
        let info = sim.vm_info(&vm.reference).await.unwrap();
        assert_eq!(info.power_state, PowerState::PoweredOff);
        assert_eq!(status(&info).exit_code, Some(5));
        assert_eq!(output(&sim, &info), "done\n");
    }

    #[tokio::test]
    async fn vms_without_a_guest_configuration_run_nothing() {
        let (_dir, sim) = open_temp();
        sim.set_guest_runner(std::sync::Arc::new(
            TetherRunner::new().with_tether("/nonexistent/tether"),
        ));
        let vm = sim.create_vm(&small_vm(&sim, "plain")).await.unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        assert_eq!(sim.reconcile_guests().await.unwrap(), 0);
        sim.power_off(&vm.reference).await.unwrap();
    }

    #[tokio::test]
    async fn a_guest_that_cannot_start_fails_the_power_on() {
        let (_dir, sim) = open_temp();
        sim.set_guest_runner(std::sync::Arc::new(
            TetherRunner::new().with_tether("/nonexistent/tether"),
        ));
        // no child disk
        let mut spec = small_vm(&sim, "nodisk");
        spec.extra_config = guest_config("true", &[]).to_keys();
        let vm = sim.create_vm(&spec).await.unwrap();
        let e = sim.power_on(&vm.reference).await.unwrap_err();
        assert!(e.to_string().contains("no child disk"), "{e}");
        assert_eq!(
            sim.vm_info(&vm.reference).await.unwrap().power_state,
            PowerState::PoweredOff
        );
    }

    /// The environment variable that gives [`as_non_root_inner`] its folder.
    const NON_ROOT_DIR_ENV: &str = "VIC_TEST_NON_ROOT_DIR";

    /// Runs the test `inner` of this test executable as `nobody` (uid and gid 65534,
    /// no supplementary groups), in a folder of its own, after the command `before`
    /// (words; it runs the rest of the command line).
    fn run_as_nobody(inner: &str, before: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        // Executables in folders other users cannot reach (a checkout under /root)
        // are copied where nobody can run them.
        let runnable = |p: PathBuf| -> PathBuf {
            let others_x = |p: &Path, bits: u32| {
                fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
            };
            if others_x(&p, 0o005) && p.ancestors().skip(1).all(|a| others_x(a, 0o001)) {
                return p;
            }
            let copy = dir.path().join(p.file_name().unwrap());
            fs::copy(&p, &copy).unwrap();
            copy
        };
        let exe = runnable(std::env::current_exe().unwrap());
        let tether = runnable(TetherRunner::find_tether().unwrap());
        let out = Command::new(before.first().copied().unwrap_or("setpriv"))
            .args(before.iter().skip(1))
            .args(if before.is_empty() {
                None
            } else {
                Some("setpriv")
            })
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args([
                "--exact",
                inner,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NON_ROOT_DIR_ENV, dir.path())
            .env("VIC_TETHER_BIN", tether)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the inner test ran: {text}");
    }

    /// Root, the guest requirements and `setpriv` (util-linux).
    fn can_run_as_nobody() -> bool {
        if !can_run() {
            return false;
        }
        if Command::new("setpriv").arg("--version").output().is_err() {
            eprintln!("skipped: no setpriv (util-linux) to run a test as nobody");
            return false;
        }
        true
    }

    /// Runs [`as_non_root_inner`] as `nobody`.
    #[test]
    fn guests_run_for_a_non_root_endpoint() {
        if !can_run_as_nobody() {
            return;
        }
        run_as_nobody("runner::tests::as_non_root_inner", &[]);
    }

    /// Runs [`hidden_sysfs_inner`] as `nobody`, in a mount namespace where a tmpfs
    /// hides part of /sys: the kernel then refuses a new sysfs in a user namespace.
    #[test]
    fn a_non_root_guest_gets_the_hosts_sys_where_sysfs_is_refused() {
        if !can_run_as_nobody() {
            return;
        }
        run_as_nobody(
            "runner::tests::hidden_sysfs_inner",
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs none /sys/kernel && exec \"$@\"",
                "sh",
            ],
        );
    }

    /// The non-root half of
    /// [`a_non_root_guest_gets_the_hosts_sys_where_sysfs_is_refused`].
    #[tokio::test]
    #[ignore = "run by a_non_root_guest_gets_the_hosts_sys_where_sysfs_is_refused as nobody"]
    async fn hidden_sysfs_inner() {
        assert!(!is_root());
        let base = PathBuf::from(std::env::var_os(NON_ROOT_DIR_ENV).unwrap());
        let sim = Simulator::open(base.join("state")).unwrap();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        let top = image(&sim).await;
        let script = "test -d /sys/class/net/lo && echo sys; touch /sys/x || echo ro";
        let info = run(&sim, &top, "sys", &guest_config("sh", &["-c", script])).await;
        assert_eq!(status(&info).exit_code, Some(0), "{}", output(&sim, &info));
        // stdout and stderr are separate streams: only the lines are certain.
        let out = output(&sim, &info);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"sys") && lines.contains(&"ro"), "{out}");
        let log =
            fs::read_to_string(sim.host_path(&info.files).unwrap().join("tether.log")).unwrap();
        assert!(log.contains("the host's /sys is bound read-only"), "{log}");
    }

    /// The non-root half of [`guests_run_for_a_non_root_endpoint`] (ignored: it needs
    /// that test's set-up).
    #[tokio::test]
    #[ignore = "run by guests_run_for_a_non_root_endpoint as nobody"]
    async fn as_non_root_inner() {
        assert!(!is_root(), "run by guests_run_for_a_non_root_endpoint");
        assert!(can_run_guests());
        let base = PathBuf::from(std::env::var_os(NON_ROOT_DIR_ENV).unwrap());
        let sim = Simulator::open(base.join("state")).unwrap();
        sim.set_guest_runner(std::sync::Arc::new(TetherRunner::new()));
        let top = image(&sim).await;

        // docker run --rm busybox echo hello
        let info = run(&sim, &top, "echo", &guest_config("echo", &["hello"])).await;
        let s = status(&info);
        assert_eq!(s.exit_code, Some(0), "{s:?}");
        assert_eq!(output(&sim, &info), "hello\n");
        // Without permission to make cgroups the guest runs without them.
        let folder = sim.host_path(&info.files).unwrap();
        assert!(!folder.join(cgroup::CGROUPS_FILE).exists());
        // Nothing the guest left keeps its user from deleting the VM's folder.
        fs::remove_dir_all(&folder).unwrap();

        // Root in the guest is the endpoint's user; the guest has its own host name,
        // proc, devices, sysfs and a loopback that is up.
        let script = "id -u; id -g; cat /proc/self/uid_map; hostname; \
                      grep -c tether /proc/1/cmdline; \
                      echo x > /dev/null && head -c 4 /dev/zero | wc -c; \
                      test -d /sys/class/net/lo && echo sys; \
                      ifconfig lo | grep -c UP; ls /sys/class/net | wc -l";
        let info = run(&sim, &top, "whoami", &guest_config("sh", &["-c", script])).await;
        assert_eq!(status(&info).exit_code, Some(0), "{}", output(&sim, &info));
        let out = output(&sim, &info);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["0"], "{out}");
        assert_eq!(lines[1], ["0"], "{out}");
        assert_eq!(lines[2], ["0", "65534", "1"], "{out}");
        assert_eq!(lines[3], ["guesthost"], "{out}");
        assert_eq!(lines[4], ["1"], "the tether is PID 1: {out}");
        assert_eq!(lines[5], ["4"], "{out}");
        assert_eq!(lines[6], ["sys"], "{out}");
        assert_eq!(lines[7], ["1"], "lo is up: {out}");
        assert_eq!(lines[8], ["1"], "only lo in the guest's network: {out}");

        // A process that ignores SIGTERM is stopped by the power-off all the same.
        let config = guest_config("sh", &["-c", "trap '' TERM; sleep 100"]);
        let (vm, guest) = started(&sim, &top, "stubborn", &config).await;
        sim.power_off(&vm.reference).await.unwrap();
        assert!(!guest.alive());
        assert_eq!(wait_exited(&sim, &vm).await.exit_code, Some(137));
        drop(sim);

        // Whiteouts through the overlay (a `-user` cache) and the copy-merge.
        whiteouts_hide_lower_files(TetherRunner::new(), true).await;
        whiteouts_hide_lower_files(TetherRunner::new().without_overlay(), false).await;
    }

    #[test]
    fn copy_merge_applies_whiteouts_of_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (top, mid, base, rw) = (
            dir.path().join("top"),
            dir.path().join("mid"),
            dir.path().join("base"),
            dir.path().join("rw"),
        );
        for d in [&top, &mid, &base, &rw] {
            fs::create_dir(d).unwrap();
        }
        let write = |p: PathBuf, data: &str| {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        write(base.join("a/x"), "base x");
        write(base.join("a/y"), "base y");
        write(base.join("d/z"), "base z");
        write(base.join("gone/w"), "base w");
        write(base.join("same"), "base same");
        write(mid.join("a/.wh.x"), "");
        write(mid.join("d/.wh..wh..opq"), "");
        write(mid.join("d/m"), "mid m");
        write(mid.join(".wh.gone"), "");
        write(mid.join("same"), "mid same");
        write(top.join("gone/new"), "top new");
        write(top.join("a/x"), "top x");
        std::os::unix::fs::symlink("a/y", top.join("link")).unwrap();
        write(rw.join("own"), "rw own");
        merge_layers(&rw, &[top, mid, base]).unwrap();
        let read = |p: &str| fs::read_to_string(rw.join(p)).ok();
        assert_eq!(read("a/x").as_deref(), Some("top x"), "the top layer wins");
        assert_eq!(read("a/y").as_deref(), Some("base y"));
        assert_eq!(read("d/m").as_deref(), Some("mid m"));
        assert_eq!(read("d/z"), None, "opaque folder");
        assert_eq!(read("gone/new").as_deref(), Some("top new"));
        assert_eq!(read("gone/w"), None, "folder whited out below the top");
        assert_eq!(read("same").as_deref(), Some("mid same"));
        assert_eq!(read("own").as_deref(), Some("rw own"));
        assert_eq!(read("link").as_deref(), Some("base y"));
        assert!(!rw.join("a/.wh.x").exists() && !rw.join("d/.wh..wh..opq").exists());
    }

    #[test]
    fn options_are_escaped() {
        assert_eq!(escape_option(Path::new("/a:b,c\\d")), "/a\\:b\\,c\\\\d");
    }
}
