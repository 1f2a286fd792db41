//! The guest init (Linux): what `tether <vm-folder> <rootfs>` does.
//!
//! The runner has already put the tether in new mount, PID, UTS, IPC and network
//! namespaces (and a user namespace when not root), as PID 1 of its PID namespace. The
//! tether then:
//!
//! 1. reads the [`GuestConfig`] through the [`FileTransport`] of the VM folder and
//!    reports `starting`;
//! 2. opens the log (`output.log`) and binds the attach socket (`attach.sock`) in the VM
//!    folder;
//! 3. prepares the root: private mounts, the rootfs bound onto itself, pivot_root, proc,
//!    read-only sysfs, a tmpfs /dev with the host's basic nodes, devpts and /dev/shm,
//!    the volumes; /etc/hostname, /etc/hosts, /etc/resolv.conf; the host name; `lo` up;
//! 4. resolves the user in the image's /etc/passwd and /etc/group and the command in
//!    `$PATH`, and forks the process (a session leader, on a pty when asked);
//! 5. reports `running`, then forwards signals to the process and reaps every child;
//! 6. when the process ends, kills what is left of the guest, drains the output,
//!    reports `exited` with the status, tells attach clients, and exits with the same
//!    status.
//!
//! A failure before the process runs is reported as `exited` with `error` set (exit
//! status 127 or 126 for a command that cannot be found or executed, 128 otherwise).

mod io;
mod process;
mod rootfs;
mod sys;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use crate::attach::ATTACH_SOCKET;
use crate::logs::{LOG_FILE, Stream, Writer};
use crate::protocol::{GuestConfig, GuestState, GuestStatus};
use crate::transport::{FileTransport, Transport};
use crate::user::{self, DEFAULT_PATH, env_get};

use self::io::Hub;
use self::process::{Spawn, Stdio};

/// How long a guest that failed before its process started waits for the attach
/// client that `attach_wait` expects, to tell it why.
const FAILURE_ATTACH_WAIT: Duration = Duration::from_secs(2);

/// How long `attach_wait` holds the process back for its first attach client.
const ATTACH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The signals forwarded to the process.
pub const FORWARDED: [libc::c_int; 10] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGPWR,
    libc::SIGCONT,
];

/// How long to wait for the output to drain after the guest's processes are gone.
const DRAIN: Duration = Duration::from_secs(2);

/// Why the process did not run: its exit status and message.
#[derive(Debug)]
pub struct Failure {
    /// The exit status to report.
    pub code: i32,
    /// The message for `status.error`.
    pub message: String,
}

impl Failure {
    /// A failure to prepare the guest (exit status 128).
    pub fn setup(message: String) -> Self {
        Self { code: 128, message }
    }
}

/// Whether `id` is mapped by a `/proc/self/{uid,gid}_map` text (lines `inside outside
/// count`); an unreadable or empty map counts as the identity.
fn id_mapped(maps: &str, id: u32) -> bool {
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            let (inside, _, count) = (f.next()??, f.next()??, f.next()??);
            Some((inside, count))
        })
        .collect();
    ranges.is_empty()
        || ranges
            .iter()
            .any(|&(inside, count)| (inside..inside + count).contains(&u64::from(id)))
}

/// Run the guest init on `vm_folder` and `rootfs`; returns the tether's exit status
/// (the process's).
pub fn run(vm_folder: &Path, rootfs: &Path) -> i32 {
    // The tether changes directories: relative paths are resolved now.
    let (vm_folder, rootfs) = match (
        std::fs::canonicalize(vm_folder),
        std::fs::canonicalize(rootfs),
    ) {
        (Ok(v), Ok(r)) => (v, r),
        (v, r) => {
            eprintln!("tether: bad folders: {v:?}, {r:?}");
            return 125;
        }
    };
    let (vm_folder, rootfs) = (vm_folder.as_path(), rootfs.as_path());
    let transport = match FileTransport::open(vm_folder) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tether: {}", chain(&e));
            return 125;
        }
    };
    let report = |s: &GuestStatus| {
        if let Err(e) = transport.write_status(s) {
            eprintln!("tether: reporting status: {}", chain(&e));
        }
    };
    let config = match transport.read_config() {
        Ok(c) => c,
        Err(e) => {
            let f = Failure::setup(format!("reading the guest configuration: {}", chain(&e)));
            report(&failed(&f));
            return f.code;
        }
    };
    report(&GuestStatus::default());
    match Guest::start(vm_folder, rootfs, &config) {
        Ok(mut g) => {
            report(&GuestStatus {
                state: GuestState::Running,
                pid: Some(g.pid),
                started_at: Some(g.started_at),
                ..GuestStatus::default()
            });
            let code = g.wait();
            report(&GuestStatus {
                state: GuestState::Exited,
                pid: Some(g.pid),
                started_at: Some(g.started_at),
                finished_at: Some(SystemTime::now()),
                exit_code: Some(code),
                error: None,
            });
            g.hub.finish(code);
            code
        }
        Err((f, hub)) => {
            eprintln!("tether: {}", f.message);
            if let Some(h) = hub {
                // Why, on stderr: in the log, and to the attach that `docker run` holds
                // the start for (given a moment to connect).
                if config.session.attach_wait {
                    h.wait_for_client(FAILURE_ATTACH_WAIT);
                }
                h.output(Stream::Stderr, format!("{}\n", f.message).as_bytes());
                report(&failed(&f));
                h.finish(f.code);
            } else {
                report(&failed(&f));
            }
            f.code
        }
    }
}

fn failed(f: &Failure) -> GuestStatus {
    GuestStatus {
        state: GuestState::Exited,
        finished_at: Some(SystemTime::now()),
        exit_code: Some(f.code),
        error: Some(f.message.clone()),
        ..GuestStatus::default()
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A running guest.
struct Guest {
    pid: libc::pid_t,
    started_at: SystemTime,
    hub: Arc<Hub>,
    signals: libc::sigset_t,
    outputs: usize,
    drained: mpsc::Receiver<()>,
}

type StartError = (Failure, Option<Arc<Hub>>);

impl Guest {
    fn start(vm: &Path, rootfs: &Path, config: &GuestConfig) -> Result<Self, StartError> {
        let s = &config.session;
        let setup = |what: String| {
            move |e: std::io::Error| {
                (
                    Failure::setup(format!("{what}: {}", user::os_message(&e))),
                    None,
                )
            }
        };
        let mut all = FORWARDED.to_vec();
        all.push(libc::SIGCHLD);
        let signals = sys::sigset(&all);
        sys::catch_and_block(&all).map_err(setup("signals".into()))?;
        // SAFETY: plain prctl; keeps orphans with the tether when it is not PID 1.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

        let log = Writer::append(&vm.join(LOG_FILE)).map_err(setup("open the log".into()))?;
        // Bind by a relative name: socket paths are short, VM folders may be long.
        std::env::set_current_dir(vm).map_err(setup("chdir VM folder".into()))?;
        let _ = std::fs::remove_file(ATTACH_SOCKET);
        let listener =
            UnixListener::bind(ATTACH_SOCKET).map_err(setup("bind attach socket".into()))?;
        // Attach clients are served from here on, so that they also learn why a guest
        // failed before its process started.
        let hub = Arc::new(Hub::new(log, s.stdin_once, s.tty));
        io::serve_attach(hub.clone(), listener).map_err(setup("attach thread".into()))?;
        let (spawn, stdio, ends) =
            Self::prepare(rootfs, config).map_err(|f| (f, Some(hub.clone())))?;
        let fail = |what: &str| {
            let what = what.to_owned();
            let hub = hub.clone();
            move |e: std::io::Error| {
                (
                    Failure::setup(format!("{what}: {}", user::os_message(&e))),
                    Some(hub),
                )
            }
        };
        let outputs = match stdio {
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                stdin,
                vec![(stdout, Stream::Stdout), (stderr, Stream::Stderr)],
            ),
            Stdio::Pty(master) => {
                let out = master.try_clone().map_err(fail("dup pty"))?;
                let input = if s.open_stdin {
                    Some(master.try_clone().map_err(fail("dup pty"))?)
                } else {
                    None
                };
                hub.set_pty(master);
                (input, vec![(out, Stream::Stdout)])
            }
        };
        let (stdin, outputs) = outputs;
        if s.attach_wait {
            // Bounded: a client that never comes (its endpoint died) must not keep the
            // container from running.
            let until = Instant::now() + ATTACH_WAIT_MAX;
            while !hub.wait_for_client(Duration::from_millis(100)) && Instant::now() < until {
                if let Some(sig) = sys::wait_signal(&signals, Some(Duration::ZERO))
                    && sig != libc::SIGCHLD
                    && sig != libc::SIGWINCH
                    && sig != libc::SIGCONT
                {
                    return Err((
                        Failure {
                            code: 128 + sig,
                            message: format!("signal {sig} before the process started"),
                        },
                        Some(hub),
                    ));
                }
            }
        }

        let pid = process::spawn(&spawn, ends).map_err(|f| (f, Some(hub.clone())))?;
        hub.set_pid(pid);
        // Input that attach clients sent before the process ran goes in now.
        hub.set_stdin(stdin);
        let started_at = SystemTime::now();
        let (done_tx, drained) = mpsc::channel();
        let outputs = outputs
            .into_iter()
            .map(|(src, stream)| io::copy_output(hub.clone(), src, stream, done_tx.clone()))
            .try_fold(0, |n, r| r.map(|()| n + 1));
        // The process runs: failing to copy its output is logged, not fatal.
        let outputs = outputs.unwrap_or_else(|e| {
            eprintln!("tether: output threads: {e}");
            0
        });
        Ok(Self {
            pid,
            started_at,
            hub,
            signals,
            outputs,
            drained,
        })
    }

    /// The container's root file system, identity and command, up to the process's
    /// stdio: everything that can fail before the process starts.
    fn prepare(
        rootfs: &Path,
        config: &GuestConfig,
    ) -> Result<(Spawn, Stdio, process::ChildEnds), Failure> {
        let s = &config.session;
        let fail = |what: String| {
            move |e: std::io::Error| Failure::setup(format!("{what}: {}", user::os_message(&e)))
        };
        rootfs::prepare(rootfs, config)?;
        let prepared = rootfs::write_etc(config)
            .and_then(|()| rootfs::set_names(config))
            .and_then(|()| rootfs::loopback_up());
        prepared?;

        // Identity and command, in the container's files.
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let exec_user =
            user::resolve(&s.user, &passwd, &group).map_err(|e| Failure::setup(e.to_string()))?;
        for (kind, id, map) in [
            ("uid", exec_user.uid, "/proc/self/uid_map"),
            ("gid", exec_user.gid, "/proc/self/gid_map"),
        ] {
            let maps = std::fs::read_to_string(map).unwrap_or_default();
            if !id_mapped(&maps, id) {
                return Err(Failure::setup(format!(
                    "user {:?} needs {kind} {id}, which this guest's user namespace does \
                     not map (the endpoint runs as an ordinary user: only root, 0, exists \
                     in its containers)",
                    s.user
                )));
            }
        }
        let mut env = s.env.clone();
        if env_get(&env, "HOME").is_none() {
            env.push(format!("HOME={}", exec_user.home));
        }
        let path_env = env_get(&env, "PATH").unwrap_or(DEFAULT_PATH).to_owned();
        let path = user::look_path(&s.path, &path_env).map_err(|e| Failure {
            code: e.exit_code(),
            message: e.to_string(),
        })?;
        if !s.dir.is_empty() && !Path::new(&s.dir).exists() {
            std::fs::create_dir_all(&s.dir).map_err(fail(format!("mkdir {}", s.dir)))?;
            let c = sys::cpath(Path::new(&s.dir)).map_err(fail("workdir".into()))?;
            // SAFETY: a NUL-terminated path.
            unsafe { libc::chown(c.as_ptr(), exec_user.uid, exec_user.gid) };
        }
        let mut argv = vec![s.path.clone()];
        argv.extend(s.args.iter().cloned());
        let spawn = Spawn::new(&path, &argv, &env, &s.dir, exec_user)?;

        // Stdio exists before the process so that attach clients may come first.
        let (stdio, ends) = process::stdio(s.tty, s.open_stdin)?;
        Ok((spawn, stdio, ends))
    }

    /// Forward signals and reap children until the process ends; then end the rest of
    /// the guest and drain the output. Returns the process's exit status.
    fn wait(&mut self) -> i32 {
        let mut status = None;
        while status.is_none() {
            let Some(sig) = sys::wait_signal(&self.signals, None) else {
                continue;
            };
            if sig == libc::SIGCHLD {
                sys::reap(|pid, code| {
                    if pid == self.pid {
                        status = Some(code);
                    }
                });
            } else {
                // SAFETY: signalling our child.
                unsafe { libc::kill(self.pid, sig) };
            }
        }
        // SAFETY: getpid and kill; kill(-1) from PID 1 reaches every other process of
        // its PID namespace, and only then is it used.
        if unsafe { libc::getpid() } == 1 {
            unsafe { libc::kill(-1, libc::SIGKILL) };
            loop {
                let mut ws = 0;
                // SAFETY: a valid status pointer.
                if unsafe { libc::waitpid(-1, &mut ws, 0) } < 0 {
                    break;
                }
            }
        }
        let deadline = Instant::now() + DRAIN;
        for _ in 0..self.outputs {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.drained.recv_timeout(left).is_err() {
                eprintln!("tether: output not drained");
                break;
            }
        }
        status.unwrap_or(128)
    }
}

#[cfg(test)]
mod tests {
    use super::id_mapped;

    #[test]
    fn ids_in_and_outside_the_namespace_map() {
        let all = "         0          0 4294967295\n";
        assert!(id_mapped(all, 65534));
        let rootless = "         0       1000          1\n";
        assert!(id_mapped(rootless, 0));
        assert!(!id_mapped(rootless, 65534));
        assert!(id_mapped("", 42), "no map: the identity");
    }
}
