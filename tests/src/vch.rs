//! A VCH to test containers against: a local registry with the busybox test image, a
//! `vic-endpoint` on a new simulator state, and the image pulled into it.

use std::path::PathBuf;
use std::process::Output;

use crate::fixtures::{Pushed, push_busybox};
use crate::registry::TestRegistry;
use crate::{Endpoint, docker, ok, stdout};

/// The registry, the endpoint and the image. Dropped in field order: the endpoint (after
/// removing every container, so that a failed test leaves no guest running), the
/// registry, then their folder.
#[derive(Debug)]
pub struct SimVch {
    /// The endpoint (`None` only while it is restarted).
    pub ep: Option<Endpoint>,
    /// The registry.
    pub reg: TestRegistry,
    /// The busybox image in it.
    pub bb: Pushed,
    /// The simulator's state folder.
    pub state: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl SimVch {
    /// A new registry, endpoint and pulled busybox.
    pub fn new() -> SimVch {
        let dir = tempfile::tempdir().expect("test folder");
        let reg = TestRegistry::start(&dir.path().join("registry"), None);
        let bb = push_busybox(&reg, "busybox", "latest");
        let state = dir.path().join("state");
        let args = vec!["--insecure-registry".to_string(), reg.addr().to_string()];
        let mut vch = SimVch {
            ep: None,
            reg,
            bb,
            state,
            args,
            _dir: dir,
        };
        vch.start_endpoint();
        ok(&vch.d(&["pull", &vch.bb.reference]), "pull");
        vch
    }

    /// As [`SimVch::new`] when this process is root; `None` (the test skipped, saying
    /// so) otherwise.
    pub fn as_root() -> Option<SimVch> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return None;
        }
        Some(SimVch::new())
    }

    /// Starts the endpoint on the same state (after [`SimVch::kill_endpoint`]).
    pub fn start_endpoint(&mut self) {
        let a: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.ep = Some(Endpoint::start(&self.state, &a));
    }

    /// kill -9 of the endpoint.
    pub fn kill_endpoint(&mut self) {
        if let Some(ep) = self.ep.take() {
            ep.kill9();
        }
    }

    /// kill -9 of the endpoint and a new one on the same state.
    pub fn restart_endpoint(&mut self) {
        self.kill_endpoint();
        self.start_endpoint();
    }

    /// `tcp://…` of the endpoint.
    pub fn h(&self) -> String {
        self.ep.as_ref().expect("the endpoint runs").host()
    }

    /// The docker CLI against the endpoint.
    pub fn d(&self, args: &[&str]) -> Output {
        docker(&self.h(), args)
    }

    /// `status exit-code restart-count` of a container.
    pub fn state_of(&self, name: &str) -> String {
        ok(
            &self.d(&[
                "inspect",
                name,
                "--format",
                "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
            ]),
            "inspect",
        )
        .trim()
        .to_string()
    }
}

impl Default for SimVch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SimVch {
    fn drop(&mut self) {
        if let Some(ep) = &self.ep {
            let ids = stdout(&docker(&ep.host(), &["ps", "-aq"]));
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            if args.len() > 2 {
                let _ = docker(&ep.host(), &args);
            }
        }
    }
}
