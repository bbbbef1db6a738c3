//! What each slot holds: the signed manifest it was installed from, kept
//! beside the slots so the start-up integrity check and the next install
//! know the release without trusting the slot's own content.

use std::path::{Path, PathBuf};

use crate::boot::SlotName;
use crate::error::{Error, Result};
use crate::manifest::AuthenticManifest;

/// Largest record read (the manifest's own wire limit).
const MAX_RECORD_BYTES: u64 = crate::manifest::MAX_WIRE_BYTES as u64;

/// Slot records in a state directory: `slot-a.manifest.json`,
/// `slot-b.manifest.json`, each the exact signed wire bytes.
///
/// Invariant: a slot has a record only while its content is a complete,
/// verified image of that release: the installer removes the record
/// before the first write to a slot and stores it after the written slot
/// verified.
#[derive(Debug, Clone)]
pub struct SlotRecords {
    dir: PathBuf,
}

impl SlotRecords {
    /// Records kept in `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, slot: SlotName) -> PathBuf {
        self.dir.join(format!("slot-{slot}.manifest.json"))
    }

    /// The signed manifest `slot` was installed from, if it holds one.
    /// The caller verifies it (`SignedManifest::verify_installed`).
    pub fn load(&self, slot: SlotName) -> Result<Option<Vec<u8>>> {
        let path = self.path(slot);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("inspecting", &path, e)),
            Ok(meta) if meta.len() > MAX_RECORD_BYTES => {
                return Err(Error::CorruptState {
                    path,
                    reason: format!("{} bytes is more than a manifest can be", meta.len()),
                });
            }
            Ok(_) => {}
        }
        std::fs::read(&path)
            .map(Some)
            .map_err(|e| Error::io("reading", &path, e))
    }

    /// Records that `slot` now holds `manifest`'s image.
    pub fn store(&self, slot: SlotName, manifest: &AuthenticManifest) -> Result<()> {
        keys::fsio::write_atomic(&self.path(slot), manifest.wire(), 0o644)?;
        Ok(())
    }

    /// Forgets what `slot` holds, durably, before it is overwritten.
    pub fn remove(&self, slot: SlotName) -> Result<()> {
        let path = self.path(slot);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(keys::fsio::sync_dir(&self.dir)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }
}
