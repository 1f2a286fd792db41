//! `docker run` to the end over SOAP: the endpoint on vcsim, with the guest player
//! (`vic_tests::guest_player`) playing each container VM's guest with the real
//! `tether` (vcsim runs no guests), driven by the real docker CLI: run -d, wait, logs,
//! inspect, rm; and start and stop of a long-running container, whose power-off kills
//! its guest. Root only (the tether makes namespaces and mounts): skipped otherwise.
//! vcsim, the registry, the endpoint and the player are stopped at the end.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vic_tests::fixtures::push_busybox;
use vic_tests::guest_player::{Event, GuestPlayer, alive};
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, docker, ok, wait_until};
use vic_vsphere::vcsim::Vcsim;

/// The player's events, printed when the test fails.
struct ShowEvents<'a>(&'a GuestPlayer);

impl Drop for ShowEvents<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("guest player events: {:?}", self.0.events());
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Mount points under `prefix` (`/proc/self/mountinfo`, field 5).
fn mounts_under(prefix: &std::path::Path) -> Vec<String> {
    let prefix = prefix.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix) || m.contains("vic-guest-root-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn docker_run_wait_logs_and_stop_with_played_guests_over_soap() {
    if !is_root() {
        eprintln!("skipping: the guest player runs the tether, which needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = Vcsim::start(&["-username", "vic", "-password", "s3cret"]);
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    let player = GuestPlayer::start(&sim, "vic", "s3cret");
    let show = ShowEvents(&player);
    let ep = Endpoint::start_vsphere(
        &sim,
        ("vic", "s3cret"),
        dir.path(),
        &["--name", "vch-guest", "--insecure-registry", reg.addr()],
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &bb.reference]), "pull");

    // run -d to the end: the guest runs the command, reports its exit status through
    // the API and halts.
    let id = ok(
        &docker(
            &h,
            &[
                "run",
                "-d",
                "--name",
                "hi",
                &bb.reference,
                "sh",
                "-c",
                "echo hello from vcsim; exit 3",
            ],
        ),
        "run -d",
    )
    .trim()
    .to_string();
    assert!(vic_core::ids::is_full_id(&id), "{id}");
    let code = ok(&docker(&h, &["wait", "hi"]), "wait");
    assert_eq!(code.trim(), "3");
    let logs = docker(&h, &["logs", "hi"]);
    assert_eq!(ok(&logs, "logs").trim(), "hello from vcsim");
    let state = ok(
        &docker(
            &h,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}}",
                "hi",
            ],
        ),
        "inspect",
    );
    assert_eq!(state.trim(), "exited 3 false");
    let events = player.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Exited {
                exit_code: Some(3),
                ..
            }
        )),
        "{events:?}"
    );
    ok(&docker(&h, &["rm", "hi"]), "rm");
    let ps = ok(&docker(&h, &["ps", "-a", "-q"]), "ps -a");
    assert_eq!(ps.trim(), "");

    // start and stop of a long-running container: stop powers the VM off, and the
    // player kills its guest as a power-off would.
    ok(
        &docker(
            &h,
            &["create", "--name", "nap", &bb.reference, "sleep", "600"],
        ),
        "create",
    );
    ok(&docker(&h, &["start", "nap"]), "start");
    let pid = wait_until(Duration::from_secs(60), "the nap guest to start", || {
        player.events().iter().rev().find_map(|e| match e {
            Event::Started { pid, .. } if alive(*pid) => Some(*pid),
            _ => None,
        })
    });
    let ps = ok(
        &docker(&h, &["ps", "--format", "{{.Names}} {{.Status}}"]),
        "ps",
    );
    assert!(ps.trim().starts_with("nap Up"), "{ps}");
    // The guest's running status comes back through the API.
    let started = wait_until(Duration::from_secs(30), "the running status", || {
        let o = ok(
            &docker(
                &h,
                &[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{.State.Pid}}",
                    "nap",
                ],
            ),
            "inspect",
        );
        (o.trim() != "running 0").then_some(o)
    });
    assert!(started.starts_with("running "), "{started}");
    // It keeps running: the player does not halt it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "the sleeping guest runs");
    ok(&docker(&h, &["stop", "-t", "1", "nap"]), "stop");
    wait_until(
        Duration::from_secs(30),
        "the player to kill the guest",
        || {
            (!alive(pid)
                && player
                    .events()
                    .iter()
                    .any(|e| matches!(e, Event::Killed { .. })))
            .then_some(())
        },
    );
    let state = ok(
        &docker(&h, &["inspect", "--format", "{{.State.Status}}", "nap"]),
        "inspect",
    );
    assert_eq!(state.trim(), "exited");
    ok(&docker(&h, &["rm", "nap"]), "rm");

    let events = player.events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{events:?}"
    );
    let pids = player.pids();
    assert_eq!(pids.len(), 2, "{events:?}");
    drop(show);
    player.stop();
    drop(ep);
    for pid in pids {
        assert!(!alive(pid), "tether {pid} is gone");
    }
    let left = mounts_under(&sim.datastore_dir());
    assert!(left.is_empty(), "mounts left: {left:?}");
    drop(reg);
    drop(sim);
}
