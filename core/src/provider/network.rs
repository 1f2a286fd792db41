use std::fmt::Debug;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::MoRef;
use crate::Result;

/// The kind of a vSphere network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkKind {
    /// A standard switch port group (`Network`).
    PortGroup,
    /// A distributed port group (`DistributedVirtualPortgroup`).
    DistributedPortGroup,
}

/// A network that VM NICs can connect to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Its reference.
    pub reference: MoRef,
    /// Its name ("VM Network").
    pub name: String,
    /// Standard or distributed.
    pub kind: NetworkKind,
    /// VLAN id, if tagged.
    pub vlan: Option<u16>,
}

/// Port groups for the VCH's bridge network and for container networks.
#[async_trait]
pub trait Network: Send + Sync + Debug {
    /// Every network the backend can attach VMs to.
    async fn networks(&self) -> Result<Vec<NetworkInfo>>;
    /// A network by name, or `NotFound`.
    async fn find_network(&self, name: &str) -> Result<NetworkInfo>;
    /// Finds the port group `name` or creates it (`AddPortGroup`).
    async fn ensure_port_group(&self, name: &str, vlan: Option<u16>) -> Result<NetworkInfo>;
    /// Removes a port group that no VM uses.
    async fn remove_port_group(&self, network: &MoRef) -> Result<()>;
}
