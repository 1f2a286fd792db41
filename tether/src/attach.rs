//! The live stream: the tether's attach socket, `<vm-folder>/attach.sock`.
//!
//! A Unix stream socket; any number of clients may connect. Both directions carry
//! frames of a 5-byte header and a payload:
//!
//! ```text
//! +------+-------------------+---------+
//! | type | length            | payload |
//! | 1 B  | 4 bytes BE u32    |         |
//! +------+-------------------+---------+
//! ```
//!
//! | type   | direction        | payload                                   |
//! | ------ | ---------------- | ----------------------------------------- |
//! | `0x01` | tether → client  | stdout bytes (all output with a TTY)      |
//! | `0x02` | tether → client  | stderr bytes                              |
//! | `0x03` | tether → client  | exit status, 4 bytes BE i32; then EOF     |
//! | `0x10` | client → tether  | stdin bytes                               |
//! | `0x11` | client → tether  | close stdin (empty)                       |
//! | `0x12` | client → tether  | TTY resize: rows, columns (2 × BE u16)    |
//! | `0x13` | client → tether  | send a signal to the process (BE i32)     |
//!
//! A client gets the output produced while it is connected (the log file has the rest;
//! with `Session::attach_wait` the process starts only once the first client is
//! there). Stdin frames are written to the process's stdin (ignored when the session has
//! no `open_stdin`); a close-stdin frame, or the disconnect of a client that sent stdin
//! when the session has `stdin_once`, closes it. When the process has exited and its
//! output is drained, the tether sends an exit frame to every client and closes the
//! sockets. The tether writes to a client that does not read for 10 s no more.
//!
//! The output stream ids are Docker's, so the endpoint turns `0x01`/`0x02` frames into
//! its multiplexed stream (`[id, 0, 0, 0, len BE u32]`) by rewriting the header, or
//! passes the payload raw with a TTY.
//!
//! Socket paths are limited to 107 bytes; a client whose VM folder path is longer can
//! connect through `/proc/self/fd/<fd of the folder>/attach.sock`.

use std::io::{self, Read, Write};

/// The socket's name in the VM folder.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// The size of a frame's header.
pub const HEADER_LEN: usize = 5;

/// The largest payload accepted.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One frame of the attach protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Output on stdout (or the TTY).
    Stdout(Vec<u8>),
    /// Output on stderr.
    Stderr(Vec<u8>),
    /// The process exited with this status; the last frame.
    Exit(i32),
    /// Input for the process.
    Stdin(Vec<u8>),
    /// Close the process's stdin.
    CloseStdin,
    /// Set the TTY's size.
    Resize {
        /// Rows (height).
        rows: u16,
        /// Columns (width).
        cols: u16,
    },
    /// Send this signal to the process (`docker kill`, `docker stop`).
    Signal(i32),
}

impl Frame {
    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Stdout(_) => 0x01,
            Self::Stderr(_) => 0x02,
            Self::Exit(_) => 0x03,
            Self::Stdin(_) => 0x10,
            Self::CloseStdin => 0x11,
            Self::Resize { .. } => 0x12,
            Self::Signal(_) => 0x13,
        }
    }

    /// The frame on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Self::Stdout(d) | Self::Stderr(d) | Self::Stdin(d) => d.clone(),
            Self::Exit(c) | Self::Signal(c) => c.to_be_bytes().to_vec(),
            Self::CloseStdin => Vec::new(),
            Self::Resize { rows, cols } => [rows.to_be_bytes(), cols.to_be_bytes()].concat(),
        };
        let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
        b.push(self.kind());
        b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        b.extend_from_slice(&payload);
        b
    }

    /// The frame at the beginning of `buf` and its length on the wire; `Ok(None)` when
    /// `buf` holds only part of one.
    pub fn decode(buf: &[u8]) -> io::Result<Option<(Self, usize)>> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(invalid("attach frame too large"));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let p = &buf[HEADER_LEN..HEADER_LEN + len];
        let f = match buf[0] {
            0x01 => Self::Stdout(p.to_vec()),
            0x02 => Self::Stderr(p.to_vec()),
            0x03 => Self::Exit(i32::from_be_bytes(
                p.try_into().map_err(|_| invalid("bad exit frame"))?,
            )),
            0x10 => Self::Stdin(p.to_vec()),
            0x11 => Self::CloseStdin,
            0x12 if p.len() == 4 => Self::Resize {
                rows: u16::from_be_bytes([p[0], p[1]]),
                cols: u16::from_be_bytes([p[2], p[3]]),
            },
            0x13 => Self::Signal(i32::from_be_bytes(
                p.try_into().map_err(|_| invalid("bad signal frame"))?,
            )),
            _ => return Err(invalid("bad attach frame")),
        };
        Ok(Some((f, HEADER_LEN + len)))
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// Write `frame` to `w`.
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode())
}

/// Read one frame from `r`; `None` at end of stream between frames.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(invalid("attach frame too large"));
    }
    let mut buf = vec![0u8; HEADER_LEN + len];
    buf[..HEADER_LEN].copy_from_slice(&h);
    r.read_exact(&mut buf[HEADER_LEN..])?;
    match Frame::decode(&buf)? {
        Some((f, _)) => Ok(Some(f)),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(b"err".to_vec()),
            Frame::Exit(-1),
            Frame::Stdin(b"in".to_vec()),
            Frame::CloseStdin,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Signal(10),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn wire_format_is_the_documented_one() {
        assert_eq!(
            Frame::Stdout(b"hi".to_vec()).encode(),
            [1, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(
            Frame::Resize { rows: 1, cols: 2 }.encode(),
            [0x12, 0, 0, 0, 4, 0, 1, 0, 2]
        );
        assert_eq!(Frame::Exit(143).encode(), [3, 0, 0, 0, 4, 0, 0, 0, 143]);
        assert_eq!(Frame::Signal(15).encode(), [0x13, 0, 0, 0, 4, 0, 0, 0, 15]);
    }

    #[test]
    fn partial_and_bad_frames() {
        let wire = Frame::Stdin(b"abc".to_vec()).encode();
        assert_eq!(Frame::decode(&wire[..6]).unwrap(), None);
        assert_eq!(Frame::decode(&wire).unwrap().unwrap().1, wire.len());
        assert!(Frame::decode(&[0x7f, 0, 0, 0, 0]).is_err());
        assert!(Frame::decode(&[0x12, 0, 0, 0, 1, 0]).is_err());
        assert!(Frame::decode(&[0x13, 0, 0, 0, 2, 0, 9]).is_err());
        assert!(read_frame(&mut &wire[..4]).is_err());
    }
}
