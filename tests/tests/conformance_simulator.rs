//! The provider conformance suite against the simulator.

use std::sync::Arc;

use tokio::runtime::Runtime;
use vic_core::MoRef;
use vic_core::provider::{Allocation, Compute};
use vic_simulator::Simulator;
use vic_tests::conformance::proptest_lite::*;
use vic_tests::conformance::{ComputeConformance, Harness};

#[derive(Debug)]
struct SimHarness {
    dir: tempfile::TempDir,
    sim: Option<Simulator>,
    pool: MoRef,
    network: MoRef,
}

impl SimHarness {
    fn sim(&self) -> &Simulator {
        self.sim.as_ref().expect("simulator open")
    }
}

impl Harness for SimHarness {
    fn create(rt: &Runtime) -> Self {
        let dir = tempfile::tempdir().expect("state dir");
        let sim = Simulator::open(dir.path()).expect("open simulator");
        let root = rt
            .block_on(sim.find_pool(&sim.root_pool_path()))
            .expect("root pool");
        let pool = rt
            .block_on(sim.ensure_pool(
                &root.reference,
                "conformance",
                Allocation::default(),
                Allocation::default(),
                true,
            ))
            .expect("vApp");
        let network = rt
            .block_on(vic_core::Network::find_network(&sim, "VM Network"))
            .expect("VM Network");
        SimHarness {
            dir,
            sim: Some(sim),
            pool: pool.reference,
            network: network.reference,
        }
    }

    fn compute(&self) -> Arc<dyn Compute> {
        Arc::new(self.sim().clone())
    }

    fn restart(&mut self, _rt: &Runtime) {
        self.sim = None;
        self.sim = Some(Simulator::open(self.dir.path()).expect("reopen simulator"));
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
    fn simulator_compute_follows_the_model(sequential 1..30 => ComputeConformance<SimHarness>);
}
