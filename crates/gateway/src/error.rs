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
    /// The boot file could not be read.
    #[error("reading gateway configuration {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The boot file is not valid TOML or has unknown or mistyped keys.
    #[error("gateway configuration {origin}: {message}")]
    ConfigSyntax {
        /// File (or other origin) of the text.
        origin: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A boot-file value is unusable.
    #[error("gateway configuration field `{field}`: {reason}")]
    ConfigInvalid {
        /// Dotted path of the field.
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
    /// A state file (quarantine) could not be read or its directory made.
    #[error("{what} {}: {source}", path.display())]
    StateIo {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A state file does not parse: refused rather than treated as empty,
    /// which would release every quarantined device.
    #[error("state file {} is corrupt: {reason}", path.display())]
    StateCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A state file could not be written.
    #[error("writing state file {}: {reason}", path.display())]
    StateWrite {
        /// The file.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The event-log audit writer could not be started.
    #[error("starting the event-log writer: {source}")]
    AuditWriter {
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Result with the gateway's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
