//! Virtual devices and VM configuration between the engine's model and vim25's
//! `VirtualMachineConfigSpec` / `config.hardware.device`, plus the decoding of a VM's
//! properties into a [`VmInfo`].
//!
//! Elements are written in the order of the vim25 schema's sequences (vSphere checks
//! it; vcsim does not).

use std::collections::{BTreeMap, HashMap};

use vic_core::provider::{
    Device, DeviceSpec, DiskMode, FileOperation, PowerState, ScsiKind, VmInfo,
};
use vic_core::{DsPath, Error, MoRef, Result};

use crate::client::ObjectContent;
use crate::xml::Element;

/// The VM properties the providers read, in one property collector call.
pub const VM_PATHS: &[&str] = &[
    "name",
    "resourcePool",
    "config.files.vmPathName",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.guestId",
    "config.hardware.device",
    "config.extraConfig",
    "config.annotation",
    "runtime.powerState",
    "runtime.bootTime",
];

/// The key of the first IDE controller, which vSphere gives every new VM; the CD-ROM
/// hangs on it.
pub const IDE0_KEY: i32 = 200;

/// How to name a network in a NIC backing: standard port groups by name, distributed
/// ones by switch UUID and port group key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicBacking {
    /// A standard switch port group (`Network`).
    Network {
        /// Its name.
        name: String,
    },
    /// A distributed port group.
    Distributed {
        /// The switch's UUID.
        switch_uuid: String,
        /// The port group's key (its moref value).
        portgroup_key: String,
    },
}

/// Temporary (negative) keys for new devices, so that the server assigns real ones;
/// controller references among the new devices follow.
pub fn temp_keys(adds: &[DeviceSpec]) -> HashMap<i32, i32> {
    adds.iter()
        .enumerate()
        .map(|(i, d)| (d.device.key(), -(i as i32) - 1))
        .collect()
}

fn connectable() -> Element {
    Element::new("connectable")
        .with_text("startConnected", "true")
        .with_text("allowGuestControl", "true")
        .with_text("connected", "true")
}

fn disk_mode(m: DiskMode) -> &'static str {
    match m {
        DiskMode::Persistent => "persistent",
        DiskMode::IndependentNonpersistent => "independent_nonpersistent",
    }
}

/// One `deviceChange` that adds `spec.device`. `nic` resolves the NIC's network.
pub fn add_device(
    spec: &DeviceSpec,
    keys: &HashMap<i32, i32>,
    nic: &dyn Fn(&MoRef) -> Result<NicBacking>,
) -> Result<Element> {
    let key = |k: i32| keys.get(&k).copied().unwrap_or(k);
    let d = &spec.device;
    let device = match d {
        Device::ScsiController { key: k, kind, bus } => {
            let t = match kind {
                ScsiKind::ParaVirtual => "ParaVirtualSCSIController",
                ScsiKind::LsiLogic => "VirtualLsiLogicController",
            };
            Element::typed("device", t)
                .with_text("key", key(*k).to_string())
                .with_text("busNumber", bus.to_string())
                .with_text("sharedBus", "noSharing")
        }
        Device::Disk {
            key: k,
            controller_key,
            unit,
            file,
            parent,
            capacity_kb,
            mode,
        } => {
            let mut backing = Element::typed("backing", "VirtualDiskFlatVer2BackingInfo")
                .with_text("fileName", file.to_string())
                .with_text("diskMode", disk_mode(*mode))
                .with_text("thinProvisioned", "true");
            if let Some(p) = parent {
                backing = backing.with(
                    Element::typed("parent", "VirtualDiskFlatVer2BackingInfo")
                        .with_text("fileName", p.to_string())
                        .with_text("diskMode", disk_mode(*mode)),
                );
            }
            let mut e = Element::typed("device", "VirtualDisk")
                .with_text("key", key(*k).to_string())
                .with(backing)
                .with_text("controllerKey", key(*controller_key).to_string())
                .with_text("unitNumber", unit.to_string());
            if *capacity_kb > 0 {
                e = e.with_text("capacityInKB", capacity_kb.to_string());
            }
            e
        }
        Device::Cdrom { key: k, iso } => {
            let backing = match iso {
                Some(iso) => Element::typed("backing", "VirtualCdromIsoBackingInfo")
                    .with_text("fileName", iso.to_string()),
                None => Element::typed("backing", "VirtualCdromRemotePassthroughBackingInfo")
                    .with_text("deviceName", "")
                    .with_text("exclusive", "false"),
            };
            Element::typed("device", "VirtualCdrom")
                .with_text("key", key(*k).to_string())
                .with(backing)
                .with(connectable())
                .with_text("controllerKey", IDE0_KEY.to_string())
                .with_text("unitNumber", "0")
        }
        Device::Nic {
            key: k,
            network,
            mac,
        } => {
            let backing = match nic(network)? {
                NicBacking::Network { name } => {
                    Element::typed("backing", "VirtualEthernetCardNetworkBackingInfo")
                        .with_text("deviceName", name)
                        .with_moref("network", network)
                }
                NicBacking::Distributed {
                    switch_uuid,
                    portgroup_key,
                } => Element::typed(
                    "backing",
                    "VirtualEthernetCardDistributedVirtualPortBackingInfo",
                )
                .with(
                    Element::new("port")
                        .with_text("switchUuid", switch_uuid)
                        .with_text("portgroupKey", portgroup_key),
                ),
            };
            let mut e = Element::typed("device", "VirtualVmxnet3")
                .with_text("key", key(*k).to_string())
                .with(backing)
                .with(connectable());
            match mac {
                Some(m) => {
                    e = e
                        .with_text("addressType", "manual")
                        .with_text("macAddress", m.to_ascii_lowercase())
                }
                None => e = e.with_text("addressType", "generated"),
            }
            e
        }
        Device::Serial { key: k, file } => Element::typed("device", "VirtualSerialPort")
            .with_text("key", key(*k).to_string())
            .with(
                Element::typed("backing", "VirtualSerialPortFileBackingInfo")
                    .with_text("fileName", file.to_string()),
            )
            .with(connectable())
            .with_text("yieldOnPoll", "true"),
    };
    let mut change = Element::new("deviceChange").with_text("operation", "add");
    if spec.file_operation == FileOperation::Create && matches!(d, Device::Disk { .. }) {
        change = change.with_text("fileOperation", "create");
    }
    Ok(change.with(device))
}

/// One `deviceChange` that removes the device `raw` (as the server reported it).
pub fn remove_device(raw: &Element) -> Element {
    let mut device = raw.clone();
    device.name = "device".into();
    Element::new("deviceChange")
        .with_text("operation", "remove")
        .with(device)
}

/// `extraConfig` entries: a value sets the key, `None` (an empty value) removes it.
pub fn extra_config<'a>(
    entries: impl IntoIterator<Item = (&'a String, Option<&'a String>)>,
) -> Vec<Element> {
    entries
        .into_iter()
        .map(|(k, v)| {
            Element::typed("extraConfig", "OptionValue")
                .with_text("key", k.clone())
                .with(Element {
                    xsi_type: Some("xsd:string".into()),
                    ..Element::text("value", v.cloned().unwrap_or_default())
                })
        })
        .collect()
}

fn int<T: std::str::FromStr>(e: &Element, name: &str) -> Option<T> {
    e.text_of(name).and_then(|t| t.trim().parse().ok())
}

fn ds_path(text: &str) -> Option<DsPath> {
    text.parse().ok()
}

/// A device from `config.hardware.device`, or `None` for kinds the engine does not
/// model (IDE and PCI controllers, video card, keyboard, …).
pub fn parse_device(e: &Element) -> Option<Device> {
    let key = int(e, "key")?;
    let backing = e.child("backing");
    let file = || {
        backing
            .and_then(|b| b.text_of("fileName"))
            .and_then(ds_path)
    };
    match e.type_name() {
        "ParaVirtualSCSIController" | "VirtualLsiLogicController" => Some(Device::ScsiController {
            key,
            kind: if e.type_name() == "ParaVirtualSCSIController" {
                ScsiKind::ParaVirtual
            } else {
                ScsiKind::LsiLogic
            },
            bus: int(e, "busNumber").unwrap_or(0),
        }),
        "VirtualDisk" => {
            let capacity_kb = int::<u64>(e, "capacityInKB")
                .filter(|c| *c > 0)
                .or_else(|| int::<u64>(e, "capacityInBytes").map(|b| b / 1024))
                .unwrap_or(0);
            Some(Device::Disk {
                key,
                controller_key: int(e, "controllerKey").unwrap_or(0),
                unit: int(e, "unitNumber").unwrap_or(0),
                file: file()?,
                parent: backing
                    .and_then(|b| b.child("parent"))
                    .and_then(|p| p.text_of("fileName"))
                    .and_then(ds_path),
                capacity_kb,
                mode: match backing.and_then(|b| b.text_of("diskMode")) {
                    Some("independent_nonpersistent") => DiskMode::IndependentNonpersistent,
                    _ => DiskMode::Persistent,
                },
            })
        }
        "VirtualCdrom" => Some(Device::Cdrom {
            key,
            iso: match backing.map(Element::type_name) {
                Some("VirtualCdromIsoBackingInfo") => file(),
                _ => None,
            },
        }),
        "VirtualSerialPort" => match backing.map(Element::type_name) {
            Some("VirtualSerialPortFileBackingInfo") => Some(Device::Serial { key, file: file()? }),
            _ => None,
        },
        t if is_nic(t) => {
            let b = backing?;
            let network = match b.type_name() {
                "VirtualEthernetCardDistributedVirtualPortBackingInfo" => MoRef::new(
                    "DistributedVirtualPortgroup",
                    b.at(&["port", "portgroupKey"])?.text.clone(),
                ),
                _ => b.moref_of("network")?,
            };
            Some(Device::Nic {
                key,
                network,
                mac: e
                    .text_of("macAddress")
                    .filter(|m| !m.is_empty())
                    .map(str::to_ascii_lowercase),
            })
        }
        _ => None,
    }
}

fn is_nic(t: &str) -> bool {
    matches!(
        t,
        "VirtualVmxnet3"
            | "VirtualVmxnet3Vrdma"
            | "VirtualVmxnet2"
            | "VirtualVmxnet"
            | "VirtualE1000"
            | "VirtualE1000e"
            | "VirtualPCNet32"
            | "VirtualSriovEthernetCard"
    )
}

/// The extraConfig of a VM: the last value of each key wins, and an empty value means
/// the key is gone. (vSphere removes a key set to ""; vcsim appends every change, so
/// its list holds earlier values and the "" of removed keys.)
pub fn parse_extra_config(val: Option<&Element>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in val.into_iter().flat_map(|v| v.children.iter()) {
        let Some(k) = o.text_of("key") else { continue };
        let v = o.text_of("value").unwrap_or_default();
        if v.is_empty() {
            out.remove(k);
        } else {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Seconds since the epoch of an `xsd:dateTime` (`2026-11-28T15:19:32.5Z`, or with an
/// offset).
pub fn parse_datetime(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = match time.find(['Z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "Z"),
    };
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let mi: i64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next()?.parse().ok()?;
    let off = match offset {
        "Z" | "" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec as i64 - off;
    u64::try_from(secs).ok()
}

/// A [`VmInfo`] from the properties of [`VM_PATHS`].
pub fn vm_info(o: &ObjectContent) -> Result<VmInfo> {
    let reference = o
        .obj
        .clone()
        .ok_or_else(|| Error::Internal("VM properties without an object".into()))?;
    let vmx = o.text("config.files.vmPathName").unwrap_or_default();
    let files = ds_path(vmx)
        .map(|p| p.parent())
        .ok_or_else(|| Error::Internal(format!("VM {reference} has no files path ({vmx:?})")))?;
    let power_state = match o.text("runtime.powerState") {
        Some("poweredOn") => PowerState::PoweredOn,
        Some("suspended") => PowerState::Suspended,
        _ => PowerState::PoweredOff,
    };
    let devices = o
        .get("config.hardware.device")
        .map(|v| v.children.iter().filter_map(parse_device).collect())
        .unwrap_or_default();
    Ok(VmInfo {
        name: o.text("name").unwrap_or_default().to_string(),
        pool: o
            .get("resourcePool")
            .and_then(Element::as_moref)
            .unwrap_or_else(|| MoRef::new("ResourcePool", "")),
        files,
        power_state,
        num_cpus: o
            .text("config.hardware.numCPU")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        memory_mb: o
            .text("config.hardware.memoryMB")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        guest_id: o.text("config.guestId").unwrap_or_default().to_string(),
        devices,
        extra_config: parse_extra_config(o.get("config.extraConfig")),
        annotation: o.text("config.annotation").unwrap_or_default().to_string(),
        // vcsim keeps the boot time after power off; the engine wants it while on.
        boot_time: o
            .text("runtime.bootTime")
            .and_then(parse_datetime)
            .filter(|_| power_state == PowerState::PoweredOn),
        reference,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn devices_round_trip_through_their_xml() {
        let ds = |p: &str| DsPath::new("LocalDS_0", p);
        let adds = crate::vcsim::container_devices(
            "LocalDS_0",
            "c",
            &ds("VIC/x/images/l/l.vmdk"),
            2048,
            &MoRef::new("Network", "network-7"),
            Some("00:50:56:AA:BB:CC"),
        );
        let keys = temp_keys(&adds);
        let nic = |_: &MoRef| {
            Ok(NicBacking::Network {
                name: "VM Network".into(),
            })
        };
        let changes: Vec<Element> = adds
            .iter()
            .map(|a| add_device(a, &keys, &nic).unwrap())
            .collect();
        assert_eq!(changes[1].text_of("fileOperation"), Some("create"));
        assert_eq!(changes[0].text_of("fileOperation"), None);
        let disk = changes[1].child("device").unwrap();
        assert_eq!(
            disk.text_of("controllerKey"),
            Some("-1"),
            "follows the temp key"
        );
        // Read back as the server would report them (with real keys).
        let mut back = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let mut d = c.child("device").unwrap().clone();
            d.children.retain(|c| c.name != "key");
            d.children
                .insert(0, Element::text("key", ((i + 1) * 1000).to_string()));
            for c in &mut d.children {
                if c.name == "controllerKey" && c.text == "-1" {
                    c.text = "1000".into();
                }
            }
            back.push(parse_device(&d).unwrap());
        }
        assert_eq!(
            back[1],
            Device::Disk {
                key: 2000,
                controller_key: 1000,
                unit: 0,
                file: ds("c/c.vmdk"),
                parent: Some(ds("VIC/x/images/l/l.vmdk")),
                capacity_kb: 2048,
                mode: DiskMode::Persistent,
            }
        );
        assert_eq!(
            back[2],
            Device::Cdrom {
                key: 3000,
                iso: Some(ds("iso/bootstrap.iso"))
            }
        );
        assert_eq!(
            back[3],
            Device::Nic {
                key: 4000,
                network: MoRef::new("Network", "network-7"),
                mac: Some("00:50:56:aa:bb:cc".into())
            }
        );
        assert_eq!(
            back[4],
            Device::Serial {
                key: 5000,
                file: ds("c/output.log")
            }
        );
    }

    #[test]
    fn extra_config_last_value_wins_and_empty_removes() {
        let v = Element::new("val")
            .with(
                Element::typed("OptionValue", "OptionValue")
                    .with_text("key", "a")
                    .with_text("value", "1"),
            )
            .with(
                Element::typed("OptionValue", "OptionValue")
                    .with_text("key", "b")
                    .with_text("value", "2"),
            )
            .with(
                Element::typed("OptionValue", "OptionValue")
                    .with_text("key", "a")
                    .with_text("value", "3"),
            )
            .with(
                Element::typed("OptionValue", "OptionValue")
                    .with_text("key", "b")
                    .with_text("value", ""),
            );
        let m = parse_extra_config(Some(&v));
        assert_eq!(m, BTreeMap::from([("a".to_string(), "3".to_string())]));
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2026-11-28T15:19:32.509368966Z"),
            Some(1_795_879_172)
        );
        assert_eq!(
            parse_datetime("2026-11-28T16:19:32+01:00"),
            Some(1_795_879_172)
        );
        assert_eq!(parse_datetime("nonsense"), None);
    }
}
