//! The one error type of the engine and its providers, and how it maps onto the HTTP
//! status codes of Docker error responses.

/// The result type used across vic.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, classified by how a Docker client should see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (404). `kind` is Docker's noun: "container", "image"…
    #[error("No such {kind}: {id}")]
    NotFound {
        /// What kind of object was looked up.
        kind: &'static str,
        /// The name or id that was asked for.
        id: String,
    },
    /// Something is missing, described by a whole message (404), e.g. dockerd's
    /// "pull access denied … may require 'docker login'".
    #[error("{0}")]
    Missing(String),
    /// The request conflicts with the state of an object (409), e.g. a name in use.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong: a bad parameter or body (400).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid Docker but vic does not do it (501).
    #[error("{0}")]
    NotSupported(String),
    /// The backend refuses the operation in the object's current state (409), as
    /// vSphere's `InvalidPowerState` or `InvalidState` faults.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// Not enough CPU, memory or disk in the pool or on the datastore (500).
    #[error("insufficient resources: {0}")]
    InsufficientResources(String),
    /// Credentials were missing or refused, by a registry or the backend (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The backend could not be reached or refused our credentials (503).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// A file or folder operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure of the backend or the engine (500).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// A [`Error::NotFound`] for `kind` and `id`.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status code that the Docker Engine API uses for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotFound { .. } | Error::Missing(_) => 404,
            Error::Conflict(_) | Error::InvalidState(_) => 409,
            Error::InvalidArgument(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::NotSupported(_) => 501,
            Error::Unavailable(_) => 503,
            Error::InsufficientResources(_) | Error::Io { .. } | Error::Internal(_) => 500,
        }
    }

    /// True when the error says the object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. } | Error::Missing(_))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("malformed record: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_docker() {
        assert_eq!(Error::not_found("container", "x").http_status(), 404);
        assert_eq!(Error::Conflict("c".into()).http_status(), 409);
        assert_eq!(Error::InvalidArgument("b".into()).http_status(), 400);
        assert_eq!(Error::NotSupported("n".into()).http_status(), 501);
        assert_eq!(Error::Internal("i".into()).http_status(), 500);
        assert_eq!(
            Error::not_found("image", "busybox:latest").to_string(),
            "No such image: busybox:latest"
        );
    }
}
