//! Layer pipeline throughput, the CPU and disk half of `docker pull`: a layer blob in
//! memory → [`vic_registry::LayerReader`] (decompression and the diff ID's sha256) →
//! [`vic_layer::extract_layer`] into a new folder, then [`LayerReader::finish`] to check
//! the diff ID. Throughput is counted in uncompressed (tar) bytes.
//!
//! The layer, built in memory and the same every run: one file of [`BIG_MIB`] MiB of
//! incompressible bytes and [`SMALL_FILES`] small text files (1 to 16 KiB) in 20
//! folders. Three blobs of it: gzip level 6 (what `docker push` makes), gzip level 0
//! (stored, as the `big` test image's layer) and zstd (ruzstd's fastest level).
//!
//! Each timed run extracts into a new folder under the temporary folder (`TMPDIR`, so
//! `TMPDIR=/dev/shm` takes the disk out); see [`Folders`].
//!
//! A second group times the parts, to tell where the time goes: decompression and
//! hashing alone (into a sink), and extraction alone (of the tar in memory, no hash).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Write as _};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use vic_layer::{ExtractOptions, extract_layer};
use vic_registry::{Compression, Digest, LayerReader};

/// Size of the incompressible file, in MiB.
const BIG_MIB: usize = 64;
/// Number of small text files.
const SMALL_FILES: usize = 300;
/// Folders the small files are spread over.
const SMALL_DIRS: usize = 20;

/// The text of small file `i`: numbered lines, 1 to 16 KiB, compressible as source or
/// configuration files are.
fn small_file(i: usize) -> Vec<u8> {
    let len = 1024 + (i * 7919) % (15 * 1024);
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0;
    while out.len() < len {
        let _ = writeln!(out, "file {i} line {line}: the quick brown fox jumps");
        line += 1;
    }
    out.truncate(len);
    out
}

/// Appends one entry with a fixed owner (0:0) and time (0).
fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("tar path");
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).expect("tar entry in memory");
}

/// The layer tar.
fn layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "big/", tar::EntryType::Directory, 0o755, &[]);
    let big = vic_tests::fixtures::seeded_bytes_from(BIG_MIB << 20, 0x9e37_79b9_7f4a_7c15);
    append(&mut b, "big/random", tar::EntryType::Regular, 0o644, &big);
    append(&mut b, "small/", tar::EntryType::Directory, 0o755, &[]);
    for d in 0..SMALL_DIRS {
        append(
            &mut b,
            &format!("small/d{d:02}/"),
            tar::EntryType::Directory,
            0o755,
            &[],
        );
        for i in (d..SMALL_FILES).step_by(SMALL_DIRS) {
            append(
                &mut b,
                &format!("small/d{d:02}/f{i:03}.txt"),
                tar::EntryType::Regular,
                0o644,
                &small_file(i),
            );
        }
    }
    b.into_inner().expect("tar in memory")
}

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(level));
    enc.write_all(data).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// The folders extracted into. Each is kept, less its big file, until the bench ends:
/// removing hundreds of files per run would make ext4 slow to create the next run's (it
/// skips inodes deleted in the last seconds, one lookup each), which is the bench's own
/// churn and not what a pull meets.
struct Folders {
    parent: TempDir,
    kept: RefCell<Vec<TempDir>>,
}

impl Folders {
    fn new() -> Folders {
        Folders {
            parent: tempfile::tempdir().expect("scratch folder"),
            kept: RefCell::new(Vec::new()),
        }
    }

    /// A new empty folder, after removing the last one's big file (whose dirty pages go
    /// with it, unwritten: as a pull, the runs write to the page cache and never sync).
    fn fresh(&self) -> TempDir {
        if let Some(last) = self.kept.borrow().last() {
            let _ = fs::remove_file(last.path().join("big/random"));
        }
        tempfile::tempdir_in(self.parent.path()).expect("layer folder")
    }

    fn keep(&self, dir: TempDir) {
        self.kept.borrow_mut().push(dir);
    }
}

fn pipeline(c: &mut Criterion) {
    let tar = layer_tar();
    let diff_id = Digest::of(&tar);
    let blobs = [
        ("gzip-6", Compression::Gzip, gzip(&tar, 6)),
        ("gzip-0 (stored)", Compression::Gzip, gzip(&tar, 0)),
        (
            "zstd (fastest)",
            Compression::Zstd,
            ruzstd::encoding::compress_to_vec(
                &tar[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
        ),
    ];
    let opts = ExtractOptions::for_current_user();
    let folders = Folders::new();

    let mut group = c.benchmark_group("layer pipeline");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    for (name, compression, blob) in &blobs {
        eprintln!(
            "layer pipeline/{name}: tar {} bytes, blob {} bytes",
            tar.len(),
            blob.len()
        );
        group.bench_function(name.to_string(), |b| {
            b.iter_batched(
                || folders.fresh(),
                |dest| {
                    let mut layer =
                        LayerReader::new(&blob[..], *compression, Some(diff_id.clone()));
                    let stats = extract_layer(&mut layer, dest.path(), &opts).expect("extract");
                    let digest = layer.finish().expect("layer digest");
                    assert_eq!(digest.diff_id, diff_id);
                    assert_eq!(stats.files as usize, 1 + SMALL_FILES);
                    folders.keep(dest);
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("layer pipeline parts");
    group.throughput(Throughput::Bytes(tar.len() as u64));
    let plain = ("plain tar", Compression::None, tar.clone());
    for (name, compression, blob) in blobs.iter().chain([&plain]) {
        group.bench_function(format!("{name}: decompress + sha256 only"), |b| {
            b.iter(|| {
                let mut layer = LayerReader::new(&blob[..], *compression, Some(diff_id.clone()));
                io::copy(&mut layer, &mut io::sink()).expect("decompress");
                layer.finish().expect("layer digest")
            })
        });
    }
    group.bench_function("extract only (tar in memory)", |b| {
        b.iter_batched(
            || folders.fresh(),
            |dest| {
                extract_layer(&tar[..], dest.path(), &opts).expect("extract");
                folders.keep(dest);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = pipeline
}
criterion_main!(benches);
