//! The [`Compute`] provider: resource pools and vApps, and VMs with vSphere's rules.
//!
//! `CreateVM_Task` checks the whole spec before it touches anything, then makes the VM's
//! folder and the disks to create, and on any failure the update path removes them again.
//! Power operations follow `InvalidPowerState`; powering on does admission control
//! against the memory limits of the VM's pool and the pools above it.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use vic_core::provider::{
    Allocation, Compute, Device, DeviceSpec, DiskSpec, FileOperation, PoolInfo, PowerState,
    VmChange, VmInfo, VmSpec, VmUpdates,
};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::host::Roots;
use crate::inventory::{Inventory, ObjectData, PoolRecord, VmRecord, ds_within, kinds};
use crate::sim::{Simulator, Txn, now_ms};
use crate::storage::{create_disk_in, forget_disks_within, read_descriptor};

fn check_ds_path(roots: &Roots, p: &DsPath) -> Result<()> {
    p.validate()?;
    roots.root(&p.datastore)?;
    Ok(())
}

fn check_mac(mac: &str) -> Result<()> {
    let ok = mac.len() == 17
        && mac
            .split(':')
            .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid MAC address {mac:?}"
        )))
    }
}

/// Checks devices to add to a VM that has `existing` devices: unique keys, disks on an
/// existing SCSI controller at a free unit, datastores and networks that exist.
fn check_devices(
    inv: &Inventory,
    roots: &Roots,
    existing: &[Device],
    adds: &[DeviceSpec],
) -> Result<()> {
    let mut keys: HashSet<i32> = existing.iter().map(Device::key).collect();
    let mut controllers = HashSet::new();
    let mut buses = HashSet::new();
    let mut units = HashSet::new();
    let mut disk_files = HashSet::new();
    for d in existing.iter().chain(adds.iter().map(|s| &s.device)) {
        if let Device::ScsiController { key, .. } = d {
            controllers.insert(*key);
        }
    }
    for d in existing {
        match d {
            Device::ScsiController { bus, .. } => {
                buses.insert(*bus);
            }
            Device::Disk {
                controller_key,
                unit,
                file,
                ..
            } => {
                units.insert((*controller_key, *unit));
                disk_files.insert(file.clone());
            }
            _ => {}
        }
    }
    for spec in adds {
        let key = spec.device.key();
        if !keys.insert(key) {
            return Err(Error::InvalidArgument(format!(
                "device key {key} is used twice"
            )));
        }
        match &spec.device {
            Device::ScsiController { bus, .. } => {
                if !buses.insert(*bus) {
                    return Err(Error::InvalidArgument(format!(
                        "SCSI bus {bus} is used twice"
                    )));
                }
            }
            Device::Disk {
                controller_key,
                unit,
                file,
                parent,
                ..
            } => {
                if !controllers.contains(controller_key) {
                    return Err(Error::InvalidArgument(format!(
                        "disk {key} names controller {controller_key}, which the VM does not have"
                    )));
                }
                if !units.insert((*controller_key, *unit)) {
                    return Err(Error::InvalidArgument(format!(
                        "unit {unit} of controller {controller_key} is used twice"
                    )));
                }
                check_ds_path(roots, file)?;
                if !disk_files.insert(file.clone()) {
                    return Err(Error::InvalidArgument(format!(
                        "disk {file} is attached twice"
                    )));
                }
                if let Some(p) = parent {
                    check_ds_path(roots, p)?;
                }
            }
            Device::Cdrom { iso, .. } => {
                if let Some(iso) = iso {
                    check_ds_path(roots, iso)?;
                }
            }
            Device::Nic { network, mac, .. } => {
                inv.network(network)?;
                if let Some(mac) = mac {
                    check_mac(mac)?;
                }
            }
            Device::Serial { file, .. } => check_ds_path(roots, file)?,
        }
    }
    Ok(())
}

/// Makes the devices real: creates or reads their disks and gives NICs MAC addresses.
fn realize_devices(txn: &mut Txn<'_>, adds: &[DeviceSpec]) -> Result<Vec<Device>> {
    let mut out = Vec::with_capacity(adds.len());
    for spec in adds {
        let device = match (&spec.device, spec.file_operation) {
            (
                Device::Disk {
                    key,
                    controller_key,
                    unit,
                    file,
                    parent,
                    capacity_kb,
                    mode,
                },
                op,
            ) => {
                let (capacity_kb, parent) = match op {
                    FileOperation::Create => {
                        let d = create_disk_in(
                            txn,
                            &DiskSpec {
                                path: file.clone(),
                                capacity_kb: *capacity_kb,
                                parent: parent.clone(),
                            },
                        )?;
                        (d.capacity_kb, d.parent)
                    }
                    FileOperation::Attach => {
                        let d = read_descriptor(txn.roots(), file)?;
                        (d.capacity_kb, d.parent)
                    }
                };
                Device::Disk {
                    key: *key,
                    controller_key: *controller_key,
                    unit: *unit,
                    file: file.clone(),
                    parent,
                    capacity_kb,
                    mode: *mode,
                }
            }
            (Device::Nic { key, network, mac }, _) => Device::Nic {
                key: *key,
                network: network.clone(),
                mac: Some(match mac {
                    Some(m) => m.to_ascii_lowercase(),
                    None => txn.inv_mut().new_mac(),
                }),
            },
            (d, _) => d.clone(),
        };
        out.push(device);
    }
    Ok(out)
}

/// The host and datacenter names of a VM, for event messages.
fn place(inv: &Inventory, vm_id: &str) -> (String, String) {
    let name = |id: Option<&str>| {
        id.and_then(|i| inv.object(i))
            .map(|o| o.name.clone())
            .unwrap_or_default()
    };
    let vm = inv.object(vm_id).and_then(|o| o.data.vm());
    let host = vm.and_then(|v| v.host.as_deref());
    let dc = vm.and_then(|v| inv.enclosing(&v.pool.value, kinds::DATACENTER));
    (name(host), name(dc))
}

/// vSphere's admission control for powering on: the VM's memory must fit under the
/// memory limit of its pool and of every pool above it, beside the powered-on VMs there.
fn admit(inv: &Inventory, vm_id: &str, vm: &VmRecord) -> Result<()> {
    let pool = vm.pool.value.as_str();
    let chain = std::iter::once(pool).chain(inv.ancestors(pool));
    for id in chain {
        let Some(o) = inv.object(id) else { continue };
        let Some(p) = o.data.pool() else { continue };
        let Some(limit) = p.memory.limit else {
            continue;
        };
        let used: u64 = inv
            .vms()
            .into_iter()
            .filter(|(other, _, r)| {
                *other != vm_id
                    && r.power_state == PowerState::PoweredOn
                    && inv.is_under(&r.pool.value, id)
            })
            .map(|(_, _, r)| r.memory_mb)
            .sum();
        if used.saturating_add(vm.memory_mb) > limit {
            return Err(Error::InsufficientResources(format!(
                "the VM needs {} MB of memory; resource pool {} has {} MB of its {limit} MB limit free",
                vm.memory_mb,
                o.name,
                limit.saturating_sub(used)
            )));
        }
    }
    Ok(())
}

fn power_state_error(state: PowerState) -> Error {
    let s = match state {
        PowerState::PoweredOn => "Powered on",
        PowerState::PoweredOff => "Powered off",
        PowerState::Suspended => "Suspended",
    };
    Error::InvalidState(format!(
        "the attempted operation cannot be performed in the current state ({s})"
    ))
}

impl Simulator {
    fn pool_info_of(&self, inv: &Inventory, id: &str) -> Result<PoolInfo> {
        inv.pool_info(id)
            .ok_or_else(|| Error::not_found("pool", id.to_string()))
    }
}

#[async_trait]
impl Compute for Simulator {
    async fn find_pool(&self, path: &str) -> Result<PoolInfo> {
        let inv = self.snapshot();
        let missing = || Error::not_found("pool", path.to_string());
        let id = inv.find_path(path).ok_or_else(missing)?;
        let obj = inv.object(id).ok_or_else(missing)?;
        let pool_id = match &obj.data {
            ObjectData::ResourcePool(_) | ObjectData::VirtualApp(_) => id,
            // A compute resource stands for its root pool, as in VIC's --compute-resource.
            ObjectData::ClusterComputeResource | ObjectData::HostSystem(_) => {
                let cluster = inv.enclosing(id, kinds::CLUSTER).ok_or_else(missing)?;
                inv.children(cluster)
                    .find(|(_, o)| matches!(o.data, ObjectData::ResourcePool(_)))
                    .map(|(c, _)| c)
                    .ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
        self.pool_info_of(&inv, pool_id)
    }

    async fn pool_info(&self, pool: &MoRef) -> Result<PoolInfo> {
        let inv = self.snapshot();
        inv.pool(pool)?;
        self.pool_info_of(&inv, &pool.value)
    }

    async fn ensure_pool(
        &self,
        parent: &MoRef,
        name: &str,
        cpu: Allocation,
        memory: Allocation,
        vapp: bool,
    ) -> Result<PoolInfo> {
        vic_core::provider::check_inventory_name(name, "resource pool")?;
        cpu.check("CPU")?;
        memory.check("memory")?;
        let find = |inv: &Inventory| -> Result<Option<PoolInfo>> {
            inv.pool(parent)?;
            match inv.child_named(&parent.value, name) {
                Some(id) => match inv.pool_info(id) {
                    Some(info) => Ok(Some(info)),
                    None => Err(Error::Conflict(format!(
                        "The name '{name}' already exists."
                    ))),
                },
                None => Ok(None),
            }
        };
        if let Some(info) = find(&self.snapshot())? {
            return Ok(info);
        }
        let op = if vapp {
            "CreateVApp"
        } else {
            "CreateResourcePool"
        };
        self.update(op, Some(parent), |txn| {
            if let Some(info) = find(txn.inv())? {
                return Ok(info);
            }
            let record = PoolRecord { cpu, memory };
            let (prefix, data) = if vapp {
                ("resgroup-v", ObjectData::VirtualApp(record))
            } else {
                ("resgroup-", ObjectData::ResourcePool(record))
            };
            let id = txn.inv_mut().add(prefix, name, Some(&parent.value), data);
            let inv = txn.inv();
            let cluster = inv
                .enclosing(&id, kinds::CLUSTER)
                .and_then(|c| inv.object(c))
                .map(|o| o.name.clone())
                .unwrap_or_default();
            let dc = inv
                .enclosing(&id, kinds::DATACENTER)
                .and_then(|c| inv.object(c))
                .map(|o| o.name.clone())
                .unwrap_or_default();
            txn.event(
                "ResourcePoolCreatedEvent",
                &id,
                format!("Created resource pool {name} in compute-resource {cluster} in {dc}"),
            );
            self.pool_info_of(txn.inv(), &id)
        })
        .await
    }

    async fn update_pool(&self, pool: &MoRef, cpu: Allocation, memory: Allocation) -> Result<()> {
        cpu.check("CPU")?;
        memory.check("memory")?;
        self.update("UpdateConfig", Some(pool), |txn| {
            let (o, _) = txn.inv().pool(pool)?;
            let name = o.name.clone();
            let rec = txn.inv_mut().pool_mut(&pool.value)?;
            rec.cpu = cpu;
            rec.memory = memory;
            txn.event(
                "ResourcePoolReconfiguredEvent",
                &pool.value,
                format!("Updated configuration for {name}"),
            );
            Ok(())
        })
        .await
    }

    async fn destroy_pool(&self, pool: &MoRef) -> Result<()> {
        self.update("Destroy_Task", Some(pool), |txn| {
            let inv = txn.inv();
            let (o, _) = inv.pool(pool)?;
            let name = o.name.clone();
            let parent_is_pool = o
                .parent
                .as_deref()
                .and_then(|p| inv.object(p))
                .is_some_and(|p| p.data.pool().is_some());
            if !parent_is_pool {
                return Err(Error::InvalidState(format!(
                    "{name} is the root resource pool of its cluster"
                )));
            }
            let vms = inv
                .vms()
                .into_iter()
                .filter(|(_, _, r)| r.pool.value == pool.value)
                .count();
            if vms > 0 {
                return Err(Error::InvalidState(format!(
                    "resource pool {name} still holds {vms} VM(s)"
                )));
            }
            if let Some((_, child)) = inv
                .children(&pool.value)
                .find(|(_, c)| c.data.pool().is_some())
            {
                return Err(Error::InvalidState(format!(
                    "resource pool {name} still holds the pool {}",
                    child.name
                )));
            }
            txn.event(
                "ResourcePoolDestroyedEvent",
                &pool.value,
                format!("Removed resource pool {name}"),
            );
            txn.inv_mut().objects.remove(&pool.value);
            Ok(())
        })
        .await
    }

    async fn create_vm(&self, spec: &VmSpec) -> Result<VmInfo> {
        self.update("CreateVM_Task", Some(&spec.pool), |txn| {
            let inv = txn.inv();
            vic_core::provider::check_inventory_name(&spec.name, "VM")?;
            if spec.num_cpus == 0 {
                return Err(Error::InvalidArgument("a VM needs at least one CPU".into()));
            }
            if spec.memory_mb == 0 {
                return Err(Error::InvalidArgument("a VM needs memory".into()));
            }
            inv.pool(&spec.pool)?;
            if inv
                .vms()
                .iter()
                .any(|(_, n, r)| *n == spec.name && r.pool.value == spec.pool.value)
            {
                return Err(Error::Conflict(format!(
                    "The name '{}' already exists.",
                    spec.name
                )));
            }
            check_ds_path(txn.roots(), &spec.files)?;
            if spec.files.path.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "VM files {} must be a folder on the datastore",
                    spec.files
                )));
            }
            check_devices(inv, txn.roots(), &[], &spec.devices)?;
            let host = inv
                .enclosing(&spec.pool.value, kinds::CLUSTER)
                .and_then(|c| {
                    inv.children(c)
                        .find(|(_, o)| matches!(o.data, ObjectData::HostSystem(_)))
                        .map(|(h, _)| h.to_string())
                });
            let folder = inv
                .enclosing(&spec.pool.value, kinds::DATACENTER)
                .and_then(|dc| inv.child_named(dc, "vm"))
                .map(str::to_string);

            txn.make_dirs(&spec.files)?;
            let devices = realize_devices(txn, &spec.devices)?;
            let inv = txn.inv_mut();
            let record = VmRecord {
                pool: spec.pool.clone(),
                files: spec.files.clone(),
                power_state: PowerState::PoweredOff,
                num_cpus: spec.num_cpus,
                memory_mb: spec.memory_mb,
                guest_id: spec.guest_id.clone(),
                devices,
                extra_config: spec.extra_config.clone(),
                annotation: spec.annotation.clone(),
                boot_time: None,
                host,
                changed: inv.version,
            };
            let id = inv.add(
                "vm-",
                &spec.name,
                folder.as_deref(),
                ObjectData::VirtualMachine(Box::new(record)),
            );
            let (host, dc) = place(txn.inv(), &id);
            txn.event(
                "VmCreatedEvent",
                &id,
                format!("Created virtual machine {} on {host} in {dc}", spec.name),
            );
            txn.inv()
                .vm_info(&id)
                .ok_or_else(|| Error::Internal("the new VM vanished".into()))
        })
        .await
    }

    async fn power_on(&self, vm: &MoRef) -> Result<()> {
        self.update("PowerOnVM_Task", Some(vm), |txn| {
            let inv = txn.inv();
            let (o, rec) = inv.vm(vm)?;
            if rec.power_state == PowerState::PoweredOn {
                return Err(power_state_error(rec.power_state));
            }
            admit(inv, &vm.value, rec)?;
            let name = o.name.clone();
            let serials: Vec<DsPath> = rec
                .devices
                .iter()
                .filter_map(|d| match d {
                    Device::Serial { file, .. } => Some(file.clone()),
                    _ => None,
                })
                .collect();
            // As on ESXi, the serial port's backing file appears when the VM powers on.
            for file in serials {
                let host = txn.roots().resolve(&file, false)?;
                if std::fs::symlink_metadata(&host).is_err() {
                    txn.create_file(&file, b"")?;
                }
            }
            let rec = txn.touch_vm(&vm.value)?;
            rec.power_state = PowerState::PoweredOn;
            rec.boot_time = Some(now_ms() / 1000);
            let info = txn
                .inv()
                .vm_info(&vm.value)
                .ok_or_else(|| Error::not_found("vm", vm.value.clone()))?;
            let (runner, gh) = txn.guest();
            runner.start(&gh, &info)?;
            txn.on_rollback(move || {
                let _ = runner.stop(&gh, &info);
            });
            let (host, dc) = place(txn.inv(), &vm.value);
            txn.event(
                "VmPoweredOnEvent",
                &vm.value,
                format!("{name} on {host} in {dc} is powered on"),
            );
            Ok(())
        })
        .await
    }

    async fn power_off(&self, vm: &MoRef) -> Result<()> {
        self.update("PowerOffVM_Task", Some(vm), |txn| {
            let (o, rec) = txn.inv().vm(vm)?;
            if rec.power_state == PowerState::PoweredOff {
                return Err(power_state_error(rec.power_state));
            }
            let name = o.name.clone();
            let rec = txn.touch_vm(&vm.value)?;
            rec.power_state = PowerState::PoweredOff;
            let info = txn
                .inv()
                .vm_info(&vm.value)
                .ok_or_else(|| Error::not_found("vm", vm.value.clone()))?;
            let (runner, gh) = txn.guest();
            runner.stop(&gh, &info)?;
            // What the guest reported last (its exit status) stays in the VM's
            // configuration, as guestinfo written by a real guest does.
            if let crate::guest::GuestCheck::Exited(keys) = runner.check(&gh, &info) {
                txn.touch_vm(&vm.value)?.extra_config.extend(keys);
            }
            txn.on_rollback(move || {
                let _ = runner.start(&gh, &info);
            });
            let (host, dc) = place(txn.inv(), &vm.value);
            txn.event(
                "VmPoweredOffEvent",
                &vm.value,
                format!("{name} on {host} in {dc} is powered off"),
            );
            Ok(())
        })
        .await
    }

    async fn reconfigure(&self, vm: &MoRef, change: &VmChange) -> Result<()> {
        self.update("ReconfigVM_Task", Some(vm), |txn| {
            let inv = txn.inv();
            let (o, rec) = inv.vm(vm)?;
            let name = o.name.clone();
            if change.num_cpus == Some(0) {
                return Err(Error::InvalidArgument("a VM needs at least one CPU".into()));
            }
            if change.memory_mb == Some(0) {
                return Err(Error::InvalidArgument("a VM needs memory".into()));
            }
            let remove: BTreeSet<i32> = change.remove_devices.iter().copied().collect();
            for key in &remove {
                if !rec.devices.iter().any(|d| d.key() == *key) {
                    return Err(Error::InvalidArgument(format!(
                        "the VM has no device {key} to remove"
                    )));
                }
            }
            let kept: Vec<Device> = rec
                .devices
                .iter()
                .filter(|d| !remove.contains(&d.key()))
                .cloned()
                .collect();
            let orphan = kept.iter().find_map(|d| match d {
                Device::Disk { controller_key, .. } if remove.contains(controller_key) => {
                    Some(*controller_key)
                }
                _ => None,
            });
            if let Some(controller_key) = orphan {
                return Err(Error::InvalidArgument(format!(
                    "controller {controller_key} still has disks"
                )));
            }
            check_devices(inv, txn.roots(), &kept, &change.add_devices)?;
            let added = realize_devices(txn, &change.add_devices)?;
            let rec = txn.touch_vm(&vm.value)?;
            rec.devices = kept;
            rec.devices.extend(added);
            if let Some(n) = change.num_cpus {
                rec.num_cpus = n;
            }
            if let Some(m) = change.memory_mb {
                rec.memory_mb = m;
            }
            for (k, v) in &change.extra_config {
                match v {
                    Some(v) => {
                        rec.extra_config.insert(k.clone(), v.clone());
                    }
                    None => {
                        rec.extra_config.remove(k);
                    }
                }
            }
            if let Some(a) = &change.annotation {
                rec.annotation = a.clone();
            }
            let (host, dc) = place(txn.inv(), &vm.value);
            txn.event(
                "VmReconfiguredEvent",
                &vm.value,
                format!("Reconfigured {name} on {host} in {dc}"),
            );
            Ok(())
        })
        .await
    }

    async fn destroy(&self, vm: &MoRef) -> Result<()> {
        self.update("Destroy_Task", Some(vm), |txn| {
            let (o, rec) = txn.inv().vm(vm)?;
            if rec.power_state == PowerState::PoweredOn {
                return Err(power_state_error(rec.power_state));
            }
            let name = o.name.clone();
            let files = rec.files.clone();
            let shared = txn
                .inv()
                .vms()
                .iter()
                .any(|(id, _, r)| *id != vm.value && ds_within(&r.files, &files));
            if !files.path.is_empty() && !shared {
                let host = txn.roots().resolve(&files, false)?;
                if std::fs::symlink_metadata(&host).is_ok() {
                    txn.trash(&files)?;
                    forget_disks_within(txn, &files);
                }
            }
            let (host, dc) = place(txn.inv(), &vm.value);
            txn.event(
                "VmRemovedEvent",
                &vm.value,
                format!("Removed {name} on {host} from {dc}"),
            );
            let inv = txn.inv_mut();
            inv.objects.remove(&vm.value);
            inv.note_removed(&vm.value);
            Ok(())
        })
        .await
    }

    async fn vm_info(&self, vm: &MoRef) -> Result<VmInfo> {
        let inv = self.snapshot();
        inv.vm(vm)?;
        inv.vm_info(&vm.value)
            .ok_or_else(|| Error::not_found("vm", vm.value.clone()))
    }

    async fn open_guest_stream(&self, vm: &MoRef) -> Result<vic_core::provider::GuestStream> {
        let info = self.vm_info(vm).await?;
        if info.power_state != PowerState::PoweredOn {
            return Err(Error::InvalidState(format!(
                "{} is not powered on",
                info.name
            )));
        }
        let folder = self.host_path(&info.files)?;
        let stream = connect_guest(&folder).await.map_err(|e| {
            Error::Unavailable(format!("the guest of {} does not answer: {e}", info.name))
        })?;
        Ok(Box::new(stream))
    }

    async fn list_vms(&self, pool: Option<&MoRef>) -> Result<Vec<VmInfo>> {
        let inv = self.snapshot();
        if let Some(p) = pool {
            inv.pool(p)?;
        }
        Ok(inv
            .vms()
            .into_iter()
            .filter(|(_, _, r)| pool.is_none_or(|p| r.pool.value == p.value))
            .filter_map(|(id, _, _)| inv.vm_info(id))
            .collect())
    }

    async fn wait_for_updates(&self, version: u64, timeout: Duration) -> Result<VmUpdates> {
        Ok(self.updates(version, timeout).await)
    }
}

/// Connects to the tether's attach socket in a VM folder; a folder path too long for a
/// socket address is reached through `/proc/self/fd` of an open handle of it.
async fn connect_guest(folder: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let direct = folder.join(vic_tether::attach::ATTACH_SOCKET);
    if direct.as_os_str().len() < 100 {
        return tokio::net::UnixStream::connect(&direct).await;
    }
    let dir = std::fs::File::open(folder)?;
    let via = format!(
        "/proc/self/fd/{}/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir),
        vic_tether::attach::ATTACH_SOCKET
    );
    let s = tokio::net::UnixStream::connect(via).await;
    drop(dir);
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vic_core::provider::{DiskMode, ScsiKind, Storage};

    use super::*;
    use crate::testutil::{open_temp, root_pool, small_vm};

    fn ds(p: &str) -> DsPath {
        DsPath::new("LocalDS_0", p)
    }

    fn disk(
        key: i32,
        unit: i32,
        file: &str,
        parent: Option<&str>,
        op: FileOperation,
    ) -> DeviceSpec {
        DeviceSpec {
            device: Device::Disk {
                key,
                controller_key: 100,
                unit,
                file: ds(file),
                parent: parent.map(ds),
                capacity_kb: 0,
                mode: DiskMode::Persistent,
            },
            file_operation: op,
        }
    }

    async fn base_disk(sim: &Simulator) -> DsPath {
        let base = ds("images/l1/l1.vmdk");
        sim.make_dir(&base.parent()).await.unwrap();
        sim.create_disk(&DiskSpec {
            path: base.clone(),
            capacity_kb: 1024 * 1024,
            parent: None,
        })
        .await
        .unwrap();
        base
    }

    #[tokio::test]
    async fn vm_lifecycle_follows_vsphere() {
        let (_dir, sim) = open_temp();
        base_disk(&sim).await;
        let bridge = sim.snapshot().networks()[1].reference.clone();
        let mut spec = small_vm(&sim, "c1");
        spec.devices.push(disk(
            200,
            0,
            "c1/c1.vmdk",
            Some("images/l1/l1.vmdk"),
            FileOperation::Create,
        ));
        spec.devices.push(DeviceSpec {
            device: Device::Nic {
                key: 4000,
                network: bridge.clone(),
                mac: None,
            },
            file_operation: FileOperation::Attach,
        });
        spec.devices.push(DeviceSpec {
            device: Device::Serial {
                key: 9000,
                file: ds("c1/output.log"),
            },
            file_operation: FileOperation::Attach,
        });
        let vm = sim.create_vm(&spec).await.unwrap();
        assert_eq!(vm.power_state, PowerState::PoweredOff);
        assert_eq!(vm.boot_time, None);
        assert_eq!(vm.reference.kind, "VirtualMachine");
        let Some(Device::Nic { mac: Some(mac), .. }) = vm.devices.iter().find(|d| d.key() == 4000)
        else {
            panic!("no NIC");
        };
        assert!(mac.starts_with("00:50:56:"));
        let Some(Device::Disk {
            capacity_kb,
            parent,
            ..
        }) = vm.devices.iter().find(|d| d.key() == 200)
        else {
            panic!("no disk");
        };
        assert_eq!(*capacity_kb, 1024 * 1024);
        assert_eq!(parent.as_ref(), Some(&ds("images/l1/l1.vmdk")));
        assert!(sim.exists(&ds("c1/c1.vmdk")).await.unwrap());

        // the same name in the same pool is a conflict
        let e = sim.create_vm(&small_vm(&sim, "c1")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Conflict(m) if m.contains("already exists")),
            "{e}"
        );

        assert!(matches!(
            sim.power_off(&vm.reference).await,
            Err(Error::InvalidState(_))
        ));
        sim.power_on(&vm.reference).await.unwrap();
        let on = sim.vm_info(&vm.reference).await.unwrap();
        assert_eq!(on.power_state, PowerState::PoweredOn);
        assert!(on.boot_time.is_some());
        assert!(sim.exists(&ds("c1/output.log")).await.unwrap());
        assert!(matches!(
            sim.power_on(&vm.reference).await,
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            sim.destroy(&vm.reference).await,
            Err(Error::InvalidState(_))
        ));
        // files of a running VM are locked
        assert!(matches!(
            sim.delete(&ds("c1")).await,
            Err(Error::InvalidState(_))
        ));
        sim.power_off(&vm.reference).await.unwrap();

        sim.destroy(&vm.reference).await.unwrap();
        assert!(!sim.exists(&ds("c1")).await.unwrap());
        assert!(sim.exists(&ds("images/l1/l1.vmdk")).await.unwrap());
        let e = sim.vm_info(&vm.reference).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { kind: "vm", .. }), "{e}");
        for e in [
            sim.power_on(&vm.reference).await.unwrap_err(),
            sim.destroy(&vm.reference).await.unwrap_err(),
            sim.reconfigure(&vm.reference, &VmChange::default())
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(e, Error::NotFound { kind: "vm", .. }), "{e}");
        }
        // the parent disk is free again
        sim.delete_disk(&ds("images/l1/l1.vmdk")).await.unwrap();
    }

    #[tokio::test]
    async fn create_vm_validates_before_acting() {
        let (_dir, sim) = open_temp();
        type Check = fn(&Error) -> bool;
        let bad_specs: Vec<(VmSpec, Check)> = vec![
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.name = String::new();
                    s
                },
                |e| matches!(e, Error::InvalidArgument(_)),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.num_cpus = 0;
                    s
                },
                |e| matches!(e, Error::InvalidArgument(_)),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.memory_mb = 0;
                    s
                },
                |e| matches!(e, Error::InvalidArgument(_)),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.pool = MoRef::new("ResourcePool", "resgroup-999");
                    s
                },
                |e| matches!(e, Error::NotFound { kind: "pool", .. }),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.files = DsPath::new("NoDS", "v");
                    s
                },
                |e| {
                    matches!(
                        e,
                        Error::NotFound {
                            kind: "datastore",
                            ..
                        }
                    )
                },
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.devices.push(s.devices[0].clone());
                    s
                },
                |e| matches!(e, Error::InvalidArgument(_)),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.devices.push(DeviceSpec {
                        device: Device::Nic {
                            key: 1,
                            network: MoRef::new("Network", "network-999"),
                            mac: None,
                        },
                        file_operation: FileOperation::Attach,
                    });
                    s
                },
                |e| {
                    matches!(
                        e,
                        Error::NotFound {
                            kind: "network",
                            ..
                        }
                    )
                },
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.devices.push(DeviceSpec {
                        device: Device::Disk {
                            key: 5,
                            controller_key: 77,
                            unit: 0,
                            file: ds("v/v.vmdk"),
                            parent: None,
                            capacity_kb: 8,
                            mode: DiskMode::Persistent,
                        },
                        file_operation: FileOperation::Create,
                    });
                    s
                },
                |e| matches!(e, Error::InvalidArgument(_)),
            ),
            (
                {
                    let mut s = small_vm(&sim, "v");
                    s.devices
                        .push(disk(5, 0, "v/none.vmdk", None, FileOperation::Attach));
                    s
                },
                |e| matches!(e, Error::NotFound { kind: "disk", .. }),
            ),
        ];
        for (spec, ok) in bad_specs {
            let e = sim.create_vm(&spec).await.unwrap_err();
            assert!(ok(&e), "{e}");
        }
        assert!(!sim.exists(&ds("v")).await.unwrap());
        assert!(sim.list_vms(None).await.unwrap().is_empty());
        let vm_tasks = sim
            .tasks()
            .iter()
            .filter(|t| t.name == "CreateVM_Task")
            .count();
        assert_eq!(vm_tasks, 9);
    }

    #[tokio::test]
    async fn reconfigure_applies_only_what_is_set() {
        let (_dir, sim) = open_temp();
        let mut spec = small_vm(&sim, "r");
        spec.extra_config.insert("keep".into(), "1".into());
        spec.extra_config.insert("drop".into(), "2".into());
        spec.annotation = "note".into();
        let vm = sim.create_vm(&spec).await.unwrap();
        let mut change = VmChange {
            memory_mb: Some(512),
            ..VmChange::default()
        };
        change.extra_config.insert("drop".into(), None);
        change.extra_config.insert("new".into(), Some("3".into()));
        change.add_devices.push(DeviceSpec {
            device: Device::Disk {
                key: 201,
                controller_key: 100,
                unit: 1,
                file: ds("r/data.vmdk"),
                parent: None,
                capacity_kb: 2048,
                mode: DiskMode::Persistent,
            },
            file_operation: FileOperation::Create,
        });
        sim.reconfigure(&vm.reference, &change).await.unwrap();
        let after = sim.vm_info(&vm.reference).await.unwrap();
        assert_eq!(after.memory_mb, 512);
        assert_eq!(after.num_cpus, 1);
        assert_eq!(after.annotation, "note");
        assert_eq!(
            after.extra_config.get("keep").map(String::as_str),
            Some("1")
        );
        assert_eq!(after.extra_config.get("new").map(String::as_str), Some("3"));
        assert!(!after.extra_config.contains_key("drop"));
        assert_eq!(after.devices.len(), 2);

        // a failed reconfigure leaves no disk behind
        let mut bad = VmChange::default();
        bad.add_devices.push(DeviceSpec {
            device: Device::Disk {
                key: 202,
                controller_key: 100,
                unit: 2,
                file: ds("r/more.vmdk"),
                parent: None,
                capacity_kb: 2048,
                mode: DiskMode::Persistent,
            },
            file_operation: FileOperation::Create,
        });
        bad.remove_devices.push(12345);
        assert!(sim.reconfigure(&vm.reference, &bad).await.is_err());
        assert!(!sim.exists(&ds("r/more.vmdk")).await.unwrap());
        // removing a device keeps its file; its controller cannot go while disks hang on it
        let rm_ctrl = VmChange {
            remove_devices: vec![100],
            ..VmChange::default()
        };
        assert!(sim.reconfigure(&vm.reference, &rm_ctrl).await.is_err());
        let rm_disk = VmChange {
            remove_devices: vec![201],
            ..VmChange::default()
        };
        sim.reconfigure(&vm.reference, &rm_disk).await.unwrap();
        assert!(sim.exists(&ds("r/data.vmdk")).await.unwrap());
        assert_eq!(sim.vm_info(&vm.reference).await.unwrap().devices.len(), 1);
        let _ = ScsiKind::LsiLogic;
    }

    #[tokio::test]
    async fn pools_and_paths() {
        let (_dir, sim) = open_temp();
        let root = root_pool(&sim);
        assert_eq!(root.kind, "ResourcePool");
        let limited = Allocation {
            limit: Some(1024),
            ..Allocation::default()
        };
        let vch = sim
            .ensure_pool(&root, "vch1", Allocation::default(), limited, true)
            .await
            .unwrap();
        assert_eq!(vch.reference.kind, "VirtualApp");
        assert_eq!(vch.path, "/DC0/host/DC0_C0/Resources/vch1");
        assert_eq!(vch.memory.limit, Some(1024));
        assert!(vch.host_cpu_cores >= 1);
        // ensure returns the existing one
        let again = sim
            .ensure_pool(
                &root,
                "vch1",
                Allocation::default(),
                Allocation::default(),
                true,
            )
            .await
            .unwrap();
        assert_eq!(again, vch);
        let child = sim
            .ensure_pool(
                &vch.reference,
                "inner",
                Allocation::default(),
                Allocation::default(),
                false,
            )
            .await
            .unwrap();
        assert_eq!(child.reference.kind, "ResourcePool");
        assert_eq!(
            sim.find_pool("/DC0/host/DC0_C0/Resources/vch1/inner")
                .await
                .unwrap(),
            child
        );
        assert_eq!(
            sim.find_pool("/DC0/host/DC0_C0").await.unwrap().reference,
            root
        );
        assert!(matches!(
            sim.find_pool("/DC0/host/DC0_C0/Resources/nope").await,
            Err(Error::NotFound { kind: "pool", .. })
        ));
        assert!(sim.find_pool("/DC0/datastore/LocalDS_0").await.is_err());
        assert!(
            sim.ensure_pool(
                &root,
                "bad",
                Allocation::default(),
                Allocation {
                    reservation: 10,
                    limit: Some(5),
                    ..Allocation::default()
                },
                false
            )
            .await
            .is_err()
        );

        // admission control against the vApp's memory limit
        let mut a = small_vm(&sim, "a");
        a.pool = vch.reference.clone();
        a.memory_mb = 768;
        let a = sim.create_vm(&a).await.unwrap();
        let mut b = small_vm(&sim, "b");
        b.pool = child.reference.clone();
        b.memory_mb = 512;
        let b = sim.create_vm(&b).await.unwrap();
        sim.power_on(&a.reference).await.unwrap();
        let e = sim.power_on(&b.reference).await.unwrap_err();
        assert!(matches!(e, Error::InsufficientResources(_)), "{e}");
        assert_eq!(
            sim.vm_info(&b.reference).await.unwrap().power_state,
            PowerState::PoweredOff
        );
        sim.update_pool(&vch.reference, Allocation::default(), Allocation::default())
            .await
            .unwrap();
        assert_eq!(
            sim.pool_info(&vch.reference).await.unwrap().memory.limit,
            None
        );
        sim.power_on(&b.reference).await.unwrap();

        assert_eq!(sim.list_vms(Some(&vch.reference)).await.unwrap().len(), 1);
        assert_eq!(sim.list_vms(None).await.unwrap().len(), 2);

        // pools with VMs or children stay
        assert!(matches!(
            sim.destroy_pool(&child.reference).await,
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            sim.destroy_pool(&vch.reference).await,
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            sim.destroy_pool(&root).await,
            Err(Error::InvalidState(_))
        ));
        sim.power_off(&b.reference).await.unwrap();
        sim.destroy(&b.reference).await.unwrap();
        sim.destroy_pool(&child.reference).await.unwrap();
        sim.power_off(&a.reference).await.unwrap();
        sim.destroy(&a.reference).await.unwrap();
        sim.destroy_pool(&vch.reference).await.unwrap();
        assert!(
            sim.pool_info(&vch.reference)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[derive(Debug, Default)]
    struct Recorder {
        calls: std::sync::Mutex<Vec<String>>,
        fail_start: bool,
    }

    impl crate::GuestRunner for Recorder {
        fn start(&self, _: &crate::GuestHost, vm: &VmInfo) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("start {}", vm.name));
            if self.fail_start {
                return Err(Error::Internal("no guest".into()));
            }
            assert_eq!(vm.power_state, PowerState::PoweredOn);
            Ok(())
        }
        fn stop(&self, _: &crate::GuestHost, vm: &VmInfo) -> Result<()> {
            self.calls.lock().unwrap().push(format!("stop {}", vm.name));
            Ok(())
        }
    }

    #[tokio::test]
    async fn guest_runner_seam() {
        let (_dir, sim) = open_temp();
        let rec = std::sync::Arc::new(Recorder::default());
        sim.set_guest_runner(rec.clone());
        let vm = sim.create_vm(&small_vm(&sim, "g")).await.unwrap();
        sim.power_on(&vm.reference).await.unwrap();
        sim.power_off(&vm.reference).await.unwrap();
        assert_eq!(*rec.calls.lock().unwrap(), ["start g", "stop g"]);

        let failing = std::sync::Arc::new(Recorder {
            fail_start: true,
            ..Recorder::default()
        });
        sim.set_guest_runner(failing.clone());
        assert!(sim.power_on(&vm.reference).await.is_err());
        assert_eq!(
            sim.vm_info(&vm.reference).await.unwrap().power_state,
            PowerState::PoweredOff
        );
    }
}
