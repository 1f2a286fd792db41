//! VMDK descriptor files: what a disk's `.vmdk` says about its size, content id and
//! parent. vSphere writes them when it creates a disk; vcsim leaves the file empty, so
//! the backend writes the descriptor itself there (see [`crate::storage`]).

use vic_core::{DsPath, Error, Result};

const MAGIC: &str = "# Disk DescriptorFile";
const NO_PARENT: u32 = 0xffff_ffff;
/// Descriptors are small; anything larger is not one.
pub const MAX_DESCRIPTOR: usize = 64 * 1024;

/// What a descriptor says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Content id.
    pub cid: u32,
    /// The parent's content id (`ffffffff` for none).
    pub parent_cid: u32,
    /// The parent disk.
    pub parent: Option<DsPath>,
    /// Size in KiB, from the extents.
    pub capacity_kb: u64,
}

/// A content id from the clock and a counter (not a reserved value).
pub fn new_cid() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    let cid = t
        .wrapping_mul(2_654_435_761)
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed));
    if cid >= 0xffff_fffe { 0x0bad_cafe } else { cid }
}

/// The descriptor of the disk at `path`: a base disk (`vmfs`, a flat extent) or a
/// child of `parent` (`vmfsSparse`, a delta extent) whose content id is `parent_cid`.
/// The parent is named by its datastore path.
pub fn render(path: &DsPath, capacity_kb: u64, cid: u32, parent: Option<(&DsPath, u32)>) -> String {
    let sectors = capacity_kb.saturating_mul(2);
    let name = path.file_name();
    let stem = name.strip_suffix(".vmdk").unwrap_or(name);
    let (create_type, extent) = match parent {
        Some(_) => (
            "vmfsSparse",
            format!("RW {sectors} VMFSSPARSE \"{stem}-delta.vmdk\""),
        ),
        None => ("vmfs", format!("RW {sectors} VMFS \"{stem}-flat.vmdk\"")),
    };
    let parent_cid = parent.map(|(_, c)| c).unwrap_or(NO_PARENT);
    let hint = parent
        .map(|(p, _)| format!("parentFileNameHint=\"{p}\"\n"))
        .unwrap_or_default();
    let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
    format!(
        "{MAGIC}\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID={parent_cid:08x}\n\
         createType=\"{create_type}\"\n\
         {hint}\n\
         # Extent description\n\
         {extent}\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.thinProvisioned = \"1\"\n\
         ddb.virtualHWVersion = \"13\"\n"
    )
}

/// Parses the descriptor of the disk at `path`. A relative parent hint is resolved
/// against the disk's folder, as vSphere does.
pub fn parse(path: &DsPath, text: &str) -> Result<Descriptor> {
    let bad = |why: &str| Error::InvalidArgument(format!("{path} is not a virtual disk: {why}"));
    if !text.starts_with(MAGIC) {
        return Err(bad("no descriptor header"));
    }
    let mut cid = None;
    let mut parent_cid = NO_PARENT;
    let mut parent = None;
    let mut sectors: u64 = 0;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("CID=") {
            cid = u32::from_str_radix(v.trim(), 16).ok();
        } else if let Some(v) = line.strip_prefix("parentCID=") {
            parent_cid = u32::from_str_radix(v.trim(), 16).map_err(|_| bad("bad parentCID"))?;
        } else if let Some(v) = line.strip_prefix("parentFileNameHint=") {
            let v = v.trim().trim_matches('"');
            parent = Some(if v.starts_with('[') {
                v.parse::<DsPath>()?
            } else {
                relative(path, v).ok_or_else(|| bad("the parent hint leaves the datastore"))?
            });
        } else if line.starts_with("RW ") || line.starts_with("RDONLY ") {
            let n = line
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| bad("bad extent line"))?;
            sectors = sectors.saturating_add(n);
        }
    }
    if parent_cid == NO_PARENT {
        parent = None;
    }
    Ok(Descriptor {
        cid: cid.ok_or_else(|| bad("no CID"))?,
        parent_cid,
        parent,
        capacity_kb: sectors / 2,
    })
}

/// `hint` resolved against the folder of `disk` (`..` goes up, never above the
/// datastore's root).
fn relative(disk: &DsPath, hint: &str) -> Option<DsPath> {
    let folder = disk.parent();
    let mut parts: Vec<&str> = folder.path.split('/').filter(|s| !s.is_empty()).collect();
    for c in hint.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(DsPath::new(disk.datastore.clone(), parts.join("/")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base_and_child_descriptors_round_trip() {
        let base = DsPath::new("ds", "VIC/v/images/a/a.vmdk");
        let child = DsPath::new("ds", "c1/c1.vmdk");
        let text = render(&base, 8192, 0x1234, None);
        let d = parse(&base, &text).unwrap();
        assert_eq!(
            (d.cid, d.parent.clone(), d.capacity_kb),
            (0x1234, None, 8192)
        );
        let text = render(&child, 8192, 0x99, Some((&base, 0x1234)));
        let d = parse(&child, &text).unwrap();
        assert_eq!(d.parent, Some(base));
        assert_eq!(d.parent_cid, 0x1234);
        // A relative hint, as ESXi writes for a parent in the same folder.
        let rel = text.replace("[ds] VIC/v/images/a/a.vmdk", "base.vmdk");
        assert_eq!(
            parse(&child, &rel).unwrap().parent,
            Some(DsPath::new("ds", "c1/base.vmdk"))
        );
        assert!(parse(&child, "").is_err());
        let up = text.replace("[ds] VIC/v/images/a/a.vmdk", "../VIC/v/images/a/a.vmdk");
        assert_eq!(
            parse(&child, &up).unwrap().parent,
            Some(DsPath::new("ds", "VIC/v/images/a/a.vmdk"))
        );
        let escape = text.replace("[ds] VIC/v/images/a/a.vmdk", "../../x.vmdk");
        assert!(parse(&child, &escape).is_err());
    }
}
