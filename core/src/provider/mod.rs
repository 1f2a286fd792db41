//! The provider traits: what a backend must do for the engine, shaped after vSphere.
//!
//! A backend is three providers: [`Compute`] (container VMs in the VCH's resource pool
//! or vApp), [`Storage`] (folders, files and parent-chained disks on datastores) and
//! [`Network`] (port groups). The vSphere backend implements them with vim25 calls; the
//! simulator with its own inventory. Operations that are tasks on vSphere are `async`
//! calls that return when the task has ended, with the task's fault as the error.

mod compute;
mod network;
mod storage;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use compute::*;
pub use network::*;
pub use storage::*;

/// A managed object reference: the object's type and its id within one inventory,
/// e.g. `VirtualMachine:vm-42`, as vSphere's `ManagedObjectReference`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MoRef {
    /// The managed object type: `VirtualMachine`, `ResourcePool`, `VirtualApp`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The id, unique in the inventory: `vm-42`, `resgroup-8`, …
    pub value: String,
}

impl MoRef {
    /// A reference to the object `value` of type `kind`.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The three providers of one backend, as the engine holds them.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Container VMs and resource pools.
    pub compute: Arc<dyn Compute>,
    /// Datastores, files and disks.
    pub storage: Arc<dyn Storage>,
    /// Port groups.
    pub network: Arc<dyn Network>,
    /// What this backend is, for `docker info` ("vSphere simulator", "VMware vCenter Server 8.0").
    pub product: String,
}
