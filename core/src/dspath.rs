//! Datastore paths in vSphere's notation: `[datastore1] folder/file.vmdk`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A path on a named datastore, written `[name] relative/path` as vSphere writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DsPath {
    /// The datastore's name.
    pub datastore: String,
    /// The path inside the datastore, `/`-separated, without a leading slash.
    pub path: String,
}

impl DsPath {
    /// A path on `datastore`; leading and doubled slashes are dropped.
    pub fn new(datastore: impl Into<String>, path: impl AsRef<str>) -> Self {
        let path = path
            .as_ref()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        DsPath {
            datastore: datastore.into(),
            path,
        }
    }

    /// This path with `child` appended.
    pub fn join(&self, child: impl AsRef<str>) -> Self {
        DsPath::new(
            self.datastore.clone(),
            format!("{}/{}", self.path, child.as_ref()),
        )
    }

    /// The folder that holds this path (the datastore root for a top-level entry).
    pub fn parent(&self) -> Self {
        match self.path.rsplit_once('/') {
            Some((dir, _)) => DsPath::new(self.datastore.clone(), dir),
            None => DsPath::new(self.datastore.clone(), ""),
        }
    }

    /// The last component of the path.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// As [`DsPath::validate`], and not a datastore's root folder (which cannot be
    /// written, moved or deleted); `what` names the operation in the error.
    pub fn check_not_root(&self, what: &str) -> Result<(), Error> {
        self.validate()?;
        if self.path.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "cannot {what} the root folder of datastore {}",
                self.datastore
            )));
        }
        Ok(())
    }

    /// Checks that no component is `..` or `.` so the path stays inside its datastore.
    pub fn validate(&self) -> Result<(), Error> {
        if self.datastore.is_empty() || self.datastore.contains(['[', ']', '/']) {
            return Err(Error::InvalidArgument(format!(
                "invalid datastore name {:?}",
                self.datastore
            )));
        }
        if self.path.split('/').any(|c| c == ".." || c == ".") || self.path.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "datastore path {self} leaves its datastore"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for DsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "[{}]", self.datastore)
        } else {
            write!(f, "[{}] {}", self.datastore, self.path)
        }
    }
}

impl FromStr for DsPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidArgument(format!("not a datastore path: {s:?}"));
        let rest = s.trim().strip_prefix('[').ok_or_else(bad)?;
        let (ds, path) = rest.split_once(']').ok_or_else(bad)?;
        let p = DsPath::new(ds, path.trim());
        p.validate()?;
        Ok(p)
    }
}

impl TryFrom<String> for DsPath {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<DsPath> for String {
    fn from(p: DsPath) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        let p: DsPath = "[datastore1] VIC/abc/images/x.vmdk".parse().unwrap();
        assert_eq!(p.datastore, "datastore1");
        assert_eq!(p.path, "VIC/abc/images/x.vmdk");
        assert_eq!(p.file_name(), "x.vmdk");
        assert_eq!(p.parent().to_string(), "[datastore1] VIC/abc/images");
        assert_eq!(DsPath::new("ds", "").to_string(), "[ds]");
        assert!("[ds] a/../../etc".parse::<DsPath>().is_err());
        assert!("ds a".parse::<DsPath>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips(ds in "[a-zA-Z0-9_ -]{1,12}", parts in proptest::collection::vec("[a-z0-9_.-]{1,8}", 0..5)) {
            prop_assume!(parts.iter().all(|p| p != "." && p != ".."));
            let p = DsPath::new(ds.clone(), parts.join("/"));
            let back: DsPath = p.to_string().parse().unwrap();
            prop_assert_eq!(back, p);
        }
    }
}
