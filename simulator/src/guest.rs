//! The seam for a guest runner: what makes a powered-on VM actually run something.
//!
//! Powering a VM on or off calls the simulator's [`GuestRunner`] inside the update, after
//! the checks and before the new power state is persisted. A runner that fails makes the
//! power operation fail and change nothing; if persisting fails after the runner started
//! a guest, the runner is asked to stop it again. The default runner, [`NoGuest`], runs
//! nothing. A runner must not call back into the [`crate::Simulator`] from `start` or
//! `stop` (the update is in progress); it reports back later, from its own threads or
//! tasks, through a [`crate::WeakSimulator`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vic_core::provider::VmInfo;
use vic_core::{DsPath, Result};

use crate::host::Roots;

/// Runs the guests of powered-on VMs.
pub trait GuestRunner: Send + Sync + Debug {
    /// Starts the guest of `vm`, which is about to be powered on.
    fn start(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let _ = (host, vm);
        Ok(())
    }

    /// Stops the guest of `vm`, which is about to be powered off.
    fn stop(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let _ = (host, vm);
        Ok(())
    }

    /// What the guest of `vm` is doing now, for [`crate::Simulator::reconcile_guests`].
    /// Called inside an update like `start` and `stop`, so it must be quick and must
    /// not call back into the simulator. The default tracks no guest.
    fn check(&self, host: &GuestHost, vm: &VmInfo) -> GuestCheck {
        let _ = (host, vm);
        GuestCheck::Untracked
    }

    /// Releases what the guest of `vm` held on the host (mounts) after it ended by
    /// itself; called when the simulator powers the VM off for it, instead of `stop`.
    fn release(&self, host: &GuestHost, vm: &VmInfo) -> Result<()> {
        let _ = (host, vm);
        Ok(())
    }
}

/// What a [`GuestRunner`] knows of a VM's guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestCheck {
    /// The runner has no guest for this VM (it never started one, or tracks none).
    Untracked,
    /// The guest runs; these are the extraConfig keys it reports now.
    Running(BTreeMap<String, String>),
    /// The guest has ended; these are its last extraConfig keys (its exit status).
    Exited(BTreeMap<String, String>),
}

/// The runner that runs nothing: VMs only change their power state.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoGuest;

impl GuestRunner for NoGuest {}

/// What a guest runner may use of the simulator's host side.
#[derive(Clone, Debug)]
pub struct GuestHost {
    pub(crate) state_dir: PathBuf,
    pub(crate) roots: Arc<Roots>,
    pub(crate) exits: Arc<GuestExits>,
}

/// Guests' ends, as they happen: wakes the reconciler at once instead of at its next
/// round, so that an exit is seen in milliseconds.
#[derive(Debug, Default)]
pub(crate) struct GuestExits {
    pub(crate) ended: tokio::sync::Notify,
    watched: std::sync::Mutex<std::collections::HashSet<i32>>,
}

/// Blocks until the process `pid` (not a child of ours) has ended; `false` when it
/// cannot be watched (no pidfd: the reconciler's rounds find it all the same).
fn wait_gone(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let Ok(fd) = i32::try_from(fd) else {
        return false;
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: a descriptor we own from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return r > 0;
        }
    }
}

impl GuestHost {
    /// Wakes the reconciler when the guest process `pid` ends (once per pid; a small
    /// thread waits on its pidfd).
    pub fn notify_when_gone(&self, pid: i32) {
        if !self
            .exits
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pid)
        {
            return;
        }
        let exits = self.exits.clone();
        let spawned = std::thread::Builder::new()
            .name("vic-guest-exit".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if wait_gone(pid) {
                    exits.ended.notify_one();
                }
                exits
                    .watched
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&pid);
            });
        if spawned.is_err() {
            self.exits
                .watched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&pid);
        }
    }
}

impl GuestHost {
    /// The simulator's state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The host path of a datastore path, checked to stay inside its datastore.
    pub fn host_path(&self, path: &DsPath) -> Result<PathBuf> {
        self.roots.resolve(path, true)
    }
}
