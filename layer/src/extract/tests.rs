use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::*;
use crate::testutil::{Tar, pax_sparse_1_0, pax_sparse_pair};

fn is_root() -> bool {
    sys::euid() == 0
}

/// A temporary directory holding the layer directory `layer`, so that escapes to
/// its parent can be looked for.
struct Dest {
    outer: tempfile::TempDir,
    layer: PathBuf,
}

impl Dest {
    fn new() -> Self {
        let outer = tempfile::tempdir().expect("tempdir");
        let layer = outer.path().join("layer");
        fs::create_dir(&layer).expect("mkdir layer");
        Dest { outer, layer }
    }

    fn extract(&self, tar: &[u8]) -> Result<ExtractStats, Error> {
        extract_layer(tar, &self.layer, &ExtractOptions::for_current_user())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.layer.join(rel)
    }

    /// Only the layer directory is in the outer one.
    fn assert_nothing_outside(&self) {
        let names: Vec<_> = fs::read_dir(self.outer.path())
            .expect("read outer")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["layer"], "something was written beside the layer");
    }
}

fn meta(path: &Path) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    meta(path).permissions().mode() & 0o7777
}

fn rejected(result: Result<ExtractStats, Error>) -> String {
    match result {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn a_normal_tree_is_extracted_with_its_metadata() {
    let d = Dest::new();
    let tar = Tar::new()
        .raw(b'5', b"./", b"", 0o755, 1_500_000_000, b"")
        .raw(b'5', b"./etc/", b"", 0o750, 1_000, b"")
        .raw(
            b'0',
            b"./etc/hosts",
            b"",
            0o640,
            2_000,
            b"127.0.0.1 localhost\n",
        )
        .raw(b'2', b"./etc/alias", b"hosts", 0o777, 3_000, b"")
        .raw(b'1', b"./etc/hosts2", b"./etc/hosts", 0o640, 2_000, b"")
        .raw(b'0', b"usr/bin/tool", b"", 0o4755, 4_000, b"#!/bin/sh\n")
        .raw(b'0', b"usr/bin/group", b"", 0o2711, 4_000, b"x")
        .raw(b'5', b"tmp", b"", 0o1777, 5_000, b"")
        .raw(b'0', b"empty", b"", 0o600, 6_000, b"")
        .bytes();
    let stats = d.extract(&tar).expect("extract");
    assert_eq!(
        stats,
        ExtractStats {
            files: 4,
            dirs: 3,
            symlinks: 1,
            hardlinks: 1,
            bytes: 20 + 10 + 1,
            ..ExtractStats::default()
        }
    );

    let hosts = d.path("etc/hosts");
    assert_eq!(fs::read(&hosts).expect("read"), b"127.0.0.1 localhost\n");
    assert_eq!(mode(&hosts), 0o640);
    assert_eq!(meta(&hosts).mtime(), 2_000);
    assert_eq!(mode(&d.path("etc")), 0o750);
    assert_eq!(meta(&d.path("etc")).mtime(), 1_000);
    assert_eq!(mode(&d.layer), 0o755);
    assert_eq!(meta(&d.layer).mtime(), 1_500_000_000);

    let alias = d.path("etc/alias");
    assert!(meta(&alias).file_type().is_symlink());
    assert_eq!(fs::read_link(&alias).expect("readlink"), Path::new("hosts"));
    assert_eq!(meta(&alias).mtime(), 3_000);

    let hosts2 = d.path("etc/hosts2");
    assert_eq!(meta(&hosts2).ino(), meta(&hosts).ino());
    assert_eq!(meta(&hosts).nlink(), 2);

    // Implied parents are made 0755; modes keep their special bits.
    assert_eq!(mode(&d.path("usr/bin")), 0o755);
    assert_eq!(mode(&d.path("usr/bin/tool")), 0o4755);
    assert_eq!(mode(&d.path("usr/bin/group")), 0o2711);
    assert_eq!(mode(&d.path("tmp")), 0o1777);
    assert_eq!(meta(&d.path("empty")).len(), 0);
}

#[test]
fn an_entry_with_dot_dot_is_rejected_and_nothing_leaves() {
    for name in ["../escape", "a/../../escape", "./../escape", "a/.."] {
        let d = Dest::new();
        let tar = Tar::new()
            .file("ok", b"fine")
            .raw(b'0', name.as_bytes(), b"", 0o644, 0, b"bad")
            .bytes();
        let message = rejected(d.extract(&tar));
        assert_eq!(message, format!("layer entry {name:?} leaves the layer"));
        d.assert_nothing_outside();
    }
    // The same for a directory, a symlink and a hardlink name.
    for kind in [b'5', b'2', b'1'] {
        let d = Dest::new();
        let tar = Tar::new()
            .file("ok", b"fine")
            .raw(kind, b"../escape", b"ok", 0o644, 0, b"")
            .bytes();
        rejected(d.extract(&tar));
        d.assert_nothing_outside();
    }
}

#[test]
fn empty_names_and_nul_bytes_are_rejected() {
    let d = Dest::new();
    let tar = Tar::new().raw(b'0', b"", b"", 0o644, 0, b"x").bytes();
    assert!(rejected(d.extract(&tar)).contains("empty name"));

    let d = Dest::new();
    let tar = Tar::new()
        .pax(&[("path", b"a\0b")])
        .file("placeholder", b"x")
        .bytes();
    assert!(rejected(d.extract(&tar)).contains("NUL"));
}

#[test]
fn an_absolute_name_stays_inside_the_layer() {
    let d = Dest::new();
    let tar = Tar::new()
        .raw(
            b'0',
            b"/etc/passwd",
            b"",
            0o644,
            0,
            b"root:x:0:0::/root:/bin/sh\n",
        )
        .raw(b'0', b"//twice", b"", 0o644, 0, b"2")
        .bytes();
    d.extract(&tar).expect("extract");
    assert_eq!(
        fs::read(d.path("etc/passwd")).expect("read"),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert_eq!(fs::read(d.path("twice")).expect("read"), b"2");
    d.assert_nothing_outside();
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let outside = tempfile::tempdir().expect("tempdir");
    let unique = format!("vic-layer-test-{}", std::process::id());
    let cases: Vec<(String, &str)> = vec![
        ("/tmp".into(), "link"),
        ("../..".into(), "link"),
        (outside.path().display().to_string(), "link"),
        ("..".into(), "link"),
        (".".into(), "link"),
    ];
    for (target, link) in cases {
        let d = Dest::new();
        let tar = Tar::new()
            .symlink(link, &target)
            .file(&format!("{link}/{unique}"), b"owned")
            .bytes();
        let message = rejected(d.extract(&tar));
        assert!(
            message.contains("passes through the symlink \"link\""),
            "{message}"
        );
        assert!(!Path::new("/tmp").join(&unique).exists());
        assert_eq!(fs::read_dir(outside.path()).expect("read").count(), 0);
        d.assert_nothing_outside();
    }

    // Deeper, and for a directory and a symlink entry as well as a file.
    for kind in [b'0', b'5', b'2', b'1'] {
        let d = Dest::new();
        let tar = Tar::new()
            .dir("a")
            .symlink("a/b", &outside.path().display().to_string())
            .file("x", b"x")
            .raw(
                kind,
                format!("a/b/c/{unique}").as_bytes(),
                b"x",
                0o644,
                0,
                b"",
            )
            .bytes();
        rejected(d.extract(&tar));
        assert_eq!(fs::read_dir(outside.path()).expect("read").count(), 0);
    }
}

#[test]
fn an_existing_symlink_is_replaced_not_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").expect("write");
    fs::create_dir(outside.path().join("victim-dir")).expect("mkdir");
    let victim_dir_mode = mode(&outside.path().join("victim-dir"));
    let d = Dest::new();
    let tar = Tar::new()
        .symlink("f", &victim.display().to_string())
        .file("f", b"new")
        .symlink(
            "g",
            &outside.path().join("victim-dir").display().to_string(),
        )
        .dir("g")
        .symlink("h", &victim.display().to_string())
        .symlink("h", "elsewhere")
        .bytes();
    d.extract(&tar).expect("extract");
    assert_eq!(fs::read(&victim).expect("read"), b"original");
    assert_eq!(fs::read(d.path("f")).expect("read"), b"new");
    assert!(meta(&d.path("f")).is_file());
    assert!(meta(&d.path("g")).is_dir());
    assert_eq!(mode(&outside.path().join("victim-dir")), victim_dir_mode);
    assert_eq!(
        fs::read_link(d.path("h")).expect("readlink"),
        Path::new("elsewhere")
    );
}

#[test]
fn entries_replace_each_other() {
    let d = Dest::new();
    let tar = Tar::new()
        .file("x", b"file")
        .dir("x")
        .file("x/in", b"in")
        .dir("y")
        .file("y/f", b"f")
        .dir("y/sub")
        .file("y", b"now a file")
        .file("z", b"first")
        .file("z", b"second")
        .bytes();
    d.extract(&tar).expect("extract");
    assert!(meta(&d.path("x")).is_dir());
    assert_eq!(fs::read(d.path("x/in")).expect("read"), b"in");
    assert_eq!(fs::read(d.path("y")).expect("read"), b"now a file");
    assert_eq!(fs::read(d.path("z")).expect("read"), b"second");
}

#[test]
fn an_entry_below_a_file_is_rejected() {
    let d = Dest::new();
    let tar = Tar::new().file("f", b"x").file("f/g", b"y").bytes();
    let message = rejected(d.extract(&tar));
    assert!(message.contains("not a directory"), "{message}");
}

#[test]
fn hardlinks_must_stay_in_the_layer() {
    let passwd_before = fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.ino(), m.nlink()));
    // (symlinks made first, hardlink target, expected message)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        (&[], "../../etc/passwd", "leaves the layer"),
        (&[], "/etc/passwd", "not in the layer"),
        (&[], "missing", "not in the layer"),
        (
            &[("etc", "/etc")],
            "etc/passwd",
            "passes through the symlink",
        ),
        (&[], "./", "layer root"),
    ];
    for (symlinks, target, expected) in cases {
        let d = Dest::new();
        let mut tar = Tar::new();
        for (name, to) in *symlinks {
            tar.symlink(name, to);
        }
        tar.hardlink("h", target);
        let message = rejected(d.extract(&tar.bytes()));
        assert!(message.contains(expected), "{target}: {message}");
        assert!(!d.path("h").exists());
    }
    let passwd_after = fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.ino(), m.nlink()));
    assert_eq!(passwd_before, passwd_after);

    // To a directory, to itself, or below itself.
    for (setup, name, target) in [("d", "h", "d"), ("f", "f2", "f2"), ("f", "f", "f")] {
        let d = Dest::new();
        let mut tar = Tar::new();
        if setup == "d" {
            tar.dir("d");
        } else {
            tar.file(setup, b"x");
        }
        tar.hardlink(name, target);
        rejected(d.extract(&tar.bytes()));
    }
}

#[test]
fn a_hardlink_to_a_symlink_links_the_symlink_itself() {
    let before = fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.ino(), m.nlink(), m.len()));
    let d = Dest::new();
    let tar = Tar::new()
        .symlink("s", "/etc/passwd")
        .hardlink("h", "s")
        .symlink("up", "../..")
        .hardlink("dir/h2", "up")
        .bytes();
    let stats = d.extract(&tar).expect("extract");
    assert_eq!(stats.hardlinks, 2);
    let h = meta(&d.path("h"));
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), meta(&d.path("s")).ino());
    assert_eq!(
        fs::read_link(d.path("h")).expect("readlink"),
        Path::new("/etc/passwd")
    );
    assert!(meta(&d.path("dir/h2")).file_type().is_symlink());
    let after = fs::metadata("/etc/passwd")
        .ok()
        .map(|m| (m.ino(), m.nlink(), m.len()));
    assert_eq!(before, after);
    d.assert_nothing_outside();
}

#[test]
fn whiteouts_and_opaque_markers_are_kept_and_counted() {
    let d = Dest::new();
    let tar = Tar::new()
        .dir("etc")
        .file("etc/.wh.hosts", b"")
        .file("var/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .raw(b'5', b".wh.was-a-dir", b"", 0o755, 0, b"")
        .dir(".wh..wh.plnk")
        .file(".wh..wh.plnk/123.456", b"linked")
        .file(".wh..wh.aufs", b"")
        .file("etc/.wh..wh.orph", b"")
        .bytes();
    let stats = d.extract(&tar).expect("extract");
    assert_eq!(stats.whiteouts, 3);
    assert_eq!(stats.opaque_dirs, 1);
    assert_eq!(stats.skipped, 4);
    assert_eq!(stats.files, 0);
    for marker in [
        "etc/.wh.hosts",
        "var/.wh..wh..opq",
        ".wh.gone",
        ".wh.was-a-dir",
    ] {
        let m = meta(&d.path(marker));
        assert!(m.is_file() && m.len() == 0, "{marker}");
    }
    assert!(!d.path(".wh..wh.plnk").exists());
    assert!(!d.path(".wh..wh.aufs").exists());
    assert!(!d.path("etc/.wh..wh.orph").exists());

    for bad in ["a/.wh.", ".wh.a/b"] {
        let d = Dest::new();
        rejected(d.extract(&Tar::new().file(bad, b"").bytes()));
    }
}

#[test]
fn owners_and_setuid_survive_when_root() {
    let d = Dest::new();
    let mut tar = Tar::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"suid");
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o6755);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_size(1);
    h.set_cksum();
    tar.0.append(&h, &b"x"[..]).expect("append");
    tar.raw(b'2', b"link", b"suid", 0o777, 0, b"");
    let mut dir = Header::new_gnu();
    dir.as_old_mut().name[..4].copy_from_slice(b"home");
    dir.set_entry_type(EntryType::Directory);
    dir.set_mode(0o700);
    dir.set_uid(1000);
    dir.set_gid(1000);
    dir.set_size(0);
    dir.set_cksum();
    tar.0.append(&dir, std::io::empty()).expect("append");
    d.extract(&tar.bytes()).expect("extract");

    let suid = meta(&d.path("suid"));
    if is_root() {
        assert_eq!((suid.uid(), suid.gid()), (1000, 1001));
        // chown clears setuid and setgid; the mode is set after it.
        assert_eq!(suid.permissions().mode() & 0o7777, 0o6755);
        assert_eq!(meta(&d.path("home")).uid(), 1000);
        assert_eq!(meta(&d.path("link")).uid(), 0);
    } else {
        assert_eq!(suid.uid(), sys::euid());
        assert_eq!(suid.permissions().mode() & 0o4777, 0o4755);
    }
}

#[test]
fn owners_are_left_alone_when_not_preserved() {
    let d = Dest::new();
    let mut tar = Tar::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..1].copy_from_slice(b"f");
    h.set_mode(0o644);
    h.set_uid(4242);
    h.set_gid(4242);
    h.set_size(0);
    h.set_cksum();
    tar.0.append(&h, std::io::empty()).expect("append");
    let opts = ExtractOptions {
        preserve_owner: false,
        allow_devices: false,
    };
    extract_layer(&tar.bytes()[..], &d.layer, &opts).expect("extract");
    assert_eq!(meta(&d.path("f")).uid(), sys::euid());
}

#[test]
fn directory_times_and_modes_are_set_after_their_contents() {
    let d = Dest::new();
    let tar = Tar::new()
        .file("d/early", b"1")
        .raw(b'5', b"d/", b"", 0o755, 1_234, b"")
        .file("d/late", b"2")
        .dir("d/sub")
        .file("d/sub/deeper", b"3")
        .raw(b'5', b"ro/", b"", 0o555, 5_678, b"")
        .file("ro/inside", b"4")
        .raw(b'5', b"ro/locked/", b"", 0o000, 9, b"")
        .bytes();
    d.extract(&tar).expect("extract");
    assert_eq!(meta(&d.path("d")).mtime(), 1_234);
    assert_eq!(meta(&d.path("ro")).mtime(), 5_678);
    assert_eq!(mode(&d.path("ro")), 0o555);
    assert_eq!(mode(&d.path("ro/locked")), 0o000);
    assert_eq!(meta(&d.path("ro/locked")).mtime(), 9);
    assert_eq!(fs::read(d.path("ro/inside")).expect("read"), b"4");
    // Let the temporary directory be removed by a non-root user too.
    for dir in ["ro", "ro/locked"] {
        fs::set_permissions(d.path(dir), fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn pax_times_keep_their_fraction() {
    let d = Dest::new();
    let tar = Tar::new()
        .pax(&[("mtime", b"1700000000.123456789")])
        .file("precise", b"x")
        .pax(&[("mtime", b"-1.5")])
        .file("before-epoch", b"x")
        .bytes();
    d.extract(&tar).expect("extract");
    let m = meta(&d.path("precise"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    let m = meta(&d.path("before-epoch"));
    assert_eq!((m.mtime(), m.mtime_nsec()), (-2, 500_000_000));
    assert_eq!(pax_time(b"12"), Some((12, 0)));
    assert_eq!(pax_time(b"12.5x"), None);
    assert_eq!(pax_time(b"."), None);
}

#[test]
fn long_names_and_link_targets_work() {
    let long_dir = "d".repeat(60);
    let long_name = format!("{long_dir}/{}/{}", "e".repeat(70), "f".repeat(80));
    assert!(long_name.len() > 200);
    let long_target = format!("../{}", "t".repeat(150));
    let pax_name = format!("{long_dir}/{}", "p".repeat(180));
    let d = Dest::new();
    let tar = Tar::new()
        .file(&long_name, b"gnu long name")
        .symlink(&format!("{long_dir}/link"), &long_target)
        .hardlink(&format!("{long_dir}/{}", "h".repeat(120)), &long_name)
        .pax(&[("path", pax_name.as_bytes())])
        .file("short-stand-in", b"pax long name")
        .bytes();
    d.extract(&tar).expect("extract");
    assert_eq!(
        fs::read(d.path(&long_name)).expect("read"),
        b"gnu long name"
    );
    assert_eq!(
        fs::read_link(d.path(&format!("{long_dir}/link"))).expect("readlink"),
        Path::new(&long_target)
    );
    assert_eq!(
        meta(&d.path(&format!("{long_dir}/{}", "h".repeat(120)))).ino(),
        meta(&d.path(&long_name)).ino()
    );
    assert_eq!(fs::read(d.path(&pax_name)).expect("read"), b"pax long name");
    assert!(!d.path("short-stand-in").exists());

    // A long name that escapes is still caught.
    let d = Dest::new();
    let escape = format!("{}/../../../{}", "a".repeat(50), "b".repeat(80));
    let tar = Tar::new().file(&escape, b"x").bytes();
    assert!(rejected(d.extract(&tar)).contains("leaves the layer"));
    d.assert_nothing_outside();
}

#[test]
fn devices_and_fifos_need_permission() {
    let tar = Tar::new()
        .raw(b'6', b"fifo", b"", 0o640, 77, b"")
        .raw(b'3', b"null", b"", 0o666, 0, b"")
        .bytes();
    let off = ExtractOptions {
        preserve_owner: false,
        allow_devices: false,
    };
    let d = Dest::new();
    let stats = extract_layer(&tar[..], &d.layer, &off).expect("extract");
    assert_eq!((stats.devices, stats.skipped_devices), (0, 2));
    assert!(!d.path("fifo").exists());

    if !is_root() {
        return;
    }
    // uid, gid and mtime left blank: they read as zero, as in Go's archive/tar.
    let mut tar = Tar::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..4].copy_from_slice(b"null");
    h.set_entry_type(EntryType::Char);
    h.set_mode(0o666);
    h.set_device_major(1).expect("major");
    h.set_device_minor(3).expect("minor");
    h.set_size(0);
    h.set_cksum();
    tar.0.append(&h, std::io::empty()).expect("append");
    tar.raw(b'6', b"fifo", b"", 0o640, 77, b"");
    let d = Dest::new();
    let stats = d.extract(&tar.bytes()).expect("extract");
    assert_eq!(stats.devices, 2);
    let null = meta(&d.path("null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.permissions().mode() & 0o777, 0o666);
    let fifo = meta(&d.path("fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.permissions().mode() & 0o777, 0o640);
    assert_eq!(fifo.mtime(), 77);
}

#[test]
fn extended_attributes_are_applied_or_skipped() {
    let d = Dest::new();
    let tar = Tar::new()
        .pax(&[
            ("SCHILY.xattr.user.vic", b"hello"),
            ("SCHILY.xattr.trusted.vic", b"secret"),
        ])
        .file("f", b"x")
        .pax(&[("SCHILY.xattr.user.vic", b"on a dir")])
        .dir("d")
        .pax(&[("SCHILY.xattr.user.vic", b"on a link")])
        .symlink("l", "f")
        .bytes();
    let stats = d.extract(&tar).expect("extract");
    if get_xattr(&d.path("f"), "user.vic").is_none() {
        // The file system keeps no user attributes: they must have been skipped.
        assert!(stats.skipped_xattrs >= 3);
        return;
    }
    assert_eq!(
        get_xattr(&d.path("f"), "user.vic").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        get_xattr(&d.path("d"), "user.vic").as_deref(),
        Some(&b"on a dir"[..])
    );
    if is_root() {
        assert_eq!(
            get_xattr(&d.path("f"), "trusted.vic").as_deref(),
            Some(&b"secret"[..])
        );
        // Linux allows no user attribute on a symlink.
        assert_eq!(stats.skipped_xattrs, 1);
    } else {
        assert_eq!(stats.skipped_xattrs, 2);
    }
}

fn allocated(path: &Path) -> u64 {
    meta(path).blocks() * 512
}

#[test]
fn gnu_sparse_files_keep_their_holes() {
    let src = tempfile::tempdir().expect("tempdir");
    let sparse = src.path().join("sparse");
    {
        use std::io::{Seek, Write};
        let mut f = fs::File::create(&sparse).expect("create");
        f.write_all(b"head").expect("write");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(b"tail").expect("write");
        f.set_len(16 << 20).expect("set_len");
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.sparse(true);
    builder
        .append_path_with_name(&sparse, "sparse")
        .expect("append");
    let tar = builder.into_inner().expect("finish");
    let d = Dest::new();
    let stats = d.extract(&tar).expect("extract");
    assert_eq!(stats.bytes, 16 << 20);
    let out = d.path("sparse");
    let data = fs::read(&out).expect("read");
    assert_eq!(data.len(), 16 << 20);
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[8 << 20..(8 << 20) + 4], b"tail");
    assert!(data[4..8 << 20].iter().all(|&b| b == 0));
    assert!(
        allocated(&out) < 1 << 20,
        "{} bytes allocated",
        allocated(&out)
    );
}

#[test]
fn pax_sparse_files_are_expanded() {
    let d = Dest::new();
    let stats = d.extract(&pax_sparse_pair()).expect("extract");
    assert_eq!(stats.files, 2);
    assert_eq!(stats.bytes, (4 << 20) + (2 << 20));
    assert!(!d.path("GNUSparseFile.0").exists());

    let data = fs::read(d.path("one-zero")).expect("read");
    assert_eq!(data.len(), 4 << 20);
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[1 << 20..(1 << 20) + 6], b"middle");
    assert!(data[4..1 << 20].iter().all(|&b| b == 0));
    assert!(allocated(&d.path("one-zero")) < 1 << 20);

    let data = fs::read(d.path("zero-one")).expect("read");
    assert_eq!(data.len(), 2 << 20);
    assert_eq!(&data[..2], b"ab");
    assert_eq!(&data[1 << 20..(1 << 20) + 3], b"cde");
    assert_eq!(mode(&d.path("zero-one")), 0o600);

    // A map that does not match the data, or a sparse name that escapes.
    let mut tar = Tar::new();
    pax_sparse_1_0(&mut tar, "bad", 10, &[(0, b"way too long for ten")]);
    assert!(rejected(Dest::new().extract(&tar.bytes())).contains("sparse"));
    let mut tar = Tar::new();
    pax_sparse_1_0(&mut tar, "../escape", 10, &[(0, b"x")]);
    let d = Dest::new();
    assert!(rejected(d.extract(&tar.bytes())).contains("leaves the layer"));
    d.assert_nothing_outside();
}

#[test]
fn zeros_in_plain_files_become_holes() {
    let mut content = vec![0u8; 4 << 20];
    content[0] = 1;
    let d = Dest::new();
    d.extract(
        &Tar::new()
            .file("mostly-zero", &content)
            .file("all-zero", &[0; 300_000])
            .bytes(),
    )
    .expect("extract");
    assert_eq!(fs::read(d.path("mostly-zero")).expect("read"), content);
    assert!(allocated(&d.path("mostly-zero")) < 1 << 20);
    assert_eq!(meta(&d.path("all-zero")).len(), 300_000);
}

#[test]
fn the_root_entry_is_the_layer_directory() {
    let d = Dest::new();
    let tar = Tar::new()
        .raw(b'5', b".", b"", 0o711, 42, b"")
        .file("f", b"x")
        .bytes();
    d.extract(&tar).expect("extract");
    assert_eq!(mode(&d.layer), 0o711);
    assert_eq!(meta(&d.layer).mtime(), 42);

    let d = Dest::new();
    let tar = Tar::new().raw(b'0', b"./", b"", 0o644, 0, b"").bytes();
    assert!(rejected(d.extract(&tar)).contains("layer root"));
}

#[test]
fn old_style_directories_and_global_headers_are_understood() {
    let d = Dest::new();
    let mut tar = Tar::new();
    let mut global = Header::new_ustar();
    global.set_entry_type(EntryType::XGlobalHeader);
    let records = b"20 comment=anything\n";
    global.set_size(records.len() as u64);
    global.set_cksum();
    tar.0.append(&global, &records[..]).expect("append");
    tar.raw(b'\0', b"old-dir/", b"", 0o755, 0, b"");
    tar.raw(b'\0', b"old-dir/file", b"", 0o644, 0, b"v7");
    let stats = d.extract(&tar.bytes()).expect("extract");
    assert_eq!((stats.dirs, stats.files, stats.skipped), (1, 1, 1));
    assert!(meta(&d.path("old-dir")).is_dir());
    assert_eq!(fs::read(d.path("old-dir/file")).expect("read"), b"v7");
}

#[test]
fn unknown_types_and_broken_archives_are_errors() {
    let d = Dest::new();
    let tar = Tar::new().raw(b'V', b"volume", b"", 0o644, 0, b"").bytes();
    assert!(rejected(d.extract(&tar)).contains("unsupported type"));

    let d = Dest::new();
    let mut tar = Tar::new().file("big", &[7u8; 10_000]).bytes();
    tar.truncate(512 + 4096);
    assert!(matches!(d.extract(&tar), Err(Error::Io { .. })));

    let d = Dest::new();
    let mut tar = Tar::new().file("f", b"x").bytes();
    tar[0] ^= 1; // breaks the checksum
    assert!(matches!(d.extract(&tar), Err(Error::Io { .. })));

    assert!(matches!(
        extract_layer(
            &b""[..],
            &d.layer.join("missing"),
            &ExtractOptions::default()
        ),
        Err(Error::Io { .. })
    ));
}

#[test]
fn blank_numeric_fields_read_as_zero() {
    let d = Dest::new();
    let mut tar = Tar::new();
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..5].copy_from_slice(b"blank");
    h.set_size(1);
    h.set_cksum();
    tar.0.append(&h, &b"x"[..]).expect("append");
    d.extract(&tar.bytes()).expect("extract");
    let m = meta(&d.path("blank"));
    assert_eq!((m.mtime(), m.permissions().mode() & 0o7777), (0, 0));
}
