//! Containers whose guests run: `docker start`, `wait`, `logs`, `stop` with the real
//! docker CLI, the guest being the real tether in Linux namespaces on the simulator; and
//! a kill -9 of the endpoint while guests run and exit. Run as root
//! (`containers_rootless` covers a non-root endpoint).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use vic_tests::vch::SimVch;
use vic_tests::{docker, ok, stderr, wait_until};

#[test]
fn start_wait_logs_stop_and_survive_the_endpoint() {
    let Some(mut vch) = SimVch::as_root() else {
        return;
    };
    let bb = vch.bb.clone();
    let h = vch.h();

    // echo: runs, exits 0, its output is in the log.
    let id = ok(
        &docker(&h, &["create", &bb.reference, "echo", "hello"]),
        "create",
    );
    let id = id.trim();
    ok(&docker(&h, &["start", id]), "start");
    assert_eq!(ok(&docker(&h, &["wait", id]), "wait").trim(), "0");
    let logs = docker(&h, &["logs", id]);
    assert_eq!(ok(&logs, "logs"), "hello\n");
    let st = ok(
        &docker(
            &h,
            &[
                "inspect",
                id,
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
            ],
        ),
        "inspect",
    );
    assert_eq!(st.trim(), "exited 0");

    // Exit codes and stderr.
    let id3 = ok(
        &docker(
            &h,
            &["create", &bb.reference, "sh", "-c", "echo oops >&2; exit 3"],
        ),
        "create",
    );
    let id3 = id3.trim();
    ok(&docker(&h, &["start", id3]), "start");
    assert_eq!(ok(&docker(&h, &["wait", id3]), "wait").trim(), "3");
    let l = docker(&h, &["logs", id3]);
    assert_eq!(stderr(&l), "oops\n");
    assert_eq!(vic_tests::stdout(&l), "");

    // A long runner: ps shows it; kill -9 of the endpoint leaves it running; it is
    // found running again, then stopped (SIGTERM → 143).
    let long = ok(
        &docker(
            &h,
            &[
                "run",
                "-d",
                "--name",
                "sleeper",
                &bb.reference,
                "sleep",
                "300",
            ],
        ),
        "run -d",
    );
    let long = long.trim().to_string();
    let ps = ok(
        &docker(&h, &["ps", "--format", "{{.Names}} {{.State}}"]),
        "ps",
    );
    assert_eq!(ps.trim(), "sleeper running");
    // One that exits while the endpoint is down.
    let later = ok(
        &docker(
            &h,
            &[
                "create",
                "--name",
                "later",
                &bb.reference,
                "sh",
                "-c",
                "sleep 2; exit 7",
            ],
        ),
        "create",
    );
    ok(&docker(&h, &["start", "later"]), "start later");
    vch.kill_endpoint();
    std::thread::sleep(Duration::from_secs(3));
    vch.start_endpoint();
    let h = vch.h();
    let ps = ok(
        &docker(&h, &["ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "ps -a",
    );
    assert!(ps.contains("sleeper running"), "{ps}");
    wait_until(Duration::from_secs(20), "later to be exited", || {
        let s = ok(
            &docker(
                &h,
                &[
                    "inspect",
                    "later",
                    "--format",
                    "{{.State.Status}} {{.State.ExitCode}}",
                ],
            ),
            "inspect",
        );
        (s.trim() == "exited 7").then_some(())
    });
    assert_eq!(later.trim().len(), 64);
    ok(&docker(&h, &["stop", "sleeper"]), "stop");
    assert_eq!(ok(&docker(&h, &["wait", &long]), "wait").trim(), "143");
    ok(&docker(&h, &["rm", "sleeper", "later", id, id3]), "rm");
}
