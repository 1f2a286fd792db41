//! The container's log: the serial port's backing file, `<vm-folder>/output.log`.
//!
//! The tether appends one record per chunk of output, framed so that `docker logs` can
//! tell the streams apart and show timestamps:
//!
//! ```text
//! +--------+----------------------+-----------------+-----------+
//! | stream | time                 | length          | data      |
//! | 1 byte | 8 bytes LE u64       | 4 bytes LE u32  | length    |
//! |        | nanoseconds since    |                 | bytes     |
//! |        | the Unix epoch (UTC) |                 |           |
//! +--------+----------------------+-----------------+-----------+
//! ```
//!
//! The stream is 1 for stdout and 2 for stderr (Docker's numbers); with a TTY there is
//! only stdout. A record is written with one `write`, but a reader may still see a
//! record's beginning before its end: [`Reader`] treats a partial record at the end of
//! the file as "nothing more yet", which is what following needs.
//!
//! Filtering (`since`, `until`, `tail`) is the engine's business; [`Record::time`] and
//! [`Reader::tail`] make it short.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The log file's name in the VM folder.
pub const LOG_FILE: &str = "output.log";

/// The size of a record's header.
pub const HEADER_LEN: usize = 13;

/// The largest record a reader accepts (a writer splits larger chunks).
pub const MAX_RECORD: usize = 1 << 20;

/// Which output stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stream {
    /// Standard output (also the TTY).
    Stdout = 1,
    /// Standard error.
    Stderr = 2,
}

impl Stream {
    /// The stream with Docker's number `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// One chunk of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its stream.
    pub stream: Stream,
    /// When the tether read it, in nanoseconds since the Unix epoch.
    pub nanos: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

impl Record {
    /// When the tether read it.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.nanos)
    }

    /// The record in the file's framing.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.data.len());
        b.push(self.stream as u8);
        b.extend_from_slice(&self.nanos.to_le_bytes());
        b.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.data);
        b
    }

    /// The record at the beginning of `buf` and its length in bytes; `Ok(None)` when
    /// `buf` holds only part of one.
    pub fn decode(buf: &[u8]) -> io::Result<Option<(Self, usize)>> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let stream = Stream::from_u8(buf[0]).ok_or_else(|| invalid("bad stream id in log"))?;
        let nanos = u64::from_le_bytes(buf[1..9].try_into().map_err(|_| invalid("header"))?);
        let len = u32::from_le_bytes(buf[9..13].try_into().map_err(|_| invalid("header"))?);
        let len = len as usize;
        if len > MAX_RECORD {
            return Err(invalid("log record too large"));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let data = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        Ok(Some((
            Self {
                stream,
                nanos,
                data,
            },
            HEADER_LEN + len,
        )))
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends records to a log.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
}

impl Writer<File> {
    /// A writer appending to the log at `path` (created when missing).
    pub fn append(path: &Path) -> io::Result<Self> {
        Ok(Self::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))
    }
}

impl<W: Write> Writer<W> {
    /// A writer on `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// Append `data` on `stream`, stamped now.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        self.write_at(stream, now_nanos(), data)
    }

    /// Append `data` on `stream`, stamped `nanos`; chunks larger than [`MAX_RECORD`]
    /// become several records, an empty one none.
    pub fn write_at(&mut self, stream: Stream, nanos: u64, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_RECORD) {
            let r = Record {
                stream,
                nanos,
                data: chunk.to_vec(),
            };
            self.out.write_all(&r.encode())?;
        }
        Ok(())
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Reads records from a log, possibly while the tether still writes it.
#[derive(Debug)]
pub struct Reader<R: Read> {
    src: R,
    buf: Vec<u8>,
    start: usize,
}

impl Reader<File> {
    /// A reader of the log at `path`, from its beginning.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::new(File::open(path)?))
    }
}

impl<R: Read> Reader<R> {
    /// A reader of `src`.
    pub fn new(src: R) -> Self {
        Self {
            src,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The next record, or `None` at the current end of the log (including a record
    /// that is only partly written: a later call returns it once it is complete).
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            if let Some((r, n)) = Record::decode(&self.buf[self.start..])? {
                self.start += n;
                return Ok(Some(r));
            }
            // Compact, then read more.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + 64 * 1024, 0);
            let n = loop {
                match self.src.read(&mut self.buf[have..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e);
                }
            };
            self.buf.truncate(have + n);
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// The next record, waiting for one (checking every `poll`) while `done()` says
    /// the writer may still add some; `None` once `done()` is true and the log is read
    /// to its end. Use it for `docker logs -f`, with `done` asking whether the
    /// container has exited.
    pub fn next_record_follow(
        &mut self,
        poll: Duration,
        done: &mut dyn FnMut() -> bool,
    ) -> io::Result<Option<Record>> {
        loop {
            if let Some(r) = self.next_record()? {
                return Ok(Some(r));
            }
            if done() {
                // The writer may have finished between the read and the check.
                return self.next_record();
            }
            std::thread::sleep(poll);
        }
    }

    /// The last `n` records up to the current end of the log (all of them when `n` is
    /// `None`); the reader is then at the end, ready to follow.
    pub fn tail(&mut self, n: Option<usize>) -> io::Result<Vec<Record>> {
        let mut v = VecDeque::new();
        while let Some(r) = self.next_record()? {
            if n == Some(0) {
                continue;
            }
            if n.is_some_and(|n| v.len() == n) {
                v.pop_front();
            }
            v.push_back(r);
        }
        Ok(v.into())
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = io::Result<Record>;

    /// The records up to the current end of the log.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn records_round_trip_in_order() {
        let mut w = Writer::new(Vec::new());
        w.write_at(Stream::Stdout, 1, b"hello\n").unwrap();
        w.write_at(Stream::Stderr, 2, b"err\n").unwrap();
        // An empty chunk writes nothing.
        w.write_at(Stream::Stdout, 3, b"").unwrap();
        let bytes = w.get_mut().clone();
        assert_eq!(bytes.len(), 2 * HEADER_LEN + 10);
        // The framing is the documented one.
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..9], &1u64.to_le_bytes());
        assert_eq!(&bytes[9..13], &6u32.to_le_bytes());
        let v: Vec<Record> = Reader::new(&bytes[..]).map(|r| r.unwrap()).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].stream, v[0].nanos, &v[0].data[..]),
            (Stream::Stdout, 1, &b"hello\n"[..])
        );
        assert_eq!(
            (v[1].stream, &v[1].data[..]),
            (Stream::Stderr, &b"err\n"[..])
        );
        assert_eq!(v[0].time(), UNIX_EPOCH + Duration::from_nanos(1));
    }

    #[test]
    fn a_partial_record_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut w = File::create(&path).unwrap();
        let enc = Record {
            stream: Stream::Stdout,
            nanos: 7,
            data: b"abcdef".to_vec(),
        }
        .encode();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write_all(&enc[..5]).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write_all(&enc[5..15]).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write_all(&enc[15..]).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().data, b"abcdef");
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn follow_sees_later_records_and_stops_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut w = Writer::append(&path).unwrap();
        w.write(Stream::Stdout, b"one").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let p = path.clone();
        let writer = std::thread::spawn(move || {
            let mut w = Writer::append(&p).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            w.write(Stream::Stderr, b"two").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            w.write(Stream::Stdout, b"three").unwrap();
            d.store(true, Ordering::SeqCst);
        });
        let mut r = Reader::open(&path).unwrap();
        let mut got = Vec::new();
        let mut is_done = || done.load(Ordering::SeqCst);
        while let Some(rec) = r
            .next_record_follow(Duration::from_millis(5), &mut is_done)
            .unwrap()
        {
            got.push((rec.stream, String::from_utf8(rec.data).unwrap()));
        }
        writer.join().unwrap();
        assert_eq!(
            got,
            [
                (Stream::Stdout, "one".to_owned()),
                (Stream::Stderr, "two".to_owned()),
                (Stream::Stdout, "three".to_owned())
            ]
        );
    }

    #[test]
    fn tail_keeps_the_last_records_and_timestamps_increase() {
        let mut f = tempfile::tempfile().unwrap();
        {
            let mut w = Writer::new(&mut f);
            for i in 0..10 {
                w.write(Stream::Stdout, format!("{i}\n").as_bytes())
                    .unwrap();
            }
        }
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut r = Reader::new(&mut f);
        let t = r.tail(Some(3)).unwrap();
        let s: Vec<_> = t.iter().map(|r| r.data.clone()).collect();
        assert_eq!(s, [b"7\n".to_vec(), b"8\n".to_vec(), b"9\n".to_vec()]);
        assert!(t[0].nanos <= t[2].nanos);
        f.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(Reader::new(&mut f).tail(Some(0)).unwrap(), []);
        f.seek(SeekFrom::Start(0)).unwrap();
        assert_eq!(Reader::new(&mut f).tail(None).unwrap().len(), 10);
    }

    #[test]
    fn garbage_is_an_error_and_big_chunks_are_split() {
        let bad = [9u8; 20];
        assert_eq!(
            Reader::new(&bad[..]).next_record().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut w = Writer::new(Vec::new());
        w.write_at(Stream::Stdout, 0, &vec![b'x'; MAX_RECORD + 1])
            .unwrap();
        let v: Vec<_> = Reader::new(&w.get_mut()[..]).map(|r| r.unwrap()).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].data.len(), 1);
    }
}
