//! Blob content as it streams from a registry, never held whole in memory:
//!
//! - [`BlobStream`]: the async body of a blob response, verified chunk by chunk against
//!   the descriptor's digest and size (the last chunk is followed by an error instead of
//!   the end when they differ);
//! - [`BlobReader`]: the same bytes as a blocking [`std::io::Read`], fed from the async
//!   response through a bounded channel (a small fixed number of chunks in flight), for
//!   a caller on a blocking thread; verified by a [`VerifyingReader`] on the reading side;
//! - [`VerifyingReader`]: any `Read` checked against a digest and size at its end;
//! - [`LayerReader`]: a layer blob decompressed by media type (gzip, zstd or plain tar)
//!   into the uncompressed tar stream, whose sha256 (the diff ID) is computed as it flows
//!   and checked against the image config's when given.
//!
//! Every reader returns the end of stream (`Ok(0)`) only after its checks passed; a
//! mismatch is an `io::ErrorKind::InvalidData` error in place of the end.

use std::io::{self, BufRead, BufReader, Read};

use bytes::Bytes;
use tokio::sync::mpsc;
use vic_core::{Error, Result};

use crate::digest::{Digest, Sha256, Verifier, invalid_data};
use crate::manifest::media_type;

/// How many body chunks a [`BlobReader`] lets the network run ahead of the reader.
const CHANNEL_CHUNKS: usize = 16;

/// A `Read` checked against a digest and size: hashes the bytes as they are read and,
/// at the inner reader's end, fails instead of ending when they are not the expected
/// content. Reading more than the expected size fails at once.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Verifier,
    state: State,
}

#[derive(Debug)]
enum State {
    Reading,
    Done,
    Failed(io::ErrorKind, String),
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against `digest` and, when given, `size`.
    pub fn new(inner: R, digest: Digest, size: Option<u64>) -> Self {
        Self::with_verifier(inner, Verifier::new("blob", digest, size))
    }

    /// Checks `inner` with a prepared [`Verifier`].
    pub fn with_verifier(inner: R, verifier: Verifier) -> Self {
        VerifyingReader {
            inner,
            verifier,
            state: State::Reading,
        }
    }

    /// The expected digest.
    pub fn digest(&self) -> &Digest {
        self.verifier.expected()
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.verifier.seen()
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Done => return Ok(0),
            State::Failed(kind, msg) => return Err(io::Error::new(*kind, msg.clone())),
            State::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let result = match self.inner.read(buf) {
            Ok(0) => self.verifier.finish().map(|()| 0),
            Ok(n) => self.verifier.update(&buf[..n]).map(|()| n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => Err(e),
        };
        match &result {
            Ok(0) => self.state = State::Done,
            Ok(_) => {}
            Err(e) => self.state = State::Failed(e.kind(), e.to_string()),
        }
        result
    }
}

/// The compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// The compression a layer media type announces; other media types are refused.
    pub fn from_media_type(mt: &str) -> Result<Compression> {
        let base = mt.split(';').next().unwrap_or("").trim();
        match base {
            media_type::DOCKER_LAYER_GZIP
            | media_type::DOCKER_FOREIGN_LAYER_GZIP
            | media_type::OCI_LAYER_GZIP
            | media_type::OCI_NONDIST_LAYER_GZIP => Ok(Compression::Gzip),
            media_type::OCI_LAYER_ZSTD | media_type::OCI_NONDIST_LAYER_ZSTD => {
                Ok(Compression::Zstd)
            }
            media_type::DOCKER_LAYER_TAR
            | media_type::OCI_LAYER_TAR
            | media_type::OCI_NONDIST_LAYER_TAR => Ok(Compression::None),
            other => Err(Error::NotSupported(format!(
                "layer media type {other:?} is not supported"
            ))),
        }
    }
}

/// A zstd decoder over all frames of a stream (skippable frames skipped), reading its
/// source to the end.
struct ZstdFrames<R: Read> {
    source: BufReader<R>,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
    frames: u64,
}

impl<R: Read> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames {
            source: BufReader::with_capacity(64 * 1024, source),
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
            frames: 0,
        }
    }
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    if self.frames == 0 {
                        return Err(invalid_data("zstd: empty stream".to_string()));
                    }
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.source) {
                    Ok(()) => {
                        self.in_frame = true;
                        self.frames += 1;
                    }
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = io::copy(
                            &mut (&mut self.source).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(invalid_data(
                                "zstd: truncated skippable frame".to_string(),
                            ));
                        }
                        self.frames += 1;
                    }
                    Err(e) => return Err(invalid_data(format!("zstd: {e}"))),
                }
                continue;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let want = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(want))
                    .map_err(|e| invalid_data(format!("zstd: {e}")))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.in_frame = false;
            } else {
                return Err(invalid_data("zstd: decoder made no progress".to_string()));
            }
        }
    }
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(Box<flate2::read::MultiGzDecoder<R>>),
    Zstd(Box<ZstdFrames<R>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::InvalidInput
                {
                    invalid_data(format!("gzip: {e}"))
                } else {
                    e
                }
            }),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// The uncompressed tar stream of a layer, from its (compressed) blob: decompresses by
/// [`Compression`], hashes the output as it flows and, at the end, checks the result
/// against the expected diff ID when one was given. The decoders read their source to
/// its end, so a [`VerifyingReader`] or [`BlobReader`] underneath has checked the blob
/// by the time this reader ends.
///
/// A tar reader may stop before the end of the stream (at the end-of-archive blocks):
/// call [`LayerReader::finish`] after it to read the rest and get the diff ID. Whatever
/// was extracted before `finish` returned is unverified.
pub struct LayerReader<R: Read> {
    /// The blob and its compression until the first read: decoders read headers as they
    /// are made, which must happen on the reading (blocking) thread.
    pending: Option<(R, Compression)>,
    decoder: Option<Decoder<R>>,
    hash: Option<Sha256>,
    expected_diff_id: Option<Digest>,
    result: std::result::Result<Option<LayerDigest>, (io::ErrorKind, String)>,
}

/// What a fully read layer turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDigest {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar in bytes.
    pub size: u64,
}

impl<R: Read> std::fmt::Debug for LayerReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerReader")
            .field("expected_diff_id", &self.expected_diff_id)
            .field("uncompressed", &self.hash.as_ref().map(Sha256::len))
            .finish_non_exhaustive()
    }
}

impl<R: Read> LayerReader<R> {
    /// Decompresses `blob` as `compression`; checks the diff ID at the end when
    /// `expected_diff_id` is given.
    pub fn new(blob: R, compression: Compression, expected_diff_id: Option<Digest>) -> Self {
        LayerReader {
            pending: Some((blob, compression)),
            decoder: None,
            hash: Some(Sha256::new()),
            expected_diff_id,
            result: Ok(None),
        }
    }

    /// Reads what is left of the stream (the blob is checked at its end) and returns the
    /// layer's diff ID and uncompressed size; fails when the blob or the diff ID do not
    /// match what was expected.
    pub fn finish(mut self) -> io::Result<LayerDigest> {
        io::copy(&mut self, &mut io::sink())?;
        match self.result {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(io::Error::other("layer stream did not end")),
            Err((kind, msg)) => Err(io::Error::new(kind, msg)),
        }
    }

    fn end(&mut self) -> io::Result<usize> {
        let Some(hash) = self.hash.take() else {
            return Ok(0);
        };
        let size = hash.len();
        let diff_id = hash.finish();
        if let Some(want) = &self.expected_diff_id
            && *want != diff_id
        {
            let msg =
                format!("layer diff ID mismatch: image config says {want}, content has {diff_id}");
            self.result = Err((io::ErrorKind::InvalidData, msg.clone()));
            return Err(invalid_data(msg));
        }
        self.result = Ok(Some(LayerDigest { diff_id, size }));
        Ok(0)
    }
}

impl<R: Read> Read for LayerReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Err((kind, msg)) = &self.result {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if buf.is_empty() || self.hash.is_none() {
            return Ok(0);
        }
        let decoder = match &mut self.decoder {
            Some(d) => d,
            None => {
                let Some((blob, compression)) = self.pending.take() else {
                    return Err(io::Error::other("layer reader has no source"));
                };
                self.decoder.insert(match compression {
                    Compression::None => Decoder::Plain(blob),
                    Compression::Gzip => {
                        Decoder::Gzip(Box::new(flate2::read::MultiGzDecoder::new(blob)))
                    }
                    Compression::Zstd => Decoder::Zstd(Box::new(ZstdFrames::new(blob))),
                })
            }
        };
        match decoder.read(buf) {
            Ok(0) => self.end(),
            Ok(n) => {
                if let Some(h) = self.hash.as_mut() {
                    h.update(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.result = Err((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

/// The async body of a blob response, verified as it streams.
#[derive(Debug)]
pub struct BlobStream {
    response: reqwest::Response,
    verifier: Verifier,
    done: bool,
}

impl BlobStream {
    pub(crate) fn new(response: reqwest::Response, verifier: Verifier) -> Self {
        BlobStream {
            response,
            verifier,
            done: false,
        }
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        self.verifier.expected()
    }

    /// The next chunk of the body; `None` at its end, which comes only after the size and
    /// digest were checked.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let chunk = self.response.chunk().await.map_err(|e| {
            Error::Unavailable(format!(
                "reading blob {}: {}",
                self.verifier.expected(),
                crate::client::chain(&e)
            ))
        })?;
        match chunk {
            Some(c) => {
                self.verifier.update(&c).map_err(verify_error)?;
                Ok(Some(c))
            }
            None => {
                self.done = true;
                self.verifier.finish().map_err(verify_error)?;
                Ok(None)
            }
        }
    }

    /// The blob as a blocking [`Read`] for a blocking thread: a task on the current Tokio
    /// runtime copies the body into a bounded channel; the reader hashes and checks it.
    /// Fails when called outside a Tokio runtime.
    pub fn into_reader(self) -> Result<BlobReader> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Internal("BlobStream::into_reader needs a Tokio runtime".to_string())
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let digest = self.verifier.expected().clone();
        handle.spawn(pump(self.response, tx, digest));
        Ok(BlobReader {
            inner: VerifyingReader::with_verifier(
                ChannelReader {
                    rx,
                    current: Bytes::new(),
                    ended: false,
                },
                self.verifier,
            ),
        })
    }
}

fn verify_error(e: io::Error) -> Error {
    Error::Internal(e.to_string())
}

/// Copies a response body into the channel until its end, an error, or the reader going.
async fn pump(
    mut response: reqwest::Response,
    tx: mpsc::Sender<io::Result<Bytes>>,
    digest: Digest,
) {
    loop {
        match response.chunk().await {
            Ok(Some(c)) => {
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                // The end is the sender going away after the last chunk.
                return;
            }
            Err(e) => {
                let msg = format!("reading blob {digest}: {}", crate::client::chain(&e));
                let _ = tx.send(Err(io::Error::other(msg))).await;
                return;
            }
        }
    }
}

/// The receiving end of the channel a blob body flows through.
#[derive(Debug)]
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.current = c,
                Some(Err(e)) => return Err(e),
                None => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A blob as a blocking [`Read`], checked against its digest and size (see
/// [`BlobStream::into_reader`]). Read it on a blocking thread (`spawn_blocking`, a plain
/// thread), never on an async task: it blocks while waiting for the network.
#[derive(Debug)]
pub struct BlobReader {
    inner: VerifyingReader<ChannelReader>,
}

impl BlobReader {
    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        self.inner.digest()
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn tar_like(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn verifying_reader_passes_good_content() {
        let data = tar_like(100_000);
        let r = VerifyingReader::new(
            Trickle(&data, 1000),
            Digest::of(&data),
            Some(data.len() as u64),
        );
        assert_eq!(read_all(r).unwrap(), data);
    }

    #[test]
    fn verifying_reader_fails_bad_content_at_the_end() {
        let data = tar_like(10_000);
        let mut r = VerifyingReader::new(Trickle(&data, 1000), Digest::of(b"other"), None);
        let mut buf = vec![0; 4000];
        // The bytes flow; the error takes the end's place, and stays.
        assert_eq!(r.read(&mut buf).unwrap(), 1000);
        let e = read_all(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(r.read(&mut buf).is_err());
        // Too long fails as soon as it is too long; too short at the end.
        let r = VerifyingReader::new(Trickle(&data, 1000), Digest::of(&data), Some(500));
        assert!(
            read_all(r)
                .unwrap_err()
                .to_string()
                .contains("size mismatch")
        );
        let r = VerifyingReader::new(Trickle(&data, 1000), Digest::of(&data), Some(20_000));
        assert!(read_all(r).unwrap_err().to_string().contains("got 10000"));
    }

    #[test]
    fn layer_reader_decompresses_and_computes_the_diff_id() {
        let tar = tar_like(300_000);
        let diff_id = Digest::of(&tar);
        for (compression, blob) in [
            (Compression::None, tar.clone()),
            (Compression::Gzip, gzip(&tar)),
            (Compression::Zstd, zstd(&tar)),
        ] {
            let verified = VerifyingReader::new(
                Trickle(&blob, 777),
                Digest::of(&blob),
                Some(blob.len() as u64),
            );
            let mut layer = LayerReader::new(verified, compression, Some(diff_id.clone()));
            assert_eq!(read_all(&mut layer).unwrap(), tar, "{compression:?}");
            let d = layer.finish().unwrap();
            assert_eq!(
                (d.diff_id, d.size),
                (diff_id.clone(), tar.len() as u64),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn layer_reader_handles_multi_member_streams_and_early_stops() {
        let (a, b) = (tar_like(5000), tar_like(7000));
        let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        let mut gz = gzip(&a);
        gz.extend(gzip(&b));
        let mut zs = zstd(&a);
        // A skippable frame between the two.
        zs.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        zs.extend_from_slice(&3u32.to_le_bytes());
        zs.extend_from_slice(b"xyz");
        zs.extend(zstd(&b));
        for (compression, blob) in [(Compression::Gzip, gz), (Compression::Zstd, zs)] {
            let mut layer = LayerReader::new(&blob[..], compression, None);
            // A consumer that stops early: finish reads the rest.
            let mut first = vec![0; 100];
            layer.read_exact(&mut first).unwrap();
            let d = layer.finish().unwrap();
            assert_eq!(d.diff_id, Digest::of(&whole), "{compression:?}");
            assert_eq!(d.size, whole.len() as u64);
        }
    }

    #[test]
    fn layer_reader_reports_bad_blobs_and_bad_diff_ids() {
        let tar = tar_like(50_000);
        let gz = gzip(&tar);
        // Blob digest mismatch: all the content comes out, then the error.
        let verified = VerifyingReader::new(&gz[..], Digest::of(b"not it"), Some(gz.len() as u64));
        let mut layer = LayerReader::new(verified, Compression::Gzip, None);
        let mut out = Vec::new();
        let e = layer.read_to_end(&mut out).unwrap_err();
        assert_eq!(out.len(), tar.len());
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(layer.finish().is_err());
        // Diff ID mismatch.
        let layer = LayerReader::new(&gz[..], Compression::Gzip, Some(Digest::of(b"other")));
        let e = layer.finish().unwrap_err();
        assert!(e.to_string().contains("diff ID mismatch"), "{e}");
        // Not what the media type says, or truncated.
        for (compression, blob) in [
            (Compression::Gzip, tar.clone()),
            (Compression::Zstd, tar.clone()),
            (Compression::Gzip, gz[..gz.len() / 2].to_vec()),
            (Compression::Zstd, zstd(&tar)[..100].to_vec()),
            (Compression::Zstd, Vec::new()),
        ] {
            let e = LayerReader::new(&blob[..], compression, None)
                .finish()
                .unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData
                        | io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::InvalidInput
                ),
                "{compression:?}: {e:?}"
            );
        }
        // Trailing junk after a gzip member is an error, not ignored.
        let mut junk = gz.clone();
        junk.extend_from_slice(b"junk");
        assert!(
            LayerReader::new(&junk[..], Compression::Gzip, None)
                .finish()
                .is_err()
        );
    }

    #[test]
    fn compression_by_media_type() {
        use crate::manifest::media_type as mt;
        assert_eq!(
            Compression::from_media_type(mt::DOCKER_LAYER_GZIP).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type(mt::OCI_LAYER_GZIP).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_media_type(mt::OCI_LAYER_ZSTD).unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type(mt::OCI_LAYER_TAR).unwrap(),
            Compression::None
        );
        assert!(matches!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
            Err(Error::NotSupported(_))
        ));
    }

    #[test]
    fn channel_reader_reassembles_chunks_and_passes_errors() {
        let (tx, rx) = mpsc::channel(2);
        let feeder = std::thread::spawn(move || {
            for c in [&b"ab"[..], b"", b"cde", b"f"] {
                tx.blocking_send(Ok(Bytes::copy_from_slice(c))).unwrap();
            }
            tx.blocking_send(Err(io::Error::other("connection reset")))
                .unwrap();
        });
        let mut r = ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        let mut out = vec![0; 6];
        r.read_exact(&mut out).unwrap();
        assert_eq!(out, b"abcdef");
        assert!(
            r.read(&mut [0; 4])
                .unwrap_err()
                .to_string()
                .contains("reset")
        );
        feeder.join().unwrap();
    }
}
