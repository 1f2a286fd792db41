//! vic's tether: the init of a container VM's guest, and the protocol the VCH speaks
//! with it.
//!
//! The library is shared: the VCH (engine, simulator) uses [`protocol`], [`transport`],
//! [`logs`] and [`attach`] to configure a guest, watch its status, read its log and
//! attach to it; the `tether` binary uses the same modules and [`init`] to be the guest.
//!
//! The seam with the simulator's guest runner is a VM folder and a root file system:
//!
//! | file in the VM folder | who writes it | what                                      |
//! | --------------------- | ------------- | ----------------------------------------- |
//! | `guestinfo.json`      | the runner    | the VM's `guestinfo.*` keys ([`transport`]) |
//! | `guestinfo-out.json`  | the tether    | its `guestinfo.*` keys: the status        |
//! | `output.log`          | the tether    | the serial port's log ([`logs`])          |
//! | `attach.sock`         | the tether    | the live stream ([`attach`])              |
//!
//! The runner starts `tether <vm-folder> <rootfs>` as PID 1 of new namespaces
//! ([`launch`] is a minimal such runner) and learns everything else from those files.
#![warn(missing_docs)]

pub mod attach;
#[cfg(target_os = "linux")]
pub mod init;
#[cfg(target_os = "linux")]
pub mod launch;
pub mod logs;
pub mod protocol;
pub mod transport;
pub mod user;
