use std::path::PathBuf;

/// Result of an identity operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while creating or using a device identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The keystore refused or failed.
    #[error(transparent)]
    Keys(#[from] keys::Error),
    /// A certificate could not be built, signed or parsed.
    #[error("certificate {what}: {detail}")]
    Certificate {
        /// Which certificate or step.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The unit already has an identity; re-provisioning must be forced.
    #[error(
        "{} already holds a provisioned identity (device {device_id}); pass --force to replace it",
        dir.display()
    )]
    AlreadyProvisioned {
        /// The identity directory.
        dir: PathBuf,
        /// The identity found there.
        device_id: String,
    },
    /// The unit has no identity yet.
    #[error("no device identity in {}: run `bulwark provision` first", dir.display())]
    NotProvisioned {
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The CA has already issued an identity with this serial number.
    #[error("serial number {serial:?} was already issued to device {device_id}")]
    DuplicateSerial {
        /// The serial number.
        serial: String,
        /// The unit that has it.
        device_id: String,
    },
    /// A value given by the caller is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A file the identity lives in is damaged.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        operation: &'static str,
        /// The file concerned.
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

    pub(crate) fn cert(what: impl Into<String>, detail: impl ToString) -> Self {
        Self::Certificate {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
