//! Pulls that must fail cleanly: a registry serving a blob that does not match its
//! digest, layers that try to write outside themselves, and an endpoint killed in the
//! middle of a pull. After each, the image store shows nothing of the failed pull.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use vic_tests::fixtures::{EvilKind, push_bad_blob, push_busybox, push_evil};
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, docker, image_store_entries, stderr, stdout, wait_until};

/// Paths under `root` whose name starts with `prefix`.
fn find_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

fn images(ep: &Endpoint) -> String {
    let o = docker(&ep.host(), &["images", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn a_blob_with_the_wrong_digest_fails_the_pull_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bad = push_bad_blob(&reg, "bad", "latest");
    let state = dir.path().join("state");
    let ep = Endpoint::start(&state, &["--insecure-registry", reg.addr()]);
    let before = image_store_entries(&state);

    let o = docker(&ep.host(), &["pull", &bad.pushed.reference]);
    assert!(!o.status.success(), "the pull must fail: {}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("digest") && err.contains(&bad.layer_digest),
        "{err}"
    );
    assert_eq!(images(&ep).trim(), "");
    assert_eq!(image_store_entries(&state), before, "the store changed");

    // A good image still pulls afterwards.
    let good = push_busybox(&reg, "busybox", "latest");
    let o = docker(&ep.host(), &["pull", &good.reference]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn layers_cannot_write_outside_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let state = dir.path().join("state");
    let ep = Endpoint::start(&state, &["--insecure-registry", reg.addr()]);
    for kind in EvilKind::ALL {
        let pushed = push_evil(&reg, &format!("evil-{}", kind.name()), "latest", kind);
        let o = docker(&ep.host(), &["pull", &pushed.reference]);
        match kind {
            // An absolute path is contained in the layer, as dockerd does.
            EvilKind::AbsolutePath => {
                assert!(o.status.success(), "{}", stderr(&o));
                let inside = find_named(&state, "vic-evil");
                assert_eq!(inside.len(), 1, "{inside:?}");
                assert!(inside[0].ends_with("etc/vic-evil"), "{inside:?}");
                let o = docker(&ep.host(), &["rmi", &pushed.reference]);
                assert!(o.status.success(), "{}", stderr(&o));
            }
            _ => {
                assert!(
                    !o.status.success(),
                    "{kind:?} must be refused: {}",
                    stdout(&o)
                );
                let err = stderr(&o);
                assert!(err.contains("layer"), "{kind:?}: {err}");
            }
        }
        assert!(
            find_named(&state, "vic-evil").is_empty(),
            "{kind:?} left files"
        );
        assert!(
            find_named(dir.path(), "vic-evil").is_empty(),
            "{kind:?} escaped"
        );
    }
    for outside in ["/tmp/vic-evil-x", "/etc/vic-evil", "/tmp/vic-evil-escape"] {
        assert!(!Path::new(outside).exists(), "{outside} was written");
    }
    assert_eq!(images(&ep).trim(), "");
    assert!(image_store_entries(&state).is_empty());
}

#[test]
fn kill_9_in_the_middle_of_a_pull_leaves_no_partial_layer() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let pushed = push_busybox(&reg, "busybox", "latest");
    let state = dir.path().join("state");
    let args = ["--insecure-registry", reg.addr()];
    // The layer's disk is made, then the import stalls: kill the endpoint there.
    let ep = Endpoint::start_with_env(
        &state,
        &args,
        &[("VIC_SIM_FAULTS", "ImportLayer=stall:60000:1")],
    );
    let host = ep.host();
    let reference = pushed.reference.clone();
    let puller = std::thread::spawn(move || docker(&host, &["pull", &reference]));
    wait_until(Duration::from_secs(60), "a partial layer folder", || {
        image_store_entries(&state).into_iter().find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
    });
    ep.kill9();
    let o = puller.join().unwrap();
    assert!(!o.status.success());

    let ep = Endpoint::start(&state, &args);
    assert_eq!(images(&ep).trim(), "");
    assert!(
        image_store_entries(&state).is_empty(),
        "left behind: {:?}",
        image_store_entries(&state)
    );
    let o = docker(&ep.host(), &["pull", &pushed.reference]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = docker(
        &ep.host(),
        &["image", "inspect", &pushed.reference, "--format", "{{.Id}}"],
    );
    assert_eq!(stdout(&id).trim(), pushed.config_digest);
}
