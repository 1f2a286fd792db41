//! Starting the container's process: stdio (pipes or a pty), identity, working
//! directory and `execve`, with failures of the child reported back through a pipe.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::Failure;
use super::sys::{self, cstr};
use crate::user::ExecUser;

/// The tether's ends of the process's stdio.
#[derive(Debug)]
pub enum Stdio {
    /// Separate pipes.
    Pipes {
        /// Write end of stdin, when stdin is open.
        stdin: Option<File>,
        /// Read end of stdout.
        stdout: File,
        /// Read end of stderr.
        stderr: File,
    },
    /// A pseudo-terminal: its master.
    Pty(File),
}

/// What the child does with fds 0, 1, 2.
enum ChildStdio {
    Fds([RawFd; 3]),
    Pty(CString),
}

/// Everything the child needs, prepared before `fork` (the child may only make
/// async-signal-safe calls).
pub struct Spawn {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    dir: CString,
    user: ExecUser,
}

impl Spawn {
    /// A spawn of `path` (resolved) with `argv` (`argv[0]` included) and `env`.
    pub fn new(
        path: &Path,
        argv: &[String],
        env: &[String],
        dir: &str,
        user: ExecUser,
    ) -> Result<Self, Failure> {
        let bad = |_| Failure::setup("argument, environment or path holds a NUL byte".into());
        Ok(Self {
            path: sys::cpath(path).map_err(bad)?,
            argv: argv
                .iter()
                .map(|a| cstr(a))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            envp: env
                .iter()
                .map(|a| cstr(a))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            dir: cstr(if dir.is_empty() { "/" } else { dir }).map_err(bad)?,
            user,
        })
    }
}

/// The steps the child reports a failure of.
const STEPS: [&str; 9] = [
    "sigprocmask",
    "setsid",
    "open the terminal",
    "set stdio",
    "setgroups",
    "setgid",
    "setuid",
    "chdir",
    "exec",
];
const STEP_EXEC: u32 = 8;

fn ptmx() -> io::Result<(File, CString)> {
    let fd = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    let mut unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: ioctls on a pty master with pointers to live integers.
    unsafe {
        sys::cvt(libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock))?;
        sys::cvt(libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n))?;
    }
    let name = cstr(&format!("/dev/pts/{n}"))?;
    Ok((File::from(fd), name))
}

/// The child's ends of its stdio, kept open until it has them.
pub struct ChildEnds {
    stdio: ChildStdio,
    _keep: Vec<OwnedFd>,
}

fn setup(what: &'static str) -> impl FnOnce(io::Error) -> Failure {
    move |e: io::Error| Failure::setup(format!("{what}: {}", crate::user::os_message(&e)))
}

/// Create the process's stdio before the process: a pty when `tty`, else pipes, with
/// stdin `/dev/null` unless `open_stdin`. Input sent before the process starts waits
/// in the pipe (or the pty).
pub fn stdio(tty: bool, open_stdin: bool) -> Result<(Stdio, ChildEnds), Failure> {
    if tty {
        let (master, name) = ptmx().map_err(setup("allocate a pty"))?;
        return Ok((
            Stdio::Pty(master),
            ChildEnds {
                stdio: ChildStdio::Pty(name),
                _keep: Vec::new(),
            },
        ));
    }
    let (stdin_r, stdin_w) = if open_stdin {
        let (r, w) = sys::pipe().map_err(setup("pipe"))?;
        (r, Some(File::from(w)))
    } else {
        (
            sys::open(Path::new("/dev/null"), libc::O_RDONLY, 0)
                .map_err(setup("open /dev/null"))?,
            None,
        )
    };
    let (out_r, out_w) = sys::pipe().map_err(setup("pipe"))?;
    let (err_r, err_w) = sys::pipe().map_err(setup("pipe"))?;
    let fds = [stdin_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
    Ok((
        Stdio::Pipes {
            stdin: stdin_w,
            stdout: File::from(out_r),
            stderr: File::from(err_r),
        },
        ChildEnds {
            stdio: ChildStdio::Fds(fds),
            _keep: vec![stdin_r, out_w, err_w],
        },
    ))
}

/// Start the process on `ends`: fork, and in the child become a session leader (with
/// the pty as its controlling terminal), take the stdio, become the user, chdir and
/// exec. Returns its pid once the exec has succeeded.
pub fn spawn(s: &Spawn, ends: ChildEnds) -> Result<libc::pid_t, Failure> {
    let (report_r, report_w) = sys::pipe().map_err(setup("pipe"))?;

    let mut argv: Vec<*const libc::c_char> = s.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = s.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // In a user namespace of an unprivileged runner setgroups is denied: the process
    // keeps the tether's (empty or unmapped) supplementary groups.
    let groups: Option<Vec<libc::gid_t>> = if sys::setgroups_allowed() {
        Some(s.user.groups.clone())
    } else {
        if !s.user.groups.is_empty() {
            eprintln!("tether: setgroups is denied here; not setting the supplementary groups");
        }
        None
    };

    // SAFETY: the child only makes async-signal-safe calls on data prepared above and
    // ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(setup("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above; never returns.
        unsafe {
            child(
                s,
                &ends.stdio,
                &argv,
                &envp,
                groups.as_deref(),
                report_w.as_raw_fd(),
            )
        }
    }
    drop(report_w);
    drop(ends);

    let mut report = [0u8; 8];
    let mut got = 0;
    let mut r = File::from(report_r);
    while got < report.len() {
        match r.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    // The child failed before exec and exits; reap it.
    // SAFETY: waiting for our own child.
    unsafe {
        let mut ws = 0;
        libc::waitpid(pid, &mut ws, 0);
    }
    let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    let err = io::Error::from_raw_os_error(errno);
    let msg = crate::user::os_message(&err);
    let path = PathBuf::from(s.path.to_string_lossy().into_owned());
    Err(if step == STEP_EXEC {
        let p = path.display();
        let code = if errno == libc::ENOENT { 127 } else { 126 };
        Failure {
            code,
            message: format!("exec: \"{p}\": {msg}"),
        }
    } else {
        let what = STEPS.get(step as usize).copied().unwrap_or("start");
        Failure::setup(format!("{what}: {msg}"))
    })
}

/// The child after `fork`: never returns.
///
/// # Safety
/// Only to be called in a freshly forked child.
unsafe fn child(
    s: &Spawn,
    stdio: &ChildStdio,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    groups: Option<&[libc::gid_t]>,
    report: RawFd,
) -> ! {
    let fail = |step: u32| -> ! {
        // SAFETY: errno, write and _exit are async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let mut b = [0u8; 8];
            b[..4].copy_from_slice(&step.to_ne_bytes());
            b[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(report, b.as_ptr().cast(), b.len());
            libc::_exit(if step == STEP_EXEC { 127 } else { 128 });
        }
    };
    // SAFETY: async-signal-safe calls on prepared data, in the child.
    unsafe {
        // The tether blocks the signals it forwards and ignores SIGPIPE; the process
        // starts with neither.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            fail(0);
        }
        if libc::setsid() < 0 {
            fail(1);
        }
        match stdio {
            ChildStdio::Pty(name) => {
                let fd = libc::open(name.as_ptr(), libc::O_RDWR);
                if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                    fail(2);
                }
                for i in 0..3 {
                    if libc::dup2(fd, i) < 0 {
                        fail(3);
                    }
                }
                if fd > 2 {
                    libc::close(fd);
                }
            }
            ChildStdio::Fds(fds) => {
                for (i, &fd) in fds.iter().enumerate() {
                    // dup2 clears close-on-exec on the copy (but not on fd itself).
                    let i = i as libc::c_int;
                    let r = if fd == i {
                        libc::fcntl(fd, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, i)
                    };
                    if r < 0 {
                        fail(3);
                    }
                }
            }
        }
        if let Some(groups) = groups
            && libc::setgroups(groups.len(), groups.as_ptr()) < 0
        {
            fail(4);
        }
        if libc::setgid(s.user.gid) < 0 {
            fail(5);
        }
        if libc::setuid(s.user.uid) < 0 {
            fail(6);
        }
        if libc::chdir(s.dir.as_ptr()) < 0 {
            fail(7);
        }
        libc::execve(s.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(STEP_EXEC)
    }
}
