//! vic's client of Docker registries (the distribution API v2, as Docker Hub and
//! Debian's `docker-registry` speak it): what `docker pull` and `docker login` need.
//!
//! - [`RegistryClient`] reaches registries over HTTPS (plain HTTP only for registries
//!   the caller lists as insecure), authenticates anonymously, with Basic auth or with
//!   Bearer tokens from the registry's token server (cached per registry, scope and
//!   user), fetches manifests (Docker schema 2, manifest lists, OCI manifests and
//!   indexes) and picks a platform from lists as dockerd does;
//! - everything fetched is checked against its digest: manifests and configs whole,
//!   blobs as they stream ([`BlobStream`] async, [`BlobReader`] as a blocking
//!   [`std::io::Read`]);
//! - [`LayerReader`] turns a layer blob into its uncompressed tar stream (gzip, zstd or
//!   plain) and computes the diff ID on the way.
//!
//! Image references are [`vic_core::reference::Reference`]s; errors are
//! [`vic_core::Error`]s: 404s are `NotFound` (`manifest`, `blob`, `repository`),
//! refused credentials `Unauthorized`, unreachable or failing registries `Unavailable`.
//!
//! ```no_run
//! # async fn pull() -> vic_core::Result<()> {
//! use vic_core::reference::Reference;
//! use vic_registry::{RegistryClient, RegistryConfig};
//!
//! let client = RegistryClient::new(RegistryConfig {
//!     insecure_registries: vec!["127.0.0.1:5000".into()],
//!     ..Default::default()
//! })?;
//! let reference = Reference::parse("127.0.0.1:5000/busybox:latest")?;
//! let image = client.pull_manifest(&reference, None, None).await?;
//! for (layer, diff_id) in image.manifest.layers.iter().zip(&image.config.rootfs.diff_ids) {
//!     let tar = client.layer_reader(&reference, layer, Some(diff_id), None).await?;
//!     let digests = tokio::task::spawn_blocking(move || {
//!         // Extract `tar` here (e.g. with the tar crate), then:
//!         tar.finish()
//!     })
//!     .await
//!     .map_err(|e| vic_core::Error::Internal(e.to_string()))?
//!     .map_err(|e| vic_core::Error::io("reading a layer", e))?;
//!     assert_eq!(&digests.diff_id, diff_id);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod blob;
pub mod client;
pub mod digest;
pub mod engine;
pub mod image;
pub mod manifest;

pub use auth::{Challenge, Credentials};
pub use blob::{BlobReader, BlobStream, Compression, LayerDigest, LayerReader, VerifyingReader};
pub use client::{FetchedManifest, PulledImage, RegistryClient, RegistryConfig};
pub use digest::{Digest, Verifier};
pub use image::{ContainerConfig, History, ImageConfig, RootFs};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, Manifest, ManifestKind, Platform};
