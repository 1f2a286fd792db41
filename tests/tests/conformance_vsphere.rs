//! The provider conformance suite against the vSphere backend on govmomi's vcsim: the
//! same model and properties as for the simulator. Every case starts its own vcsim
//! (tests/servers.sh builds it when needed) and stops it by PID when the case ends.
//!
//! Restart is a new connection and session: the backend holds no state of its own, so
//! the VMs, their references and their extraConfig must all come back from vcsim.

use std::sync::Arc;

use tokio::runtime::Runtime;
use vic_core::MoRef;
use vic_core::provider::{Allocation, Compute, Network};
use vic_tests::conformance::proptest_lite::*;
use vic_tests::conformance::{ComputeConformance, Harness};
use vic_vsphere::VsphereBackend;
use vic_vsphere::vcsim::Vcsim;

#[derive(Debug)]
struct VcsimHarness {
    backend: Option<VsphereBackend>,
    pool: MoRef,
    network: MoRef,
    // Last, so that the backend is dropped before vcsim stops.
    sim: Vcsim,
}

fn connect(rt: &Runtime, sim: &Vcsim) -> VsphereBackend {
    rt.block_on(VsphereBackend::connect(
        &sim.sdk_url(),
        &sim.options("user", "pass"),
    ))
    .expect("connect to vcsim")
}

impl Harness for VcsimHarness {
    fn create(rt: &Runtime) -> Self {
        let sim = Vcsim::start(&[]);
        let backend = connect(rt, &sim);
        let root = rt
            .block_on(backend.find_pool("/DC0/host/DC0_C0/Resources"))
            .expect("root pool");
        let pool = rt
            .block_on(backend.ensure_pool(
                &root.reference,
                "conformance",
                Allocation::default(),
                Allocation::default(),
                true,
            ))
            .expect("vApp");
        let network = rt
            .block_on(backend.find_network("VM Network"))
            .expect("VM Network");
        VcsimHarness {
            backend: Some(backend),
            pool: pool.reference,
            network: network.reference,
            sim,
        }
    }

    fn compute(&self) -> Arc<dyn Compute> {
        Arc::new(self.backend.clone().expect("connected"))
    }

    fn restart(&mut self, rt: &Runtime) {
        self.backend = None;
        self.backend = Some(connect(rt, &self.sim));
    }

    fn pool(&self) -> MoRef {
        self.pool.clone()
    }

    fn network(&self) -> MoRef {
        self.network.clone()
    }

    fn datastore(&self) -> String {
        "LocalDS_0".into()
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 2000,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn vsphere_compute_on_vcsim_follows_the_model(sequential 1..30 => ComputeConformance<VcsimHarness>);
}
