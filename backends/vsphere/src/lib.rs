//! vic's vSphere backend: a vim25 SOAP client ([`client`]) and the engine's three
//! providers — [`Compute`](vic_core::provider::Compute),
//! [`Storage`](vic_core::provider::Storage) and [`Network`](vic_core::provider::Network)
//! — implemented with it against a vCenter or an ESXi host (and tested against govmomi's
//! vcsim).
//!
//! [`VsphereBackend::connect`] logs in, finds the datacenter and what the providers need
//! of it (VM folder, hosts and their network systems, datastores and their browsers,
//! networks) and returns a [`vic_core::provider::Backend`].

#![warn(missing_docs)]

pub mod client;
mod compute;
pub mod devices;
pub mod fault;
mod network;
mod storage;
pub mod tls;
mod updates;
pub mod vcsim;
pub use vic_core::vmdk;
pub mod xml;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod samples;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vic_core::MoRef;
use vic_core::provider::{Backend, NetworkInfo};

pub use client::{Client, ClientOptions};
pub use fault::{Error, Fault};
pub use tls::Tls;

use client::{PropertySpec, filter_spec, traversal};
use xml::Element;

/// How to connect: the client's options and which datacenter to use.
#[derive(Clone, Debug, Default)]
pub struct VsphereOptions {
    /// Credentials, TLS and timeouts.
    pub client: ClientOptions,
    /// The datacenter's name or inventory path; the first one when `None`.
    pub datacenter: Option<String>,
}

/// A datastore as the providers need it.
#[derive(Clone, Debug)]
pub(crate) struct DatastoreRef {
    pub(crate) browser: Option<MoRef>,
}

/// A host and its network system.
#[derive(Clone, Debug)]
pub(crate) struct HostRef {
    pub(crate) network_system: Option<MoRef>,
}

/// What the providers know of the inventory, read once at connect.
#[derive(Debug)]
pub(crate) struct Inventory {
    pub(crate) datacenter: MoRef,
    /// The datacenter's name, for datastore HTTP (`dcPath`) and paths.
    pub(crate) dc_name: String,
    pub(crate) vm_folder: MoRef,
    pub(crate) host_folder: MoRef,
    pub(crate) datastores: HashMap<String, DatastoreRef>,
    pub(crate) hosts: Vec<HostRef>,
}

/// The shared state of the three providers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) inv: Inventory,
    /// Networks by reference (names for NIC backings), refreshed on a miss.
    pub(crate) networks: Mutex<HashMap<MoRef, NetworkInfo>>,
    /// Distributed switch UUIDs of distributed port groups.
    pub(crate) dvs_uuids: Mutex<HashMap<MoRef, String>>,
    /// The change log behind `wait_for_updates`, fed by a background task.
    pub(crate) updates: updates::Updates,
}

/// The vSphere backend: one session, three providers.
#[derive(Clone, Debug)]
pub struct VsphereBackend {
    pub(crate) shared: Arc<Shared>,
}

impl VsphereBackend {
    /// Connects and logs in to `url` (`https://user:pass@host/sdk`) and reads the
    /// inventory the providers use.
    pub async fn connect(url: &str, options: &VsphereOptions) -> Result<Self, Error> {
        let client = Client::connect(url, &options.client).await?;
        let inv = discover(&client, options.datacenter.as_deref()).await?;
        let backend = VsphereBackend {
            shared: Arc::new(Shared {
                client,
                inv,
                networks: Mutex::new(HashMap::new()),
                dvs_uuids: Mutex::new(HashMap::new()),
                updates: updates::Updates::default(),
            }),
        };
        Ok(backend)
    }

    /// Connects and returns the providers as the engine holds them.
    pub async fn connect_backend(url: &str, options: &VsphereOptions) -> Result<Backend, Error> {
        Ok(Self::connect(url, options).await?.backend())
    }

    /// The three providers of this connection.
    pub fn backend(&self) -> Backend {
        let c = self.client().content();
        let product = if c.full_name.is_empty() {
            "VMware vSphere".to_string()
        } else {
            c.full_name.clone()
        };
        Backend {
            compute: Arc::new(self.clone()),
            storage: Arc::new(self.clone()),
            network: Arc::new(self.clone()),
            product,
        }
    }

    /// The SOAP client (for its round-trip counter, or calls of one's own).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The datacenter in use.
    pub fn datacenter(&self) -> &MoRef {
        &self.shared.inv.datacenter
    }

    /// The datacenter's name.
    pub fn datacenter_name(&self) -> &str {
        &self.shared.inv.dc_name
    }

    /// The folder that new VMs are created in.
    pub fn vm_folder(&self) -> &MoRef {
        &self.shared.inv.vm_folder
    }

    /// The root resource pool of the datacenter's first cluster (by name), else of its
    /// first standalone host: where vic-machine puts a VCH's vApp by default.
    pub async fn default_root_pool(&self) -> vic_core::Result<vic_core::provider::PoolInfo> {
        let objs = self
            .client()
            .retrieve(filter_spec(
                "specSet",
                &[PropertySpec {
                    kind: "ComputeResource".into(),
                    paths: vec!["name".into(), "resourcePool".into()],
                }],
                &self.shared.inv.host_folder,
                true,
                vec![traversal("hf", "Folder", "childEntity", &["hf"])],
            ))
            .await?;
        let mut found: Vec<(bool, String, MoRef)> = objs
            .into_iter()
            .filter_map(|o| {
                let r = o.obj.clone()?;
                let cluster = r.kind == "ClusterComputeResource";
                if !cluster && r.kind != "ComputeResource" {
                    return None;
                }
                let pool = o.get("resourcePool").and_then(Element::as_moref)?;
                Some((!cluster, o.text("name")?.to_string(), pool))
            })
            .collect();
        found.sort();
        let (_, _, pool) = found
            .into_iter()
            .next()
            .ok_or_else(|| vic_core::Error::not_found("pool", "a cluster's root pool"))?;
        vic_core::provider::Compute::pool_info(self, &pool).await
    }
}

fn protocol(what: impl Into<String>) -> Error {
    Error::Protocol(what.into())
}

/// Finds the datacenter and reads its folders, datastores and hosts.
async fn discover(client: &Client, datacenter: Option<&str>) -> Result<Inventory, Error> {
    let root = client.content().root_folder.clone();
    let dc = match datacenter {
        Some(name) => client
            .find_by_path(name)
            .await?
            .filter(|r| r.kind == "Datacenter")
            .ok_or_else(|| protocol(format!("no datacenter {name:?}")))?,
        None => {
            // Datacenters may sit in folders: walk Folder.childEntity.
            let spec = filter_spec(
                "specSet",
                &[PropertySpec {
                    kind: "Datacenter".into(),
                    paths: vec!["name".into()],
                }],
                &root,
                true,
                vec![traversal("folders", "Folder", "childEntity", &["folders"])],
            );
            let mut dcs: Vec<MoRef> = client
                .retrieve(spec)
                .await?
                .into_iter()
                .filter_map(|o| o.obj)
                .filter(|o| o.kind == "Datacenter")
                .collect();
            dcs.sort();
            dcs.into_iter()
                .next()
                .ok_or_else(|| protocol("the inventory has no datacenter"))?
        }
    };
    let props = client
        .properties(&dc, &["name", "vmFolder", "hostFolder", "datastore"])
        .await?;
    let dc_name = props.text("name").unwrap_or_default().to_string();
    let vm_folder = props
        .get("vmFolder")
        .and_then(Element::as_moref)
        .ok_or_else(|| protocol("datacenter without vmFolder"))?;
    let host_folder = props
        .get("hostFolder")
        .and_then(Element::as_moref)
        .ok_or_else(|| protocol("datacenter without hostFolder"))?;

    // Datastores with their browsers, in one call.
    let spec = filter_spec(
        "specSet",
        &[PropertySpec {
            kind: "Datastore".into(),
            paths: vec!["name".into(), "browser".into()],
        }],
        &dc,
        true,
        vec![traversal("ds", "Datacenter", "datastore", &[])],
    );
    let mut datastores = HashMap::new();
    for o in client.retrieve(spec).await? {
        let Some(name) = o.text("name") else {
            continue;
        };
        datastores.insert(
            name.to_string(),
            DatastoreRef {
                browser: o.get("browser").and_then(Element::as_moref),
            },
        );
    }

    // Hosts (under clusters, compute resources and folders) with their network systems.
    let spec = filter_spec(
        "specSet",
        &[PropertySpec {
            kind: "HostSystem".into(),
            paths: vec!["name".into(), "configManager.networkSystem".into()],
        }],
        &host_folder,
        true,
        vec![
            traversal("hf", "Folder", "childEntity", &["hf", "crHost"]),
            traversal("crHost", "ComputeResource", "host", &[]),
        ],
    );
    let mut hosts: Vec<(String, HostRef)> = client
        .retrieve(spec)
        .await?
        .into_iter()
        .filter(|o| o.obj.as_ref().is_some_and(|r| r.kind == "HostSystem"))
        .map(|o| {
            (
                o.text("name").unwrap_or_default().to_string(),
                HostRef {
                    network_system: o
                        .get("configManager.networkSystem")
                        .and_then(Element::as_moref),
                },
            )
        })
        .collect();
    hosts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Inventory {
        datacenter: dc,
        dc_name,
        vm_folder,
        host_folder,
        datastores,
        hosts: hosts.into_iter().map(|(_, h)| h).collect(),
    })
}

/// Locks a mutex, taking the data of a poisoned one (the data stays consistent: every
/// critical section is a single insert, remove or read).
pub(crate) fn client_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
