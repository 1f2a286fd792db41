//! Tar-split: the layer tar given back byte for byte from its extracted tree.
//!
//! While [`crate::extract_layer_split`] unpacks a layer it records the tar stream's
//! skeleton: every byte it reads (headers, PAX and GNU long-name entries, padding, the
//! end-of-archive blocks and whatever follows them) except the content of regular
//! files, which is replaced by a reference to the file that the tree now holds. The
//! skeleton and the tree together give back the original stream with [`reassemble`],
//! so its digest is still the layer's diff id (Docker's overlay2 driver keeps the same
//! kind of metadata, with vbatts' tar-split, for `docker save` and pushes).
//!
//! A reference names the file by its path in the tree, its length there, where the
//! stored bytes lie in it (one range for a plain file, several for a sparse one) and
//! the CRC-32 of those bytes, which reassembly checks. Content that the tree cannot
//! give back stays in the skeleton:
//!
//! - the data of entries that the extractor does not write as a regular file (whiteouts
//!   with data, skipped AUFS metadata, data of links, directories and devices), and of
//!   files that the extracting user could not read back (no owner read permission);
//! - the content of a file that a later entry of the layer replaces, or removes with
//!   its directory: it is read back from the tree just before that, and kept whole;
//! - as a non-root user, the content of files below a directory that its entry leaves
//!   without owner search permission: read back before the directory gets its mode.
//!
//! # Format
//!
//! [`TarSplit::to_bytes`] writes the magic `VICSPLT1`, then the length (an unsigned
//! LEB128 varint) and bytes of a raw DEFLATE stream of records, then the table of
//! kept contents: a varint count, and per entry the varint ordinal of the file record
//! it stands for (ascending), a varint length and the bytes. The records are a one-byte
//! tag and varints:
//!
//! - `1` raw: length, bytes;
//! - `2` file: path length, path (relative, `/`-separated), length of the file in the
//!   tree, CRC-32 (4 bytes, little-endian), count of ranges and per range its offset
//!   and length in the file; a count of 0 stands for the one range `(0, length)`;
//! - `0` end: the length of the whole tar stream and the count of file records.
//!
//! Runs of zeros in headers compress well, so a skeleton is a few dozen bytes per
//! entry.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::Crc;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use vic_core::Error;

use crate::path::display;
use crate::sys;

/// The start of a serialized skeleton, with its format version.
const MAGIC: &[u8; 8] = b"VICSPLT1";
const TAG_END: u8 = 0;
const TAG_RAW: u8 = 1;
const TAG_FILE: u8 = 2;
/// Raw bytes gathered before they are written as one record.
const RAW_CHUNK: usize = 64 * 1024;
/// The longest path a file record may hold.
const MAX_PATH: u64 = 64 * 1024;

/// The skeleton of one layer tar: with the extracted tree, [`reassemble`] gives the
/// tar back byte for byte. Cheap to clone.
#[derive(Clone)]
pub struct TarSplit {
    inner: Arc<Inner>,
}

struct Inner {
    /// The DEFLATE-compressed records.
    body: Vec<u8>,
    /// The content of file records that the tree cannot give back, by ordinal.
    kept: BTreeMap<u64, Vec<u8>>,
    /// The length of the tar stream.
    tar_size: u64,
    /// The count of file records.
    files: u64,
}

impl fmt::Debug for TarSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarSplit")
            .field("tar_size", &self.inner.tar_size)
            .field("files", &self.inner.files)
            .field("body_bytes", &self.inner.body.len())
            .field("kept", &self.inner.kept.len())
            .finish()
    }
}

impl TarSplit {
    /// The length of the tar stream that [`reassemble`] gives.
    pub fn tar_size(&self) -> u64 {
        self.inner.tar_size
    }

    /// The serialized skeleton (see the [module](self) documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let inner = &*self.inner;
        let kept: usize = inner.kept.values().map(|v| v.len() + 20).sum();
        let mut out = Vec::with_capacity(MAGIC.len() + 10 + inner.body.len() + 10 + kept);
        out.extend_from_slice(MAGIC);
        put_varint(&mut out, inner.body.len() as u64);
        out.extend_from_slice(&inner.body);
        put_varint(&mut out, inner.kept.len() as u64);
        for (ordinal, content) in &inner.kept {
            put_varint(&mut out, *ordinal);
            put_varint(&mut out, content.len() as u64);
            out.extend_from_slice(content);
        }
        out
    }

    /// Reads a skeleton written by [`TarSplit::to_bytes`] and checks all of it: its
    /// records, the paths they name (relative, without `..`), and its totals. A
    /// malformed one is [`Error::Internal`].
    pub fn from_bytes(bytes: &[u8]) -> Result<TarSplit, Error> {
        let bad = |why: &str| Error::Internal(format!("malformed layer split: {why}"));
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("unknown format"))?;
        let mut rest = rest;
        let body_len = take_len(&mut rest).ok_or_else(|| bad("truncated"))?;
        let body = rest
            .get(..body_len)
            .ok_or_else(|| bad("truncated"))?
            .to_vec();
        rest = &rest[body_len..];
        let count = read_varint(&mut rest).map_err(|_| bad("truncated"))?;
        let mut kept = BTreeMap::new();
        for _ in 0..count {
            let ordinal = read_varint(&mut rest).map_err(|_| bad("truncated"))?;
            if kept
                .last_key_value()
                .is_some_and(|(&last, _)| last >= ordinal)
            {
                return Err(bad("kept contents out of order"));
            }
            let len = take_len(&mut rest).ok_or_else(|| bad("truncated"))?;
            let content = rest.get(..len).ok_or_else(|| bad("truncated"))?.to_vec();
            rest = &rest[len..];
            kept.insert(ordinal, content);
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }

        // One pass over the records: they must decode and add up.
        let mut records = DeflateDecoder::new(&body[..]);
        let (mut tar_size, mut files) = (0u64, 0u64);
        let (end_size, end_files) = loop {
            match next_record(&mut records).map_err(|e| bad(&e.to_string()))? {
                Record::Raw(len) => {
                    let copied = io::copy(&mut (&mut records).take(len), &mut io::sink())
                        .map_err(|e| bad(&e.to_string()))?;
                    if copied != len {
                        return Err(bad("truncated"));
                    }
                    tar_size = tar_size.checked_add(len).ok_or_else(|| bad("too large"))?;
                }
                Record::File(file) => {
                    let stored = file.stored();
                    if let Some(content) = kept.get(&files)
                        && content.len() as u64 != stored
                    {
                        return Err(bad("kept content of the wrong length"));
                    }
                    tar_size = tar_size
                        .checked_add(stored)
                        .ok_or_else(|| bad("too large"))?;
                    files += 1;
                }
                Record::End { tar_size, files } => break (tar_size, files),
            }
        };
        let mut byte = [0u8];
        if records.read(&mut byte).map_err(|e| bad(&e.to_string()))? != 0 {
            return Err(bad("records after the end"));
        }
        if (end_size, end_files) != (tar_size, files) {
            return Err(bad("totals do not match"));
        }
        if kept.keys().next_back().is_some_and(|&o| o >= files) {
            return Err(bad("kept content for no file"));
        }
        Ok(TarSplit {
            inner: Arc::new(Inner {
                body,
                kept,
                tar_size,
                files,
            }),
        })
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, usize) {
        (self.inner.files, self.inner.kept.len())
    }
}

/// The tar stream of `split` from the files below `root`, the directory the layer was
/// extracted into. File contents are read as the stream goes, a caller's buffer at a
/// time, never held whole.
///
/// Each referenced file is opened below `root` without following symlinks and must be
/// the regular file it was, with the same length and content (CRC-32): otherwise, and
/// when it is gone, reading fails with an [`io::Error`] that names it (`NotFound`,
/// `InvalidData`, `UnexpectedEof`) and keeps failing. Blocks: the reads are file reads.
pub fn reassemble(split: &TarSplit, root: &Path) -> Reassembler {
    Reassembler {
        root: root.to_path_buf(),
        root_fd: None,
        kept: split.inner.clone(),
        records: DeflateDecoder::new(Cursor::new(Body(split.inner.clone()))),
        ordinal: 0,
        state: State::Next,
        failed: None,
    }
}

/// The reader that [`reassemble`] returns.
pub struct Reassembler {
    root: PathBuf,
    root_fd: Option<OwnedFd>,
    kept: Arc<Inner>,
    records: DeflateDecoder<Cursor<Body>>,
    /// The ordinal of the next file record.
    ordinal: u64,
    state: State,
    /// The error that stopped the stream, returned again by every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("root", &self.root)
            .field("ordinal", &self.ordinal)
            .finish_non_exhaustive()
    }
}

/// The record bytes of a shared skeleton, for a `Cursor`.
struct Body(Arc<Inner>);

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        &self.0.body
    }
}

enum State {
    /// Between records.
    Next,
    /// Inside a raw record: this many bytes left.
    Raw(u64),
    /// Giving the kept content of file record `ordinal`, from `at`.
    Kept {
        ordinal: u64,
        at: usize,
    },
    /// Giving a file of the tree.
    File(Box<Reading>),
    Done,
}

/// A referenced file being read.
struct Reading {
    file: File,
    path: Vec<u8>,
    ranges: Vec<(u64, u64)>,
    /// The current range, and how far into it.
    range: usize,
    done: u64,
    crc: Crc,
    want_crc: u32,
}

impl Read for Reassembler {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, message)) = &self.failed {
            return Err(io::Error::new(*kind, message.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.step(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = Some((e.kind(), e.to_string()));
                self.state = State::Done;
                Err(e)
            }
        }
    }
}

impl Reassembler {
    /// Gives the next bytes of the stream; 0 only at its end.
    fn step(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                State::Done => return Ok(0),
                State::Next => {
                    self.state = match next_record(&mut self.records).map_err(corrupt)? {
                        Record::Raw(len) => State::Raw(len),
                        Record::File(file) => {
                            let ordinal = self.ordinal;
                            self.ordinal += 1;
                            if self.kept.kept.contains_key(&ordinal) {
                                State::Kept { ordinal, at: 0 }
                            } else {
                                State::File(Box::new(self.open(file)?))
                            }
                        }
                        Record::End { .. } => State::Done,
                    };
                }
                State::Raw(0) => self.state = State::Next,
                State::Raw(left) => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = self.records.read(&mut buf[..want]).map_err(corrupt)?;
                    if n == 0 {
                        return Err(corrupt(io::ErrorKind::UnexpectedEof.into()));
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                State::Kept { ordinal, at } => {
                    let content = self.kept.kept.get(ordinal).map_or(&[][..], |c| &c[*at..]);
                    if content.is_empty() {
                        self.state = State::Next;
                        continue;
                    }
                    let n = content.len().min(buf.len());
                    buf[..n].copy_from_slice(&content[..n]);
                    *at += n;
                    return Ok(n);
                }
                State::File(reading) => {
                    if let Some(n) = reading.read(buf)? {
                        return Ok(n);
                    }
                    self.state = State::Next;
                }
            }
        }
    }

    /// Opens the file of `record` and checks that it is still the one extracted.
    fn open(&mut self, record: FileRecord) -> io::Result<Reading> {
        let shown = display(&record.path);
        if self.root_fd.is_none() {
            let root = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(&self.root)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("open the layer tree {}: {e}", self.root.display()),
                    )
                })?;
            self.root_fd = Some(root.into());
        }
        let Some(root) = self.root_fd.as_ref() else {
            return Err(io::Error::other("the layer tree is not open"));
        };
        let file = open_beneath(root.as_fd(), &record.path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(e.kind(), format!("{shown} is missing from the layer tree"))
            } else {
                io::Error::new(e.kind(), format!("open {shown} in the layer tree: {e}"))
            }
        })?;
        let meta = file
            .metadata()
            .map_err(|e| io::Error::new(e.kind(), format!("inspect {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{shown} in the layer tree is no longer a regular file"),
            ));
        }
        if meta.size() != record.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{shown} in the layer tree has changed: {} bytes where the layer had {}",
                    meta.size(),
                    record.size
                ),
            ));
        }
        Ok(Reading {
            file,
            path: record.path,
            ranges: record.ranges,
            range: 0,
            done: 0,
            crc: Crc::new(),
            want_crc: record.crc,
        })
    }
}

impl Reading {
    /// The next bytes of the file's ranges, or `None` once all were given (and their
    /// CRC checked).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        while let Some(&(offset, length)) = self.ranges.get(self.range) {
            let left = length - self.done;
            if left == 0 {
                self.range += 1;
                self.done = 0;
                continue;
            }
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let n = loop {
                match self.file.read_at(&mut buf[..want], offset + self.done) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
            .map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", display(&self.path))))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} in the layer tree is shorter than the layer had it",
                        display(&self.path)
                    ),
                ));
            }
            self.crc.update(&buf[..n]);
            self.done += n as u64;
            return Ok(Some(n));
        }
        if self.crc.sum() != self.want_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} in the layer tree has changed since it was extracted",
                    display(&self.path)
                ),
            ));
        }
        Ok(None)
    }
}

fn corrupt(e: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed layer split: {e}"),
    )
}

/// Opens the regular file `path` (relative, `/`-separated) below `root` for reading,
/// without following a symlink anywhere on the way and without blocking on a fifo.
fn open_beneath(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<File> {
    let name =
        |comp: &[u8]| CString::new(comp).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut comps = path.split(|&b| b == b'/');
    let mut last = comps.next().unwrap_or_default();
    let mut dir: Option<OwnedFd> = None;
    for comp in comps {
        let at = dir.as_ref().map_or(root, |d| d.as_fd());
        dir = Some(sys::open_dir_path(at, &name(last)?)?);
        last = comp;
    }
    let at = dir.as_ref().map_or(root, |d| d.as_fd());
    let fd = sys::openat(
        at,
        &name(last)?,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
        0,
    )?;
    Ok(File::from(fd))
}

/// Reads the `ranges` of the file `path` below `root`, for a kept content.
fn read_ranges(root: BorrowedFd<'_>, path: &[u8], ranges: &[(u64, u64)]) -> io::Result<Vec<u8>> {
    let file = open_beneath(root, path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut out = vec![0u8; usize::try_from(total).map_err(io::Error::other)?];
    let mut at = 0usize;
    for &(offset, length) in ranges {
        let length = usize::try_from(length).map_err(io::Error::other)?;
        file.read_exact_at(&mut out[at..at + length], offset)?;
        at += length;
    }
    Ok(out)
}

// --- records ----------------------------------------------------------------------------

enum Record {
    Raw(u64),
    File(FileRecord),
    End { tar_size: u64, files: u64 },
}

struct FileRecord {
    path: Vec<u8>,
    size: u64,
    crc: u32,
    ranges: Vec<(u64, u64)>,
}

impl FileRecord {
    /// The bytes of the tar stream that the file gives.
    fn stored(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }
}

fn invalid_data(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// Decodes the next record; a raw record's bytes follow in `r`.
fn next_record(r: &mut impl Read) -> io::Result<Record> {
    let mut tag = [0u8];
    r.read_exact(&mut tag)?;
    match tag[0] {
        TAG_END => Ok(Record::End {
            tar_size: read_varint(r)?,
            files: read_varint(r)?,
        }),
        TAG_RAW => Ok(Record::Raw(read_varint(r)?)),
        TAG_FILE => {
            let path_len = read_varint(r)?;
            if path_len == 0 || path_len > MAX_PATH {
                return Err(invalid_data("bad path length"));
            }
            let mut path = vec![0u8; path_len as usize];
            r.read_exact(&mut path)?;
            if !path_is_safe(&path) {
                return Err(invalid_data("unsafe path"));
            }
            let size = read_varint(r)?;
            let mut crc = [0u8; 4];
            r.read_exact(&mut crc)?;
            let count = read_varint(r)?;
            let mut ranges = Vec::new();
            if count == 0 {
                ranges.push((0, size));
            }
            let mut end = 0u64;
            for _ in 0..count {
                let offset = read_varint(r)?;
                let length = read_varint(r)?;
                if offset < end {
                    return Err(invalid_data("ranges out of order"));
                }
                end = offset
                    .checked_add(length)
                    .ok_or_else(|| invalid_data("range too large"))?;
                ranges.push((offset, length));
            }
            if end > size || ranges.iter().any(|r| r.1 == 0) {
                return Err(invalid_data("bad ranges"));
            }
            Ok(Record::File(FileRecord {
                path,
                size,
                crc: u32::from_le_bytes(crc),
                ranges,
            }))
        }
        _ => Err(invalid_data("unknown record")),
    }
}

/// A path that stays below the root: relative, with no empty, `.` or `..` component
/// and no NUL.
fn path_is_safe(path: &[u8]) -> bool {
    !path.contains(&0)
        && path
            .split(|&b| b == b'/')
            .all(|c| !matches!(c, b"" | b"." | b".."))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(r: &mut impl Read) -> io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b)?;
        let part = u64::from(b[0] & 0x7f);
        if shift == 63 && part > 1 {
            break;
        }
        v |= part << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(invalid_data("bad number"))
}

/// A varint length that fits what is left of `rest`'s address space.
fn take_len(rest: &mut &[u8]) -> Option<usize> {
    read_varint(rest).ok().and_then(|n| usize::try_from(n).ok())
}

// --- recording ------------------------------------------------------------------------

/// Builds a [`TarSplit`] while the extractor reads the tar through a [`Tee`].
///
/// Bytes read while the extractor has said where in the current file they go
/// ([`Recorder::content_at`]) are the file's content and only noted; all others are
/// raw. The extractor closes each file with [`Recorder::end_file`] before the stream
/// moves on.
pub(crate) struct Recorder {
    records: DeflateEncoder<Vec<u8>>,
    /// Raw bytes not yet written as a record.
    pending: Vec<u8>,
    tar_size: u64,
    /// Where the next content bytes go in the current file.
    at: Option<u64>,
    /// The content of the current file seen so far.
    open: Option<(Vec<(u64, u64)>, Crc)>,
    /// Raw bytes came in the middle of a file's content.
    disorder: bool,
    files: u64,
    /// The file records whose file is in the tree, by path.
    refs: BTreeMap<Vec<u8>, Ref>,
    kept: BTreeMap<u64, Vec<u8>>,
}

struct Ref {
    ordinal: u64,
    ranges: Vec<(u64, u64)>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Recorder {
            records: DeflateEncoder::new(Vec::new(), flate2::Compression::default()),
            pending: Vec::new(),
            tar_size: 0,
            at: None,
            open: None,
            disorder: false,
            files: 0,
            refs: BTreeMap::new(),
            kept: BTreeMap::new(),
        }
    }

    /// The bytes read next are the current file's, from offset `at`; `None`: they are
    /// raw again.
    pub(crate) fn content_at(&mut self, at: Option<u64>) {
        self.at = at;
    }

    fn saw(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.tar_size += data.len() as u64;
        let n = data.len() as u64;
        if let Some(at) = self.at {
            let (ranges, crc) = self.open.get_or_insert_with(|| (Vec::new(), Crc::new()));
            match ranges.last_mut() {
                Some((offset, length)) if *offset + *length == at => *length += n,
                _ => ranges.push((at, n)),
            }
            crc.update(data);
            self.at = Some(at + n);
            return Ok(());
        }
        if self.open.is_some() {
            self.disorder = true;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= RAW_CHUNK && self.open.is_none() {
            self.flush_raw()?;
        }
        Ok(())
    }

    fn flush_raw(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut head = vec![TAG_RAW];
        put_varint(&mut head, self.pending.len() as u64);
        self.records.write_all(&head)?;
        self.records.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Ends the content of the file at `path` (its components), `size` bytes long in
    /// the tree. A file whose content was not noted (empty, or left raw) gets no record.
    pub(crate) fn end_file(&mut self, path: &[Vec<u8>], size: u64) -> io::Result<()> {
        self.at = None;
        let Some((ranges, crc)) = self.open.take() else {
            return Ok(());
        };
        if std::mem::take(&mut self.disorder) {
            return Err(io::Error::other(
                "tar stream bytes arrived inside a file's content",
            ));
        }
        self.flush_raw()?;
        let path = path.join(&b'/');
        let mut rec = vec![TAG_FILE];
        put_varint(&mut rec, path.len() as u64);
        rec.extend_from_slice(&path);
        put_varint(&mut rec, size);
        rec.extend_from_slice(&crc.sum().to_le_bytes());
        if ranges == [(0, size)] {
            put_varint(&mut rec, 0);
        } else {
            put_varint(&mut rec, ranges.len() as u64);
            for &(offset, length) in &ranges {
                put_varint(&mut rec, offset);
                put_varint(&mut rec, length);
            }
        }
        self.records.write_all(&rec)?;
        let ordinal = self.files;
        self.files += 1;
        self.refs.insert(path, Ref { ordinal, ranges });
        Ok(())
    }

    /// Keeps the content of every referenced file at or below `path` (components)
    /// before the extractor replaces or removes it.
    pub(crate) fn release(&mut self, root: BorrowedFd<'_>, path: &[Vec<u8>]) -> io::Result<()> {
        let path = path.join(&b'/');
        let mut below = path.clone();
        below.push(b'/');
        let gone: Vec<Vec<u8>> = self
            .refs
            .range(path.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| **k == path || k.starts_with(&below))
            .cloned()
            .collect();
        self.keep(root, gone)
    }

    /// Keeps the content of every referenced file below one of the directories
    /// `blocked` (paths, `""` for the root), which reassembly could not enter.
    pub(crate) fn release_below(
        &mut self,
        root: BorrowedFd<'_>,
        blocked: &BTreeSet<Vec<u8>>,
    ) -> io::Result<()> {
        if blocked.is_empty() {
            return Ok(());
        }
        let gone: Vec<Vec<u8>> = self
            .refs
            .keys()
            .filter(|k| {
                blocked.contains(&b""[..])
                    || k.iter()
                        .enumerate()
                        .any(|(i, &b)| b == b'/' && blocked.contains(&k[..i]))
            })
            .cloned()
            .collect();
        self.keep(root, gone)
    }

    fn keep(&mut self, root: BorrowedFd<'_>, paths: Vec<Vec<u8>>) -> io::Result<()> {
        for path in paths {
            let Some(r) = self.refs.remove(&path) else {
                continue;
            };
            let content = read_ranges(root, &path, &r.ranges).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("read back {:?}: {e}", OsStr::from_bytes(&path)),
                )
            })?;
            self.kept.insert(r.ordinal, content);
        }
        Ok(())
    }

    /// The skeleton, once the stream was read to its end.
    pub(crate) fn finish(&mut self) -> io::Result<TarSplit> {
        if self.open.is_some() {
            return Err(io::Error::other("a file's content was left open"));
        }
        self.flush_raw()?;
        let mut end = vec![TAG_END];
        put_varint(&mut end, self.tar_size);
        put_varint(&mut end, self.files);
        self.records.write_all(&end)?;
        let records = std::mem::replace(
            &mut self.records,
            DeflateEncoder::new(Vec::new(), flate2::Compression::default()),
        );
        let body = records.finish()?;
        Ok(TarSplit {
            inner: Arc::new(Inner {
                body,
                kept: std::mem::take(&mut self.kept),
                tar_size: self.tar_size,
                files: self.files,
            }),
        })
    }
}

/// The reader between the layer stream and the `tar` crate: passes every byte on and
/// shows it to the [`Recorder`].
pub(crate) struct Tee<R> {
    inner: R,
    recorder: std::rc::Rc<std::cell::RefCell<Recorder>>,
}

impl<R> Tee<R> {
    pub(crate) fn new(inner: R, recorder: std::rc::Rc<std::cell::RefCell<Recorder>>) -> Self {
        Tee { inner, recorder }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.recorder
            .try_borrow_mut()
            .map_err(|_| io::Error::other("layer split recorder in use"))?
            .saw(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
