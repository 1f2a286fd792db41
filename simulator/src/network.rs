//! The [`Network`] provider: standard port groups in the datacenter's network folder.

use async_trait::async_trait;
use vic_core::provider::{Device, Network, NetworkInfo, NetworkKind};
use vic_core::{Error, MoRef, Result};

use crate::inventory::{Inventory, NetworkRecord, ObjectData, kinds};
use crate::sim::Simulator;

/// The highest VLAN id a port group may carry.
const MAX_VLAN: u16 = 4094;

fn by_name(inv: &Inventory, name: &str) -> Option<NetworkInfo> {
    inv.networks().into_iter().find(|n| n.name == name)
}

#[async_trait]
impl Network for Simulator {
    async fn networks(&self) -> Result<Vec<NetworkInfo>> {
        Ok(self.snapshot().networks())
    }

    async fn find_network(&self, name: &str) -> Result<NetworkInfo> {
        by_name(&self.snapshot(), name).ok_or_else(|| Error::not_found("network", name))
    }

    async fn ensure_port_group(&self, name: &str, vlan: Option<u16>) -> Result<NetworkInfo> {
        if name.trim().is_empty() || name.len() > 80 || name.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "invalid port group name {name:?}"
            )));
        }
        if vlan.is_some_and(|v| v > MAX_VLAN) {
            return Err(Error::InvalidArgument(format!(
                "VLAN id {} is out of range (0-{MAX_VLAN})",
                vlan.unwrap_or_default()
            )));
        }
        if let Some(n) = by_name(&self.snapshot(), name) {
            return Ok(n);
        }
        let host = {
            let inv = self.snapshot();
            inv.objects()
                .find(|(_, o)| matches!(o.data, ObjectData::HostSystem(_)))
                .and_then(|(id, _)| inv.reference(id))
        };
        self.update("AddPortGroup", host.as_ref(), |txn| {
            if let Some(n) = by_name(txn.inv(), name) {
                return Ok(n);
            }
            let inv = txn.inv();
            let folder = inv
                .objects()
                .find(|(_, o)| matches!(o.data, ObjectData::Datacenter))
                .and_then(|(dc, _)| inv.child_named(dc, "network"))
                .map(str::to_string)
                .ok_or_else(|| Error::Internal("the inventory has no network folder".into()))?;
            let id = txn.inv_mut().add(
                "network-",
                name,
                Some(&folder),
                ObjectData::Network(NetworkRecord {
                    kind: NetworkKind::PortGroup,
                    vlan,
                }),
            );
            Ok(NetworkInfo {
                reference: MoRef::new(kinds::NETWORK, id),
                name: name.to_string(),
                kind: NetworkKind::PortGroup,
                vlan,
            })
        })
        .await
    }

    async fn remove_port_group(&self, network: &MoRef) -> Result<()> {
        self.update("RemovePortGroup", Some(network), |txn| {
            let inv = txn.inv();
            let (o, _) = inv.network(network)?;
            let user = inv.vms().into_iter().find(|(_, _, r)| {
                r.devices.iter().any(
                    |d| matches!(d, Device::Nic { network: n, .. } if n.value == network.value),
                )
            });
            if let Some((_, vm, _)) = user {
                return Err(Error::InvalidState(format!(
                    "port group {} is in use by VM {vm}",
                    o.name
                )));
            }
            txn.inv_mut().objects.remove(&network.value);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{open_temp, small_vm};
    use vic_core::provider::{Compute, DeviceSpec, FileOperation};

    #[tokio::test]
    async fn port_groups() {
        let (_dir, sim) = open_temp();
        let net = sim.backend().network;
        let names: Vec<String> = net
            .networks()
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["VM Network", "vic-bridge"]);
        assert!(net.find_network("nope").await.unwrap_err().is_not_found());
        let pg = net.ensure_port_group("containers", Some(12)).await.unwrap();
        assert_eq!(pg.vlan, Some(12));
        assert_eq!(net.ensure_port_group("containers", None).await.unwrap(), pg);
        assert_eq!(net.find_network("containers").await.unwrap(), pg);
        assert_eq!(
            sim.inventory_path(&pg.reference).unwrap(),
            "/DC0/network/containers"
        );
        assert!(net.ensure_port_group("bad", Some(5000)).await.is_err());

        let mut spec = small_vm(&sim, "web");
        spec.devices.push(DeviceSpec {
            device: Device::Nic {
                key: 4000,
                network: pg.reference.clone(),
                mac: None,
            },
            file_operation: FileOperation::Attach,
        });
        let vm = sim.create_vm(&spec).await.unwrap();
        assert!(matches!(
            net.remove_port_group(&pg.reference).await,
            Err(Error::InvalidState(_))
        ));
        sim.destroy(&vm.reference).await.unwrap();
        net.remove_port_group(&pg.reference).await.unwrap();
        assert!(net.find_network("containers").await.is_err());
        assert!(
            net.remove_port_group(&pg.reference)
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
}
