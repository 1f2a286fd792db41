//! SOAP round trips (and datastore HTTP transfers, and time) of one container VM's
//! create + start + stop + rm on the vSphere backend against vcsim, as the engine
//! makes them: a PVSCSI controller, a read-write disk that is a child of the image's
//! top layer, the bootstrap ISO, a NIC, the serial log and the guestinfo keys.
//!
//!     cargo bench -p vic-vsphere --bench roundtrips
//!
//! Round trips are counted by the client (every POST to /sdk); the goal for
//! create + start is at most 8.

use std::collections::BTreeMap;
use std::time::Instant;

use vic_core::provider::{Allocation, Compute, DiskSpec, Network, Storage, VmSpec};
use vic_core::{DsPath, MoRef};
use vic_vsphere::VsphereBackend;
use vic_vsphere::vcsim::{Vcsim, container_devices};

const RUNS: usize = 5;

fn spec(n: usize, pool: &MoRef, net: &MoRef, layer: &DsPath) -> VmSpec {
    let name = format!("bench-{n:02}");
    VmSpec {
        name: name.clone(),
        pool: pool.clone(),
        files: DsPath::new("LocalDS_0", &name),
        num_cpus: 1,
        memory_mb: 256,
        guest_id: "otherGuest64".into(),
        devices: container_devices("LocalDS_0", &name, layer, 0, net, None),
        extra_config: BTreeMap::from([
            ("guestinfo.vice./common/id".into(), name.clone()),
            ("guestinfo.vice./common/name".into(), "bench".into()),
        ]),
        annotation: "vic bench".into(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sim = Vcsim::start(&[]);
    rt.block_on(async {
        let b = VsphereBackend::connect(&sim.sdk_url(), &sim.options("user", "pass")).await?;
        let root = b.find_pool("/DC0/host/DC0_C0/Resources").await?;
        let vch = b
            .ensure_pool(
                &root.reference,
                "bench-vch",
                Allocation::default(),
                Allocation::default(),
                true,
            )
            .await?;
        let net = b.find_network("VM Network").await?;
        b.make_dir(&DsPath::new("LocalDS_0", "VIC/bench/images/top"))
            .await?;
        let layer = DsPath::new("LocalDS_0", "VIC/bench/images/top/top.vmdk");
        b.create_disk(&DiskSpec {
            path: layer.clone(),
            capacity_kb: 8 << 20,
            parent: None,
        })
        .await?;
        b.make_dir(&DsPath::new("LocalDS_0", "iso")).await?;
        b.write_file(&DsPath::new("LocalDS_0", "iso/bootstrap.iso"), b"iso")
            .await?;

        let c = b.client();
        println!(
            "vSphere backend on vcsim ({}): one container VM, {RUNS} runs",
            c.url()
        );
        println!(
            "{:<8} {:>6} {:>6} {:>6} {:>6} {:>13} {:>8} {:>9}",
            "run", "create", "start", "stop", "rm", "create+start", "all", "HTTP xfers"
        );
        let mut worst = 0;
        for n in 0..RUNS {
            let s = spec(n, &vch.reference, &net.reference, &layer);
            let (t0, h0, clock) = (c.round_trips(), c.http_transfers(), Instant::now());
            let vm = b.create_vm(&s).await?;
            let t1 = c.round_trips();
            b.power_on(&vm.reference).await?;
            let t2 = c.round_trips();
            b.power_off(&vm.reference).await?;
            let t3 = c.round_trips();
            b.destroy(&vm.reference).await?;
            let t4 = c.round_trips();
            let elapsed = clock.elapsed();
            worst = worst.max(t2 - t0);
            println!(
                "{:<8} {:>6} {:>6} {:>6} {:>6} {:>13} {:>8} {:>9}   {:.1} ms",
                n,
                t1 - t0,
                t2 - t1,
                t3 - t2,
                t4 - t3,
                t2 - t0,
                t4 - t0,
                c.http_transfers() - h0,
                elapsed.as_secs_f64() * 1000.0
            );
        }
        println!(
            "create + start: at most {worst} SOAP round trips (goal: at most 8) — {}",
            if worst <= 8 { "met" } else { "NOT met" }
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
