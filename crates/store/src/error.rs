use std::path::PathBuf;

/// Result of a storage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store or the event log. Messages name the file,
/// table or record, never a value or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The keystore failed (sealing or unsealing a data key).
    #[error(transparent)]
    Keys(#[from] keys::Error),
    /// The database file failed or is damaged.
    #[error("store database {}: {detail}", path.display())]
    Database {
        /// The redb file.
        path: PathBuf,
        /// redb's description.
        detail: String,
    },
    /// A record failed authentication: modified, moved or written with
    /// another key.
    #[error("record in {table} failed authentication: {reason}")]
    Tampered {
        /// The table.
        table: &'static str,
        /// Why.
        reason: String,
    },
    /// A key file is damaged or was made by another keystore.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The caller's authorization does not cover this operation.
    #[error("authorization for {granted:?} does not cover {needed:?}")]
    WrongAuthorization {
        /// What the proof allows.
        granted: access::Permission,
        /// What the operation needs.
        needed: access::Permission,
    },
    /// A value given by the caller is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No data for that user (already removed, or never stored).
    #[error("no data stored for user {0:?}")]
    UnknownUser(String),
    /// A file operation failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn db(path: &std::path::Path, detail: impl ToString) -> Self {
        Self::Database {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}
