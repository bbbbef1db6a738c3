//! The install journal: the only state of an install in progress, so a
//! restarted install resumes or restarts cleanly and there is no lock to
//! go stale.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::SlotName;
use crate::error::{Error, Result};

/// Progress of one install, written atomically.
///
/// Invariant: chunks `0..chunks_done` of `slot` were written, verified
/// against the manifest with payload digest `manifest_sha256` before
/// writing, and flushed to the device before this was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Journal {
    /// Hex SHA-256 of the signed manifest payload.
    pub(crate) manifest_sha256: String,
    /// The slot being written.
    pub(crate) slot: SlotName,
    /// Highest contiguous count of durable, verified chunks.
    pub(crate) chunks_done: u64,
}

/// Where the journal lives.
#[derive(Debug, Clone)]
pub(crate) struct JournalFile {
    path: PathBuf,
}

impl JournalFile {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("install-journal.json"),
        }
    }

    /// The journal, or `None` if there is none or it does not parse (an
    /// unreadable journal only costs a restart from chunk 0).
    pub(crate) fn load(&self) -> Option<Journal> {
        let bytes = std::fs::read(&self.path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(journal) => Some(journal),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable install journal");
                None
            }
        }
    }

    pub(crate) fn store(&self, journal: &Journal) -> Result<()> {
        let bytes = serde_json::to_vec(journal).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        keys::fsio::write_atomic(&self.path, &bytes, 0o644)?;
        Ok(())
    }

    pub(crate) fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &self.path, e)),
        }
    }
}
