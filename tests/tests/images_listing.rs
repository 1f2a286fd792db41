//! `docker images` filters, `docker history` and `docker image prune` through the CLI.
#![allow(clippy::unwrap_used)]

use vic_tests::fixtures::{push_busybox, push_layered};
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, docker, ok, stderr};

#[test]
fn filters_history_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let bb = push_busybox(&reg, "busybox", "latest");
    let layered = push_layered(&reg, "layered", "v1");
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &bb.reference]), "pull busybox");
    ok(&docker(&h, &["pull", &layered.reference]), "pull layered");
    let names = |args: &[&str]| {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = ok(&docker(&h, &a), "images")
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let b = format!("{}/busybox:latest", reg.addr());
    let l = format!("{}/layered:v1", reg.addr());
    assert_eq!(names(&[]), vec![b.clone(), l.clone()]);
    assert_eq!(
        names(&["--filter", &format!("reference={}/bus*", reg.addr())]),
        vec![b.clone()]
    );
    assert_eq!(names(&["--filter", "dangling=true"]), Vec::<String>::new());
    let bad = docker(&h, &["images", "--filter", "colour=blue"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("invalid filter"), "{}", stderr(&bad));

    // History: one line per layer-making step, newest first, the image id on top.
    let hist = ok(
        &docker(
            &h,
            &["history", "--no-trunc", "--format", "{{.ID}}|{{.Size}}", &l],
        ),
        "history",
    );
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(lines.len(), layered.layers.len(), "{hist}");
    assert!(lines[0].starts_with(&layered.config_digest), "{hist}");

    // Untag busybox by removing only its name through a second tag, then prune.
    ok(&docker(&h, &["tag", &b, "keep:me"]), "tag");
    ok(&docker(&h, &["rmi", &b]), "untag");
    let mut want = vec!["keep:me".to_string(), l.clone()];
    want.sort();
    assert_eq!(names(&[]), want);
    let pruned = ok(&docker(&h, &["image", "prune", "-a", "-f"]), "prune -a");
    assert!(pruned.contains(&bb.config_digest), "{pruned}");
    assert!(pruned.contains(&layered.config_digest), "{pruned}");
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(names(&[]), Vec::<String>::new());
}
