//! The [`Network`] provider on vSphere: the datacenter's networks (standard and
//! distributed port groups), and standard port groups added to or removed from the
//! virtual switch of every host (`AddPortGroup` / `RemovePortGroup` on each host's
//! network system).

use std::collections::HashMap;

use async_trait::async_trait;
use tracing::{Instrument, info_span};
use vic_core::provider::{Network, NetworkInfo, NetworkKind};
use vic_core::{Error, MoRef, Result};

use crate::client::traversal;
use crate::xml::Element;
use crate::{Shared, VsphereBackend, client_lock};

impl Shared {
    /// Reads the datacenter's networks (with VLAN ids of standard port groups from the
    /// first host) and refreshes the cache that NIC backings use.
    pub(crate) async fn refresh_networks(&self) -> Result<Vec<NetworkInfo>> {
        let objs = self
            .client
            .names_along(
                &self.inv.datacenter,
                traversal("dcnet", "Datacenter", "network", &[]),
            )
            .await?;
        let vlans = self.port_group_vlans().await.unwrap_or_default();
        let mut out: Vec<NetworkInfo> = objs
            .into_iter()
            .filter_map(|(name, r)| {
                let kind = match r.kind.as_str() {
                    "Network" => NetworkKind::PortGroup,
                    "DistributedVirtualPortgroup" => NetworkKind::DistributedPortGroup,
                    _ => return None,
                };
                Some(NetworkInfo {
                    vlan: vlans.get(&name).copied().filter(|v| *v > 0),
                    reference: r,
                    name,
                    kind,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.reference.cmp(&b.reference)));
        let mut cache = client_lock(&self.networks);
        cache.clear();
        cache.extend(out.iter().map(|n| (n.reference.clone(), n.clone())));
        Ok(out)
    }

    /// VLAN ids of the standard port groups, from the first host's network system.
    async fn port_group_vlans(&self) -> Result<HashMap<String, u16>> {
        let Some(ns) = self.inv.hosts.iter().find_map(|h| h.network_system.clone()) else {
            return Ok(HashMap::new());
        };
        let o = self
            .client
            .properties(&ns, &["networkInfo.portgroup"])
            .await?;
        Ok(o.get("networkInfo.portgroup")
            .map(|v| {
                v.children
                    .iter()
                    .filter_map(|pg| {
                        let spec = pg.child("spec")?;
                        Some((
                            spec.text_of("name")?.to_string(),
                            spec.text_of("vlanId")?.trim().parse().ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The name of the first virtual switch of a host's network system.
    async fn vswitch(&self, ns: &MoRef) -> Result<String> {
        let o = self.client.properties(ns, &["networkInfo.vswitch"]).await?;
        o.get("networkInfo.vswitch")
            .and_then(|v| v.children.first())
            .and_then(|s| s.text_of("name"))
            .map(str::to_string)
            .ok_or_else(|| Error::NotSupported("the host has no standard virtual switch".into()))
    }
}

#[async_trait]
impl Network for VsphereBackend {
    async fn networks(&self) -> Result<Vec<NetworkInfo>> {
        self.shared.refresh_networks().await
    }

    async fn find_network(&self, name: &str) -> Result<NetworkInfo> {
        self.shared
            .refresh_networks()
            .await?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::not_found("network", name.to_string()))
    }

    async fn ensure_port_group(&self, name: &str, vlan: Option<u16>) -> Result<NetworkInfo> {
        let s = &self.shared;
        if name.trim().is_empty() || name.chars().count() > 80 {
            return Err(Error::InvalidArgument(format!(
                "invalid port group name {name:?}"
            )));
        }
        if vlan.is_some_and(|v| v > 4094) {
            return Err(Error::InvalidArgument(format!(
                "VLAN id {} is out of range",
                vlan.unwrap_or_default()
            )));
        }
        if let Ok(n) = self.find_network(name).await {
            return Ok(n);
        }
        let systems: Vec<MoRef> = s
            .inv
            .hosts
            .iter()
            .filter_map(|h| h.network_system.clone())
            .collect();
        if systems.is_empty() {
            return Err(Error::NotSupported(
                "no host network system to add a port group to".into(),
            ));
        }
        let mut added = 0;
        for ns in &systems {
            let vswitch = s.vswitch(ns).await?;
            let pg = Element::new("portgrp")
                .with_text("name", name)
                .with_text("vlanId", vlan.unwrap_or(0).to_string())
                .with_text("vswitchName", vswitch)
                .with(Element::new("policy"));
            match s
                .client
                .call(
                    Element::new("AddPortGroup")
                        .with_moref("_this", ns)
                        .with(pg),
                )
                .instrument(info_span!("add_port_group", name))
                .await
            {
                Ok(_) => added += 1,
                // On vCenter the network object is shared by the hosts: the first host
                // created it (vcsim answers the others with DuplicateName).
                Err(e) if e.is_fault("DuplicateName") || e.is_fault("AlreadyExists") => {}
                Err(e) => return Err(e.into()),
            }
        }
        let n = self.find_network(name).await?;
        if added == 0 {
            tracing::debug!("port group {name} appeared meanwhile");
        }
        Ok(n)
    }

    async fn remove_port_group(&self, network: &MoRef) -> Result<()> {
        let s = &self.shared;
        if network.kind != "Network" {
            return Err(Error::NotSupported(format!(
                "{network} is not a standard port group"
            )));
        }
        let o = s.client.properties(network, &["name", "vm"]).await?;
        let name = o.text("name").unwrap_or_default().to_string();
        let vms = o.get("vm").map(|v| v.children.len()).unwrap_or(0);
        if vms > 0 {
            return Err(Error::InvalidState(format!(
                "port group {name} is in use by {vms} VM(s)"
            )));
        }
        let mut removed = 0;
        for ns in s.inv.hosts.iter().filter_map(|h| h.network_system.clone()) {
            match s
                .client
                .call(
                    Element::new("RemovePortGroup")
                        .with_moref("_this", &ns)
                        .with_text("pgName", &name),
                )
                .await
            {
                Ok(_) => removed += 1,
                Err(e) if e.is_fault("NotFound") => {}
                Err(e) => return Err(e.into()),
            }
        }
        if removed == 0 {
            return Err(Error::not_found("network", name));
        }
        client_lock(&s.networks).remove(network);
        Ok(())
    }
}
