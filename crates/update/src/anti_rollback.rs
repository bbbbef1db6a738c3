//! The device's security floor: releases below it are refused, and
//! committing a release raises it to the release's security version.
//!
//! [`CounterBackedFloor`] adds a hardware [`MonotonicCounter`] (a TPM NV
//! counter) under a stored floor. The threat it answers: someone who puts
//! back an old, authentic copy of the device's state (an encrypted store
//! or floor file copied off the flash earlier) lowers a stored floor; a
//! counter in the TPM cannot be put back, so the floor it carries stays.

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

/// A counter that only counts up and survives power loss and state
/// rollback, e.g. a TPM NV counter (`keys_tpm::TpmCounter`).
pub trait MonotonicCounter: std::fmt::Debug + Send + Sync {
    /// Increments since the counter was bound to this device's floor
    /// (0 right after binding).
    fn read(&self) -> Result<u64>;

    /// Adds one; returns the new value as [`MonotonicCounter::read`] would.
    fn increment(&self) -> Result<u64>;
}

impl<T: MonotonicCounter + ?Sized> MonotonicCounter for Box<T> {
    fn read(&self) -> Result<u64> {
        (**self).read()
    }

    fn increment(&self) -> Result<u64> {
        (**self).increment()
    }
}

/// Largest rise of the floor one [`CounterBackedFloor::raise`] makes in the
/// counter. Security versions are small integers that grow by one per
/// security fix; every step is one increment (one NV write, which TPMs
/// budget), so a release claiming a far larger jump is refused rather than
/// wearing the TPM's NV or stalling a commit on thousands of commands.
pub const MAX_COUNTER_STEPS: u64 = 1024;

/// A stored floor whose value is also carried by a monotonic counter:
/// the floor in force is the higher of the two, so rolling the stored
/// floor back does not lower it.
///
/// Raising writes the stored floor first, then increments the counter up
/// to the new value. A crash in between leaves the counter behind, which
/// the next raise (every boot's confirmation raises again) makes good;
/// the floor in force never drops meanwhile, because the stored floor
/// already holds the new value.
#[derive(Debug)]
pub struct CounterBackedFloor<F, C> {
    stored: F,
    counter: C,
    // Serialises the read-increment loop of concurrent raises.
    lock: Mutex<()>,
}

impl<F: SecurityFloor, C: MonotonicCounter> CounterBackedFloor<F, C> {
    /// The floor in `stored` backed by `counter`.
    pub fn new(stored: F, counter: C) -> Self {
        Self {
            stored,
            counter,
            lock: Mutex::new(()),
        }
    }

    /// The stored floor alone, for diagnostics.
    pub fn stored(&self) -> &F {
        &self.stored
    }

    /// The counter alone, for diagnostics.
    pub fn counter(&self) -> &C {
        &self.counter
    }
}

impl<F: SecurityFloor, C: MonotonicCounter> SecurityFloor for CounterBackedFloor<F, C> {
    fn get(&self) -> Result<u64> {
        Ok(self.stored.get()?.max(self.counter.read()?))
    }

    fn raise(&self, version: u64) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut count = self.counter.read()?;
        let steps = version.saturating_sub(count);
        if steps > MAX_COUNTER_STEPS {
            return Err(Error::FloorJumpTooLarge {
                version,
                counter: count,
                max: MAX_COUNTER_STEPS,
            });
        }
        // Also heals a stored floor that was rolled back below the counter.
        self.stored.raise(version.max(count))?;
        while count < version {
            let next = self.counter.increment()?;
            if next <= count {
                return Err(Error::CounterNotMonotonic {
                    before: count,
                    after: next,
                });
            }
            count = next;
        }
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

#[cfg(test)]
mod counter_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    /// A counter in memory; `fail_after` increments, it fails (a crash
    /// or a TPM that went away mid-raise).
    #[derive(Debug, Default, Clone)]
    struct MemCounter {
        value: Arc<AtomicU64>,
        increments: Arc<AtomicUsize>,
        fail_after: Option<usize>,
    }

    impl MonotonicCounter for MemCounter {
        fn read(&self) -> Result<u64> {
            Ok(self.value.load(Ordering::SeqCst))
        }

        fn increment(&self) -> Result<u64> {
            let done = self.increments.fetch_add(1, Ordering::SeqCst);
            if self.fail_after.is_some_and(|n| done >= n) {
                return Err(Error::io(
                    "incrementing",
                    Path::new("test counter"),
                    std::io::Error::other("simulated crash"),
                ));
            }
            Ok(self.value.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    fn floor(dir: &Path, counter: MemCounter) -> CounterBackedFloor<FileSecurityFloor, MemCounter> {
        CounterBackedFloor::new(FileSecurityFloor::new(&dir.join("floor.json")), counter)
    }

    #[test]
    fn rolling_the_stored_floor_back_does_not_lower_it() {
        let dir = tempfile::tempdir().unwrap();
        let counter = MemCounter::default();
        let f = floor(dir.path(), counter.clone());
        assert_eq!(f.get().unwrap(), 0);
        f.raise(2).unwrap();
        let old = std::fs::read(dir.path().join("floor.json")).unwrap();
        f.raise(7).unwrap();
        assert_eq!(counter.read().unwrap(), 7);
        std::fs::write(dir.path().join("floor.json"), &old).unwrap();
        assert_eq!(
            f.stored().get().unwrap(),
            2,
            "the stored floor was rolled back"
        );
        assert_eq!(f.get().unwrap(), 7);
        std::fs::remove_file(dir.path().join("floor.json")).unwrap();
        assert_eq!(
            f.get().unwrap(),
            7,
            "deleting the stored floor does not lower it"
        );
        // The next raise heals the stored floor.
        f.raise(3).unwrap();
        assert_eq!(f.stored().get().unwrap(), 7);
    }

    #[test]
    fn raise_is_idempotent_and_never_lowers() {
        let dir = tempfile::tempdir().unwrap();
        let counter = MemCounter::default();
        let f = floor(dir.path(), counter.clone());
        f.raise(4).unwrap();
        f.raise(4).unwrap();
        f.raise(1).unwrap();
        assert_eq!(f.get().unwrap(), 4);
        assert_eq!(counter.increments.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_crash_between_store_and_counter_is_made_good_by_the_next_raise() {
        let dir = tempfile::tempdir().unwrap();
        let value = Arc::new(AtomicU64::new(0));
        let crashing = MemCounter {
            value: value.clone(),
            increments: Arc::default(),
            fail_after: Some(2),
        };
        let f = floor(dir.path(), crashing);
        assert!(f.raise(5).is_err());
        assert_eq!(
            value.load(Ordering::SeqCst),
            2,
            "the crash left the counter behind"
        );
        assert_eq!(
            f.get().unwrap(),
            5,
            "the stored floor already holds the raise"
        );
        // After the restart the same commit is confirmed again.
        let counter = MemCounter {
            value: value.clone(),
            ..MemCounter::default()
        };
        let f = floor(dir.path(), counter);
        f.raise(5).unwrap();
        assert_eq!(value.load(Ordering::SeqCst), 5);
        assert_eq!(f.get().unwrap(), 5);
    }

    #[test]
    fn a_huge_jump_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let counter = MemCounter::default();
        let f = floor(dir.path(), counter.clone());
        f.raise(MAX_COUNTER_STEPS).unwrap();
        let err = f.raise(2 * MAX_COUNTER_STEPS + 1).unwrap_err();
        assert!(matches!(err, Error::FloorJumpTooLarge { .. }), "{err}");
        assert!(err.to_string().contains("1024"), "{err}");
        assert_eq!(f.get().unwrap(), MAX_COUNTER_STEPS);
        assert_eq!(f.stored().get().unwrap(), MAX_COUNTER_STEPS);
    }
}
