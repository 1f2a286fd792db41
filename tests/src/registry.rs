//! A real Docker registry for the tests: Debian's `docker-registry` on a free loopback
//! port, started and stopped (by PID) through `tests/servers.sh`, with or without htpasswd
//! basic auth; and a small blocking HTTP client to look at what it holds.
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let reg = vic_tests::registry::TestRegistry::start(dir.path(), None);
//! let pushed = vic_tests::fixtures::push_busybox(&reg, "library/busybox", "latest");
//! let reply = reg.get("/v2/library/busybox/manifests/latest", &[]);
//! assert_eq!(reply.header("docker-content-digest"), Some(pushed.manifest_digest.as_str()));
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (`tests/..`).
pub fn repo_root() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests.parent().expect("tests/ has a parent").to_path_buf()
}

/// `tests/servers.sh`.
pub fn servers_sh() -> PathBuf {
    repo_root().join("tests").join("servers.sh")
}

/// Runs `tests/servers.sh ARGS` and returns its stdout, trimmed; panics with its stderr
/// when it fails.
fn servers(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(servers_sh())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/servers.sh");
    assert!(
        out.status.success(),
        "tests/servers.sh {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Where to push and how to log in: a registry address (`127.0.0.1:PORT`) and, for an
/// htpasswd registry, a user and password sent as basic auth on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// `host:port`, reached over plain HTTP.
    pub addr: String,
    /// User and password, for basic auth.
    pub auth: Option<(String, String)>,
}

impl Dest {
    /// A registry without auth.
    pub fn plain(addr: &str) -> Dest {
        Dest {
            addr: addr.to_string(),
            auth: None,
        }
    }

    /// A registry with basic auth.
    pub fn with_auth(addr: &str, user: &str, pass: &str) -> Dest {
        Dest {
            addr: addr.to_string(),
            auth: Some((user.to_string(), pass.to_string())),
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl From<&str> for Dest {
    fn from(addr: &str) -> Dest {
        Dest::plain(addr)
    }
}

impl From<&String> for Dest {
    fn from(addr: &String) -> Dest {
        Dest::plain(addr)
    }
}

impl From<&Dest> for Dest {
    fn from(d: &Dest) -> Dest {
        d.clone()
    }
}

impl From<&TestRegistry> for Dest {
    fn from(r: &TestRegistry) -> Dest {
        r.dest()
    }
}

/// A `docker-registry` process serving `DIR/data` on `127.0.0.1:PORT`, stopped by
/// `tests/servers.sh registry-stop DIR` (by the PID in `DIR/pid`) when dropped. Declare
/// the `TempDir` holding `DIR` before it, so that it is dropped after the registry.
#[derive(Debug)]
pub struct TestRegistry {
    dir: PathBuf,
    addr: String,
    auth: Option<(String, String)>,
    stopped: bool,
    /// Its process, read at start: stopped by it when the folder is already gone.
    pid: Option<i32>,
}

impl TestRegistry {
    /// Starts a registry in `dir` (created if missing). With `htpasswd = Some((user,
    /// pass))` it requires basic auth: the bcrypt entry goes to `dir/htpasswd` (written
    /// anew) through `tests/servers.sh htpasswd`.
    pub fn start(dir: &Path, htpasswd: Option<(&str, &str)>) -> TestRegistry {
        let dir = registry_dir(dir);
        let dir_s = dir.to_str().expect("registry folder path is UTF-8");
        let addr = match htpasswd {
            None => servers(&["registry-start", dir_s]),
            Some((user, pass)) => {
                let file = dir.join("htpasswd");
                let _ = std::fs::remove_file(&file);
                let file_s = file.to_str().expect("htpasswd path is UTF-8");
                servers(&["htpasswd", file_s, user, pass]);
                servers(&["registry-start", dir_s, "--htpasswd", file_s])
            }
        };
        TestRegistry::started(
            dir,
            addr,
            htpasswd.map(|(u, p)| (u.to_string(), p.to_string())),
        )
    }

    /// Starts a registry in `dir` (created if missing) whose `config.yml` ends with the
    /// `auth:` section in the file `auth_config` (`servers.sh registry-start
    /// --auth-config`), e.g. token auth ([`crate::token::TokenRegistry`]). Its
    /// [`TestRegistry::get`] and [`TestRegistry::head`] send no credentials.
    pub fn start_with_auth_config(dir: &Path, auth_config: &Path) -> TestRegistry {
        let dir = registry_dir(dir);
        let dir_s = dir.to_str().expect("registry folder path is UTF-8");
        let file_s = auth_config.to_str().expect("auth config path is UTF-8");
        let addr = servers(&["registry-start", dir_s, "--auth-config", file_s]);
        TestRegistry::started(dir, addr, None)
    }

    fn started(dir: PathBuf, addr: String, auth: Option<(String, String)>) -> TestRegistry {
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.contains('\n'),
            "tests/servers.sh registry-start printed {addr:?}, not 127.0.0.1:PORT"
        );
        let pid = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        TestRegistry {
            dir,
            addr,
            auth,
            stopped: false,
            pid,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry's folder (`config.yml`, `data/`, `registry.log`, `pid`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The user and password it was started with, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where to push, with its credentials.
    pub fn dest(&self) -> Dest {
        Dest {
            addr: self.addr.clone(),
            auth: self.auth.clone(),
        }
    }

    /// The file in which the registry's filesystem storage keeps the blob `digest`
    /// (`sha256:HEX`): `data/docker/registry/v2/blobs/sha256/HE/HEX/data`. Tests that
    /// corrupt a stored blob write here.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest
            .split_once(':')
            .unwrap_or_else(|| panic!("digest {digest:?} is not ALGO:HEX"));
        assert!(hex.len() > 2, "digest {digest:?} is too short");
        self.dir
            .join("data/docker/registry/v2/blobs")
            .join(algo)
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// What the registry logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// A `GET` of `path` (`/v2/...`) with the registry's credentials.
    pub fn get(&self, path: &str, accept: &[&str]) -> Reply {
        request(&self.dest(), "GET", path, accept)
    }

    /// A `HEAD` of `path` with the registry's credentials.
    pub fn head(&self, path: &str, accept: &[&str]) -> Reply {
        request(&self.dest(), "HEAD", path, accept)
    }

    /// Stops the registry now (otherwise on drop), panicking when that fails.
    pub fn stop(mut self) {
        self.stopped = true;
        let dir = self.dir.to_str().expect("registry folder path is UTF-8");
        servers(&["registry-stop", dir]);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // A folder removed before the registry (a TempDir dropped first) no longer names
        // it: stop it by the PID read at start.
        if !self.dir.join("pid").exists() {
            if let Some(pid) = self.pid {
                // SAFETY: kill with the PID of the registry this value started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            return;
        }
        // No panic in drop: a failed stop is reported.
        let out = Command::new("bash")
            .arg(servers_sh())
            .arg("registry-stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "tests/servers.sh registry-stop {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("tests/servers.sh registry-stop {}: {e}", self.dir.display()),
        }
    }
}

/// `dir`, created if missing, as an absolute path.
fn registry_dir(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the registry folder");
    dir.canonicalize().expect("registry folder path")
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names (lower-case) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`).
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A `GET` or `HEAD` (`method`) of `path` (`/v2/...`) on `dest`, with basic auth when
/// `dest` has credentials and an `Accept` header per entry of `accept`.
pub fn request(dest: &Dest, method: &str, path: &str, accept: &[&str]) -> Reply {
    let url = format!("{}{path}", dest.url());
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    block_on(async {
        let client = client();
        let mut req = client.request(method, &url);
        for a in accept {
            req = req.header(reqwest::header::ACCEPT, *a);
        }
        if let Some((u, p)) = &dest.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{url}: reading the body: {e}"))
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    })
}

/// A reqwest client for loopback registries: no proxy, no redirects followed.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

/// Runs `fut` to completion on a current-thread tokio runtime of its own, in a thread of
/// its own, so that it also works when called from inside another runtime (a
/// `#[tokio::test]`).
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
