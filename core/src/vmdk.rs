//! VMDK descriptor files: the text that names a virtual disk's extent, its content id
//! and, for a child (delta) disk, its parent. Written as ESXi does for `vmfs` and
//! `vmfsSparse` disks and read back for the size and the parent: by the simulator (its
//! disks are descriptors beside a folder), and by the vSphere backend where a server
//! (vcsim) leaves a new disk's descriptor empty.

use crate::{DsPath, Error, Result};

/// The first line of every descriptor.
pub const MAGIC: &str = "# Disk DescriptorFile";
/// Content id meaning "no parent".
const NO_PARENT: u32 = 0xffff_ffff;
/// Descriptors larger than this are not descriptors.
pub const MAX_DESCRIPTOR: u64 = 64 * 1024;

/// What a descriptor says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Content id.
    pub cid: u32,
    /// The parent's content id (`ffffffff` for none).
    pub parent_cid: u32,
    /// `vmfs` or `vmfsSparse`.
    pub create_type: String,
    /// The parent disk.
    pub parent: Option<DsPath>,
    /// Size in KiB, from the extents.
    pub capacity_kb: u64,
}

/// A random content id that is not one of the reserved values.
pub fn new_cid() -> u32 {
    let id = crate::ids::new_id();
    let cid = u32::from_str_radix(&id[..8], 16).unwrap_or(0x1234_5678);
    if cid >= 0xffff_fffe { 0x0bad_cafe } else { cid }
}

/// The descriptor text of the disk at `path`: a base disk, or a child of `parent`
/// (whose content id is `parent_cid`).
pub fn render(path: &DsPath, capacity_kb: u64, cid: u32, parent: Option<(&DsPath, u32)>) -> String {
    let sectors = capacity_kb.saturating_mul(2);
    let stem = path
        .file_name()
        .strip_suffix(".vmdk")
        .unwrap_or(path.file_name())
        .to_string();
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
    let long_id = &crate::ids::new_id()[..32];
    let uuid_hex = &crate::ids::new_id()[..32];
    let uuid = uuid_hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap_or("00"))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{MAGIC}\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID={parent_cid:08x}\n\
         isNativeSnapshot=\"no\"\n\
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
         ddb.longContentID = \"{long_id}\"\n\
         ddb.thinProvisioned = \"1\"\n\
         ddb.uuid = \"{uuid}\"\n\
         ddb.virtualHWVersion = \"14\"\n"
    )
}

/// Reads the descriptor of the disk at `path`. A relative `parentFileNameHint` is taken
/// relative to the disk's folder.
pub fn parse(path: &DsPath, text: &str) -> Result<Descriptor> {
    let bad = |why: &str| Error::Internal(format!("malformed disk descriptor {path}: {why}"));
    if !text.starts_with(MAGIC) {
        return Err(Error::InvalidArgument(format!(
            "{path} is not a virtual disk"
        )));
    }
    let mut cid = None;
    let mut parent_cid = NO_PARENT;
    let mut create_type = String::new();
    let mut parent = None;
    let mut sectors: u64 = 0;
    let mut extents = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = ["RW ", "RDONLY ", "NOACCESS "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        {
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad("extent without a size"))?;
            sectors = sectors.saturating_add(n);
            extents += 1;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "CID" => cid = u32::from_str_radix(value, 16).ok(),
            "parentCID" => {
                parent_cid = u32::from_str_radix(value, 16).map_err(|_| bad("parentCID"))?
            }
            "createType" => create_type = value.to_string(),
            "parentFileNameHint" => {
                parent = Some(if value.starts_with('[') {
                    value.parse::<DsPath>()?
                } else {
                    relative(path, value)
                        .ok_or_else(|| bad("the parent hint leaves the datastore"))?
                })
            }
            _ => {}
        }
    }
    if extents == 0 {
        return Err(bad("no extent"));
    }
    Ok(Descriptor {
        cid: cid.ok_or_else(|| bad("no CID"))?,
        parent_cid,
        create_type,
        parent,
        capacity_kb: sectors / 2,
    })
}

/// `hint` resolved against the folder of `disk`, as vSphere resolves a relative parent
/// hint (`..` goes up, never above the datastore's root).
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
    let p = DsPath::new(disk.datastore.clone(), parts.join("/"));
    p.validate().ok()?;
    Some(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base_and_child_round_trip() {
        let base = DsPath::new("ds", "images/a/a.vmdk");
        let text = render(&base, 1024, 0x1234, None);
        assert!(text.starts_with(MAGIC));
        assert!(text.contains("RW 2048 VMFS \"a-flat.vmdk\""));
        let d = parse(&base, &text).unwrap();
        assert_eq!(d.capacity_kb, 1024);
        assert_eq!(d.parent, None);
        assert_eq!(d.cid, 0x1234);
        assert_eq!(d.create_type, "vmfs");

        let child = DsPath::new("ds", "c/c.vmdk");
        let text = render(&child, 1024, new_cid(), Some((&base, 0x1234)));
        assert!(text.contains("parentFileNameHint=\"[ds] images/a/a.vmdk\""));
        let d = parse(&child, &text).unwrap();
        assert_eq!(d.parent, Some(base));
        assert_eq!(d.parent_cid, 0x1234);
        assert_eq!(d.create_type, "vmfsSparse");
    }

    #[test]
    fn relative_hint_and_garbage() {
        let p = DsPath::new("ds", "x/child.vmdk");
        let text =
            format!("{MAGIC}\nCID=1\nparentFileNameHint=\"base.vmdk\"\nRW 8 VMFSSPARSE \"c\"\n");
        assert_eq!(
            parse(&p, &text).unwrap().parent,
            Some(DsPath::new("ds", "x/base.vmdk"))
        );
        assert!(parse(&p, "hello").is_err());
        assert!(parse(&p, &format!("{MAGIC}\nCID=1\n")).is_err());
        let escape = format!("{MAGIC}\nCID=1\nparentFileNameHint=\"../../etc\"\nRW 8 X \"c\"\n");
        assert!(parse(&p, &escape).is_err());
        let up = format!("{MAGIC}\nCID=1\nparentFileNameHint=\"../y/base.vmdk\"\nRW 8 X \"c\"\n");
        assert_eq!(
            parse(&p, &up).unwrap().parent,
            Some(DsPath::new("ds", "y/base.vmdk"))
        );
    }
}
