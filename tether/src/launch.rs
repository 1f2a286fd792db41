//! A minimal guest runner: start `tether <vm-folder> <rootfs>` as PID 1 of new mount,
//! PID, UTS, IPC and network namespaces, detached from the caller.
//!
//! The caller forks a child that starts a new session, unshares the namespaces and
//! forks the tether (the first process of the new PID namespace, so its PID 1); the
//! child then exits, so the tether is re-parented to the host's init (or the nearest
//! subreaper) and outlives the caller. Its stdin is `/dev/null` and its own
//! diagnostics go to `<vm-folder>/tether.log`.
//!
//! This runner needs root (no user namespace) and sets no cgroups; the simulator's
//! guest runner adds those. It is what the tests use.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The tether's own diagnostics in the VM folder.
pub const TETHER_LOG: &str = "tether.log";

fn c(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Start the tether binary `tether` on `vm_folder` and `rootfs`; returns its PID (in
/// the caller's PID namespace).
pub fn spawn(tether: &Path, vm_folder: &Path, rootfs: &Path) -> io::Result<libc::pid_t> {
    let bin = c(tether)?;
    let argv_c = [bin.clone(), c(vm_folder)?, c(rootfs)?];
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env_c = [CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").map_err(io::Error::other)?];
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm_folder.join(TETHER_LOG))?;
    let null = std::fs::File::open("/dev/null")?;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors owned here.
    let (r, w) = unsafe {
        (
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from(<std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(
                fds[1],
            )),
        )
    };
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET;

    // SAFETY: the children only make async-signal-safe calls on data prepared above.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: in the forked child: async-signal-safe calls, ending in _exit/execve.
        unsafe {
            let report = |v: i32| {
                let b = v.to_ne_bytes();
                libc::write(w.as_raw_fd(), b.as_ptr().cast(), b.len());
            };
            if libc::setsid() < 0 || libc::unshare(flags) < 0 {
                report(-*libc::__errno_location());
                libc::_exit(1);
            }
            let pid = libc::fork();
            if pid < 0 {
                report(-*libc::__errno_location());
                libc::_exit(1);
            }
            if pid == 0 {
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(log.as_raw_fd(), 1);
                libc::dup2(log.as_raw_fd(), 2);
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::execve(bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
            report(pid);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut b = [0u8; 4];
    let read = (&r).read_exact(&mut b);
    // SAFETY: reaping our own child.
    unsafe {
        let mut ws = 0;
        libc::waitpid(child, &mut ws, 0);
    }
    read?;
    let v = i32::from_ne_bytes(b);
    if v < 0 {
        return Err(io::Error::from_raw_os_error(-v));
    }
    Ok(v)
}
