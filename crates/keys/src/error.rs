use std::path::PathBuf;

/// Result of a keystore operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a keystore. Messages name the backend, key or file
/// concerned and never carry secret material (PINs, key bytes, plaintext).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key is stored under that label.
    #[error("{backend}: no key labelled {label:?}")]
    KeyNotFound {
        /// Which backend was asked.
        backend: &'static str,
        /// The label looked up.
        label: String,
    },
    /// A key already exists under that label; keys are never overwritten.
    #[error("{backend}: a key labelled {label:?} already exists")]
    KeyExists {
        /// Which backend was asked.
        backend: &'static str,
        /// The label in use.
        label: String,
    },
    /// The backend cannot create or use keys of this algorithm.
    #[error("{backend}: algorithm {algorithm} is not supported")]
    UnsupportedAlgorithm {
        /// Which backend was asked.
        backend: &'static str,
        /// The algorithm requested.
        algorithm: String,
    },
    /// The device or library behind the backend could not be reached.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What was tried, e.g. the TCTI or module path.
        detail: String,
    },
    /// The backend refused our credentials (e.g. a wrong PKCS#11 PIN).
    #[error("{backend}: authentication failed for {what}")]
    AuthenticationFailed {
        /// Which backend.
        backend: &'static str,
        /// What we tried to log in to (never the PIN itself).
        what: String,
    },
    /// A setting or address given to the backend is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input, e.g. "key label" or "PKCS#11 URI".
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// Stored key material failed its integrity check or does not parse.
    #[error("corrupt key material at {location}: {reason}")]
    Corrupt {
        /// Where the material lives (file path, handle, object).
        location: String,
        /// What was wrong.
        reason: String,
    },
    /// A sealed secret could not be unsealed (modified, or sealed elsewhere).
    #[error("{backend}: sealed secret rejected: {reason}")]
    UnsealFailed {
        /// Which backend.
        backend: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A file operation of the backend failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What we were doing, e.g. "reading".
        operation: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The backend reported an error we cannot classify further.
    #[error("{backend}: {operation} failed: {detail}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The operation, e.g. "sign".
        operation: &'static str,
        /// The backend's own description.
        detail: String,
    },
}

impl Error {
    /// Convenience for an I/O failure on a path.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
