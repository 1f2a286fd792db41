//! The endpoint run by an ordinary user (uid 65534 here): container guests run in user
//! namespaces, `docker run --rm busybox echo hello` prints `hello`. Needs root to switch
//! to that user (CI runs as root); skipped otherwise.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use vic_tests::fixtures::push_busybox;
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, docker, ok, stderr};

const NOBODY: (u32, u32) = (65534, 65534);

#[test]
fn docker_run_works_for_a_non_root_endpoint() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching to another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    // A folder of that user's own, reachable through the test's folder.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("user");
    std::fs::create_dir(&home).unwrap();
    let c = std::ffi::CString::new(home.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), NOBODY.0, NOBODY.1) }, 0);
    let state = home.join("state");
    let ep = Endpoint::start_as(
        &state,
        &["--insecure-registry", reg.addr()],
        &[("HOME", home.to_str().unwrap())],
        Some(NOBODY),
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &bb.reference]), "pull as non-root");
    let o = docker(&h, &["run", "--rm", &bb.reference, "echo", "hello"]);
    assert_eq!(
        ok(&o, "run --rm as non-root"),
        "hello\n",
        "{}\n{}",
        stderr(&o),
        ep.log_text()
    );
    // Inside, the process is root of its user namespace; the files it writes belong to
    // the user outside.
    let o = docker(
        &h,
        &[
            "run",
            "--name",
            "writer",
            &bb.reference,
            "sh",
            "-c",
            "id -u; echo x > /made",
        ],
    );
    assert_eq!(ok(&o, "run writer"), "0\n");
    let id = ok(
        &docker(&h, &["inspect", "writer", "--format", "{{.Id}}"]),
        "inspect",
    );
    let made = walk_find(&state.join("datastores/LocalDS_0").join(id.trim()), "made")
        .expect("the container's file in its read-write layer");
    let meta = std::fs::metadata(&made).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), NOBODY);
    ok(&docker(&h, &["rm", "writer"]), "rm");
    // Only root exists inside: another user is a clear error, not a cryptic one.
    let o = docker(
        &h,
        &[
            "run",
            "--name",
            "baduser",
            "-u",
            "65534:65534",
            &bb.reference,
            "id",
        ],
    );
    assert_eq!(o.status.code(), Some(128), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not map"), "{}", stderr(&o));
    let err = ok(
        &docker(&h, &["inspect", "baduser", "--format", "{{.State.Error}}"]),
        "inspect",
    );
    assert!(err.contains("does not map"), "{err}");
    ok(&docker(&h, &["rm", "baduser"]), "rm");
}

fn walk_find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_file() && e.file_name() == name {
            return Some(p);
        }
        if ft.is_dir()
            && let Some(f) = walk_find(&p, name)
        {
            return Some(f);
        }
    }
    None
}
