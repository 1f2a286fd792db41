//! Fault injection: make the next calls of a named vSphere operation fail or stall.
//!
//! Operation names are vSphere's method names (`CreateVM_Task`, `PowerOnVM_Task`,
//! `ReconfigVM_Task`, `Destroy_Task`, `CreateVirtualDisk_Task`, `DeleteVirtualDisk_Task`,
//! `MakeDirectory`, `DeleteDatastoreFile_Task`, `MoveDatastoreFile_Task`, `AddPortGroup`,
//! `RemovePortGroup`, `CreateVApp`, `CreateResourcePool`, `UpdateConfig`; the simulator
//! calls a datastore file upload `PutDatastoreFile`, and the writing and reading back of
//! a layer's content `ImportLayer` and `ExportLayer`). Faults for one operation are used
//! in the order they were injected.
//!
//! A separate process (an endpoint under an end-to-end test) takes its faults from the
//! environment variable [`ENV_VAR`] when the simulator opens:
//! `CreateVM_Task=fail:1,PowerOnVM_Task=stall:500:2` (`Op=fail:N` or
//! `Op=stall:MILLIS:N`, comma-separated).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use vic_core::{Error, Result};

/// The environment variable read by [`crate::Simulator::open`].
pub const ENV_VAR: &str = "VIC_SIM_FAULTS";

/// What happens to a call that meets a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with `Error::Internal("injected fault: <message>")` and changes
    /// nothing.
    Fail(String),
    /// The call sleeps this long before it runs.
    Stall(Duration),
}

/// The pending faults of one simulator.
#[derive(Debug, Default)]
pub struct Faults {
    pending: Mutex<BTreeMap<String, VecDeque<(Fault, u32)>>>,
}

impl Faults {
    /// Makes the next `times` calls of `op` meet `fault`.
    pub fn inject(&self, op: &str, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        self.lock()
            .entry(op.to_string())
            .or_default()
            .push_back((fault, times));
    }

    /// Drops every pending fault.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many calls of `op` will still meet a fault.
    pub fn pending(&self, op: &str) -> u32 {
        self.lock()
            .get(op)
            .map(|q| q.iter().map(|(_, n)| *n).fold(0, u32::saturating_add))
            .unwrap_or(0)
    }

    /// Takes the fault the next call of `op` meets, if any.
    pub(crate) fn take(&self, op: &str) -> Option<Fault> {
        let mut pending = self.lock();
        let queue = pending.get_mut(op)?;
        let (fault, left) = queue.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        if queue.is_empty() {
            pending.remove(op);
        }
        Some(fault)
    }

    /// Injects every fault of a [`ENV_VAR`]-style spec.
    pub fn load_spec(&self, spec: &str) -> Result<()> {
        for (op, fault, times) in parse_spec(spec)? {
            self.inject(&op, fault, times);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, VecDeque<(Fault, u32)>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Parses `Op=fail:N` / `Op=stall:MILLIS:N` entries, comma-separated; blanks are skipped.
pub fn parse_spec(spec: &str) -> Result<Vec<(String, Fault, u32)>> {
    let mut out = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| Error::InvalidArgument(format!("{ENV_VAR}: {entry:?}: {why}"));
        let (op, what) = entry
            .split_once('=')
            .ok_or_else(|| bad("expected Op=..."))?;
        let op = op.trim();
        if op.is_empty() {
            return Err(bad("empty operation name"));
        }
        let parts: Vec<&str> = what.split(':').map(str::trim).collect();
        let number = |s: &str, what: &str| -> Result<u64> {
            s.parse::<u64>()
                .map_err(|_| bad(&format!("{what} {s:?} is not a number")))
        };
        let (fault, times) = match parts.as_slice() {
            ["fail", n] => (
                Fault::Fail(format!("{op} (from {ENV_VAR})")),
                number(n, "count")?,
            ),
            ["stall", ms, n] => (
                Fault::Stall(Duration::from_millis(number(ms, "millis")?)),
                number(n, "count")?,
            ),
            _ => return Err(bad("expected fail:N or stall:MILLIS:N")),
        };
        let times = u32::try_from(times).map_err(|_| bad("count too large"))?;
        out.push((op.to_string(), fault, times));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_run_down_in_order() {
        let f = Faults::default();
        f.inject("PowerOnVM_Task", Fault::Fail("a".into()), 2);
        f.inject("PowerOnVM_Task", Fault::Stall(Duration::from_millis(1)), 1);
        f.inject("Other", Fault::Fail("x".into()), 0);
        assert_eq!(f.pending("PowerOnVM_Task"), 3);
        assert_eq!(f.pending("Other"), 0);
        assert_eq!(f.take("PowerOnVM_Task"), Some(Fault::Fail("a".into())));
        assert_eq!(f.take("PowerOnVM_Task"), Some(Fault::Fail("a".into())));
        assert_eq!(
            f.take("PowerOnVM_Task"),
            Some(Fault::Stall(Duration::from_millis(1)))
        );
        assert_eq!(f.take("PowerOnVM_Task"), None);
        assert_eq!(f.pending("PowerOnVM_Task"), 0);
        f.inject("X", Fault::Fail("x".into()), 5);
        f.clear();
        assert_eq!(f.take("X"), None);
    }

    #[test]
    fn env_spec() {
        let v = parse_spec(" CreateVM_Task=fail:2 , PowerOnVM_Task=stall:250:1,").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "CreateVM_Task");
        assert!(matches!(&v[0].1, Fault::Fail(m) if m.contains("CreateVM_Task")));
        assert_eq!(v[0].2, 2);
        assert_eq!(
            v[1],
            (
                "PowerOnVM_Task".to_string(),
                Fault::Stall(Duration::from_millis(250)),
                1
            )
        );
        assert!(parse_spec("").unwrap().is_empty());
        for bad in [
            "X",
            "X=boom:1",
            "X=fail",
            "X=fail:x",
            "=fail:1",
            "X=stall:1",
            "X=stall:a:1",
        ] {
            assert!(
                matches!(parse_spec(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        let f = Faults::default();
        f.load_spec("A=fail:1,A=stall:5:2").unwrap();
        assert_eq!(f.pending("A"), 3);
    }
}
