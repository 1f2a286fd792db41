use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::MoRef;
use crate::{DsPath, Result};

/// The power state of a VM, as vSphere's `VirtualMachinePowerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    /// Not running.
    PoweredOff,
    /// Running.
    PoweredOn,
    /// Suspended to disk.
    Suspended,
}

/// The kind of SCSI controller, as vSphere's controller device classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScsiKind {
    /// `ParaVirtualSCSIController`, what VIC gives container VMs.
    ParaVirtual,
    /// `VirtualLsiLogicController`.
    LsiLogic,
}

/// How writes to a disk persist, as vSphere's `VirtualDiskMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskMode {
    /// Writes go to the disk (the container's read-write layer).
    Persistent,
    /// Writes are not kept past power off.
    IndependentNonpersistent,
}

/// A virtual device of a VM. `key` identifies the device within its VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "device", rename_all = "snake_case")]
pub enum Device {
    /// A SCSI controller that disks attach to.
    ScsiController {
        /// Device key.
        key: i32,
        /// Controller model.
        kind: ScsiKind,
        /// SCSI bus number.
        bus: i32,
    },
    /// A virtual disk backed by a VMDK file, possibly a child of a parent disk.
    Disk {
        /// Device key.
        key: i32,
        /// Key of the controller it hangs on.
        controller_key: i32,
        /// Unit number on that controller.
        unit: i32,
        /// The disk's descriptor file.
        file: DsPath,
        /// The parent disk in the chain (an image layer), if any.
        parent: Option<DsPath>,
        /// Size in KiB.
        capacity_kb: u64,
        /// Persistence mode.
        mode: DiskMode,
    },
    /// A CD-ROM drive, optionally with an ISO (the bootstrap image) inserted.
    Cdrom {
        /// Device key.
        key: i32,
        /// The ISO file, if one is inserted.
        iso: Option<DsPath>,
    },
    /// A network adapter on a port group.
    Nic {
        /// Device key.
        key: i32,
        /// The network (port group) it connects to.
        network: MoRef,
        /// The MAC address; the backend assigns one when `None`.
        mac: Option<String>,
    },
    /// A serial port backed by a file on a datastore (the container's log).
    Serial {
        /// Device key.
        key: i32,
        /// The backing file.
        file: DsPath,
    },
}

impl Device {
    /// The device's key.
    pub fn key(&self) -> i32 {
        match self {
            Device::ScsiController { key, .. }
            | Device::Disk { key, .. }
            | Device::Cdrom { key, .. }
            | Device::Nic { key, .. }
            | Device::Serial { key, .. } => *key,
        }
    }
}

/// What to do with a device's backing file when the device is added, as vSphere's
/// `VirtualDeviceConfigSpecFileOperation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileOperation {
    /// Create the backing file (a new disk, a child of `parent` if given).
    Create,
    /// Use the existing backing file.
    Attach,
}

/// A device to add, with what to do with its backing file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// The device.
    pub device: Device,
    /// The backing-file operation.
    pub file_operation: FileOperation,
}

/// Everything needed to create a VM in one call, as a vSphere `VirtualMachineConfigSpec`
/// passed to `CreateVM_Task`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// The VM's name, unique in its folder.
    pub name: String,
    /// The resource pool or vApp it runs in.
    pub pool: MoRef,
    /// The folder holding the VM's files (`[ds] <name>`).
    pub files: DsPath,
    /// Number of virtual CPUs.
    pub num_cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// vSphere guest id, e.g. `otherGuest64`.
    pub guest_id: String,
    /// Devices to add.
    pub devices: Vec<DeviceSpec>,
    /// extraConfig keys: the container's configuration and the guest's reports.
    pub extra_config: BTreeMap<String, String>,
    /// Free text shown to administrators.
    pub annotation: String,
}

/// A change to an existing VM, as a `VirtualMachineConfigSpec` passed to
/// `ReconfigVM_Task`: only what is set changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmChange {
    /// New vCPU count.
    pub num_cpus: Option<u32>,
    /// New memory in MiB.
    pub memory_mb: Option<u64>,
    /// extraConfig keys to set (`Some`) or remove (`None`).
    pub extra_config: BTreeMap<String, Option<String>>,
    /// Devices to add.
    pub add_devices: Vec<DeviceSpec>,
    /// Keys of devices to remove (their backing files stay).
    pub remove_devices: Vec<i32>,
    /// New annotation.
    pub annotation: Option<String>,
}

impl VmChange {
    /// A change that sets these extraConfig keys (and nothing else).
    pub fn set_keys(keys: BTreeMap<String, String>) -> Self {
        VmChange {
            extra_config: keys.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            ..Default::default()
        }
    }
}

/// A VM as the backend reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// Its reference.
    pub reference: MoRef,
    /// Its name.
    pub name: String,
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
    /// extraConfig, including what the guest wrote back.
    pub extra_config: BTreeMap<String, String>,
    /// Annotation.
    pub annotation: String,
    /// When it was last powered on, as seconds since the epoch.
    pub boot_time: Option<u64>,
}

/// CPU or memory allocation of a resource pool, as vSphere's `ResourceAllocationInfo`
/// (MHz for CPU, MiB for memory; `limit` of `None` is unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Guaranteed amount.
    pub reservation: u64,
    /// Whether the reservation may grow from the parent.
    pub expandable: bool,
    /// Upper bound, or unlimited.
    pub limit: Option<u64>,
    /// Relative shares.
    pub shares: u32,
}

impl Allocation {
    /// Checks the allocation is consistent (a reservation within its limit); `what`
    /// names it in the error (`CPU`, `memory`).
    pub fn check(&self, what: &str) -> Result<()> {
        match self.limit {
            Some(limit) if self.reservation > limit => Err(crate::Error::InvalidArgument(format!(
                "{what} reservation {} is above its limit {limit}",
                self.reservation
            ))),
            _ => Ok(()),
        }
    }
}

/// The longest inventory name vSphere accepts.
pub const MAX_INVENTORY_NAME: usize = 80;

/// Checks an inventory object's name as vSphere does (not empty, at most
/// [`MAX_INVENTORY_NAME`] characters, no `/`, `\` or `%`); `what` names the kind of
/// object in the error (`resource pool`, `VM`).
pub fn check_inventory_name(name: &str, what: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(crate::Error::InvalidArgument(format!(
            "{what} name is empty"
        )));
    }
    if name.chars().count() > MAX_INVENTORY_NAME || name.contains(['/', '\\', '%']) {
        return Err(crate::Error::InvalidArgument(format!(
            "invalid {what} name {name:?}"
        )));
    }
    Ok(())
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation {
            reservation: 0,
            expandable: true,
            limit: None,
            shares: 4000,
        }
    }
}

/// A resource pool or vApp, with its limits and what the hardware under it offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Its reference (`ResourcePool` or `VirtualApp`).
    pub reference: MoRef,
    /// Its name.
    pub name: String,
    /// Its inventory path, e.g. `/DC0/host/C0/Resources/vch1`.
    pub path: String,
    /// CPU allocation (MHz).
    pub cpu: Allocation,
    /// Memory allocation (MiB).
    pub memory: Allocation,
    /// CPU cores of the hosts under the pool.
    pub host_cpu_cores: u32,
    /// MHz of one core.
    pub host_cpu_mhz: u64,
    /// Memory of the hosts under the pool, MiB.
    pub host_memory_mb: u64,
}

impl PoolInfo {
    /// The CPU cores a container host in this pool can use: the pool's limit in whole
    /// cores (at least one), or every core of its hosts when unlimited.
    pub fn usable_cpus(&self) -> u32 {
        match self.cpu.limit {
            Some(mhz) if self.host_cpu_mhz > 0 => {
                ((mhz / self.host_cpu_mhz) as u32).clamp(1, self.host_cpu_cores.max(1))
            }
            _ => self.host_cpu_cores,
        }
    }

    /// The memory a container host in this pool can use, MiB.
    pub fn usable_memory_mb(&self) -> u64 {
        match self.memory.limit {
            Some(mb) => mb.min(self.host_memory_mb),
            None => self.host_memory_mb,
        }
    }
}

/// Changes to VMs since a version, as a property collector's `WaitForUpdatesEx` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmUpdates {
    /// Pass this to the next call to get later changes.
    pub version: u64,
    /// VMs created or changed since the given version, as they are now.
    pub changed: Vec<VmInfo>,
    /// VMs destroyed since the given version.
    pub removed: Vec<MoRef>,
}

/// Container VMs and the resource pools they run in.
#[async_trait]
pub trait Compute: Send + Sync + Debug {
    /// Finds a resource pool or vApp by inventory path (`/DC0/host/C0/Resources/vch`).
    async fn find_pool(&self, path: &str) -> Result<PoolInfo>;
    /// A pool's current settings.
    async fn pool_info(&self, pool: &MoRef) -> Result<PoolInfo>;
    /// Creates a child vApp (`vapp = true`) or resource pool under `parent`, or returns
    /// the existing one of that name.
    async fn ensure_pool(
        &self,
        parent: &MoRef,
        name: &str,
        cpu: Allocation,
        memory: Allocation,
        vapp: bool,
    ) -> Result<PoolInfo>;
    /// Changes a pool's CPU and memory allocation.
    async fn update_pool(&self, pool: &MoRef, cpu: Allocation, memory: Allocation) -> Result<()>;
    /// Removes an empty pool.
    async fn destroy_pool(&self, pool: &MoRef) -> Result<()>;

    /// Creates a VM from one full spec (`CreateVM_Task`); nothing is left behind on error.
    async fn create_vm(&self, spec: &VmSpec) -> Result<VmInfo>;
    /// Powers a VM on (`PowerOnVM_Task`).
    async fn power_on(&self, vm: &MoRef) -> Result<()>;
    /// Powers a VM off hard (`PowerOffVM_Task`).
    async fn power_off(&self, vm: &MoRef) -> Result<()>;
    /// Reconfigures a VM (`ReconfigVM_Task`).
    async fn reconfigure(&self, vm: &MoRef, change: &VmChange) -> Result<()>;
    /// Destroys a powered-off VM and its folder (`Destroy_Task`); parent disks stay.
    async fn destroy(&self, vm: &MoRef) -> Result<()>;
    /// One VM.
    async fn vm_info(&self, vm: &MoRef) -> Result<VmInfo>;
    /// The VMs in `pool` (all VMs when `None`).
    async fn list_vms(&self, pool: Option<&MoRef>) -> Result<Vec<VmInfo>>;
    /// Waits up to `timeout` for VM changes after `version` (0: everything now).
    async fn wait_for_updates(&self, version: u64, timeout: Duration) -> Result<VmUpdates>;

    /// Opens the live stream of a powered-on VM's guest: the serial-port connection the
    /// tether serves, carrying its attach protocol (`vic_tether::attach`): output and
    /// exit frames from the guest; stdin, resize and signal frames to it. Backends
    /// whose guests cannot be reached answer `NotSupported`.
    async fn open_guest_stream(&self, vm: &MoRef) -> Result<GuestStream> {
        Err(crate::Error::NotSupported(format!(
            "this backend cannot reach the guest of {vm} (attach, kill and resize need it)"
        )))
    }
}

/// A byte stream to a guest (see [`Compute::open_guest_stream`]).
pub trait GuestIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + Debug {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + Debug> GuestIo for T {}

/// An open guest stream.
pub type GuestStream = Box<dyn GuestIo>;
