//! The engine: what the endpoint calls. It holds the backend's providers and the VCH's
//! identity, and keeps no durable state of its own.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tracing::info;

use crate::images::ImageStore;
use crate::model::{ContainerConfig, HostConfig, keys};
use crate::provider::{Backend, PoolInfo, PowerState, VmInfo};
use crate::pull::Registry;
use crate::{DsPath, Error, Result};

/// Which VCH the engine serves and where its storage lives.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The VCH's name (`docker info`'s Name).
    pub vch_name: String,
    /// Inventory path of the VCH's resource pool or vApp.
    pub pool_path: String,
    /// Datastore for images (the first datastore when `None`).
    pub image_datastore: Option<String>,
    /// The registry client for pulls and logins.
    pub registry: Option<Arc<dyn Registry>>,
}

/// The VCH as resolved on the backend.
#[derive(Clone, Debug, Serialize)]
pub struct Vch {
    /// Stable id: the pool's managed object id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its pool.
    pub pool: PoolInfo,
    /// `[ds] VIC/<vch-id>` on the image datastore.
    pub store: DsPath,
}

/// What `docker info` reports about a VCH.
#[derive(Clone, Debug, Serialize)]
pub struct SystemInfo {
    /// The VCH.
    pub vch: Vch,
    /// What backend it runs on.
    pub product: String,
    /// Container VMs in the pool.
    pub containers: usize,
    /// Of which powered on.
    pub running: usize,
    /// Of which suspended.
    pub paused: usize,
    /// Images in the store.
    pub images: usize,
    /// CPUs the VCH offers to containers.
    pub cpus: u32,
    /// Memory the VCH offers, bytes.
    pub memory_bytes: u64,
    /// The image datastore's capacity and free bytes.
    pub datastore: Option<(String, u64, u64)>,
}

/// A request to create a container, as parsed from the Docker API.
#[derive(Clone, Debug, Default)]
pub struct CreateContainer {
    /// Requested name, or `None` for a generated one.
    pub name: Option<String>,
    /// The image as the user named it.
    pub image: String,
    /// What runs.
    pub config: ContainerConfig,
    /// How it is hosted.
    pub host_config: HostConfig,
}

/// Version facts of this build.
#[derive(Clone, Debug, Serialize)]
pub struct VersionInfo {
    /// vic's version.
    pub version: &'static str,
    /// Highest Docker API version served.
    pub api_version: &'static str,
    /// Lowest Docker API version served.
    pub min_api_version: &'static str,
}

/// Highest Docker Engine API version vic serves.
pub const API_VERSION: &str = "1.41";
/// Lowest Docker Engine API version vic serves.
pub const MIN_API_VERSION: &str = "1.24";

/// The backend-agnostic engine.
#[derive(Debug)]
pub struct Engine {
    pub(crate) backend: Backend,
    pub(crate) vch: Vch,
    pub(crate) images: ImageStore,
    pub(crate) registry: Option<Arc<dyn Registry>>,
    pub(crate) auth_lock: tokio::sync::Mutex<()>,
    /// Serializes container creation and renames, so names stay unique.
    pub(crate) names_lock: tokio::sync::Mutex<()>,
    pub(crate) events: crate::events::EventLog,
    pub(crate) lifecycle: crate::lifecycle::Lifecycle,
    started: SystemTime,
}

impl Engine {
    /// Resolves the VCH's pool and storage on `backend` and prepares the image store
    /// folders (`VIC/<vch-id>/images`, `VIC/<vch-id>/kvStores`).
    pub async fn open(backend: Backend, config: EngineConfig) -> Result<Arc<Self>> {
        let pool = backend.compute.find_pool(&config.pool_path).await?;
        let datastores = backend.storage.datastores().await?;
        let ds = match &config.image_datastore {
            Some(name) => datastores
                .iter()
                .find(|d| &d.name == name)
                .ok_or_else(|| Error::not_found("datastore", name.clone()))?,
            None => datastores
                .first()
                .ok_or_else(|| Error::Internal("the backend has no datastore".into()))?,
        };
        let store = DsPath::new(ds.name.clone(), format!("VIC/{}", pool.reference.value));
        let images = ImageStore::open(backend.storage.clone(), store.clone()).await?;
        let vch = Vch {
            id: pool.reference.value.clone(),
            name: config.vch_name,
            pool,
            store,
        };
        info!(vch = %vch.name, pool = %vch.pool.path, store = %vch.store, "engine ready");
        Ok(Arc::new(Engine {
            backend,
            vch,
            images,
            registry: config.registry,
            auth_lock: tokio::sync::Mutex::new(()),
            names_lock: tokio::sync::Mutex::new(()),
            events: Default::default(),
            lifecycle: Default::default(),
            started: SystemTime::now(),
        }))
    }

    /// The providers.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The VCH served.
    pub fn vch(&self) -> &Vch {
        &self.vch
    }

    /// When this engine started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Version facts.
    pub fn version(&self) -> VersionInfo {
        VersionInfo {
            version: env!("CARGO_PKG_VERSION"),
            api_version: API_VERSION,
            min_api_version: MIN_API_VERSION,
        }
    }

    /// The VCH's resources and object counts, read from the backend now.
    pub async fn info(&self) -> Result<SystemInfo> {
        let pool = self
            .backend
            .compute
            .pool_info(&self.vch.pool.reference)
            .await?;
        let vms = self
            .backend
            .compute
            .list_vms(Some(&self.vch.pool.reference))
            .await?;
        let containers: Vec<_> = vms
            .iter()
            .filter(|vm| vm.extra_config.contains_key(keys::CONTAINER_ID))
            .collect();
        let running = containers
            .iter()
            .filter(|vm| vm.power_state == PowerState::PoweredOn)
            .count();
        let paused = containers
            .iter()
            .filter(|vm| vm.power_state == PowerState::Suspended)
            .count();
        let images = self.images.images().await?.len();
        let datastore = self
            .backend
            .storage
            .datastores()
            .await?
            .into_iter()
            .find(|d| d.name == self.vch.store.datastore)
            .map(|d| (d.name, d.capacity, d.free_space));
        let mut vch = self.vch.clone();
        vch.pool = pool.clone();
        Ok(SystemInfo {
            vch,
            product: self.backend.product.clone(),
            containers: containers.len(),
            running,
            paused,
            images,
            cpus: pool.usable_cpus(),
            memory_bytes: pool.usable_memory_mb() * 1024 * 1024,
            datastore,
        })
    }

    /// The container VMs of this VCH: VMs in its pool that carry a container id.
    pub async fn container_vms(&self) -> Result<Vec<VmInfo>> {
        Ok(self
            .backend
            .compute
            .list_vms(Some(&self.vch.pool.reference))
            .await?
            .into_iter()
            .filter(|vm| vm.extra_config.contains_key(keys::CONTAINER_ID))
            .collect())
    }
}
