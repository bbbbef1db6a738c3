//! A simulated boot loader in one JSON file, for tests and development.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{BootControl, BootState, SlotName, TRY_ATTEMPTS};
use crate::error::{Error, Result};

/// The boot loader's state file: written whole with
/// `keys::fsio::write_atomic`, so a power cut leaves the old or the new
/// state, never a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    active: SlotName,
    tried: Option<Tried>,
    booted: SlotName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tried {
    slot: SlotName,
    attempts_left: u32,
}

/// A boot loader simulated in a JSON file, with [`FileBootControl::boot`]
/// doing what U-Boot's `bootcount` logic does at power-on.
#[derive(Debug)]
pub struct FileBootControl {
    path: PathBuf,
    // Serialises read-modify-write within one process; across processes
    // there is one writer at a time by construction (the agent).
    lock: Mutex<()>,
}

impl FileBootControl {
    /// Creates a state file with `active` committed and booted, unless one
    /// exists already; then opens it.
    pub fn create(path: &Path, active: SlotName) -> Result<Self> {
        let this = Self {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        };
        if !path.exists() {
            this.write(&FileState {
                active,
                tried: None,
                booted: active,
            })?;
        }
        this.read()?;
        Ok(this)
    }

    /// Opens an existing state file.
    pub fn open(path: &Path) -> Result<Self> {
        let this = Self {
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        };
        this.read()?;
        Ok(this)
    }

    /// Simulates a power-on: a slot on trial with attempts left is booted
    /// and its counter decremented (persisted *before* booting, as U-Boot
    /// does, so a crash during the boot still counts); a trial without
    /// attempts left is abandoned; otherwise the committed slot boots.
    pub fn boot(&self) -> Result<SlotName> {
        self.update(|s| {
            let booted = match s.tried {
                Some(Tried {
                    slot,
                    attempts_left,
                }) if attempts_left > 0 => {
                    s.tried = Some(Tried {
                        slot,
                        attempts_left: attempts_left - 1,
                    });
                    slot
                }
                _ => {
                    s.tried = None;
                    s.active
                }
            };
            s.booted = booted;
            booted
        })
    }

    fn read(&self) -> Result<FileState> {
        let bytes = std::fs::read(&self.path).map_err(|e| Error::io("reading", &self.path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    fn write(&self, state: &FileState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| Error::CorruptState {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        keys::fsio::write_atomic(&self.path, &bytes, 0o644)?;
        Ok(())
    }

    fn update<T>(&self, change: impl FnOnce(&mut FileState) -> T) -> Result<T> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.read()?;
        let before = state;
        let out = change(&mut state);
        if state != before {
            self.write(&state)?;
        }
        Ok(out)
    }
}

impl BootControl for FileBootControl {
    fn booted(&self) -> Result<SlotName> {
        Ok(self.read()?.booted)
    }

    fn state(&self) -> Result<BootState> {
        let s = self.read()?;
        Ok(BootState {
            active: s.active,
            tried: s.tried.map(|t| (t.slot, t.attempts_left)),
        })
    }

    fn mark_try_once(&self, slot: SlotName) -> Result<()> {
        self.update(|s| {
            s.tried = Some(Tried {
                slot,
                attempts_left: TRY_ATTEMPTS,
            });
        })
    }

    fn commit(&self, slot: SlotName) -> Result<()> {
        self.update(|s| {
            s.active = slot;
            s.tried = None;
        })
    }

    fn fallback(&self) -> Result<()> {
        self.update(|s| s.tried = None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_once_boots_once_then_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let boot = FileBootControl::create(&dir.path().join("boot.json"), SlotName::A).unwrap();
        assert_eq!(boot.boot().unwrap(), SlotName::A);
        boot.mark_try_once(SlotName::B).unwrap();
        assert_eq!(
            boot.state().unwrap().tried,
            Some((SlotName::B, TRY_ATTEMPTS))
        );
        assert_eq!(boot.boot().unwrap(), SlotName::B);
        assert_eq!(boot.booted().unwrap(), SlotName::B);
        assert_eq!(boot.active().unwrap(), SlotName::A);
        // Not committed: the next boot falls back and forgets the trial.
        assert_eq!(boot.boot().unwrap(), SlotName::A);
        assert_eq!(boot.state().unwrap().tried, None);
    }

    #[test]
    fn commit_makes_the_trial_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.json");
        let boot = FileBootControl::create(&path, SlotName::A).unwrap();
        boot.mark_try_once(SlotName::B).unwrap();
        assert_eq!(boot.boot().unwrap(), SlotName::B);
        boot.commit(SlotName::B).unwrap();
        let reopened = FileBootControl::open(&path).unwrap();
        for _ in 0..3 {
            assert_eq!(reopened.boot().unwrap(), SlotName::B);
        }
        assert_eq!(
            reopened.state().unwrap(),
            BootState {
                active: SlotName::B,
                tried: None
            }
        );
    }

    #[test]
    fn fallback_cancels_a_pending_trial() {
        let dir = tempfile::tempdir().unwrap();
        let boot = FileBootControl::create(&dir.path().join("boot.json"), SlotName::B).unwrap();
        boot.mark_try_once(SlotName::A).unwrap();
        boot.fallback().unwrap();
        assert_eq!(boot.boot().unwrap(), SlotName::B);
    }

    #[test]
    fn corrupt_state_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot.json");
        std::fs::write(&path, b"{\"active\":\"c\"}").unwrap();
        let err = FileBootControl::open(&path).unwrap_err();
        assert!(matches!(err, Error::CorruptState { .. }), "{err:?}");
    }
}
