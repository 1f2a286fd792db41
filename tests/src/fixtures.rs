//! Deterministic test images, built in memory from Debian's `busybox-static` and pushed to
//! a registry over plain HTTP (see `tests/fixtures/README.md`).
//!
//! Every blob is byte-identical from run to run for the same busybox binary: layer tars
//! are GNU-format with mtime 0, owner 0:0, empty user and group names, explicit modes and
//! entries in name order (directory by directory, as `tar --sort=name`; hard links after
//! the files they link to); gzip has no name and no time; config, manifest and index JSON
//! are compact with a fixed key order and `created` is `1970-01-01T00:00:00Z`.
//!
//! The images, each with a builder (`*_image`, `*_index`) and a pusher (`push_*`):
//!
//! | builder | content |
//! |---|---|
//! | [`busybox_image`] | one layer: `bin/busybox` and `bin/<applet> -> busybox`; `Cmd ["sh"]`, `Env PATH` |
//! | [`layered_image`] | busybox plus [`layered_layers`]; the result is [`layered_expected_tree`] |
//! | [`multiarch_index`] | Docker manifest list: linux/amd64 = busybox, linux/arm64/v8 = [`arm64_image`] |
//! | [`oci_index`] | the same two images with OCI media types, under an OCI image index |
//! | [`big_image`] | busybox plus one stored (uncompressed) layer with `big/random` of N MiB from a seeded xorshift |
//! | [`evil_image`] | busybox plus one layer that tries to write outside the rootfs ([`EvilKind`]) |
//! | [`bad_diff_id_image`] | busybox plus a layer whose `diff_id` in the config is wrong |
//!
//! [`push_bad_blob`] makes a registry serve a layer whose bytes do not match its digest:
//! the registry checks digests on upload, not on download, so it pushes a good layer and
//! then overwrites the stored blob file (same size, still a valid gzip tar) in the
//! [`TestRegistry`]'s storage folder. No fake registry is needed.
//!
//! [`image_tar_for_load`] writes any [`Image`] as a `docker save` archive for `docker load`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use serde::Serialize;

use crate::registry::{Dest, TestRegistry, block_on, client};

/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest media type above, for an `Accept` header.
pub const ALL_MANIFEST_TYPES: [&str; 4] = [
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

/// The `PATH` of the images' `Env`.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The `created` time of every config and history entry.
pub const CREATED: &str = "1970-01-01T00:00:00Z";
/// Size of [`big_image`]'s data file when the tests do not say, in MiB.
pub const DEFAULT_BIG_MIB: usize = 64;
/// The gzip level of ordinary layers (the big and bad-blob layers are stored, level 0).
pub const GZIP_LEVEL: u32 = 6;

// --- digests --------------------------------------------------------------------------

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The hex part of `sha256:<hex>`.
pub fn digest_hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest:?} is not a sha256 digest"))
}

// --- tar entries ----------------------------------------------------------------------

/// What a tar entry (or a file of a rootfs) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file with this content.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A tar hard link to this (archive) path; never in a final tree, where it is a file.
    Hardlink(String),
}

/// One tar entry, or one path of an expected rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path, without a leading `./` or a trailing `/` (evil entries may have `..` or
    /// a leading `/`).
    pub path: String,
    /// Permission bits (e.g. `0o755`).
    pub mode: u32,
    /// What it is.
    pub node: Node,
}

impl Entry {
    /// A directory.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            node: Node::Dir,
        }
    }

    /// A regular file.
    pub fn file(path: &str, mode: u32, content: &[u8]) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            node: Node::File(content.to_vec()),
        }
    }

    /// A symbolic link (mode 0777).
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_string(),
            mode: 0o777,
            node: Node::Symlink(target.to_string()),
        }
    }

    /// A tar hard link to `target`, an earlier entry's path (mode as the target's).
    pub fn hardlink(path: &str, mode: u32, target: &str) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            node: Node::Hardlink(target.to_string()),
        }
    }
}

/// Sorts entries as `tar --sort=name` would walk a tree (by path components), with hard
/// links after everything else so that their targets come first.
pub fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        let ka = (matches!(a.node, Node::Hardlink(_)), a.path.split('/'));
        let kb = (matches!(b.node, Node::Hardlink(_)), b.path.split('/'));
        ka.0.cmp(&kb.0).then_with(|| ka.1.cmp(kb.1))
    });
}

/// A GNU tar of `entries` (sorted with [`sort_entries`] first), deterministic: mtime 0,
/// uid/gid 0, no user or group names. Paths are written as given, without checks, so
/// evil entries (`../x`, `/x`) can be made; each must fit the 100-byte name field.
pub fn tar_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sort_entries(&mut sorted);
    let mut seen = BTreeSet::new();
    for e in &sorted {
        assert!(
            seen.insert(e.path.as_str()),
            "two tar entries for {}",
            e.path
        );
    }
    let mut b = tar::Builder::new(Vec::new());
    for e in &sorted {
        let mut h = tar::Header::new_gnu();
        let name = match e.node {
            Node::Dir => format!("{}/", e.path),
            _ => e.path.clone(),
        };
        let slot = &mut h.as_old_mut().name;
        assert!(
            name.len() < slot.len(),
            "tar entry name {name:?} is too long for this writer"
        );
        slot[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let data: &[u8] = match &e.node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Node::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                d
            }
            Node::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name_literal(t).expect("symlink target fits");
                &[]
            }
            Node::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name_literal(t).expect("hard link target fits");
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).expect("write a tar entry to memory");
    }
    b.into_inner().expect("finish a tar in memory")
}

/// gzip of `data` at `level` (0 = stored), with no file name and mtime 0.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(level));
    enc.write_all(data).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

// --- layers and images ----------------------------------------------------------------

/// One layer: its tar, its gzip blob and their digests.
#[derive(Clone, PartialEq, Eq)]
pub struct Layer {
    /// The `created_by` of its config history entry.
    pub comment: String,
    /// The uncompressed tar (what `diff_id` hashes; what `docker save` holds).
    pub tar: Vec<u8>,
    /// The gzip blob (what `digest` hashes; what a registry holds).
    pub blob: Vec<u8>,
    /// `sha256` of `blob`.
    pub digest: String,
    /// `sha256` of `tar`.
    pub diff_id: String,
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("comment", &self.comment)
            .field("digest", &self.digest)
            .field("diff_id", &self.diff_id)
            .field("size", &self.blob.len())
            .field("tar_size", &self.tar.len())
            .finish()
    }
}

impl Layer {
    /// A layer of `entries`, gzipped at `level`.
    pub fn from_entries(comment: &str, entries: &[Entry], level: u32) -> Layer {
        Layer::from_tar(comment, tar_bytes(entries), level)
    }

    /// A layer of an existing tar, gzipped at `level`.
    pub fn from_tar(comment: &str, tar: Vec<u8>, level: u32) -> Layer {
        let blob = gzip(&tar, level);
        Layer {
            comment: comment.to_string(),
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(&tar),
            tar,
            blob,
        }
    }
}

/// Docker (schema 2) or OCI media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/vnd.docker.*`.
    Docker,
    /// `application/vnd.oci.*`.
    Oci,
}

impl Format {
    /// The image manifest media type.
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_MANIFEST,
            Format::Oci => OCI_MANIFEST,
        }
    }

    /// The manifest list / index media type.
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_MANIFEST_LIST,
            Format::Oci => OCI_INDEX,
        }
    }

    /// The config media type.
    pub fn config_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_CONFIG,
            Format::Oci => OCI_CONFIG,
        }
    }

    /// The gzip layer media type.
    pub fn layer_type(self) -> &'static str {
        match self {
            Format::Docker => DOCKER_LAYER,
            Format::Oci => OCI_LAYER,
        }
    }
}

/// An image platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: &'static str,
    /// `amd64`, `arm64`.
    pub architecture: &'static str,
    /// `v8` for arm64.
    pub variant: Option<&'static str>,
}

impl Platform {
    /// linux/amd64, the busybox binary's.
    pub const AMD64: Platform = Platform {
        os: "linux",
        architecture: "amd64",
        variant: None,
    };
    /// linux/arm64/v8.
    pub const ARM64: Platform = Platform {
        os: "linux",
        architecture: "arm64",
        variant: Some("v8"),
    };
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A built image: layers, config and manifest, with their digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Docker or OCI media types.
    pub format: Format,
    /// The config's platform.
    pub platform: Platform,
    /// Bottom first.
    pub layers: Vec<Layer>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// `sha256` of `config`: the image ID.
    pub config_digest: String,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// `sha256` of `manifest`.
    pub manifest_digest: String,
}

#[derive(Serialize)]
struct PlatformJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

impl<'a> From<&'a Platform> for PlatformJson<'a> {
    fn from(p: &'a Platform) -> Self {
        PlatformJson {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant,
        }
    }
}

#[derive(Serialize)]
struct DescriptorJson<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformJson<'a>>,
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: DescriptorJson<'a>,
    layers: Vec<DescriptorJson<'a>>,
}

#[derive(Serialize)]
struct IndexJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<DescriptorJson<'a>>,
}

#[derive(Serialize)]
struct RunConfigJson<'a> {
    #[serde(rename = "Env")]
    env: Vec<&'a str>,
    #[serde(rename = "Cmd")]
    cmd: Vec<&'a str>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    created: &'a str,
    created_by: &'a str,
}

#[derive(Serialize)]
struct RootfsJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: RunConfigJson<'a>,
    created: &'a str,
    history: Vec<HistoryJson<'a>>,
    rootfs: RootfsJson<'a>,
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize fixture JSON")
}

impl Image {
    /// An image of `layers` for `platform`, running `cmd` with `Env [PATH]`.
    pub fn new(format: Format, platform: Platform, layers: Vec<Layer>, cmd: &[&str]) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
        Image::with_diff_ids(format, platform, layers, cmd, &diff_ids)
    }

    /// As [`Image::new`], with the config's `rootfs.diff_ids` given (wrong ones, for
    /// negative tests).
    pub fn with_diff_ids(
        format: Format,
        platform: Platform,
        layers: Vec<Layer>,
        cmd: &[&str],
        diff_ids: &[String],
    ) -> Image {
        let config = to_json(&ConfigJson {
            architecture: platform.architecture,
            os: platform.os,
            variant: platform.variant,
            config: RunConfigJson {
                env: vec![PATH_ENV],
                cmd: cmd.to_vec(),
            },
            created: CREATED,
            history: layers
                .iter()
                .map(|l| HistoryJson {
                    created: CREATED,
                    created_by: &l.comment,
                })
                .collect(),
            rootfs: RootfsJson {
                kind: "layers",
                diff_ids: diff_ids.iter().map(String::as_str).collect(),
            },
        });
        let config_digest = sha256_digest(&config);
        let manifest = to_json(&ManifestJson {
            schema_version: 2,
            media_type: format.manifest_type(),
            config: DescriptorJson {
                media_type: format.config_type(),
                size: config.len() as u64,
                digest: &config_digest,
                platform: None,
            },
            layers: layers
                .iter()
                .map(|l| DescriptorJson {
                    media_type: format.layer_type(),
                    size: l.blob.len() as u64,
                    digest: &l.digest,
                    platform: None,
                })
                .collect(),
        });
        let manifest_digest = sha256_digest(&manifest);
        Image {
            format,
            platform,
            layers,
            config,
            config_digest,
            manifest,
            manifest_digest,
        }
    }

    /// The layers' diff IDs, bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }
}

/// A manifest list (Docker) or image index (OCI) over images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Docker or OCI media types.
    pub format: Format,
    /// The images, in the list's order.
    pub images: Vec<Image>,
    /// The list / index JSON.
    pub bytes: Vec<u8>,
    /// `sha256` of `bytes`.
    pub digest: String,
}

impl Index {
    /// A list of `images`, each entry with the image's platform. The images must have
    /// `format` too.
    pub fn new(format: Format, images: Vec<Image>) -> Index {
        for i in &images {
            assert_eq!(i.format, format, "an index mixes Docker and OCI images");
        }
        let bytes = to_json(&IndexJson {
            schema_version: 2,
            media_type: format.index_type(),
            manifests: images
                .iter()
                .map(|i| DescriptorJson {
                    media_type: format.manifest_type(),
                    size: i.manifest.len() as u64,
                    digest: &i.manifest_digest,
                    platform: Some(PlatformJson::from(&i.platform)),
                })
                .collect(),
        });
        let digest = sha256_digest(&bytes);
        Index {
            format,
            images,
            bytes,
            digest,
        }
    }

    /// The image for `platform`, if listed.
    pub fn image(&self, platform: Platform) -> Option<&Image> {
        self.images.iter().find(|i| i.platform == platform)
    }
}

// --- busybox --------------------------------------------------------------------------

/// The busybox binary: `$BUSYBOX`, else `/bin/busybox` (Debian's `busybox-static`).
pub fn busybox_path() -> PathBuf {
    std::env::var_os("BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

fn busybox_bytes() -> Vec<u8> {
    let p = busybox_path();
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (apt-get install busybox-static, or tests/servers.sh install)",
            p.display()
        )
    })
}

/// The applet names of `busybox --list-full` (basenames, without `busybox` and
/// `linuxrc`), sorted: each is a `bin/<name> -> busybox` link in the busybox layer.
pub fn busybox_applets() -> Vec<String> {
    let out = Command::new(busybox_path())
        .arg("--list-full")
        .output()
        .expect("run busybox --list-full");
    assert!(out.status.success(), "busybox --list-full: {}", out.status);
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "busybox" && *n != "linuxrc")
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "busybox --list-full listed no applets");
    names.into_iter().collect()
}

/// The first line of busybox's usage text (`BusyBox v1.35.0 (Debian ...) multi-call
/// binary.`), without quotes or backslashes.
pub fn busybox_version() -> String {
    let out = Command::new(busybox_path()).output().expect("run busybox");
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .replace(['"', '\\'], "")
}

/// The busybox layer's entries: `bin/` (0755), `bin/busybox` (0755) and a symlink
/// `bin/<applet> -> busybox` per applet.
pub fn busybox_entries() -> Vec<Entry> {
    let mut v = vec![
        Entry::dir("bin", 0o755),
        Entry::file("bin/busybox", 0o755, &busybox_bytes()),
    ];
    for a in busybox_applets() {
        v.push(Entry::symlink(&format!("bin/{a}"), "busybox"));
    }
    v
}

/// The busybox layer.
pub fn busybox_layer() -> Layer {
    Layer::from_entries(
        &format!("vic-tests fixtures: busybox layer ({})", busybox_version()),
        &busybox_entries(),
        GZIP_LEVEL,
    )
}

/// The `busybox` image in `format`: the busybox layer, `Cmd ["sh"]`, linux/amd64.
pub fn busybox_image_as(format: Format) -> Image {
    Image::new(format, Platform::AMD64, vec![busybox_layer()], &["sh"])
}

/// The `busybox` image (Docker media types).
pub fn busybox_image() -> Image {
    busybox_image_as(Format::Docker)
}

// --- layered --------------------------------------------------------------------------

/// The content of `data/orig` in layer 1 (and of `data/link` for good).
pub const LAYERED_ORIG: &[u8] = b"original\n";
/// The content of `data/orig` from layer 2 on.
pub const LAYERED_REPLACED: &[u8] = b"replaced\n";
/// The content of `data/script` (0644 in layer 1, 0755 from layer 3 on).
pub const LAYERED_SCRIPT: &[u8] = b"#!/bin/sh\necho layered\n";

/// The three layers that [`layered_image`] puts on the busybox layer:
///
/// 1. `etc/gone`, `dir/keep`, `data/orig` (`original\n`), `data/link` (a tar hard link
///    to `data/orig`), `data/script` (0644);
/// 2. `etc/.wh.gone` (whiteout), `dir/.wh..wh..opq` (opaque dir) and a new `dir/new`, a
///    new `data/orig` (`replaced\n`: breaks the hard link, `data/link` keeps
///    `original\n`);
/// 3. `data/script` again with mode 0755 (a mode change), and `data/sym -> orig`.
///
/// Directories are 0755, files 0644 unless said.
pub fn layered_layers() -> Vec<Layer> {
    let l1 = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/gone", 0o644, b"gone\n"),
        Entry::dir("dir", 0o755),
        Entry::file("dir/keep", 0o644, b"keep\n"),
        Entry::dir("data", 0o755),
        Entry::file("data/orig", 0o644, LAYERED_ORIG),
        Entry::hardlink("data/link", 0o644, "data/orig"),
        Entry::file("data/script", 0o644, LAYERED_SCRIPT),
    ];
    let l2 = vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/.wh.gone", 0o644, b""),
        Entry::dir("dir", 0o755),
        Entry::file("dir/.wh..wh..opq", 0o644, b""),
        Entry::file("dir/new", 0o644, b"new\n"),
        Entry::dir("data", 0o755),
        Entry::file("data/orig", 0o644, LAYERED_REPLACED),
    ];
    let l3 = vec![
        Entry::dir("data", 0o755),
        Entry::file("data/script", 0o755, LAYERED_SCRIPT),
        Entry::symlink("data/sym", "orig"),
    ];
    vec![
        Layer::from_entries(
            "vic-tests fixtures: layered 1: files and a hard link",
            &l1,
            GZIP_LEVEL,
        ),
        Layer::from_entries(
            "vic-tests fixtures: layered 2: whiteout, opaque dir, replaced link target",
            &l2,
            GZIP_LEVEL,
        ),
        Layer::from_entries(
            "vic-tests fixtures: layered 3: mode change and symlink",
            &l3,
            GZIP_LEVEL,
        ),
    ]
}

/// The `layered` image: busybox layer + [`layered_layers`], `Cmd ["sh"]`.
pub fn layered_image() -> Image {
    let mut layers = vec![busybox_layer()];
    layers.extend(layered_layers());
    Image::new(Format::Docker, Platform::AMD64, layers, &["sh"])
}

/// The `users` image: busybox layer + a layer with `etc/passwd` (root, `app` 1000:1000
/// with home `/home/app`, nobody) and `etc/group` (root, `app`, `staff` 50 with `app`
/// as a member, nogroup), `Cmd ["sh"]`: for user and group resolution in containers.
pub fn users_image() -> Image {
    let etc = vec![
        Entry::dir("etc", 0o755),
        Entry::file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        Entry::file(
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n",
        ),
    ];
    let layers = vec![
        busybox_layer(),
        Layer::from_entries(
            "vic-tests fixtures: users: etc/passwd and etc/group",
            &etc,
            GZIP_LEVEL,
        ),
    ];
    Image::new(Format::Docker, Platform::AMD64, layers, &["sh"])
}

/// The rootfs of [`layered_image`] once all four layers are applied, sorted as
/// [`sort_entries`] does (no hard links: `data/link` is a plain file):
///
/// - the busybox layer's `bin/`, `bin/busybox`, `bin/<applet> -> busybox`;
/// - `etc/` (empty: `etc/gone` is whited out);
/// - `dir/`, `dir/new` (`new\n`; `dir/keep` is gone with the opaque dir);
/// - `data/`, `data/link` (`original\n`, 0644), `data/orig` (`replaced\n`, 0644),
///   `data/script` (0755), `data/sym -> orig`.
pub fn layered_expected_tree() -> Vec<Entry> {
    let mut v = busybox_entries();
    v.extend([
        Entry::dir("etc", 0o755),
        Entry::dir("dir", 0o755),
        Entry::file("dir/new", 0o644, b"new\n"),
        Entry::dir("data", 0o755),
        Entry::file("data/link", 0o644, LAYERED_ORIG),
        Entry::file("data/orig", 0o644, LAYERED_REPLACED),
        Entry::file("data/script", 0o755, LAYERED_SCRIPT),
        Entry::symlink("data/sym", "orig"),
    ]);
    sort_entries(&mut v);
    v
}

// --- multiarch and OCI ----------------------------------------------------------------

/// The content of `arm64-marker` in [`arm64_image`].
pub const ARM64_MARKER: &[u8] = b"linux/arm64/v8 marker\n";

/// The arm64 member of the multi-platform images: an arm64/v8 config over one layer
/// holding `arm64-marker` (0644). Never run; only selected or refused.
pub fn arm64_image(format: Format) -> Image {
    let layer = Layer::from_entries(
        "vic-tests fixtures: arm64 marker",
        &[Entry::file("arm64-marker", 0o644, ARM64_MARKER)],
        GZIP_LEVEL,
    );
    Image::new(format, Platform::ARM64, vec![layer], &["sh"])
}

/// The `multiarch` manifest list: linux/amd64 = [`busybox_image`], linux/arm64/v8 =
/// [`arm64_image`].
pub fn multiarch_index() -> Index {
    Index::new(
        Format::Docker,
        vec![busybox_image(), arm64_image(Format::Docker)],
    )
}

/// The `oci` image index: the same two images as [`multiarch_index`] with OCI media
/// types (same layer and config blobs, other manifests).
pub fn oci_index() -> Index {
    Index::new(
        Format::Oci,
        vec![busybox_image_as(Format::Oci), arm64_image(Format::Oci)],
    )
}

// --- big ------------------------------------------------------------------------------

/// `len` bytes of a fixed xorshift64* stream: the same bytes every time, and
/// incompressible.
pub fn seeded_bytes(len: usize) -> Vec<u8> {
    seeded_bytes_from(len, 0x9e37_79b9_7f4a_7c15)
}

/// `len` bytes of the xorshift64* stream from `seed` (made odd): the same for the same
/// seed, and incompressible.
pub fn seeded_bytes_from(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    out
}

/// The big layer: `big/` (0755) and `big/random` (0644, `mib` MiB of [`seeded_bytes`]),
/// gzip level 0 (stored), so the blob is a little larger than its content.
pub fn big_layer(mib: usize) -> Layer {
    Layer::from_entries(
        &format!("vic-tests fixtures: big: {mib} MiB of seeded random bytes"),
        &[
            Entry::dir("big", 0o755),
            Entry::file("big/random", 0o644, &seeded_bytes(mib << 20)),
        ],
        0,
    )
}

/// The `big` image: busybox plus [`big_layer`].
pub fn big_image(mib: usize) -> Image {
    Image::new(
        Format::Docker,
        Platform::AMD64,
        vec![busybox_layer(), big_layer(mib)],
        &["sh"],
    )
}

// --- negative fixtures ----------------------------------------------------------------

/// A layer that tries to write outside the rootfs; an extractor must refuse it (or
/// confine it) and must never touch the host paths named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvilKind {
    /// `../vic-evil-escape` (a file).
    DotDotEscape,
    /// `/etc/vic-evil` (a file with an absolute path).
    AbsolutePath,
    /// `evil-link -> /tmp` (symlink), then the file `evil-link/vic-evil-x`: an extractor
    /// that follows the symlink writes `/tmp/vic-evil-x`.
    ThroughSymlink,
    /// `evil-hardlink`, a tar hard link to `../../etc/passwd`.
    HardlinkOutside,
}

impl EvilKind {
    /// All kinds.
    pub const ALL: [EvilKind; 4] = [
        EvilKind::DotDotEscape,
        EvilKind::AbsolutePath,
        EvilKind::ThroughSymlink,
        EvilKind::HardlinkOutside,
    ];

    /// A short name, usable as a repository or tag name.
    pub fn name(self) -> &'static str {
        match self {
            EvilKind::DotDotEscape => "dotdot",
            EvilKind::AbsolutePath => "absolute",
            EvilKind::ThroughSymlink => "through-symlink",
            EvilKind::HardlinkOutside => "hardlink-outside",
        }
    }

    /// The evil layer's entries.
    pub fn entries(self) -> Vec<Entry> {
        const EVIL: &[u8] = b"evil\n";
        match self {
            EvilKind::DotDotEscape => vec![Entry::file("../vic-evil-escape", 0o644, EVIL)],
            EvilKind::AbsolutePath => vec![Entry::file("/etc/vic-evil", 0o644, EVIL)],
            EvilKind::ThroughSymlink => vec![
                Entry::symlink("evil-link", "/tmp"),
                Entry::file("evil-link/vic-evil-x", 0o644, EVIL),
            ],
            EvilKind::HardlinkOutside => {
                vec![Entry::hardlink("evil-hardlink", 0o644, "../../etc/passwd")]
            }
        }
    }
}

/// The evil layer of `kind`.
pub fn evil_layer(kind: EvilKind) -> Layer {
    Layer::from_entries(
        &format!("vic-tests fixtures: evil layer: {}", kind.name()),
        &kind.entries(),
        GZIP_LEVEL,
    )
}

/// Busybox plus [`evil_layer`] of `kind`.
pub fn evil_image(kind: EvilKind) -> Image {
    Image::new(
        Format::Docker,
        Platform::AMD64,
        vec![busybox_layer(), evil_layer(kind)],
        &["sh"],
    )
}

/// Busybox plus a small layer (`bad/diff-id`) whose `rootfs.diff_ids` entry in the
/// config is wrong (the sha256 of `not this layer`); the blobs themselves are sound.
pub fn bad_diff_id_image() -> Image {
    let layers = vec![
        busybox_layer(),
        Layer::from_entries(
            "vic-tests fixtures: layer with a wrong diff_id",
            &[
                Entry::dir("bad", 0o755),
                Entry::file("bad/diff-id", 0o644, b"the config lies about me\n"),
            ],
            GZIP_LEVEL,
        ),
    ];
    let mut ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    ids[1] = sha256_digest(b"not this layer");
    Image::with_diff_ids(Format::Docker, Platform::AMD64, layers, &["sh"], &ids)
}

/// Two layers of exactly the same blob size, both valid gzip tars holding `bad/payload`
/// (4096 × `A`, then 4096 × `B`), stored (level 0): the first is pushed, the second is
/// what [`push_bad_blob`] makes the registry serve in its place.
pub fn bad_blob_layers() -> (Layer, Layer) {
    let make = |fill: u8| {
        Layer::from_entries(
            "vic-tests fixtures: layer whose served bytes do not match its digest",
            &[
                Entry::dir("bad", 0o755),
                Entry::file("bad/payload", 0o644, &[fill; 4096]),
            ],
            0,
        )
    };
    let (good, swapped) = (make(b'A'), make(b'B'));
    assert_eq!(good.blob.len(), swapped.blob.len());
    (good, swapped)
}

// --- pushing --------------------------------------------------------------------------

/// A layer as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256` of the gzip blob (the manifest's layer digest).
    pub digest: String,
    /// `sha256` of the uncompressed tar (the config's diff ID).
    pub diff_id: String,
    /// Size of the blob.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// The manifest's layer media type.
    pub media_type: String,
}

/// An image pushed to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `127.0.0.1:PORT/REPO:TAG`, or `127.0.0.1:PORT/REPO@sha256:...` for an image pushed
    /// by digest only (the members of a list).
    pub reference: String,
    /// `127.0.0.1:PORT`.
    pub registry: String,
    /// The repository (`library/busybox`).
    pub repo: String,
    /// The tag; empty when pushed by digest only.
    pub tag: String,
    /// The manifest digest (what the registry answered in `Docker-Content-Digest`).
    pub manifest_digest: String,
    /// The manifest media type.
    pub manifest_media_type: String,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The config digest, which is the image ID.
    pub config_digest: String,
    /// The config bytes.
    pub config: Vec<u8>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Bottom first.
    pub layers: Vec<LayerInfo>,
}

impl Pushed {
    fn new(dest: &Dest, repo: &str, tag: &str, image: &Image) -> Pushed {
        let reference = if tag.is_empty() {
            format!("{}/{repo}@{}", dest.addr, image.manifest_digest)
        } else {
            format!("{}/{repo}:{tag}", dest.addr)
        };
        Pushed {
            reference,
            registry: dest.addr.clone(),
            repo: repo.to_string(),
            tag: tag.to_string(),
            manifest_digest: image.manifest_digest.clone(),
            manifest_media_type: image.format.manifest_type().to_string(),
            manifest: image.manifest.clone(),
            config_digest: image.config_digest.clone(),
            config: image.config.clone(),
            platform: image.platform.to_string(),
            layers: image
                .layers
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.blob.len() as u64,
                    tar_size: l.tar.len() as u64,
                    media_type: image.format.layer_type().to_string(),
                })
                .collect(),
        }
    }

    /// The image ID (the config digest).
    pub fn image_id(&self) -> &str {
        &self.config_digest
    }

    /// `127.0.0.1:PORT/REPO@sha256:...`.
    pub fn by_digest(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repo, self.manifest_digest)
    }
}

/// A manifest list or OCI index pushed with its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedIndex {
    /// `127.0.0.1:PORT/REPO:TAG`.
    pub reference: String,
    /// `127.0.0.1:PORT`.
    pub registry: String,
    /// The repository.
    pub repo: String,
    /// The tag.
    pub tag: String,
    /// The list / index digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The member images, pushed by digest, in the list's order.
    pub images: Vec<Pushed>,
}

impl PushedIndex {
    /// The member for `platform` (`linux/amd64`, `linux/arm64/v8`).
    pub fn platform(&self, platform: &str) -> Option<&Pushed> {
        self.images.iter().find(|p| p.platform == platform)
    }

    /// The linux/amd64 member.
    pub fn amd64(&self) -> &Pushed {
        self.platform("linux/amd64").expect("an amd64 member")
    }

    /// The linux/arm64/v8 member.
    pub fn arm64(&self) -> &Pushed {
        self.platform("linux/arm64/v8").expect("an arm64 member")
    }
}

/// The registry pushes of one call, over one HTTP client.
struct Pusher {
    dest: Dest,
    http: reqwest::Client,
}

impl Pusher {
    fn new(dest: Dest) -> Pusher {
        Pusher {
            dest,
            http: client(),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.dest.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn send(&self, what: &str, rb: reqwest::RequestBuilder) -> reqwest::Response {
        rb.send()
            .await
            .unwrap_or_else(|e| panic!("push to {}: {what}: {e}", self.dest.addr))
    }

    async fn expect_status(
        &self,
        what: &str,
        resp: reqwest::Response,
        want: u16,
    ) -> reqwest::Response {
        if resp.status().as_u16() == want {
            return resp;
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        panic!(
            "push to {}: {what}: HTTP {status}, wanted {want}: {body}",
            self.dest.addr
        );
    }

    /// Uploads `bytes` as blob `digest` of `repo` unless the registry has it: `POST` an
    /// upload, then `PUT` it whole.
    async fn blob(&self, repo: &str, digest: &str, bytes: &[u8]) {
        let base = self.dest.url();
        let head = self
            .send(
                "HEAD blob",
                self.req(
                    reqwest::Method::HEAD,
                    &format!("{base}/v2/{repo}/blobs/{digest}"),
                ),
            )
            .await;
        if head.status().as_u16() == 200 {
            return;
        }
        let what = format!("POST /v2/{repo}/blobs/uploads/");
        let post = self
            .send(
                &what,
                self.req(
                    reqwest::Method::POST,
                    &format!("{base}/v2/{repo}/blobs/uploads/"),
                ),
            )
            .await;
        let post = self.expect_status(&what, post, 202).await;
        let location = post
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no Location"))
            .to_string();
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{base}{location}")
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let what = format!("PUT blob {digest} ({} bytes)", bytes.len());
        let put = self
            .send(
                &what,
                self.req(reqwest::Method::PUT, &url)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes.to_vec()),
            )
            .await;
        self.expect_status(&what, put, 201).await;
    }

    /// `PUT`s a manifest (or list) under `reference` (a tag or its digest) and checks the
    /// registry's `Docker-Content-Digest` against `digest`.
    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) {
        let what = format!("PUT /v2/{repo}/manifests/{reference}");
        let put = self
            .send(
                &what,
                self.req(
                    reqwest::Method::PUT,
                    &format!("{}/v2/{repo}/manifests/{reference}", self.dest.url()),
                )
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(bytes.to_vec()),
            )
            .await;
        let put = self.expect_status(&what, put, 201).await;
        let got = put
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(
            got, digest,
            "{what}: the registry's Docker-Content-Digest differs from ours"
        );
    }

    /// Pushes the blobs of `image`, then its manifest under `reference`.
    async fn image(&self, repo: &str, reference: &str, image: &Image) {
        for l in &image.layers {
            self.blob(repo, &l.digest, &l.blob).await;
        }
        self.blob(repo, &image.config_digest, &image.config).await;
        self.manifest(
            repo,
            reference,
            image.format.manifest_type(),
            &image.manifest,
            &image.manifest_digest,
        )
        .await;
    }
}

/// Pushes `image` as `repo:tag` (or by digest only when `tag` is empty) to `dest` (an
/// address, a [`Dest`] or a [`TestRegistry`], whose credentials are used).
pub fn push_image(dest: impl Into<Dest>, repo: &str, tag: &str, image: &Image) -> Pushed {
    let dest = dest.into();
    let pusher = Pusher::new(dest.clone());
    let reference = if tag.is_empty() {
        image.manifest_digest.as_str()
    } else {
        tag
    };
    block_on(pusher.image(repo, reference, image));
    Pushed::new(&dest, repo, tag, image)
}

/// Pushes the images of `index` by digest, then the list / index as `repo:tag`.
pub fn push_index(dest: impl Into<Dest>, repo: &str, tag: &str, index: &Index) -> PushedIndex {
    let dest = dest.into();
    let pusher = Pusher::new(dest.clone());
    block_on(async {
        for i in &index.images {
            pusher.image(repo, &i.manifest_digest, i).await;
        }
        pusher
            .manifest(
                repo,
                tag,
                index.format.index_type(),
                &index.bytes,
                &index.digest,
            )
            .await;
    });
    PushedIndex {
        reference: format!("{}/{repo}:{tag}", dest.addr),
        registry: dest.addr.clone(),
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest: index.digest.clone(),
        media_type: index.format.index_type().to_string(),
        bytes: index.bytes.clone(),
        images: index
            .images
            .iter()
            .map(|i| Pushed::new(&dest, repo, "", i))
            .collect(),
    }
}

/// Builds and pushes [`busybox_image`].
pub fn push_busybox(dest: impl Into<Dest>, repo: &str, tag: &str) -> Pushed {
    push_image(dest, repo, tag, &busybox_image())
}

/// Builds and pushes [`users_image`].
pub fn push_users(dest: impl Into<Dest>, repo: &str, tag: &str) -> Pushed {
    push_image(dest, repo, tag, &users_image())
}

/// Builds and pushes [`layered_image`].
pub fn push_layered(dest: impl Into<Dest>, repo: &str, tag: &str) -> Pushed {
    push_image(dest, repo, tag, &layered_image())
}

/// Builds and pushes [`multiarch_index`]: [`PushedIndex::amd64`] and
/// [`PushedIndex::arm64`] are its members.
pub fn push_multiarch(dest: impl Into<Dest>, repo: &str, tag: &str) -> PushedIndex {
    push_index(dest, repo, tag, &multiarch_index())
}

/// Builds and pushes [`oci_index`].
pub fn push_oci(dest: impl Into<Dest>, repo: &str, tag: &str) -> PushedIndex {
    push_index(dest, repo, tag, &oci_index())
}

/// Builds and pushes [`big_image`] with `mib` MiB of data.
pub fn push_big(dest: impl Into<Dest>, repo: &str, tag: &str, mib: usize) -> Pushed {
    push_image(dest, repo, tag, &big_image(mib))
}

/// Builds and pushes [`evil_image`] of `kind`.
pub fn push_evil(dest: impl Into<Dest>, repo: &str, tag: &str, kind: EvilKind) -> Pushed {
    push_image(dest, repo, tag, &evil_image(kind))
}

/// Builds and pushes [`bad_diff_id_image`].
pub fn push_bad_diff_id(dest: impl Into<Dest>, repo: &str, tag: &str) -> Pushed {
    push_image(dest, repo, tag, &bad_diff_id_image())
}

/// What [`push_bad_blob`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlob {
    /// The image as pushed (busybox plus the bad layer, on top).
    pub pushed: Pushed,
    /// The digest that the manifest names for the top layer.
    pub layer_digest: String,
    /// The digest of the bytes that the registry now serves for it instead.
    pub served_digest: String,
}

/// Pushes busybox plus the first of [`bad_blob_layers`] as `repo:tag` to `reg`, then
/// overwrites that blob in the registry's storage with the second (same size, valid gzip
/// tar, other content), so a `GET` of the blob answers `200` with bytes whose sha256 is
/// not the digest asked for. The blob is unique to this image (so no other fixture in
/// the same registry is affected); calling it again, for any repository, is fine.
/// Checks that the registry now serves the swapped bytes.
pub fn push_bad_blob(reg: &TestRegistry, repo: &str, tag: &str) -> BadBlob {
    let (good, swapped) = bad_blob_layers();
    let image = Image::new(
        Format::Docker,
        Platform::AMD64,
        vec![busybox_layer(), good.clone()],
        &["sh"],
    );
    let pushed = push_image(reg, repo, tag, &image);
    let path = reg.blob_data_path(&good.digest);
    let stored = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the registry's copy of {}: {}: {e}",
            good.digest,
            path.display()
        )
    });
    // A second call on the same registry finds the blob already swapped (a registry
    // keeps the stored file of a digest it already has).
    assert!(
        stored == good.blob || stored == swapped.blob,
        "{} holds neither the pushed blob nor its swap",
        path.display()
    );
    std::fs::write(&path, &swapped.blob)
        .unwrap_or_else(|e| panic!("overwrite {}: {e}", path.display()));
    let reply = reg.get(&format!("/v2/{repo}/blobs/{}", good.digest), &[]);
    assert_eq!(reply.status, 200, "GET the swapped blob: {}", reply.text());
    assert_eq!(
        sha256_digest(&reply.body),
        swapped.digest,
        "the registry does not serve the swapped bytes"
    );
    BadBlob {
        pushed,
        layer_digest: good.digest,
        served_digest: swapped.digest,
    }
}

// --- docker save ----------------------------------------------------------------------

#[derive(Serialize)]
struct SaveManifestJson<'a> {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: &'a [&'a str],
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// `image` as a `docker save` archive (uncompressed tar) for `docker load`:
/// `<config hex>.json`, `<diff_id hex>/layer.tar` per layer, `manifest.json`
/// (`[{"Config","RepoTags","Layers"}]`) and the legacy `repositories`
/// (`{"repo":{"tag":"<top layer folder>"}}`). `repo_tags` are `repo:tag` names (may be
/// empty, for an untagged load).
pub fn image_tar_for_load(image: &Image, repo_tags: &[&str]) -> Vec<u8> {
    let config_name = format!("{}.json", digest_hex(&image.config_digest));
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let mut layer_paths = Vec::new();
    for l in &image.layers {
        let dir = digest_hex(&l.diff_id).to_string();
        let path = format!("{dir}/layer.tar");
        files.insert(dir.clone(), Entry::dir(&dir, 0o755));
        files.insert(path.clone(), Entry::file(&path, 0o644, &l.tar));
        layer_paths.push(path);
    }
    files.insert(
        config_name.clone(),
        Entry::file(&config_name, 0o644, &image.config),
    );
    let manifest = to_json(&[SaveManifestJson {
        config: config_name,
        repo_tags,
        layers: layer_paths,
    }]);
    files.insert(
        "manifest.json".into(),
        Entry::file("manifest.json", 0o644, &manifest),
    );
    if let Some(top) = image.layers.last() {
        let mut repos: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        for rt in repo_tags {
            let (repo, tag) = match rt.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t),
                _ => (*rt, "latest"),
            };
            repos
                .entry(repo)
                .or_default()
                .insert(tag, digest_hex(&top.diff_id));
        }
        if !repos.is_empty() {
            files.insert(
                "repositories".into(),
                Entry::file("repositories", 0o644, &to_json(&repos)),
            );
        }
    }
    let entries: Vec<Entry> = files.into_values().collect();
    tar_bytes(&entries)
}
