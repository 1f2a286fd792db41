//! Starting `tether <vm-folder> <rootfs>` as PID 1 of new mount, PID, UTS, IPC and
//! network namespaces (and a user namespace when asked), detached from the caller.
//!
//! The caller forks a child that starts a new session and unshares the namespaces;
//! with a user namespace, the caller then writes the child's id maps (uid 0 → the
//! given uid, `deny` to `setgroups`, gid 0 → the given gid: what an unprivileged
//! process may map without a helper such as `newuidmap`). The child makes the mount
//! it was given, if any (the guest's overlay root, so that it is made by the user
//! namespace's root in the new mount namespace), and forks the tether: the first
//! process of the new PID namespace, so its PID 1. The child then exits, so the
//! tether is re-parented to the host's init (or the nearest subreaper) and outlives
//! the caller.
//!
//! The tether waits before its `execve` until the caller lets it go: the caller runs
//! its `before_exec` hook with the tether's PID first (the simulator puts it into its
//! cgroups there, so that no process of the guest ever runs outside them). Every step
//! is synchronised through pipes; a failure of the child, of the mount or of the
//! `execve` comes back as the error of [`Launch::spawn`].
//!
//! The tether's stdin is `/dev/null` and its own diagnostics go to
//! `<vm-folder>/tether.log`.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The tether's own diagnostics in the VM folder.
pub const TETHER_LOG: &str = "tether.log";

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cs(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Start the tether binary `tether` on `vm_folder` and `rootfs` (no user namespace, no
/// mount, no hook); returns its PID (in the caller's PID namespace).
pub fn spawn(tether: &Path, vm_folder: &Path, rootfs: &Path) -> io::Result<libc::pid_t> {
    Launch::new(tether, vm_folder, rootfs)
        .spawn(|_| Ok(()))
        .map_err(LaunchError::into_io)
}

/// A mount made in the guest's new mount namespace before the tether starts.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The source (`overlay`).
    pub source: String,
    /// The mount point.
    pub target: PathBuf,
    /// The file system type.
    pub fstype: String,
    /// The options.
    pub data: String,
}

/// How to start a tether (see the module documentation).
#[derive(Clone, Debug)]
pub struct Launch {
    tether: PathBuf,
    vm_folder: PathBuf,
    rootfs: PathBuf,
    user_ns: Option<(u32, u32)>,
    mount: Option<Mount>,
}

/// Why [`Launch::spawn`] failed.
#[derive(Debug)]
pub enum LaunchError {
    /// The mount given with [`Launch::mount_first`] failed (nothing runs).
    Mount(io::Error),
    /// Anything else: the namespaces, the id maps, the hook, the `execve`.
    Other(String, io::Error),
}

impl LaunchError {
    /// As an `io::Error` (the message keeps the step).
    pub fn into_io(self) -> io::Error {
        match self {
            Self::Mount(e) => io::Error::new(e.kind(), format!("mount: {e}")),
            Self::Other(what, e) => io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mount(e) => write!(f, "mount: {e}"),
            Self::Other(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for LaunchError {}

/// The steps the children report (with a value: 0 or a PID, or `-errno`).
const STEP_UNSHARE: i32 = 1;
const STEP_MOUNT: i32 = 2;
const STEP_FORK: i32 = 3;
const STEP_EXEC: i32 = 4;

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads one report `(step, value)`; `None` at end of file.
fn read_report(r: &mut File) -> io::Result<Option<(i32, i32)>> {
    let mut b = [0u8; 8];
    let mut got = 0;
    while got < b.len() {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let step = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let value = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
    Ok(Some((step, value)))
}

/// Writes the id maps of the process `pid`, which has just unshared its user
/// namespace: uid 0 → `uid`, gid 0 → `gid`.
fn write_id_maps(pid: libc::pid_t, uid: u32, gid: u32) -> io::Result<()> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |name: &str, data: String| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(proc.join(name))
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("write /proc/{pid}/{name}: {e}")))
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    // An unprivileged process may map its gid only once setgroups is denied.
    match write("setgroups", "deny".into()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => other?,
    }
    write("gid_map", format!("0 {gid} 1\n"))
}

impl Launch {
    /// The tether `tether` on `vm_folder` and `rootfs`, without a user namespace.
    pub fn new(tether: &Path, vm_folder: &Path, rootfs: &Path) -> Self {
        Self {
            tether: tether.to_path_buf(),
            vm_folder: vm_folder.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            user_ns: None,
            mount: None,
        }
    }

    /// Also in a new user namespace where uid 0 is `uid` and gid 0 is `gid` (the
    /// caller's own ids when it is not root).
    pub fn user_namespace(mut self, uid: u32, gid: u32) -> Self {
        self.user_ns = Some((uid, gid));
        self
    }

    /// Makes `mount` in the new mount namespace before the tether starts.
    pub fn mount_first(mut self, mount: Mount) -> Self {
        self.mount = Some(mount);
        self
    }

    /// Starts the tether; `before_exec` runs with its PID (in the caller's PID
    /// namespace) before it may exec; returns that PID. When `before_exec` fails, the
    /// tether never runs.
    pub fn spawn(
        &self,
        before_exec: impl FnOnce(libc::pid_t) -> io::Result<()>,
    ) -> Result<libc::pid_t, LaunchError> {
        let other = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| LaunchError::Other(what, e)
        };
        let bin = c(&self.tether).map_err(other("tether path"))?;
        let argv_c = [
            bin.clone(),
            c(&self.vm_folder).map_err(other("VM folder"))?,
            c(&self.rootfs).map_err(other("rootfs"))?,
        ];
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let env_c = [cs("PATH=/usr/sbin:/usr/bin:/sbin:/bin").map_err(other("env"))?];
        let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mount = match &self.mount {
            Some(m) => Some((
                cs(&m.source).map_err(LaunchError::Mount)?,
                c(&m.target).map_err(LaunchError::Mount)?,
                cs(&m.fstype).map_err(LaunchError::Mount)?,
                cs(&m.data).map_err(LaunchError::Mount)?,
            )),
            None => None,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.vm_folder.join(TETHER_LOG))
            .map_err(other("open tether.log"))?;
        let null = File::open("/dev/null").map_err(other("open /dev/null"))?;
        let (mut report_r, report_w) = pipe().map_err(other("pipe"))?;
        let (go_a_r, go_a_w) = pipe().map_err(other("pipe"))?;
        let (go_b_r, go_b_w) = pipe().map_err(other("pipe"))?;
        let mut flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        if self.user_ns.is_some() {
            flags |= libc::CLONE_NEWUSER;
        }
        let wait_go = self.user_ns.is_some();

        // SAFETY: the children only make async-signal-safe calls on data prepared
        // above, ending in _exit or execve.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(other("fork")(io::Error::last_os_error()));
        }
        if child == 0 {
            // SAFETY: in the forked child: async-signal-safe calls only.
            unsafe {
                let report = |step: i32, v: i32| {
                    let mut b = [0u8; 8];
                    b[..4].copy_from_slice(&step.to_ne_bytes());
                    b[4..].copy_from_slice(&v.to_ne_bytes());
                    libc::write(report_w.as_raw_fd(), b.as_ptr().cast(), b.len());
                };
                let errno = || -*libc::__errno_location();
                // Only the caller may let the children go: an ended caller is an
                // end of file, never a go.
                libc::close(go_a_w.as_raw_fd());
                libc::close(go_b_w.as_raw_fd());
                let wait = |fd: &File| {
                    let mut b = 0u8;
                    loop {
                        let n = libc::read(fd.as_raw_fd(), (&raw mut b).cast(), 1);
                        if n == 1 {
                            return true;
                        }
                        if n < 0 && *libc::__errno_location() == libc::EINTR {
                            continue;
                        }
                        return false;
                    }
                };
                if libc::setsid() < 0 || libc::unshare(flags) < 0 {
                    report(STEP_UNSHARE, errno());
                    libc::_exit(1);
                }
                report(STEP_UNSHARE, 0);
                if wait_go && !wait(&go_a_r) {
                    libc::_exit(1);
                }
                if let Some((src, target, fstype, data)) = &mount {
                    // Nothing mounted here may propagate back to the caller's mounts.
                    if libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) < 0
                        || libc::mount(
                            src.as_ptr(),
                            target.as_ptr(),
                            fstype.as_ptr(),
                            0,
                            data.as_ptr().cast(),
                        ) < 0
                    {
                        report(STEP_MOUNT, errno());
                        libc::_exit(1);
                    }
                    report(STEP_MOUNT, 0);
                }
                let pid = libc::fork();
                if pid < 0 {
                    report(STEP_FORK, errno());
                    libc::_exit(1);
                }
                if pid == 0 {
                    if !wait(&go_b_r) {
                        libc::_exit(1);
                    }
                    libc::dup2(null.as_raw_fd(), 0);
                    libc::dup2(log.as_raw_fd(), 1);
                    libc::dup2(log.as_raw_fd(), 2);
                    let mut empty: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut empty);
                    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                    libc::execve(bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    report(STEP_EXEC, errno());
                    libc::_exit(127);
                }
                report(STEP_FORK, pid);
                libc::_exit(0);
            }
        }
        drop(report_w);
        drop(go_a_r);
        drop(go_b_r);
        let reap_child = || {
            // SAFETY: reaping our own child.
            unsafe {
                let mut ws = 0;
                libc::waitpid(child, &mut ws, 0);
            }
        };
        let result = self.handshake(child, &mut report_r, go_a_w, go_b_w, before_exec);
        reap_child();
        result
    }

    /// The caller's side, after the fork of `child`.
    fn handshake(
        &self,
        child: libc::pid_t,
        report: &mut File,
        go_a: OwnedFd,
        go_b: OwnedFd,
        before_exec: impl FnOnce(libc::pid_t) -> io::Result<()>,
    ) -> Result<libc::pid_t, LaunchError> {
        let other = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| LaunchError::Other(what, e)
        };
        let next = |report: &mut File, want: i32, what: &str| -> Result<i32, LaunchError> {
            match read_report(report).map_err(other(what))? {
                Some((step, v)) if step == want && v >= 0 => Ok(v),
                Some((step, v)) if step == want => Err(if step == STEP_MOUNT {
                    LaunchError::Mount(io::Error::from_raw_os_error(-v))
                } else {
                    LaunchError::Other(what.into(), io::Error::from_raw_os_error(-v))
                }),
                Some((step, v)) => Err(LaunchError::Other(
                    what.into(),
                    io::Error::other(format!("unexpected report {step} ({v})")),
                )),
                None => Err(LaunchError::Other(
                    what.into(),
                    io::Error::other("the child ended early"),
                )),
            }
        };
        next(report, STEP_UNSHARE, "unshare the namespaces")?;
        if let Some((uid, gid)) = self.user_ns {
            write_id_maps(child, uid, gid).map_err(other("user namespace id maps"))?;
            File::from(go_a)
                .write_all(b"g")
                .map_err(other("start the child"))?;
        } else {
            drop(go_a);
        }
        if self.mount.is_some() {
            next(report, STEP_MOUNT, "mount")?;
        }
        let pid = next(report, STEP_FORK, "fork the tether")?;
        if let Err(e) = before_exec(pid) {
            // The tether sees the end of file of `go_b` and exits without running.
            drop(go_b);
            return Err(LaunchError::Other("before exec".into(), e));
        }
        File::from(go_b)
            .write_all(b"g")
            .map_err(other("start the tether"))?;
        // The report pipe ends when the tether has exec'd (close-on-exec); a report
        // before that is a failed execve.
        match read_report(report) {
            Ok(None) => Ok(pid),
            Ok(Some((_, v))) => Err(LaunchError::Other(
                format!("execve {}", self.tether.display()),
                io::Error::from_raw_os_error(-v),
            )),
            Err(e) => Err(other("wait for the tether's execve")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root, or a user namespace we may create; else the test is skipped.
    fn can_unshare() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        eprintln!("skipped: needs root");
        false
    }

    fn wait_gone(pid: libc::pid_t) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            // Reaps it if it is our child (a subreaper test harness).
            // SAFETY: waitpid with WNOHANG.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            assert!(std::time::Instant::now() < deadline, "{pid} still runs");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_missing_binary_is_an_execve_error() {
        if !can_unshare() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let e = Launch::new(Path::new("/nonexistent/tether"), dir.path(), dir.path())
            .spawn(|_| Ok(()))
            .unwrap_err();
        let LaunchError::Other(what, e) = e else {
            panic!("{e}")
        };
        assert!(what.starts_with("execve"), "{what}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    /// An executable script that stands in for the tether (`$1` is the VM folder).
    fn fake_tether(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("fake-tether");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_failing_hook_stops_the_tether_before_it_runs() {
        if !can_unshare() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("ran");
        let tether = fake_tether(dir.path(), "touch \"$1/ran\"");
        let mut seen = 0;
        let e = Launch::new(&tether, dir.path(), dir.path())
            .spawn(|pid| {
                seen = pid;
                Err(io::Error::other("no cgroup"))
            })
            .unwrap_err();
        assert!(e.to_string().contains("no cgroup"), "{e}");
        assert!(seen > 0);
        wait_gone(seen);
        assert!(!mark.exists(), "the tether ran");
        // The same launch with a hook that succeeds runs it, in new namespaces.
        let pid = Launch::new(&tether, dir.path(), dir.path())
            .spawn(|pid| {
                let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
                let its = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
                assert_ne!(own, its, "the tether has its own PID namespace");
                Ok(())
            })
            .unwrap();
        wait_gone(pid);
        assert!(mark.exists());
    }

    #[test]
    fn user_namespace_maps_root_to_the_given_ids() {
        if !can_unshare() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tether = fake_tether(
            dir.path(),
            "{ id -u; id -g; cat /proc/self/uid_map /proc/self/setgroups; } > \"$1/out\"",
        );
        let mut maps = String::new();
        let pid = Launch::new(&tether, dir.path(), dir.path())
            .user_namespace(0, 0)
            .spawn(|pid| {
                maps = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
                Ok(())
            })
            .unwrap();
        wait_gone(pid);
        let words: Vec<String> = maps.split_whitespace().map(String::from).collect();
        assert_eq!(words, ["0", "0", "1"]);
        let got = std::fs::read_to_string(dir.path().join("out")).unwrap();
        let lines: Vec<&str> = got.lines().map(str::trim).collect();
        assert_eq!(lines[0], "0");
        assert_eq!(lines[1], "0");
        assert!(lines.contains(&"deny"), "{got}");
    }

    #[test]
    fn a_failed_mount_is_reported_as_such() {
        if !can_unshare() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let e = Launch::new(Path::new("/bin/true"), dir.path(), dir.path())
            .mount_first(Mount {
                source: "none".into(),
                target: dir.path().join("missing"),
                fstype: "tmpfs".into(),
                data: String::new(),
            })
            .spawn(|_| panic!("no tether after a failed mount"))
            .unwrap_err();
        assert!(
            matches!(e, LaunchError::Mount(ref e) if e.raw_os_error() == Some(libc::ENOENT)),
            "{e}"
        );
    }
}
