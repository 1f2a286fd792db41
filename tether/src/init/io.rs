//! The process's output and input: copies output into the log and to attach clients,
//! and serves the attach socket (see [`crate::attach`] for the protocol).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::sys;
use crate::attach::{Frame, read_frame, write_frame};
use crate::logs::{Stream, Writer};

/// Threads of the tether do little; a small stack keeps an idle guest small.
const STACK: usize = 128 * 1024;

/// How long a client may not read before it is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Clients {
    next: u64,
    list: Vec<(u64, UnixStream)>,
    /// Set once the process has exited and its output is drained.
    exit: Option<i32>,
    /// Clients that ever connected.
    seen: u64,
}

/// Where stdin frames go.
#[derive(Debug)]
enum StdinState {
    /// The process does not run yet: input is held, and whether a close came.
    Pending { held: Vec<u8>, closed: bool },
    /// The process's stdin.
    Open(File),
    /// Closed (or the session has none).
    Closed,
}

/// The process's stdio seen from the tether: the log, attach clients, stdin.
#[derive(Debug)]
pub struct Hub {
    log: Mutex<Writer<File>>,
    clients: Mutex<Clients>,
    connected: Condvar,
    /// Where stdin frames go: held until the process's stdin exists, then the stdin
    /// pipe or the pty master, until closed.
    stdin: Mutex<StdinState>,
    /// The session has a TTY (its stdin is the pty master, which is also the output).
    tty: bool,
    /// The pty master, for resizes.
    pty: Mutex<Option<File>>,
    stdin_once: bool,
    /// The process's PID once it runs (0 before), for signal frames.
    pid: std::sync::atomic::AtomicI32,
}

impl Hub {
    /// A hub writing the log to `log`; `stdin_once` closes stdin when the first client
    /// that sent some leaves.
    pub fn new(log: Writer<File>, stdin_once: bool, tty: bool) -> Self {
        Self {
            log: Mutex::new(log),
            clients: Mutex::new(Clients::default()),
            connected: Condvar::new(),
            stdin: Mutex::new(StdinState::Pending {
                held: Vec::new(),
                closed: false,
            }),
            tty,
            pty: Mutex::new(None),
            stdin_once,
            pid: std::sync::atomic::AtomicI32::new(0),
        }
    }

    /// Set the process's PID, which signal frames go to.
    pub fn set_pid(&self, pid: libc::pid_t) {
        self.pid.store(pid, std::sync::atomic::Ordering::SeqCst);
    }

    /// Set the pty master that resizes apply to.
    pub fn set_pty(&self, master: File) {
        *lock(&self.pty) = Some(master);
    }

    fn has_pty(&self) -> bool {
        self.tty
    }

    /// Set what stdin frames feed, once the process runs; input that came before is
    /// written first, and a close that came before closes it.
    pub fn set_stdin(&self, stdin: Option<File>) {
        let mut st = lock(&self.stdin);
        let prior = std::mem::replace(&mut *st, StdinState::Closed);
        if let (Some(mut f), StdinState::Pending { held, closed }) = (stdin, prior)
            && f.write_all(&held).is_ok()
            && !closed
        {
            *st = StdinState::Open(f);
        }
    }

    /// Record output: into the log, then to every client.
    pub fn output(&self, stream: Stream, data: &[u8]) {
        if let Err(e) = lock(&self.log).write(stream, data) {
            eprintln!("tether: writing the log: {e}");
        }
        let frame = match stream {
            Stream::Stdout => Frame::Stdout(data.to_vec()),
            Stream::Stderr => Frame::Stderr(data.to_vec()),
        };
        let wire = frame.encode();
        let mut c = lock(&self.clients);
        c.list.retain_mut(|(_, s)| s.write_all(&wire).is_ok());
    }

    /// Wait until a first client has connected.
    pub fn wait_for_client(&self, timeout: Duration) -> bool {
        let c = lock(&self.clients);
        let (c, _) = self
            .connected
            .wait_timeout_while(c, timeout, |c| c.seen == 0)
            .unwrap_or_else(|e| e.into_inner());
        c.seen > 0
    }

    /// Send the exit frame to every client and close them; later clients get it at once.
    pub fn finish(&self, exit_code: i32) {
        let wire = Frame::Exit(exit_code).encode();
        let mut c = lock(&self.clients);
        c.exit = Some(exit_code);
        for (_, mut s) in c.list.drain(..) {
            let _ = s.write_all(&wire);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn close_stdin(&self) {
        let mut st = lock(&self.stdin);
        match &mut *st {
            StdinState::Pending { closed, .. } => *closed = true,
            _ => *st = StdinState::Closed,
        }
    }

    fn add_client(self: &Arc<Self>, stream: UnixStream) {
        let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
        let Ok(writer) = stream.try_clone() else {
            return;
        };
        let id = {
            let mut c = lock(&self.clients);
            c.seen += 1;
            self.connected.notify_all();
            if let Some(code) = c.exit {
                let mut w = writer;
                let _ = write_frame(&mut w, &Frame::Exit(code));
                return;
            }
            c.next += 1;
            let id = c.next;
            c.list.push((id, writer));
            id
        };
        let hub = self.clone();
        let spawned = std::thread::Builder::new()
            .name("attach-client".into())
            .stack_size(STACK)
            .spawn(move || hub.serve_client(id, stream));
        if spawned.is_err() {
            lock(&self.clients).list.retain(|(i, _)| *i != id);
        }
    }

    fn serve_client(&self, id: u64, mut stream: UnixStream) {
        let mut sent_stdin = false;
        while let Ok(Some(frame)) = read_frame(&mut stream) {
            match frame {
                Frame::Stdin(data) => {
                    sent_stdin = true;
                    let mut stdin = lock(&self.stdin);
                    match &mut *stdin {
                        StdinState::Pending { held, .. } => held.extend_from_slice(&data),
                        StdinState::Open(f) => {
                            if f.write_all(&data).is_err() {
                                // The process closed its stdin.
                                *stdin = StdinState::Closed;
                            }
                        }
                        StdinState::Closed => {}
                    }
                }
                Frame::CloseStdin => {
                    // A pty's master is also the output: it stays open.
                    if !self.has_pty() {
                        self.close_stdin();
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(p) = lock(&self.pty).as_ref()
                        && let Err(e) = sys::set_winsize(p.as_raw_fd(), rows, cols)
                    {
                        eprintln!("tether: resize: {e}");
                    }
                }
                Frame::Signal(sig) => {
                    let pid = self.pid.load(std::sync::atomic::Ordering::SeqCst);
                    // SAFETY: kill with a PID of our own child (never 0 or negative).
                    if pid > 0 && unsafe { libc::kill(pid, sig) } < 0 {
                        eprintln!("tether: signal {sig}: {}", std::io::Error::last_os_error());
                    }
                }
                // Output frames from a client mean nothing.
                Frame::Stdout(_) | Frame::Stderr(_) | Frame::Exit(_) => {}
            }
        }
        lock(&self.clients).list.retain(|(i, _)| *i != id);
        if sent_stdin && self.stdin_once && !self.has_pty() {
            self.close_stdin();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accept attach clients on `listener` for as long as the tether lives.
pub fn serve_attach(hub: Arc<Hub>, listener: UnixListener) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("attach".into())
        .stack_size(STACK)
        .spawn(move || {
            for s in listener.incoming() {
                match s {
                    Ok(s) => hub.add_client(s),
                    Err(e) => eprintln!("tether: attach accept: {e}"),
                }
            }
        })?;
    Ok(())
}

/// Copy `src` into the hub as `stream` until its end; then send on `done`.
pub fn copy_output(
    hub: Arc<Hub>,
    mut src: File,
    stream: Stream,
    done: Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("copy-{stream:?}"))
        .stack_size(STACK)
        .spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hub.output(stream, &buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: the pty's last slave is closed.
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })?;
    Ok(())
}
