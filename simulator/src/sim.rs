//! The simulator handle: opening a state folder, the one update path every change goes
//! through, persistence of the inventory, and the read accessors.
//!
//! ## The update path
//! [`Simulator::update`] is the only way the inventory or a datastore changes. It
//! 1. takes the next injected fault of the operation, if any;
//! 2. records a task object (queued), sleeps for a `Stall`, fails for a `Fail`;
//! 3. marks the task running and hands the change a [`Txn`]: a lazily made *copy* of the
//!    inventory plus an undo log for what it does on the datastores;
//! 4. when the change succeeds and touched the inventory: bumps the version, writes the
//!    copy to `inventory.json` atomically and only then swaps it in and wakes watchers;
//! 5. when the change or the write fails: runs the undo log, so nothing has changed, and
//!    records the task's error.
//!
//! Datastore entries that a change deletes are first moved to `<state>/trash/`, named
//! after the version the change will commit as, and removed once it has committed. On
//! open, trash from a change that never committed (the process died) is put back, the
//! rest is removed.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{debug, warn};
use vic_core::provider::{Backend, VmUpdates};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::faults::{ENV_VAR, Fault, Faults};
use crate::guest::{GuestCheck, GuestHost, GuestRunner, NoGuest};
use crate::host::{self, Roots, ds_io};
use crate::inventory::{Event, HostFacts, Inventory, TaskInfo, TaskRecord, TaskState, VmRecord};

/// What [`Simulator::backend`] reports as the product.
pub const PRODUCT: &str = "vic simulator (vSphere API model)";
/// The inventory file in the state folder.
pub const INVENTORY_FILE: &str = "inventory.json";
/// The lock file in the state folder.
pub const LOCK_FILE: &str = "lock";
const INVENTORY_TMP: &str = "inventory.json.tmp";
const TRASH: &str = "trash";
const ORIGIN_SUFFIX: &str = ".origin";
/// Marks temporary files the simulator writes next to their final name.
pub(crate) const TMP_MARK: &str = ".vic-tmp-";
/// MHz per core of the default host.
const DEFAULT_CPU_MHZ: u64 = 2000;
/// How often the background task of [`Simulator::set_guest_runner`] reconciles guests
/// when no guest's end wakes it earlier.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(200);

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A simulated vSphere inventory persisted in a state folder. Cheap to clone; the state
/// folder stays locked until the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

/// A handle that does not keep the simulator (and its lock) alive, for guest runners.
#[derive(Clone, Debug)]
pub struct WeakSimulator(Weak<Inner>);

impl WeakSimulator {
    /// The simulator, if it is still open.
    pub fn upgrade(&self) -> Option<Simulator> {
        self.0.upgrade().map(|inner| Simulator { inner })
    }
}

pub(crate) struct Inner {
    dir: PathBuf,
    _lock: File,
    pub(crate) roots: Arc<Roots>,
    writer: Mutex<()>,
    state: RwLock<Arc<Inventory>>,
    faults: Faults,
    watch: watch::Sender<u64>,
    guest: RwLock<Arc<dyn GuestRunner>>,
    reconciler: AtomicBool,
    exits: Arc<crate::guest::GuestExits>,
    seq: AtomicU64,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("state_dir", &self.inner.dir)
            .field("version", &self.version())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// Opens the simulator whose state lives in `state_dir`, creating the folder and the
    /// default inventory when there is none. Fails when another process has it open.
    /// Faults listed in the environment variable `VIC_SIM_FAULTS` are injected.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Simulator> {
        let given = state_dir.as_ref();
        fs::create_dir_all(given)
            .map_err(|e| Error::io(format!("create state folder {}", given.display()), e))?;
        let dir = fs::canonicalize(given)
            .map_err(|e| Error::io(format!("resolve state folder {}", given.display()), e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
        if !host::try_lock_exclusive(&lock_file)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?
        {
            return Err(Error::Unavailable(format!(
                "simulator state folder {} is in use by another simulator (it holds {})",
                dir.display(),
                lock_path.display()
            )));
        }

        let _ = fs::remove_file(dir.join(INVENTORY_TMP));
        let path = dir.join(INVENTORY_FILE);
        let (mut inv, fresh) = match fs::read(&path) {
            Ok(bytes) => {
                let inv: Inventory = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Internal(format!("malformed inventory {}: {e}", path.display()))
                })?;
                (inv, false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (default_inventory(&dir)?, true),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        inv.check()?;

        let mut roots = Roots::default();
        for (_, name, rec) in inv.datastores() {
            roots.add(name, &dir.join(&rec.folder))?;
        }
        recover_trash(&dir, &roots, inv.version());
        inv.fail_interrupted_tasks(now_ms());
        if fresh {
            persist(&dir, &inv)?;
        }

        let faults = Faults::default();
        if let Ok(spec) = std::env::var(ENV_VAR) {
            faults.load_spec(&spec)?;
        }
        let (watch, _) = watch::channel(inv.version());
        debug!(state = %dir.display(), version = inv.version(), fresh, "simulator open");
        Ok(Simulator {
            inner: Arc::new(Inner {
                dir,
                _lock: lock_file,
                roots: Arc::new(roots),
                writer: Mutex::new(()),
                state: RwLock::new(Arc::new(inv)),
                faults,
                watch,
                guest: RwLock::new(Arc::new(NoGuest)),
                reconciler: AtomicBool::new(false),
                exits: Default::default(),
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// The three providers over this simulator, for the engine.
    pub fn backend(&self) -> Backend {
        Backend {
            compute: Arc::new(self.clone()),
            storage: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            product: PRODUCT.to_string(),
        }
    }

    /// The fault injector.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The state folder (canonical).
    pub fn state_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current inventory, as a snapshot that later changes do not affect.
    pub fn snapshot(&self) -> Arc<Inventory> {
        self.inner.snapshot()
    }

    /// The inventory version: bumped by every persisted change.
    pub fn version(&self) -> u64 {
        self.snapshot().version()
    }

    /// The recent tasks (at most [`crate::inventory::MAX_TASKS`]), oldest first.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.snapshot().tasks()
    }

    /// One recent task.
    pub fn task(&self, task: &MoRef) -> Option<TaskInfo> {
        self.tasks().into_iter().find(|t| t.reference == *task)
    }

    /// The recent events (at most [`crate::inventory::MAX_EVENTS`]), oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.snapshot().events().cloned().collect()
    }

    /// The inventory path of the first cluster's root resource pool,
    /// `/DC0/host/DC0_C0/Resources` in the default inventory.
    pub fn root_pool_path(&self) -> String {
        let inv = self.snapshot();
        inv.root_pool()
            .and_then(|id| inv.path_of(id))
            .unwrap_or_default()
    }

    /// The inventory path of an object.
    pub fn inventory_path(&self, object: &MoRef) -> Option<String> {
        self.snapshot().path_of(&object.value)
    }

    /// The object at an inventory path.
    pub fn find_by_path(&self, path: &str) -> Option<MoRef> {
        let inv = self.snapshot();
        inv.find_path(path).and_then(|id| inv.reference(id))
    }

    /// The host path of a datastore path, checked to stay inside its datastore.
    pub fn host_path(&self, path: &DsPath) -> Result<PathBuf> {
        self.inner.roots.resolve(path, true)
    }

    /// Replaces the guest runner that powering on and off calls, and starts (once per
    /// simulator) the background task that runs [`Simulator::reconcile_guests`] right
    /// away and then every [`RECONCILE_INTERVAL`]. The task holds the simulator only
    /// while it reconciles and ends once the simulator is dropped. It runs on the
    /// current tokio runtime, or on a thread of its own when there is none.
    pub fn set_guest_runner(&self, runner: Arc<dyn GuestRunner>) {
        *self
            .inner
            .guest
            .write()
            .unwrap_or_else(PoisonError::into_inner) = runner;
        if self.inner.reconciler.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.downgrade();
        let exits = self.inner.exits.clone();
        let body = async move {
            loop {
                match weak.upgrade() {
                    None => break,
                    Some(sim) => {
                        if let Err(e) = sim.reconcile_guests().await {
                            warn!(error = %e, "cannot reconcile guests");
                        }
                    }
                }
                // A guest's end (its runner watches it) wakes this at once.
                tokio::select! {
                    () = tokio::time::sleep(RECONCILE_INTERVAL) => {}
                    () = exits.ended.notified() => {}
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(body);
            }
            Err(_) => {
                let started = std::thread::Builder::new()
                    .name("vic-sim-guests".into())
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .build()
                        {
                            Ok(rt) => rt.block_on(body),
                            Err(e) => warn!(error = %e, "cannot start the guest reconciler"),
                        }
                    });
                if let Err(e) = started {
                    warn!(error = %e, "cannot start the guest reconciler");
                    self.inner.reconciler.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    /// Brings the inventory in line with what the guest runner sees: a powered-on VM
    /// whose guest ended by itself is powered off (without calling the runner's `stop`;
    /// its `release` runs instead) with the guest's last keys (its exit status) merged
    /// into extraConfig; keys a running guest reports, or an ended guest reported after
    /// the VM was powered off, are merged; a guest that still runs for a powered-off VM
    /// (left by a crash between starting it and recording the power-on) is stopped.
    /// Each change goes through the update path (operations `GuestPowerOff`,
    /// `GuestInfoUpdate`, `GuestOrphanStop`). Returns how many VMs it powered off.
    ///
    /// The background task of [`Simulator::set_guest_runner`] calls it; an endpoint
    /// that has just opened the simulator and set its runner may await it once, so
    /// that exits of guests that ended while no endpoint ran are recorded before it
    /// serves anything.
    pub async fn reconcile_guests(&self) -> Result<usize> {
        let (runner, gh) = {
            let r = self
                .inner
                .guest
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            (r, self.inner.guest_host())
        };
        let inv = self.snapshot();
        let vms: Vec<_> = inv
            .vms()
            .iter()
            .filter_map(|(id, _, _)| inv.vm_info(id))
            .collect();
        drop(inv);
        let mut powered_off = 0;
        for vm in vms {
            let action = guest_action(&vm, runner.check(&gh, &vm));
            if action == GuestAction::Nothing {
                continue;
            }
            let op = match action {
                GuestAction::PowerOff(_) => "GuestPowerOff",
                GuestAction::Merge(_) => "GuestInfoUpdate",
                GuestAction::StopOrphan | GuestAction::Nothing => "GuestOrphanStop",
            };
            let done = self
                .update(op, Some(&vm.reference), |txn| {
                    // Again under the writer lock: a power operation may have run since.
                    let Some(now) = txn.inv().vm_info(&vm.reference.value) else {
                        return Ok(false);
                    };
                    let (runner, gh) = txn.guest();
                    match guest_action(&now, runner.check(&gh, &now)) {
                        GuestAction::Nothing => Ok(false),
                        GuestAction::StopOrphan => {
                            runner.stop(&gh, &now)?;
                            Ok(false)
                        }
                        GuestAction::Merge(keys) => {
                            let rec = txn.touch_vm(&vm.reference.value)?;
                            rec.extra_config.extend(keys);
                            Ok(false)
                        }
                        GuestAction::PowerOff(keys) => {
                            let rec = txn.touch_vm(&vm.reference.value)?;
                            rec.power_state = vic_core::provider::PowerState::PoweredOff;
                            rec.extra_config.extend(keys);
                            let info = txn.inv().vm_info(&vm.reference.value).ok_or_else(|| {
                                Error::not_found("vm", vm.reference.value.clone())
                            })?;
                            runner.release(&gh, &info)?;
                            let (host, dc) = vm_place(txn.inv(), &vm.reference.value);
                            txn.event(
                                "VmPoweredOffEvent",
                                &vm.reference.value,
                                format!("{} on {host} in {dc} is powered off", now.name),
                            );
                            Ok(true)
                        }
                    }
                })
                .await?;
            if done {
                debug!(vm = %vm.name, "guest ended by itself: powered off");
                powered_off += 1;
            }
        }
        Ok(powered_off)
    }

    /// What a guest runner may use of the host side.
    pub fn guest_host(&self) -> GuestHost {
        self.inner.guest_host()
    }

    /// A handle that does not keep the simulator open.
    pub fn downgrade(&self) -> WeakSimulator {
        WeakSimulator(Arc::downgrade(&self.inner))
    }

    /// VM changes after `version`, waiting up to `timeout` for some. A version newer
    /// than the inventory's (a state folder made anew) is answered as 0: everything.
    pub(crate) async fn updates(&self, version: u64, timeout: Duration) -> VmUpdates {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.watch.subscribe();
        loop {
            rx.borrow_and_update();
            let (since, u) = {
                let inv = self.snapshot();
                let since = if version > inv.version() { 0 } else { version };
                (since, inv.updates_since(since))
            };
            if since == 0 || !u.changed.is_empty() || !u.removed.is_empty() {
                return u;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return u,
            }
        }
    }

    /// Runs the change `f` as operation `op` on `entity` through the one update path
    /// (see the module documentation).
    pub(crate) async fn update<T, F>(&self, op: &str, entity: Option<&MoRef>, f: F) -> Result<T>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<T>,
    {
        let fault = self.inner.faults.take(op);
        let task = self.inner.begin_task(op, entity);
        match fault {
            Some(Fault::Stall(d)) => tokio::time::sleep(d).await,
            Some(Fault::Fail(msg)) => {
                let msg = format!("injected fault: {msg}");
                self.inner.end_task(&task, Some(msg.clone()));
                return Err(Error::Internal(msg));
            }
            None => {}
        }
        self.inner.run(&task, f)
    }
}

/// What [`Simulator::reconcile_guests`] does about one VM.
#[derive(Debug, PartialEq, Eq)]
enum GuestAction {
    Nothing,
    /// Power the VM off and merge these keys.
    PowerOff(std::collections::BTreeMap<String, String>),
    /// Merge these keys (only the ones that differ).
    Merge(std::collections::BTreeMap<String, String>),
    /// Stop a guest that runs for a powered-off VM.
    StopOrphan,
}

fn guest_action(vm: &vic_core::provider::VmInfo, check: GuestCheck) -> GuestAction {
    use vic_core::provider::PowerState;
    let changed = |keys: std::collections::BTreeMap<String, String>| {
        keys.into_iter()
            .filter(|(k, v)| vm.extra_config.get(k) != Some(v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    match (vm.power_state, check) {
        (_, GuestCheck::Untracked) => GuestAction::Nothing,
        (PowerState::PoweredOn, GuestCheck::Exited(keys)) => GuestAction::PowerOff(changed(keys)),
        (PowerState::PoweredOff, GuestCheck::Running(_)) => GuestAction::StopOrphan,
        (_, GuestCheck::Running(keys) | GuestCheck::Exited(keys)) => {
            let keys = changed(keys);
            if keys.is_empty() {
                GuestAction::Nothing
            } else {
                GuestAction::Merge(keys)
            }
        }
    }
}

/// The names of the host and the datacenter of VM `vm_id`, for event messages.
fn vm_place(inv: &Inventory, vm_id: &str) -> (String, String) {
    let name = |id: Option<&str>| {
        id.and_then(|i| inv.object(i))
            .map(|o| o.name.clone())
            .unwrap_or_default()
    };
    let vm = inv.object(vm_id).and_then(|o| o.data.vm());
    let host = vm.and_then(|v| v.host.as_deref());
    let dc = vm.and_then(|v| inv.enclosing(&v.pool.value, crate::inventory::kinds::DATACENTER));
    (name(host), name(dc))
}

impl Inner {
    fn snapshot(&self) -> Arc<Inventory> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn guest_host(&self) -> GuestHost {
        GuestHost {
            state_dir: self.dir.clone(),
            roots: self.roots.clone(),
            exits: self.exits.clone(),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Changes the live inventory in memory only (task bookkeeping).
    fn touch_live(&self, f: impl FnOnce(&mut Inventory)) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        f(Arc::make_mut(&mut state));
    }

    fn begin_task(&self, op: &str, entity: Option<&MoRef>) -> String {
        let _w = lock(&self.writer);
        let mut id = String::new();
        self.touch_live(|inv| {
            let entity_name = entity
                .and_then(|e| inv.object(&e.value))
                .map(|o| o.name.clone())
                .unwrap_or_default();
            id = inv.push_task(
                op,
                TaskRecord {
                    entity: entity.cloned(),
                    entity_name,
                    state: TaskState::Queued,
                    error: None,
                    queue_time: now_ms(),
                    start_time: None,
                    complete_time: None,
                },
            );
        });
        id
    }

    fn end_task(&self, task: &str, error: Option<String>) {
        let _w = lock(&self.writer);
        self.end_task_locked(task, error);
    }

    fn end_task_locked(&self, task: &str, error: Option<String>) {
        self.touch_live(|inv| finish_task(inv, task, error));
    }

    /// Steps 3 to 5 of the update path, under the writer lock.
    fn run<T, F>(&self, task: &str, f: F) -> Result<T>
    where
        F: FnOnce(&mut Txn<'_>) -> Result<T>,
    {
        let _w = lock(&self.writer);
        self.touch_live(|inv| {
            if let Some(t) = inv.task_mut(task) {
                t.state = TaskState::Running;
                t.start_time = Some(now_ms());
            }
        });
        let base = self.snapshot();
        let mut txn = Txn {
            inner: self,
            base: &base,
            copy: None,
            undo: Vec::new(),
            after: Vec::new(),
            task: MoRef::new(crate::inventory::kinds::TASK, task),
        };
        let out = f(&mut txn);
        let Txn {
            copy, undo, after, ..
        } = txn;
        let out = match (out, copy) {
            (Err(e), _) => Err(e),
            (Ok(v), None) => Ok((v, None)),
            (Ok(v), Some(mut copy)) => {
                finish_task(&mut copy, task, None);
                match persist(&self.dir, &copy) {
                    Ok(()) => Ok((v, Some(copy))),
                    Err(e) => Err(e),
                }
            }
        };
        drop(base);
        match out {
            Err(e) => {
                for u in undo.into_iter().rev() {
                    u();
                }
                self.end_task_locked(task, Some(e.to_string()));
                Err(e)
            }
            Ok((v, copy)) => {
                match copy {
                    Some(copy) => {
                        let version = copy.version();
                        *self.state.write().unwrap_or_else(PoisonError::into_inner) =
                            Arc::new(copy);
                        self.watch.send_replace(version);
                    }
                    None => self.end_task_locked(task, None),
                }
                for a in after {
                    a();
                }
                Ok(v)
            }
        }
    }
}

fn finish_task(inv: &mut Inventory, task: &str, error: Option<String>) {
    if let Some(t) = inv.task_mut(task) {
        t.state = if error.is_some() {
            TaskState::Error
        } else {
            TaskState::Success
        };
        t.error = error;
        t.complete_time = Some(now_ms());
    }
}

/// Writes the inventory to `<dir>/inventory.json` atomically and durably.
fn persist(dir: &Path, inv: &Inventory) -> Result<()> {
    let bytes = serde_json::to_vec(inv)?;
    host::write_atomic(&dir.join(INVENTORY_FILE), &dir.join(INVENTORY_TMP), &bytes)
        .map_err(|e| Error::io("persist the inventory", e))
}

/// The default inventory for a new state folder, with this machine's facts.
fn default_inventory(dir: &Path) -> Result<Inventory> {
    let ds = dir
        .join("datastores")
        .join(crate::inventory::DEFAULT_DATASTORE);
    fs::create_dir_all(&ds).map_err(|e| Error::io(format!("create {}", ds.display()), e))?;
    let space =
        host::fs_space(&ds).map_err(|e| Error::io(format!("statvfs {}", ds.display()), e))?;
    let memory_mb = host::memory_mb().unwrap_or_else(|| {
        warn!("cannot read MemTotal from /proc/meminfo; assuming 4096 MiB");
        4096
    });
    Ok(Inventory::default_for(&HostFacts {
        cpu_cores: host::cpu_cores(),
        cpu_mhz: DEFAULT_CPU_MHZ,
        memory_mb,
        datastore_capacity: space.total,
    }))
}

/// Puts back what uncommitted changes moved to the trash; removes the rest.
fn recover_trash(dir: &Path, roots: &Roots, version: u64) {
    let trash = dir.join(TRASH);
    let Ok(entries) = fs::read_dir(&trash) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let Some(item) = name.strip_suffix(ORIGIN_SUFFIX) else {
            continue;
        };
        let item_path = trash.join(item);
        let tag: Option<u64> = item.split('-').next().and_then(|v| v.parse().ok());
        let origin = fs::read(trash.join(name))
            .ok()
            .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)));
        if let (Some(tag), Some(origin)) = (tag, origin) {
            let inside = roots.all().any(|r| origin.starts_with(r));
            if tag > version && inside && fs::symlink_metadata(&origin).is_err() {
                match fs::rename(&item_path, &origin) {
                    Ok(()) => debug!(path = %origin.display(), "restored from trash"),
                    Err(e) => {
                        warn!(path = %origin.display(), error = %e, "cannot restore from trash")
                    }
                }
            }
        }
        let _ = fs::remove_file(trash.join(name));
    }
    // Whatever is left was deleted by a committed change.
    if let Ok(entries) = fs::read_dir(&trash) {
        for e in entries.filter_map(|e| e.ok()) {
            let _ = remove_any(&e.path());
        }
    }
}

/// Removes a file, a symbolic link or a folder tree.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

type Action<'a> = Box<dyn FnOnce() + 'a>;

/// One change in progress: a copy of the inventory made on first write, and the undo
/// log of what the change did on datastores.
pub(crate) struct Txn<'a> {
    inner: &'a Inner,
    base: &'a Inventory,
    copy: Option<Inventory>,
    undo: Vec<Action<'static>>,
    after: Vec<Action<'static>>,
    task: MoRef,
}

impl Txn<'_> {
    /// The inventory as this change sees it.
    pub(crate) fn inv(&self) -> &Inventory {
        self.copy.as_ref().unwrap_or(self.base)
    }

    /// The inventory to change; the first call makes the copy and bumps its version.
    pub(crate) fn inv_mut(&mut self) -> &mut Inventory {
        let base = self.base;
        self.copy.get_or_insert_with(|| {
            let mut c = base.clone();
            c.version = base.version + 1;
            c
        })
    }

    /// The datastore folders.
    pub(crate) fn roots(&self) -> &Roots {
        &self.inner.roots
    }

    /// The guest runner and what it may use.
    pub(crate) fn guest(&self) -> (Arc<dyn GuestRunner>, GuestHost) {
        let runner = self
            .inner
            .guest
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (runner, self.inner.guest_host())
    }

    /// Registers what undoes a side effect if the change fails.
    pub(crate) fn on_rollback(&mut self, f: impl FnOnce() + 'static) {
        self.undo.push(Box::new(f));
    }

    /// The record of VM `id`, to change; marks the VM changed at this version.
    pub(crate) fn touch_vm(&mut self, id: &str) -> Result<&mut VmRecord> {
        let inv = self.inv_mut();
        let version = inv.version;
        let r = inv.vm_mut(id)?;
        r.changed = version;
        Ok(r)
    }

    /// Records an event about object `id`.
    pub(crate) fn event(&mut self, kind: &str, id: &str, message: String) {
        let task = self.task.clone();
        let inv = self.inv_mut();
        let entity = inv.reference(id);
        let entity_name = inv.object(id).map(|o| o.name.clone()).unwrap_or_default();
        inv.push_event(Event {
            key: 0,
            kind: kind.to_string(),
            entity,
            entity_name,
            message,
            task: Some(task),
            time: now_ms(),
        });
    }

    /// Creates folder `p` and its missing parents; an existing folder is fine.
    pub(crate) fn make_dirs(&mut self, p: &DsPath) -> Result<()> {
        let host = self.roots().resolve(p, true)?;
        match fs::metadata(&host) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(Error::Conflict(format!(
                    "{p} already exists and is not a folder"
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("look up {p}"), e)),
        }
        let root = self.roots().root(&p.datastore)?.to_path_buf();
        let mut top = host.clone();
        while let Some(parent) = top.parent() {
            if parent == root || fs::symlink_metadata(parent).is_ok() {
                break;
            }
            top = parent.to_path_buf();
        }
        if let Err(e) = fs::create_dir_all(&host) {
            let _ = fs::remove_dir_all(&top);
            return Err(Error::io(format!("create folder {p}"), e));
        }
        self.on_rollback(move || {
            let _ = fs::remove_dir_all(&top);
        });
        Ok(())
    }

    /// A temporary name beside `host`.
    pub(crate) fn temp_beside(&self, host: &Path) -> PathBuf {
        let name = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        host.with_file_name(format!(
            ".{name}{TMP_MARK}{}-{}",
            std::process::id(),
            self.inner.next_seq()
        ))
    }

    /// Creates the new file `p` with `data`; fails if `p` exists. Readers never see it
    /// partly written.
    pub(crate) fn create_file(&mut self, p: &DsPath, data: &[u8]) -> Result<()> {
        let host = self.roots().resolve(p, false)?;
        if fs::symlink_metadata(&host).is_ok() {
            return Err(Error::Conflict(format!("file {p} already exists")));
        }
        match host.parent().map(fs::metadata) {
            Some(Ok(m)) if m.is_dir() => {}
            _ => return Err(Error::not_found("file", p.parent().to_string())),
        }
        let tmp = self.temp_beside(&host);
        let result = (|| {
            fs::write(&tmp, data)?;
            File::open(&tmp)?.sync_all()?;
            // A hard link never replaces an existing entry; where the filesystem has no
            // hard links, a rename after the existence check above has to do.
            match fs::hard_link(&tmp, &host) {
                Err(e)
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
                    ) =>
                {
                    fs::rename(&tmp, &host)
                }
                other => other,
            }
        })();
        let _ = fs::remove_file(&tmp);
        result.map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::Conflict(format!("file {p} already exists"))
            } else {
                ds_io("create", p, e)
            }
        })?;
        self.on_rollback(move || {
            let _ = fs::remove_file(&host);
        });
        Ok(())
    }

    /// Deletes the entry at `p` (a file, link or folder tree): moves it to the trash now
    /// and removes it once the change has committed.
    pub(crate) fn trash(&mut self, p: &DsPath) -> Result<()> {
        let host = self.roots().resolve(p, false)?;
        fs::symlink_metadata(&host).map_err(|e| ds_io("delete", p, e))?;
        let trash = self.inner.dir.join(TRASH);
        fs::create_dir_all(&trash).map_err(|e| Error::io("create the trash folder", e))?;
        let name = format!("{}-{}", self.base.version + 1, self.inner.next_seq());
        let item = trash.join(&name);
        let origin = trash.join(format!("{name}{ORIGIN_SUFFIX}"));
        fs::write(&origin, host.as_os_str().as_bytes())
            .map_err(|e| Error::io("write to the trash folder", e))?;
        match fs::rename(&host, &item) {
            Ok(()) => {
                let (h, i, o) = (host.clone(), item.clone(), origin.clone());
                self.on_rollback(move || {
                    let _ = fs::rename(&i, &h);
                    let _ = fs::remove_file(&o);
                });
                self.after.push(Box::new(move || {
                    if let Err(e) = remove_any(&item) {
                        warn!(path = %item.display(), error = %e, "cannot empty the trash");
                    }
                    let _ = fs::remove_file(&origin);
                }));
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Another filesystem: delete in place once committed.
                let _ = fs::remove_file(&origin);
                self.after.push(Box::new(move || {
                    if let Err(e) = remove_any(&host) {
                        warn!(path = %host.display(), error = %e, "cannot delete");
                    }
                }));
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&origin);
                Err(ds_io("delete", p, e))
            }
        }
    }

    /// Renames host entry `from` to `to` (both already resolved), undone on failure.
    pub(crate) fn rename(&mut self, from: PathBuf, to: PathBuf) -> io::Result<()> {
        fs::rename(&from, &to)?;
        self.on_rollback(move || {
            let _ = fs::rename(&to, &from);
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use vic_core::provider::{Allocation, Compute, PowerState, Storage, VmChange};

    use super::*;
    use crate::inventory::{BRIDGE_NETWORK, DEFAULT_NETWORK};
    use crate::testutil::{open_temp, root_pool, small_vm};

    #[tokio::test]
    async fn default_inventory_uses_this_machine() {
        let (_dir, sim) = open_temp();
        assert_eq!(sim.root_pool_path(), "/DC0/host/DC0_C0/Resources");
        let pool = sim.find_pool(&sim.root_pool_path()).await.unwrap();
        assert_eq!(pool.name, "Resources");
        assert_eq!(pool.host_cpu_cores, host::cpu_cores());
        assert_eq!(pool.host_memory_mb, host::memory_mb().unwrap());
        assert_eq!(pool.host_cpu_mhz, DEFAULT_CPU_MHZ);
        assert_eq!(pool.memory.limit, None);
        let ds = sim.datastores().await.unwrap();
        let root = sim.state_dir().join("datastores/LocalDS_0");
        assert!(root.is_dir());
        assert_eq!(ds[0].capacity, host::fs_space(&root).unwrap().total);
        for path in [
            "/DC0",
            "/DC0/vm",
            "/DC0/host/DC0_C0",
            "/DC0/host/DC0_C0/DC0_C0_H0",
            "/DC0/datastore/LocalDS_0",
            "/DC0/network/VM Network",
            "/DC0/network/vic-bridge",
        ] {
            assert!(sim.find_by_path(path).is_some(), "{path}");
        }
        let nets: Vec<_> = sim
            .snapshot()
            .networks()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(nets, [DEFAULT_NETWORK, BRIDGE_NETWORK]);
        assert!(sim.state_dir().join(INVENTORY_FILE).is_file());
        assert_eq!(sim.backend().product, PRODUCT);
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let sim = Simulator::open(&state).unwrap();
        let pool = sim
            .ensure_pool(
                &root_pool(&sim),
                "vch1",
                Allocation::default(),
                Allocation::default(),
                true,
            )
            .await
            .unwrap();
        let mut spec = small_vm(&sim, "c1");
        spec.pool = pool.reference.clone();
        spec.extra_config.insert("guestinfo.a".into(), "1".into());
        let vm = sim.create_vm(&spec).await.unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        let before = sim.snapshot();
        let tasks = sim.tasks();
        let vm_before = sim.vm_info(&vm.reference).await.unwrap();
        drop(sim);

        let sim = Simulator::open(&state).unwrap();
        assert_eq!(sim.version(), before.version());
        assert_eq!(sim.vm_info(&vm.reference).await.unwrap(), vm_before);
        assert_eq!(vm_before.power_state, PowerState::PoweredOn);
        assert_eq!(sim.tasks(), tasks);
        assert_eq!(*sim.snapshot(), *before);
        assert_eq!(
            sim.find_pool("/DC0/host/DC0_C0/Resources/vch1")
                .await
                .unwrap(),
            pool
        );
        // ids keep counting up after a reopen
        let vm2 = sim.create_vm(&small_vm(&sim, "c2")).await.unwrap();
        assert!(
            crate::inventory::id_number(&vm2.reference.value)
                > crate::inventory::id_number(&vm.reference.value)
        );
    }

    #[tokio::test]
    async fn lock_is_exclusive_until_drop() {
        let dir = tempfile::tempdir().unwrap();
        let sim = Simulator::open(dir.path()).unwrap();
        let clone = sim.clone();
        let e = Simulator::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("in use"));
        drop(sim);
        // a clone keeps it open
        assert!(Simulator::open(dir.path()).is_err());
        drop(clone);
        let again = Simulator::open(dir.path()).unwrap();
        // a backend's providers keep it open too
        let backend = again.backend();
        drop(again);
        assert!(Simulator::open(dir.path()).is_err());
        drop(backend);
        Simulator::open(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn injected_failure_changes_nothing() {
        let (_dir, sim) = open_temp();
        let before = sim.snapshot();
        sim.faults()
            .inject("CreateVM_Task", Fault::Fail("boom".into()), 2);
        for _ in 0..2 {
            let e = sim.create_vm(&small_vm(&sim, "x")).await.unwrap_err();
            assert!(
                matches!(&e, Error::Internal(m) if m == "injected fault: boom"),
                "{e}"
            );
        }
        assert_eq!(sim.version(), before.version());
        assert!(sim.list_vms(None).await.unwrap().is_empty());
        assert!(
            !sim.host_path(&DsPath::new("LocalDS_0", "x"))
                .unwrap()
                .exists()
        );
        let tasks = sim.tasks();
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.name == "CreateVM_Task"
            && t.record.state == TaskState::Error
            && t.record.error.as_deref() == Some("injected fault: boom")));
        // the third call goes through
        sim.create_vm(&small_vm(&sim, "x")).await.unwrap();
        let last = sim.tasks().pop().unwrap();
        assert_eq!(last.record.state, TaskState::Success);
        assert!(last.record.start_time.is_some() && last.record.complete_time.is_some());
        assert_eq!(sim.faults().pending("CreateVM_Task"), 0);
    }

    #[tokio::test]
    async fn failure_midway_removes_what_was_made() {
        let (_dir, sim) = open_temp();
        let version = sim.version();
        let mut spec = small_vm(&sim, "half");
        spec.devices.push(vic_core::provider::DeviceSpec {
            device: vic_core::provider::Device::Disk {
                key: 200,
                controller_key: 100,
                unit: 0,
                file: DsPath::new("LocalDS_0", "half/half.vmdk"),
                parent: Some(DsPath::new("LocalDS_0", "images/missing.vmdk")),
                capacity_kb: 0,
                mode: vic_core::provider::DiskMode::Persistent,
            },
            file_operation: vic_core::provider::FileOperation::Create,
        });
        let e = sim.create_vm(&spec).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(
            !sim.host_path(&DsPath::new("LocalDS_0", "half"))
                .unwrap()
                .exists()
        );
        assert_eq!(sim.version(), version);
        assert_eq!(sim.tasks().last().unwrap().record.state, TaskState::Error);
    }

    #[tokio::test]
    async fn failed_persist_changes_nothing() {
        let (_dir, sim) = open_temp();
        let before = sim.snapshot();
        // A folder where the temporary inventory goes makes the write fail.
        let tmp = sim.state_dir().join(INVENTORY_TMP);
        fs::create_dir(&tmp).unwrap();
        let e = sim.create_vm(&small_vm(&sim, "p")).await.unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(
            !sim.host_path(&DsPath::new("LocalDS_0", "p"))
                .unwrap()
                .exists()
        );
        assert_eq!(sim.version(), before.version());
        assert!(sim.list_vms(None).await.unwrap().is_empty());
        fs::remove_dir(&tmp).unwrap();

        // a failed delete is undone too
        let vm = sim.create_vm(&small_vm(&sim, "q")).await.unwrap();
        fs::create_dir(&tmp).unwrap();
        assert!(sim.destroy(&vm.reference).await.is_err());
        assert!(sim.host_path(&vm.files).unwrap().is_dir());
        assert!(sim.vm_info(&vm.reference).await.is_ok());
        fs::remove_dir(&tmp).unwrap();
        sim.destroy(&vm.reference).await.unwrap();
        assert!(!sim.host_path(&vm.files).unwrap().exists());
    }

    #[tokio::test]
    async fn stall_delays_the_call() {
        let (_dir, sim) = open_temp();
        sim.faults()
            .inject("MakeDirectory", Fault::Stall(Duration::from_millis(150)), 1);
        let t = Instant::now();
        sim.make_dir(&DsPath::new("LocalDS_0", "slow"))
            .await
            .unwrap();
        assert!(t.elapsed() >= Duration::from_millis(150));
        let t = Instant::now();
        sim.make_dir(&DsPath::new("LocalDS_0", "fast"))
            .await
            .unwrap();
        assert!(t.elapsed() < Duration::from_millis(150));
    }

    #[tokio::test]
    async fn updates_since_a_version() {
        let (_dir, sim) = open_temp();
        let a = sim.create_vm(&small_vm(&sim, "a")).await.unwrap();
        let b = sim.create_vm(&small_vm(&sim, "b")).await.unwrap();
        let all = sim.wait_for_updates(0, Duration::ZERO).await.unwrap();
        assert_eq!(all.changed.len(), 2);
        assert!(all.removed.is_empty());
        let v = all.version;

        // nothing yet: the wait times out empty
        let none = sim
            .wait_for_updates(v, Duration::from_millis(20))
            .await
            .unwrap();
        assert!(none.changed.is_empty() && none.removed.is_empty());
        assert_eq!(none.version, v);

        sim.reconfigure(
            &a.reference,
            &VmChange {
                annotation: Some("hi".into()),
                ..VmChange::default()
            },
        )
        .await
        .unwrap();
        sim.destroy(&b.reference).await.unwrap();
        let u = sim.wait_for_updates(v, Duration::ZERO).await.unwrap();
        assert_eq!(u.changed.len(), 1);
        assert_eq!(u.changed[0].reference, a.reference);
        assert_eq!(u.changed[0].annotation, "hi");
        assert_eq!(u.removed, vec![b.reference.clone()]);
        assert!(u.version > v);

        // a waiter wakes on a change made while it waits
        let waiter = {
            let sim = sim.clone();
            let v = u.version;
            tokio::spawn(async move { sim.wait_for_updates(v, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        sim.power_on(&a.reference).await.unwrap();
        let w = waiter.await.unwrap().unwrap();
        assert_eq!(w.changed.len(), 1);
        assert_eq!(w.changed[0].power_state, PowerState::PoweredOn);

        // a version from the future (a new state folder) gets everything
        let f = sim.wait_for_updates(10_000, Duration::ZERO).await.unwrap();
        assert_eq!(f.changed.len(), 1);
    }

    #[tokio::test]
    async fn events_are_logged() {
        let (_dir, sim) = open_temp();
        let vm = sim.create_vm(&small_vm(&sim, "e")).await.unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        sim.power_off(&vm.reference).await.unwrap();
        sim.reconfigure(&vm.reference, &VmChange::default())
            .await
            .unwrap();
        sim.destroy(&vm.reference).await.unwrap();
        let kinds: Vec<String> = sim.events().into_iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                "VmCreatedEvent",
                "VmPoweredOnEvent",
                "VmPoweredOffEvent",
                "VmReconfiguredEvent",
                "VmRemovedEvent"
            ]
        );
        let ev = sim.events();
        assert!(ev.windows(2).all(|w| w[0].key < w[1].key));
        assert_eq!(ev[1].message, "e on DC0_C0_H0 in DC0 is powered on");
        assert_eq!(ev[1].entity.as_ref(), Some(&vm.reference));
    }

    #[tokio::test]
    async fn trash_of_an_uncommitted_change_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let sim = Simulator::open(&state).unwrap();
        let p = DsPath::new("LocalDS_0", "keep/me.txt");
        sim.make_dir(&p.parent()).await.unwrap();
        sim.write_file(&p, b"data").await.unwrap();
        let host = sim.host_path(&p).unwrap();
        let version = sim.version();
        drop(sim);
        // What a process killed in the middle of deleting it leaves behind.
        let trash = state.join(TRASH);
        fs::create_dir_all(&trash).unwrap();
        let name = format!("{}-7", version + 1);
        fs::rename(&host, trash.join(&name)).unwrap();
        fs::write(
            trash.join(format!("{name}{ORIGIN_SUFFIX}")),
            host.as_os_str().as_bytes(),
        )
        .unwrap();
        // And a committed one's leftovers.
        fs::write(trash.join(format!("{version}-3")), b"old").unwrap();
        fs::write(
            trash.join(format!("{version}-3{ORIGIN_SUFFIX}")),
            state
                .join("datastores/LocalDS_0/gone")
                .as_os_str()
                .as_bytes(),
        )
        .unwrap();

        let sim = Simulator::open(&state).unwrap();
        assert_eq!(sim.read_file(&p).await.unwrap(), b"data");
        assert!(!sim.exists(&DsPath::new("LocalDS_0", "gone")).await.unwrap());
        assert_eq!(fs::read_dir(&trash).unwrap().count(), 0);
    }

    /// The environment variables of the child-process tests.
    const CHILD_MODE: &str = "VIC_SIM_TEST_CHILD";
    const CHILD_STATE: &str = "VIC_SIM_TEST_STATE";

    /// Not a test of its own: the body of the child processes that
    /// `other_processes_and_kill_9` starts.
    #[test]
    fn child_process_body() {
        let (Ok(mode), Ok(state)) = (std::env::var(CHILD_MODE), std::env::var(CHILD_STATE)) else {
            return;
        };
        match mode.as_str() {
            "open" => match Simulator::open(&state) {
                Err(Error::Unavailable(_)) => std::process::exit(42),
                Err(_) => std::process::exit(2),
                Ok(_) => std::process::exit(0),
            },
            "crash" => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let sim = Simulator::open(&state).unwrap();
                    let vm = sim.create_vm(&small_vm(&sim, "survivor")).await.unwrap();
                    sim.power_on(&vm.reference).await.unwrap();
                    // SAFETY: kill and getpid have no memory-safety preconditions.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                });
                std::process::exit(3);
            }
            "faults" => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let ok = rt.block_on(async {
                    let sim = Simulator::open(&state).unwrap();
                    let first = sim.create_vm(&small_vm(&sim, "f")).await;
                    let injected =
                        matches!(&first, Err(Error::Internal(m)) if m.starts_with("injected fault"));
                    injected
                        && sim.faults().pending("PowerOnVM_Task") == 2
                        && sim.create_vm(&small_vm(&sim, "f")).await.is_ok()
                });
                std::process::exit(if ok { 0 } else { 5 });
            }
            _ => std::process::exit(4),
        }
    }

    #[test]
    fn other_processes_and_kill_9() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let child_with = |mode: &str, faults: &str| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "sim::tests::child_process_body", "--nocapture"])
                .env(CHILD_MODE, mode)
                .env(CHILD_STATE, &state)
                .env(ENV_VAR, faults)
                .output()
                .unwrap()
                .status
        };
        let child = |mode: &str| child_with(mode, "");
        let sim = Simulator::open(&state).unwrap();
        assert_eq!(
            child("open").code(),
            Some(42),
            "a second process must not open it"
        );
        drop(sim);
        assert_eq!(child("open").code(), Some(0));

        let status = child("crash");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let sim = Simulator::open(&state).unwrap();
        let vms = sim.snapshot().vms().len();
        assert_eq!(vms, 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let list = rt.block_on(sim.list_vms(None)).unwrap();
        assert_eq!(list[0].name, "survivor");
        assert_eq!(list[0].power_state, PowerState::PoweredOn);
        drop(sim);

        // faults from the environment, as an endpoint process under test gets them
        let status = child_with("faults", "CreateVM_Task=fail:1,PowerOnVM_Task=stall:10:2");
        assert_eq!(status.code(), Some(0));
        assert_eq!(
            child_with("open", "CreateVM_Task=explode:1").code(),
            Some(2),
            "a malformed spec fails the open"
        );
    }
}
