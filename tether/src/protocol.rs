//! The guest protocol: what the VCH writes onto a container VM for its tether, and what
//! the tether writes back.
//!
//! Both directions are VM `extraConfig` keys under the `guestinfo.vice.` prefix, as VIC
//! does it, each holding one JSON document:
//!
//! | key                      | written by | value          |
//! | ------------------------ | ---------- | -------------- |
//! | `guestinfo.vice./config` | the VCH    | [`GuestConfig`] |
//! | `guestinfo.vice./status` | the tether | [`GuestStatus`] |
//!
//! How the keys travel is the business of a [`Transport`](crate::transport::Transport).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The prefix of every key of the guest protocol.
pub const KEY_PREFIX: &str = "guestinfo.vice.";
/// The key holding the [`GuestConfig`] (JSON), written by the VCH.
pub const CONFIG_KEY: &str = "guestinfo.vice./config";
/// The key holding the [`GuestStatus`] (JSON), written by the tether.
pub const STATUS_KEY: &str = "guestinfo.vice./status";

/// Errors of the guest protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A key the protocol needs is not there.
    #[error("missing key {0}")]
    MissingKey(&'static str),
    /// A key's value is not the JSON document it should be.
    #[error("malformed value of {key}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The configuration of a container VM's guest: everything the tether needs to prepare
/// the guest and run the container's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestConfig {
    /// The container's ID (64 hex digits).
    pub id: String,
    /// The container's name (without the leading `/`).
    pub name: String,
    /// The guest's host name.
    pub hostname: String,
    /// The guest's NIS domain name; empty for none.
    pub domainname: String,
    /// The container's main process.
    pub session: Session,
    /// Bind mounts (volumes), in order.
    pub mounts: Vec<Mount>,
    /// The content of `/etc/resolv.conf`; `None` leaves the image's file alone.
    pub resolv_conf: Option<String>,
    /// The content of `/etc/hosts`; `None` leaves the image's file alone.
    pub hosts: Option<String>,
}

/// The container's main process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// The command: a path, or a name looked up in the `PATH` of `env`.
    pub path: String,
    /// The arguments after the command (not including `argv[0]`).
    pub args: Vec<String>,
    /// The environment, `NAME=value` strings.
    pub env: Vec<String>,
    /// The working directory; empty for `/`. Created when missing, as Docker does.
    pub dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty for root.
    pub user: String,
    /// Run the process on a pseudo-terminal (stdout and stderr become one stream).
    pub tty: bool,
    /// Keep the process's stdin open for attach clients; otherwise it is `/dev/null`.
    pub open_stdin: bool,
    /// Close the process's stdin when the first attach client that sent stdin leaves.
    pub stdin_once: bool,
    /// The signal `docker stop` sends (a name like `SIGTERM` or a number); informative
    /// for the tether, which forwards whatever it gets.
    pub stop_signal: String,
    /// Do not start the process until the first attach client has connected, so that a
    /// `docker run` without `-d` sees all of the output (VIC's `RunBlock`).
    pub attach_wait: bool,
}

/// A bind mount into the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mount {
    /// Where the data is: a host path in the simulator.
    pub source: String,
    /// The absolute path in the container.
    pub target: String,
    /// Mount read-only.
    pub readonly: bool,
    /// The kind of mount; only `bind` (the default) is supported.
    pub kind: MountKind,
}

/// The kind of a [`Mount`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A bind mount of `source`.
    #[default]
    Bind,
}

/// Where the guest's main process is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestState {
    /// The tether is preparing the guest.
    #[default]
    Starting,
    /// The process runs.
    Running,
    /// The process has ended (or never started: see `error`).
    Exited,
}

/// What the tether reports about the container's main process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestStatus {
    /// Where the process is.
    pub state: GuestState,
    /// The process's PID in the guest (its PID namespace).
    pub pid: Option<i32>,
    /// When the process was started (RFC 3339).
    #[serde(with = "rfc3339")]
    pub started_at: Option<SystemTime>,
    /// When the process ended (RFC 3339).
    #[serde(with = "rfc3339")]
    pub finished_at: Option<SystemTime>,
    /// The exit status: the code, or 128 + the signal that ended it; 126 or 127 when
    /// the command could not be executed or found, 128 when the guest could not be
    /// prepared.
    pub exit_code: Option<i32>,
    /// Why the process could not be started, in Docker's words where it has some.
    pub error: Option<String>,
}

impl GuestConfig {
    /// The extraConfig keys that carry this configuration.
    pub fn to_keys(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_string(self).unwrap_or_default();
        BTreeMap::from([(CONFIG_KEY.to_owned(), json)])
    }

    /// The configuration carried by extraConfig `keys`.
    pub fn from_keys(keys: &BTreeMap<String, String>) -> Result<Self, ProtocolError> {
        let v = keys
            .get(CONFIG_KEY)
            .ok_or(ProtocolError::MissingKey(CONFIG_KEY))?;
        serde_json::from_str(v).map_err(|source| ProtocolError::Malformed {
            key: CONFIG_KEY,
            source,
        })
    }
}

/// What a guest sees of its VM's extraConfig: the `guestinfo.*` keys, without the
/// status it writes itself.
pub fn keys_for_guest(extra_config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    extra_config
        .iter()
        .filter(|(k, _)| k.starts_with("guestinfo.") && k.as_str() != STATUS_KEY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl GuestStatus {
    /// The extraConfig keys that carry this status.
    pub fn to_keys(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_string(self).unwrap_or_default();
        BTreeMap::from([(STATUS_KEY.to_owned(), json)])
    }

    /// The status carried by extraConfig `keys`; `None` when the tether wrote none yet.
    pub fn from_keys(keys: &BTreeMap<String, String>) -> Result<Option<Self>, ProtocolError> {
        let Some(v) = keys.get(STATUS_KEY) else {
            return Ok(None);
        };
        serde_json::from_str(v)
            .map(Some)
            .map_err(|source| ProtocolError::Malformed {
                key: STATUS_KEY,
                source,
            })
    }
}

/// `Option<SystemTime>` as an RFC 3339 string (nanoseconds, UTC) or `null`.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_nanos(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|v| humantime::parse_rfc3339(&v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn config_round_trips_through_keys() {
        let c = GuestConfig {
            id: "a".repeat(64),
            name: "web".into(),
            hostname: "aaaaaaaaaaaa".into(),
            session: Session {
                path: "sh".into(),
                args: vec!["-c".into(), "exit 3".into()],
                env: vec!["PATH=/bin".into()],
                tty: true,
                ..Session::default()
            },
            mounts: vec![Mount {
                source: "/ds/vol".into(),
                target: "/data".into(),
                readonly: true,
                kind: MountKind::Bind,
            }],
            resolv_conf: Some("nameserver 10.0.0.1\n".into()),
            ..GuestConfig::default()
        };
        let keys = c.to_keys();
        assert!(keys.contains_key("guestinfo.vice./config"));
        assert_eq!(GuestConfig::from_keys(&keys).unwrap(), c);
    }

    #[test]
    fn config_fields_have_defaults_and_names() {
        let keys = BTreeMap::from([(
            CONFIG_KEY.to_owned(),
            r#"{"id":"x","session":{"path":"true"},"mounts":[{"source":"/a","target":"/b"}]}"#
                .to_owned(),
        )]);
        let c = GuestConfig::from_keys(&keys).unwrap();
        assert_eq!(c.session.path, "true");
        assert!(!c.session.tty);
        assert_eq!(c.mounts[0].kind, MountKind::Bind);
        assert!(!c.mounts[0].readonly);
    }

    #[test]
    fn missing_and_malformed_config() {
        assert!(matches!(
            GuestConfig::from_keys(&BTreeMap::new()),
            Err(ProtocolError::MissingKey(CONFIG_KEY))
        ));
        let keys = BTreeMap::from([(CONFIG_KEY.to_owned(), "{".to_owned())]);
        assert!(matches!(
            GuestConfig::from_keys(&keys),
            Err(ProtocolError::Malformed { .. })
        ));
    }

    #[test]
    fn status_uses_rfc3339_and_lowercase_states() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let s = GuestStatus {
            state: GuestState::Exited,
            pid: Some(1),
            started_at: Some(t),
            finished_at: None,
            exit_code: Some(143),
            error: None,
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["state"], "exited");
        assert_eq!(json["started_at"], "2023-11-14T22:13:20.123456789Z");
        assert!(json["finished_at"].is_null());
        let back = GuestStatus::from_keys(&s.to_keys()).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(GuestStatus::from_keys(&BTreeMap::new()).unwrap(), None);
    }

    #[test]
    fn the_guest_sees_its_guestinfo_keys_but_not_its_own_status() {
        let ec = BTreeMap::from([
            (CONFIG_KEY.to_owned(), "{}".to_owned()),
            (STATUS_KEY.to_owned(), "{}".to_owned()),
            ("guestinfo.other".to_owned(), "x".to_owned()),
            ("vice./container".to_owned(), "{}".to_owned()),
        ]);
        let seen: Vec<_> = keys_for_guest(&ec).into_keys().collect();
        assert_eq!(seen, ["guestinfo.other", CONFIG_KEY]);
    }
}
