//! TPM 2.0 keystore: signing keys that never leave the TPM, and secrets
//! sealed to it, through tss-esapi (the TCG Enhanced System API).
//!
//! [`TpmKeyStore`] implements [`keys::KeyStore`] and [`keys::KeyAdmin`].
//! [`TpmConfig`] says how to reach the TPM (a TCTI string such as
//! `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`) and where the
//! small index file lives. In the TPM:
//!
//! - a storage primary key (SRK, ECC P-256 restricted decryption key with
//!   AES-128-CFB) in the owner hierarchy at [`handles::STORAGE_KEY`],
//!   created on first open or reused if one is there;
//! - one ECDSA P-256 / SHA-256 sign-only key per label, created under the
//!   SRK with fixedTPM and fixedParent and made persistent at the first
//!   free handle of [`handles::KEYS`]; never at an endorsement key handle
//!   ([`handles::ENDORSEMENT_KEYS`]);
//! - sealed secrets are *not* stored: [`keys::KeyStore::seal`] returns a
//!   blob (the TPM-encrypted object, see `sealed.rs` for the layout) that
//!   only this TPM, under this SRK, can load and unseal.
//!
//! ```no_run
//! use keys::{Algorithm, KeyAdmin, KeyStore};
//! use keys_tpm::{TpmConfig, TpmKeyStore};
//! let store = TpmKeyStore::open(TpmConfig::new("device:/dev/tpmrm0", "/var/lib/bulwark/tpm"))?;
//! let label = "device-identity".parse()?;
//! store.generate(&label, Algorithm::EcdsaP256Sha256)?;
//! let signature = store.sign(&label, b"hello")?;
//! # Ok::<(), keys::Error>(())
//! ```
//!
//! Design decisions:
//! - **One connection per operation.** swtpm, the mssim simulator and a
//!   bare `/dev/tpm0` serve one client at a time: while one connection is
//!   open, a second client's commands block (checked against swtpm 0.7).
//!   A store that held its connection would lock out tpm2-tools, a second
//!   store and every other process for its whole life. So each operation
//!   connects, works and disconnects, under a `Mutex` (an ESAPI `Context`
//!   is not `Sync`). A TPM that went away surfaces as
//!   [`keys::Error::Unavailable`] on the next call and a TPM that came
//!   back is used again without reopening the store.
//! - **Index file with TPM names.** The TPM knows handles, not labels:
//!   `tpm-keys.json` maps label to handle, algorithm and the key's TPM
//!   name (a digest of its public area), so a handle that now holds some
//!   other object is detected instead of signed with. It also pins the
//!   SRK's name: a cleared or replaced TPM is reported as such rather than
//!   as a string of missing keys. It is written atomically under a file
//!   lock.
//! - **All-or-nothing generate.** A key made persistent but not recorded
//!   in the index is evicted again; the transient copy is always flushed.
//!   `delete` never evicts an object whose name differs from the index:
//!   it is not ours.
//! - **Hash in software, sign in the TPM.** The message is hashed with
//!   SHA-256 here (TPM2_Sign takes a digest; a null ticket suffices for an
//!   unrestricted key) and the raw (r, s) is DER-encoded for X.509/TLS.
//! - **Sealed secrets travel encrypted.** Seal and unseal run in an HMAC
//!   session salted with the SRK with parameter encryption, so the secret
//!   does not cross the bus in clear. Sealed objects carry no policy yet
//!   (no PCR binding): they are bound to this TPM and SRK only.
//! - Ed25519 is refused: TPM 2.0 has no EdDSA.
//!
//! [`TpmCounter`] (module [`counter`]) is apart from the keystore: an NV
//! counter that backs the update security floor against the rollback of
//! stored state. Module [`pcr`] extends and reads a PCR for the start-up
//! integrity measurement.

pub mod counter;
pub mod handles;
mod index;
pub mod pcr;
mod sealed;
mod tpm;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use keys::fsio::ensure_private_dir;
use keys::{
    Algorithm, BackendInfo, CapabilityClass, Error, KeyAdmin, KeyInfo, KeyLabel, KeyStore,
    PublicKey, Result, SealedSecret, Signature, encoding,
};
use sha2::{Digest, Sha256};
use tss_esapi::tcti_ldr::TctiNameConf;
use zeroize::Zeroizing;

use index::{Entry, Index, IndexData, KeyHandleValue};
use tpm::{Persisted, Tpm};

pub use counter::TpmCounter;
pub use index::INDEX_FILE;

/// Backend name in messages and [`BackendInfo`].
const BACKEND: &str = "tpm2";

/// How to reach the TPM and where to keep the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    /// TCTI string: `device:/dev/tpmrm0` (kernel resource manager, the
    /// usual choice on a device), `swtpm:host=H,port=P`, `mssim:...`,
    /// `tabrmd:...`.
    pub tcti: String,
    /// Directory for the index file (created 0700 if missing).
    pub state_dir: PathBuf,
}

impl TpmConfig {
    /// A configuration for `tcti` with its index in `state_dir`.
    pub fn new(tcti: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            tcti: tcti.into(),
            state_dir: state_dir.into(),
        }
    }
}

/// A keystore whose keys live in a TPM 2.0.
pub struct TpmKeyStore {
    tcti: String,
    state_dir: PathBuf,
    index: Index,
    /// TPM name of the SRK at open; every later use must match.
    storage_key_name: Vec<u8>,
    description: String,
    /// The parsed TCTI. Holding the lock is the right to talk to the TPM,
    /// so operations from threads sharing this store run one at a time.
    tpm: Mutex<TctiNameConf>,
}

impl fmt::Debug for TpmKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmKeyStore")
            .field("tcti", &self.tcti)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl TpmKeyStore {
    /// Connects to the TPM, makes sure the storage key exists (creating
    /// and persisting it on first use) and reads or creates the index.
    ///
    /// Errors: [`Error::InvalidInput`] for a malformed TCTI,
    /// [`Error::Unavailable`] (naming the TCTI) if the TPM cannot be
    /// reached, [`Error::Corrupt`] for an unreadable index or a storage
    /// key that differs from the one the index was made with.
    pub fn open(config: TpmConfig) -> Result<Self> {
        let conf = TctiNameConf::from_str(&config.tcti).map_err(|_| Error::InvalidInput {
            what: "TPM TCTI",
            reason: format!(
                "{:?} is not one of device:PATH, swtpm:host=H,port=P, mssim:host=H,port=P, \
                 tabrmd:bus_name=N",
                config.tcti
            ),
        })?;
        ensure_private_dir(&config.state_dir)?;
        let index = Index::new(&config.state_dir);
        let _lock = index.lock()?;
        let existing = index.load()?;
        let mut tpm = Tpm::connect(&conf, &config.tcti)?;
        let srk = tpm.storage_key()?;
        match existing {
            Some(data) => check_pin(&index, &data, &srk)?,
            None => index.store(&IndexData::new(srk.name.clone()))?,
        }
        let manufacturer = tpm.manufacturer()?;
        drop(tpm);
        Ok(Self {
            description: format!(
                "TPM 2.0 (manufacturer {manufacturer:?}) via {}, keys bound to the TPM",
                config.tcti
            ),
            tcti: config.tcti,
            state_dir: config.state_dir,
            index,
            storage_key_name: srk.name,
            tpm: Mutex::new(conf),
        })
    }

    /// The persistent TPM handle holding the key under `label`, for
    /// diagnostics (`tpm2_readpublic -c 0x81000100`).
    pub fn persistent_handle(&self, label: &KeyLabel) -> Result<u32> {
        Ok(self.load_index()?.entry(label)?.handle.get())
    }

    /// The state directory holding the index.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Runs `f` on a fresh connection, holding the store's lock.
    fn with_tpm<T>(&self, f: impl FnOnce(&mut Tpm<'_>) -> Result<T>) -> Result<T> {
        // The lock guards no data that a panic could leave half-updated.
        let conf = self.tpm.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tpm = Tpm::connect(&conf, &self.tcti)?;
        f(&mut tpm)
    }

    /// The index, or an empty one if it was removed since open.
    fn load_index(&self) -> Result<IndexData> {
        let data = self
            .index
            .load()?
            .unwrap_or_else(|| IndexData::new(self.storage_key_name.clone()));
        if data.storage_key_name != self.storage_key_name {
            return Err(Error::Corrupt {
                location: self.index.path().display().to_string(),
                reason: "the index was replaced by one made under another storage key".to_owned(),
            });
        }
        Ok(data)
    }

    /// The SRK, checked against the one seen at open.
    fn storage_key(&self, tpm: &mut Tpm<'_>) -> Result<Persisted> {
        let location = format!("TPM persistent handle {:#010x}", handles::STORAGE_KEY);
        let srk = tpm
            .persisted(handles::STORAGE_KEY)?
            .ok_or_else(|| Error::Corrupt {
                location: location.clone(),
                reason: "the storage key disappeared (TPM cleared?)".to_owned(),
            })?;
        if srk.name != self.storage_key_name {
            return Err(Error::Corrupt {
                location,
                reason: "the storage key changed since the store was opened (TPM cleared?)"
                    .to_owned(),
            });
        }
        Ok(srk)
    }

    /// The persistent key for `entry`, checked to be the object we created.
    fn key_object(&self, tpm: &mut Tpm<'_>, label: &KeyLabel, entry: &Entry) -> Result<Persisted> {
        let handle = entry.handle.get();
        let location = format!("TPM persistent handle {handle:#010x}");
        let object = tpm.persisted(handle)?.ok_or_else(|| Error::Corrupt {
            location: location.clone(),
            reason: format!(
                "key {label:?} listed in {} is missing from the TPM (TPM cleared?); \
                 delete the label to drop the entry",
                self.index.path().display()
            ),
        })?;
        if object.name != entry.name {
            return Err(Error::Corrupt {
                location,
                reason: format!(
                    "the handle holds another object than key {label:?} (replaced by other \
                     software?)"
                ),
            });
        }
        Ok(object)
    }

    fn read_key(&self, tpm: &mut Tpm<'_>, label: &KeyLabel, entry: &Entry) -> Result<PublicKey> {
        let object = self.key_object(tpm, label, entry)?;
        let public = tpm.read_public(&object)?;
        let corrupt = |reason: String| Error::Corrupt {
            location: format!("TPM persistent handle {:#010x}", object.handle),
            reason: format!("key {label:?}: {reason}"),
        };
        if entry.algorithm != Algorithm::EcdsaP256Sha256 {
            return Err(corrupt(format!(
                "indexed as {}, which this backend never creates",
                entry.algorithm
            )));
        }
        let (x, y) = tpm::signing_key_point(&public).map_err(corrupt)?;
        Ok(PublicKey::from_spki_der(
            Algorithm::EcdsaP256Sha256,
            encoding::p256_spki_from_xy(&x, &y)?,
        ))
    }
}

/// Checks that the index was made under the SRK the TPM holds now.
fn check_pin(index: &Index, data: &IndexData, srk: &Persisted) -> Result<()> {
    if data.storage_key_name == srk.name {
        return Ok(());
    }
    Err(Error::Corrupt {
        location: format!("TPM persistent handle {:#010x}", handles::STORAGE_KEY),
        reason: format!(
            "the storage key differs from the one {} was made with: the TPM was cleared or \
             replaced, so its keys and sealed secrets are gone; move the index away to start \
             afresh",
            index.path().display()
        ),
    })
}

impl KeyStore for TpmKeyStore {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            backend: BACKEND,
            description: self.description.clone(),
            hardware_backed: true,
            class: CapabilityClass::Enhanced,
        }
    }

    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey> {
        let data = self.load_index()?;
        let entry = data.entry(label)?;
        self.with_tpm(|tpm| self.read_key(tpm, label, entry))
    }

    fn sign(&self, label: &KeyLabel, message: &[u8]) -> Result<Signature> {
        let data = self.load_index()?;
        let entry = data.entry(label)?;
        let digest = Sha256::digest(message);
        let (r, s) = self.with_tpm(|tpm| {
            let key = self.key_object(tpm, label, entry)?;
            tpm.sign(&key, &digest, label.as_str())
        })?;
        Ok(Signature(encoding::ecdsa_p256_der_from_rs(&r, &s)?))
    }

    fn seal(&self, secret: &[u8]) -> Result<SealedSecret> {
        if secret.len() > SealedSecret::MAX_PLAINTEXT {
            return Err(Error::InvalidInput {
                what: "secret to seal",
                reason: format!(
                    "{} bytes is more than the {} a TPM sealed object holds",
                    secret.len(),
                    SealedSecret::MAX_PLAINTEXT
                ),
            });
        }
        if secret.is_empty() {
            // A sealed data object must carry data: with none, TPM2_Create
            // would be asked to generate it and fails with TPM_RC_ATTRIBUTES.
            return Err(Error::InvalidInput {
                what: "secret to seal",
                reason: "it is empty; a TPM sealed object needs at least one byte".to_owned(),
            });
        }
        let created = self.with_tpm(|tpm| {
            let srk = self.storage_key(tpm)?;
            tpm.seal(&srk, secret)
        })?;
        Ok(SealedSecret(tpm::encode_sealed(created)?))
    }

    fn unseal(&self, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
        let (public, private) = tpm::decode_sealed(&sealed.0)?;
        self.with_tpm(|tpm| {
            let srk = self.storage_key(tpm)?;
            tpm.unseal(&srk, public, private)
        })
    }
}

impl KeyAdmin for TpmKeyStore {
    fn generate(&self, label: &KeyLabel, algorithm: Algorithm) -> Result<PublicKey> {
        if algorithm != Algorithm::EcdsaP256Sha256 {
            return Err(Error::UnsupportedAlgorithm {
                backend: BACKEND,
                algorithm: algorithm.to_string(),
            });
        }
        let _lock = self.index.lock()?;
        let mut data = self.load_index()?;
        if data.keys.contains_key(label) {
            return Err(Error::KeyExists {
                backend: BACKEND,
                label: label.to_string(),
            });
        }
        self.with_tpm(|tpm| {
            let srk = self.storage_key(tpm)?;
            let used = tpm.used_key_handles()?;
            let handle = handles::KEYS
                .clone()
                .find(|h| !used.contains(h) && !data.keys.values().any(|e| e.handle.get() == *h))
                .ok_or_else(|| Error::Backend {
                    backend: BACKEND,
                    operation: "generate",
                    detail: "every persistent handle in the key range is taken".to_owned(),
                })?;
            let handle_value = KeyHandleValue::new(handle).map_err(|detail| Error::Backend {
                backend: BACKEND,
                operation: "generate",
                detail,
            })?;
            let created = tpm.create_signing_key(&srk, label.as_str())?;
            let (x, y) =
                tpm::signing_key_point(&created.public).map_err(|detail| Error::Backend {
                    backend: BACKEND,
                    operation: "generate",
                    detail: format!("the TPM created an unexpected key for {label:?}: {detail}"),
                })?;
            let public_key = PublicKey::from_spki_der(
                Algorithm::EcdsaP256Sha256,
                encoding::p256_spki_from_xy(&x, &y)?,
            );
            let object = tpm.load_and_persist(&srk, created, handle, label.as_str())?;
            data.keys.insert(
                label.clone(),
                Entry {
                    handle: handle_value,
                    algorithm,
                    name: object.name.clone(),
                },
            );
            if let Err(e) = self.index.store(&data) {
                // All or nothing: a key the index does not know is lost.
                if let Err(undo) = tpm.evict(&object, label.as_str()) {
                    tracing::error!(
                        label = %label,
                        handle = %format!("{handle:#010x}"),
                        error = %undo,
                        "could not evict a key after failing to record it"
                    );
                }
                return Err(e);
            }
            tracing::info!(label = %label, handle = %format!("{handle:#010x}"), "generated TPM key");
            Ok(public_key)
        })
    }

    fn delete(&self, label: &KeyLabel) -> Result<()> {
        let _lock = self.index.lock()?;
        let mut data = self.load_index()?;
        let entry = data.entry(label)?.clone();
        let handle = entry.handle.get();
        self.with_tpm(|tpm| match tpm.persisted(handle)? {
            None => {
                tracing::warn!(label = %label, handle = %format!("{handle:#010x}"),
                    "key already gone from the TPM; dropping its index entry");
                Ok(())
            }
            Some(object) if object.name != entry.name => {
                tracing::warn!(label = %label, handle = %format!("{handle:#010x}"),
                    "handle holds another object; leaving it alone and dropping the entry");
                Ok(())
            }
            Some(object) => tpm.evict(&object, label.as_str()),
        })?;
        data.keys.remove(label);
        self.index.store(&data)
    }

    fn list(&self) -> Result<Vec<KeyInfo>> {
        let data = self.load_index()?;
        if data.keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_tpm(|tpm| {
            data.keys
                .iter()
                .map(|(label, entry)| {
                    Ok(KeyInfo {
                        label: label.clone(),
                        public_key: self.read_key(tpm, label, entry)?,
                    })
                })
                .collect()
        })
    }
}
