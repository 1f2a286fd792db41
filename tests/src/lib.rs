//! Shared helpers of vic's cross-crate tests: finding the built binaries, starting an
//! endpoint on a free loopback port, running the real `docker` CLI against it, and
//! waiting for conditions. Tests that need a server start it here and stop it by PID.

pub mod conformance;
pub mod fixtures;
pub mod guest_player;
pub mod registry;
pub mod token;
pub mod vch;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The folder holding the workspace's built binaries (`target/debug`), found from the
/// running test executable (`target/debug/deps/<test>`), so `CARGO_TARGET_DIR` and
/// nextest both work.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// A workspace binary by name; fails with instructions when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `vic-endpoint` process on a loopback port, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Endpoint {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its simulator state folder.
    pub state: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl Endpoint {
    /// Starts `vic-endpoint --target sim://STATE` on a free port with `extra` arguments
    /// and waits until `/_ping` answers.
    pub fn start(state: &Path, extra: &[&str]) -> Endpoint {
        Self::start_with_env(state, extra, &[])
    }

    /// As [`Endpoint::start`], with extra environment variables.
    pub fn start_with_env(state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Endpoint {
        Self::start_as(state, extra, env, None)
    }

    /// As [`Endpoint::start_with_env`], as the user `uid:gid` (without supplementary
    /// groups) when given: how a laptop user runs it.
    pub fn start_as(
        state: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Endpoint {
        let target = format!("sim://{}", state.display());
        let mut args = vec!["--target", target.as_str()];
        args.extend_from_slice(extra);
        Self::launch(state, &args, env, user)
    }

    /// Starts `vic-endpoint --target https://USER:PASS@vcsim/sdk --thumbprint …` on
    /// vcsim `sim` with `extra` arguments; its log goes beside `dir/endpoint`.
    pub fn start_vsphere(
        sim: &vic_vsphere::vcsim::Vcsim,
        (user, pass): (&str, &str),
        dir: &Path,
        extra: &[&str],
    ) -> Endpoint {
        let url = sim.url_with(user, pass);
        let mut args = vec!["--target", &url, "--thumbprint", &sim.info.thumbprint];
        args.extend_from_slice(extra);
        Self::launch(&dir.join("endpoint"), &args, &[], None)
    }

    /// Starts `vic-endpoint ARGS -H tcp://127.0.0.1:PORT --log-level debug` on a free
    /// port, logging to a file beside `state`, and waits until it listens.
    fn launch(
        state: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Endpoint {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = state.with_extension(format!("endpoint-{port}.log"));
        let logf = std::fs::File::create(&log).expect("endpoint log file");
        let mut cmd = Command::new(binary("vic-endpoint"));
        cmd.args(args)
            .arg("-H")
            .arg(format!("tcp://{addr}"))
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            // std drops the supplementary groups when it changes the uid.
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start vic-endpoint");
        let mut ep = Endpoint {
            child,
            addr,
            state: state.to_path_buf(),
            log,
        };
        let log_path = ep.log.clone();
        wait_until(Duration::from_secs(30), "the endpoint to listen", || {
            if let Ok(Some(status)) = ep.child.try_wait() {
                panic!(
                    "vic-endpoint exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            TcpStream::connect(addr).ok()
        });
        ep
    }

    /// `tcp://addr`, for `docker -H`.
    pub fn host(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// `http://addr`, for HTTP clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the endpoint logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("endpoint log:\n{}", self.log_text());
        }
    }
}

/// Runs the real `docker` CLI against `host` with an empty client configuration.
pub fn docker(host: &str, args: &[&str]) -> Output {
    DockerClient::new(host).run(args)
}

/// How long one docker CLI call may take before the tests call it hung.
pub const DOCKER_TIMEOUT_SECS: u32 = 300;

/// A `docker` command (under `timeout`, so a hung call fails the test instead of
/// stalling it) with the client configuration in `config` and no inherited context.
pub fn docker_command(config: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.arg("--kill-after=5")
        .arg(DOCKER_TIMEOUT_SECS.to_string())
        .arg("docker")
        .env("DOCKER_CONFIG", config)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION")
        .stdin(Stdio::null());
    c
}

/// The real `docker` CLI against one host with one client configuration kept across
/// calls, as a user's `~/.docker` is: what `docker login` stores, later calls send.
#[derive(Debug)]
pub struct DockerClient {
    host: String,
    config: tempfile::TempDir,
}

impl DockerClient {
    /// A client for `host` (`tcp://…`) with an empty configuration of its own.
    pub fn new(host: &str) -> DockerClient {
        DockerClient {
            host: host.to_string(),
            config: tempfile::tempdir().expect("docker config dir"),
        }
    }

    /// Runs `docker -H HOST ARGS` (see [`docker_command`]).
    pub fn run(&self, args: &[&str]) -> Output {
        docker_command(self.config.path())
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .output()
            .expect("run the docker CLI (is it installed?)")
    }

    /// The client configuration folder (`config.json`).
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }
}

/// Runs `cmd` and returns its stdout, trimmed; panics with its stderr (and a hint to
/// install the test packages) when it cannot start or fails.
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n(run `bash tests/servers.sh install` for the test packages)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// stdout of an [`Output`] as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an [`Output`] as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout of a command that must have succeeded; panics with its output otherwise.
pub fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Every entry of the simulator's image folders (`VIC/<vch>/images/*`: layers and
/// temporary folders) under the state folder `state`, sorted.
pub fn image_store_entries(state: &Path) -> Vec<PathBuf> {
    let vic = state.join("datastores/LocalDS_0/VIC");
    let mut out = Vec::new();
    let Ok(vchs) = std::fs::read_dir(&vic) else {
        return out;
    };
    for vch in vchs.flatten() {
        if let Ok(images) = std::fs::read_dir(vch.path().join("images")) {
            out.extend(images.flatten().map(|e| e.path()));
        }
    }
    out.sort();
    out
}
