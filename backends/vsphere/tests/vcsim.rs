//! The vSphere backend against govmomi's vcsim: each test starts its own vcsim (through
//! tests/servers.sh, which builds it when needed) and stops it by PID when done.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use vic_core::provider::{
    Allocation, Compute, Device, DiskSpec, Network, PowerState, Storage, VmChange, VmSpec,
    VmUpdates,
};
use vic_core::{DsPath, Error, MoRef};
use vic_vsphere::client::{PropertySpec, filter_spec};
use vic_vsphere::vcsim::{Vcsim, container_devices};
use vic_vsphere::xml::Element;
use vic_vsphere::{ClientOptions, Tls, VsphereBackend, VsphereOptions};

const DS: &str = "LocalDS_0";
const ROOT_POOL: &str = "/DC0/host/DC0_C0/Resources";

async fn connect(sim: &Vcsim) -> VsphereBackend {
    VsphereBackend::connect(&sim.sdk_url(), &sim.options("user", "pass"))
        .await
        .expect("connect to vcsim")
}

fn ds(p: &str) -> DsPath {
    DsPath::new(DS, p)
}

#[tokio::test]
async fn wrong_password_gives_a_clear_login_error() {
    let sim = Vcsim::start(&["-username", "vic", "-password", "s3cret"]);
    let err = VsphereBackend::connect(&sim.sdk_url(), &sim.options("vic", "wrong"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, vic_vsphere::Error::Login { .. }), "{err:?}");
    assert!(
        msg.contains("\"vic\"") && msg.contains("incorrect user name or password"),
        "{msg}"
    );
    let engine: Error = err.into();
    assert_eq!(engine.http_status(), 401, "{engine}");

    // The right password, given in the URL, works.
    let url = sim.url_with("vic", "s3cret");
    let opts = VsphereOptions {
        client: ClientOptions {
            tls: Tls::Thumbprint(sim.info.thumbprint.clone()),
            ..Default::default()
        },
        datacenter: None,
    };
    let b = VsphereBackend::connect(&url, &opts).await.unwrap();
    assert_eq!(b.datacenter_name(), "DC0");
}

#[tokio::test]
async fn the_certificate_is_pinned_by_thumbprint() {
    let sim = Vcsim::start(&[]);
    let mut opts = sim.options("user", "pass");
    opts.client.tls = Tls::Thumbprint("00".repeat(32));
    let err = VsphereBackend::connect(&sim.sdk_url(), &opts)
        .await
        .unwrap_err();
    let chain = format!("{err:?}");
    assert!(chain.contains("thumbprint"), "{chain}");
    // Not checked against the web PKI either: a self-signed certificate fails there.
    opts.client.tls = Tls::WebPki;
    assert!(
        VsphereBackend::connect(&sim.sdk_url(), &opts)
            .await
            .is_err()
    );
    // The certificate as a CA works, and so does --insecure.
    opts.client.tls = Tls::Ca(sim.info.cert_pem.clone().into_bytes());
    VsphereBackend::connect(&sim.sdk_url(), &opts)
        .await
        .unwrap();
    opts.client.tls = Tls::Insecure;
    VsphereBackend::connect(&sim.sdk_url(), &opts)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expired_session_is_renewed_transparently() {
    let sim = Vcsim::start(&["-username", "vic", "-password", "s3cret"]);
    let a = VsphereBackend::connect(&sim.sdk_url(), &sim.options("vic", "s3cret"))
        .await
        .unwrap();
    let admin = VsphereBackend::connect(&sim.sdk_url(), &sim.options("vic", "s3cret"))
        .await
        .unwrap();
    assert_eq!(a.client().logins(), 1);
    let terminate = |key: String| {
        let admin = admin.clone();
        async move {
            let sm = admin.client().content().session_manager.clone();
            admin
                .client()
                .call(
                    Element::new("TerminateSession")
                        .with_moref("_this", &sm)
                        .with_text("sessionId", key),
                )
                .await
                .unwrap();
        }
    };
    // A property read: vcsim answers an unknown session with NotAuthenticated in the
    // missingSet, not with a fault.
    terminate(a.client().session_key().unwrap()).await;
    let pool = a.find_pool(ROOT_POOL).await.unwrap();
    a.list_vms(Some(&pool.reference)).await.unwrap();
    assert_eq!(a.client().logins(), 2, "renewed once");
    // A method call: a NotAuthenticated fault.
    terminate(a.client().session_key().unwrap()).await;
    let found = a.client().find_by_path("DC0/vm").await.unwrap();
    assert!(found.is_some());
    assert_eq!(a.client().logins(), 3);
    // A task and a datastore transfer after the session ended.
    terminate(a.client().session_key().unwrap()).await;
    a.make_dir(&ds("renew")).await.unwrap();
    assert_eq!(a.client().logins(), 4);
    // (vcsim serves /folder without checking the session, so the renewal of a
    // datastore transfer on HTTP 401 cannot be seen here.)
    a.write_file(&ds("renew/x"), b"x").await.unwrap();
    assert_eq!(a.read_file(&ds("renew/x")).await.unwrap(), b"x");
    // Logout from the session's own client: the next call logs in again.
    a.client().logout().await.unwrap();
    a.list_vms(None).await.unwrap();
}

/// A VM without devices, 1 CPU and 64 MB, in folder `name`.
fn bare_spec(name: &str, pool: &MoRef) -> VmSpec {
    VmSpec {
        name: name.into(),
        pool: pool.clone(),
        files: ds(name),
        num_cpus: 1,
        memory_mb: 64,
        guest_id: "otherGuest64".into(),
        devices: vec![],
        extra_config: BTreeMap::new(),
        annotation: String::new(),
    }
}

/// Waits for updates after `version` (moved on) until one satisfies `seen`: true, or ten
/// waits of two seconds without: false.
async fn updates_until(
    b: &VsphereBackend,
    version: &mut u64,
    seen: impl Fn(&VmUpdates) -> bool,
) -> bool {
    for _ in 0..10 {
        let u = b
            .wait_for_updates(*version, Duration::from_secs(2))
            .await
            .unwrap();
        *version = u.version;
        if seen(&u) {
            return true;
        }
    }
    false
}

/// A container VM as the engine makes one: every device VIC gives it.
fn container_spec(pool: &MoRef, net: &MoRef, parent: &DsPath) -> VmSpec {
    VmSpec {
        name: "c0ffee".into(),
        pool: pool.clone(),
        files: ds("c0ffee"),
        num_cpus: 2,
        memory_mb: 512,
        guest_id: "otherGuest64".into(),
        devices: container_devices(DS, "c0ffee", parent, 0, net, None),
        extra_config: BTreeMap::from([
            (
                "guestinfo.vice./common/id".to_string(),
                "c0ffee".to_string(),
            ),
            ("guestinfo.vice./common/name".to_string(), "web".to_string()),
            (
                "vice./container".to_string(),
                "{\"id\":\"c0ffee\"}".to_string(),
            ),
        ]),
        annotation: "vic container".into(),
    }
}

#[tokio::test]
async fn container_vm_with_every_device_and_key_visible_to_a_plain_query() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    let root = b.find_pool(ROOT_POOL).await.unwrap();
    assert_eq!(root.path, ROOT_POOL);
    assert!(
        root.host_cpu_cores > 0 && root.host_memory_mb > 0,
        "{root:?}"
    );
    let vch = b
        .ensure_pool(
            &root.reference,
            "vch1",
            Allocation::default(),
            Allocation::default(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(vch.reference.kind, "VirtualApp");
    assert_eq!(vch.path, format!("{ROOT_POOL}/vch1"));
    let net = b.find_network("VM Network").await.unwrap();
    // The image's top layer and the bootstrap ISO.
    b.make_dir(&ds("VIC/v1/images/l1")).await.unwrap();
    let layer = ds("VIC/v1/images/l1/l1.vmdk");
    b.create_disk(&DiskSpec {
        path: layer.clone(),
        capacity_kb: 8 * 1024 * 1024,
        parent: None,
    })
    .await
    .unwrap();
    b.make_dir(&ds("iso")).await.unwrap();
    b.write_file(&ds("iso/bootstrap.iso"), b"iso")
        .await
        .unwrap();

    let spec = container_spec(&vch.reference, &net.reference, &layer);
    let before = b.client().round_trips();
    let vm = b.create_vm(&spec).await.unwrap();
    let create_trips = b.client().round_trips() - before;
    assert!(create_trips <= 5, "create took {create_trips} round trips");
    assert_eq!(vm.pool, vch.reference);
    assert_eq!(vm.files, ds("c0ffee"));
    assert_eq!(vm.power_state, PowerState::PoweredOff);
    let again = b.create_vm(&spec).await.unwrap_err();
    assert!(matches!(again, Error::Conflict(_)), "{again:?}");

    // A plain vim25 property query shows every device and key.
    let objs = b
        .client()
        .retrieve(filter_spec(
            "specSet",
            &[PropertySpec {
                kind: "VirtualMachine".into(),
                paths: vec![
                    "config.hardware.device".into(),
                    "config.extraConfig".into(),
                    "config.hardware.numCPU".into(),
                    "config.hardware.memoryMB".into(),
                    "config.guestId".into(),
                    "resourcePool".into(),
                ],
            }],
            &vm.reference,
            false,
            vec![],
        ))
        .await
        .unwrap();
    let o = &objs[0];
    assert_eq!(o.text("config.hardware.numCPU"), Some("2"));
    assert_eq!(o.text("config.hardware.memoryMB"), Some("512"));
    assert_eq!(o.text("config.guestId"), Some("otherGuest64"));
    assert_eq!(
        o.get("resourcePool").unwrap().as_moref(),
        Some(vch.reference.clone())
    );
    let devices = &o.get("config.hardware.device").unwrap().children;
    let of = |t: &str| {
        devices
            .iter()
            .filter(|d| d.type_name() == t)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("ParaVirtualSCSIController").len(), 1);
    let disk = of("VirtualDisk")[0];
    assert_eq!(
        disk.at(&["backing", "fileName"]).unwrap().text,
        "[LocalDS_0] c0ffee/c0ffee.vmdk"
    );
    assert_eq!(
        disk.at(&["backing", "parent", "fileName"]).unwrap().text,
        layer.to_string()
    );
    let scsi_key = &of("ParaVirtualSCSIController")[0]
        .text_of("key")
        .unwrap()
        .to_string();
    assert_eq!(disk.text_of("controllerKey"), Some(scsi_key.as_str()));
    assert_eq!(
        of("VirtualCdrom")[0]
            .at(&["backing", "fileName"])
            .unwrap()
            .text,
        "[LocalDS_0] iso/bootstrap.iso"
    );
    let nic = of("VirtualVmxnet3")[0];
    assert_eq!(
        nic.at(&["backing", "network"]).unwrap().as_moref(),
        Some(net.reference.clone())
    );
    assert!(!nic.text_of("macAddress").unwrap_or_default().is_empty());
    assert_eq!(
        of("VirtualSerialPort")[0]
            .at(&["backing", "fileName"])
            .unwrap()
            .text,
        "[LocalDS_0] c0ffee/output.log"
    );
    let keys: Vec<String> = o
        .get("config.extraConfig")
        .unwrap()
        .children
        .iter()
        .filter_map(|kv| kv.text_of("key").map(str::to_string))
        .collect();
    for k in spec.extra_config.keys() {
        assert!(keys.contains(k), "{k} in {keys:?}");
    }
    // The provider's view agrees.
    let info = b.vm_info(&vm.reference).await.unwrap();
    assert_eq!(info, vm);
    assert!(info.devices.iter().any(|d| matches!(d, Device::Disk { parent: Some(p), capacity_kb, .. } if *p == layer && *capacity_kb == 8 * 1024 * 1024)));
    for (k, v) in &spec.extra_config {
        assert_eq!(info.extra_config.get(k), Some(v));
    }
    // The container disk is on the datastore, a child of the layer.
    let d = b.disk_info(&ds("c0ffee/c0ffee.vmdk")).await.unwrap();
    assert_eq!(d.parent, Some(layer.clone()));

    // Power on and off, seen through a plain query of runtime.powerState.
    let power = |b: VsphereBackend, vm: MoRef| async move {
        b.client()
            .properties(&vm, &["runtime.powerState"])
            .await
            .unwrap()
            .text("runtime.powerState")
            .unwrap()
            .to_string()
    };
    let before = b.client().round_trips();
    b.power_on(&vm.reference).await.unwrap();
    assert_eq!(b.client().round_trips() - before, 2);
    assert_eq!(power(b.clone(), vm.reference.clone()).await, "poweredOn");
    let e = b.power_on(&vm.reference).await.unwrap_err();
    assert!(matches!(e, Error::InvalidState(_)), "{e:?}");
    let e = b.destroy(&vm.reference).await.unwrap_err();
    assert!(matches!(e, Error::InvalidState(_)), "{e:?}");
    // The guest writes back what it did.
    b.reconfigure(
        &vm.reference,
        &VmChange {
            extra_config: BTreeMap::from([
                (
                    "guestinfo.vice./common/status".to_string(),
                    Some("0".to_string()),
                ),
                ("guestinfo.vice./common/name".to_string(), None),
            ]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let info = b.vm_info(&vm.reference).await.unwrap();
    assert_eq!(
        info.extra_config
            .get("guestinfo.vice./common/status")
            .map(String::as_str),
        Some("0")
    );
    assert!(
        !info
            .extra_config
            .contains_key("guestinfo.vice./common/name")
    );
    b.power_off(&vm.reference).await.unwrap();
    assert_eq!(power(b.clone(), vm.reference.clone()).await, "poweredOff");

    // Destroyed with its folder gone; the layer stays.
    b.destroy(&vm.reference).await.unwrap();
    assert!(!b.exists(&ds("c0ffee")).await.unwrap());
    assert!(b.exists(&layer).await.unwrap());
    let host_dirs: Vec<_> = std::fs::read_dir(sim.datastore_dir())
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !host_dirs.iter().any(|n| n.starts_with("c0ffee")),
        "{host_dirs:?}"
    );
    let e = b.vm_info(&vm.reference).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "vm", .. }), "{e:?}");
    assert!(b.list_vms(Some(&vch.reference)).await.unwrap().is_empty());
    b.destroy_pool(&vch.reference).await.unwrap();
}

#[tokio::test]
async fn layer_disks_keep_their_parent_chain_and_content() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    b.make_dir(&ds("VIC/v1/images/base")).await.unwrap();
    b.make_dir(&ds("VIC/v1/images/top")).await.unwrap();
    let base = ds("VIC/v1/images/base/base.vmdk");
    let top = ds("VIC/v1/images/top/top.vmdk");
    let d = b
        .create_disk(&DiskSpec {
            path: base.clone(),
            capacity_kb: 4096,
            parent: None,
        })
        .await
        .unwrap();
    assert_eq!((d.capacity_kb, d.parent), (4096, None));
    let e = b
        .create_disk(&DiskSpec {
            path: top.clone(),
            capacity_kb: 1024,
            parent: Some(base.clone()),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument(_)),
        "smaller than its parent: {e:?}"
    );
    let d = b
        .create_disk(&DiskSpec {
            path: top.clone(),
            capacity_kb: 0,
            parent: Some(base.clone()),
        })
        .await
        .unwrap();
    assert_eq!(
        (d.capacity_kb, d.parent.clone()),
        (4096, Some(base.clone()))
    );
    let e = b
        .create_disk(&DiskSpec {
            path: top.clone(),
            capacity_kb: 0,
            parent: Some(base.clone()),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    // The chain is on the datastore, in the descriptor.
    let text = String::from_utf8(b.read_file(&top).await.unwrap()).unwrap();
    assert!(
        text.contains(&format!("parentFileNameHint=\"{base}\"")),
        "{text}"
    );
    assert_eq!(b.disk_info(&top).await.unwrap().parent, Some(base.clone()));
    let e = b
        .disk_info(&ds("VIC/v1/images/none.vmdk"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "disk", .. }), "{e:?}");

    // Layer content: written once, read back byte for byte.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(11);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "etc/motd", &b"hello world"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let n = b
        .write_layer(&top, Box::new(std::io::Cursor::new(tar.clone())))
        .await
        .unwrap();
    assert_eq!(n, 11);
    let e = b
        .write_layer(&top, Box::new(std::io::Cursor::new(tar.clone())))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    let mut back = Vec::new();
    b.read_layer(&top)
        .await
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, tar);
    let e = b.read_layer(&base).await.err().unwrap();
    assert!(matches!(e, Error::NotFound { kind: "layer", .. }), "{e:?}");
    b.delete_disk(&top).await.unwrap();
    assert!(!b.exists(&top).await.unwrap());
    assert!(!b.exists(&ds("VIC/v1/images/top/top.tar")).await.unwrap());
    assert!(b.exists(&base).await.unwrap());
}

#[tokio::test]
async fn datastore_folders_and_files() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    let stores = b.datastores().await.unwrap();
    assert!(
        stores.iter().any(|d| d.name == DS && d.capacity > 0),
        "{stores:?}"
    );
    b.make_dir(&ds("a/b/c")).await.unwrap();
    b.make_dir(&ds("a/b/c")).await.unwrap();
    b.write_file(&ds("a/b/f.json"), b"{}").await.unwrap();
    b.write_file(&ds("a/b/f.json"), b"{\"x\":1}").await.unwrap();
    assert_eq!(b.read_file(&ds("a/b/f.json")).await.unwrap(), b"{\"x\":1}");
    let list = b.list_dir(&ds("a/b")).await.unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir, e.size))
        .collect();
    assert_eq!(names, vec![("c", true, 0), ("f.json", false, 7)]);
    assert!(b.exists(&ds("a/b/f.json")).await.unwrap());
    assert!(!b.exists(&ds("a/b/g.json")).await.unwrap());
    assert!(!b.exists(&ds("nope/g.json")).await.unwrap());
    let e = b.read_file(&ds("a/b/g.json")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    let e = b.list_dir(&ds("nope")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    b.write_file(&ds("a/b/g.json"), b"g").await.unwrap();
    let e = b
        .move_path(&ds("a/b/f.json"), &ds("a/b/g.json"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    b.move_path(&ds("a/b/f.json"), &ds("a/b/c/f.json"))
        .await
        .unwrap();
    assert!(b.exists(&ds("a/b/c/f.json")).await.unwrap());
    assert!(!b.exists(&ds("a/b/f.json")).await.unwrap());
    b.delete(&ds("a")).await.unwrap();
    assert!(!b.exists(&ds("a")).await.unwrap());
    let e = b.delete(&ds("a")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert!(b.read_file(&ds("../x")).await.is_err());
}

#[tokio::test]
async fn pools_port_groups_and_updates() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    // Pools: a compute resource stands for its root pool.
    let cluster = b.find_pool("/DC0/host/DC0_C0").await.unwrap();
    let root = b.find_pool(ROOT_POOL).await.unwrap();
    assert_eq!(cluster.reference, root.reference);
    let cpu = Allocation {
        limit: Some(2000),
        ..Allocation::default()
    };
    let rp = b
        .ensure_pool(&root.reference, "rp1", cpu, Allocation::default(), false)
        .await
        .unwrap();
    assert_eq!(rp.reference.kind, "ResourcePool");
    assert_eq!(rp.cpu.limit, Some(2000));
    let same = b
        .ensure_pool(&root.reference, "rp1", cpu, Allocation::default(), false)
        .await
        .unwrap();
    assert_eq!(same.reference, rp.reference);
    let mem = Allocation {
        limit: Some(1024),
        reservation: 0,
        expandable: false,
        shares: 2000,
    };
    b.update_pool(&rp.reference, cpu, mem).await.unwrap();
    let info = b.pool_info(&rp.reference).await.unwrap();
    // vcsim's UpdateConfig keeps expandableReservation; the rest changes.
    assert_eq!(
        (
            info.memory.limit,
            info.memory.reservation,
            info.memory.shares
        ),
        (mem.limit, mem.reservation, mem.shares)
    );
    assert_eq!(
        b.find_pool(&format!("{ROOT_POOL}/rp1"))
            .await
            .unwrap()
            .reference,
        rp.reference
    );
    let e = b.destroy_pool(&root.reference).await.unwrap_err();
    assert!(matches!(e, Error::InvalidState(_)), "{e:?}");
    b.destroy_pool(&rp.reference).await.unwrap();
    let e = b.find_pool(&format!("{ROOT_POOL}/rp1")).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    // Port groups.
    let nets = b.networks().await.unwrap();
    assert!(nets.iter().any(|n| n.name == "VM Network"), "{nets:?}");
    let pg = b.ensure_port_group("vic-bridge", Some(42)).await.unwrap();
    assert_eq!(pg.name, "vic-bridge");
    assert_eq!(pg.vlan, Some(42));
    assert_eq!(
        b.ensure_port_group("vic-bridge", Some(42))
            .await
            .unwrap()
            .reference,
        pg.reference
    );
    b.remove_port_group(&pg.reference).await.unwrap();
    let e = b.find_network("vic-bridge").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");

    // Updates: everything first, then a power change.
    let all = b.wait_for_updates(0, Duration::from_secs(0)).await.unwrap();
    assert!(all.changed.iter().all(|v| !v.name.is_empty()));
    let vm = b
        .create_vm(&bare_spec("watched", &root.reference))
        .await
        .unwrap();
    let mut version = all.version;
    let seen = updates_until(&b, &mut version, |u| {
        u.changed.iter().any(|v| v.reference == vm.reference)
    })
    .await;
    assert!(seen, "the new VM shows up in the updates");
    b.power_on(&vm.reference).await.unwrap();
    let on = updates_until(&b, &mut version, |u| {
        u.changed
            .iter()
            .any(|v| v.reference == vm.reference && v.power_state == PowerState::PoweredOn)
    })
    .await;
    assert!(on, "the power change shows up in the updates");
    b.power_off(&vm.reference).await.unwrap();
    b.destroy(&vm.reference).await.unwrap();
    let gone = updates_until(&b, &mut version, |u| u.removed.contains(&vm.reference)).await;
    assert!(gone, "the destroyed VM shows up as removed");
}

#[tokio::test]
async fn tasks_are_awaited_with_wait_for_updates_too() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    let fm = b.client().content().file_manager.clone().unwrap();
    // Starts deleting a datastore file without waiting for the task.
    let start_delete = |name: &'static str| {
        b.client().call_moref(
            Element::new("DeleteDatastoreFile_Task")
                .with_moref("_this", &fm)
                .with_text("name", name)
                .with_moref("datacenter", b.datacenter()),
        )
    };
    let task = start_delete("[LocalDS_0] missing").await.unwrap();
    let e = b
        .client()
        .wait_task_updates(&task, "DeleteDatastoreFile_Task")
        .await
        .unwrap_err();
    assert!(e.fault().is_some(), "{e:?}");
    b.make_dir(&ds("t")).await.unwrap();
    let task = start_delete("[LocalDS_0] t").await.unwrap();
    b.client()
        .wait_task_updates(&task, "DeleteDatastoreFile_Task")
        .await
        .unwrap();
    assert!(!b.exists(&ds("t")).await.unwrap());
}

#[tokio::test]
async fn concurrent_waiters_each_see_a_power_change() {
    let sim = Vcsim::start(&[]);
    let b = connect(&sim).await;
    let root = b.find_pool(ROOT_POOL).await.unwrap();
    let vm = b
        .create_vm(&bare_spec("both", &root.reference))
        .await
        .unwrap();
    let start = b.wait_for_updates(0, Duration::ZERO).await.unwrap();
    assert!(start.changed.iter().any(|v| v.reference == vm.reference));
    // A long waiter (the engine's supervisor) and a short one (a stop waiting for the
    // power-off) at once; neither takes the other's update nor waits behind it.
    let watch = |timeout: u64| {
        let b = b.clone();
        let vm = vm.reference.clone();
        async move {
            let began = std::time::Instant::now();
            let mut version = start.version;
            loop {
                let u = b
                    .wait_for_updates(version, Duration::from_secs(timeout))
                    .await
                    .unwrap();
                version = u.version;
                if u.changed
                    .iter()
                    .any(|v| v.reference == vm && v.power_state == PowerState::PoweredOn)
                {
                    return began.elapsed();
                }
                assert!(began.elapsed() < Duration::from_secs(20), "no update");
            }
        }
    };
    let power = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.power_on(&vm.reference).await.unwrap();
    };
    let (long, short, ()) = tokio::join!(watch(30), watch(3), power);
    assert!(long < Duration::from_secs(10), "{long:?}");
    assert!(short < Duration::from_secs(10), "{short:?}");
    // A version from another connection gets everything.
    let other = connect(&sim).await;
    let u = other
        .wait_for_updates(start.version + 100, Duration::ZERO)
        .await
        .unwrap();
    assert!(u.changed.iter().any(|v| v.reference == vm.reference));
}
