//! Safe extraction of image layer tars into per-layer trees.
//!
//! An image layer arrives as a tar stream. [`extract_layer`] unpacks one layer into a
//! directory of its own, which later serves as one lower directory of an overlayfs
//! mount that assembles a container's root filesystem. The rules are those of
//! dockerd's layer application, made safe for a tree that nothing else writes to:
//!
//! - Entry names are made relative to the layer: a leading `/` or `./` is dropped, so
//!   an absolute name such as `/etc/passwd` lands at `etc/passwd` inside the layer, as
//!   dockerd does. A name with a `..` component, an empty name or one with a NUL byte
//!   rejects the whole layer with [`vic_core::Error::InvalidArgument`].
//! - Nothing is written through a symlink: every directory above an entry is opened
//!   component by component with `O_NOFOLLOW`, and a component that is a symlink (or
//!   not a directory) rejects the layer. An existing final component is replaced
//!   (unlinked, or removed whole if it is a directory and the entry is not), never
//!   followed; a directory entry over an existing directory only updates its metadata.
//! - A hardlink must name a non-directory that this layer already holds; its target is
//!   checked the same way. A hardlink to a symlink links the symlink itself.
//! - Whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) are kept as empty
//!   regular files, in the AUFS format of the layer tar; the assembler turns them into
//!   overlayfs whiteouts. Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) is
//!   skipped.
//! - Permission bits (setuid, setgid and sticky included), owners (when
//!   [`ExtractOptions::preserve_owner`]), modification times and `SCHILY.xattr.*`
//!   extended attributes are applied; directories get theirs after the last entry, so
//!   that later entries neither change a directory's time nor meet a read-only one.
//! - File content is streamed to disk; runs of zeros, and the holes of GNU and PAX
//!   sparse files, become holes.
//!
//! [`extract_layer_split`] also records the skeleton of the tar stream (its bytes
//! without the content of regular files, which it refers to in the tree), so that
//! [`reassemble`] gives the layer tar back byte for byte for `docker save`: see
//! [`split`].
//!
//! The functions block: async callers run them on a blocking thread. Linux only.
#![warn(missing_docs)]

mod extract;
mod path;
mod size;
mod sparse;
pub mod split;
mod sys;
#[cfg(test)]
mod testutil;

pub use extract::{ExtractOptions, ExtractStats, extract_layer, extract_layer_split};
pub use size::directory_size;
pub use split::{Reassembler, TarSplit, reassemble};
