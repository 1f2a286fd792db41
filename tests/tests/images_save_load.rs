//! `docker save` and `docker load` through the real docker CLI: images move in and out
//! without a registry and keep their ids.
#![allow(clippy::unwrap_used)]

use vic_tests::fixtures::{image_tar_for_load, layered_image, push_layered};
use vic_tests::registry::TestRegistry;
use vic_tests::{Endpoint, docker, ok, stderr, stdout};

#[test]
fn save_rmi_load_gives_back_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("registry"), None);
    let pushed = push_layered(&reg, "layered", "v1");
    let ep = Endpoint::start(
        &dir.path().join("state"),
        &["--insecure-registry", reg.addr()],
    );
    let h = ep.host();
    ok(&docker(&h, &["pull", &pushed.reference]), "pull");
    let layers = |r: &str| {
        ok(
            &docker(
                &h,
                &[
                    "image",
                    "inspect",
                    r,
                    "--format",
                    "{{.Id}} {{json .RootFS.Layers}}",
                ],
            ),
            "inspect",
        )
    };
    let before = layers(&pushed.reference);
    assert!(before.starts_with(&pushed.config_digest), "{before}");

    let archive = dir.path().join("layered.tar");
    ok(
        &docker(
            &h,
            &["save", "-o", archive.to_str().unwrap(), &pushed.reference],
        ),
        "save",
    );
    ok(&docker(&h, &["rmi", &pushed.reference]), "rmi");
    assert_eq!(ok(&docker(&h, &["images", "-q"]), "images").trim(), "");

    let out = ok(
        &docker(&h, &["load", "-i", archive.to_str().unwrap()]),
        "load",
    );
    assert!(
        out.contains(&format!("Loaded image: {}", pushed.reference)),
        "{out}"
    );
    assert_eq!(layers(&pushed.reference), before);
}

#[test]
fn load_an_archive_made_elsewhere_and_refuse_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ep = Endpoint::start(&state, &[]);
    let h = ep.host();
    let image = layered_image();
    let archive = dir.path().join("in.tar");
    std::fs::write(&archive, image_tar_for_load(&image, &["made/elsewhere:1"])).unwrap();
    let out = ok(
        &docker(&h, &["load", "-i", archive.to_str().unwrap()]),
        "load",
    );
    assert!(out.contains("Loaded image: made/elsewhere:1"), "{out}");
    let id = ok(
        &docker(
            &h,
            &[
                "image",
                "inspect",
                "made/elsewhere:1",
                "--format",
                "{{.Id}}",
            ],
        ),
        "inspect",
    );
    assert_eq!(id.trim(), image.config_digest);
    ok(&docker(&h, &["rmi", "made/elsewhere:1"]), "rmi");

    // Flip one byte inside a layer tar: its digest no longer matches the config.
    let mut bytes = image_tar_for_load(&image, &["made/corrupt:1"]);
    let needle = b"bin/busybox";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap();
    bytes[at + 600] ^= 0xff;
    std::fs::write(&archive, &bytes).unwrap();
    let o = docker(&h, &["load", "-i", archive.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("digest"), "{}", stderr(&o));
    assert_eq!(ok(&docker(&h, &["images", "-q"]), "images").trim(), "");
    let vic = state.join("datastores/LocalDS_0/VIC");
    for vch in std::fs::read_dir(vic).unwrap() {
        let left: Vec<_> = std::fs::read_dir(vch.unwrap().path().join("images"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
