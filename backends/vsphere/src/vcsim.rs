//! A vcsim for tests and benches: started with the project's `tests/servers.sh`
//! (which builds `tests/vcsim` when needed) in a folder of its own, stopped by PID
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use vic_core::provider::DeviceSpec;
use vic_core::{DsPath, MoRef};

use crate::tls::Tls;
use crate::{ClientOptions, VsphereOptions};

/// What vcsim reports once it listens (`info.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct VcsimInfo {
    /// Its SDK URL (may carry credentials).
    pub url: String,
    /// SHA-1 thumbprint of its certificate.
    pub thumbprint: String,
    /// Its process id.
    pub pid: u32,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The only user name it accepts, when started with one.
    #[serde(default)]
    pub username: String,
    /// The only password it accepts, when started with one.
    #[serde(default)]
    pub password: String,
    /// Its certificate (PEM).
    #[serde(default)]
    pub cert_pem: String,
}

/// A running vcsim, stopped (by the PID in its folder) and its folder removed on drop.
#[derive(Debug)]
pub struct Vcsim {
    dir: PathBuf,
    /// How to reach it.
    pub info: VcsimInfo,
}

fn servers_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/servers.sh")
}

impl Vcsim {
    /// Starts a vcsim with `flags` (e.g. `["-username", "u", "-password", "p"]`).
    /// Panics with vcsim's log when it does not start: this is for tests.
    pub fn start(flags: &[&str]) -> Vcsim {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vic-vcsim-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("vcsim folder");
        let out = Command::new("bash")
            .arg(servers_sh())
            .arg("vcsim-start")
            .arg(&dir)
            .args(flags)
            .output()
            .expect("run tests/servers.sh");
        if !out.status.success() {
            let log = std::fs::read_to_string(dir.join("vcsim.log")).unwrap_or_default();
            panic!(
                "vcsim did not start: {}\n{}\n{log}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let text = std::fs::read_to_string(dir.join("info.json")).expect("vcsim info.json");
        let info: VcsimInfo = serde_json::from_str(&text).expect("vcsim info JSON");
        Vcsim { dir, info }
    }

    /// `https://127.0.0.1:PORT/sdk` without credentials.
    pub fn sdk_url(&self) -> String {
        format!("https://{}/sdk", self.info.addr)
    }

    /// `https://user:pass@127.0.0.1:PORT/sdk` with the given credentials.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("https://{user}:{password}@{}/sdk", self.info.addr)
    }

    /// Options that pin vcsim's certificate by thumbprint and log in as `user`.
    pub fn options(&self, user: &str, password: &str) -> VsphereOptions {
        VsphereOptions {
            client: ClientOptions {
                user: Some(user.into()),
                password: Some(password.into()),
                tls: Tls::Thumbprint(self.info.thumbprint.clone()),
                timeout: None,
            },
            datacenter: None,
        }
    }

    /// The folder holding vcsim's datastores (host directories).
    pub fn datastore_dir(&self) -> PathBuf {
        self.dir.join("datastores")
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(servers_sh())
            .arg("vcsim-stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A container VM's devices as the engine gives them, for tests and benches: a PVSCSI
/// controller; its disk `[datastore] name/name.vmdk` of `capacity_kb` (0: its parent's),
/// a child of `parent`, to be created; the bootstrap ISO `[datastore] iso/bootstrap.iso`;
/// a NIC on `network` with `mac` (`None`: the server's); and the serial log
/// `[datastore] name/output.log` (see `vic_core::containers::ContainerDevices`).
pub fn container_devices(
    datastore: &str,
    name: &str,
    parent: &DsPath,
    capacity_kb: u64,
    network: &MoRef,
    mac: Option<&str>,
) -> Vec<DeviceSpec> {
    vic_core::containers::ContainerDevices {
        folder: DsPath::new(datastore, name),
        disk: format!("{name}.vmdk"),
        parent: Some(parent.clone()),
        capacity_kb,
        network: network.clone(),
        mac: mac.map(str::to_string),
        iso: Some(DsPath::new(datastore, "iso/bootstrap.iso")),
    }
    .specs()
}
