//! Containers as container VMs: create (one VM from one full spec, its read-write disk a
//! child of the image's top layer), list, inspect, rename and remove. The container's
//! record lives on its VM (extraConfig), so a new engine rebuilds everything from the
//! backend; state comes from the VM's power state and what the guest reported.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tracing::info;

use crate::engine::{CreateContainer, Engine};
use crate::ids;
use crate::images::ImageConfig;
use crate::model::{Container, ContainerState, ContainerStatus, keys};
use crate::provider::{
    Device, DeviceSpec, DiskMode, FileOperation, PowerState, ScsiKind, VmChange, VmInfo, VmSpec,
};
use crate::reference::Reference;
use crate::{DsPath, Error, MoRef, Result};
use vic_tether::protocol::{GuestConfig, GuestStatus, STATUS_KEY, Session};

/// vCPUs of a container VM when the request sets none (VIC's default).
pub const DEFAULT_CPUS: u32 = 2;
/// Memory of a container VM when the request sets none, MiB (VIC's default).
pub const DEFAULT_MEMORY_MB: u64 = 2048;
/// Size of a container's read-write disk, KiB.
pub const RW_DISK_KB: u64 = 8 * 1024 * 1024;
/// The port group of the VCH's bridge network.
pub const BRIDGE_PORT_GROUP: &str = "vic-bridge";

/// The devices of a container VM (the keys are placeholders; vSphere assigns its own):
/// a paravirtual SCSI controller (100); the read-write disk `folder/disk`, to be
/// created as a child of `parent` (a base disk when `None`) (2000); a boot CD-ROM with
/// `iso` when given (3000); a NIC on `network` with `mac` (`None`: the server picks)
/// (4000); and the serial port's log `folder/output.log` (9000).
#[derive(Clone, Debug)]
pub struct ContainerDevices {
    /// The VM's folder.
    pub folder: DsPath,
    /// The disk's file name in it (`<id>.vmdk`).
    pub disk: String,
    /// The image's top layer disk.
    pub parent: Option<DsPath>,
    /// The disk's size, KiB (0: its parent's).
    pub capacity_kb: u64,
    /// The port group of the NIC.
    pub network: MoRef,
    /// A fixed MAC address.
    pub mac: Option<String>,
    /// The bootstrap image to boot from.
    pub iso: Option<DsPath>,
}

impl ContainerDevices {
    /// The devices, in a create spec.
    pub fn specs(&self) -> Vec<DeviceSpec> {
        let attach = |device| DeviceSpec {
            device,
            file_operation: FileOperation::Attach,
        };
        let mut out = vec![
            attach(Device::ScsiController {
                key: 100,
                kind: ScsiKind::ParaVirtual,
                bus: 0,
            }),
            DeviceSpec {
                device: Device::Disk {
                    key: 2000,
                    controller_key: 100,
                    unit: 0,
                    file: self.folder.join(&self.disk),
                    parent: self.parent.clone(),
                    capacity_kb: self.capacity_kb,
                    mode: DiskMode::Persistent,
                },
                file_operation: FileOperation::Create,
            },
        ];
        if let Some(iso) = &self.iso {
            out.push(attach(Device::Cdrom {
                key: 3000,
                iso: Some(iso.clone()),
            }));
        }
        out.push(attach(Device::Nic {
            key: 4000,
            network: self.network.clone(),
            mac: self.mac.clone(),
        }));
        out.push(attach(Device::Serial {
            key: 9000,
            file: self.folder.join("output.log"),
        }));
        out
    }
}

/// A container and the VM behind it.
#[derive(Clone, Debug)]
pub struct ContainerView {
    /// The container as recorded, with its state derived now.
    pub container: Container,
    /// Its VM.
    pub vm: VmInfo,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

/// Merges the image's defaults into the request, as dockerd does: an entrypoint given
/// in the request drops the image's command; env entries of the request win by key.
fn merge_image_config(req: &mut CreateContainer, image: &ImageConfig) {
    let Some(ic) = &image.config else { return };
    let c = &mut req.config;
    if c.entrypoint.is_empty() {
        c.entrypoint = ic.entrypoint.clone().unwrap_or_default();
        if c.cmd.is_empty() {
            c.cmd = ic.cmd.clone().unwrap_or_default();
        }
    }
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    for e in &c.env {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next().unwrap_or(x) != key);
        env.push(e.clone());
    }
    c.env = env;
    if c.working_dir.is_empty() {
        c.working_dir = ic.working_dir.clone().unwrap_or_default();
    }
    if c.user.is_empty() {
        c.user = ic.user.clone().unwrap_or_default();
    }
    if c.stop_signal.is_none() {
        c.stop_signal = ic.stop_signal.clone();
    }
    for p in ic.exposed_ports.iter().flat_map(|m| m.keys()) {
        if !c.exposed_ports.contains(p) {
            c.exposed_ports.push(p.clone());
        }
    }
    for (k, v) in ic.labels.iter().flatten() {
        c.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// What `docker wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    /// The container is not running (now or later).
    NotRunning,
    /// The next run (one that starts after the call) has ended.
    NextExit,
    /// The container was removed.
    Removed,
}

/// Docker's PATH when neither the image nor the request sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the guest needs to run the container, as the tether reads it.
fn guest_config(c: &Container) -> GuestConfig {
    let mut argv = c.config.entrypoint.iter().chain(&c.config.cmd).cloned();
    let path = argv.next().unwrap_or_default();
    let mut env = c.config.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={}", c.config.hostname));
    }
    GuestConfig {
        id: c.id.clone(),
        name: c.name.clone(),
        hostname: c.config.hostname.clone(),
        domainname: c.config.domainname.clone(),
        session: Session {
            path,
            args: argv.collect(),
            env,
            dir: c.config.working_dir.clone(),
            user: c.config.user.clone(),
            tty: c.config.tty,
            open_stdin: c.config.open_stdin,
            stdin_once: c.config.stdin_once,
            stop_signal: c.config.stop_signal.clone().unwrap_or_default(),
            attach_wait: false,
        },
        mounts: Vec::new(),
        resolv_conf: None,
        hosts: None,
    }
}

/// The container recorded on `vm`, with its state derived from the VM.
fn container_of(vm: &VmInfo) -> Option<Container> {
    let raw = vm.extra_config.get(keys::CONTAINER)?;
    let mut c: Container = serde_json::from_str(raw).ok()?;
    c.vm = Some(vm.reference.clone());
    if let Some(name) = vm.extra_config.get(keys::CONTAINER_NAME) {
        c.name = name.clone();
    }
    let status = GuestStatus::from_keys(&vm.extra_config).ok().flatten();
    if let Some(st) = &status {
        let fmt =
            |t: &Option<SystemTime>| t.map(|t| humantime::format_rfc3339_nanos(t).to_string());
        c.state.started_at = fmt(&st.started_at).or(c.state.started_at);
        c.state.finished_at = fmt(&st.finished_at);
        c.state.exit_code = st.exit_code.unwrap_or(0);
        c.state.pid = st.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
        c.state.error = st.error.clone().unwrap_or_default();
    }
    // Before the guest has reported, a running container's start is its VM's boot.
    if vm.power_state == PowerState::PoweredOn
        && status.as_ref().is_none_or(|s| s.started_at.is_none())
        && let Some(secs) = vm.boot_time
    {
        let boot = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        c.state.started_at = Some(humantime::format_rfc3339_nanos(boot).to_string());
    }
    c.state.status = match vm.power_state {
        PowerState::PoweredOn => ContainerStatus::Running,
        PowerState::Suspended => ContainerStatus::Paused,
        PowerState::PoweredOff if status.is_some() => ContainerStatus::Exited,
        PowerState::PoweredOff => ContainerStatus::Created,
    };
    if c.state.status != ContainerStatus::Running {
        c.state.pid = 0;
    }
    c.state.restart_count = vm
        .extra_config
        .get(keys::RESTART_COUNT)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(c)
}

impl Engine {
    /// Every container of this VCH, read from the backend now.
    pub async fn containers(&self) -> Result<Vec<ContainerView>> {
        Ok(self
            .container_vms()
            .await?
            .into_iter()
            .filter_map(|vm| container_of(&vm).map(|container| ContainerView { container, vm }))
            .map(|mut v| {
                if v.container.state.status == ContainerStatus::Exited
                    && self.lifecycle.is_restarting(&v.container.id)
                {
                    v.container.state.status = if v.container.host_config.auto_remove {
                        ContainerStatus::Removing
                    } else {
                        ContainerStatus::Restarting
                    };
                }
                v
            })
            .collect())
    }

    /// One container by full id, unique id prefix or name.
    pub async fn container(&self, key: &str) -> Result<ContainerView> {
        let all = self.containers().await?;
        let id = ids::resolve(
            "container",
            key,
            all.iter()
                .map(|v| (v.container.id.as_str(), v.container.name.as_str()))
                .collect::<Vec<_>>(),
        )?;
        all.into_iter()
            .find(|v| v.container.id == id)
            .ok_or_else(|| Error::not_found("container", key))
    }

    fn name_conflict(name: &str, id: &str) -> Error {
        Error::Conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
             You have to remove (or rename) that container to be able to reuse that name."
        ))
    }

    /// Creates a container VM: validates the request, the name and the image first;
    /// then one create call makes the VM with its disk (a child of the image's top
    /// layer), NIC, serial log and the container's record. Returns the container id.
    pub async fn create_container(&self, mut req: CreateContainer) -> Result<String> {
        let name = req
            .name
            .as_deref()
            .map(ids::validate_name)
            .transpose()?
            .map(str::to_string);
        let reference = Reference::parse(&req.image)?;
        let image_id = self.resolve_image(&req.image).await?;
        let image = self
            .images
            .image(&image_id)
            .await?
            .ok_or_else(|| Error::not_found("image", reference.to_string()))?;
        let config = image.parsed_config()?;
        if !config.os.is_empty() && config.os != "linux" {
            return Err(Error::InvalidArgument(format!(
                "image {reference} is for {}, vic runs linux containers",
                config.os
            )));
        }
        merge_image_config(&mut req, &config);
        if req.config.entrypoint.is_empty() && req.config.cmd.is_empty() {
            return Err(Error::InvalidArgument("No command specified".into()));
        }
        let network = self.backend.network.find_network(BRIDGE_PORT_GROUP).await?;
        let top = image
            .layers
            .last()
            .ok_or_else(|| Error::InvalidArgument(format!("image {reference} has no layers")))?;
        let parent_disk = self.images.layer_disk(top);

        let _names = self.names_lock.lock().await;
        let existing = self.containers().await?;
        let name = match name {
            Some(n) => {
                if let Some(other) = existing.iter().find(|v| v.container.name == n) {
                    return Err(Self::name_conflict(&n, &other.container.id));
                }
                n
            }
            None => ids::generate_name(|n| existing.iter().any(|v| v.container.name == n)),
        };
        let id = ids::new_id();
        let memory_mb = match req.host_config.memory {
            0 => DEFAULT_MEMORY_MB,
            b => b.div_ceil(1024 * 1024),
        };
        let num_cpus = match req.host_config.nano_cpus {
            0 => DEFAULT_CPUS,
            n => n.div_ceil(1_000_000_000).max(1) as u32,
        };
        if req.config.hostname.is_empty() {
            req.config.hostname = ids::short_id(&id).to_string();
        }
        let container = Container {
            id: id.clone(),
            name: name.clone(),
            image: req.image.clone(),
            image_id: image_id.clone(),
            created: now_rfc3339(),
            config: req.config,
            host_config: req.host_config,
            state: ContainerState {
                status: ContainerStatus::Created,
                exit_code: 0,
                pid: 0,
                started_at: None,
                finished_at: None,
                error: String::new(),
                restart_count: 0,
            },
            vm: None,
        };
        let folder = DsPath::new(self.vch.store.datastore.clone(), &id);
        let mut spec = VmSpec {
            name: format!("{name}-{}", ids::short_id(&id)),
            pool: self.vch.pool.reference.clone(),
            files: folder.clone(),
            num_cpus,
            memory_mb,
            guest_id: "otherGuest64".into(),
            devices: ContainerDevices {
                folder: folder.clone(),
                disk: format!("{id}.vmdk"),
                parent: Some(parent_disk),
                capacity_kb: RW_DISK_KB,
                network: network.reference,
                mac: None,
                iso: None,
            }
            .specs(),
            extra_config: BTreeMap::from([
                (keys::CONTAINER_ID.to_string(), id.clone()),
                (keys::CONTAINER_NAME.to_string(), name.clone()),
                (keys::IMAGE_ID.to_string(), image_id),
                (keys::VCH_ID.to_string(), self.vch.id.clone()),
                (
                    keys::CONTAINER.to_string(),
                    serde_json::to_string(&container)?,
                ),
            ]),
            annotation: format!("vic container {name} ({})", container.image),
        };
        spec.extra_config.extend(guest_config(&container).to_keys());
        // The VM is sized in whole vCPUs and MiB; the exact `--cpus` and `--memory`
        // go to the guest runner as finer limits.
        let hc = &container.host_config;
        if hc.memory != 0 || hc.nano_cpus != 0 {
            let limits = serde_json::json!({
                "nano_cpus": (hc.nano_cpus != 0).then_some(hc.nano_cpus),
                "memory_bytes": (hc.memory != 0).then_some(hc.memory),
            });
            spec.extra_config
                .insert(keys::LIMITS.to_string(), limits.to_string());
        }
        self.backend.compute.create_vm(&spec).await?;
        info!(container = %id, %name, "container created");
        self.events.emit(
            "container",
            "create",
            &id,
            &[("image", &container.image), ("name", &name)],
        );
        Ok(id)
    }

    /// Waits until a container is not running (`next_exit`: until the run after this
    /// call has ended; `removed`: until it is gone) and returns its exit code.
    pub async fn wait_container(&self, key: &str, condition: WaitCondition) -> Result<i32> {
        let first = self.container(key).await?;
        let id = first.container.id;
        // A run after this call changes the guest's status key (a start clears it, the
        // guest reports running, then exited; a guest that fails early reports only
        // its exit, with no start time).
        let status_before = first.vm.extra_config.get(STATUS_KEY).cloned();
        let mut last_code = first.container.state.exit_code;
        let mut version = 0;
        let mut off_since: Option<std::time::Instant> = None;
        loop {
            let view = match self.container(&id).await {
                Ok(v) => v,
                Err(e) if e.is_not_found() && condition == WaitCondition::Removed => {
                    return Ok(last_code);
                }
                Err(e) => return Err(e),
            };
            last_code = view.container.state.exit_code;
            let status_now = view.vm.extra_config.get(STATUS_KEY);
            let new_run = status_now.is_some() && status_now != status_before.as_ref();
            let wanted = match condition {
                WaitCondition::NotRunning => true,
                WaitCondition::NextExit => new_run,
                WaitCondition::Removed => false,
            };
            if wanted && view.vm.power_state == PowerState::PoweredOff {
                // After a power off the guest's final status arrives a moment later
                // (the runner reconciles it); a guest that never ran has none.
                let status = GuestStatus::from_keys(&view.vm.extra_config).ok().flatten();
                let settled = status
                    .as_ref()
                    .is_none_or(|s| s.state == vic_tether::protocol::GuestState::Exited);
                let waited = off_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed();
                if settled || waited > std::time::Duration::from_secs(15) {
                    return Ok(view.container.state.exit_code);
                }
            }
            let updates = self
                .backend
                .compute
                .wait_for_updates(version, std::time::Duration::from_secs(5))
                .await?;
            version = updates.version;
        }
    }

    /// The container and its log records (`output.log` in its datastore folder).
    pub async fn container_logs(
        &self,
        key: &str,
    ) -> Result<(Container, Vec<vic_tether::logs::Record>)> {
        let (view, bytes) = self.container_log_bytes(key, 0).await?;
        let mut reader = vic_tether::logs::Reader::new(&bytes[..]);
        let mut out = Vec::new();
        while let Some(r) = reader
            .next_record()
            .map_err(|e| Error::Internal(format!("unreadable log of {}: {e}", view.container.id)))?
        {
            out.push(r);
        }
        Ok((view.container, out))
    }

    /// The container now and the bytes of its log from `offset` on (a follower polls
    /// this; the log only grows while the container exists).
    pub async fn container_log_bytes(
        &self,
        key: &str,
        offset: u64,
    ) -> Result<(ContainerView, Vec<u8>)> {
        let view = self.container(key).await?;
        let path = view.vm.files.join("output.log");
        let bytes = match self.backend.storage.read_file_from(&path, offset).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok((view, bytes))
    }

    /// Renames a container.
    pub async fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        let new_name = ids::validate_name(new_name)?.to_string();
        let _names = self.names_lock.lock().await;
        let view = self.container(key).await?;
        if view.container.name == new_name {
            return Err(Error::InvalidArgument(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(other) = self
            .containers()
            .await?
            .iter()
            .find(|v| v.container.name == new_name)
        {
            return Err(Self::name_conflict(&new_name, &other.container.id));
        }
        let mut record = view.container.clone();
        record.name = new_name.clone();
        record.vm = None;
        let change = VmChange {
            extra_config: BTreeMap::from([
                (keys::CONTAINER_NAME.to_string(), Some(new_name)),
                (
                    keys::CONTAINER.to_string(),
                    Some(serde_json::to_string(&record)?),
                ),
            ]),
            ..Default::default()
        };
        self.backend
            .compute
            .reconfigure(&view.vm.reference, &change)
            .await?;
        self.events.emit(
            "container",
            "rename",
            &record.id,
            &[
                ("image", &record.image),
                ("name", &record.name),
                ("oldName", &format!("/{}", view.container.name)),
            ],
        );
        Ok(())
    }

    /// Removes a container and its VM (with its read-write disk and log). A running
    /// container needs `force`, which powers it off first.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let view = self.container(key).await?;
        let id = &view.container.id;
        if view.vm.power_state != PowerState::PoweredOff {
            if !force {
                return Err(Error::Conflict(format!(
                    "You cannot remove a {} container {id}. Stop the container before attempting removal or force remove",
                    view.container.state.status.as_str()
                )));
            }
            self.backend.compute.power_off(&view.vm.reference).await?;
        }
        self.backend.compute.destroy(&view.vm.reference).await?;
        info!(container = %id, "container removed");
        self.events.emit(
            "container",
            "destroy",
            id,
            &[
                ("image", &view.container.image),
                ("name", &view.container.name),
            ],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::RunConfig;

    #[test]
    fn image_defaults_merge_like_dockerd() {
        let image = ImageConfig {
            config: Some(RunConfig {
                env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
                cmd: Some(vec!["sh".into()]),
                working_dir: Some("/w".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut req = CreateContainer {
            image: "x".into(),
            ..Default::default()
        };
        req.config.env = vec!["A=2".into()];
        merge_image_config(&mut req, &image);
        assert_eq!(req.config.cmd, vec!["sh"]);
        assert_eq!(req.config.env, vec!["PATH=/bin", "A=2"]);
        assert_eq!(req.config.working_dir, "/w");

        let mut req = CreateContainer {
            image: "x".into(),
            ..Default::default()
        };
        req.config.entrypoint = vec!["/bin/echo".into()];
        merge_image_config(&mut req, &image);
        assert!(
            req.config.cmd.is_empty(),
            "an entrypoint drops the image's cmd"
        );
    }
}
