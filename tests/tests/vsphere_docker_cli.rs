//! End to end over SOAP: the endpoint with `--target https://user:pass@127.0.0.1:PORT/sdk`
//! against vcsim, driven by the real docker CLI (pull, create, inspect, ps, start,
//! stop, rm), and govc-style checks through the vSphere API of what it made. vcsim and
//! the registry are started here and stopped by PID.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use vic_core::DsPath;
use vic_core::model::keys;
use vic_core::provider::{Compute, Device, PowerState, Storage, VmChange};
use vic_tests::fixtures::push_busybox;
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, binary, docker, free_port, ok};
use vic_vsphere::VsphereBackend;
use vic_vsphere::vcsim::Vcsim;

#[test]
fn docker_create_start_inspect_ps_stop_rm_over_soap() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Vcsim::start(&["-username", "vic", "-password", "s3cret"]);
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");

    // A wrong password is a clear error at startup.
    let bad = Command::new(binary("vic-endpoint"))
        .arg("--target")
        .arg(sim.url_with("vic", "wrong"))
        .arg("--thumbprint")
        .arg(&sim.info.thumbprint)
        .arg("-H")
        .arg(format!("tcp://127.0.0.1:{}", free_port()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains("incorrect user name or password"), "{msg}");

    let ep = Endpoint::start_vsphere(
        &sim,
        ("vic", "s3cret"),
        dir.path(),
        &["--name", "vch-e2e", "--insecure-registry", reg.addr()],
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &bb.reference]), "pull");
    let id = ok(
        &docker(
            &h,
            &[
                "create",
                "--name",
                "web",
                "-e",
                "A=1",
                &bb.reference,
                "echo",
                "hi",
            ],
        ),
        "create",
    )
    .trim()
    .to_string();
    assert!(vic_core::ids::is_full_id(&id), "{id}");
    let inspect = ok(
        &docker(
            &h,
            &[
                "inspect",
                "--format",
                "{{.Name}} {{.State.Status}} {{.Config.Env}}",
                "web",
            ],
        ),
        "inspect",
    );
    assert!(inspect.starts_with("/web created"), "{inspect}");
    assert!(inspect.contains("A=1"), "{inspect}");
    let ps = ok(
        &docker(
            &h,
            &[
                "ps",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.Status}}",
            ],
        ),
        "ps -a",
    );
    assert_eq!(ps.trim(), format!("{id} web Created"));

    // What a govc user sees: the container VM in the VCH's vApp, with its disk a child
    // of the image's top layer, a NIC, the serial log and the container's keys.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let vs = rt
        .block_on(VsphereBackend::connect(
            &sim.sdk_url(),
            &sim.options("vic", "s3cret"),
        ))
        .unwrap();
    let vch = rt
        .block_on(vs.find_pool("/DC0/host/DC0_C0/Resources/vch-e2e"))
        .unwrap();
    assert_eq!(vch.reference.kind, "VirtualApp");
    let vms = rt.block_on(vs.list_vms(Some(&vch.reference))).unwrap();
    let vm = vms
        .iter()
        .find(|v| v.extra_config.get(keys::CONTAINER_ID) == Some(&id))
        .unwrap_or_else(|| panic!("no container VM in the VCH's vApp: {vms:?}"));
    let parent = vm
        .devices
        .iter()
        .find_map(|d| match d {
            Device::Disk {
                parent: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        })
        .expect("a disk with a parent");
    assert!(parent.path.contains("/images/"), "{parent}");
    assert!(
        rt.block_on(vs.exists(&parent)).unwrap(),
        "the layer disk exists"
    );
    assert!(
        vm.devices
            .iter()
            .any(|d| matches!(d, Device::Nic { mac: Some(_), .. }))
    );
    assert!(
        vm.devices
            .iter()
            .any(|d| matches!(d, Device::Serial { .. }))
    );
    assert!(
        vm.devices
            .iter()
            .any(|d| matches!(d, Device::ScsiController { .. }))
    );
    assert_eq!(
        vm.extra_config
            .get(keys::CONTAINER_NAME)
            .map(String::as_str),
        Some("web")
    );
    let disk = DsPath::new("LocalDS_0", format!("{id}/{id}.vmdk"));
    let text = String::from_utf8(rt.block_on(vs.read_file(&disk)).unwrap()).unwrap();
    assert!(
        text.contains(&format!("parentFileNameHint=\"{parent}\"")),
        "{text}"
    );

    // The endpoint's vSphere session ends (an administrator terminates it): the next
    // Docker calls log in again instead of failing.
    let sm = vs.client().content().session_manager.clone();
    let ours = vs.client().session_key().unwrap();
    let sessions = rt
        .block_on(vs.client().properties(&sm, &["sessionList"]))
        .unwrap();
    let others: Vec<String> = sessions
        .get("sessionList")
        .map(|l| {
            l.children
                .iter()
                .filter_map(|s| s.text_of("key").map(str::to_string))
                .filter(|k| *k != ours)
                .collect()
        })
        .unwrap_or_default();
    assert!(!others.is_empty(), "the endpoint's session is listed");
    for key in others {
        rt.block_on(
            vs.client().call(
                vic_vsphere::xml::Element::new("TerminateSession")
                    .with_moref("_this", &sm)
                    .with_text("sessionId", key),
            ),
        )
        .unwrap();
    }
    let ps = ok(
        &docker(&h, &["ps", "-a", "--format", "{{.Names}} {{.Status}}"]),
        "ps -a after the session ended",
    );
    assert_eq!(ps.trim(), "web Created");
    let log = std::fs::read_to_string(&ep.log).unwrap();
    assert!(
        log.contains("vSphere session expired; logging in again"),
        "the endpoint logged in again"
    );

    // Start and stop: the VM powers on and off (vcsim runs no guest, so stop ends in a
    // power-off after the signal cannot be delivered).
    ok(&docker(&h, &["start", "web"]), "start");
    let power =
        |rt: &tokio::runtime::Runtime| rt.block_on(vs.vm_info(&vm.reference)).unwrap().power_state;
    assert_eq!(power(&rt), PowerState::PoweredOn);
    let ps = ok(
        &docker(&h, &["ps", "--format", "{{.Names}} {{.Status}}"]),
        "ps",
    );
    assert!(ps.trim().starts_with("web Up"), "{ps}");
    // vcsim boots no guest: play the tether's part and report the process started,
    // through the vSphere API as the guest's extraConfig write-back.
    let status = vic_tether::protocol::GuestStatus {
        state: vic_tether::protocol::GuestState::Running,
        pid: Some(1),
        started_at: Some(std::time::SystemTime::now()),
        ..Default::default()
    };
    rt.block_on(vs.reconfigure(&vm.reference, &VmChange::set_keys(status.to_keys())))
        .unwrap();
    let started = ok(
        &docker(
            &h,
            &[
                "inspect",
                "--format",
                "{{.State.Pid}} {{.State.StartedAt}}",
                "web",
            ],
        ),
        "inspect",
    );
    assert!(started.starts_with("1 "), "{started}");
    ok(&docker(&h, &["stop", "-t", "1", "web"]), "stop");
    assert_eq!(power(&rt), PowerState::PoweredOff);
    // The guest could not report its end: killed by the power-off, as SIGKILL.
    let state = ok(
        &docker(
            &h,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                "web",
            ],
        ),
        "inspect",
    );
    assert_eq!(state.trim(), "exited 137");

    // rm: the VM and its folder are gone.
    ok(&docker(&h, &["rm", "web"]), "rm");
    let e = rt.block_on(vs.vm_info(&vm.reference)).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(
        !rt.block_on(vs.exists(&DsPath::new("LocalDS_0", &id)))
            .unwrap(),
        "the container's folder is gone"
    );
    let ps = ok(&docker(&h, &["ps", "-a", "-q"]), "ps -a");
    assert_eq!(ps.trim(), "");
}
