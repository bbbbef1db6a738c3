//! The index file: which persistent TPM handle holds which labelled key.
//!
//! The TPM knows handles, not labels, so `<state dir>/tpm-keys.json` maps
//! each label to its handle, its algorithm and the TPM *name* of the key
//! (a digest of its public area). The name lets every use check that the
//! handle still holds the key we created, not something persisted there
//! later. The file also pins the name of the storage key, which changes
//! when the TPM is cleared or swapped.
//!
//! Writes are atomic ([`keys::fsio::write_atomic`]) and read-modify-write
//! cycles hold an exclusive `flock` on a lock file beside the index, so two
//! stores (or processes) on one state directory cannot lose each other's
//! entries.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keys::fsio::write_atomic;
use keys::{Algorithm, Error, KeyLabel, Result};
use serde::{Deserialize, Serialize};

use crate::handles;

/// File name of the index inside the state directory.
pub const INDEX_FILE: &str = "tpm-keys.json";
/// File name of the lock file inside the state directory.
const LOCK_FILE: &str = "tpm-keys.lock";
/// Version of the index layout.
const FORMAT: u32 = 1;

/// Where the index lives.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    path: PathBuf,
    lock_path: PathBuf,
}

/// The parsed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndexData {
    format: u32,
    /// TPM name of the storage key the keys were created under.
    #[serde(with = "hex::serde")]
    pub(crate) storage_key_name: Vec<u8>,
    /// Every key, by label.
    pub(crate) keys: BTreeMap<KeyLabel, Entry>,
}

/// One key in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    /// The persistent handle, always inside [`handles::KEYS`].
    pub(crate) handle: KeyHandleValue,
    /// The algorithm the key was created for.
    pub(crate) algorithm: Algorithm,
    /// TPM name of the key: nameAlg identifier followed by the digest of
    /// its public area.
    #[serde(with = "hex::serde")]
    pub(crate) name: Vec<u8>,
}

/// A persistent handle from the key range, written as `"0x81000100"` so
/// the file reads like `tpm2_getcap handles-persistent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct KeyHandleValue(u32);

impl KeyHandleValue {
    /// Accepts only handles in the key range (never an endorsement key).
    pub(crate) fn new(value: u32) -> std::result::Result<Self, String> {
        if handles::KEYS.contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "handle {value:#010x} is outside the key range {:#010x}..={:#010x}",
                handles::KEYS.start(),
                handles::KEYS.end()
            ))
        }
    }

    /// The raw handle.
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<String> for KeyHandleValue {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let digits = s
            .strip_prefix("0x")
            .filter(|d| d.len() == 8)
            .ok_or_else(|| format!("handle {s:?} is not written as 0x followed by 8 hex digits"))?;
        let value = u32::from_str_radix(digits, 16)
            .map_err(|_| format!("handle {s:?} is not hexadecimal"))?;
        Self::new(value)
    }
}

impl From<KeyHandleValue> for String {
    fn from(handle: KeyHandleValue) -> Self {
        format!("{:#010x}", handle.0)
    }
}

impl IndexData {
    /// An empty index for keys under the storage key named `storage_key_name`.
    pub(crate) fn new(storage_key_name: Vec<u8>) -> Self {
        Self {
            format: FORMAT,
            storage_key_name,
            keys: BTreeMap::new(),
        }
    }

    /// The entry for `label`, or [`Error::KeyNotFound`].
    pub(crate) fn entry(&self, label: &KeyLabel) -> Result<&Entry> {
        self.keys.get(label).ok_or_else(|| Error::KeyNotFound {
            backend: crate::BACKEND,
            label: label.to_string(),
        })
    }
}

impl Index {
    /// The index inside `state_dir`.
    pub(crate) fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(INDEX_FILE),
            lock_path: state_dir.join(LOCK_FILE),
        }
    }

    /// Path of the index file, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock that every read-modify-write of the index
    /// holds; released when the returned file is dropped.
    pub(crate) fn lock(&self) -> Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| Error::io("opening lock file", &self.lock_path, e))?;
        file.lock()
            .map_err(|e| Error::io("locking", &self.lock_path, e))?;
        Ok(file)
    }

    /// Reads and checks the index; `None` if there is none yet.
    pub(crate) fn load(&self) -> Result<Option<IndexData>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &self.path, e)),
        };
        let data: IndexData = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("the key index does not parse: {e}")))?;
        if data.format != FORMAT {
            return Err(self.corrupt(format!(
                "index format {} is not supported (expected {FORMAT})",
                data.format
            )));
        }
        let mut seen = BTreeMap::new();
        for (label, entry) in &data.keys {
            if let Some(other) = seen.insert(entry.handle, label) {
                return Err(self.corrupt(format!(
                    "keys {other:?} and {label:?} both claim handle {}",
                    String::from(entry.handle)
                )));
            }
        }
        Ok(Some(data))
    }

    /// Replaces the index atomically.
    pub(crate) fn store(&self, data: &IndexData) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(data).map_err(|e| Error::Backend {
            backend: crate::BACKEND,
            operation: "writing the key index",
            detail: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes, 0o600)
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            location: self.path.display().to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IndexData {
        let mut data = IndexData::new(vec![0, 0x0b, 1, 2]);
        data.keys.insert(
            "device".parse().unwrap(),
            Entry {
                handle: KeyHandleValue::new(0x8100_0100).unwrap(),
                algorithm: Algorithm::EcdsaP256Sha256,
                name: vec![0, 0x0b, 9],
            },
        );
        data
    }

    #[test]
    fn round_trips_with_readable_handles() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        assert_eq!(index.load().unwrap(), None);
        index.store(&sample()).unwrap();
        let text = fs::read_to_string(index.path()).unwrap();
        assert!(text.contains("\"0x81000100\""), "{text}");
        assert!(text.contains("\"ecdsa-p256\""), "{text}");
        assert_eq!(index.load().unwrap(), Some(sample()));
    }

    #[test]
    fn foreign_handles_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        index.store(&sample()).unwrap();
        let text = fs::read_to_string(index.path()).unwrap();
        for bad in [
            "0x81010001",
            "0x81000001",
            "0x8100010",
            "81000100",
            "0xzz000100",
        ] {
            fs::write(index.path(), text.replace("0x81000100", bad)).unwrap();
            let err = index.load().unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{bad}: {err:?}");
            assert!(err.to_string().contains(INDEX_FILE), "{err}");
        }
    }

    #[test]
    fn duplicate_handles_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::new(dir.path());
        let mut data = sample();
        let entry = data.keys.values().next().unwrap().clone();
        data.keys.insert("other".parse().unwrap(), entry);
        index.store(&data).unwrap();
        let err = index.load().unwrap_err().to_string();
        assert!(err.contains("both claim handle 0x81000100"), "{err}");
    }
}
