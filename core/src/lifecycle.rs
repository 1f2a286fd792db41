//! The running side of containers: start (holding the process for a waiting attach),
//! stop with a timeout, kill, restart, resize, the live stream, and the supervisor that
//! applies restart policies and `--rm` and reports `die` events.
//!
//! Signals, resizes and stdin reach the guest over its live stream
//! ([`crate::provider::Compute::open_guest_stream`], the tether's attach protocol); a
//! power-off is the hard stop when the guest does not end in time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};
use vic_tether::attach::Frame;
use vic_tether::protocol::{GuestConfig, GuestState, GuestStatus, STATUS_KEY};

use crate::containers::ContainerView;
use crate::engine::Engine;
use crate::model::{Container, RestartPolicy, keys};
use crate::provider::{GuestStream, PowerState, VmChange};
use crate::{Error, MoRef, Result};

/// SIGKILL.
pub const SIGKILL: i32 = 9;
/// SIGTERM, the default stop signal.
pub const SIGTERM: i32 = 15;
/// Seconds `docker stop` waits by default before killing.
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;
/// A restart policy's first delay; it doubles while runs stay shorter than
/// [`BACKOFF_RESET`], up to [`BACKOFF_MAX`] (dockerd's numbers).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long a powered-on guest may take to open its live stream.
const GUEST_PATIENCE: Duration = Duration::from_secs(10);

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A signal by number (`9`) or name (`KILL`, `SIGKILL`, `sigusr1`, `SIGRTMIN+3`), as
/// `docker kill -s` and `--stop-signal` accept them.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = || Error::InvalidArgument(format!("Invalid signal: {s}"));
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().ok()?
        };
        let n = base + sign * off;
        (34..=64).contains(&n).then_some(n)
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        rt(34, rest.strip_prefix('+').unwrap_or(rest), 1)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        rt(
            64,
            rest.strip_prefix('-').unwrap_or(rest),
            1 - 2 * i32::from(!rest.is_empty()),
        )
    } else {
        None
    };
    n.ok_or_else(bad)
}

/// The signal that stops `c`: its `--stop-signal` (or the image's), else SIGTERM.
fn stop_signal(c: &Container) -> Result<i32> {
    match c.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_signal(s),
        None => Ok(SIGTERM),
    }
}

/// What the engine keeps in memory about running containers: attaches waiting for a
/// start, policy restarts under way, their back-off. Nothing here is needed to recover.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    restarting: Mutex<HashSet<String>>,
    backoff: Mutex<HashMap<String, Duration>>,
    started: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Pending {
    count: usize,
    size: Option<(u16, u16)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lifecycle {
    fn pending_count(&self, id: &str) -> usize {
        lock(&self.pending).get(id).map_or(0, |p| p.count)
    }

    pub(crate) fn is_restarting(&self, id: &str) -> bool {
        lock(&self.restarting).contains(id)
    }
}

/// An attach that has been accepted: while it lives, a start of the container holds
/// the process back until the attach has connected, so no output is missed.
#[derive(Debug)]
pub struct AttachTicket {
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    /// The container as it was when the attach came.
    pub container: Container,
    vm: MoRef,
    /// The guest's status key when the attach came: a different one on a powered-off
    /// VM means a run has come and gone without the attach (its guest failed early).
    status: Option<String>,
}

impl Drop for AttachTicket {
    fn drop(&mut self) {
        let mut p = lock(&self.pending);
        if let Some(e) = p.get_mut(&self.container.id) {
            e.count = e.count.saturating_sub(1);
            if e.count == 0 {
                p.remove(&self.container.id);
            }
        }
    }
}

fn io_error(what: &str, id: &str, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{what} container {id}: {e}"))
}

fn not_running(id: &str) -> Error {
    Error::Conflict(format!("Container {id} is not running"))
}

impl Engine {
    /// Connects to a powered-on VM's guest, waiting while it is not listening yet.
    async fn connect_guest(&self, vm: &MoRef) -> Result<GuestStream> {
        let until = Instant::now() + GUEST_PATIENCE;
        loop {
            match self.backend.compute.open_guest_stream(vm).await {
                Err(Error::Unavailable(m)) if Instant::now() < until => {
                    debug!(%vm, reason = %m, "guest not listening yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Sends one frame to the guest of a running container.
    async fn send_to_guest(&self, view: &ContainerView, frame: &Frame) -> Result<()> {
        let id = &view.container.id;
        let mut s = self.connect_guest(&view.vm.reference).await?;
        s.write_all(&frame.encode())
            .await
            .map_err(|e| io_error("signalling", id, e))?;
        s.shutdown()
            .await
            .map_err(|e| io_error("signalling", id, e))?;
        Ok(())
    }

    async fn set_keys(&self, vm: &MoRef, keys: BTreeMap<String, Option<String>>) -> Result<()> {
        let change = VmChange {
            extra_config: keys,
            ..Default::default()
        };
        self.backend.compute.reconfigure(vm, &change).await
    }

    async fn mark_manual_stop(&self, view: &ContainerView) -> Result<()> {
        if view
            .vm
            .extra_config
            .get(keys::MANUAL_STOP)
            .map(String::as_str)
            == Some("true")
        {
            return Ok(());
        }
        self.set_keys(
            &view.vm.reference,
            BTreeMap::from([(keys::MANUAL_STOP.to_string(), Some("true".to_string()))]),
        )
        .await
    }

    /// Powers a VM off, also when it went off by itself meanwhile. A guest killed by
    /// the power-off cannot report its end: unless its last status says it exited, the
    /// status becomes "exited 137" (killed), as Docker reports a SIGKILL.
    async fn hard_stop(&self, vm: &MoRef) -> Result<()> {
        match self.backend.compute.power_off(vm).await {
            Err(Error::InvalidState(_)) => {}
            other => other?,
        }
        let info = self.backend.compute.vm_info(vm).await?;
        if info.power_state != PowerState::PoweredOff {
            return Err(Error::InvalidState(format!(
                "{} did not power off",
                info.name
            )));
        }
        let last = GuestStatus::from_keys(&info.extra_config).ok().flatten();
        if last.as_ref().is_some_and(|s| s.state == GuestState::Exited) {
            return Ok(());
        }
        let killed = GuestStatus {
            state: GuestState::Exited,
            pid: last.as_ref().and_then(|s| s.pid),
            started_at: last.as_ref().and_then(|s| s.started_at),
            finished_at: Some(std::time::SystemTime::now()),
            exit_code: Some(128 + SIGKILL),
            error: None,
        };
        self.backend
            .compute
            .reconfigure(vm, &VmChange::set_keys(killed.to_keys()))
            .await
    }

    /// Waits until `vm` is powered off (`true`) or `deadline` passes (`false`).
    async fn wait_powered_off(&self, vm: &MoRef, deadline: Option<Instant>) -> Result<bool> {
        let mut version = 0;
        loop {
            match self.backend.compute.vm_info(vm).await {
                Ok(i) if i.power_state == PowerState::PoweredOff => return Ok(true),
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(true),
                Err(e) => return Err(e),
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(5),
            };
            if left.is_zero() {
                return Ok(false);
            }
            version = self
                .backend
                .compute
                .wait_for_updates(version, left.min(Duration::from_secs(5)))
                .await?
                .version;
        }
    }

    fn emit(&self, action: &str, c: &Container, extra: &[(&str, &str)]) {
        let mut attrs = vec![("image", c.image.as_str()), ("name", c.name.as_str())];
        attrs.extend_from_slice(extra);
        self.events.emit("container", action, &c.id, &attrs);
    }

    /// Starts a container: powers its VM on, whose guest runs the process. `false` when
    /// it already runs (Docker's 304).
    pub async fn start_container(&self, key: &str) -> Result<bool> {
        let view = self.container(key).await?;
        self.start_view(&view, false).await
    }

    /// Starts `view`'s VM; `by_policy` counts a restart-policy restart, a user's start
    /// resets the count.
    async fn start_view(&self, view: &ContainerView, by_policy: bool) -> Result<bool> {
        if view.vm.power_state == PowerState::PoweredOn {
            return Ok(false);
        }
        let ec = &view.vm.extra_config;
        let mut change = BTreeMap::new();
        // The last run's status must not pass for this run's.
        for k in [STATUS_KEY, keys::MANUAL_STOP] {
            if ec.contains_key(k) {
                change.insert(k.to_string(), None);
            }
        }
        if by_policy {
            let n = view.container.state.restart_count + 1;
            change.insert(keys::RESTART_COUNT.to_string(), Some(n.to_string()));
        } else if ec.contains_key(keys::RESTART_COUNT) {
            change.insert(keys::RESTART_COUNT.to_string(), None);
        }
        // An attach waiting for this start holds the process until it has connected.
        let wait = self.lifecycle.pending_count(&view.container.id) > 0;
        if let Ok(mut cfg) = GuestConfig::from_keys(ec)
            && cfg.session.attach_wait != wait
        {
            cfg.session.attach_wait = wait;
            change.extend(cfg.to_keys().into_iter().map(|(k, v)| (k, Some(v))));
        }
        if !change.is_empty() {
            self.set_keys(&view.vm.reference, change).await?;
        }
        self.backend.compute.power_on(&view.vm.reference).await?;
        self.lifecycle.started.notify_waiters();
        self.emit("start", &view.container, &[]);
        Ok(true)
    }

    /// Stops a container: the guest gets the stop signal (the container's, else
    /// SIGTERM); if it has not ended after `timeout` seconds (the container's stop
    /// timeout, else 10; negative: no limit), its VM is powered off, which kills it.
    /// `false` when it was not running (304).
    pub async fn stop_container(&self, key: &str, timeout: Option<i64>) -> Result<bool> {
        let view = self.container(key).await?;
        if view.vm.power_state != PowerState::PoweredOn {
            return Ok(false);
        }
        self.mark_manual_stop(&view).await?;
        let c = &view.container;
        let secs = timeout
            .or(c.config.stop_timeout.map(i64::from))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let signal = stop_signal(c)?;
        let mut ended = false;
        if secs != 0 {
            match self.send_to_guest(&view, &Frame::Signal(signal)).await {
                Ok(()) => {
                    self.emit("kill", c, &[("signal", &signal.to_string())]);
                    let deadline = u64::try_from(secs)
                        .ok()
                        .map(|s| Instant::now() + Duration::from_secs(s));
                    ended = self.wait_powered_off(&view.vm.reference, deadline).await?;
                }
                Err(e) => warn!(container = %c.id, error = %e, "stop signal not delivered"),
            }
        }
        if !ended {
            self.emit("kill", c, &[("signal", &SIGKILL.to_string())]);
            self.hard_stop(&view.vm.reference).await?;
        }
        info!(container = %c.id, "container stopped");
        self.emit("stop", c, &[]);
        Ok(true)
    }

    /// Sends a signal (default SIGKILL) to a running container's process.
    pub async fn kill_container(&self, key: &str, signal: Option<&str>) -> Result<()> {
        let sig = match signal.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => SIGKILL,
        };
        let view = self.container(key).await?;
        let c = &view.container;
        if view.vm.power_state != PowerState::PoweredOn {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {}: Container {} is not running",
                key, c.id
            )));
        }
        let stop_signal = stop_signal(c)?;
        // A kill meant to end the container keeps its restart policy from undoing it.
        if sig == SIGKILL || sig == stop_signal {
            self.mark_manual_stop(&view).await?;
        }
        match self.send_to_guest(&view, &Frame::Signal(sig)).await {
            Ok(()) => {}
            Err(e) if sig == SIGKILL => {
                warn!(container = %c.id, error = %e, "guest unreachable, powering off");
                self.hard_stop(&view.vm.reference).await?;
            }
            Err(e) => return Err(e),
        }
        self.emit("kill", c, &[("signal", &sig.to_string())]);
        Ok(())
    }

    /// Stops (see [`Engine::stop_container`]) and starts a container.
    pub async fn restart_container(&self, key: &str, timeout: Option<i64>) -> Result<()> {
        let id = self.container(key).await?.container.id;
        self.stop_container(&id, timeout).await?;
        let view = self.container(&id).await?;
        self.start_view(&view, false).await?;
        self.emit("restart", &view.container, &[]);
        Ok(())
    }

    /// Sets the size of a container's TTY. Before an attach has connected, the size is
    /// kept for it.
    pub async fn resize_container(&self, key: &str, rows: u16, cols: u16) -> Result<()> {
        let view = self.container(key).await?;
        {
            let mut p = lock(&self.lifecycle.pending);
            if let Some(e) = p.get_mut(&view.container.id) {
                e.size = Some((rows, cols));
                return Ok(());
            }
        }
        if view.vm.power_state != PowerState::PoweredOn {
            return Err(not_running(&view.container.id));
        }
        self.send_to_guest(&view, &Frame::Resize { rows, cols })
            .await
    }

    /// Accepts an attach to a container (running or not yet started).
    pub async fn prepare_attach(&self, key: &str) -> Result<AttachTicket> {
        let view = self.container(key).await?;
        lock(&self.lifecycle.pending)
            .entry(view.container.id.clone())
            .or_default()
            .count += 1;
        Ok(AttachTicket {
            pending: self.lifecycle.pending.clone(),
            container: view.container,
            status: view.vm.extra_config.get(STATUS_KEY).cloned(),
            vm: view.vm.reference,
        })
    }

    /// Connects an accepted attach to its container's guest, waiting for the container
    /// to start if it does not run.
    pub async fn connect_attach(&self, ticket: &AttachTicket) -> Result<GuestStream> {
        let id = &ticket.container.id;
        loop {
            let started = self.lifecycle.started.notified();
            tokio::pin!(started);
            started.as_mut().enable();
            let info = match self.backend.compute.vm_info(&ticket.vm).await {
                Err(e) if e.is_not_found() => {
                    return Err(Error::not_found("container", id.clone()));
                }
                other => other?,
            };
            let status = info.extra_config.get(STATUS_KEY);
            if info.power_state == PowerState::PoweredOff
                && status.is_some()
                && status != ticket.status.as_ref()
            {
                return Err(not_running(id));
            }
            if info.power_state == PowerState::PoweredOn {
                match self.connect_guest(&ticket.vm).await {
                    Ok(mut s) => {
                        let size = lock(&self.lifecycle.pending)
                            .get_mut(id)
                            .and_then(|p| p.size.take());
                        if let Some((rows, cols)) = size {
                            s.write_all(&Frame::Resize { rows, cols }.encode())
                                .await
                                .map_err(|e| io_error("attaching to", id, e))?;
                        }
                        return Ok(s);
                    }
                    Err(e) => {
                        let off = self
                            .backend
                            .compute
                            .vm_info(&ticket.vm)
                            .await
                            .is_ok_and(|i| i.power_state != PowerState::PoweredOn);
                        if !off {
                            return Err(e);
                        }
                    }
                }
            }
            tokio::select! {
                _ = &mut started => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Runs the supervisor: applies restart policies and `--rm` to containers whose
    /// process ended (also those that ended while no endpoint ran) and reports `die`
    /// events. Runs until the engine is dropped... which it is not: call once.
    pub fn supervise(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut seen: HashMap<String, bool> = HashMap::new();
            let mut version = 0;
            loop {
                match engine.containers().await {
                    Ok(views) => engine.apply_policies(&views, &mut seen),
                    Err(e) => warn!(error = %e, "supervisor: cannot list containers"),
                }
                match engine
                    .backend
                    .compute
                    .wait_for_updates(version, Duration::from_secs(30))
                    .await
                {
                    Ok(u) => version = u.version,
                    Err(e) => {
                        warn!(error = %e, "supervisor: waiting for updates failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }

    fn apply_policies(self: &Arc<Self>, views: &[ContainerView], seen: &mut HashMap<String, bool>) {
        let ids: HashSet<&str> = views.iter().map(|v| v.container.id.as_str()).collect();
        seen.retain(|id, _| ids.contains(id.as_str()));
        for v in views {
            let c = &v.container;
            let status = GuestStatus::from_keys(&v.vm.extra_config).ok().flatten();
            let settled = v.vm.power_state == PowerState::PoweredOff
                && status
                    .as_ref()
                    .is_some_and(|s| s.state == GuestState::Exited);
            // A VM just powered off whose guest status has not arrived still counts.
            let alive = v.vm.power_state == PowerState::PoweredOn
                || status
                    .as_ref()
                    .is_some_and(|s| s.state != GuestState::Exited);
            let was_alive = seen.insert(c.id.clone(), alive);
            if !settled {
                continue;
            }
            if was_alive == Some(true) {
                self.emit("die", c, &[("exitCode", &c.state.exit_code.to_string())]);
            }
            if self.lifecycle.is_restarting(&c.id) {
                continue;
            }
            if c.host_config.auto_remove {
                self.auto_remove(c.id.clone());
            } else if self.policy_restarts(v) {
                self.policy_restart(v, status.as_ref());
            }
        }
    }

    fn policy_restarts(&self, v: &ContainerView) -> bool {
        let c = &v.container;
        let manual = v.vm.extra_config.get(keys::MANUAL_STOP).map(String::as_str) == Some("true");
        match c.host_config.restart_policy {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => !manual,
            RestartPolicy::OnFailure { max_retries } => {
                !manual
                    && c.state.exit_code != 0
                    && (max_retries == 0 || c.state.restart_count < max_retries)
            }
        }
    }

    fn auto_remove(self: &Arc<Self>, id: String) {
        lock(&self.lifecycle.restarting).insert(id.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            match engine.remove_container(&id, false).await {
                Ok(()) => info!(container = %id, "removed after exit (--rm)"),
                Err(e) if e.is_not_found() => {}
                Err(e) => warn!(container = %id, error = %e, "auto-remove failed"),
            }
            lock(&engine.lifecycle.restarting).remove(&id);
        });
    }

    fn policy_restart(self: &Arc<Self>, v: &ContainerView, status: Option<&GuestStatus>) {
        let id = v.container.id.clone();
        let ran = status
            .and_then(|s| s.finished_at?.duration_since(s.started_at?).ok())
            .unwrap_or_default();
        let delay = {
            let mut b = lock(&self.lifecycle.backoff);
            let d = match b.get(&id) {
                Some(prev) if ran < BACKOFF_RESET => (*prev * 2).min(BACKOFF_MAX),
                _ => BACKOFF_FIRST,
            };
            b.insert(id.clone(), d);
            d
        };
        lock(&self.lifecycle.restarting).insert(id.clone());
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let result = async {
                let view = engine.container(&id).await?;
                // The user may have started, stopped or changed it meanwhile.
                if view.vm.power_state == PowerState::PoweredOff && engine.policy_restarts(&view) {
                    engine.start_view(&view, true).await?;
                    info!(container = %id, after = ?delay, "restarted by its restart policy");
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = result
                && !e.is_not_found()
            {
                warn!(container = %id, error = %e, "restart policy: start failed");
            }
            lock(&engine.lifecycle.restarting).remove(&id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGRTMIN").unwrap(), 34);
        assert_eq!(parse_signal("RTMIN+3").unwrap(), 37);
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), 63);
        assert_eq!(parse_signal("RTMAX").unwrap(), 64);
        for bad in ["0", "65", "SIGNOPE", "", "RTMIN+40", "-1"] {
            let e = parse_signal(bad).unwrap_err();
            assert_eq!(e.http_status(), 400, "{bad}");
            assert!(e.to_string().contains("Invalid signal"), "{e}");
        }
    }
}
