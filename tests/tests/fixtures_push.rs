//! The image fixtures (`vic_tests::fixtures`) against Debian's docker-registry: every
//! fixture pushes, the registry hands back the same manifests and blobs under the same
//! digests, builds are byte-identical from one to the next, and the `layered` image's
//! layers really produce its documented final tree.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use serde_json::Value;
use vic_tests::fixtures::{self, Entry, EvilKind, Image, Node, Pushed, sha256_digest};
use vic_tests::registry::{Dest, TestRegistry, request};

/// `GET /v2/REPO/manifests/REFERENCE` answers the pushed manifest, byte for byte, with
/// the pushed digest and media type; the config blob hashes to the config digest (the
/// image ID) and lists the layers' diff IDs; each layer blob has the pushed size.
fn check_pushed(reg: &TestRegistry, p: &Pushed, check_diff_ids: bool) {
    let reference = if p.tag.is_empty() {
        p.manifest_digest.as_str()
    } else {
        p.tag.as_str()
    };
    let r = reg.get(
        &format!("/v2/{}/manifests/{reference}", p.repo),
        &[&p.manifest_media_type],
    );
    assert_eq!(r.status, 200, "{}: {}", p.reference, r.text());
    assert_eq!(
        r.header("docker-content-digest"),
        Some(p.manifest_digest.as_str())
    );
    assert_eq!(
        r.header("content-type"),
        Some(p.manifest_media_type.as_str())
    );
    assert_eq!(sha256_digest(&r.body), p.manifest_digest);
    assert_eq!(r.body, p.manifest);

    let m: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], p.manifest_media_type.as_str());
    assert_eq!(m["config"]["digest"], p.config_digest.as_str());
    assert_eq!(m["config"]["size"], p.config.len() as u64);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), p.layers.len());
    for (d, l) in layers.iter().zip(&p.layers) {
        assert_eq!(d["digest"], l.digest.as_str());
        assert_eq!(d["size"], l.size);
        assert_eq!(d["mediaType"], l.media_type.as_str());
    }

    let c = reg.get(&format!("/v2/{}/blobs/{}", p.repo, p.config_digest), &[]);
    assert_eq!(c.status, 200, "config of {}: {}", p.reference, c.text());
    assert_eq!(sha256_digest(&c.body), p.config_digest);
    assert_eq!(p.image_id(), p.config_digest);
    assert_eq!(c.body, p.config);
    let config: Value = serde_json::from_slice(&c.body).unwrap();
    let want_platform: Vec<&str> = p.platform.split('/').collect();
    assert_eq!(config["os"], want_platform[0]);
    assert_eq!(config["architecture"], want_platform[1]);
    assert_eq!(config["created"], fixtures::CREATED);
    let ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), p.layers.len());
    if check_diff_ids {
        let want: Vec<&str> = p.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(ids, want);
    }

    for l in &p.layers {
        let h = reg.head(&format!("/v2/{}/blobs/{}", p.repo, l.digest), &[]);
        assert_eq!(h.status, 200, "HEAD {}", l.digest);
        assert_eq!(
            h.header("content-length"),
            Some(l.size.to_string().as_str())
        );
        assert_eq!(h.header("docker-content-digest"), Some(l.digest.as_str()));
    }
}

/// Every image builder, built twice: the same bytes both times.
#[test]
fn builds_are_byte_identical() {
    let builds = || -> Vec<Image> {
        let mut v = vec![
            fixtures::busybox_image(),
            fixtures::layered_image(),
            fixtures::big_image(2),
            fixtures::bad_diff_id_image(),
        ];
        v.extend(EvilKind::ALL.map(fixtures::evil_image));
        v.extend(fixtures::multiarch_index().images);
        v.extend(fixtures::oci_index().images);
        v
    };
    let (a, b) = (builds(), builds());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.manifest_digest, y.manifest_digest);
        assert!(x == y, "two builds of {} differ", x.manifest_digest);
        assert_eq!(sha256_digest(&x.config), x.config_digest);
        assert_eq!(sha256_digest(&x.manifest), x.manifest_digest);
        for l in &x.layers {
            assert_eq!(sha256_digest(&l.blob), l.digest);
            assert_eq!(sha256_digest(&l.tar), l.diff_id);
        }
    }
    assert_eq!(fixtures::multiarch_index(), fixtures::multiarch_index());
    assert_eq!(fixtures::oci_index(), fixtures::oci_index());
    assert_eq!(
        fixtures::image_tar_for_load(&a[1], &["layered:latest"]),
        fixtures::image_tar_for_load(&b[1], &["layered:latest"])
    );
}

/// Layer headers are deterministic: GNU tar, mtime 0, owner 0:0 without names; gzip
/// without a name or time; the blob unpacks to the tar.
#[test]
fn layers_have_fixed_headers() {
    let image = fixtures::layered_image();
    for l in &image.layers {
        assert_eq!(&l.blob[..3], &[0x1f, 0x8b, 8], "gzip magic");
        assert_eq!(l.blob[3] & 0x08, 0, "gzip FNAME set");
        assert_eq!(&l.blob[4..8], &[0, 0, 0, 0], "gzip mtime");
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&l.blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(tar, l.tar);
        let mut a = tar::Archive::new(&l.tar[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert!(h.as_gnu().is_some(), "not a GNU header");
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        }
    }
    let busybox = &image.layers[0];
    let names = tar_entries(&busybox.tar);
    assert_eq!(names[0].path, "bin");
    assert_eq!(names[0].node, Node::Dir);
    assert!(names.iter().any(|e| e.path == "bin/sh"
        && e.node == Node::Symlink("busybox".into())
        && e.mode == 0o777));
    assert!(
        names
            .iter()
            .any(|e| e.path == "bin/busybox" && e.mode == 0o755)
    );
    assert_eq!(names.len(), fixtures::busybox_applets().len() + 2);
}

/// The entries of a tar, as written (hard links stay hard links).
fn tar_entries(tar: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let path = path.trim_end_matches('/').to_string();
        let mode = e.header().mode().unwrap();
        let link = e
            .link_name_bytes()
            .map(|b| String::from_utf8(b.into_owned()).unwrap());
        let node = match e.header().entry_type() {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Regular => {
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                Node::File(d)
            }
            tar::EntryType::Symlink => Node::Symlink(link.unwrap()),
            tar::EntryType::Link => Node::Hardlink(link.unwrap()),
            t => panic!("unexpected entry type {t:?}"),
        };
        out.push(Entry { path, mode, node });
    }
    out
}

/// Applies layers the way the OCI image spec says (whiteouts, opaque dirs, hard links
/// copied from their targets), in memory.
fn apply_layers(layers: &[fixtures::Layer]) -> Vec<Entry> {
    let mut tree: BTreeMap<String, Entry> = BTreeMap::new();
    for l in layers {
        let mut added: BTreeSet<String> = BTreeSet::new();
        for e in tar_entries(&l.tar) {
            let (dir, base) = match e.path.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), e.path.clone()),
            };
            if base == ".wh..wh..opq" {
                tree.retain(|k, _| !k.starts_with(&dir) || added.contains(k));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                let under = format!("{gone}/");
                tree.retain(|k, _| *k != gone && !k.starts_with(&under));
                continue;
            }
            let e = match e.node {
                Node::Hardlink(t) => Entry {
                    node: tree[&t].node.clone(),
                    ..e
                },
                _ => e,
            };
            if e.node != Node::Dir {
                let under = format!("{}/", e.path);
                tree.retain(|k, _| !k.starts_with(&under));
            }
            added.insert(e.path.clone());
            tree.insert(e.path.clone(), e);
        }
    }
    let mut v: Vec<Entry> = tree.into_values().collect();
    fixtures::sort_entries(&mut v);
    v
}

#[test]
fn layered_layers_give_the_expected_tree() {
    let image = fixtures::layered_image();
    assert_eq!(image.layers.len(), 4);
    let got = apply_layers(&image.layers);
    let want = fixtures::layered_expected_tree();
    let paths = |v: &[Entry]| v.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
    assert_eq!(paths(&got), paths(&want));
    assert!(
        got == want,
        "the layered tree differs from layered_expected_tree()"
    );
    // Layer 1 really holds a hard link, and layer 2 the whiteout and opaque markers.
    let l1 = tar_entries(&image.layers[1].tar);
    assert!(
        l1.iter()
            .any(|e| e.path == "data/link" && e.node == Node::Hardlink("data/orig".into()))
    );
    let l2: Vec<String> = tar_entries(&image.layers[2].tar)
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(l2.contains(&"etc/.wh.gone".to_string()));
    assert!(l2.contains(&"dir/.wh..wh..opq".to_string()));
}

#[test]
fn push_single_platform_images() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("reg"), None);

    let bb = fixtures::push_busybox(&reg, "library/busybox", "latest");
    assert_eq!(
        bb.reference,
        format!("{}/library/busybox:latest", reg.addr())
    );
    assert_eq!(bb.layers.len(), 1);
    assert_eq!(bb.platform, "linux/amd64");
    check_pushed(&reg, &bb, true);
    let config: Value = serde_json::from_slice(&bb.config).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([fixtures::PATH_ENV])
    );

    // Pushing again (blobs already there) and from a plain address gives the same image.
    let again = fixtures::push_busybox(reg.addr(), "library/busybox", "again");
    assert_eq!(again.manifest_digest, bb.manifest_digest);
    check_pushed(&reg, &again, true);

    let layered = fixtures::push_layered(&reg, "layered", "v1");
    assert_eq!(layered.layers.len(), 4);
    assert_eq!(layered.layers[0], bb.layers[0]);
    check_pushed(&reg, &layered, true);

    let big = fixtures::push_big(&reg, "big", "latest", 4);
    check_pushed(&reg, &big, true);
    let top = &big.layers[1];
    assert!(top.tar_size > 4 << 20);
    assert!(top.size >= top.tar_size, "the big layer compressed");
}

#[test]
fn push_multi_platform_lists() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("reg"), None);

    for (list, want_type, want_member_type) in [
        (
            fixtures::push_multiarch(&reg, "multiarch", "latest"),
            fixtures::DOCKER_MANIFEST_LIST,
            fixtures::DOCKER_MANIFEST,
        ),
        (
            fixtures::push_oci(&reg, "oci", "latest"),
            fixtures::OCI_INDEX,
            fixtures::OCI_MANIFEST,
        ),
    ] {
        assert_eq!(list.media_type, want_type);
        let r = reg.get(
            &format!("/v2/{}/manifests/latest", list.repo),
            &fixtures::ALL_MANIFEST_TYPES,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("docker-content-digest"),
            Some(list.digest.as_str())
        );
        assert_eq!(r.header("content-type"), Some(want_type));
        assert_eq!(sha256_digest(&r.body), list.digest);
        assert_eq!(r.body, list.bytes);

        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["mediaType"], want_type);
        let entries = v["manifests"].as_array().unwrap();
        let platforms: BTreeSet<String> = entries
            .iter()
            .map(|m| {
                let p = &m["platform"];
                let mut s = format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                );
                if let Some(var) = p["variant"].as_str() {
                    s.push('/');
                    s.push_str(var);
                }
                s
            })
            .collect();
        assert_eq!(
            platforms,
            BTreeSet::from(["linux/amd64".to_string(), "linux/arm64/v8".to_string()])
        );
        for m in entries {
            assert_eq!(m["mediaType"], want_member_type);
            let member = list
                .images
                .iter()
                .find(|p| p.manifest_digest == m["digest"].as_str().unwrap())
                .unwrap();
            assert_eq!(m["size"], member.manifest.len() as u64);
            check_pushed(&reg, member, true);
        }

        let amd64 = list.amd64();
        let arm64 = list.arm64();
        assert_eq!(amd64.layers.len(), 1);
        assert_eq!(arm64.layers.len(), 1);
        let arm_config: Value = serde_json::from_slice(&arm64.config).unwrap();
        assert_eq!(arm_config["architecture"], "arm64");
        assert_eq!(arm_config["variant"], "v8");
        assert!(amd64.reference.contains('@'));
    }

    // The OCI and Docker amd64 members share their blobs, not their manifests.
    let docker = fixtures::multiarch_index();
    let oci = fixtures::oci_index();
    assert_eq!(docker.images[0].config_digest, oci.images[0].config_digest);
    assert_eq!(docker.images[0].layers, oci.images[0].layers);
    assert_ne!(
        docker.images[0].manifest_digest,
        oci.images[0].manifest_digest
    );
}

#[test]
fn push_negative_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("reg"), None);

    for kind in EvilKind::ALL {
        let p = fixtures::push_evil(&reg, "evil", kind.name(), kind);
        check_pushed(&reg, &p, true);
        let r = reg.get(&format!("/v2/evil/blobs/{}", p.layers[1].digest), &[]);
        assert_eq!(r.status, 200);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut tar)
            .unwrap();
        let got = tar_entries(&tar);
        let mut want = kind.entries();
        fixtures::sort_entries(&mut want);
        assert_eq!(got, want, "{kind:?}");
    }

    let bad_id = fixtures::push_bad_diff_id(&reg, "bad", "diff-id");
    check_pushed(&reg, &bad_id, false);
    let config: Value = serde_json::from_slice(&bad_id.config).unwrap();
    assert_ne!(
        config["rootfs"]["diff_ids"][1],
        bad_id.layers[1].diff_id.as_str()
    );
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        bad_id.layers[0].diff_id.as_str()
    );

    let bad = fixtures::push_bad_blob(&reg, "bad", "blob");
    assert_ne!(bad.layer_digest, bad.served_digest);
    assert_eq!(bad.pushed.layers[1].digest, bad.layer_digest);
    let r = reg.get(&format!("/v2/bad/blobs/{}", bad.layer_digest), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(bad.layer_digest.as_str())
    );
    assert_eq!(r.body.len() as u64, bad.pushed.layers[1].size);
    assert_eq!(sha256_digest(&r.body), bad.served_digest);
    // Still a valid gzip tar: only the digest check can catch it.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert!(tar_entries(&tar).iter().any(|e| e.path == "bad/payload"));
    // Again, in another repository: the stored blob is already swapped.
    let again = fixtures::push_bad_blob(&reg, "bad2", "blob");
    assert_eq!(again.layer_digest, bad.layer_digest);
    assert_eq!(again.served_digest, bad.served_digest);
    // The manifest is untouched.
    let m = reg.get("/v2/bad/manifests/blob", &[fixtures::DOCKER_MANIFEST]);
    assert_eq!(
        m.header("docker-content-digest"),
        Some(bad.pushed.manifest_digest.as_str())
    );
}

#[test]
fn push_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(&dir.path().join("reg"), Some(("tester", "s3cret")));
    assert_eq!(reg.credentials(), Some(("tester", "s3cret")));

    let anon = request(&Dest::plain(reg.addr()), "GET", "/v2/", &[]);
    assert_eq!(anon.status, 401);
    let wrong = request(
        &Dest::with_auth(reg.addr(), "tester", "nope"),
        "GET",
        "/v2/",
        &[],
    );
    assert_eq!(wrong.status, 401);

    let p = fixtures::push_busybox(&reg, "library/busybox", "latest");
    check_pushed(&reg, &p, true);
    let anon = request(
        &Dest::plain(reg.addr()),
        "GET",
        "/v2/library/busybox/manifests/latest",
        &[fixtures::DOCKER_MANIFEST],
    );
    assert_eq!(anon.status, 401);
    reg.stop();
}

#[test]
fn docker_save_archive() {
    let image = fixtures::layered_image();
    let tar = fixtures::image_tar_for_load(&image, &["vic/layered:v1", "layered:latest"]);
    let files: BTreeMap<String, Entry> = tar_entries(&tar)
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
    let file = |name: &str| match &files[name].node {
        Node::File(d) => d.clone(),
        n => panic!("{name} is {n:?}"),
    };
    let manifest: Value = serde_json::from_slice(&file("manifest.json")).unwrap();
    let m = &manifest.as_array().unwrap()[0];
    let config_name = m["Config"].as_str().unwrap();
    assert_eq!(
        config_name,
        format!("{}.json", fixtures::digest_hex(&image.config_digest))
    );
    assert_eq!(sha256_digest(&file(config_name)), image.config_digest);
    assert_eq!(
        m["RepoTags"],
        serde_json::json!(["vic/layered:v1", "layered:latest"])
    );
    let layers: Vec<&str> = m["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), image.layers.len());
    for (path, l) in layers.iter().zip(&image.layers) {
        assert_eq!(sha256_digest(&file(path)), l.diff_id);
    }
    let repos: Value = serde_json::from_slice(&file("repositories")).unwrap();
    let top = fixtures::digest_hex(&image.layers[3].diff_id);
    assert_eq!(repos["vic/layered"]["v1"], top);
    assert_eq!(repos["layered"]["latest"], top);
}
