//! `POST /containers/{id}/attach`: the live stream of a container's process.
//!
//! The client asks for `Upgrade: tcp` and gets `101 Switching Protocols`; the connection
//! then carries the process's output (Docker's multiplexed framing without a TTY, raw
//! bytes with one) and the client's input (raw bytes; a half-close closes the process's
//! stdin). The guest side is the tether's attach protocol, whose output frames use the
//! same stream ids. The detach keys (default ctrl-p ctrl-q) end the attach and leave the
//! container running. A client that does not ask for an upgrade gets the output as a
//! plain streamed body.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;
use vic_core::lifecycle::AttachTicket;
use vic_core::{Engine, Error};
use vic_tether::attach::Frame;
use vic_tether::logs::Stream;

use crate::http::{Reply, full, query_get};

/// What the client asked for.
#[derive(Clone, Debug)]
struct Options {
    stream: bool,
    logs: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    detach: Vec<u8>,
}

/// Parses Docker's detach-key notation: comma-separated `ctrl-<key>` or single
/// characters (`ctrl-p,ctrl-q`, `ctrl-a,x`).
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, Error> {
    let bad = |k: &str| Error::InvalidArgument(format!("Invalid detach keys ({k}) provided"));
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|k| {
            if let Some(c) = k.strip_prefix("ctrl-") {
                let [b] = c.as_bytes() else {
                    return Err(bad(k));
                };
                match b.to_ascii_lowercase() {
                    l @ b'a'..=b'z' => Ok(l - b'a' + 1),
                    b'@' => Ok(0),
                    b'[' => Ok(27),
                    b'\\' => Ok(28),
                    b']' => Ok(29),
                    b'^' => Ok(30),
                    b'_' => Ok(31),
                    _ => Err(bad(k)),
                }
            } else {
                match k.as_bytes() {
                    [b] => Ok(*b),
                    _ => Err(bad(k)),
                }
            }
        })
        .collect()
}

/// `POST /containers/{id}/attach`.
pub async fn attach(
    engine: &Arc<Engine>,
    key: &str,
    q: &[(String, String)],
    req: Request<Incoming>,
) -> Result<Reply, Error> {
    let flag = |k: &str| matches!(query_get(q, k), Some("1" | "true" | "True"));
    let opts = Options {
        stream: flag("stream"),
        logs: flag("logs"),
        stdin: flag("stdin"),
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        detach: parse_detach_keys(query_get(q, "detachKeys").unwrap_or("ctrl-p,ctrl-q"))?,
    };
    if !opts.stream && !opts.logs {
        return Err(Error::InvalidArgument(
            "Bad parameters: you must choose at least one of stream or logs".into(),
        ));
    }
    let ticket = engine.prepare_attach(key).await?;
    let content_type = if ticket.container.config.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let engine = engine.clone();
    if req.headers().contains_key(UPGRADE) {
        let on = hyper::upgrade::on(req);
        tokio::spawn(async move {
            match on.await {
                Ok(up) => {
                    let (r, w) = tokio::io::split(TokioIo::new(up));
                    session(&engine, ticket, w, Some(r), opts).await;
                }
                Err(e) => debug!(error = %e, "attach upgrade failed"),
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
        return Ok(r);
    }
    // No upgrade: output only, as a streamed body.
    let (tx, body) = crate::http::channel_body(16);
    let (w, mut r) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        session(&engine, ticket, w, None::<tokio::io::Empty>, opts).await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// Output as the client gets it: Docker's multiplexed framing (`[stream, 0, 0, 0, len
/// BE u32]` before the bytes) without a TTY, raw with one. `docker logs` frames alike.
pub(crate) fn client_bytes(tty: bool, stream: Stream, data: &[u8], out: &mut Vec<u8>) {
    if !tty {
        out.push(stream as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
}

async fn session<W, R>(
    engine: &Engine,
    ticket: AttachTicket,
    mut out: W,
    input: Option<R>,
    opts: Options,
) where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let tty = ticket.container.config.tty;
    let wanted = |s: Stream| match s {
        Stream::Stdout => opts.stdout,
        Stream::Stderr => opts.stderr,
    };
    if opts.logs {
        match engine.container_logs(&ticket.container.id).await {
            Ok((_, records)) => {
                let mut b = Vec::new();
                for r in records.iter().filter(|r| wanted(r.stream)) {
                    client_bytes(tty, r.stream, &r.data, &mut b);
                }
                if out.write_all(&b).await.is_err() {
                    return;
                }
            }
            Err(e) => debug!(error = %e, "attach: logs unavailable"),
        }
    }
    if !opts.stream {
        let _ = out.shutdown().await;
        return;
    }
    let guest = match engine.connect_attach(&ticket).await {
        Ok(g) => g,
        Err(e) => {
            debug!(container = %ticket.container.id, error = %e, "attach: guest unreachable");
            // A guest that failed before its process started says why in its status:
            // the client sees it on stderr, as a failed start shows on dockerd.
            if let Ok(v) = engine.container(&ticket.container.id).await
                && !v.container.state.error.is_empty()
                && opts.stderr
            {
                let mut b = Vec::new();
                let msg = format!("vic: {}\n", v.container.state.error);
                client_bytes(tty, Stream::Stderr, msg.as_bytes(), &mut b);
                let _ = out.write_all(&b).await;
            }
            let _ = out.shutdown().await;
            return;
        }
    };
    drop(ticket);
    let (mut gr, mut gw) = tokio::io::split(guest);

    let from_guest = async {
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            let mut send = Vec::new();
            loop {
                match Frame::decode(&buf) {
                    Ok(Some((frame, n))) => {
                        buf.drain(..n);
                        match frame {
                            Frame::Stdout(d) if wanted(Stream::Stdout) => {
                                client_bytes(tty, Stream::Stdout, &d, &mut send)
                            }
                            Frame::Stderr(d) if wanted(Stream::Stderr) => {
                                client_bytes(tty, Stream::Stderr, &d, &mut send)
                            }
                            Frame::Exit(_) => {
                                let _ = out.write_all(&send).await;
                                return;
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            if !send.is_empty() && out.write_all(&send).await.is_err() {
                return;
            }
            match gr.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };

    // `true` when the client detached.
    let to_guest = async {
        let Some(mut input) = input.filter(|_| opts.stdin) else {
            return std::future::pending::<bool>().await;
        };
        let mut chunk = vec![0u8; 32 * 1024];
        let mut held = 0usize;
        loop {
            let n = match input.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let _ = gw.write_all(&Frame::CloseStdin.encode()).await;
                    return false;
                }
                Ok(n) => n,
            };
            let mut data = Vec::with_capacity(n);
            for &b in &chunk[..n] {
                if !opts.detach.is_empty() && b == opts.detach[held] {
                    held += 1;
                    if held == opts.detach.len() {
                        return true;
                    }
                    continue;
                }
                data.extend_from_slice(&opts.detach[..held]);
                held = 0;
                if !opts.detach.is_empty() && b == opts.detach[0] {
                    held = 1;
                    continue;
                }
                data.push(b);
            }
            if !data.is_empty() && gw.write_all(&Frame::Stdin(data).encode()).await.is_err() {
                return false;
            }
        }
    };

    {
        tokio::pin!(from_guest, to_guest);
        let mut input_done = false;
        loop {
            tokio::select! {
                () = &mut from_guest => break,
                detached = &mut to_guest, if !input_done => {
                    input_done = true;
                    if detached {
                        debug!("attach: client detached");
                        break;
                    }
                }
            }
        }
    }
    let _ = out.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_as_docker_writes_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-_").unwrap(), vec![0, 31]);
        assert!(parse_detach_keys("").unwrap().is_empty());
        for bad in ["ctrl-", "ctrl-pq", "xy", "ctrl-1"] {
            assert_eq!(
                parse_detach_keys(bad).unwrap_err().http_status(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn output_is_framed_without_a_tty_and_raw_with_one() {
        let mut b = Vec::new();
        client_bytes(false, Stream::Stderr, b"hi", &mut b);
        assert_eq!(b, [2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        let mut b = Vec::new();
        client_bytes(true, Stream::Stdout, b"hi", &mut b);
        assert_eq!(b, b"hi");
    }
}
