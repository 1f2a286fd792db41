//! The provider conformance suite: a proptest state machine over the [`Compute`]
//! provider (create, power on, power off, reconfigure, destroy, list, and restart the
//! provider from its persistent state), checked step by step against a model.
//!
//! It is generic over a [`Harness`] so that every backend runs the same model and the
//! same properties: the simulator now, the vSphere backend on vcsim later.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

use proptest_lite::*;
use tokio::runtime::Runtime;
use vic_core::provider::{Compute, Device, PowerState, VmChange, VmSpec};
use vic_core::{DsPath, Error, MoRef};

/// Re-exports so that backend test files need no direct proptest imports.
pub mod proptest_lite {
    pub use proptest::prelude::*;
    pub use proptest::strategy::BoxedStrategy;
    pub use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
}

/// What a backend must provide to run the suite.
pub trait Harness: Sized {
    /// A fresh, empty backend.
    fn create(rt: &Runtime) -> Self;
    /// Its compute provider.
    fn compute(&self) -> Arc<dyn Compute>;
    /// Drops the provider and opens it again from its persistent state (a restarted
    /// endpoint process, a new vSphere session).
    fn restart(&mut self, rt: &Runtime);
    /// The pool the suite creates VMs in.
    fn pool(&self) -> MoRef;
    /// A network for the VMs' NICs.
    fn network(&self) -> MoRef;
    /// The datastore for the VMs' folders.
    fn datastore(&self) -> String;
}

/// The VM names the suite uses: few, so that conflicts and reuse happen.
pub const NAMES: usize = 4;
const KEYS: u8 = 3;
const PREFIX: &str = "guestinfo.conformance.";

/// What the model expects of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelVm {
    /// Power state.
    pub power: PowerState,
    /// vCPUs.
    pub cpus: u32,
    /// Memory MiB.
    pub memory_mb: u64,
    /// The suite's extraConfig keys.
    pub extra: BTreeMap<String, String>,
}

/// The outcome the model predicts for the last transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Success.
    Ok,
    /// `Error::NotFound`.
    NotFound,
    /// `Error::Conflict`.
    Conflict,
    /// `Error::InvalidState`.
    InvalidState,
}

/// The model: VMs by name index, and the expectation for the last step.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// The VMs that exist.
    pub vms: BTreeMap<usize, ModelVm>,
    /// What the last transition should have returned.
    pub expect: Option<Expect>,
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// Create VM `name` with these resources and one extraConfig value.
    Create {
        /// Name index.
        name: usize,
        /// vCPUs.
        cpus: u32,
        /// Memory MiB.
        memory_mb: u64,
        /// Value for key 0.
        value: u8,
    },
    /// Power on.
    PowerOn(usize),
    /// Power off.
    PowerOff(usize),
    /// Reconfigure: resources (only generated for powered-off VMs) and one key.
    Reconfigure {
        /// Name index.
        name: usize,
        /// New vCPUs.
        cpus: Option<u32>,
        /// New memory.
        memory_mb: Option<u64>,
        /// Which key.
        key: u8,
        /// Set it, or remove it with `None`.
        value: Option<u8>,
    },
    /// Destroy.
    Destroy(usize),
    /// List and compare (also done after every step).
    List,
    /// Restart the provider from its persistent state.
    Restart,
}

fn vm_name(i: usize) -> String {
    format!("conformance-vm-{i}")
}

fn key(k: u8) -> String {
    format!("{PREFIX}k{k}")
}

/// The reference state machine over [`Model`].
#[derive(Debug)]
pub struct ComputeModel;

impl ReferenceStateMachine for ComputeModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let name = 0..NAMES;
        let off: Vec<usize> = state
            .vms
            .iter()
            .filter(|(_, v)| v.power == PowerState::PoweredOff)
            .map(|(k, _)| *k)
            .collect();
        let resize = if off.is_empty() {
            Just(None).boxed()
        } else {
            proptest::option::of(proptest::sample::select(off)).boxed()
        };
        prop_oneof![
            3 => (name.clone(), 1u32..4, 1u64..8, any::<u8>()).prop_map(|(name, cpus, m, value)| {
                Step::Create { name, cpus, memory_mb: m * 64, value }
            }),
            3 => name.clone().prop_map(Step::PowerOn),
            2 => name.clone().prop_map(Step::PowerOff),
            2 => (name.clone(), resize, 1u32..4, 1u64..8, 0..KEYS, proptest::option::of(any::<u8>()))
                .prop_map(|(name, resize, cpus, m, key, value)| match resize {
                    Some(off_vm) => Step::Reconfigure {
                        name: off_vm, cpus: Some(cpus), memory_mb: Some(m * 64), key, value,
                    },
                    None => Step::Reconfigure { name, cpus: None, memory_mb: None, key, value },
                }),
            2 => name.prop_map(Step::Destroy),
            1 => Just(Step::List),
            1 => Just(Step::Restart),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        // Resource changes are only generated for powered-off VMs (hot-add is a
        // per-VM vSphere setting); keep that true while shrinking.
        match step {
            Step::Reconfigure {
                name,
                cpus: Some(_),
                ..
            } => state
                .vms
                .get(name)
                .is_some_and(|v| v.power == PowerState::PoweredOff),
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        use Expect::*;
        let expect = match step {
            Step::Create {
                name,
                cpus,
                memory_mb,
                value,
            } => {
                if state.vms.contains_key(name) {
                    Conflict
                } else {
                    let extra = BTreeMap::from([(key(0), value.to_string())]);
                    state.vms.insert(
                        *name,
                        ModelVm {
                            power: PowerState::PoweredOff,
                            cpus: *cpus,
                            memory_mb: *memory_mb,
                            extra,
                        },
                    );
                    Ok
                }
            }
            Step::PowerOn(n) => match state.vms.get_mut(n) {
                None => NotFound,
                Some(v) if v.power == PowerState::PoweredOn => InvalidState,
                Some(v) => {
                    v.power = PowerState::PoweredOn;
                    Ok
                }
            },
            Step::PowerOff(n) => match state.vms.get_mut(n) {
                None => NotFound,
                Some(v) if v.power == PowerState::PoweredOff => InvalidState,
                Some(v) => {
                    v.power = PowerState::PoweredOff;
                    Ok
                }
            },
            Step::Reconfigure {
                name,
                cpus,
                memory_mb,
                key: k,
                value,
            } => match state.vms.get_mut(name) {
                None => NotFound,
                Some(v) => {
                    if let Some(c) = cpus {
                        v.cpus = *c;
                    }
                    if let Some(m) = memory_mb {
                        v.memory_mb = *m;
                    }
                    match value {
                        Some(val) => v.extra.insert(key(*k), val.to_string()),
                        None => v.extra.remove(&key(*k)),
                    };
                    Ok
                }
            },
            Step::Destroy(n) => match state.vms.get(n) {
                None => NotFound,
                Some(v) if v.power == PowerState::PoweredOn => InvalidState,
                Some(_) => {
                    state.vms.remove(n);
                    Ok
                }
            },
            Step::List | Step::Restart => Ok,
        };
        state.expect = Some(expect);
        state
    }
}

/// The system under test: a backend through its harness, and what the suite knows of
/// the references it was given.
#[derive(Debug)]
pub struct Sut<H> {
    rt: Runtime,
    harness: H,
    refs: BTreeMap<usize, MoRef>,
}

/// The state machine test, for a backend's [`Harness`].
#[derive(Debug)]
pub struct ComputeConformance<H>(PhantomData<H>);

fn classify(r: &Result<(), Error>) -> Expect {
    match r {
        Ok(()) => Expect::Ok,
        Err(Error::NotFound { .. }) => Expect::NotFound,
        Err(Error::Conflict(_)) => Expect::Conflict,
        Err(Error::InvalidState(_)) => Expect::InvalidState,
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

impl<H: Harness + Debug> Sut<H> {
    /// The reference to use for VM `n`: the one the backend gave, or one that was
    /// never valid.
    fn vm_ref(&self, n: usize) -> MoRef {
        self.refs
            .get(&n)
            .cloned()
            .unwrap_or_else(|| MoRef::new("VirtualMachine", format!("vm-never-{n}")))
    }

    fn spec(&self, n: usize, cpus: u32, memory_mb: u64, value: u8) -> VmSpec {
        let ds = self.harness.datastore();
        let name = vm_name(n);
        let folder = DsPath::new(ds, &name);
        VmSpec {
            name: name.clone(),
            pool: self.harness.pool(),
            files: folder.clone(),
            num_cpus: cpus,
            memory_mb,
            guest_id: "otherGuest64".into(),
            devices: vic_core::containers::ContainerDevices {
                folder,
                disk: format!("{name}.vmdk"),
                parent: None,
                capacity_kb: 1024,
                network: self.harness.network(),
                mac: None,
                iso: None,
            }
            .specs(),
            extra_config: BTreeMap::from([(key(0), value.to_string())]),
            annotation: "vic conformance suite".into(),
        }
    }

    fn run(&mut self, step: Step) -> Result<(), Error> {
        let compute = self.harness.compute();
        match step {
            Step::Create {
                name,
                cpus,
                memory_mb,
                value,
            } => {
                let spec = self.spec(name, cpus, memory_mb, value);
                let vm = self.rt.block_on(compute.create_vm(&spec))?;
                assert_eq!(vm.name, spec.name);
                assert_eq!(vm.power_state, PowerState::PoweredOff);
                self.refs.insert(name, vm.reference);
                Ok(())
            }
            Step::PowerOn(n) => self.rt.block_on(compute.power_on(&self.vm_ref(n))),
            Step::PowerOff(n) => self.rt.block_on(compute.power_off(&self.vm_ref(n))),
            Step::Reconfigure {
                name,
                cpus,
                memory_mb,
                key: k,
                value,
            } => {
                let change = VmChange {
                    num_cpus: cpus,
                    memory_mb,
                    extra_config: BTreeMap::from([(key(k), value.map(|v| v.to_string()))]),
                    ..Default::default()
                };
                self.rt
                    .block_on(compute.reconfigure(&self.vm_ref(name), &change))
            }
            Step::Destroy(n) => self.rt.block_on(compute.destroy(&self.vm_ref(n))),
            Step::List => Ok(()),
            Step::Restart => {
                drop(compute);
                self.harness.restart(&self.rt);
                Ok(())
            }
        }
    }

    /// Lists the pool and compares every VM with the model; references must be the
    /// ones the backend gave at creation, also across restarts.
    fn compare(&self, model: &Model) {
        let vms = self
            .rt
            .block_on(self.harness.compute().list_vms(Some(&self.harness.pool())))
            .expect("list_vms");
        let mut seen = BTreeMap::new();
        for vm in &vms {
            let Some(n) = (0..NAMES).find(|n| vm_name(*n) == vm.name) else {
                continue;
            };
            assert!(seen.insert(n, vm).is_none(), "two VMs named {}", vm.name);
        }
        let names: Vec<_> = seen.keys().copied().collect();
        let want: Vec<_> = model.vms.keys().copied().collect();
        assert_eq!(names, want, "VMs in the pool");
        for (n, m) in &model.vms {
            let vm = seen[n];
            assert_eq!(
                Some(&vm.reference),
                self.refs.get(n),
                "reference of {}",
                vm.name
            );
            assert_eq!(vm.power_state, m.power, "power state of {}", vm.name);
            assert_eq!(vm.num_cpus, m.cpus, "cpus of {}", vm.name);
            assert_eq!(vm.memory_mb, m.memory_mb, "memory of {}", vm.name);
            let extra: BTreeMap<_, _> = vm
                .extra_config
                .iter()
                .filter(|(k, _)| k.starts_with(PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(extra, m.extra, "extraConfig of {}", vm.name);
            let one = self
                .rt
                .block_on(self.harness.compute().vm_info(&vm.reference))
                .expect("vm_info");
            assert_eq!(&one, vm, "vm_info agrees with list_vms");
            let has = |pred: fn(&Device) -> bool| vm.devices.iter().any(pred);
            assert!(
                has(|d| matches!(d, Device::Disk { .. })),
                "disk of {}",
                vm.name
            );
            assert!(
                has(|d| matches!(d, Device::Nic { mac: Some(_), .. })),
                "NIC with a MAC"
            );
            assert!(has(|d| matches!(d, Device::Serial { .. })), "serial port");
        }
    }
}

impl<H: Harness + Debug> StateMachineTest for ComputeConformance<H> {
    type SystemUnderTest = Sut<H>;
    type Reference = ComputeModel;

    fn init_test(_: &Model) -> Sut<H> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let harness = H::create(&rt);
        Sut {
            rt,
            harness,
            refs: BTreeMap::new(),
        }
    }

    fn apply(mut sut: Sut<H>, model: &Model, step: Step) -> Sut<H> {
        let label = format!("{step:?}");
        let got = classify(&sut.run(step));
        assert_eq!(Some(got), model.expect, "outcome of {label}");
        sut
    }

    fn check_invariants(sut: &Sut<H>, model: &Model) {
        sut.compare(model);
    }
}
