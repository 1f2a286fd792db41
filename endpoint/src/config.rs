//! Command-line configuration: which backend (`--target`) and where to listen (`-H`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the VCH's backend is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The embedded simulator with its state folder (`sim://STATE_DIR`).
    Simulator(PathBuf),
    /// A vSphere SDK URL (`https://user:pass@host/sdk`).
    VSphere(String),
}

impl Target {
    /// The simulator in the user's data folder: `$XDG_DATA_HOME/vic/sim`, else
    /// `$HOME/.local/share/vic/sim`, else `./vic-sim`.
    pub fn default_simulator() -> Target {
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share"))
            });
        match base {
            Some(b) => Target::Simulator(b.join("vic/sim")),
            None => Target::Simulator(PathBuf::from("vic-sim")),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("sim://") {
            if path.is_empty() {
                return Err("sim:// needs a state folder, e.g. sim:///var/lib/vic".into());
            }
            Ok(Target::Simulator(PathBuf::from(path)))
        } else if s.starts_with("https://") || s.starts_with("http://") {
            Ok(Target::VSphere(s.to_string()))
        } else {
            Err(format!(
                "unknown target {s:?}: use sim://STATE_DIR or https://user:password@host/sdk"
            ))
        }
    }
}

/// One address the endpoint listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `tcp://HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:///path/to/docker.sock`.
    Unix(PathBuf),
}

impl FromStr for Listener {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err("unix:// needs a socket path".into());
            }
            return Ok(Listener::Unix(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        let addr = if addr.starts_with(':') {
            format!("127.0.0.1{addr}")
        } else {
            addr.to_string()
        };
        addr.parse::<SocketAddr>()
            .map(Listener::Tcp)
            .map_err(|_| format!("invalid listen address {s:?}: use tcp://IP:PORT or unix://PATH"))
    }
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listener::Tcp(a) => write!(f, "tcp://{a}"),
            Listener::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "sim:///tmp/x".parse::<Target>().unwrap(),
            Target::Simulator("/tmp/x".into())
        );
        assert_eq!(
            "sim://rel/dir".parse::<Target>().unwrap(),
            Target::Simulator("rel/dir".into())
        );
        assert!("sim://".parse::<Target>().is_err());
        assert!("ftp://x".parse::<Target>().is_err());
        assert!(matches!(
            "https://u:p@127.0.0.1:8989/sdk".parse::<Target>().unwrap(),
            Target::VSphere(_)
        ));
    }

    #[test]
    fn parses_listeners() {
        assert_eq!(
            "tcp://127.0.0.1:2375".parse::<Listener>().unwrap(),
            Listener::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        assert_eq!(
            ":2376".parse::<Listener>().unwrap(),
            Listener::Tcp("127.0.0.1:2376".parse().unwrap())
        );
        assert_eq!(
            "unix:///run/vic.sock".parse::<Listener>().unwrap(),
            Listener::Unix("/run/vic.sock".into())
        );
        assert!("tcp://nonsense".parse::<Listener>().is_err());
    }
}
