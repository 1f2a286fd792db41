//! vSphere faults decoded into a typed error, and how each maps onto the engine's
//! [`vic_core::Error`].
//!
//! A fault arrives in three places: a SOAP `Fault` (its `detail` holds the typed fault),
//! a task's `info.error` (a `LocalizedMethodFault`), and a property collector's
//! `missingSet` (a fault per property that could not be read).

use vic_core::MoRef;

use crate::xml::{Element, XmlError};

/// A vSphere fault: its type (`InvalidLogin`, `DuplicateName`, …), the server's message,
/// and the typed fault element for its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The fault type, e.g. `FileNotFound`.
    pub kind: String,
    /// What the server said (`faultstring` or `localizedMessage`).
    pub message: String,
    /// The fault's own element (its fields: `name`, `file`, `obj`, …).
    pub detail: Element,
}

impl Fault {
    /// Decodes a SOAP `Fault` element.
    pub fn from_soap(fault: &Element) -> Fault {
        let message = fault.text_of("faultstring").unwrap_or_default().to_string();
        let detail = fault
            .child("detail")
            .and_then(|d| d.children.first())
            .cloned()
            .unwrap_or_default();
        let kind = typed_kind(&detail)
            .or_else(|| fault.text_of("faultcode").map(str::to_string))
            .unwrap_or_else(|| "SystemError".into());
        Fault {
            kind,
            message,
            detail,
        }
    }

    /// Decodes a `LocalizedMethodFault` (a task's `info.error`, a `missingSet` fault).
    pub fn from_localized(e: &Element) -> Fault {
        let detail = e.child("fault").cloned().unwrap_or_default();
        let kind = typed_kind(&detail).unwrap_or_else(|| "SystemError".into());
        Fault {
            kind,
            message: e
                .text_of("localizedMessage")
                .unwrap_or_default()
                .to_string(),
            detail,
        }
    }

    /// Whether the session is gone (`NotAuthenticated`): log in again and retry.
    pub fn is_not_authenticated(&self) -> bool {
        self.kind == "NotAuthenticated"
    }

    /// A field of the typed fault.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.detail.text_of(name)
    }

    /// The managed object the fault is about, when it names one (`obj`, `object`).
    pub fn object(&self) -> Option<MoRef> {
        self.detail
            .moref_of("obj")
            .or_else(|| self.detail.moref_of("object"))
    }

    /// A message for people: the server's, unless it is empty or just the fault type
    /// (vcsim's task faults say `*types.DuplicateName`), else one built from the fields.
    pub fn describe(&self) -> String {
        let m = self.message.trim();
        if !m.is_empty() && !m.contains(&self.kind) {
            return m.to_string();
        }
        let fields: Vec<String> = self
            .detail
            .children
            .iter()
            .filter(|c| !c.text.trim().is_empty())
            .map(|c| format!("{} {}", c.name, c.text.trim()))
            .collect();
        if fields.is_empty() {
            self.kind.clone()
        } else {
            format!("{} ({})", self.kind, fields.join(", "))
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.describe())
    }
}

/// The fault type of a typed fault element: its `xsi:type`, else its element name
/// without the `Fault` suffix (`InvalidLoginFault` → `InvalidLogin`).
fn typed_kind(detail: &Element) -> Option<String> {
    if let Some(t) = &detail.xsi_type {
        return Some(t.clone());
    }
    if detail.name.is_empty() {
        return None;
    }
    Some(
        detail
            .name
            .strip_suffix("Fault")
            .filter(|s| !s.is_empty())
            .unwrap_or(&detail.name)
            .to_string(),
    )
}

/// An error of the vSphere client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered a call with a fault.
    #[error("{method}: {fault}")]
    Fault {
        /// The method or task that failed.
        method: String,
        /// The fault.
        fault: Box<Fault>,
    },
    /// The credentials were refused.
    #[error("login to {url} as {user:?} refused: {message}")]
    Login {
        /// The SDK URL.
        url: String,
        /// The user name.
        user: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or the transfer failed.
    #[error("{url}: {source}")]
    Http {
        /// What was asked for.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server's certificate does not match the pinned thumbprint, or the TLS
    /// settings are unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered with something that is not the expected message.
    #[error("{0}")]
    Protocol(String),
    /// A datastore file transfer was answered with an HTTP error status.
    #[error("{what}: HTTP {status}")]
    Status {
        /// The request.
        what: String,
        /// The status code.
        status: u16,
    },
}

impl From<XmlError> for Error {
    fn from(e: XmlError) -> Self {
        Error::Protocol(e.to_string())
    }
}

impl Error {
    /// The fault, if the error is one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            Error::Fault { fault, .. } => Some(fault.as_ref()),
            _ => None,
        }
    }

    /// Whether the error is the fault `kind`.
    pub fn is_fault(&self, kind: &str) -> bool {
        self.fault().is_some_and(|f| f.kind == kind)
    }
}

/// The engine's noun for a managed object type, for `NotFound` errors.
fn noun(kind: &str) -> &'static str {
    match kind {
        "VirtualMachine" => "vm",
        "ResourcePool" | "VirtualApp" => "pool",
        "Network" | "DistributedVirtualPortgroup" | "OpaqueNetwork" => "network",
        "Datastore" => "datastore",
        "Task" => "task",
        _ => "object",
    }
}

impl From<Error> for vic_core::Error {
    fn from(e: Error) -> Self {
        use vic_core::Error as E;
        let (method, fault) = match e {
            Error::Fault { method, fault } => (method, fault),
            Error::Login { .. } => return E::Unauthorized(e.to_string()),
            Error::Http { ref source, .. } if source.is_connect() || source.is_timeout() => {
                return E::Unavailable(e.to_string());
            }
            Error::Tls(_) => return E::Unavailable(e.to_string()),
            Error::Status { status: 404, what } => return E::not_found("file", what),
            other => return E::Internal(format!("vSphere: {other}")),
        };
        let msg = format!("{method}: {}", fault.describe());
        match fault.kind.as_str() {
            "InvalidLogin" | "NotAuthenticated" | "NoPermission" | "InvalidPrivilege" => {
                E::Unauthorized(msg)
            }
            "DuplicateName" | "FileAlreadyExists" | "AlreadyExists" => E::Conflict(msg),
            "ManagedObjectNotFound" => {
                let obj = fault.object();
                let kind = obj.as_ref().map(|o| noun(&o.kind)).unwrap_or("object");
                let id = obj.map(|o| o.value).unwrap_or(msg);
                E::not_found(kind, id)
            }
            "FileNotFound" => {
                let file = fault.field("file").unwrap_or_default().to_string();
                E::not_found("file", if file.is_empty() { msg } else { file })
            }
            "NotFound" => E::not_found("object", msg),
            "InvalidPowerState" | "InvalidState" | "TaskInProgress" | "ResourceInUse"
            | "InvalidHostState" | "VAppStateFault" | "FileLocked" | "ConcurrentAccess" => {
                E::InvalidState(msg)
            }
            "InvalidArgument"
            | "InvalidRequest"
            | "InvalidDeviceSpec"
            | "InvalidVmConfig"
            | "InvalidDatastorePath"
            | "InvalidDatastore"
            | "InvalidName"
            | "InvalidType"
            | "InvalidProperty"
            | "InvalidController"
            | "CannotCreateFile" => E::InvalidArgument(msg),
            "InsufficientResourcesFault"
            | "InsufficientMemoryResourcesFault"
            | "InsufficientCpuResourcesFault"
            | "NoDiskSpace"
            | "OutOfBounds" => E::InsufficientResources(msg),
            "NotSupported" | "NotImplemented" | "MethodNotFound" => E::NotSupported(msg),
            "HostCommunication" | "HostNotConnected" | "RequestCanceled" => E::Unavailable(msg),
            _ => E::Internal(format!("vSphere: {msg}")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn typed_faults_map_onto_engine_errors() {
        let soap = Element::parse(
            br#"<soapenv:Fault xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
              <faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring>
              <detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"/></detail>
            </soapenv:Fault>"#,
        )
        .unwrap();
        let f = Fault::from_soap(&soap);
        assert_eq!(f.kind, "InvalidLogin");
        let e: vic_core::Error = Error::Fault {
            method: "Login".into(),
            fault: Box::new(f),
        }
        .into();
        assert!(matches!(&e, vic_core::Error::Unauthorized(m) if m.contains("Login failure")));

        let task = Element::parse(
            br#"<error xmlns:x="http://www.w3.org/2001/XMLSchema-instance"><fault x:type="DuplicateName"><name>vm1</name><object type="Folder">group-v3</object></fault><localizedMessage>*types.DuplicateName</localizedMessage></error>"#,
        )
        .unwrap();
        let f = Fault::from_localized(&task);
        assert_eq!(f.kind, "DuplicateName");
        assert_eq!(f.describe(), "DuplicateName (name vm1, object group-v3)");
        let e: vic_core::Error = Error::Fault {
            method: "CreateVM_Task".into(),
            fault: Box::new(f),
        }
        .into();
        assert!(matches!(e, vic_core::Error::Conflict(_)));

        let nf = Element::parse(
            br#"<error xmlns:x="http://www.w3.org/2001/XMLSchema-instance"><fault x:type="ManagedObjectNotFound"><obj type="VirtualMachine">vm-9</obj></fault></error>"#,
        )
        .unwrap();
        let e: vic_core::Error = Error::Fault {
            method: "PowerOnVM_Task".into(),
            fault: Box::new(Fault::from_localized(&nf)),
        }
        .into();
        assert!(matches!(e, vic_core::Error::NotFound { kind: "vm", ref id } if id == "vm-9"));
    }
}
