//! Preparing the guest: the root file system and its mounts, the files in `/etc`, the
//! host name and the loopback interface.
//!
//! Sources on the host (device nodes, volumes) are opened before the pivot; after it,
//! every target path is resolved inside the new root, so a symbolic link in the image
//! cannot point a mount or a write at the host.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use super::Failure;
use super::sys::{self, mount, proc_fd_path};
use crate::protocol::GuestConfig;

/// The directory in the new root where the old one is put during the pivot.
const OLD_ROOT: &str = ".tether-oldroot";

/// The device nodes bind-mounted from the host's /dev.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> Failure {
    let what = what.into();
    move |e| Failure::setup(format!("{what}: {}", crate::user::os_message(&e)))
}

/// A host path opened before the pivot.
struct Source {
    fd: OwnedFd,
    is_dir: bool,
}

fn open_source(p: &Path) -> io::Result<Source> {
    let fd = sys::open(p, libc::O_PATH, 0)?;
    let is_dir = fs::metadata(proc_fd_path_host(&fd)).map(|m| m.is_dir())?;
    Ok(Source { fd, is_dir })
}

/// Before the pivot the host's /proc is there.
fn proc_fd_path_host(fd: &OwnedFd) -> PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// A container path: absolute, without `..`.
fn container_path(p: &str) -> Result<PathBuf, Failure> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(Failure::setup(format!(
            "invalid mount target {p:?}: must be absolute without \"..\""
        )));
    }
    Ok(path.to_path_buf())
}

/// Mount everything and pivot into `rootfs`; on return `/` is the container's root.
pub fn prepare(rootfs: &Path, config: &GuestConfig) -> Result<(), Failure> {
    let rootfs = fs::canonicalize(rootfs).map_err(step(format!("rootfs {}", rootfs.display())))?;
    // Nothing we mount may leak back to the host's mount namespace.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(step("make mounts private"))?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(&rootfs),
        &rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(step("bind rootfs"))?;

    let mut devices = Vec::new();
    for d in DEVICES {
        let p = Path::new("/dev").join(d);
        match open_source(&p) {
            Ok(s) => devices.push((d, s)),
            // A host without one of them (no /dev/tty in some sandboxes) still runs.
            Err(e) => eprintln!("tether: skipping {}: {e}", p.display()),
        }
    }
    let mut volumes = Vec::new();
    for m in &config.mounts {
        let target = container_path(&m.target)?;
        let src = open_source(Path::new(&m.source))
            .map_err(step(format!("mount source {}", m.source)))?;
        volumes.push((target, src, m.readonly));
    }

    std::env::set_current_dir(&rootfs).map_err(step("chdir rootfs"))?;
    match fs::create_dir(OLD_ROOT) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(step("mkdir old root")(e));
        }
        _ => {}
    }
    sys::pivot_root(Path::new("."), Path::new(OLD_ROOT)).map_err(step("pivot_root"))?;
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    let old = Path::new("/").join(OLD_ROOT);

    // proc and sysfs while the old root is still there: in a user namespace the kernel
    // lets them be mounted only where a full instance is visible.
    mkdir_p("/proc")?;
    mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(step("mount /proc"))?;
    mkdir_p("/sys")?;
    mount_sys(&old)?;

    mount_dev(&devices)?;

    for (target, src, readonly) in &volumes {
        bind(src, target, *readonly)?;
    }

    sys::umount2(&old, libc::MNT_DETACH).map_err(step("unmount old root"))?;
    let _ = fs::remove_dir(&old);
    Ok(())
}

/// A read-only sysfs at /sys. Where the kernel refuses a new sysfs instance (a user
/// namespace on a host whose /sys is partly hidden), the host's /sys is bound
/// read-only from the old root instead; where that fails too, the guest has no /sys
/// (said in tether.log), as a guest without sysfs still runs its process.
fn mount_sys(old_root: &Path) -> Result<(), Failure> {
    let sys_dir = Path::new("/sys");
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    let Err(e) = mount(
        Some(Path::new("sysfs")),
        sys_dir,
        Some("sysfs"),
        flags,
        None,
    ) else {
        return Ok(());
    };
    if !matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
        return Err(step("mount /sys")(e));
    }
    let host_sys = old_root.join("sys");
    let bound = mount(
        Some(&host_sys),
        sys_dir,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    );
    match bound {
        Ok(()) => {
            if let Err(e2) = remount_readonly(sys_dir) {
                let _ = sys::umount2(sys_dir, libc::MNT_DETACH);
                eprintln!("tether: no /sys: mount sysfs: {e}; read-only bind: {e2}");
            } else {
                eprintln!("tether: mount sysfs: {e}; the host's /sys is bound read-only");
            }
        }
        Err(e2) => eprintln!("tether: no /sys: mount sysfs: {e}; bind: {e2}"),
    }
    Ok(())
}

/// Remounts the bind mount at `target` read-only, keeping the flags the kernel locks
/// in a user namespace.
fn remount_readonly(target: &Path) -> io::Result<()> {
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    let c = sys::cpath(target)?;
    // SAFETY: a NUL-terminated path and a zeroed statvfs to fill.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        sys::cvt(libc::statvfs(c.as_ptr(), &mut st)).map(|_| st)
    }?;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None, target, None, flags, None)
}

fn mkdir_p(p: impl AsRef<Path>) -> Result<(), Failure> {
    let p = p.as_ref();
    fs::create_dir_all(p).map_err(step(format!("mkdir {}", p.display())))
}

fn mount_dev(devices: &[(&str, Source)]) -> Result<(), Failure> {
    let dev = Path::new("/dev");
    mkdir_p(dev)?;
    mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(step("mount /dev"))?;
    for (name, src) in devices {
        let target = dev.join(name);
        fs::File::create(&target).map_err(step(format!("create {}", target.display())))?;
        mount(
            Some(&proc_fd_path(&src.fd)),
            &target,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(step(format!("bind {}", target.display())))?;
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        // gid 5 may be unmapped in a user namespace.
        mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })
    .map_err(step("mount /dev/pts"))?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(step("mount /dev/shm"))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(step(format!("symlink /dev/{link}")))?;
    }
    Ok(())
}

fn bind(src: &Source, target: &Path, readonly: bool) -> Result<(), Failure> {
    if src.is_dir {
        mkdir_p(target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdir_p(parent)?;
        }
        if fs::symlink_metadata(target).is_err() {
            fs::File::create(target).map_err(step(format!("create {}", target.display())))?;
        }
    }
    let t = target.display().to_string();
    mount(
        Some(&proc_fd_path(&src.fd)),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(step(format!("bind mount {t}")))?;
    if readonly {
        remount_readonly(target).map_err(step(format!("remount {t} read-only")))?;
    }
    Ok(())
}

/// Write /etc/hostname, /etc/hosts and /etc/resolv.conf (after the pivot).
pub fn write_etc(config: &GuestConfig) -> Result<(), Failure> {
    let files = [
        (
            "/etc/hostname",
            (!config.hostname.is_empty()).then(|| format!("{}\n", config.hostname)),
        ),
        ("/etc/hosts", config.hosts.clone()),
        ("/etc/resolv.conf", config.resolv_conf.clone()),
    ];
    for (path, content) in files {
        let Some(content) = content else { continue };
        mkdir_p("/etc")?;
        // Replace rather than follow a link the image may have put there.
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = fs::remove_file(path);
        }
        fs::write(path, content).map_err(step(format!("write {path}")))?;
    }
    Ok(())
}

/// Set the host and domain names of the UTS namespace.
pub fn set_names(config: &GuestConfig) -> Result<(), Failure> {
    if !config.hostname.is_empty() {
        let h = config.hostname.as_bytes();
        // SAFETY: a pointer and length of a live buffer.
        sys::cvt(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
            .map_err(step("sethostname"))?;
    }
    if !config.domainname.is_empty() {
        let d = config.domainname.as_bytes();
        // SAFETY: a pointer and length of a live buffer.
        sys::cvt(unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) })
            .map_err(step("setdomainname"))?;
    }
    Ok(())
}

/// Bring the loopback interface up.
pub fn loopback_up() -> Result<(), Failure> {
    // SAFETY: a socket for ioctls, closed by OwnedFd; ifreq is zeroed then named "lo".
    unsafe {
        let s = sys::cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))
        .map_err(step("socket"))?;
        let _s = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(s);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        sys::cvt(libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr)).map_err(step("get lo flags"))?;
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        sys::cvt(libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr)).map_err(step("bring lo up"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_targets_must_be_absolute_and_plain() {
        assert!(container_path("/data").is_ok());
        assert!(container_path("data").is_err());
        assert!(container_path("/a/../../etc").is_err());
    }
}
