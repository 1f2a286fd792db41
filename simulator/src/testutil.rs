//! Helpers shared by the unit tests: a simulator in a temporary state folder and a
//! small VM spec.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use vic_core::provider::{Device, DeviceSpec, FileOperation, ScsiKind, VmSpec};
use vic_core::{DsPath, MoRef};

use crate::Simulator;

/// A simulator on a fresh temporary state folder.
pub(crate) fn open_temp() -> (tempfile::TempDir, Simulator) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::open(dir.path().join("state")).unwrap();
    (dir, sim)
}

/// The reference of the root pool.
pub(crate) fn root_pool(sim: &Simulator) -> MoRef {
    sim.find_by_path(&sim.root_pool_path()).unwrap()
}

/// A one-CPU VM named `name` in the root pool with a SCSI controller, files in
/// `[LocalDS_0] <name>`.
pub(crate) fn small_vm(sim: &Simulator, name: &str) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        pool: root_pool(sim),
        files: DsPath::new("LocalDS_0", name),
        num_cpus: 1,
        memory_mb: 256,
        guest_id: "otherGuest64".into(),
        devices: vec![DeviceSpec {
            device: Device::ScsiController {
                key: 100,
                kind: ScsiKind::ParaVirtual,
                bus: 0,
            },
            file_operation: FileOperation::Attach,
        }],
        extra_config: BTreeMap::new(),
        annotation: String::new(),
    }
}
