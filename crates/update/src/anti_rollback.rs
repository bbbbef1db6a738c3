//! The device's security floor: releases below it are refused, and
//! committing a release raises it to the release's security version.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A monotonic security version. The agent backs it with the encrypted
/// store (and a TPM NV counter where there is one); [`FileSecurityFloor`]
/// is the plain-file form for development and tests.
pub trait SecurityFloor: std::fmt::Debug + Send + Sync {
    /// The current floor (0 before any release was committed).
    fn get(&self) -> Result<u64>;

    /// Raises the floor to `version`; a lower or equal `version` leaves it
    /// unchanged (so a repeated commit is harmless). Never lowers it.
    fn raise(&self, version: u64) -> Result<()>;
}

/// A security floor in a small JSON file written atomically.
#[derive(Debug)]
pub struct FileSecurityFloor {
    path: PathBuf,
    lock: Mutex<()>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloorFile {
    security_floor: u64,
}

impl FileSecurityFloor {
    /// The floor kept in `path` (created on the first raise).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        }
    }

    fn read(&self) -> Result<u64> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<FloorFile>(&bytes)
                .map(|f| f.security_floor)
                .map_err(|e| Error::CorruptState {
                    path: self.path.clone(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("reading", &self.path, e)),
        }
    }
}

impl SecurityFloor for FileSecurityFloor {
    fn get(&self) -> Result<u64> {
        self.read()
    }

    fn raise(&self, version: u64) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if version <= self.read()? {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&FloorFile {
            security_floor: version,
        })
        .map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        keys::fsio::write_atomic(&self.path, &bytes, 0o600)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_only_rises_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("floor.json");
        let floor = FileSecurityFloor::new(&path);
        assert_eq!(floor.get().unwrap(), 0);
        floor.raise(5).unwrap();
        floor.raise(3).unwrap();
        assert_eq!(floor.get().unwrap(), 5);
        assert_eq!(FileSecurityFloor::new(&path).get().unwrap(), 5);
        std::fs::write(&path, b"{\"security_floor\": -1}").unwrap();
        assert!(matches!(floor.get(), Err(Error::CorruptState { .. })));
    }
}
