//! The owner's waiver of anti-rollback for one exact release: the
//! explicit, audited `danger_` override of ISO/IEC 27402 5.2.7.
//!
//! The security floor itself is never lowered: a TPM counter cannot be,
//! and a lowered stored floor would reopen the attack the floor closes
//! (an old, vulnerable release put back). A waiver instead names one
//! release by the SHA-256 of its signed manifest payload.
//! [`crate::manifest::SignedManifest::danger_verify_waiving_rollback`]
//! lets the installer take that release although it is older or below the
//! floor, and [`crate::commit::confirm_boot_with_waiver`] accepts a slot
//! holding it below the floor instead of refusing it as a rollback.
//! Committing it leaves the floor as it is.
//!
//! Waivers are kept in `rollback-waiver.json` beside the slot records,
//! written atomically: at most one per slot, since a waived release may be
//! running while the owner waives another for the other slot. When a
//! trial commits, only the waiver naming the committed release (if any)
//! stays, so a waived release left in the other slot cannot be fallen
//! back to later.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::Digest;

/// File name of the waiver in the update state directory.
pub const FILE_NAME: &str = "rollback-waiver.json";

/// Largest waiver file read; a real one is a few hundred bytes.
const MAX_FILE_BYTES: u64 = 16 * 1024;

/// Most waivers kept: one per slot.
pub const MAX_WAIVERS: usize = 2;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Waivers {
    waivers: Vec<RollbackWaiver>,
}

/// One release the owner accepted despite anti-rollback, with what the
/// audit record needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackWaiver {
    /// Lower-case hex SHA-256 of the waived release's signed manifest
    /// payload ([`crate::manifest::AuthenticManifest::digest`]).
    pub manifest_sha256: String,
    /// The release's human version.
    pub version: String,
    /// The release's version code.
    pub version_code: u64,
    /// The release's security version.
    pub security_version: u64,
    /// The security floor when the waiver was granted.
    pub floor: u64,
    /// Who granted it (an owner's account name).
    pub granted_by: String,
    /// When (Unix seconds).
    pub granted_unix: i64,
}

impl RollbackWaiver {
    /// Whether this waiver names the release with manifest `digest`.
    pub fn names(&self, digest: &Digest) -> bool {
        self.manifest_sha256 == hex::encode(digest)
    }
}

/// Whether any of `waivers` names the release with manifest `digest`.
pub fn waived(waivers: &[RollbackWaiver], digest: &Digest) -> bool {
    waivers.iter().any(|w| w.names(digest))
}

/// Where the waiver is kept: [`FILE_NAME`] in the update state directory.
#[derive(Debug, Clone)]
pub struct WaiverFile {
    path: PathBuf,
}

impl WaiverFile {
    /// The waiver file in `dir` (the directory of the slot records).
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The waivers in force (none without a file).
    pub fn load(&self) -> Result<Vec<RollbackWaiver>> {
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("inspecting", &self.path, e)),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(self.corrupt(format!("{} bytes is too large", meta.len())));
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(&self.path).map_err(|e| Error::io("reading", &self.path, e))?;
        let file: Waivers =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if file.waivers.len() > MAX_WAIVERS {
            return Err(self.corrupt(format!(
                "{} waivers, at most {MAX_WAIVERS} are kept",
                file.waivers.len()
            )));
        }
        let well_formed = |w: &RollbackWaiver| {
            w.manifest_sha256.len() == 64
                && w.manifest_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !file.waivers.iter().all(well_formed) {
            return Err(self.corrupt("manifest_sha256 is not 64 lower-case hex digits".into()));
        }
        Ok(file.waivers)
    }

    /// Makes `waivers` the ones in force (replacing the others), durably;
    /// none removes the file.
    pub fn store(&self, waivers: &[RollbackWaiver]) -> Result<()> {
        if waivers.is_empty() {
            return self.clear();
        }
        if waivers.len() > MAX_WAIVERS {
            return Err(self.corrupt(format!(
                "{} waivers, at most {MAX_WAIVERS} are kept",
                waivers.len()
            )));
        }
        let bytes = serde_json::to_vec_pretty(&Waivers {
            waivers: waivers.to_vec(),
        })
        .map_err(|e| self.corrupt(e.to_string()))?;
        keys::fsio::write_atomic(&self.path, &bytes, 0o600)?;
        Ok(())
    }

    /// Withdraws every waiver, durably.
    pub fn clear(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(keys::fsio::sync_dir(
                self.path.parent().unwrap_or(Path::new(".")),
            )?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &self.path, e)),
        }
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::CorruptState {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiver(digest: &Digest) -> RollbackWaiver {
        RollbackWaiver {
            manifest_sha256: hex::encode(digest),
            version: "1.0.0".into(),
            version_code: 1,
            security_version: 1,
            floor: 2,
            granted_by: "owner".into(),
            granted_unix: 1_800_000_000,
        }
    }

    #[test]
    fn waivers_name_their_digests_and_survive_a_reopen_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let file = WaiverFile::new(dir.path());
        assert_eq!(file.load().unwrap(), []);
        file.clear().unwrap();
        let both = [waiver(&[7; 32]), waiver(&[9; 32])];
        file.store(&both).unwrap();
        let loaded = WaiverFile::new(dir.path()).load().unwrap();
        assert_eq!(loaded, both);
        assert!(waived(&loaded, &[7; 32]) && waived(&loaded, &[9; 32]));
        assert!(!waived(&loaded, &[8; 32]));
        assert!(
            file.store(&[waiver(&[1; 32]), waiver(&[2; 32]), waiver(&[3; 32])])
                .is_err()
        );
        assert_eq!(
            file.load().unwrap(),
            both,
            "a refused store changed the file"
        );
        file.store(&[]).unwrap();
        assert!(!file.path().exists());
        file.store(&both[..1]).unwrap();
        file.clear().unwrap();
        assert_eq!(file.load().unwrap(), []);
    }

    #[test]
    fn a_malformed_waiver_file_is_corrupt_state_not_a_waiver() {
        let dir = tempfile::tempdir().unwrap();
        let file = WaiverFile::new(dir.path());
        let mut w = waiver(&[0xab; 32]);
        w.manifest_sha256 = w.manifest_sha256.to_uppercase();
        let json = serde_json::json!({ "waivers": [w] });
        std::fs::write(file.path(), json.to_string()).unwrap();
        assert!(matches!(file.load(), Err(Error::CorruptState { .. })));
        std::fs::write(file.path(), b"{\"waivers\": [{\"manifest_sha256\": 1}]}").unwrap();
        assert!(matches!(file.load(), Err(Error::CorruptState { .. })));
    }
}
