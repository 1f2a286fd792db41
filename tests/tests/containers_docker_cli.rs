//! Containers as VMs through the real docker CLI: create, ps, inspect, rename, rm, and
//! bad input that leaves no VM, folder or name behind. (Starting guests comes with the
//! guest runner.)
#![allow(clippy::unwrap_used)]

use std::path::Path;

use vic_tests::fixtures::push_busybox;
use vic_tests::registry::TestRegistry;
use vic_tests::vch::SimVch;
use vic_tests::{Endpoint, docker, ok, stderr};

/// Container folders on the simulator's datastore (named by 64-hex ids).
fn container_folders(state: &Path) -> Vec<String> {
    let ds = state.join("datastores/LocalDS_0");
    let mut v: Vec<String> = std::fs::read_dir(ds)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| vic_core::ids::is_full_id(n))
        .collect();
    v.sort();
    v
}

#[test]
fn create_ps_inspect_rename_rm() {
    let mut vch = SimVch::new();
    let (bb, state) = (vch.bb.clone(), vch.state.clone());
    let h = vch.h();

    let id = ok(
        &docker(
            &h,
            &[
                "create",
                "--name",
                "web",
                "-e",
                "A=1",
                "-w",
                "/tmp",
                "-m",
                "256m",
                "--label",
                "tier=front",
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
    assert_eq!(container_folders(&state), vec![id.clone()]);
    let disk = state.join(format!("datastores/LocalDS_0/{id}/{id}.vmdk"));
    let descriptor = std::fs::read_to_string(&disk).unwrap();
    assert!(descriptor.contains("parentFileNameHint"), "{descriptor}");

    let ps = ok(
        &docker(
            &h,
            &[
                "ps",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Names}} {{.Status}} {{.Command}}",
            ],
        ),
        "ps -a",
    );
    assert_eq!(ps.trim(), format!("{id} web Created \"echo hi\""));
    assert_eq!(
        ok(&docker(&h, &["ps", "-q"]), "ps").trim(),
        "",
        "nothing runs"
    );
    let filtered = ok(
        &docker(
            &h,
            &[
                "ps",
                "-aq",
                "--filter",
                "label=tier=front",
                "--filter",
                "status=created",
            ],
        ),
        "ps filters",
    );
    assert_eq!(filtered.trim(), &id[..12]);

    let inspect = ok(
        &docker(
            &h,
            &[
                "inspect",
                "web",
                "--format",
                "{{.Name}}|{{.State.Status}}|{{json .Config.Env}}|{{.Config.WorkingDir}}|{{.HostConfig.Memory}}|{{.Image}}|{{json .Config.Cmd}}",
            ],
        ),
        "inspect",
    );
    let f: Vec<&str> = inspect.trim().split('|').collect();
    assert_eq!(f[0], "/web");
    assert_eq!(f[1], "created");
    assert!(f[2].contains("PATH=") && f[2].contains("A=1"), "{}", f[2]);
    assert_eq!((f[3], f[4]), ("/tmp", "268435456"));
    assert_eq!(f[5], bb.config_digest);
    assert_eq!(f[6], "[\"echo\",\"hi\"]");

    // The record is on the VM: a new endpoint process sees the same container.
    vch.restart_endpoint();
    let h = vch.h();
    ok(&docker(&h, &["rename", "web", "web2"]), "rename");
    let dup = docker(&h, &["create", "--name", "web2", &bb.reference]);
    assert!(!dup.status.success());
    assert!(
        stderr(&dup).contains("is already in use"),
        "{}",
        stderr(&dup)
    );
    // The image is in use: rmi refuses.
    let rmi = docker(&h, &["rmi", &bb.reference]);
    assert!(!rmi.status.success());
    assert!(
        stderr(&rmi).contains("being used by stopped container"),
        "{}",
        stderr(&rmi)
    );

    ok(&docker(&h, &["rm", &id[..8]]), "rm by prefix");
    assert!(container_folders(&state).is_empty());
    assert_eq!(ok(&docker(&h, &["ps", "-aq"]), "ps -a").trim(), "");
    let gone = docker(&h, &["inspect", "web2"]);
    assert!(stderr(&gone).contains("No such"), "{}", stderr(&gone));
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    let state = dir.path().join("state");
    let ep = Endpoint::start_with_env(
        &state,
        &["--insecure-registry", reg.addr()],
        &[("VIC_SIM_FAULTS", "CreateVM_Task=fail:1")],
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &bb.reference]), "pull");
    // An image the VCH lacks: the CLI then pulls it, from the local registry only.
    let missing = format!("{}/no/such:image", reg.addr());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["create", &missing], "No such manifest"),
        (
            vec!["create", "--privileged", &bb.reference],
            "--privileged",
        ),
        (
            vec!["create", "--name", "-bad", &bb.reference],
            "Invalid container name",
        ),
        (
            vec!["create", "--network", "host", &bb.reference],
            "--network=host",
        ),
        // The backend refuses the VM (an injected CreateVM_Task fault).
        (
            vec!["create", "--name", "first", &bb.reference],
            "injected fault",
        ),
    ];
    for (args, want) in cases {
        let o = docker(&h, &args);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(
            container_folders(&state).is_empty(),
            "{args:?} left a folder"
        );
        assert_eq!(
            ok(&docker(&h, &["ps", "-aq"]), "ps").trim(),
            "",
            "{args:?} left a VM"
        );
    }
    // The name of the failed create is free.
    ok(
        &docker(&h, &["create", "--name", "first", &bb.reference]),
        "create after the fault",
    );
}

#[test]
fn events_and_container_prune() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let h = ep.host();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    // A live listener sees what happens while it listens.
    let live = vic_tests::docker_command(dir.path())
        .args(["-H", &h, "events", "--format", "{{.Type}} {{.Action}}"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&docker(&h, &["pull", &bb.reference]), "pull");
    ok(&docker(&h, &["tag", &bb.reference, "mine:1"]), "tag");
    ok(
        &docker(&h, &["create", "--name", "aa", &bb.reference]),
        "create a",
    );
    ok(
        &docker(
            &h,
            &[
                "create",
                "--name",
                "bb",
                "--label",
                "keep=no",
                &bb.reference,
            ],
        ),
        "create b",
    );
    ok(&docker(&h, &["rename", "aa", "aa2"]), "rename");
    let pruned = ok(
        &docker(
            &h,
            &["container", "prune", "-f", "--filter", "label=keep=no"],
        ),
        "prune",
    );
    assert_eq!(
        pruned
            .lines()
            .filter(|l| vic_core::ids::is_full_id(l.trim()))
            .count(),
        1,
        "{pruned}"
    );
    assert_eq!(
        ok(&docker(&h, &["ps", "-a", "--format", "{{.Names}}"]), "ps").trim(),
        "aa2"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SIGTERM reaches docker through `timeout`, which forwards it (SIGKILL would not).
    // SAFETY: kill(2) on a child we spawned and have not waited for.
    unsafe { libc::kill(live.id() as i32, libc::SIGTERM) };
    let live_out = live.wait_with_output().unwrap();
    let live_text = String::from_utf8_lossy(&live_out.stdout);
    for want in [
        "image pull",
        "image tag",
        "container create",
        "container rename",
        "container destroy",
    ] {
        assert!(
            live_text.contains(want),
            "live events lack {want:?}: {live_text}"
        );
    }

    // The past, between two times, with a filter.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let past = ok(
        &docker(
            &h,
            &[
                "events",
                "--since",
                &start.to_string(),
                "--until",
                &until.to_string(),
                "--filter",
                "type=container",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}}",
            ],
        ),
        "events --since --until",
    );
    let lines: Vec<&str> = past.lines().collect();
    assert_eq!(
        lines,
        vec!["create aa", "create bb", "rename aa2", "destroy bb"],
        "{past}"
    );
}
