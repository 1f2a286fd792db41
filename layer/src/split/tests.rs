use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;

use tar::{EntryType, Header};

use super::*;
use crate::testutil::{Tar, pax_sparse_pair};
use crate::{ExtractOptions, extract_layer_split};

fn is_root() -> bool {
    sys::euid() == 0
}

/// A layer extracted with its skeleton.
struct Split {
    _dir: tempfile::TempDir,
    root: PathBuf,
    split: TarSplit,
}

impl Split {
    fn of(tar: &[u8]) -> Split {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("layer");
        fs::create_dir(&root).expect("mkdir");
        let (_, split) =
            extract_layer_split(tar, &root, &ExtractOptions::for_current_user()).expect("extract");
        Split {
            _dir: dir,
            root,
            split,
        }
    }

    /// The stream from the skeleton after a trip through its bytes, read in chunks
    /// of `chunk` bytes.
    fn read(&self, chunk: usize) -> io::Result<Vec<u8>> {
        let split = TarSplit::from_bytes(&self.split.to_bytes()).expect("from_bytes");
        let mut reader = reassemble(&split, &self.root);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            assert!(n <= chunk);
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Extracts `tar`, gives it back and checks that every byte is the same; returns the
/// split for more checks.
fn round_trip(tar: &[u8]) -> Split {
    let s = Split::of(tar);
    assert_eq!(s.split.tar_size(), tar.len() as u64);
    for chunk in [1, 7, 512, 64 * 1024] {
        let back = s.read(chunk).expect("reassemble");
        assert!(back == tar, "the stream differs (read {chunk} at a time)");
    }
    s
}

fn data_header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(size);
    h
}

#[test]
fn a_normal_tar_comes_back_byte_for_byte() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = data_header(EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, "etc/", io::empty()).expect("dir");
    for (name, len) in [
        ("etc/empty", 0usize),
        ("etc/one", 1),
        ("etc/block", 512),
        ("etc/odd", 513),
        ("etc/big", 300_000),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let mut h = data_header(EntryType::Regular, 0o644, len as u64);
        b.append_data(&mut h, name, &data[..]).expect("file");
    }
    // Zeros become holes in the tree and come back as zeros.
    let zeros = vec![0u8; 200_000];
    let mut h = data_header(EntryType::Regular, 0o600, zeros.len() as u64);
    b.append_data(&mut h, "zeros", &zeros[..]).expect("zeros");
    let mut h = data_header(EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "etc/link", "one").expect("symlink");
    // A ustar header too.
    let mut h = Header::new_ustar();
    h.set_mode(0o640);
    h.set_size(5);
    b.append_data(&mut h, "ustar", &b"ustar"[..])
        .expect("ustar");
    let tar = b.into_inner().expect("finish");
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (6, 0));
    // Headers, not contents: far smaller than the tar.
    assert!(s.split.to_bytes().len() < 1024, "{:?}", s.split);
}

#[test]
fn gnu_long_names_and_links_come_back() {
    let long = format!("{}/file", "d".repeat(150));
    let target = format!("{}/target", "t".repeat(120));
    let tar = Tar::new()
        .file(&long, b"long named content")
        .symlink(&format!("{}/link", "l".repeat(130)), &target)
        .bytes();
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (1, 0));
}

#[test]
fn pax_headers_with_xattrs_come_back() {
    let tar = Tar::new()
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello"),
            ("mtime", b"1600000000.123456789"),
            ("path", "pax/".repeat(40).as_bytes()),
        ])
        .file("short-name-replaced-by-pax", b"pax content")
        .pax(&[("SCHILY.xattr.user.other", b"x")])
        .file("plain", b"second")
        .bytes();
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (2, 0));
}

#[test]
fn hardlinks_come_back() {
    let tar = Tar::new()
        .file("a", b"shared")
        .hardlink("b", "a")
        .file("c", b"after")
        .bytes();
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (2, 0));
}

#[test]
fn whiteouts_and_skipped_entries_keep_their_data() {
    let tar = Tar::new()
        .dir("d")
        .file("d/.wh.gone", b"data a whiteout should not have")
        .file("d/.wh..wh..opq", b"and an opaque marker")
        .file(".wh..wh.plnk/12.34", b"aufs metadata")
        .raw(b'2', b"d/link", b"target", 0o777, 0, b"symlink data")
        .raw(b'5', b"d/sub", b"", 0o755, 0, b"directory data")
        .bytes();
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (0, 0));
}

#[test]
fn replaced_paths_keep_the_earlier_content() {
    let tar = Tar::new()
        .file("twice", b"first version")
        .file("twice", b"second version, longer")
        // A hard link keeps the first inode alive; the path gets a new one.
        .file("linked", b"original")
        .hardlink("alias", "linked")
        .file("linked", b"replaced")
        // A file below a directory that a file replaces.
        .dir("dir")
        .file("dir/inner", b"inner content")
        .file("dir", b"now a file")
        // A file that a directory replaces.
        .file("becomes-dir", b"was a file")
        .dir("becomes-dir")
        // And a symlink.
        .file("becomes-link", b"was a file too")
        .symlink("becomes-link", "twice")
        .bytes();
    let s = round_trip(&tar);
    // Eight file records; five of their files were replaced.
    assert_eq!(s.split.counts(), (8, 5));
    assert_eq!(
        fs::read(s.root.join("twice")).expect("read"),
        b"second version, longer"
    );
}

#[test]
fn gnu_sparse_files_come_back() {
    let src = tempfile::tempdir().expect("tempdir");
    let sparse = src.path().join("sparse");
    {
        let mut f = fs::File::create(&sparse).expect("create");
        f.write_all(b"head").expect("write");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&[7u8; 5000]).expect("write");
        f.set_len(16 << 20).expect("set_len");
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.sparse(true);
    builder
        .append_path_with_name(&sparse, "sparse")
        .expect("append");
    builder
        .append_path_with_name(&sparse, "again")
        .expect("append");
    let tar = builder.into_inner().expect("finish");
    assert!(tar.len() < 1 << 20, "the tar is not sparse");
    let s = round_trip(&tar);
    assert_eq!(s.split.counts(), (2, 0));
}

#[test]
fn pax_sparse_files_come_back() {
    let s = round_trip(&pax_sparse_pair());
    assert_eq!(s.split.counts(), (2, 0));
}

#[test]
fn bytes_after_the_end_come_back() {
    let mut tar = Tar::new().file("f", b"content").bytes();
    tar.extend_from_slice(b"trailing garbage");
    tar.extend_from_slice(&[0u8; 20_000]);
    tar.extend((0..200_000u32).map(|i| (i * 7 % 256) as u8));
    round_trip(&tar);

    // Padded to a 10240-byte record, as GNU tar writes.
    let mut tar = Tar::new().file("f", b"content").bytes();
    tar.resize(tar.len().div_ceil(10240) * 10240, 0);
    round_trip(&tar);
}

#[test]
fn a_tar_without_end_blocks_comes_back() {
    let mut tar = Tar::new().file("f", b"content").file("g", b"more").bytes();
    tar.truncate(tar.len() - 1024);
    assert!(tar[tar.len() - 512..].iter().any(|&b| b != 0));
    round_trip(&tar);
    // And an empty stream.
    round_trip(b"");
}

#[test]
fn large_files_are_streamed() {
    let size = 64usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8 + 1).collect();
    let tar = Tar::new().file("big", &data).bytes();
    drop(data);
    let s = Split::of(&tar);
    // The content is a reference, not in the skeleton.
    assert!(s.split.to_bytes().len() < 1024, "{:?}", s.split);
    let mut reader = reassemble(&s.split, &s.root);
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0usize;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(buf[..n] == tar[at..at + n], "differs at {at}");
        at += n;
    }
    assert_eq!(at, tar.len());
}

#[test]
fn files_this_user_cannot_read_back_are_kept() {
    let tar = Tar::new()
        .raw(b'0', b"shadow", b"", 0o000, 0, b"secret")
        .raw(b'5', b"locked", b"", 0o600, 0, b"")
        .file("locked/inside", b"below a directory without x")
        .raw(b'0', b"write-only", b"", 0o200, 0, b"w")
        .bytes();
    let s = round_trip(&tar);
    if is_root() {
        assert_eq!(s.split.counts(), (3, 0));
    } else {
        // The 0000 and 0200 files were never referenced; the one below the 0600
        // directory was, and is kept.
        assert_eq!(s.split.counts(), (1, 1));
    }
    // So that the temporary directory can go.
    fs::set_permissions(s.root.join("locked"), fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_changed_tree_fails_with_a_clear_error() {
    let tar = Tar::new()
        .file("a", b"aaaa")
        .file("b", b"bbbb")
        .file("c", b"cccc")
        .bytes();
    let read_err = |s: &Split| s.read(4096).expect_err("reassembly should fail");

    let s = Split::of(&tar);
    fs::remove_file(s.root.join("b")).expect("rm");
    let e = read_err(&s);
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("b is missing"), "{e}");

    let s = Split::of(&tar);
    fs::write(s.root.join("b"), b"longer").expect("write");
    let e = read_err(&s);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("6 bytes where the layer had 4"),
        "{e}"
    );

    let s = Split::of(&tar);
    fs::write(s.root.join("b"), b"BBBB").expect("write");
    let e = read_err(&s);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("changed since"), "{e}");

    // A symlink in its place is not followed.
    let s = Split::of(&tar);
    fs::remove_file(s.root.join("b")).expect("rm");
    std::os::unix::fs::symlink("a", s.root.join("b")).expect("symlink");
    read_err(&s);

    // The error sticks.
    let s = Split::of(&tar);
    fs::remove_file(s.root.join("a")).expect("rm");
    let mut r = reassemble(&s.split, &s.root);
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    let first = loop {
        match r.read(&mut buf) {
            Ok(n) => seen += n,
            Err(e) => break e,
        }
    };
    assert_eq!(seen, 512, "only the first header came out");
    assert_eq!(r.read(&mut buf).expect_err("again").kind(), first.kind());

    // No tree at all.
    let mut r = reassemble(&s.split, &s.root.join("missing"));
    assert!(io::copy(&mut r, &mut io::sink()).is_err());
}

#[test]
fn a_failing_stream_fails_the_extraction() {
    /// Gives `data`, then an error where the stream should end.
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "digest mismatch",
                ));
            }
            let n = self.0.read(buf)?;
            Ok(n)
        }
    }
    let mut tar = Tar::new().file("f", b"x").bytes();
    tar.extend_from_slice(b"after the end");
    let dir = tempfile::tempdir().expect("tempdir");
    let e = extract_layer_split(Failing(&tar), dir.path(), &ExtractOptions::default())
        .expect_err("the stream failed");
    match e {
        Error::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::InvalidData),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_skeletons_are_refused() {
    let tar = Tar::new().file("a", b"aaaa").file("a", b"again").bytes();
    let s = Split::of(&tar);
    let bytes = s.split.to_bytes();
    assert!(TarSplit::from_bytes(&bytes).is_ok());
    for cut in [0, 4, 8, 9, bytes.len() / 2, bytes.len() - 1] {
        assert!(TarSplit::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(TarSplit::from_bytes(&longer).is_err());
    let mut other = bytes.clone();
    other[7] = b'9';
    assert!(TarSplit::from_bytes(&other).is_err());

    // Records that name a path outside the tree, or do not add up.
    let body = |records: &[u8]| {
        let mut enc = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(records).expect("deflate");
        let body = enc.finish().expect("deflate");
        let mut out = MAGIC.to_vec();
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.push(0);
        out
    };
    let file = |path: &[u8]| {
        let mut r = vec![TAG_FILE, path.len() as u8];
        r.extend_from_slice(path);
        r.extend_from_slice(&[4, 0, 0, 0, 0, 0]);
        r
    };
    let mut good = file(b"d/a");
    good.extend_from_slice(&[TAG_END, 4, 1]);
    assert!(TarSplit::from_bytes(&body(&good)).is_ok());
    for bad in [&b"../a"[..], b"/a", b"d//a", b"d/./a", b"a\0b"] {
        let mut r = file(bad);
        r.extend_from_slice(&[TAG_END, 4, 1]);
        assert!(TarSplit::from_bytes(&body(&r)).is_err(), "{bad:?}");
    }
    let mut r = file(b"a");
    r.extend_from_slice(&[TAG_END, 5, 1]);
    assert!(TarSplit::from_bytes(&body(&r)).is_err());
    assert!(TarSplit::from_bytes(&body(&[9])).is_err());
}
