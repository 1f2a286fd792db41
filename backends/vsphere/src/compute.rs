//! The [`Compute`] provider on vSphere: resource pools and vApps, and container VMs
//! created with one full `ConfigSpec`, powered on and off with tasks, reconfigured,
//! destroyed with their folder, listed with their extraConfig, and watched with a
//! property collector of their own.
//!
//! Round trips: create is `FindChild` (vSphere names are unique per folder, vcsim does
//! not check), `CreateVM_Task`, one read of the task, one read of the VM; power on or off
//! is the task call and one read of it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{Instrument, debug, info_span};
use vic_core::provider::{
    Allocation, Compute, Device, DeviceSpec, FileOperation, PoolInfo, VmChange, VmInfo, VmSpec,
    VmUpdates,
};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::client::{ObjectContent, PropertySpec, filter_spec, traversal};
use crate::devices::{self, NicBacking, VM_PATHS};
use crate::xml::Element;
use crate::{Shared, VsphereBackend};

pub(crate) fn vm_spec_props() -> Vec<PropertySpec> {
    vec![PropertySpec {
        kind: "VirtualMachine".into(),
        paths: VM_PATHS.iter().map(|p| p.to_string()).collect(),
    }]
}

/// Traversal from a VM folder to every VM under it (sub-folders and vApps).
pub(crate) fn vm_folder_traversal() -> Vec<Element> {
    vec![
        traversal("vmf", "Folder", "childEntity", &["vmf", "vapp"]),
        traversal("vapp", "VirtualApp", "vm", &[]),
    ]
}

fn allocation_xml(name: &str, a: &Allocation) -> Element {
    Element::new(name)
        .with_text("reservation", a.reservation.to_string())
        .with_text("expandableReservation", a.expandable.to_string())
        .with_text(
            "limit",
            a.limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-1".into()),
        )
        .with(
            Element::new("shares")
                .with_text("shares", a.shares.to_string())
                .with_text("level", "custom"),
        )
}

fn resource_spec(name: &str, cpu: &Allocation, memory: &Allocation) -> Element {
    Element::new(name)
        .with(allocation_xml("cpuAllocation", cpu))
        .with(allocation_xml("memoryAllocation", memory))
}

fn parse_allocation(e: Option<&Element>) -> Allocation {
    let Some(e) = e else {
        return Allocation::default();
    };
    let num = |n: &str| e.text_of(n).and_then(|t| t.trim().parse::<i64>().ok());
    Allocation {
        reservation: num("reservation").unwrap_or(0).max(0) as u64,
        expandable: e.text_of("expandableReservation") != Some("false"),
        limit: num("limit").filter(|l| *l >= 0).map(|l| l as u64),
        shares: e
            .at(&["shares", "shares"])
            .and_then(|s| s.text.trim().parse().ok())
            .unwrap_or(4000),
    }
}

fn is_pool(r: &MoRef) -> bool {
    r.kind == "ResourcePool" || r.kind == "VirtualApp"
}

impl Shared {
    /// The NIC backing for a network, from the network cache (refreshed on a miss).
    pub(crate) async fn nic_backings(
        &self,
        networks: impl Iterator<Item = &MoRef>,
    ) -> Result<BTreeMap<MoRef, NicBacking>> {
        let mut out = BTreeMap::new();
        for net in networks {
            if out.contains_key(net) {
                continue;
            }
            let backing = if net.kind == "DistributedVirtualPortgroup" {
                let uuid = self.dvs_uuid(net).await?;
                NicBacking::Distributed {
                    switch_uuid: uuid,
                    portgroup_key: net.value.clone(),
                }
            } else {
                let name = match self.cached_network(net) {
                    Some(n) => n,
                    None => {
                        self.refresh_networks().await?;
                        self.cached_network(net)
                            .ok_or_else(|| Error::not_found("network", net.to_string()))?
                    }
                };
                NicBacking::Network { name }
            };
            out.insert(net.clone(), backing);
        }
        Ok(out)
    }

    fn cached_network(&self, net: &MoRef) -> Option<String> {
        crate::client_lock(&self.networks)
            .get(net)
            .map(|n| n.name.clone())
    }

    async fn dvs_uuid(&self, pg: &MoRef) -> Result<String> {
        if let Some(u) = crate::client_lock(&self.dvs_uuids).get(pg) {
            return Ok(u.clone());
        }
        let c = &self.client;
        let o = c
            .properties(pg, &["config.distributedVirtualSwitch"])
            .await?;
        let dvs = o
            .get("config.distributedVirtualSwitch")
            .and_then(Element::as_moref)
            .ok_or_else(|| Error::not_found("network", pg.to_string()))?;
        let uuid = c
            .properties(&dvs, &["uuid"])
            .await?
            .text("uuid")
            .unwrap_or_default()
            .to_string();
        crate::client_lock(&self.dvs_uuids).insert(pg.clone(), uuid.clone());
        Ok(uuid)
    }

    /// Reads VMs' properties; `pool` limits to one pool's VMs, `vms` to given VMs.
    pub(crate) async fn read_vms(
        &self,
        pool: Option<&MoRef>,
        vms: &[MoRef],
    ) -> Result<Vec<VmInfo>> {
        let c = &self.client;
        let objs: Vec<ObjectContent> = if !vms.is_empty() {
            let mut spec = Element::new("specSet");
            for p in vm_spec_props() {
                spec = spec.with(p.to_prop_set());
            }
            for vm in vms {
                spec = spec.with(Element::new("objectSet").with_moref("obj", vm));
            }
            // Missing objects are reported, not a fault for the whole call.
            spec = spec.with_text("reportMissingObjectsInResults", "true");
            c.retrieve(spec).await?
        } else if let Some(pool) = pool {
            c.retrieve(filter_spec(
                "specSet",
                &vm_spec_props(),
                pool,
                true,
                vec![traversal("vms", "ResourcePool", "vm", &[])],
            ))
            .await?
        } else {
            c.retrieve(filter_spec(
                "specSet",
                &vm_spec_props(),
                &self.inv.vm_folder,
                true,
                vm_folder_traversal(),
            ))
            .await?
        };
        objs.iter()
            .filter(|o| o.obj.as_ref().is_some_and(|r| r.kind == "VirtualMachine"))
            // A VM being created has no config yet; a destroyed one no properties.
            .filter(|o| o.get("config.files.vmPathName").is_some())
            .map(devices::vm_info)
            .collect()
    }

    async fn one_vm(&self, vm: &MoRef) -> Result<VmInfo> {
        if vm.kind != "VirtualMachine" {
            return Err(Error::not_found("vm", vm.value.clone()));
        }
        let mut v = self.read_vms(None, std::slice::from_ref(vm)).await?;
        v.pop()
            .ok_or_else(|| Error::not_found("vm", vm.value.clone()))
    }

    async fn pool_info_of(&self, pool: &MoRef) -> Result<PoolInfo> {
        if !is_pool(pool) {
            return Err(Error::not_found("pool", pool.value.clone()));
        }
        // The pool, its ancestors (for the path) and its owner (for the hardware), in
        // one call.
        let spec = filter_spec(
            "specSet",
            &[
                PropertySpec::new("ManagedEntity", &["name", "parent"]),
                PropertySpec::new(
                    "ResourcePool",
                    &["config.cpuAllocation", "config.memoryAllocation", "owner"],
                ),
                PropertySpec::new(
                    "ComputeResource",
                    &[
                        "summary.numCpuCores",
                        "summary.totalCpu",
                        "summary.totalMemory",
                    ],
                ),
            ],
            pool,
            false,
            vec![
                traversal("up", "ManagedEntity", "parent", &["up"]),
                traversal("owner", "ResourcePool", "owner", &[]),
            ],
        );
        let objs = self.client.retrieve(spec).await?;
        let find = |r: &MoRef| objs.iter().find(|o| o.obj.as_ref() == Some(r));
        let me = find(pool).ok_or_else(|| Error::not_found("pool", pool.value.clone()))?;
        // The inventory path: names from the pool up to (not including) the root folder.
        let mut names = Vec::new();
        let mut cur = Some(me);
        let mut seen = HashSet::new();
        while let Some(o) = cur {
            let Some(r) = o.obj.clone() else { break };
            if !seen.insert(r.clone()) {
                break;
            }
            let parent = o.get("parent").and_then(Element::as_moref);
            if parent.is_none() {
                break; // the root folder
            }
            names.push(o.text("name").unwrap_or_default().to_string());
            cur = parent.as_ref().and_then(find);
        }
        names.reverse();
        let owner = me.get("owner").and_then(Element::as_moref);
        let hw = owner.as_ref().and_then(find);
        let num = |p: &str| {
            hw.and_then(|h| h.text(p))
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cores = num("summary.numCpuCores");
        Ok(PoolInfo {
            reference: pool.clone(),
            name: me.text("name").unwrap_or_default().to_string(),
            path: format!("/{}", names.join("/")),
            cpu: parse_allocation(me.get("config.cpuAllocation")),
            memory: parse_allocation(me.get("config.memoryAllocation")),
            host_cpu_cores: cores as u32,
            host_cpu_mhz: num("summary.totalCpu").checked_div(cores).unwrap_or(0),
            host_memory_mb: num("summary.totalMemory") / (1024 * 1024),
        })
    }

    /// Child pools of `parent` by name.
    async fn child_pools(&self, parent: &MoRef) -> Result<Vec<(String, MoRef)>> {
        let children = self
            .client
            .names_along(parent, traversal("rp", "ResourcePool", "resourcePool", &[]))
            .await?;
        Ok(children.into_iter().filter(|(_, r)| is_pool(r)).collect())
    }

    /// Makes sure every disk that `devices` create has its descriptor.
    async fn ensure_created_descriptors(&self, devices: &[DeviceSpec]) -> Result<()> {
        for d in devices {
            if let (
                Device::Disk {
                    file,
                    parent,
                    capacity_kb,
                    ..
                },
                FileOperation::Create,
            ) = (&d.device, d.file_operation)
            {
                self.ensure_descriptor(file, *capacity_kb, parent.as_ref())
                    .await?;
            }
        }
        Ok(())
    }

    fn ds_path_check(&self, p: &DsPath) -> Result<()> {
        p.validate()?;
        if !self.inv.datastores.contains_key(&p.datastore) {
            return Err(Error::not_found("datastore", p.datastore.clone()));
        }
        Ok(())
    }
}

#[async_trait]
impl Compute for VsphereBackend {
    async fn find_pool(&self, path: &str) -> Result<PoolInfo> {
        let s = &self.shared;
        let missing = || Error::not_found("pool", path.to_string());
        let r = s.client.find_by_path(path).await?.ok_or_else(missing)?;
        let pool = match r.kind.as_str() {
            "ResourcePool" | "VirtualApp" => r,
            // A compute resource stands for its root pool, as VIC's --compute-resource.
            "ClusterComputeResource" | "ComputeResource" => s
                .client
                .properties(&r, &["resourcePool"])
                .await?
                .get("resourcePool")
                .and_then(Element::as_moref)
                .ok_or_else(missing)?,
            "HostSystem" => {
                let parent = s
                    .client
                    .properties(&r, &["parent"])
                    .await?
                    .get("parent")
                    .and_then(Element::as_moref)
                    .ok_or_else(missing)?;
                s.client
                    .properties(&parent, &["resourcePool"])
                    .await?
                    .get("resourcePool")
                    .and_then(Element::as_moref)
                    .ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
        s.pool_info_of(&pool).await
    }

    async fn pool_info(&self, pool: &MoRef) -> Result<PoolInfo> {
        self.shared.pool_info_of(pool).await
    }

    async fn ensure_pool(
        &self,
        parent: &MoRef,
        name: &str,
        cpu: Allocation,
        memory: Allocation,
        vapp: bool,
    ) -> Result<PoolInfo> {
        let s = &self.shared;
        vic_core::provider::check_inventory_name(name, "resource pool")?;
        cpu.check("CPU")?;
        memory.check("memory")?;
        if !is_pool(parent) {
            return Err(Error::not_found("pool", parent.value.clone()));
        }
        if let Some((_, r)) = s
            .child_pools(parent)
            .await?
            .into_iter()
            .find(|(n, _)| n == name)
        {
            return s.pool_info_of(&r).await;
        }
        let spec = resource_spec("spec", &cpu, &memory);
        let created = if vapp {
            let spec = resource_spec("resSpec", &cpu, &memory);
            s.client
                .call_moref(
                    Element::new("CreateVApp")
                        .with_moref("_this", parent)
                        .with_text("name", name)
                        .with(spec)
                        .with(Element::new("configSpec"))
                        .with_moref("vmFolder", &s.inv.vm_folder),
                )
                .await
        } else {
            s.client
                .call_moref(
                    Element::new("CreateResourcePool")
                        .with_moref("_this", parent)
                        .with_text("name", name)
                        .with(spec),
                )
                .await
        };
        match created {
            Ok(r) => s.pool_info_of(&r).await,
            // Created meanwhile by someone else.
            Err(e) if e.is_fault("DuplicateName") => {
                match s
                    .child_pools(parent)
                    .await?
                    .into_iter()
                    .find(|(n, _)| n == name)
                {
                    Some((_, r)) => s.pool_info_of(&r).await,
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update_pool(&self, pool: &MoRef, cpu: Allocation, memory: Allocation) -> Result<()> {
        cpu.check("CPU")?;
        memory.check("memory")?;
        if !is_pool(pool) {
            return Err(Error::not_found("pool", pool.value.clone()));
        }
        self.shared
            .client
            .call(
                Element::new("UpdateConfig")
                    .with_moref("_this", pool)
                    .with(resource_spec("config", &cpu, &memory)),
            )
            .await?;
        Ok(())
    }

    async fn destroy_pool(&self, pool: &MoRef) -> Result<()> {
        let s = &self.shared;
        if !is_pool(pool) {
            return Err(Error::not_found("pool", pool.value.clone()));
        }
        let o = s
            .client
            .properties(pool, &["name", "parent", "vm", "resourcePool"])
            .await?;
        let name = o.text("name").unwrap_or_default().to_string();
        if !o
            .get("parent")
            .and_then(Element::as_moref)
            .is_some_and(|p| is_pool(&p))
        {
            return Err(Error::InvalidState(format!(
                "{name} is the root resource pool of its cluster"
            )));
        }
        let vms = o.get("vm").map(|v| v.children.len()).unwrap_or(0);
        if vms > 0 {
            return Err(Error::InvalidState(format!(
                "resource pool {name} still holds {vms} VM(s)"
            )));
        }
        // Only references count: vcsim answers a vApp's `resourcePool` with the vApp's
        // embedded ResourcePool object instead of its child list.
        let children = o
            .get("resourcePool")
            .filter(|v| v.type_name() == "ArrayOfManagedObjectReference")
            .map(|v| {
                v.children
                    .iter()
                    .filter_map(Element::as_moref)
                    .filter(is_pool)
                    .count()
            })
            .unwrap_or(0);
        if children > 0 {
            return Err(Error::InvalidState(format!(
                "resource pool {name} still holds other pools"
            )));
        }
        s.client
            .run_task(Element::new("Destroy_Task").with_moref("_this", pool))
            .await?;
        Ok(())
    }

    async fn create_vm(&self, spec: &VmSpec) -> Result<VmInfo> {
        let s = &self.shared;
        let span = info_span!("create_vm", vm = %spec.name);
        async {
            if spec.name.trim().is_empty()
                || spec.name.chars().count() > 80
                || spec.name.contains(['/', '\\', '%'])
            {
                return Err(Error::InvalidArgument(format!(
                    "invalid VM name {:?}",
                    spec.name
                )));
            }
            if spec.num_cpus == 0 {
                return Err(Error::InvalidArgument("a VM needs at least one CPU".into()));
            }
            if spec.memory_mb == 0 {
                return Err(Error::InvalidArgument("a VM needs memory".into()));
            }
            if !is_pool(&spec.pool) {
                return Err(Error::not_found("pool", spec.pool.value.clone()));
            }
            s.ds_path_check(&spec.files)?;
            if spec.files.path.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "VM files {} must be a folder on the datastore",
                    spec.files
                )));
            }
            for d in &spec.devices {
                match &d.device {
                    Device::Disk { file, parent, .. } => {
                        s.ds_path_check(file)?;
                        if let Some(p) = parent {
                            s.ds_path_check(p)?;
                        }
                    }
                    Device::Serial { file, .. } => s.ds_path_check(file)?,
                    Device::Cdrom { iso: Some(f), .. } => s.ds_path_check(f)?,
                    _ => {}
                }
            }
            let nets = s
                .nic_backings(spec.devices.iter().filter_map(|d| match &d.device {
                    Device::Nic { network, .. } => Some(network),
                    _ => None,
                }))
                .await?;
            // Child disks without a size take their parent's.
            let mut adds = spec.devices.clone();
            for d in &mut adds {
                if let (
                    Device::Disk {
                        parent: Some(p),
                        capacity_kb,
                        ..
                    },
                    FileOperation::Create,
                ) = (&mut d.device, d.file_operation)
                    && *capacity_kb == 0
                {
                    *capacity_kb = s.read_disk(p).await?.capacity_kb;
                }
            }
            let keys = devices::temp_keys(&adds);
            let nic = |n: &MoRef| {
                nets.get(n)
                    .cloned()
                    .ok_or_else(|| Error::not_found("network", n.to_string()))
            };
            let changes = adds
                .iter()
                .map(|d| devices::add_device(d, &keys, &nic))
                .collect::<Result<Vec<_>>>()?;

            // vSphere refuses a second VM of the same name in a folder; vcsim does not.
            if s.client
                .find_child(&s.inv.vm_folder, &spec.name)
                .await?
                .is_some()
            {
                return Err(Error::Conflict(format!(
                    "The name '{}' already exists.",
                    spec.name
                )));
            }
            let vmx = spec.files.join(format!("{}.vmx", spec.name));
            let config = Element::new("config")
                .with_text("name", &spec.name)
                .with_text("guestId", &spec.guest_id)
                .with_text("annotation", &spec.annotation)
                .with(Element::new("files").with_text("vmPathName", vmx.to_string()))
                .with_text("numCPUs", spec.num_cpus.to_string())
                .with_text("memoryMB", spec.memory_mb.to_string())
                .with_all(changes)
                .with_all(devices::extra_config(
                    spec.extra_config.iter().map(|(k, v)| (k, Some(v))),
                ));
            let method = if spec.pool.kind == "VirtualApp" {
                Element::new("CreateChildVM_Task")
                    .with_moref("_this", &spec.pool)
                    .with(config)
            } else {
                Element::new("CreateVM_Task")
                    .with_moref("_this", &s.inv.vm_folder)
                    .with(config)
                    .with_moref("pool", &spec.pool)
            };
            let vm = s
                .client
                .run_task(method)
                .await?
                .and_then(|r| r.as_moref())
                .ok_or_else(|| Error::Internal("CreateVM_Task returned no VM".into()))?;
            debug!(%vm, "created");
            let finish = async {
                s.ensure_created_descriptors(&adds).await?;
                s.one_vm(&vm).await
            };
            match finish.await {
                Ok(info) => Ok(info),
                Err(e) => {
                    // Leave nothing behind.
                    let _ = s
                        .client
                        .run_task(Element::new("Destroy_Task").with_moref("_this", &vm))
                        .await;
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn power_on(&self, vm: &MoRef) -> Result<()> {
        self.shared
            .client
            .run_task(Element::new("PowerOnVM_Task").with_moref("_this", vm))
            .instrument(info_span!("power_on", %vm))
            .await?;
        Ok(())
    }

    async fn power_off(&self, vm: &MoRef) -> Result<()> {
        self.shared
            .client
            .run_task(Element::new("PowerOffVM_Task").with_moref("_this", vm))
            .instrument(info_span!("power_off", %vm))
            .await?;
        Ok(())
    }

    async fn reconfigure(&self, vm: &MoRef, change: &VmChange) -> Result<()> {
        let s = &self.shared;
        if change.num_cpus == Some(0) {
            return Err(Error::InvalidArgument("a VM needs at least one CPU".into()));
        }
        if change.memory_mb == Some(0) {
            return Err(Error::InvalidArgument("a VM needs memory".into()));
        }
        let mut removes = Vec::new();
        if !change.remove_devices.is_empty() {
            // A removal names the whole device as the server has it.
            let o = s.client.properties(vm, &["config.hardware.device"]).await?;
            let have: Vec<&Element> = o
                .get("config.hardware.device")
                .map(|v| v.children.iter().collect())
                .unwrap_or_default();
            for key in &change.remove_devices {
                let raw = have
                    .iter()
                    .find(|d| d.text_of("key").and_then(|k| k.parse::<i32>().ok()) == Some(*key))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("the VM has no device {key} to remove"))
                    })?;
                removes.push(devices::remove_device(raw));
            }
        }
        let nets = s
            .nic_backings(change.add_devices.iter().filter_map(|d| match &d.device {
                Device::Nic { network, .. } => Some(network),
                _ => None,
            }))
            .await?;
        let keys = devices::temp_keys(&change.add_devices);
        let nic = |n: &MoRef| {
            nets.get(n)
                .cloned()
                .ok_or_else(|| Error::not_found("network", n.to_string()))
        };
        let adds = change
            .add_devices
            .iter()
            .map(|d| devices::add_device(d, &keys, &nic))
            .collect::<Result<Vec<_>>>()?;
        let spec = Element::new("spec")
            .with_opt("annotation", change.annotation.clone())
            .with_opt("numCPUs", change.num_cpus.map(|n| n.to_string()))
            .with_opt("memoryMB", change.memory_mb.map(|n| n.to_string()))
            .with_all(removes)
            .with_all(adds)
            .with_all(devices::extra_config(
                change.extra_config.iter().map(|(k, v)| (k, v.as_ref())),
            ));
        s.client
            .run_task(
                Element::new("ReconfigVM_Task")
                    .with_moref("_this", vm)
                    .with(spec),
            )
            .instrument(info_span!("reconfigure", %vm))
            .await?;
        s.ensure_created_descriptors(&change.add_devices).await
    }

    async fn destroy(&self, vm: &MoRef) -> Result<()> {
        let s = &self.shared;
        let span = info_span!("destroy", %vm);
        async {
            let info = s.one_vm(vm).await?;
            s.client
                .run_task(Element::new("Destroy_Task").with_moref("_this", vm))
                .await?;
            // vSphere removes the files it knows of; the folder and files of our own
            // (layer tars, logs) may stay. Remove the folder; gone already is fine.
            match s.delete_path(&info.files).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    async fn vm_info(&self, vm: &MoRef) -> Result<VmInfo> {
        self.shared.one_vm(vm).await
    }

    async fn list_vms(&self, pool: Option<&MoRef>) -> Result<Vec<VmInfo>> {
        if let Some(p) = pool.filter(|p| !is_pool(p)) {
            return Err(Error::not_found("pool", p.value.clone()));
        }
        let mut vms = self.shared.read_vms(pool, &[]).await?;
        vms.sort_by(|a, b| a.name.cmp(&b.name).then(a.reference.cmp(&b.reference)));
        Ok(vms)
    }

    async fn wait_for_updates(&self, version: u64, timeout: Duration) -> Result<VmUpdates> {
        crate::updates::wait_for_updates(&self.shared, version, timeout).await
    }
}
