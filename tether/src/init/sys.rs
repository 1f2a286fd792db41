//! Thin wrappers around the system calls the init needs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `r` as an `io::Result`: negative means `errno`.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `p` as a C string.
pub fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `s` as a C string.
pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// mount(2).
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cpath).transpose()?;
    let tgt = cpath(target)?;
    let fst = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: NUL-terminated strings or null pointers, as mount(2) takes.
    cvt(unsafe {
        libc::mount(
            p(&src),
            tgt.as_ptr(),
            p(&fst),
            flags,
            p(&dat).cast::<libc::c_void>(),
        )
    })?;
    Ok(())
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: a NUL-terminated path.
    cvt(unsafe { libc::umount2(t.as_ptr(), flags) })?;
    Ok(())
}

/// pivot_root(2).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let (n, o) = (cpath(new_root)?, cpath(put_old)?);
    // SAFETY: NUL-terminated paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// open(2) with `O_CLOEXEC`.
pub fn open(path: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    // SAFETY: a NUL-terminated path.
    let fd = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The path of `fd` in /proc, for mounting a source opened before the pivot.
pub fn proc_fd_path(fd: &impl AsRawFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// A signal set of `sigs`.
pub fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Give each of `sigs` a no-op handler (PID 1 in a namespace only receives signals it
/// handles) and block them in this thread and the threads it starts, so that they are
/// taken with `sigwaitinfo`.
pub fn catch_and_block(sigs: &[libc::c_int]) -> io::Result<()> {
    for &s in sigs {
        // SAFETY: a plain handler that does nothing, installed with an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop_handler as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(s, &sa, std::ptr::null_mut()))?;
        }
    }
    let set = sigset(sigs);
    // SAFETY: a valid set; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Wait for one of the signals in `set` (blocked), at most `timeout` when given.
pub fn wait_signal(set: &libc::sigset_t, timeout: Option<std::time::Duration>) -> Option<i32> {
    loop {
        // SAFETY: valid set and info pointers; the timespec lives across the call.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            match timeout {
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(set, &mut info, &ts)
                }
                None => libc::sigwaitinfo(set, &mut info),
            }
        };
        if r > 0 {
            return Some(r);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            _ => return None,
        }
    }
}

/// The exit status of a wait status: the code, or 128 + the signal.
pub fn exit_status(ws: libc::c_int) -> i32 {
    if libc::WIFEXITED(ws) {
        libc::WEXITSTATUS(ws)
    } else if libc::WIFSIGNALED(ws) {
        128 + libc::WTERMSIG(ws)
    } else {
        128
    }
}

/// Reap every child that has ended; calls `f(pid, exit status)` for each.
pub fn reap(mut f: impl FnMut(libc::pid_t, i32)) {
    loop {
        let mut ws = 0;
        // SAFETY: a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut ws, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        f(pid, exit_status(ws));
    }
}

/// Set the size of the terminal `fd`.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid winsize for TIOCSWINSZ.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Whether this process may call setgroups(2): not in a user namespace whose
/// `setgroups` was denied (as an unprivileged runner must, to map its gid).
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}
