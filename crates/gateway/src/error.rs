use std::path::PathBuf;

/// Errors from the gateway's configuration and setup (policy files, TLS,
/// listeners). Refused device traffic is not an error: it is a
/// [`crate::Violation`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy file could not be read.
    #[error("reading policy {}: {source}", path.display())]
    PolicyRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The policy is not valid TOML or has unknown or mistyped keys.
    #[error("policy {origin}: {message}")]
    PolicySyntax {
        /// File (or other origin) of the text.
        origin: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A policy value is out of range or inconsistent.
    #[error("policy field `{field}`: {reason}")]
    PolicyInvalid {
        /// Dotted path of the field, e.g. `groups.sensors.publish[2]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Result with the gateway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
