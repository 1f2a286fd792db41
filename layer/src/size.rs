//! The disk size of an extracted layer tree, as Docker reports a layer's size.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The sum of the sizes of everything below `path` that is not a directory: regular
/// files by their length, symlinks by the length of their target, each inode counted
/// once however many hardlinks name it. Symlinks are not followed. A `path` that is not
/// a directory counts alone.
pub fn directory_size(path: impl AsRef<Path>) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut pending = vec![path.as_ref().to_path_buf()];
    while let Some(next) = pending.pop() {
        let meta = std::fs::symlink_metadata(&next)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&next)? {
                pending.push(entry?.path());
            }
            continue;
        }
        if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.len());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_files_and_symlinks_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("a"), b"12345").expect("write");
        std::fs::write(root.join("sub/b"), b"123").expect("write");
        std::fs::hard_link(root.join("a"), root.join("sub/a2")).expect("link");
        // Points at a big file outside: counts as its own 4-byte target, not followed.
        std::os::unix::fs::symlink("/usr", root.join("sub/l")).expect("symlink");
        assert_eq!(directory_size(root).expect("size"), 5 + 3 + 4);
        assert_eq!(directory_size(root.join("a")).expect("size"), 5);
        assert!(directory_size(root.join("missing")).is_err());
    }
}
