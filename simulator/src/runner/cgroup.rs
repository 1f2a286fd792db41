//! CPU and memory limits of a guest through cgroups.
//!
//! The limits of a container VM are its `num_cpus` (a CFS quota of that many CPUs)
//! and `memory_mb`, or, when its extraConfig has [`LIMITS_KEY`] (Docker's `--cpus` and
//! `--memory`, as `{"nano_cpus": N, "memory_bytes": N}`), those, field by field.
//!
//! Where the groups go (as Docker's `cgroupfs` driver puts `/docker/<id>`): guests
//! outlive the endpoint, so they are not put under the endpoint's own cgroup, which
//! may be gone before them.
//! - **cgroup v2**, when the host's unified hierarchy has the `memory` and `cpu`
//!   controllers: `vic/<group>` at the root of the hierarchy (for a non-root caller:
//!   beside its own cgroup, in the subtree delegated to it; not in its own cgroup, as a
//!   cgroup with processes cannot give controllers to children), with `memory.max`
//!   and `cpu.max`; `vic` gets `+memory +cpu (+pids)` in its `cgroup.subtree_control`.
//! - else **cgroup v1**: in each of the `memory`, `cpu`, `pids` and `freezer`
//!   hierarchies that is mounted, `vic/<group>` at its root, with
//!   `memory.limit_in_bytes` and `cpu.cfs_quota_us` (= CPUs × `cpu.cfs_period_us`).
//!
//! The tether is put into the groups (its PID written to each `cgroup.procs`) before it
//! execs, so every process of the guest runs in them. The groups are recorded in the
//! VM folder ([`CGROUPS_FILE`]) and removed when the guest has ended.
//!
//! Where the groups cannot be made for want of permission (a non-root endpoint without
//! a delegated cgroup, as rootless Docker on cgroup v1) the guest runs without limits
//! and a warning says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, warn};
use vic_core::provider::VmInfo;

/// The extraConfig key of finer limits: `{"nano_cpus": N, "memory_bytes": N}`.
pub const LIMITS_KEY: &str = "guestinfo.vice./limits";
/// The file in the VM folder listing the guest's cgroups, one folder a line.
pub const CGROUPS_FILE: &str = "guest.cgroups";
/// The folder of vic's groups in each hierarchy.
pub const VIC_GROUP: &str = "vic";

/// The v1 controllers a guest is put in (the first two carry its limits).
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "freezer"];
/// The CFS period vic uses on cgroup v2 (µs), the kernel's default.
const V2_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel takes (µs).
const MIN_QUOTA_US: u64 = 1_000;

/// The limits of a guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Limits {
    /// CPUs in billionths (Docker's `NanoCpus`); none or 0: unlimited.
    #[serde(default)]
    pub nano_cpus: Option<u64>,
    /// Memory in bytes; none or 0: unlimited.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// The limits of `vm`: [`LIMITS_KEY`] where it has them, else its `num_cpus` and
    /// `memory_mb`.
    pub fn of(vm: &VmInfo) -> Self {
        let mut l = Self {
            nano_cpus: (vm.num_cpus > 0).then(|| u64::from(vm.num_cpus) * 1_000_000_000),
            memory_bytes: (vm.memory_mb > 0).then(|| vm.memory_mb.saturating_mul(1 << 20)),
        };
        if let Some(raw) = vm.extra_config.get(LIMITS_KEY) {
            match serde_json::from_str::<Self>(raw) {
                Ok(finer) => {
                    if let Some(n) = finer.nano_cpus.filter(|n| *n > 0) {
                        l.nano_cpus = Some(n);
                    }
                    if let Some(m) = finer.memory_bytes.filter(|m| *m > 0) {
                        l.memory_bytes = Some(m);
                    }
                }
                Err(e) => {
                    warn!(vm = %vm.name, error = %e, "malformed {LIMITS_KEY}; using the VM's CPUs and memory")
                }
            }
        }
        l
    }

    /// The CFS quota (µs) for `period` µs.
    fn quota_us(&self, period: u64) -> Option<u64> {
        self.nano_cpus.map(|n| {
            let q = u128::from(n) * u128::from(period) / 1_000_000_000;
            u64::try_from(q).unwrap_or(u64::MAX).max(MIN_QUOTA_US)
        })
    }
}

/// The cgroup layout of the host, as seen by this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2: the folder that holds `vic/`.
    V2(PathBuf),
    /// cgroup v1: per controller, the folder that holds `vic/`.
    V1(Vec<(&'static str, PathBuf)>),
    /// No usable hierarchy.
    None,
}

/// One line of mountinfo: mount root, mount point, file system type, super options.
struct MountLine {
    root: String,
    point: PathBuf,
    fstype: String,
    opts: Vec<String>,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountLine {
                root: unescape(pre.get(3)?),
                point: PathBuf::from(unescape(pre.get(4)?)),
                fstype: post.first()?.to_string(),
                opts: post.get(2)?.split(',').map(String::from).collect(),
            })
        })
        .collect()
}

/// `(controllers, path)` of each line of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            Some((ctrls, path.to_string()))
        })
        .collect()
}

/// The folder of cgroup `path` in the hierarchy mounted as `m`.
fn group_dir(m: &MountLine, path: &str) -> PathBuf {
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str()).unwrap_or("/")
    };
    m.point.join(rel.trim_start_matches('/'))
}

/// The layout from the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`, for
/// a caller that is root or not.
fn layout_of(mountinfo: &str, own: &str, root: bool) -> Layout {
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(own);
    if let Some(m) = mounts.iter().find(|m| m.fstype == "cgroup2")
        && let Some((_, path)) = own.iter().find(|(c, _)| c.is_empty())
    {
        let base = if root || path == "/" {
            m.point.clone()
        } else {
            let own_dir = group_dir(m, path);
            own_dir.parent().map(Path::to_path_buf).unwrap_or(own_dir)
        };
        let ctrls = fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        let have: Vec<&str> = ctrls.split_whitespace().collect();
        if have.contains(&"memory") && have.contains(&"cpu") {
            return Layout::V2(base);
        }
    }
    let mut v1 = Vec::new();
    for ctrl in V1_CONTROLLERS {
        if let Some(m) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.opts.iter().any(|o| o == ctrl))
        {
            v1.push((ctrl, m.point.clone()));
        }
    }
    if v1.is_empty() {
        Layout::None
    } else {
        Layout::V1(v1)
    }
}

impl Layout {
    /// The layout of this host for this process.
    pub fn detect() -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        // SAFETY: geteuid has no preconditions.
        layout_of(&mountinfo, &own, unsafe { libc::geteuid() } == 0)
    }
}

/// The cgroups of one guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// The group folders, one per hierarchy.
    pub dirs: Vec<PathBuf>,
}

fn is_permission(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

fn mkdir(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn write(p: &Path, data: &str) -> io::Result<()> {
    fs::write(p, data).map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", p.display())))
}

impl Groups {
    /// Makes the groups `vic/<name>` in `layout` with `limits`. `Ok(None)`: no groups
    /// (no hierarchy, or no permission: warned); an error otherwise (nothing left).
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> io::Result<Option<Self>> {
        let mut g = Self::default();
        let made = match layout {
            Layout::None => {
                warn!(
                    group = name,
                    "no usable cgroup hierarchy: the guest runs without CPU and memory limits"
                );
                return Ok(None);
            }
            Layout::V2(base) => g.create_v2(base, name, limits),
            Layout::V1(ctrls) => g.create_v1(ctrls, name, limits),
        };
        match made {
            Ok(()) => {
                debug!(group = name, dirs = ?g.dirs, ?limits, "guest cgroups made");
                Ok(Some(g))
            }
            Err(e) => {
                g.remove(Duration::ZERO);
                if is_permission(&e) {
                    warn!(group = name, error = %e, "no permission to make cgroups (not delegated to this user): the guest runs without CPU and memory limits");
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn create_v2(&mut self, base: &Path, name: &str, limits: &Limits) -> io::Result<()> {
        let vic = base.join(VIC_GROUP);
        let subtree = |dir: &Path| -> io::Result<()> {
            let have = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let on = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let want: Vec<String> = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| have.split_whitespace().any(|h| h == *c))
                .filter(|c| !on.split_whitespace().any(|h| h == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if want.is_empty() {
                return Ok(());
            }
            write(&dir.join("cgroup.subtree_control"), &want.join(" "))
        };
        subtree(base)?;
        mkdir(&vic)?;
        subtree(&vic)?;
        let dir = vic.join(name);
        mkdir(&dir)?;
        self.dirs.push(dir.clone());
        if let Some(m) = limits.memory_bytes {
            write(&dir.join("memory.max"), &m.to_string())?;
        }
        let cpu = match limits.quota_us(V2_PERIOD_US) {
            Some(q) => format!("{q} {V2_PERIOD_US}"),
            None => format!("max {V2_PERIOD_US}"),
        };
        write(&dir.join("cpu.max"), &cpu)
    }

    fn create_v1(
        &mut self,
        ctrls: &[(&'static str, PathBuf)],
        name: &str,
        limits: &Limits,
    ) -> io::Result<()> {
        for (ctrl, base) in ctrls {
            let vic = base.join(VIC_GROUP);
            mkdir(&vic)?;
            let dir = vic.join(name);
            mkdir(&dir)?;
            self.dirs.push(dir.clone());
            match *ctrl {
                "memory" => {
                    let m = limits.memory_bytes.map_or("-1".into(), |m| m.to_string());
                    write(&dir.join("memory.limit_in_bytes"), &m)?;
                }
                "cpu" => {
                    let period = fs::read_to_string(dir.join("cpu.cfs_period_us"))
                        .ok()
                        .and_then(|p| p.trim().parse().ok())
                        .unwrap_or(V2_PERIOD_US);
                    let q = limits
                        .quota_us(period)
                        .map_or("-1".into(), |q| q.to_string());
                    write(&dir.join("cpu.cfs_quota_us"), &q)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Puts the process `pid` into every group.
    pub fn add(&self, pid: libc::pid_t) -> io::Result<()> {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the groups (each once it has no process), trying for up to `wait`;
    /// true when all are gone.
    pub fn remove(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let mut left = false;
            for d in self.dirs.iter().rev() {
                match fs::remove_dir(d) {
                    Ok(()) => debug!(dir = %d.display(), "guest cgroup removed"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => left = true,
                }
            }
            if !left {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Records the groups in `folder` ([`CGROUPS_FILE`]).
    pub fn record(&self, folder: &Path) -> io::Result<()> {
        let mut text = String::new();
        for d in &self.dirs {
            text.push_str(&d.to_string_lossy());
            text.push('\n');
        }
        fs::write(folder.join(CGROUPS_FILE), text)
    }

    /// The groups recorded in `folder`, if any.
    pub fn recorded(folder: &Path) -> Option<Self> {
        let text = fs::read_to_string(folder.join(CGROUPS_FILE)).ok()?;
        Some(Self {
            dirs: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }
}

/// Removes the groups recorded in `folder` once the guest has gone: at once when they
/// are empty, else from a thread that tries for up to `later` (the last processes of
/// a killed guest may take a moment to leave). The record goes with them.
pub fn release(folder: &Path, later: Duration) {
    let Some(g) = Groups::recorded(folder) else {
        return;
    };
    let record = folder.join(CGROUPS_FILE);
    if g.remove(Duration::from_millis(100)) {
        let _ = fs::remove_file(&record);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("vic-cgroup-release".into())
        .spawn(move || {
            if g.remove(later) {
                let _ = fs::remove_file(&record);
            } else {
                warn!(dirs = ?g.dirs, "guest cgroups still busy; left in place");
            }
        });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the cgroup release thread");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use vic_core::DsPath;
    use vic_core::provider::MoRef;
    use vic_core::provider::PowerState;

    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu\\054cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 /inner /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const OWN: &str = "\
9:name=systemd:/
6:freezer:/inner/f
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn v1_layout_is_at_the_hierarchy_roots() {
        // The v2 mount of this text is not a cgroup2 file system here (no controllers).
        let mountinfo = MOUNTINFO.replace("/sys/fs/cgroup/unified", "/nonexistent/unified");
        let Layout::V1(ctrls) = layout_of(&mountinfo, OWN, true) else {
            panic!("not v1")
        };
        assert_eq!(
            ctrls,
            vec![
                ("memory", PathBuf::from("/sys/fs/cgroup/memory")),
                ("cpu", PathBuf::from("/sys/fs/cgroup/cpu")),
                ("freezer", PathBuf::from("/sys/fs/cgroup/freezer")),
            ],
            "cpu,cpuacct is not cpu; no pids hierarchy"
        );
        assert_eq!(layout_of("", "", true), Layout::None);
        assert_eq!(unescape("/a\\040b\\054c"), "/a b,c");
    }

    #[test]
    fn v2_layout_needs_memory_and_cpu_controllers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cg2");
        fs::create_dir_all(root.join("user/session")).unwrap();
        let mountinfo = format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        fs::write(root.join("user/cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert_eq!(
            layout_of(&mountinfo, "0::/user/session\n", false),
            Layout::V2(root.join("user")),
            "non-root: beside the own cgroup"
        );
        fs::write(root.join("cgroup.controllers"), "cpu io pids\n").unwrap();
        assert_eq!(
            layout_of(&mountinfo, "0::/user/session\n", true),
            Layout::None,
            "root: at the root, which has no memory controller"
        );
        fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert_eq!(
            layout_of(&mountinfo, "0::/user/session\n", true),
            Layout::V2(root.clone())
        );
    }

    fn vm(cpus: u32, mb: u64, limits: Option<&str>) -> VmInfo {
        let mut extra_config = BTreeMap::new();
        if let Some(l) = limits {
            extra_config.insert(LIMITS_KEY.to_string(), l.to_string());
        }
        VmInfo {
            reference: MoRef::new("VirtualMachine", "vm-1"),
            name: "vm".into(),
            pool: MoRef::new("ResourcePool", "pool-1"),
            files: DsPath::new("ds", "vm"),
            power_state: PowerState::PoweredOff,
            num_cpus: cpus,
            memory_mb: mb,
            guest_id: String::new(),
            devices: Vec::new(),
            extra_config,
            annotation: String::new(),
            boot_time: None,
        }
    }

    #[test]
    fn limits_prefer_the_finer_keys() {
        let l = Limits::of(&vm(2, 512, None));
        assert_eq!(l.nano_cpus, Some(2_000_000_000));
        assert_eq!(l.memory_bytes, Some(512 << 20));
        assert_eq!(l.quota_us(100_000), Some(200_000));
        let l = Limits::of(&vm(2, 512, Some(r#"{"nano_cpus": 500000000}"#)));
        assert_eq!(l.quota_us(100_000), Some(50_000));
        assert_eq!(l.memory_bytes, Some(512 << 20), "memory from the VM");
        let l = Limits::of(&vm(
            1,
            0,
            Some(r#"{"memory_bytes": 4194304, "nano_cpus": 0}"#),
        ));
        assert_eq!(l.memory_bytes, Some(4 << 20));
        assert_eq!(l.nano_cpus, Some(1_000_000_000), "0 is unset");
        let l = Limits::of(&vm(0, 0, Some("not json")));
        assert_eq!(l, Limits::default());
        assert_eq!(l.quota_us(100_000), None);
        let tiny = Limits {
            nano_cpus: Some(1),
            memory_bytes: None,
        };
        assert_eq!(tiny.quota_us(100_000), Some(MIN_QUOTA_US));
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn v2_groups_get_controllers_and_limits() {
        // A stand-in hierarchy: plain files where cgroupfs has its control files.
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::write(
            base.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(base.join("cgroup.subtree_control"), "cpu\n").unwrap();
        let limits = Limits {
            nano_cpus: Some(1_500_000_000),
            memory_bytes: Some(64 << 20),
        };
        let g = Groups::create(&Layout::V2(base.to_path_buf()), "vm-1-x", &limits)
            .unwrap()
            .unwrap();
        let group = base.join("vic/vm-1-x");
        assert_eq!(g.dirs, std::slice::from_ref(&group));
        assert_eq!(read(&base.join("cgroup.subtree_control")), "+memory +pids");
        assert_eq!(read(&group.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&group.join("cpu.max")), "150000 100000");
        g.add(42).unwrap();
        assert_eq!(read(&group.join("cgroup.procs")), "42");
        // Unlimited: "max".
        let g = Groups::create(
            &Layout::V2(base.to_path_buf()),
            "vm-2-x",
            &Limits::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(read(&g.dirs[0].join("cpu.max")), "max 100000");
        assert!(!g.dirs[0].join("memory.max").exists());
    }

    #[test]
    fn v1_groups_get_limits_per_controller() {
        let dir = tempfile::tempdir().unwrap();
        let (mem, cpu, pids) = (
            dir.path().join("memory"),
            dir.path().join("cpu"),
            dir.path().join("pids"),
        );
        for d in [&mem, &cpu, &pids] {
            fs::create_dir(d).unwrap();
        }
        // The kernel makes cpu.cfs_period_us in a new group; a period of 50 ms here.
        fs::create_dir_all(cpu.join("vic/vm-1-x")).unwrap();
        fs::write(cpu.join("vic/vm-1-x/cpu.cfs_period_us"), "50000\n").unwrap();
        let layout = Layout::V1(vec![
            ("memory", mem.clone()),
            ("cpu", cpu.clone()),
            ("pids", pids.clone()),
        ]);
        let limits = Limits {
            nano_cpus: Some(500_000_000),
            memory_bytes: Some(32 << 20),
        };
        let g = Groups::create(&layout, "vm-1-x", &limits).unwrap().unwrap();
        assert_eq!(g.dirs.len(), 3);
        assert_eq!(
            read(&mem.join("vic/vm-1-x/memory.limit_in_bytes")),
            (32u64 << 20).to_string()
        );
        assert_eq!(read(&cpu.join("vic/vm-1-x/cpu.cfs_quota_us")), "25000");
        g.add(7).unwrap();
        for d in &g.dirs {
            assert_eq!(read(&d.join("cgroup.procs")), "7");
        }
        // Unlimited: -1.
        let g = Groups::create(&layout, "vm-2-x", &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(read(&g.dirs[0].join("memory.limit_in_bytes")), "-1");
        assert_eq!(read(&g.dirs[1].join("cpu.cfs_quota_us")), "-1");
    }

    #[test]
    fn no_permission_means_no_groups_and_other_errors_fail() {
        // Nobody, not even root, may make folders in sysfs: EPERM.
        let g = Groups::create(
            &Layout::V1(vec![("memory", PathBuf::from("/sys"))]),
            "vm-1-x",
            &Limits::default(),
        )
        .unwrap();
        assert!(g.is_none());
        assert_eq!(
            Groups::create(&Layout::None, "x", &Limits::default()).unwrap(),
            None
        );
        // A hierarchy that is a file: ENOTDIR is an error.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let e = Groups::create(
            &Layout::V1(vec![("memory", file)]),
            "vm-1-x",
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn groups_are_recorded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::create_dir(&a).unwrap();
        let g = Groups {
            dirs: vec![a.clone()],
        };
        g.record(dir.path()).unwrap();
        assert_eq!(Groups::recorded(dir.path()).unwrap(), g);
        release(dir.path(), Duration::ZERO);
        assert!(!a.exists());
        assert!(Groups::recorded(dir.path()).is_none());
    }
}
