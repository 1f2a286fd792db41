//! Image manifests as registries serve them — Docker schema 2 manifests and manifest
//! lists, OCI image manifests and indexes — parsed into serde structs, and the choice of
//! one platform's manifest from a list the way dockerd makes it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use vic_core::{Error, Result};

use crate::digest::Digest;

/// Media types vic knows.
pub mod media_type {
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list (multi-platform).
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index (multi-platform).
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker schema 1 manifest (unsupported).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed Docker schema 1 manifest (unsupported).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker gzip-compressed layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker foreign (non-distributable) gzip-compressed layer.
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker uncompressed layer (rare, but some tools write it).
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// OCI uncompressed layer.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip-compressed layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd-compressed layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable uncompressed layer (deprecated).
    pub const OCI_NONDIST_LAYER_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable gzip layer (deprecated).
    pub const OCI_NONDIST_LAYER_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable zstd layer (deprecated).
    pub const OCI_NONDIST_LAYER_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

    /// The `Accept` header of a manifest request: the four kinds vic parses.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json";
}

/// A content descriptor: what a manifest says about a blob or another manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The media type of the content.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The digest of the content.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Other places to fetch it from (foreign layers); vic fetches from the registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// OCI annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// In manifest lists and indexes: the platform of the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An image manifest (Docker schema 2 or OCI): one config and the layers, bottom first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's media type, when it says (OCI makes it optional).
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base layer first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// OCI annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A multi-platform list (Docker manifest list or OCI index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    /// Always 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The list's media type, when it says.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// One descriptor per platform's manifest.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// OCI annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The four kinds of manifest vic reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// `application/vnd.docker.distribution.manifest.v2+json`
    DockerV2,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`
    DockerList,
    /// `application/vnd.oci.image.manifest.v1+json`
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`
    OciIndex,
}

impl ManifestKind {
    /// The kind for a media type, if vic reads it.
    pub fn from_media_type(mt: &str) -> Option<ManifestKind> {
        match base_type(mt) {
            media_type::DOCKER_MANIFEST => Some(ManifestKind::DockerV2),
            media_type::DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerList),
            media_type::OCI_MANIFEST => Some(ManifestKind::OciManifest),
            media_type::OCI_INDEX => Some(ManifestKind::OciIndex),
            _ => None,
        }
    }

    /// The media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::DockerV2 => media_type::DOCKER_MANIFEST,
            ManifestKind::DockerList => media_type::DOCKER_MANIFEST_LIST,
            ManifestKind::OciManifest => media_type::OCI_MANIFEST,
            ManifestKind::OciIndex => media_type::OCI_INDEX,
        }
    }

    /// True for lists and indexes.
    pub fn is_index(self) -> bool {
        matches!(self, ManifestKind::DockerList | ManifestKind::OciIndex)
    }
}

/// A parsed manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // short-lived: matched on and taken apart at once
pub enum Manifest {
    /// A single image.
    Image(ImageManifest),
    /// A multi-platform list.
    Index(ImageIndex),
}

/// `type/subtype` without parameters (`; charset=utf-8`), trimmed.
fn base_type(mt: &str) -> &str {
    mt.split(';').next().unwrap_or("").trim()
}

/// Only the fields that say what a manifest is.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
    #[serde(rename = "fsLayers", default)]
    fs_layers: Option<serde_json::Value>,
}

fn schema1_error() -> Error {
    Error::NotSupported(
        "Docker image manifest schema 1 is not supported; push the image again with a \
         current Docker (schema 2) or an OCI tool"
            .to_string(),
    )
}

/// Parses a manifest body. Its kind comes from the body's `mediaType`, else from the
/// response's `Content-Type`, else from its shape (`manifests` → index, `config` and
/// `layers` → image), as OCI allows `mediaType` to be left out. Schema 1 is refused
/// with [`Error::NotSupported`].
pub fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<(ManifestKind, Manifest)> {
    let malformed = |e: serde_json::Error| Error::Internal(format!("malformed manifest: {e}"));
    let probe: Probe = serde_json::from_slice(body).map_err(malformed)?;
    let content_type = content_type.map(base_type).unwrap_or("");
    if probe.schema_version == Some(1)
        || probe.fs_layers.is_some()
        || matches!(
            probe.media_type.as_deref().map(base_type),
            Some(media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED)
        )
        || (probe.media_type.is_none()
            && matches!(
                content_type,
                media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED
            ))
    {
        return Err(schema1_error());
    }
    if let Some(v) = probe.schema_version
        && v != 2
    {
        return Err(Error::NotSupported(format!(
            "manifest schemaVersion {v} is not supported"
        )));
    }
    let kind = match probe.media_type.as_deref() {
        Some(mt) => ManifestKind::from_media_type(mt).ok_or_else(|| {
            Error::NotSupported(format!("manifest media type {mt:?} is not supported"))
        })?,
        None => match ManifestKind::from_media_type(content_type) {
            Some(k) => k,
            None if probe.manifests.is_some() => ManifestKind::OciIndex,
            None if probe.config.is_some() && probe.layers.is_some() => ManifestKind::OciManifest,
            None => {
                return Err(Error::NotSupported(format!(
                    "unknown manifest format (Content-Type {content_type:?})"
                )));
            }
        },
    };
    let manifest = if kind.is_index() {
        Manifest::Index(serde_json::from_slice(body).map_err(malformed)?)
    } else {
        Manifest::Image(serde_json::from_slice(body).map_err(malformed)?)
    };
    Ok((kind, manifest))
}

/// An image platform: `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system: `linux`.
    pub os: String,
    /// CPU architecture in Go's names: `amd64`, `arm64`, `arm`, `386`…
    pub architecture: String,
    /// CPU variant: `v7`, `v8`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows images).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows images).
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl Default for Platform {
    /// `linux/amd64`, the platform of vic's container VMs.
    fn default() -> Self {
        Platform::new("linux", "amd64", None)
    }
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
            os_features: Vec::new(),
        }
    }

    /// Parses `os[/arch[/variant]]` as `docker pull --platform` takes it; an OS alone
    /// means its amd64.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::InvalidArgument(format!(
                "invalid platform {s:?}: expected os[/arch[/variant]]"
            ))
        };
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(bad());
        }
        let ok = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        let os = parts[0].to_ascii_lowercase();
        let arch = parts
            .get(1)
            .map_or("amd64".to_string(), |a| a.to_ascii_lowercase());
        let variant = parts.get(2).map(|v| v.to_ascii_lowercase());
        Ok(Platform::new(&os, &arch, variant.as_deref()))
    }

    /// The normalized (os, architecture, variant) as containerd's platform matcher sees
    /// them: `x86_64` is `amd64`, `aarch64` is `arm64` whose variant defaults to `v8`,
    /// `arm` defaults to `v7`, `amd64/v1` is plain `amd64`.
    fn normalized(&self) -> (String, String, String) {
        let os = self.os.to_ascii_lowercase();
        let os = if os == "macos" {
            "darwin".to_string()
        } else {
            os
        };
        let mut variant = self.variant.as_deref().unwrap_or("").to_ascii_lowercase();
        let arch = match self.architecture.to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" | "amd64" => {
                if variant == "v1" {
                    variant.clear();
                }
                "amd64".to_string()
            }
            "aarch64" | "arm64" => {
                if variant.is_empty() || variant == "8" {
                    variant = "v8".to_string();
                }
                "arm64".to_string()
            }
            "armhf" => {
                variant = "v7".to_string();
                "arm".to_string()
            }
            "armel" => {
                variant = "v6".to_string();
                "arm".to_string()
            }
            "arm" => {
                variant = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                "arm".to_string()
            }
            "i386" | "386" => "386".to_string(),
            other => other.to_string(),
        };
        (os, arch, variant)
    }

    /// True when an image built for `have` runs on this platform: same OS and
    /// architecture, the same or an older variant.
    pub fn accepts(&self, have: &Platform) -> bool {
        self.rank(have).is_some()
    }

    /// How well an available platform `have` serves this wanted one: `Some(0)` is an
    /// exact match, higher is an older compatible variant (arm/v6 for arm/v7, amd64 for
    /// amd64/v3), `None` cannot run here.
    fn rank(&self, have: &Platform) -> Option<usize> {
        let (wos, warch, wvar) = self.normalized();
        let (hos, harch, hvar) = have.normalized();
        if wos != hos || warch != harch {
            return None;
        }
        if wvar == hvar {
            return Some(0);
        }
        // Older variants of the same architecture run on newer CPUs.
        let level = |v: &str| v.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        match warch.as_str() {
            "arm" | "amd64" => {
                let w = level(&wvar).unwrap_or(1);
                let h = if hvar.is_empty() {
                    Some(1)
                } else {
                    level(&hvar)
                };
                match h {
                    Some(h) if h < w => Some((w - h) as usize),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Platform> {
        Platform::parse(s)
    }
}

/// Picks the manifest for `want` from a list's entries, as dockerd does: same OS and
/// architecture, the exact variant preferred over older compatible ones, the first such
/// entry in list order. Entries without a platform and attestation entries
/// (`unknown/unknown`) never match. Returns `None` when nothing fits.
pub fn select_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    manifests
        .iter()
        .filter(|d| ManifestKind::from_media_type(&d.media_type).is_none_or(|k| !k.is_index()))
        .filter_map(|d| {
            let p = d.platform.as_ref().filter(|p| p.os != "unknown")?;
            want.rank(p).map(|r| (r, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

/// The platforms a list offers, for error messages: `linux/amd64, linux/arm/v7`.
pub fn available_platforms(manifests: &[Descriptor]) -> String {
    let list: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::to_string)
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn docker_v2() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"{}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2479,"digest":"{}"}}]}}"#,
            d('a'),
            d('b')
        )
    }

    fn list(mt: &str, entry_mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[
            {{"mediaType":"{entry_mt}","size":528,"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{entry_mt}","size":528,"digest":"{}","platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
            {{"mediaType":"{entry_mt}","size":528,"digest":"{}","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{entry_mt}","size":528,"digest":"{}","platform":{{"architecture":"unknown","os":"unknown"}},
              "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            d('1'),
            d('2'),
            d('3'),
            d('4')
        )
    }

    #[test]
    fn parses_docker_v2() {
        let (kind, m) = parse_manifest(docker_v2().as_bytes(), None).unwrap();
        assert_eq!(kind, ManifestKind::DockerV2);
        let Manifest::Image(m) = m else {
            panic!("not an image")
        };
        assert_eq!(m.config.digest.as_str(), d('a'));
        assert_eq!(m.config.media_type, media_type::DOCKER_CONFIG);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 2479);
        assert_eq!(m.layers[0].media_type, media_type::DOCKER_LAYER_GZIP);
    }

    #[test]
    fn parses_oci_manifest_with_and_without_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":10,"digest":"{}"}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","size":20,"digest":"{}",
                        "annotations":{{"org.opencontainers.image.title":"l"}}}}],
            "annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}}}"#,
            d('c'),
            d('e')
        );
        let (kind, Manifest::Image(m)) = parse_manifest(body.as_bytes(), None).unwrap() else {
            panic!("not an image")
        };
        assert_eq!(kind, ManifestKind::OciManifest);
        assert_eq!(m.layers[0].media_type, media_type::OCI_LAYER_ZSTD);
        assert_eq!(
            m.layers[0].annotations["org.opencontainers.image.title"],
            "l"
        );
        assert_eq!(m.annotations.len(), 1);
        // No mediaType: from Content-Type, else from the shape.
        let bare = body.replace(
            r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            "",
        );
        assert!(!bare.contains("manifest.v1"));
        let (kind, _) = parse_manifest(bare.as_bytes(), None).unwrap();
        assert_eq!(kind, ManifestKind::OciManifest);
        let (kind, _) = parse_manifest(
            bare.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(kind, ManifestKind::DockerV2);
    }

    #[test]
    fn parses_lists_and_indexes() {
        for (mt, entry, kind) in [
            (
                media_type::DOCKER_MANIFEST_LIST,
                media_type::DOCKER_MANIFEST,
                ManifestKind::DockerList,
            ),
            (
                media_type::OCI_INDEX,
                media_type::OCI_MANIFEST,
                ManifestKind::OciIndex,
            ),
        ] {
            let (k, m) = parse_manifest(list(mt, entry).as_bytes(), Some("text/plain")).unwrap();
            assert_eq!(k, kind);
            let Manifest::Index(i) = m else {
                panic!("not an index")
            };
            assert_eq!(i.manifests.len(), 4);
            assert_eq!(
                i.manifests[1].platform.as_ref().unwrap().to_string(),
                "linux/arm/v6"
            );
        }
        // An index without mediaType is recognized by its shape.
        let bare = list(media_type::OCI_INDEX, media_type::OCI_MANIFEST).replacen(
            r#""mediaType":"application/vnd.oci.image.index.v1+json","#,
            "",
            1,
        );
        assert_eq!(
            parse_manifest(bare.as_bytes(), None).unwrap().0,
            ManifestKind::OciIndex
        );
    }

    #[test]
    fn refuses_schema1_and_junk() {
        let s1 = r#"{"schemaVersion":1,"name":"library/busybox","tag":"latest","architecture":"amd64",
            "fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],
            "history":[{"v1Compatibility":"{}"}],"signatures":[]}"#;
        let e = parse_manifest(s1.as_bytes(), Some(media_type::DOCKER_SCHEMA1_SIGNED)).unwrap_err();
        assert!(
            matches!(e, Error::NotSupported(ref m) if m.contains("schema 1")),
            "{e}"
        );
        let e = parse_manifest(b"{}", Some(media_type::DOCKER_SCHEMA1)).unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        assert!(matches!(
            parse_manifest(b"not json", None),
            Err(Error::Internal(_))
        ));
        assert!(matches!(
            parse_manifest(b"{}", Some("text/html")),
            Err(Error::NotSupported(_))
        ));
        let helm = r#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart"}"#;
        assert!(matches!(
            parse_manifest(helm.as_bytes(), None),
            Err(Error::NotSupported(_))
        ));
        // A bad digest in a descriptor is a malformed manifest.
        let bad = docker_v2().replace(&d('b'), "sha256:123");
        assert!(parse_manifest(bad.as_bytes(), None).is_err());
    }

    #[test]
    fn parses_platforms() {
        assert_eq!(
            Platform::parse("linux/arm64").unwrap(),
            Platform::new("linux", "arm64", None)
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::parse("Linux").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::default().to_string(), "linux/amd64");
        for bad in ["", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chooses_platforms_like_dockerd() {
        let Manifest::Index(i) = parse_manifest(
            list(
                media_type::DOCKER_MANIFEST_LIST,
                media_type::DOCKER_MANIFEST,
            )
            .as_bytes(),
            None,
        )
        .unwrap()
        .1
        else {
            panic!("not an index")
        };
        let pick = |p: &str| {
            select_platform(&i.manifests, &Platform::parse(p).unwrap())
                .map(|d| d.digest.to_string())
        };
        assert_eq!(pick("linux/amd64"), Some(d('1')));
        assert_eq!(pick("linux/x86_64"), Some(d('1')));
        assert_eq!(pick("linux/amd64/v3"), Some(d('1')), "v1 runs on v3");
        // arm64 with and without its default variant.
        assert_eq!(pick("linux/arm64"), Some(d('3')));
        assert_eq!(pick("linux/arm64/v8"), Some(d('3')));
        assert_eq!(pick("linux/aarch64"), Some(d('3')));
        // arm/v7 falls back to v6; arm/v5 cannot run v6.
        assert_eq!(pick("linux/arm/v7"), Some(d('2')));
        assert_eq!(pick("linux/arm"), Some(d('2')));
        assert_eq!(pick("linux/arm/v5"), None);
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("windows/amd64"), None);
        // The attestation entry is neither picked nor listed.
        assert_eq!(pick("unknown/unknown"), None);
        assert_eq!(
            available_platforms(&i.manifests),
            "linux/amd64, linux/arm/v6, linux/arm64/v8"
        );

        // The exact variant beats an older one, whatever the order; the first of equals wins.
        let entries: Vec<Descriptor> = [("v6", '5'), ("v7", '6'), ("v7", '7')]
            .iter()
            .map(|(v, c)| Descriptor {
                media_type: media_type::OCI_MANIFEST.into(),
                digest: Digest::parse(&d(*c)).unwrap(),
                size: 1,
                urls: vec![],
                annotations: BTreeMap::new(),
                platform: Some(Platform::new("linux", "arm", Some(v))),
            })
            .collect();
        let got = select_platform(&entries, &Platform::parse("linux/arm/v7").unwrap()).unwrap();
        assert_eq!(got.digest.as_str(), d('6'));
        assert_eq!(
            select_platform(&entries, &Platform::parse("linux/arm/v6").unwrap())
                .unwrap()
                .digest
                .as_str(),
            d('5')
        );
    }
}
