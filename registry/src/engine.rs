//! The client as the engine's [`vic_core::pull::Registry`]: resolves references for a
//! platform and opens layers as verified, decompressed tar streams.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use vic_core::pull::{Registry, RegistryAuth, RemoteImage, RemoteLayer};
use vic_core::reference::Reference;
use vic_core::{Error, Result};

use crate::{Compression, Credentials, Digest, LayerReader, Platform, RegistryClient};

fn creds(auth: Option<&RegistryAuth>) -> Option<Credentials> {
    auth.map(|a| Credentials::new(a.username.clone(), a.password.clone()))
}

/// Adds the bytes that pass through to a shared counter (download progress).
struct Counting<R> {
    inner: R,
    received: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[async_trait]
impl Registry for RegistryClient {
    async fn resolve(
        &self,
        reference: &Reference,
        platform: Option<&str>,
        auth: Option<&RegistryAuth>,
    ) -> Result<RemoteImage> {
        let platform = platform.map(Platform::parse).transpose()?;
        let image = self
            .pull_manifest(reference, platform.as_ref(), creds(auth).as_ref())
            .await?;
        // `pull_manifest` has checked that the config has one diff id per layer.
        let diff_ids = &image.config.rootfs.diff_ids;
        let layers = image
            .manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(d, diff_id)| RemoteLayer {
                digest: d.digest.to_string(),
                size: d.size,
                media_type: d.media_type.clone(),
                diff_id: diff_id.to_string(),
            })
            .collect();
        Ok(RemoteImage {
            digest: image.digest.to_string(),
            config_digest: image.config_digest.to_string(),
            config_raw: image.config_raw,
            layers,
        })
    }

    async fn open_layer(
        &self,
        reference: &Reference,
        layer: &RemoteLayer,
        auth: Option<&RegistryAuth>,
        received: Arc<AtomicU64>,
    ) -> Result<Box<dyn Read + Send>> {
        let digest = Digest::parse(&layer.digest)?;
        let diff_id = Digest::parse(&layer.diff_id)?;
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = self
            .blob(reference, &digest, Some(layer.size), creds(auth).as_ref())
            .await?
            .into_reader()?;
        Ok(Box::new(LayerReader::new(
            Counting {
                inner: blob,
                received,
            },
            compression,
            Some(diff_id),
        )))
    }

    async fn download_layer(
        &self,
        reference: &Reference,
        layer: &RemoteLayer,
        auth: Option<&RegistryAuth>,
        received: Arc<AtomicU64>,
        to: &std::path::Path,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let digest = Digest::parse(&layer.digest)?;
        let mut blob = self
            .blob(reference, &digest, Some(layer.size), creds(auth).as_ref())
            .await?;
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(to)
            .await
            .map_err(|e| Error::io("open a layer spool file", e))?;
        // Each chunk is checked as it comes; the last call fails on a digest mismatch.
        // A chunk counts as received once it is in the file, for readers of the file.
        while let Some(chunk) = blob.next_chunk().await? {
            f.write_all(&chunk)
                .await
                .map_err(|e| Error::io("write a layer spool file", e))?;
            f.flush()
                .await
                .map_err(|e| Error::io("write a layer spool file", e))?;
            received.fetch_add(chunk.len() as u64, Ordering::Release);
        }
        Ok(())
    }

    fn open_downloaded(
        &self,
        layer: &RemoteLayer,
        blob: Box<dyn Read + Send>,
    ) -> Result<Box<dyn Read + Send>> {
        let diff_id = Digest::parse(&layer.diff_id)?;
        let compression = Compression::from_media_type(&layer.media_type)?;
        Ok(Box::new(LayerReader::new(
            io::BufReader::with_capacity(256 * 1024, blob),
            compression,
            Some(diff_id),
        )))
    }

    async fn login(&self, registry: &str, auth: &RegistryAuth) -> Result<()> {
        RegistryClient::login(
            self,
            registry,
            &Credentials::new(auth.username.clone(), auth.password.clone()),
        )
        .await
    }
}
