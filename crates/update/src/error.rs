use std::path::PathBuf;

use crate::boot::SlotName;

/// Result of an update operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while verifying, installing or booting an update.
/// Messages name the key, chunk, slot or file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The signed manifest's wire form does not parse (before any
    /// signature was checked, so nothing of its content is trusted).
    #[error("malformed signed manifest: {reason}")]
    Malformed {
        /// What did not parse.
        reason: String,
    },
    /// Not one signature was made by a trusted key.
    #[error("manifest is not signed by any trusted key (key ids: {key_ids:?})")]
    UntrustedSigner {
        /// The key ids the signatures named (truncated).
        key_ids: Vec<String>,
    },
    /// A signature names a trusted key but does not verify.
    #[error("manifest signature by trusted key {key_id} does not verify")]
    BadSignature {
        /// The trusted key's id (hex SHA-256 of its SPKI).
        key_id: String,
    },
    /// Fewer distinct trusted keys signed than the threshold demands.
    #[error("manifest is signed by {have} distinct trusted key(s), {need} needed")]
    BelowThreshold {
        /// Distinct trusted keys whose signature verified.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// The release is built for other hardware.
    #[error("release is for hardware {found:?}, this device is {expected:?}")]
    WrongHardware {
        /// This device's compatibility string.
        expected: String,
        /// The manifest's.
        found: String,
    },
    /// The release is not newer than what is installed.
    #[error("rollback refused: release version code {offered} is not above installed {installed}")]
    Rollback {
        /// The manifest's version code.
        offered: u64,
        /// The installed version code.
        installed: u64,
    },
    /// The release demands a newer installed version than this device runs.
    #[error("release needs at least version code {min} installed, this device has {installed}")]
    TooOldToUpgrade {
        /// The manifest's `min_version_code`.
        min: u64,
        /// The installed version code.
        installed: u64,
    },
    /// The release's security version is below the device's floor.
    #[error("release security version {offered} is below the device's security floor {floor}")]
    BelowSecurityFloor {
        /// The manifest's security version.
        offered: u64,
        /// The device's floor.
        floor: u64,
    },
    /// The signed manifest contradicts itself or our limits.
    #[error("inconsistent manifest: {reason}")]
    Inconsistent {
        /// Which field and why.
        reason: String,
    },
    /// A chunk's SHA-256 differs from the manifest's: it was not written.
    #[error("chunk {index} does not match the signed manifest; nothing of it was written")]
    ChunkMismatch {
        /// The chunk index.
        index: u64,
    },
    /// The update source yields more bytes than the manifest declares.
    #[error("update source is longer than the declared image size of {declared} bytes")]
    ImageTooLong {
        /// The manifest's image size.
        declared: u64,
    },
    /// Reading a chunk from the update source failed (short, unreachable).
    #[error("reading chunk {index} from the update source: {source}")]
    Source {
        /// The chunk index.
        index: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// After writing, the slot does not read back as the manifest says.
    #[error("slot {slot} failed verification after writing at chunk {index}")]
    WriteVerification {
        /// The slot written.
        slot: SlotName,
        /// The first chunk that read back wrong.
        index: u64,
    },
    /// The slot is too small for the image.
    #[error("slot {slot} holds {capacity} bytes, the image needs {needed}")]
    SlotTooSmall {
        /// Which slot.
        slot: SlotName,
        /// Its size.
        capacity: u64,
        /// The image size.
        needed: u64,
    },
    /// Installing now would overwrite the running or committed slot.
    #[error("cannot install: {reason}")]
    SlotBusy {
        /// Why (e.g. the system runs a trial boot that is not committed).
        reason: String,
    },
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A state file (boot state, journal, floor, slot record) is corrupt.
    #[error("corrupt state file {}: {reason}", path.display())]
    CorruptState {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Raising the floor would take more counter increments than allowed
    /// (see [`crate::anti_rollback::MAX_COUNTER_STEPS`]); nothing changed.
    #[error(
        "security version {version} is more than {max} above the floor counter ({counter}); \
         refusing to raise the floor by that many steps"
    )]
    FloorJumpTooLarge {
        /// The version asked for.
        version: u64,
        /// The counter's value.
        counter: u64,
        /// The largest rise allowed.
        max: u64,
    },
    /// The floor's monotonic counter did not count up.
    #[error("the floor counter went from {before} to {after} on an increment")]
    CounterNotMonotonic {
        /// Before the increment.
        before: u64,
        /// What the increment returned.
        after: u64,
    },
    /// A boot loader tool failed or printed something we do not understand.
    #[error("boot loader environment ({tool}): {reason}")]
    BootEnv {
        /// The tool run, e.g. `fw_setenv`.
        tool: String,
        /// What went wrong.
        reason: String,
    },
    /// The keystore failed to sign.
    #[error("signing the manifest: {0}")]
    Signing(#[source] keys::Error),
    /// A keystore call (file writes shared with `keys::fsio`) failed.
    #[error(transparent)]
    Keys(#[from] keys::Error),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn inconsistent(reason: impl Into<String>) -> Self {
        Self::Inconsistent {
            reason: reason.into(),
        }
    }
}

/// Shortens untrusted text before it goes into an error message.
pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}
