//! A vcsim-style simulator of the vSphere inventory that vic's providers need, persisted
//! in a state folder.
//!
//! Modelled on govmomi's `simulator`: every managed object (datacenter, folders, cluster,
//! host, resource pools and vApps, datastores, port groups, VMs, tasks) lives in one
//! registry keyed by its reference ([`inventory`]); every change goes through one update
//! path that checks injected [`faults`], records a task, applies the change to a copy,
//! persists it atomically to `<state>/inventory.json`, swaps it in, logs events and wakes
//! the watchers of [`vic_core::Compute::wait_for_updates`]. Datastores are host folders
//! under `<state>/datastores/`; disks are VMDK descriptor files there.
//!
//! ```no_run
//! # async fn demo() -> vic_core::Result<()> {
//! let sim = vic_simulator::Simulator::open("/tmp/vic-sim")?;
//! let backend = sim.backend();
//! let pool = backend.compute.find_pool(&sim.root_pool_path()).await?;
//! # let _ = pool; Ok(()) }
//! ```
#![warn(missing_docs)]

mod compute;
pub mod faults;
pub mod guest;
mod host;
pub mod inventory;
mod network;
pub mod runner;
mod sim;
mod storage;
#[cfg(test)]
mod testutil;

pub use faults::{Fault, Faults};
pub use guest::{GuestCheck, GuestHost, GuestRunner, NoGuest};
pub use inventory::{Event, Inventory, ManagedObject, ObjectData, TaskInfo, TaskState};
pub use runner::TetherRunner;
pub use sim::{INVENTORY_FILE, LOCK_FILE, PRODUCT, RECONCILE_INTERVAL, Simulator, WeakSimulator};
