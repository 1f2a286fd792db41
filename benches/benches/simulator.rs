//! Simulator throughput: one container-VM lifecycle (create, power on, power off,
//! destroy) through the Compute provider, each step a persisted inventory update.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use vic_core::DsPath;
use vic_core::provider::{Allocation, Compute, Device, DeviceSpec, FileOperation, VmSpec};
use vic_simulator::Simulator;

fn lifecycle(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("state dir");
    let sim = Simulator::open(dir.path()).expect("simulator");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = rt
        .block_on(sim.find_pool(&sim.root_pool_path()))
        .expect("root pool");
    let pool = rt
        .block_on(sim.ensure_pool(
            &root.reference,
            "bench",
            Allocation::default(),
            Allocation::default(),
            true,
        ))
        .expect("pool");
    let net = rt
        .block_on(vic_core::Network::find_network(&sim, "VM Network"))
        .expect("network");
    let mut n = 0u64;
    c.bench_function("simulator: create + power on + power off + destroy", |b| {
        b.iter(|| {
            n += 1;
            let name = format!("vm-{n}");
            let folder = DsPath::new("LocalDS_0", &name);
            let spec = VmSpec {
                name,
                pool: pool.reference.clone(),
                files: folder.clone(),
                num_cpus: 1,
                memory_mb: 64,
                guest_id: "otherGuest64".into(),
                devices: vec![
                    DeviceSpec {
                        device: Device::Nic {
                            key: 4000,
                            network: net.reference.clone(),
                            mac: None,
                        },
                        file_operation: FileOperation::Attach,
                    },
                    DeviceSpec {
                        device: Device::Serial {
                            key: 9000,
                            file: folder.join("output.log"),
                        },
                        file_operation: FileOperation::Attach,
                    },
                ],
                extra_config: BTreeMap::from([("guestinfo.bench".into(), "1".into())]),
                annotation: String::new(),
            };
            rt.block_on(async {
                let vm = sim.create_vm(&spec).await.expect("create");
                sim.power_on(&vm.reference).await.expect("on");
                sim.power_off(&vm.reference).await.expect("off");
                sim.destroy(&vm.reference).await.expect("destroy");
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = lifecycle
}
criterion_main!(benches);
