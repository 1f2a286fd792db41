//! The tether as a guest init: each test builds a busybox root file system, starts the
//! `tether` binary as PID 1 of new namespaces and checks its status, log and attach
//! socket. They need root (namespaces, mounts); without it they skip with a message.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vic_tether::attach::{ATTACH_SOCKET, Frame, read_frame, write_frame};
use vic_tether::logs::{LOG_FILE, Reader, Record, Stream};
use vic_tether::protocol::{GuestConfig, GuestState, GuestStatus, Mount, MountKind, Session};
use vic_tether::transport::{read_status, write_config};

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("skipped: the tether tests need root (namespaces and mounts)");
    false
}

/// A busybox root file system: /bin/busybox, its applets, /etc/passwd with nobody.
fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(out.stdout).unwrap().lines() {
        if !applet.contains('/') || applet.ends_with('/') || applet == "bin/busybox" {
            continue;
        }
        let p = root.join(applet);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink("/bin/busybox", &p).unwrap();
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

/// The tether to test: this build's, or `VIC_TETHER_BIN` (the static one).
fn tether_bin() -> PathBuf {
    std::env::var_os("VIC_TETHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tether")))
}

/// A guest: its VM folder, root file system and tether.
struct Guest {
    _dir: tempfile::TempDir,
    vm: PathBuf,
    pid: libc::pid_t,
    reaped: std::cell::Cell<bool>,
}

impl Drop for Guest {
    /// A failed test leaves no guest behind.
    fn drop(&mut self) {
        if !self.reaped.get() {
            // SAFETY: killing and reaping the tether this test started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn config(path: &str, args: &[&str]) -> GuestConfig {
    GuestConfig {
        id: "c".repeat(64),
        name: "test".into(),
        hostname: "guesthost".into(),
        session: Session {
            path: path.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![PATH.into()],
            ..Session::default()
        },
        ..GuestConfig::default()
    }
}

impl Guest {
    fn start(config: &GuestConfig) -> Self {
        // Orphaned tethers come back to this process, which reaps them.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path().join("vm");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(&vm).unwrap();
        busybox_rootfs(&rootfs);
        write_config(&vm, config).unwrap();
        let pid = vic_tether::launch::spawn(&tether_bin(), &vm, &rootfs).unwrap();
        Self {
            _dir: dir,
            vm,
            pid,
            reaped: std::cell::Cell::new(false),
        }
    }

    fn status(&self) -> Option<GuestStatus> {
        read_status(&self.vm).unwrap()
    }

    fn wait_state(&self, state: GuestState) -> GuestStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.status()
                && (s.state == state || s.state == GuestState::Exited)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no {state:?} status; {}",
                self.debug()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the tether to exit; its exit status.
    fn wait(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ws = 0;
            // SAFETY: waiting for a process this test re-parented to itself.
            let r = unsafe { libc::waitpid(self.pid, &mut ws, libc::WNOHANG) };
            if r == self.pid {
                self.reaped.set(true);
                return libc::WEXITSTATUS(ws);
            }
            assert!(
                Instant::now() < deadline,
                "tether still runs; {}",
                self.debug()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn records(&self) -> Vec<Record> {
        Reader::open(&self.vm.join(LOG_FILE))
            .unwrap()
            .tail(None)
            .unwrap()
    }

    fn output(&self, stream: Stream) -> String {
        let v: Vec<u8> = self
            .records()
            .into_iter()
            .filter(|r| r.stream == stream)
            .flat_map(|r| r.data)
            .collect();
        String::from_utf8_lossy(&v).into_owned()
    }

    fn debug(&self) -> String {
        format!(
            "status {:?}, tether.log {:?}",
            self.status(),
            std::fs::read_to_string(self.vm.join("tether.log")).unwrap_or_default()
        )
    }

    fn run(config: &GuestConfig) -> (Self, GuestStatus) {
        let g = Self::start(config);
        let code = g.wait();
        let s = g.status().unwrap();
        assert_eq!(s.state, GuestState::Exited, "{}", g.debug());
        assert_eq!(Some(code), s.exit_code, "{}", g.debug());
        (g, s)
    }
}

#[test]
fn echo_hello() {
    if !is_root() {
        return;
    }
    let (g, s) = Guest::run(&config("echo", &["hello"]));
    assert_eq!(s.exit_code, Some(0), "{}", g.debug());
    assert_eq!(s.error, None);
    assert!(s.pid.is_some());
    assert!(s.started_at.is_some() && s.finished_at >= s.started_at);
    assert_eq!(g.output(Stream::Stdout), "hello\n");
    assert_eq!(g.output(Stream::Stderr), "");
}

#[test]
fn stderr_and_exit_code() {
    if !is_root() {
        return;
    }
    let (g, s) = Guest::run(&config("sh", &["-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(s.exit_code, Some(3));
    assert_eq!(g.output(Stream::Stdout), "out\n");
    assert_eq!(g.output(Stream::Stderr), "err\n");
}

#[test]
fn env_dir_user_and_guest_setup() {
    if !is_root() {
        return;
    }
    let mut c = config(
        "sh",
        &[
            "-c",
            "id -u; id -g; pwd; echo $FOO; echo $HOME; hostname; cat /etc/hostname; \
             cat /etc/resolv.conf; cat /sys/class/net/lo/flags; echo $$; ls /dev; \
             cat /proc/1/cmdline | tr '\\0' ' '; echo",
        ],
    );
    c.session.env.push("FOO=bar baz".into());
    c.session.dir = "/work/dir".into();
    c.session.user = "nobody".into();
    c.resolv_conf = Some("nameserver 192.0.2.1\n".into());
    let (g, s) = Guest::run(&c);
    assert_eq!(s.exit_code, Some(0), "{}", g.debug());
    let out = g.output(Stream::Stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..9],
        [
            "65534",
            "65534",
            "/work/dir",
            "bar baz",
            "/nonexistent",
            "guesthost",
            "guesthost",
            "nameserver 192.0.2.1",
            "0x9", // IFF_UP | IFF_LOOPBACK
        ],
        "{out}"
    );
    // The tether is PID 1 of the guest, and reports the shell's PID there.
    assert_eq!(Some(lines[9].parse().unwrap()), s.pid);
    for dev in ["null", "zero", "urandom", "pts", "ptmx", "shm", "fd"] {
        assert!(out.contains(&format!("{dev}\n")), "no /dev/{dev}: {out}");
    }
    assert!(lines.last().unwrap().contains("tether"), "{out}");
    assert_eq!(g.output(Stream::Stderr), "");
}

#[test]
fn missing_command_is_127() {
    if !is_root() {
        return;
    }
    let (g, s) = Guest::run(&config("nosuchcommand", &[]));
    assert_eq!(s.exit_code, Some(127), "{}", g.debug());
    assert_eq!(
        s.error.as_deref(),
        Some("exec: \"nosuchcommand\": executable file not found in $PATH")
    );
    assert_eq!(s.started_at, None);
}

#[test]
fn not_executable_is_126() {
    if !is_root() {
        return;
    }
    let (_, s) = Guest::run(&config("/etc/passwd", &[]));
    assert_eq!(s.exit_code, Some(126));
    assert_eq!(
        s.error.as_deref(),
        Some("exec: \"/etc/passwd\": permission denied")
    );
}

#[test]
fn unknown_user_fails_to_start() {
    if !is_root() {
        return;
    }
    let mut c = config("true", &[]);
    c.session.user = "ghost".into();
    let (_, s) = Guest::run(&c);
    assert_eq!(s.exit_code, Some(128));
    assert_eq!(
        s.error.as_deref(),
        Some("unable to find user ghost: no matching entries in passwd file")
    );
}

#[test]
fn sigterm_is_forwarded() {
    if !is_root() {
        return;
    }
    let g = Guest::start(&config("sleep", &["100"]));
    let s = g.wait_state(GuestState::Running);
    assert_eq!(s.state, GuestState::Running, "{}", g.debug());
    let t = Instant::now();
    // SAFETY: signalling the tether we started.
    unsafe { libc::kill(g.pid, libc::SIGTERM) };
    assert_eq!(g.wait(), 143);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(g.status().unwrap().exit_code, Some(143));
}

#[test]
fn background_children_do_not_hold_the_guest() {
    if !is_root() {
        return;
    }
    // The main process exits while a child keeps the output pipe open.
    let (g, s) = Guest::run(&config("sh", &["-c", "sleep 100 & echo started"]));
    assert_eq!(s.exit_code, Some(0), "{}", g.debug());
    assert_eq!(g.output(Stream::Stdout), "started\n");
}

fn connect(g: &Guest) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UnixStream::connect(g.vm.join(ATTACH_SOCKET)) {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}; {}", g.debug()),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_sends_stdin_and_reads_output() {
    if !is_root() {
        return;
    }
    let mut c = config("cat", &[]);
    c.session.open_stdin = true;
    c.session.attach_wait = true;
    let g = Guest::start(&c);
    let mut sock = connect(&g);
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write_frame(&mut sock, &Frame::Stdin(b"ping\n".to_vec())).unwrap();
    assert_eq!(
        read_frame(&mut sock).unwrap(),
        Some(Frame::Stdout(b"ping\n".to_vec())),
        "{}",
        g.debug()
    );
    write_frame(&mut sock, &Frame::CloseStdin).unwrap();
    sock.flush().unwrap();
    assert_eq!(read_frame(&mut sock).unwrap(), Some(Frame::Exit(0)));
    assert_eq!(read_frame(&mut sock).unwrap(), None);
    assert_eq!(g.wait(), 0);
    assert_eq!(g.output(Stream::Stdout), "ping\n");
}

#[test]
fn tty_gives_one_stream_and_a_terminal() {
    if !is_root() {
        return;
    }
    let mut c = config(
        "sh",
        &["-c", "tty; test -t 0 && echo yes; echo err >&2; stty size"],
    );
    c.session.tty = true;
    c.session.open_stdin = true;
    c.session.attach_wait = true;
    let g = Guest::start(&c);
    let mut sock = connect(&g);
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    while let Some(f) = read_frame(&mut sock).unwrap() {
        match f {
            Frame::Stdout(d) => out.extend(d),
            Frame::Exit(code) => assert_eq!(code, 0, "{}", g.debug()),
            other => panic!("unexpected {other:?}"),
        }
    }
    let out = String::from_utf8(out).unwrap();
    assert_eq!(g.wait(), 0);
    assert!(out.starts_with("/dev/pts/0\r\nyes\r\nerr\r\n"), "{out:?}");
    assert_eq!(g.output(Stream::Stderr), "");
    assert_eq!(g.output(Stream::Stdout), out);
}

#[test]
fn tty_resize() {
    if !is_root() {
        return;
    }
    let mut c = config("sh", &["-c", "read x; stty size"]);
    c.session.tty = true;
    c.session.open_stdin = true;
    let g = Guest::start(&c);
    g.wait_state(GuestState::Running);
    let mut sock = connect(&g);
    write_frame(
        &mut sock,
        &Frame::Resize {
            rows: 33,
            cols: 101,
        },
    )
    .unwrap();
    write_frame(&mut sock, &Frame::Stdin(b"go\n".to_vec())).unwrap();
    assert_eq!(g.wait(), 0, "{}", g.debug());
    assert!(
        g.output(Stream::Stdout).contains("33 101"),
        "{}",
        g.output(Stream::Stdout)
    );
}

#[test]
fn volumes_are_bound_and_readonly_ones_refuse_writes() {
    if !is_root() {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from the host\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut c = config(
        "sh",
        &[
            "-c",
            "cat /data/f; echo new > /rw/g; touch /data/x || exit 4",
        ],
    );
    c.mounts = vec![
        Mount {
            source: host.path().display().to_string(),
            target: "/data".into(),
            readonly: true,
            kind: MountKind::Bind,
        },
        Mount {
            source: rw.path().display().to_string(),
            target: "/rw".into(),
            readonly: false,
            kind: MountKind::Bind,
        },
    ];
    let (g, s) = Guest::run(&c);
    assert_eq!(s.exit_code, Some(4), "{}", g.debug());
    assert_eq!(g.output(Stream::Stdout), "from the host\n");
    assert!(g.output(Stream::Stderr).contains("Read-only file system"));
    assert_eq!(
        std::fs::read_to_string(rw.path().join("g")).unwrap(),
        "new\n"
    );
    assert!(!host.path().join("x").exists());
}
