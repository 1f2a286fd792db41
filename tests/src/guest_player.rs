//! A guest player for end-to-end tests on vcsim, which runs no guests: it plays each
//! powered-on container VM's guest with the real `tether`, as vcsim's own container
//! backing does for its VMs.
//!
//! A thread polls the vSphere API (`list_vms`) every [`POLL`]. For each powered-on VM
//! with the guest configuration ([`CONFIG_KEY`]) that it does not play yet, it
//! 1. finds the VM folder in vcsim's datastore folder on local disk (vcsim serves the
//!    datastore's files from there);
//! 2. builds the root file system in a temporary folder from the image's layer chain:
//!    the VM's disk's parent, then each parent named by the disk descriptors, with each
//!    layer's tar stored beside its disk (`<stem>.tar`, the vSphere backend's
//!    `write_layer`), extracted base first (AUFS whiteouts applied);
//! 3. writes the VM's `guestinfo.*` keys (but the status) into the VM folder as
//!    `guestinfo.json`, removes the status of an earlier run, and starts
//!    `tether <vm-folder> <rootfs>` ([`vic_tether::launch::spawn`]).
//!
//! The tether's `running` status (its PID and start) is written back through the API
//! (extraConfig [`STATUS_KEY`]) once the tether reports it, as a guest's guestinfo.
//! When the tether reports `exited` (or is gone), the player writes the status back
//! through the API (extraConfig [`STATUS_KEY`], as a guest through guestinfo) and powers
//! the VM off, as a guest that halts. When the VM is powered off (or destroyed) while
//! its guest runs (`docker stop`, `docker kill`), it kills the guest, as a power-off
//! would. Root only (the tether makes namespaces and mounts). Stopped, with every guest
//! killed and every root file system removed, by [`GuestPlayer::stop`] or on drop.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use vic_core::DsPath;
use vic_core::MoRef;
use vic_core::provider::{Compute, Device, PowerState, Storage, VmChange, VmInfo};
use vic_tether::protocol::{CONFIG_KEY, GuestState, GuestStatus};
use vic_tether::transport::{STATUS_FILE, read_status, write_config_keys};
use vic_vsphere::VsphereBackend;
use vic_vsphere::vcsim::Vcsim;

/// How often the player polls the VMs.
pub const POLL: Duration = Duration::from_millis(100);
/// The most layers a disk chain may have.
const MAX_CHAIN: usize = 128;

/// What the player did, for the test to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A guest started: the VM's name and the tether's PID.
    Started { vm: String, pid: i32 },
    /// A guest ended by itself; its status was written back and the VM powered off.
    Exited { vm: String, exit_code: Option<i32> },
    /// The VM was powered off (or destroyed) while its guest ran: the guest was killed.
    Killed { vm: String },
    /// A guest could not be played.
    Failed { vm: String, error: String },
}

/// A running guest player (see the module documentation).
#[derive(Debug)]
pub struct GuestPlayer {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    pids: Arc<Mutex<Vec<i32>>>,
    thread: Option<JoinHandle<()>>,
}

/// One guest being played.
struct Guest {
    vm: VmInfo,
    pid: i32,
    folder: PathBuf,
    root: tempfile::TempDir,
    /// The last status written back through the API.
    reported: Option<GuestStatus>,
}

impl GuestPlayer {
    /// Starts playing the guests of `sim`'s VMs, logged in as `user`.
    pub fn start(sim: &Vcsim, user: &str, password: &str) -> GuestPlayer {
        let url = sim.sdk_url();
        let options = sim.options(user, password);
        let datastores = sim.datastore_dir();
        let tether = vic_simulator::TetherRunner::find_tether().expect("the tether binary");
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, events, pids) = (stop.clone(), events.clone(), pids.clone());
            std::thread::Builder::new()
                .name("guest-player".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    let vs = match rt.block_on(VsphereBackend::connect(&url, &options)) {
                        Ok(vs) => vs,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(()));
                    let mut p = Player {
                        rt,
                        vs,
                        tether,
                        datastores,
                        ds_dirs: HashMap::new(),
                        guests: HashMap::new(),
                        done: HashMap::new(),
                        events,
                        pids,
                    };
                    while !stop.load(Ordering::Relaxed) {
                        p.tick();
                        std::thread::sleep(POLL);
                    }
                    p.shutdown();
                })
                .expect("start the guest player")
        };
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the guest player could not log in: {e}"),
            Err(_) => panic!("the guest player ended before logging in"),
        }
        GuestPlayer {
            stop,
            events,
            pids,
            thread: Some(thread),
        }
    }

    /// What the player did so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The PIDs of every tether the player started.
    pub fn pids(&self) -> Vec<i32> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the player: kills the guests it still plays, removes their root file
    /// systems, and waits for its thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GuestPlayer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The player's thread state.
struct Player {
    rt: tokio::runtime::Runtime,
    vs: VsphereBackend,
    tether: PathBuf,
    datastores: PathBuf,
    /// Datastore name → its folder on local disk.
    ds_dirs: HashMap<String, PathBuf>,
    /// The guests being played, by VM.
    guests: HashMap<MoRef, Guest>,
    /// VMs whose guest ended and that the player powered off (or failed to play), until
    /// they are seen powered off: not played again meanwhile.
    done: HashMap<MoRef, Option<u64>>,
    events: Arc<Mutex<Vec<Event>>>,
    pids: Arc<Mutex<Vec<i32>>>,
}

impl Player {
    fn event(&self, e: Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    fn tick(&mut self) {
        let vms = match self.rt.block_on(self.vs.list_vms(None)) {
            Ok(v) => v,
            Err(_) => return,
        };
        let by_ref: HashMap<&MoRef, &VmInfo> = vms.iter().map(|v| (&v.reference, v)).collect();

        // Powered off or gone while playing: kill the guest.
        let off: Vec<MoRef> = self
            .guests
            .keys()
            .filter(|r| {
                by_ref
                    .get(r)
                    .is_none_or(|v| v.power_state != PowerState::PoweredOn)
            })
            .cloned()
            .collect();
        for r in off {
            if let Some(g) = self.guests.remove(&r) {
                kill_and_wait(g.pid);
                self.event(Event::Killed { vm: g.vm.name });
            }
        }
        // Seen powered off (or restarted, or gone): may be played again.
        self.done.retain(|r, boot| {
            by_ref
                .get(r)
                .is_some_and(|v| v.power_state == PowerState::PoweredOn && v.boot_time == *boot)
        });

        // Running: report what the tether reported (its PID, its start), as a guest
        // writes its status to guestinfo.
        let mut updates = Vec::new();
        for (r, g) in &self.guests {
            if let Ok(Some(s)) = read_status(&g.folder)
                && s.state == GuestState::Running
                && g.reported.as_ref() != Some(&s)
            {
                updates.push((r.clone(), s));
            }
        }
        for (r, s) in updates {
            match self
                .rt
                .block_on(self.vs.reconfigure(&r, &status_change(&s)))
            {
                Ok(()) => {
                    if let Some(g) = self.guests.get_mut(&r) {
                        g.reported = Some(s);
                    }
                }
                Err(e) => {
                    let vm = self.guests.get(&r).map(|g| g.vm.name.clone());
                    self.event(Event::Failed {
                        vm: vm.unwrap_or_default(),
                        error: format!("report the running status: {e}"),
                    });
                }
            }
        }

        // Ended by itself: report and halt.
        let ended: Vec<MoRef> = self
            .guests
            .iter()
            .filter(|(_, g)| ended(g))
            .map(|(r, _)| r.clone())
            .collect();
        for r in ended {
            if let Some(g) = self.guests.remove(&r) {
                self.report(g);
            }
        }

        // New guests.
        for vm in &vms {
            if vm.power_state != PowerState::PoweredOn
                || !vm.extra_config.contains_key(CONFIG_KEY)
                || self.guests.contains_key(&vm.reference)
                || self.done.contains_key(&vm.reference)
            {
                continue;
            }
            match self.play(vm) {
                Ok(g) => {
                    self.pids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(g.pid);
                    self.event(Event::Started {
                        vm: vm.name.clone(),
                        pid: g.pid,
                    });
                    self.guests.insert(vm.reference.clone(), g);
                }
                Err(error) => {
                    self.event(Event::Failed {
                        vm: vm.name.clone(),
                        error,
                    });
                    self.done.insert(vm.reference.clone(), vm.boot_time);
                }
            }
        }
    }

    /// Writes the status of the guest `g`, which ended, back through the API and powers
    /// its VM off.
    fn report(&mut self, g: Guest) {
        // Its status is written before it exits; give it a moment to go.
        wait_gone(g.pid, Duration::from_secs(2));
        kill_and_wait(g.pid);
        let status = match read_status(&g.folder) {
            Ok(Some(s)) if s.state == GuestState::Exited => s,
            other => GuestStatus {
                state: GuestState::Exited,
                finished_at: Some(SystemTime::now()),
                exit_code: Some(137),
                error: Some(format!(
                    "the tether ended without an exit status: {other:?}"
                )),
                ..other.ok().flatten().unwrap_or_default()
            },
        };
        let change = status_change(&status);
        let r = &g.vm.reference;
        let result = self
            .rt
            .block_on(async {
                self.vs.reconfigure(r, &change).await?;
                self.vs.power_off(r).await
            })
            .map_err(|e| e.to_string());
        self.done.insert(r.clone(), g.vm.boot_time);
        match result {
            Ok(()) => self.event(Event::Exited {
                vm: g.vm.name,
                exit_code: status.exit_code,
            }),
            Err(error) => self.event(Event::Failed {
                vm: g.vm.name,
                error: format!("report the exit: {error}"),
            }),
        }
    }

    /// The folder on local disk of the datastore `name`.
    fn ds_dir(&mut self, name: &str) -> Result<PathBuf, String> {
        if let Some(d) = self.ds_dirs.get(name) {
            return Ok(d.clone());
        }
        let infos = self
            .rt
            .block_on(self.vs.datastores())
            .map_err(|e| format!("list the datastores: {e}"))?;
        let info = infos
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| format!("no datastore {name}"))?;
        // vcsim's datastore URL is its host folder; else the one folder in vcsim's
        // datastore folder named after it.
        let url = info.url.trim_start_matches("ds://");
        let dir = if Path::new(url).is_dir() && Path::new(url).starts_with(&self.datastores) {
            PathBuf::from(url)
        } else {
            let mut found: Vec<PathBuf> = fs::read_dir(&self.datastores)
                .map_err(|e| format!("read {}: {e}", self.datastores.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().contains(name))
                })
                .collect();
            if found.len() != 1 {
                return Err(format!(
                    "datastore {name} (url {}): no single folder for it in {}: {found:?}",
                    info.url,
                    self.datastores.display()
                ));
            }
            found.remove(0)
        };
        self.ds_dirs.insert(name.to_string(), dir.clone());
        Ok(dir)
    }

    /// The local path of the datastore path `p`.
    fn local(&mut self, p: &DsPath) -> Result<PathBuf, String> {
        p.validate().map_err(|e| e.to_string())?;
        Ok(self.ds_dir(&p.datastore)?.join(&p.path))
    }

    /// The layer disks under `vm`'s disk, base first.
    fn layers(&mut self, vm: &VmInfo) -> Result<Vec<DsPath>, String> {
        let mut next = vm
            .devices
            .iter()
            .find_map(|d| match d {
                Device::Disk {
                    parent: Some(p), ..
                } => Some(p.clone()),
                _ => None,
            })
            .ok_or("the VM has no disk with a parent (an image layer)")?;
        let mut chain = Vec::new();
        loop {
            if chain.len() >= MAX_CHAIN {
                return Err(format!("a disk chain longer than {MAX_CHAIN}"));
            }
            let local = self.local(&next)?;
            let text = fs::read_to_string(&local)
                .map_err(|e| format!("read the descriptor {}: {e}", local.display()))?;
            let d = vic_core::vmdk::parse(&next, &text).map_err(|e| e.to_string())?;
            chain.push(next);
            match d.parent {
                Some(p) => next = p,
                None => break,
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Builds `vm`'s root file system, writes its configuration and starts its tether.
    fn play(&mut self, vm: &VmInfo) -> Result<Guest, String> {
        let folder = self.local(&vm.files)?;
        if !folder.is_dir() {
            return Err(format!("no VM folder {}", folder.display()));
        }
        let root = tempfile::Builder::new()
            .prefix("vic-guest-root-")
            .tempdir()
            .map_err(|e| format!("a root folder: {e}"))?;
        for layer in self.layers(vm)? {
            let name = layer.file_name();
            let stem = name.strip_suffix(".vmdk").unwrap_or(name).to_string();
            let tar = self.local(&layer.parent().join(format!("{stem}.tar")))?;
            extract_layer(&tar, root.path())
                .map_err(|e| format!("extract the layer {}: {e}", tar.display()))?;
        }
        let keys = vic_tether::protocol::keys_for_guest(&vm.extra_config);
        match fs::remove_file(folder.join(STATUS_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove the old status: {e}")),
        }
        write_config_keys(&folder, &keys).map_err(|e| format!("write the configuration: {e}"))?;
        let pid = vic_tether::launch::spawn(&self.tether, &folder, root.path())
            .map_err(|e| format!("start {}: {e}", self.tether.display()))?;
        Ok(Guest {
            vm: vm.clone(),
            pid,
            folder,
            root,
            reported: None,
        })
    }

    /// Kills every guest still played and removes their root file systems.
    fn shutdown(&mut self) {
        for (_, g) in self.guests.drain() {
            kill_and_wait(g.pid);
            drop(g.root);
        }
    }
}

/// The extraConfig change that writes `status` back, as the guest's guestinfo.
fn status_change(status: &GuestStatus) -> VmChange {
    VmChange::set_keys(status.to_keys())
}

/// Whether the guest `g` has ended: it reported `exited`, or its tether is gone.
fn ended(g: &Guest) -> bool {
    matches!(read_status(&g.folder), Ok(Some(s)) if s.state == GuestState::Exited) || !alive(g.pid)
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILL to the guest's PID 1 (the kernel ends its PID namespace), and a wait for it
/// to go.
fn kill_and_wait(pid: i32) {
    if alive(pid) {
        // SAFETY: kill has no memory preconditions; `pid` is a tether we started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    wait_gone(pid, Duration::from_secs(5));
}

/// Extracts the layer tar `tar` onto `root`, applying AUFS whiteouts (`.wh.<name>`
/// removes `<name>` of the lower layers; `.wh..wh..opq` empties its folder).
fn extract_layer(tar: &Path, root: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(fs::File::open(tar)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("entry outside the root: {}", path.display()),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = root.join(path.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&dir.join(hidden))?;
            continue;
        }
        // A file replacing a folder of a lower layer, or the reverse.
        let target = root.join(&path);
        if let Ok(m) = fs::symlink_metadata(&target)
            && (m.is_dir() != entry.header().entry_type().is_dir())
        {
            remove_any(&target)?;
        }
        entry.unpack_in(root)?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
