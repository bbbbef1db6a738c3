//! Software keystore: private keys encrypted at rest under a key-encryption
//! key (KEK), for devices without a secure element and for development.
//!
//! [`SoftKeyStore`] keeps one file per key under `<dir>/keys/`, each an
//! AES-256-GCM envelope of the key's PKCS#8 document. The KEK protecting
//! them is chosen by [`KekProtection`]:
//!
//! - [`KekProtection::File`]: 32 random bytes in a 0600 file. Anyone who
//!   can read the state directory as root holds every key, so the store
//!   reports itself as "software, class 1 only".
//! - [`KekProtection::SealedBy`]: the KEK is sealed by another keystore
//!   (a TPM) and unsealed into memory at open: a copied state directory is
//!   useless on any other machine.
//!
//! ```
//! use keys::{Algorithm, KeyAdmin, KeyStore};
//! let dir = tempfile::tempdir().unwrap();
//! let store = keys_soft::SoftKeyStore::open(&dir.path().join("keys"), keys_soft::KekProtection::File)
//!     .unwrap();
//! let label = "device".parse().unwrap();
//! store.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
//! let signature = store.sign(&label, b"hello").unwrap();
//! assert!(!signature.0.is_empty());
//! ```
//!
//! Design decisions:
//! - aws-lc-rs for all primitives: it is the provider rustls uses here, so
//!   one crypto library is audited, and its P-256 code is as fast as
//!   OpenSSL's (see docs/performance.md).
//! - Each envelope binds the format version, algorithm and label as
//!   associated data, so renaming or swapping key files is detected.
//! - Separate keys derived from the KEK (HKDF-SHA256) for key files and for
//!   sealed secrets: a sealed blob can never be passed off as a key file.
//! - Decrypted keys are cached in memory for signing speed; PKCS#8 bytes
//!   are zeroized after parsing, and aws-lc clears key memory on free.

mod envelope;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use keys::fsio::{check_private, ensure_private_dir, write_atomic};
use keys::{
    Algorithm, BackendInfo, CapabilityClass, Error, KeyAdmin, KeyInfo, KeyLabel, KeyStore,
    PublicKey, Result, SealedSecret, Signature, encoding,
};
use zeroize::Zeroizing;

use envelope::{Envelope, Purpose};

const BACKEND: &str = "software";
const KEK_FILE: &str = "kek";
const SEALED_KEK_FILE: &str = "kek.sealed";
const KEY_SUFFIX: &str = ".key";

/// How the key-encryption key is protected.
#[derive(Debug, Clone)]
pub enum KekProtection {
    /// A 0600 file next to the keys: class 1 only.
    File,
    /// Sealed by another keystore, normally the TPM.
    SealedBy(Arc<dyn KeyStore>),
}

/// A keystore whose private keys live encrypted in files.
pub struct SoftKeyStore {
    dir: PathBuf,
    envelope: Envelope,
    sealed_kek: bool,
    rng: SystemRandom,
    loaded: Mutex<HashMap<KeyLabel, Arc<LoadedKey>>>,
}

enum LoadedKey {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl LoadedKey {
    fn parse(algorithm: Algorithm, pkcs8: &[u8], location: &Path) -> Result<Self> {
        let corrupt = |e: &dyn fmt::Display| Error::Corrupt {
            location: location.display().to_string(),
            reason: format!("stored {algorithm} key does not parse: {e}"),
        };
        Ok(match algorithm {
            Algorithm::EcdsaP256Sha256 => Self::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
                    .map_err(|e| corrupt(&e))?,
            ),
            Algorithm::Ed25519 => {
                Self::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| corrupt(&e))?)
            }
            other => return Err(unsupported(other)),
        })
    }

    fn public_key(&self) -> Result<PublicKey> {
        Ok(match self {
            Self::Ecdsa(k) => PublicKey::from_spki_der(
                Algorithm::EcdsaP256Sha256,
                encoding::p256_spki_from_point(k.public_key().as_ref())?,
            ),
            Self::Ed25519(k) => PublicKey::from_spki_der(
                Algorithm::Ed25519,
                encoding::ed25519_spki_from_raw(k.public_key().as_ref())?,
            ),
        })
    }
}

fn unsupported(algorithm: Algorithm) -> Error {
    Error::UnsupportedAlgorithm {
        backend: BACKEND,
        algorithm: algorithm.to_string(),
    }
}

impl SoftKeyStore {
    /// Opens (creating if needed) the keystore in `dir`.
    ///
    /// The first open creates the KEK as `protection` says; later opens
    /// must use the same protection, so a TPM-sealed store is never
    /// silently downgraded to a plain file.
    pub fn open(dir: &Path, protection: KekProtection) -> Result<Self> {
        ensure_private_dir(dir)?;
        ensure_private_dir(&dir.join("keys"))?;
        let plain = dir.join(KEK_FILE);
        let sealed = dir.join(SEALED_KEK_FILE);
        let (kek, sealed_kek) = match protection {
            KekProtection::File => {
                if sealed.exists() {
                    return Err(Error::InvalidInput {
                        what: "key-encryption key protection",
                        reason: format!(
                            "{} is sealed by a TPM; open this keystore with the TPM configured",
                            sealed.display()
                        ),
                    });
                }
                (load_or_create_plain_kek(&plain)?, false)
            }
            KekProtection::SealedBy(sealer) => {
                if plain.exists() {
                    return Err(Error::InvalidInput {
                        what: "key-encryption key protection",
                        reason: format!(
                            "{} holds an unsealed KEK; this keystore was created without a TPM",
                            plain.display()
                        ),
                    });
                }
                (load_or_create_sealed_kek(&sealed, sealer.as_ref())?, true)
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            envelope: Envelope::new(&kek)?,
            sealed_kek,
            rng: SystemRandom::new(),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    fn key_path(&self, label: &KeyLabel) -> PathBuf {
        self.dir
            .join("keys")
            .join(format!("{}{KEY_SUFFIX}", label.as_str()))
    }

    fn load(&self, label: &KeyLabel) -> Result<Arc<LoadedKey>> {
        if let Some(key) = self.cache().get(label) {
            return Ok(key.clone());
        }
        let path = self.key_path(label);
        let blob = match fs::read(&path) {
            Ok(blob) => blob,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::KeyNotFound {
                    backend: BACKEND,
                    label: label.to_string(),
                });
            }
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        check_private(&path)?;
        let (algorithm, pkcs8) =
            self.envelope
                .open_key(label, &blob)
                .map_err(|reason| Error::Corrupt {
                    location: path.display().to_string(),
                    reason,
                })?;
        let key = Arc::new(LoadedKey::parse(algorithm, &pkcs8, &path)?);
        self.cache().insert(label.clone(), key.clone());
        Ok(key)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<KeyLabel, Arc<LoadedKey>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (inserts and removes are single calls), so poisoning is ignored.
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn load_or_create_plain_kek(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    if path.exists() {
        check_private(path)?;
        let kek = Zeroizing::new(fs::read(path).map_err(|e| Error::io("reading", path, e))?);
        if kek.len() != 32 {
            return Err(Error::Corrupt {
                location: path.display().to_string(),
                reason: format!("key-encryption key is {} bytes, expected 32", kek.len()),
            });
        }
        return Ok(kek);
    }
    let kek = random_kek()?;
    write_atomic(path, &kek, 0o600)?;
    Ok(kek)
}

fn load_or_create_sealed_kek(path: &Path, sealer: &dyn KeyStore) -> Result<Zeroizing<Vec<u8>>> {
    if path.exists() {
        let blob = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        let kek = sealer.unseal(&SealedSecret(blob))?;
        if kek.len() != 32 {
            return Err(Error::Corrupt {
                location: path.display().to_string(),
                reason: "unsealed key-encryption key is not 32 bytes".into(),
            });
        }
        return Ok(kek);
    }
    let kek = random_kek()?;
    let sealed = sealer.seal(&kek)?;
    write_atomic(path, &sealed.0, 0o600)?;
    Ok(kek)
}

fn random_kek() -> Result<Zeroizing<Vec<u8>>> {
    let mut kek = Zeroizing::new(vec![0u8; 32]);
    SystemRandom::new()
        .fill(&mut kek)
        .map_err(|_| backend_error("generating the key-encryption key", "no randomness"))?;
    Ok(kek)
}

fn backend_error(operation: &'static str, detail: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        detail: detail.into(),
    }
}

impl fmt::Debug for SoftKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftKeyStore")
            .field("dir", &self.dir)
            .field("sealed_kek", &self.sealed_kek)
            .finish_non_exhaustive()
    }
}

impl KeyStore for SoftKeyStore {
    fn info(&self) -> BackendInfo {
        if self.sealed_kek {
            BackendInfo {
                backend: BACKEND,
                description: "software keys under a TPM-sealed key-encryption key".into(),
                hardware_backed: true,
                class: CapabilityClass::Enhanced,
            }
        } else {
            BackendInfo {
                backend: BACKEND,
                description: "software, class 1 only (key-encryption key in a 0600 file)".into(),
                hardware_backed: false,
                class: CapabilityClass::Basic,
            }
        }
    }

    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey> {
        self.load(label)?.public_key()
    }

    fn sign(&self, label: &KeyLabel, message: &[u8]) -> Result<Signature> {
        let key = self.load(label)?;
        Ok(Signature(match key.as_ref() {
            LoadedKey::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map_err(|_| backend_error("sign", format!("ECDSA signing with {label} failed")))?
                .as_ref()
                .to_vec(),
            LoadedKey::Ed25519(k) => k.sign(message).as_ref().to_vec(),
        }))
    }

    fn seal(&self, secret: &[u8]) -> Result<SealedSecret> {
        if secret.len() > SealedSecret::MAX_PLAINTEXT {
            return Err(Error::InvalidInput {
                what: "secret to seal",
                reason: format!(
                    "{} bytes is more than the {} a keystore seals",
                    secret.len(),
                    SealedSecret::MAX_PLAINTEXT
                ),
            });
        }
        Ok(SealedSecret(self.envelope.seal(
            Purpose::Sealed,
            &[],
            secret,
        )?))
    }

    fn unseal(&self, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>> {
        self.envelope
            .open(Purpose::Sealed, &[], &sealed.0)
            .map_err(|reason| Error::UnsealFailed {
                backend: BACKEND,
                reason,
            })
    }
}

impl KeyAdmin for SoftKeyStore {
    fn generate(&self, label: &KeyLabel, algorithm: Algorithm) -> Result<PublicKey> {
        let path = self.key_path(label);
        if path.exists() {
            return Err(Error::KeyExists {
                backend: BACKEND,
                label: label.to_string(),
            });
        }
        let pkcs8 = Zeroizing::new(match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.rng)
                    .map_err(|_| backend_error("generate", "ECDSA P-256 key generation failed"))?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&self.rng)
                .map_err(|_| backend_error("generate", "Ed25519 key generation failed"))?
                .as_ref()
                .to_vec(),
            other => return Err(unsupported(other)),
        });
        let key = LoadedKey::parse(algorithm, &pkcs8, &path)?;
        let public = key.public_key()?;
        let blob = self.envelope.seal_key(label, algorithm, &pkcs8)?;
        write_atomic(&path, &blob, 0o600)?;
        self.cache().insert(label.clone(), Arc::new(key));
        Ok(public)
    }

    fn delete(&self, label: &KeyLabel) -> Result<()> {
        let path = self.key_path(label);
        self.cache().remove(label);
        match fs::remove_file(&path) {
            Ok(()) => keys::fsio::sync_dir(&self.dir.join("keys")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::KeyNotFound {
                backend: BACKEND,
                label: label.to_string(),
            }),
            Err(e) => Err(Error::io("removing", &path, e)),
        }
    }

    fn list(&self) -> Result<Vec<KeyInfo>> {
        let dir = self.dir.join("keys");
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(KEY_SUFFIX) else {
                continue;
            };
            let Ok(label) = stem.parse::<KeyLabel>() else {
                continue;
            };
            let public_key = self.public_key(&label)?;
            keys.push(KeyInfo { label, public_key });
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }
}
