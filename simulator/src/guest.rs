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
