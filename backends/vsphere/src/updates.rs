//! VM change notification for [`Compute::wait_for_updates`](vic_core::provider::Compute):
//! one background task per backend (the pump) holds a property collector of its own
//! with one filter over the datacenter's VMs and keeps calling `WaitForUpdatesEx`. Each
//! batch of changes gets the next local version and is logged (which VMs changed or
//! left); callers wait on a watch channel for a version past theirs and then read the
//! changed VMs whole, in one call.
//!
//! Only the pump talks to the collector, so concurrent callers (the engine's supervisor
//! and a `docker stop` waiting for power-off) neither steal each other's updates nor
//! wait behind each other's long polls. When the collector is lost (the session was
//! renewed, the server restarted) the pump makes a new one and logs a "full" entry:
//! callers behind it get every VM.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{debug, warn};
use vic_core::provider::VmUpdates;
use vic_core::{MoRef, Result};

use crate::client::filter_spec;
use crate::compute::{vm_folder_traversal, vm_spec_props};
use crate::xml::Element;
use crate::{Shared, client_lock};

/// Batches kept for callers that are behind.
const KEEP: usize = 1024;
/// The pump's long poll; bounds how long it outlives its backend (and how long a
/// server that waits for open requests before it stops, as vcsim does, waits).
const POLL_SECS: u32 = 3;

/// One batch of changes.
#[derive(Debug)]
struct Entry {
    version: u64,
    touched: Vec<MoRef>,
    removed: Vec<MoRef>,
    /// The collector was made anew: what changed before is unknown.
    full: bool,
}

/// The log of batches and the latest local version.
#[derive(Debug, Default)]
pub(crate) struct UpdateLog {
    version: u64,
    entries: VecDeque<Entry>,
}

/// The pump's channel and its start-up lock.
#[derive(Debug)]
pub(crate) struct Updates {
    log: std::sync::Mutex<UpdateLog>,
    tx: tokio::sync::watch::Sender<u64>,
    started: tokio::sync::Mutex<bool>,
}

impl Default for Updates {
    fn default() -> Self {
        Updates {
            log: std::sync::Mutex::new(UpdateLog::default()),
            tx: tokio::sync::watch::channel(0).0,
            started: tokio::sync::Mutex::new(false),
        }
    }
}

/// Makes a property collector with the VM filter and reads its initial state (so that
/// every change after this returns is reported). Returns the collector and the
/// server's version.
async fn new_collector(s: &Shared) -> Result<(MoRef, String)> {
    let c = &s.client;
    let pc = c
        .call_moref(
            Element::new("CreatePropertyCollector")
                .with_moref("_this", &c.content().property_collector),
        )
        .await?;
    c.call(
        Element::new("CreateFilter")
            .with_moref("_this", &pc)
            .with(filter_spec(
                "spec",
                &vm_spec_props(),
                &s.inv.vm_folder,
                true,
                vm_folder_traversal(),
            ))
            .with_text("partialUpdates", "false"),
    )
    .await?;
    let rv = c
        .call_rv(
            Element::new("WaitForUpdatesEx")
                .with_moref("_this", &pc)
                .with_text("version", "")
                .with(Element::new("options").with_text("maxWaitSeconds", "0")),
        )
        .await?;
    let version = rv
        .and_then(|r| r.text_of("version").map(str::to_string))
        .unwrap_or_default();
    Ok((pc, version))
}

/// The VMs an update set touches and removes.
fn changes(set: &Element) -> (Vec<MoRef>, Vec<MoRef>) {
    let mut touched: Vec<MoRef> = Vec::new();
    let mut removed: Vec<MoRef> = Vec::new();
    for f in set.children_named("filterSet") {
        for o in f.children_named("objectSet") {
            let Some(obj) = o.moref_of("obj") else {
                continue;
            };
            if obj.kind != "VirtualMachine" {
                continue;
            }
            if o.text_of("kind") == Some("leave") {
                touched.retain(|t| *t != obj);
                if !removed.contains(&obj) {
                    removed.push(obj);
                }
            } else if !touched.contains(&obj) {
                removed.retain(|r| *r != obj);
                touched.push(obj);
            }
        }
    }
    (touched, removed)
}

impl Updates {
    fn push(&self, touched: Vec<MoRef>, removed: Vec<MoRef>, full: bool) {
        let mut log = client_lock(&self.log);
        log.version += 1;
        let version = log.version;
        log.entries.push_back(Entry {
            version,
            touched,
            removed,
            full,
        });
        while log.entries.len() > KEEP {
            log.entries.pop_front();
        }
        drop(log);
        self.tx.send_replace(version);
    }
}

/// The pump: long polls until the backend is dropped.
async fn pump(weak: Weak<Shared>, mut pc: MoRef, mut version: String) {
    loop {
        // The backend is not kept alive by the pump, not even during a poll.
        let Some(client) = weak.upgrade().map(|s| s.client.clone()) else {
            return;
        };
        let r = client
            .call_rv(
                Element::new("WaitForUpdatesEx")
                    .with_moref("_this", &pc)
                    .with_text("version", &version)
                    .with(
                        Element::new("options").with_text("maxWaitSeconds", POLL_SECS.to_string()),
                    ),
            )
            .await;
        drop(client);
        let Some(s) = weak.upgrade() else { return };
        match r {
            Ok(None) => {}
            Ok(Some(set)) => {
                if let Some(v) = set.text_of("version") {
                    version = v.to_string();
                }
                let (touched, removed) = changes(&set);
                if !touched.is_empty() || !removed.is_empty() {
                    s.updates.push(touched, removed, false);
                }
            }
            Err(e) => {
                warn!("waiting for VM updates: {e}; making a new property collector");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match new_collector(&s).await {
                    Ok((p, v)) => {
                        let _ = s
                            .client
                            .call(Element::new("DestroyPropertyCollector").with_moref("_this", &pc))
                            .await;
                        (pc, version) = (p, v);
                        s.updates.push(vec![], vec![], true);
                    }
                    Err(e) => debug!("new property collector: {e}"),
                }
            }
        }
    }
}

/// Starts the pump once: the filter exists when this returns.
async fn ensure_pump(s: &Arc<Shared>) -> Result<()> {
    let mut started = s.updates.started.lock().await;
    if !*started {
        let (pc, version) = new_collector(s).await?;
        // Local version 1 is the state when the filter was made (0 asks for
        // everything, so it is never handed out).
        client_lock(&s.updates.log).version = 1;
        s.updates.tx.send_replace(1);
        tokio::spawn(pump(Arc::downgrade(s), pc, version));
        *started = true;
    }
    Ok(())
}

/// [`Compute::wait_for_updates`](vic_core::provider::Compute::wait_for_updates).
pub(crate) async fn wait_for_updates(
    s: &Arc<Shared>,
    version: u64,
    timeout: Duration,
) -> Result<VmUpdates> {
    ensure_pump(s).await?;
    let current = *s.updates.tx.borrow();
    if version == 0 || version > current {
        // Everything now (also for a version of another connection).
        return Ok(VmUpdates {
            version: current,
            changed: s.read_vms(None, &[]).await?,
            removed: vec![],
        });
    }
    let mut rx = s.updates.tx.subscribe();
    let wait = async {
        // Dropping the guard at once: it must not live across an await.
        rx.wait_for(|v| *v > version).await.map(|_| ())
    };
    if !matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(()))) {
        return Ok(VmUpdates {
            version,
            changed: vec![],
            removed: vec![],
        });
    }
    let (now, touched, mut removed, full) = {
        let log = client_lock(&s.updates.log);
        let covered = log
            .entries
            .front()
            .is_some_and(|e| e.version <= version + 1);
        let newer = log.entries.iter().filter(|e| e.version > version);
        let mut touched: Vec<MoRef> = Vec::new();
        let mut removed: Vec<MoRef> = Vec::new();
        let mut full = !covered;
        for e in newer {
            full |= e.full;
            for t in &e.touched {
                removed.retain(|r| r != t);
                if !touched.contains(t) {
                    touched.push(t.clone());
                }
            }
            for r in &e.removed {
                touched.retain(|t| t != r);
                if !removed.contains(r) {
                    removed.push(r.clone());
                }
            }
        }
        (log.version, touched, removed, full)
    };
    if full {
        return Ok(VmUpdates {
            version: now,
            changed: s.read_vms(None, &[]).await?,
            removed: vec![],
        });
    }
    let mut changed = if touched.is_empty() {
        vec![]
    } else {
        s.read_vms(None, &touched).await?
    };
    // A VM that changed and was then destroyed before the read.
    for t in &touched {
        if !changed.iter().any(|v| &v.reference == t) && !removed.contains(t) {
            removed.push(t.clone());
        }
    }
    changed.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(VmUpdates {
        version: now,
        changed,
        removed,
    })
}
