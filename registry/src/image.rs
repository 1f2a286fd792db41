//! The image config blob (Docker's `application/vnd.docker.container.image.v1+json`,
//! OCI's `application/vnd.oci.image.config.v1+json`): platform, the container defaults
//! (`Env`, `Cmd`, `Entrypoint`…), the layers' uncompressed digests and the history.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vic_core::images::nullable;
use vic_core::{Error, Result};

use crate::digest::Digest;
use crate::manifest::Platform;

/// An image config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture: `amd64`.
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    /// Operating system: `linux`.
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    /// CPU variant: `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// When the image was built (RFC 3339), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The defaults of containers made from the image.
    #[serde(default, deserialize_with = "nullable")]
    pub config: ContainerConfig,
    /// The layers' uncompressed digests.
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
    /// How the image was built, one entry per step (`empty_layer` ones made no layer).
    #[serde(default, deserialize_with = "nullable")]
    pub history: Vec<History>,
}

/// The container defaults of an image config (Docker's field names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// User (and group) to run as.
    #[serde(rename = "User", default, deserialize_with = "nullable")]
    pub user: String,
    /// `port/proto` keys (`80/tcp`); Docker's values are empty objects.
    #[serde(rename = "ExposedPorts", default, deserialize_with = "nullable")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// `KEY=value` entries.
    #[serde(rename = "Env", default, deserialize_with = "nullable")]
    pub env: Vec<String>,
    /// Entrypoint; `None` (null) and `Some([])` differ for Docker.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// Default command.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes (paths as keys).
    #[serde(rename = "Volumes", default, deserialize_with = "nullable")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// Working directory.
    #[serde(rename = "WorkingDir", default, deserialize_with = "nullable")]
    pub working_dir: String,
    /// Labels.
    #[serde(rename = "Labels", default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the container.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

/// `rootfs`: the layers' diff IDs (sha256 of each uncompressed layer tar), base first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    /// One per layer.
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<Digest>,
}

/// One build step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(body: &[u8]) -> Result<ImageConfig> {
        serde_json::from_slice(body)
            .map_err(|e| Error::Internal(format!("malformed image config: {e}")))
    }

    /// The platform the image was built for.
    pub fn platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_docker_config() {
        let diff = format!("sha256:{}", "d".repeat(64));
        let body = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{{"User":"1000:1000","ExposedPorts":{{"80/tcp":{{}}}},"Env":["PATH=/bin"],
              "Entrypoint":null,"Cmd":["sh"],"WorkingDir":"/srv","Labels":{{"a":"b"}},
              "StopSignal":"SIGQUIT","Volumes":null,"OnBuild":null}},
            "rootfs":{{"type":"layers","diff_ids":["{diff}"]}},
            "history":[{{"created":"2024-01-01T00:00:00Z","created_by":"ADD x /"}},
                       {{"created_by":"CMD [\"sh\"]","empty_layer":true}}]}}"#
        );
        let c = ImageConfig::parse(body.as_bytes()).unwrap();
        assert_eq!(c.platform().to_string(), "linux/amd64");
        assert_eq!(c.config.user, "1000:1000");
        assert!(c.config.exposed_ports.contains_key("80/tcp"));
        assert_eq!(c.config.env, ["PATH=/bin"]);
        assert_eq!(c.config.entrypoint, None);
        assert_eq!(c.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.config.working_dir, "/srv");
        assert_eq!(c.config.labels["a"], "b");
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.rootfs.diff_ids[0].as_str(), diff);
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
        // Round trip keeps what was read.
        let again = ImageConfig::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn tolerates_nulls_and_missing_fields() {
        let c = ImageConfig::parse(br#"{"architecture":"arm64","variant":"v8","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":null},"history":null}"#).unwrap();
        assert_eq!(c.platform().to_string(), "linux/arm64/v8");
        assert!(c.config.env.is_empty() && c.rootfs.diff_ids.is_empty());
        let c = ImageConfig::parse(br#"{"config":{"Env":null,"Labels":null,"Entrypoint":[]}}"#)
            .unwrap();
        assert_eq!(c.config.entrypoint, Some(vec![]));
        assert!(ImageConfig::parse(b"42").is_err());
        assert!(ImageConfig::parse(br#"{"rootfs":{"diff_ids":["md5:1"]}}"#).is_err());
    }
}
