//! The inventory: every managed object of the simulated vSphere in one registry keyed by
//! its reference value (`vm-12`, `resgroup-9`, `task-40`…), with the bookkeeping that the
//! update path keeps beside it: the version counter, the recent tasks, the event log,
//! the VMs removed since a version, and the index of virtual disks on the datastores.
//!
//! The whole [`Inventory`] is what `<state>/inventory.json` holds. It is plain data: the
//! update path in [`crate::Simulator`] clones it, changes the clone and swaps it in.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vic_core::provider::{
    Allocation, Device, NetworkInfo, NetworkKind, PoolInfo, PowerState, VmInfo, VmUpdates,
};
use vic_core::{DsPath, Error, MoRef, Result};

/// The version of the `inventory.json` layout this crate writes and reads.
pub const FORMAT: u32 = 1;
/// How many recent tasks the inventory keeps.
pub const MAX_TASKS: usize = 200;
/// How many recent events the inventory keeps.
pub const MAX_EVENTS: usize = 1000;
/// How many VM removals the inventory remembers for `wait_for_updates`.
pub const MAX_REMOVED: usize = 10_000;

/// Managed object type names, as vSphere spells them in references.
pub mod kinds {
    /// `Folder`.
    pub const FOLDER: &str = "Folder";
    /// `Datacenter`.
    pub const DATACENTER: &str = "Datacenter";
    /// `ClusterComputeResource`.
    pub const CLUSTER: &str = "ClusterComputeResource";
    /// `HostSystem`.
    pub const HOST: &str = "HostSystem";
    /// `ResourcePool`.
    pub const RESOURCE_POOL: &str = "ResourcePool";
    /// `VirtualApp`.
    pub const VIRTUAL_APP: &str = "VirtualApp";
    /// `Datastore`.
    pub const DATASTORE: &str = "Datastore";
    /// `Network` (a standard port group).
    pub const NETWORK: &str = "Network";
    /// `VirtualMachine`.
    pub const VIRTUAL_MACHINE: &str = "VirtualMachine";
    /// `Task`.
    pub const TASK: &str = "Task";
}

/// One managed object: its name, its parent in the inventory tree and what it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagedObject {
    /// Its name (for a task: the method, e.g. `CreateVM_Task`).
    pub name: String,
    /// The reference value of its parent (`None` for the root folder and for tasks).
    pub parent: Option<String>,
    /// Kind-specific data.
    pub data: ObjectData,
}

/// What a managed object is, with the data of its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ObjectData {
    /// An inventory folder (the root folder, a datacenter's `vm`, `host`, … folders).
    Folder,
    /// A datacenter.
    Datacenter,
    /// A cluster; its hosts and its root resource pool are its children.
    ClusterComputeResource,
    /// A host.
    HostSystem(HostRecord),
    /// A resource pool.
    ResourcePool(PoolRecord),
    /// A vApp: a resource pool that is also a unit of management.
    VirtualApp(PoolRecord),
    /// A datastore backed by a folder on this machine.
    Datastore(DatastoreRecord),
    /// A port group.
    Network(NetworkRecord),
    /// A virtual machine.
    VirtualMachine(Box<VmRecord>),
    /// A task: one call of a mutating method.
    Task(TaskRecord),
}

impl ObjectData {
    /// The managed object type name (`VirtualMachine`, `ResourcePool`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            ObjectData::Folder => kinds::FOLDER,
            ObjectData::Datacenter => kinds::DATACENTER,
            ObjectData::ClusterComputeResource => kinds::CLUSTER,
            ObjectData::HostSystem(_) => kinds::HOST,
            ObjectData::ResourcePool(_) => kinds::RESOURCE_POOL,
            ObjectData::VirtualApp(_) => kinds::VIRTUAL_APP,
            ObjectData::Datastore(_) => kinds::DATASTORE,
            ObjectData::Network(_) => kinds::NETWORK,
            ObjectData::VirtualMachine(_) => kinds::VIRTUAL_MACHINE,
            ObjectData::Task(_) => kinds::TASK,
        }
    }

    /// The allocation of a resource pool or vApp.
    pub fn pool(&self) -> Option<&PoolRecord> {
        match self {
            ObjectData::ResourcePool(p) | ObjectData::VirtualApp(p) => Some(p),
            _ => None,
        }
    }

    /// The record of a VM.
    pub fn vm(&self) -> Option<&VmRecord> {
        match self {
            ObjectData::VirtualMachine(v) => Some(v),
            _ => None,
        }
    }
}

/// A host's hardware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// CPU cores.
    pub cpu_cores: u32,
    /// MHz of one core.
    pub cpu_mhz: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// The CPU and memory allocation of a resource pool or vApp.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// CPU allocation (MHz).
    pub cpu: Allocation,
    /// Memory allocation (MiB).
    pub memory: Allocation,
}

/// A datastore and the host folder behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreRecord {
    /// The folder on this machine, relative to the state folder unless absolute.
    pub folder: PathBuf,
    /// Capacity in bytes, as measured when the datastore was made.
    pub capacity: u64,
    /// `ds:///vmfs/volumes/<name>/`.
    pub url: String,
    /// Filesystem type (`local`).
    pub kind: String,
}

/// A port group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Standard or distributed.
    pub kind: NetworkKind,
    /// VLAN id, if tagged.
    pub vlan: Option<u16>,
}

/// Everything about a VM but its reference and name (which the object holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Its resource pool or vApp.
    pub pool: MoRef,
    /// Its files folder.
    pub files: DsPath,
    /// Power state.
    pub power_state: PowerState,
    /// vCPUs.
    pub num_cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Guest id.
    pub guest_id: String,
    /// Devices.
    pub devices: Vec<Device>,
    /// extraConfig.
    pub extra_config: BTreeMap<String, String>,
    /// Annotation.
    pub annotation: String,
    /// Last power-on time, seconds since the epoch.
    pub boot_time: Option<u64>,
    /// The host it runs on (reference value).
    pub host: Option<String>,
    /// The inventory version at which it last changed.
    pub changed: u64,
}

/// The state of a task, as vSphere's `TaskInfoState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskState {
    /// Waiting to run.
    Queued,
    /// Running.
    Running,
    /// Ended well.
    Success,
    /// Ended with a fault.
    Error,
}

/// A task's record in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The object the task works on.
    pub entity: Option<MoRef>,
    /// That object's name when the task was queued.
    pub entity_name: String,
    /// Its state.
    pub state: TaskState,
    /// The fault's message when it failed.
    pub error: Option<String>,
    /// When it was queued, ms since the epoch.
    pub queue_time: u64,
    /// When it started running, ms since the epoch.
    pub start_time: Option<u64>,
    /// When it ended, ms since the epoch.
    pub complete_time: Option<u64>,
}

/// A task as [`crate::Simulator::tasks`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its reference (`Task:task-40`).
    pub reference: MoRef,
    /// The method: `CreateVM_Task`, `PowerOnVM_Task`, …
    pub name: String,
    /// What happened to it.
    #[serde(flatten)]
    pub record: TaskRecord,
}

/// An entry of the event log, as vSphere's `Event`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing key.
    pub key: u64,
    /// The event class: `VmCreatedEvent`, `VmPoweredOnEvent`, …
    pub kind: String,
    /// The object it is about.
    pub entity: Option<MoRef>,
    /// That object's name.
    pub entity_name: String,
    /// The message vSphere would show.
    pub message: String,
    /// The task that caused it.
    pub task: Option<MoRef>,
    /// When, ms since the epoch.
    pub time: u64,
}

/// A virtual disk known to the inventory's disk index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Size in KiB.
    pub capacity_kb: u64,
    /// Its parent disk.
    pub parent: Option<DsPath>,
}

/// The facts about this machine that the default inventory is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// CPU cores.
    pub cpu_cores: u32,
    /// MHz per core.
    pub cpu_mhz: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Capacity of the default datastore's filesystem, bytes.
    pub datastore_capacity: u64,
}

/// The whole registry and its bookkeeping: what `inventory.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub(crate) format: u32,
    pub(crate) version: u64,
    pub(crate) next_id: u64,
    pub(crate) next_event: u64,
    pub(crate) next_mac: u64,
    pub(crate) objects: BTreeMap<String, ManagedObject>,
    pub(crate) disks: BTreeMap<DsPath, DiskRecord>,
    pub(crate) removed: VecDeque<(String, u64)>,
    pub(crate) recent_tasks: VecDeque<String>,
    pub(crate) events: VecDeque<Event>,
}

/// The name of the default datacenter.
pub const DEFAULT_DATACENTER: &str = "DC0";
/// The name of the default cluster.
pub const DEFAULT_CLUSTER: &str = "DC0_C0";
/// The name of the default host.
pub const DEFAULT_HOST: &str = "DC0_C0_H0";
/// The name of the default datastore.
pub const DEFAULT_DATASTORE: &str = "LocalDS_0";
/// The name of the default VM network.
pub const DEFAULT_NETWORK: &str = "VM Network";
/// The name of the default bridge port group.
pub const BRIDGE_NETWORK: &str = "vic-bridge";

/// The numeric part of a reference value (`vm-12` → 12), for ordering.
pub(crate) fn id_number(id: &str) -> u64 {
    let digits = id.len() - id.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
    id[digits..].parse().unwrap_or(0)
}

impl Inventory {
    fn empty() -> Self {
        Inventory {
            format: FORMAT,
            version: 0,
            next_id: 1,
            next_event: 1,
            next_mac: 1,
            objects: BTreeMap::new(),
            disks: BTreeMap::new(),
            removed: VecDeque::new(),
            recent_tasks: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The default inventory: datacenter `DC0`, cluster `DC0_C0` with host `DC0_C0_H0`
    /// and its root pool `Resources`, datastore `LocalDS_0` in `datastores/LocalDS_0`,
    /// and the networks `VM Network` and `vic-bridge`.
    pub fn default_for(facts: &HostFacts) -> Self {
        let mut inv = Inventory::empty();
        let root = inv.add("group-d", "Datacenters", None, ObjectData::Folder);
        let dc = inv.add(
            "datacenter-",
            DEFAULT_DATACENTER,
            Some(&root),
            ObjectData::Datacenter,
        );
        inv.add("group-v", "vm", Some(&dc), ObjectData::Folder);
        let host_folder = inv.add("group-h", "host", Some(&dc), ObjectData::Folder);
        let ds_folder = inv.add("group-s", "datastore", Some(&dc), ObjectData::Folder);
        let net_folder = inv.add("group-n", "network", Some(&dc), ObjectData::Folder);
        let cluster = inv.add(
            "domain-c",
            DEFAULT_CLUSTER,
            Some(&host_folder),
            ObjectData::ClusterComputeResource,
        );
        inv.add(
            "host-",
            DEFAULT_HOST,
            Some(&cluster),
            ObjectData::HostSystem(HostRecord {
                cpu_cores: facts.cpu_cores.max(1),
                cpu_mhz: facts.cpu_mhz,
                memory_mb: facts.memory_mb,
            }),
        );
        inv.add(
            "resgroup-",
            "Resources",
            Some(&cluster),
            ObjectData::ResourcePool(PoolRecord {
                cpu: Allocation::default(),
                memory: Allocation::default(),
            }),
        );
        inv.add(
            "datastore-",
            DEFAULT_DATASTORE,
            Some(&ds_folder),
            ObjectData::Datastore(DatastoreRecord {
                folder: PathBuf::from("datastores").join(DEFAULT_DATASTORE),
                capacity: facts.datastore_capacity,
                url: format!("ds:///vmfs/volumes/{DEFAULT_DATASTORE}/"),
                kind: "local".into(),
            }),
        );
        for name in [DEFAULT_NETWORK, BRIDGE_NETWORK] {
            inv.add(
                "network-",
                name,
                Some(&net_folder),
                ObjectData::Network(NetworkRecord {
                    kind: NetworkKind::PortGroup,
                    vlan: None,
                }),
            );
        }
        inv.version = 1;
        inv
    }

    /// Adds an object under a new reference `<prefix><n>` and returns the reference value.
    pub(crate) fn add(
        &mut self,
        prefix: &str,
        name: &str,
        parent: Option<&str>,
        data: ObjectData,
    ) -> String {
        let id = self.new_id(prefix);
        self.objects.insert(
            id.clone(),
            ManagedObject {
                name: name.to_string(),
                parent: parent.map(str::to_string),
                data,
            },
        );
        id
    }

    /// A new reference value `<prefix><n>`.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!("{prefix}{n}")
    }

    /// A new MAC address in VMware's range, `00:50:56:xx:xx:xx`.
    pub(crate) fn new_mac(&mut self) -> String {
        let n = self.next_mac;
        self.next_mac += 1;
        format!(
            "00:50:56:{:02x}:{:02x}:{:02x}",
            0x80 | ((n >> 16) & 0x3f),
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    /// The version: bumped by every change that was persisted.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// One object by reference value.
    pub fn object(&self, id: &str) -> Option<&ManagedObject> {
        self.objects.get(id)
    }

    /// Every object, by reference value.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &ManagedObject)> {
        self.objects.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The reference of an object.
    pub fn reference(&self, id: &str) -> Option<MoRef> {
        self.objects
            .get(id)
            .map(|o| MoRef::new(o.data.type_name(), id))
    }

    /// The direct children of an object.
    pub fn children<'a>(
        &'a self,
        parent: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a ManagedObject)> + 'a {
        self.objects
            .iter()
            .filter(move |(_, o)| o.parent.as_deref() == Some(parent))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The inventory path of an object (`/DC0/host/DC0_C0/Resources`); the root folder
    /// is `/`.
    pub fn path_of(&self, id: &str) -> Option<String> {
        let mut names = Vec::new();
        let mut cur = self.objects.get(id)?;
        // Bounded walk: a parent cycle in a corrupt file must not hang us.
        for _ in 0..self.objects.len() {
            match &cur.parent {
                Some(p) => {
                    names.push(cur.name.as_str());
                    cur = self.objects.get(p)?;
                }
                None => break,
            }
        }
        names.reverse();
        Some(format!("/{}", names.join("/")))
    }

    /// The object at an inventory path.
    pub fn find_path(&self, path: &str) -> Option<&str> {
        let want = format!(
            "/{}",
            path.split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/")
        );
        self.objects
            .keys()
            .filter(|id| !matches!(self.objects[*id].data, ObjectData::Task(_)))
            .find(|id| self.path_of(id).as_deref() == Some(want.as_str()))
            .map(String::as_str)
    }

    /// The ancestors of an object, nearest first (not including itself).
    pub(crate) fn ancestors(&self, id: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut cur = self.objects.get(id).and_then(|o| o.parent.as_deref());
        while let Some(p) = cur {
            if out.contains(&p) || out.len() > self.objects.len() {
                break;
            }
            out.push(p);
            cur = self.objects.get(p).and_then(|o| o.parent.as_deref());
        }
        out
    }

    /// The nearest ancestor of `id` (or `id` itself) with the given type.
    pub(crate) fn enclosing(&self, id: &str, type_name: &str) -> Option<&str> {
        if self.objects.get(id)?.data.type_name() == type_name {
            return self.objects.get_key_value(id).map(|(k, _)| k.as_str());
        }
        self.ancestors(id)
            .into_iter()
            .find(|a| self.objects.get(*a).map(|o| o.data.type_name()) == Some(type_name))
    }

    /// The child of `parent` named `name`.
    pub(crate) fn child_named(&self, parent: &str, name: &str) -> Option<&str> {
        self.objects
            .iter()
            .find(|(_, o)| o.parent.as_deref() == Some(parent) && o.name == name)
            .map(|(id, _)| id.as_str())
    }

    /// Looks up `r` and checks that it is one of `types`.
    fn typed(&self, r: &MoRef, types: &[&str], noun: &'static str) -> Result<&ManagedObject> {
        self.objects
            .get(&r.value)
            .filter(|o| {
                let t = o.data.type_name();
                // A vApp is a kind of resource pool: either type names either.
                types.contains(&t) && (r.kind.is_empty() || types.contains(&r.kind.as_str()))
            })
            .ok_or_else(|| Error::not_found(noun, r.value.clone()))
    }

    /// A VM by reference, or `NotFound { kind: "vm" }`.
    pub(crate) fn vm(&self, r: &MoRef) -> Result<(&ManagedObject, &VmRecord)> {
        let o = self.typed(r, &[kinds::VIRTUAL_MACHINE], "vm")?;
        match &o.data {
            ObjectData::VirtualMachine(v) => Ok((o, v)),
            _ => Err(Error::not_found("vm", r.value.clone())),
        }
    }

    /// A VM record to change.
    pub(crate) fn vm_mut(&mut self, id: &str) -> Result<&mut VmRecord> {
        match self.objects.get_mut(id).map(|o| &mut o.data) {
            Some(ObjectData::VirtualMachine(v)) => Ok(v),
            _ => Err(Error::not_found("vm", id)),
        }
    }

    /// A resource pool or vApp by reference, or `NotFound { kind: "pool" }`.
    pub(crate) fn pool(&self, r: &MoRef) -> Result<(&ManagedObject, &PoolRecord)> {
        let o = self.typed(r, &[kinds::RESOURCE_POOL, kinds::VIRTUAL_APP], "pool")?;
        match o.data.pool() {
            Some(p) => Ok((o, p)),
            None => Err(Error::not_found("pool", r.value.clone())),
        }
    }

    /// A pool record to change.
    pub(crate) fn pool_mut(&mut self, id: &str) -> Result<&mut PoolRecord> {
        match self.objects.get_mut(id).map(|o| &mut o.data) {
            Some(ObjectData::ResourcePool(p) | ObjectData::VirtualApp(p)) => Ok(p),
            _ => Err(Error::not_found("pool", id)),
        }
    }

    /// A network by reference, or `NotFound { kind: "network" }`.
    pub(crate) fn network(&self, r: &MoRef) -> Result<(&ManagedObject, &NetworkRecord)> {
        let o = self.typed(r, &[kinds::NETWORK], "network")?;
        match &o.data {
            ObjectData::Network(n) => Ok((o, n)),
            _ => Err(Error::not_found("network", r.value.clone())),
        }
    }

    /// Every datastore: (reference value, name, record).
    pub fn datastores(&self) -> impl Iterator<Item = (&str, &str, &DatastoreRecord)> {
        self.objects.iter().filter_map(|(id, o)| match &o.data {
            ObjectData::Datastore(d) => Some((id.as_str(), o.name.as_str(), d)),
            _ => None,
        })
    }

    /// Every VM: (reference value, name, record), in creation order.
    pub fn vms(&self) -> Vec<(&str, &str, &VmRecord)> {
        let mut v: Vec<_> = self
            .objects
            .iter()
            .filter_map(|(id, o)| match &o.data {
                ObjectData::VirtualMachine(r) => Some((id.as_str(), o.name.as_str(), &**r)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|(id, _, _)| id_number(id));
        v
    }

    /// Every network as the provider reports it, in creation order.
    pub fn networks(&self) -> Vec<NetworkInfo> {
        let mut v: Vec<_> = self
            .objects
            .iter()
            .filter_map(|(id, o)| match &o.data {
                ObjectData::Network(n) => Some(NetworkInfo {
                    reference: MoRef::new(kinds::NETWORK, id.clone()),
                    name: o.name.clone(),
                    kind: n.kind,
                    vlan: n.vlan,
                }),
                _ => None,
            })
            .collect();
        v.sort_by_key(|n| id_number(&n.reference.value));
        v
    }

    /// A VM as the provider reports it.
    pub fn vm_info(&self, id: &str) -> Option<VmInfo> {
        let o = self.objects.get(id)?;
        let r = o.data.vm()?;
        Some(VmInfo {
            reference: MoRef::new(kinds::VIRTUAL_MACHINE, id),
            name: o.name.clone(),
            pool: r.pool.clone(),
            files: r.files.clone(),
            power_state: r.power_state,
            num_cpus: r.num_cpus,
            memory_mb: r.memory_mb,
            guest_id: r.guest_id.clone(),
            devices: r.devices.clone(),
            extra_config: r.extra_config.clone(),
            annotation: r.annotation.clone(),
            boot_time: r.boot_time,
        })
    }

    /// The hosts of the cluster that holds `id` (the pool's hardware).
    pub(crate) fn hosts_under(&self, id: &str) -> Vec<&HostRecord> {
        let Some(cluster) = self.enclosing(id, kinds::CLUSTER) else {
            return Vec::new();
        };
        self.children(cluster)
            .filter_map(|(_, o)| match &o.data {
                ObjectData::HostSystem(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    /// A pool as the provider reports it.
    pub fn pool_info(&self, id: &str) -> Option<PoolInfo> {
        let o = self.objects.get(id)?;
        let p = o.data.pool()?;
        let hosts = self.hosts_under(id);
        Some(PoolInfo {
            reference: MoRef::new(o.data.type_name(), id),
            name: o.name.clone(),
            path: self.path_of(id)?,
            cpu: p.cpu,
            memory: p.memory,
            host_cpu_cores: hosts.iter().map(|h| h.cpu_cores).sum(),
            host_cpu_mhz: hosts.iter().map(|h| h.cpu_mhz).min().unwrap_or(0),
            host_memory_mb: hosts.iter().map(|h| h.memory_mb).sum(),
        })
    }

    /// The root resource pool of the first cluster.
    pub fn root_pool(&self) -> Option<&str> {
        let mut clusters: Vec<&str> = self
            .objects
            .iter()
            .filter(|(_, o)| matches!(o.data, ObjectData::ClusterComputeResource))
            .map(|(k, _)| k.as_str())
            .collect();
        clusters.sort_by_key(|c| id_number(c));
        clusters.into_iter().find_map(|c| {
            self.children(c)
                .find(|(_, o)| matches!(o.data, ObjectData::ResourcePool(_)))
                .map(|(id, _)| id)
        })
    }

    /// Whether `id` is `ancestor` or lies below it.
    pub(crate) fn is_under(&self, id: &str, ancestor: &str) -> bool {
        id == ancestor || self.ancestors(id).contains(&ancestor)
    }

    /// The VM changes after `version`; everything when `version` is 0.
    pub(crate) fn updates_since(&self, version: u64) -> VmUpdates {
        let changed = self
            .vms()
            .into_iter()
            .filter(|(_, _, r)| version == 0 || r.changed > version)
            .filter_map(|(id, _, _)| self.vm_info(id))
            .collect();
        let removed = if version == 0 {
            Vec::new()
        } else {
            self.removed
                .iter()
                .filter(|(_, v)| *v > version)
                .map(|(id, _)| MoRef::new(kinds::VIRTUAL_MACHINE, id.clone()))
                .collect()
        };
        VmUpdates {
            version: self.version,
            changed,
            removed,
        }
    }

    /// Notes that the VM `id` was removed at the current version.
    pub(crate) fn note_removed(&mut self, id: &str) {
        self.removed.push_back((id.to_string(), self.version));
        while self.removed.len() > MAX_REMOVED {
            self.removed.pop_front();
        }
    }

    /// Appends an event and drops the oldest beyond [`MAX_EVENTS`].
    pub(crate) fn push_event(&mut self, mut event: Event) {
        event.key = self.next_event;
        self.next_event += 1;
        self.events.push_back(event);
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    /// Adds a task object and drops the oldest beyond [`MAX_TASKS`].
    pub(crate) fn push_task(&mut self, name: &str, record: TaskRecord) -> String {
        let id = self.add("task-", name, None, ObjectData::Task(record));
        self.recent_tasks.push_back(id.clone());
        while self.recent_tasks.len() > MAX_TASKS {
            if let Some(old) = self.recent_tasks.pop_front() {
                self.objects.remove(&old);
            }
        }
        id
    }

    /// A task record to change.
    pub(crate) fn task_mut(&mut self, id: &str) -> Option<&mut TaskRecord> {
        match self.objects.get_mut(id).map(|o| &mut o.data) {
            Some(ObjectData::Task(t)) => Some(t),
            _ => None,
        }
    }

    /// The recent tasks, oldest first.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        self.recent_tasks
            .iter()
            .filter_map(|id| {
                let o = self.objects.get(id)?;
                match &o.data {
                    ObjectData::Task(t) => Some(TaskInfo {
                        reference: MoRef::new(kinds::TASK, id.clone()),
                        name: o.name.clone(),
                        record: t.clone(),
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// The recent events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// The disk index.
    pub fn disks(&self) -> impl Iterator<Item = (&DsPath, &DiskRecord)> {
        self.disks.iter()
    }

    /// Ends every task that a previous process left queued or running.
    pub(crate) fn fail_interrupted_tasks(&mut self, now: u64) {
        for o in self.objects.values_mut() {
            match &mut o.data {
                ObjectData::Task(t)
                    if matches!(t.state, TaskState::Queued | TaskState::Running) =>
                {
                    t.state = TaskState::Error;
                    t.error = Some("interrupted: the simulator stopped".into());
                    t.complete_time = Some(now);
                }
                _ => {}
            }
        }
    }

    /// Checks the loaded file's invariants that the code relies on.
    pub(crate) fn check(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::Internal(format!(
                "inventory format {} is not supported (expected {FORMAT})",
                self.format
            )));
        }
        if self.root_pool().is_none() {
            return Err(Error::Internal("inventory has no cluster root pool".into()));
        }
        Ok(())
    }
}

/// Whether `path` is `dir` or lies inside it (same datastore).
pub(crate) fn ds_within(path: &DsPath, dir: &DsPath) -> bool {
    path.datastore == dir.datastore
        && (dir.path.is_empty()
            || path.path == dir.path
            || path
                .path
                .strip_prefix(dir.path.as_str())
                .is_some_and(|rest| rest.starts_with('/')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            cpu_cores: 4,
            cpu_mhz: 2000,
            memory_mb: 8192,
            datastore_capacity: 1 << 30,
        }
    }

    #[test]
    fn default_paths() {
        let inv = Inventory::default_for(&facts());
        let root = inv.root_pool().unwrap();
        assert_eq!(
            inv.path_of(root).unwrap(),
            "/DC0/host/DC0_C0/Resources".to_string()
        );
        assert_eq!(inv.find_path("/DC0/host/DC0_C0/Resources/"), Some(root));
        assert!(inv.find_path("/DC0/datastore/LocalDS_0").is_some());
        assert!(inv.find_path("/DC0/network/VM Network").is_some());
        assert!(inv.find_path("/DC0/vm").is_some());
        let info = inv.pool_info(root).unwrap();
        assert_eq!(info.host_cpu_cores, 4);
        assert_eq!(info.host_memory_mb, 8192);
        assert_eq!(info.host_cpu_mhz, 2000);
        assert_eq!(info.cpu.limit, None);
    }

    #[test]
    fn macs_and_ids() {
        let mut inv = Inventory::default_for(&facts());
        let a = inv.new_mac();
        let b = inv.new_mac();
        assert!(a.starts_with("00:50:56:"));
        assert_ne!(a, b);
        assert_eq!(id_number("domain-c7"), 7);
        assert_eq!(id_number("resgroup-v12"), 12);
    }

    #[test]
    fn json_round_trip_keeps_disk_keys() {
        let mut inv = Inventory::default_for(&facts());
        inv.disks.insert(
            DsPath::new("LocalDS_0", "a/b.vmdk"),
            DiskRecord {
                capacity_kb: 10,
                parent: Some(DsPath::new("LocalDS_0", "p/p.vmdk")),
            },
        );
        let text = serde_json::to_string(&inv).unwrap();
        let back: Inventory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, inv);
    }

    #[test]
    fn within() {
        let d = DsPath::new("ds", "a/b");
        assert!(ds_within(&DsPath::new("ds", "a/b/c"), &d));
        assert!(ds_within(&DsPath::new("ds", "a/b"), &d));
        assert!(!ds_within(&DsPath::new("ds", "a/bc"), &d));
        assert!(!ds_within(&DsPath::new("other", "a/b/c"), &d));
        assert!(ds_within(&DsPath::new("ds", "x"), &DsPath::new("ds", "")));
    }
}
