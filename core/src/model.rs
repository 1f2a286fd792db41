//! The domain model: containers, images, layers, volumes, networks, port bindings and
//! events as the engine knows them, independent of the Docker API's JSON shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MoRef;

/// extraConfig keys under which a container VM carries what vic needs to rebuild it.
pub mod keys {
    /// The container's 64-hex id; its presence marks a VM as a container VM.
    pub const CONTAINER_ID: &str = "guestinfo.vice./common/id";
    /// The container's name.
    pub const CONTAINER_NAME: &str = "guestinfo.vice./common/name";
    /// The id (`sha256:…`) of the container's image.
    pub const IMAGE_ID: &str = "guestinfo.vice./common/image";
    /// The engine's record of the container (JSON of `Container`), not visible to the guest.
    pub const CONTAINER: &str = "vice./container";
    /// The id of the VCH that owns the container.
    pub const VCH_ID: &str = "guestinfo.vice./common/vch";
    /// Set (`"true"`) when a user stopped or killed the container, so that its restart
    /// policy leaves it alone; cleared by the next start.
    pub const MANUAL_STOP: &str = "vice./manualStop";
    /// How often the restart policy restarted the container since its last manual start.
    pub const RESTART_COUNT: &str = "vice./restartCount";
    /// Finer limits than the VM's size, for the guest runner: JSON
    /// `{"nano_cpus": N, "memory_bytes": N}` (Docker's `--cpus`, `--memory`).
    pub const LIMITS: &str = "guestinfo.vice./limits";
}

/// A container's lifecycle state, as Docker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process ended.
    Exited,
    /// Could not be stopped or removed cleanly.
    Dead,
}

impl ContainerStatus {
    /// Docker's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Removing => "removing",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
}

/// A port published from a container to the VCH's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortBinding {
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Address on the VCH to bind ("" for all).
    pub host_ip: String,
    /// Port on the VCH (0: pick one).
    pub host_port: u16,
}

/// When the engine restarts a container whose process ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max_retries` times (0: no bound).
    OnFailure {
        /// The bound.
        max_retries: u32,
    },
    /// Always, also after an endpoint restart.
    Always,
    /// Always, unless the user stopped it.
    UnlessStopped,
}

/// What runs in a container, from the image and the create request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Host name inside the container.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// User (name, uid, or uid:gid).
    pub user: String,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Command.
    pub cmd: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ports the image or request exposes (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Signal that stops the container.
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal before killing.
    pub stop_timeout: Option<u32>,
}

/// How a container is hosted: resources, ports, restart policy, mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfig {
    /// Memory limit in bytes (0: the VCH's default).
    pub memory: u64,
    /// CPU limit in billionths of a CPU (0: the VCH's default).
    pub nano_cpus: u64,
    /// Published ports.
    pub port_bindings: Vec<PortBinding>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// `volume:/path[:ro]` mounts.
    pub binds: Vec<String>,
    /// Network to attach to (`bridge`, `none`, a user network).
    pub network_mode: String,
}

/// A container's runtime state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Lifecycle state.
    pub status: ContainerStatus,
    /// Exit code of the last run.
    pub exit_code: i32,
    /// Process id inside the VCH's view, when known.
    pub pid: u32,
    /// RFC 3339 time of the last start.
    pub started_at: Option<String>,
    /// RFC 3339 time of the last exit.
    pub finished_at: Option<String>,
    /// Why the last start failed.
    pub error: String,
    /// How often the restart policy restarted it.
    pub restart_count: u32,
}

/// A container and the VM behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64-hex id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's id (`sha256:…`).
    pub image_id: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// What runs.
    pub config: ContainerConfig,
    /// How it is hosted.
    pub host_config: HostConfig,
    /// Its state.
    pub state: ContainerState,
    /// The container VM.
    pub vm: Option<MoRef>,
}

/// One filesystem layer: a disk, child of its parent layer's disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Chain id of the layer (`sha256:…` hex without prefix).
    pub id: String,
    /// Parent layer id, if any.
    pub parent: Option<String>,
    /// Digest of the uncompressed layer tar.
    pub diff_id: String,
    /// Size of the unpacked content in bytes.
    pub size: u64,
}

/// An image: a config and a chain of layers, with the names it is known by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:` digest of its config.
    pub id: String,
    /// `repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `repo@sha256:` names.
    pub repo_digests: Vec<String>,
    /// RFC 3339 creation time from the config.
    pub created: String,
    /// Size of all layers in bytes.
    pub size: u64,
    /// Layer ids, bottom first.
    pub layers: Vec<String>,
    /// The config's defaults for containers.
    pub config: ContainerConfig,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A named volume on a volume store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// `vsphere` or `local`.
    pub driver: String,
    /// The volume store it lives on.
    pub store: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
}

/// A container network: a bridge with its own subnet, or a port group mapped straight in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// 64-hex id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `bridge`, `external` (a port group), `null` or `host`.
    pub driver: String,
    /// CIDR of its subnet.
    pub subnet: Option<String>,
    /// Gateway address.
    pub gateway: Option<String>,
    /// The port group behind it.
    pub port_group: Option<MoRef>,
}

/// Something that happened, as `/events` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    pub kind: String,
    /// `create`, `start`, `die`, `pull`, …
    pub action: String,
    /// The object's id.
    pub actor_id: String,
    /// name, image, exitCode, …
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_nano: u128,
}
