//! Key custody: the traits every Bulwark keystore backend implements.
//!
//! A device's identity rests on private keys that must never leave the
//! place that holds them (clause 5.2.5.1.2 names SSPs among the data to
//! protect; 5.2.5.3 points at a hardware root of trust). This crate says
//! what a keystore can do without saying how:
//!
//! - [`KeyStore`] holds the *runtime* operations a daemon needs: read a
//!   public key, sign, seal and unseal a small secret.
//! - [`KeyAdmin`] holds the *administrative* ones a provisioning station
//!   needs: generate, delete, list. Keeping them apart lets a running agent
//!   hold a store that cannot create or destroy keys.
//!
//! Backends live in their own crates (`keys-soft`, `keys-tpm`,
//! `keys-pkcs11`); only those touch private key material. Everything above
//! them (certificates, TLS, storage) works through `Arc<dyn KeyStore>`.
//!
//! ```
//! use keys::{Algorithm, KeyLabel};
//! let label: KeyLabel = "device-identity".parse().unwrap();
//! assert_eq!(label.as_str(), "device-identity");
//! assert_eq!("ecdsa-p256".parse::<Algorithm>().unwrap(), Algorithm::EcdsaP256Sha256);
//! ```
//!
//! Design decisions:
//! - Signatures are produced over the *message*, not a digest: each backend
//!   hashes where it must (PKCS#11 tokens such as SoftHSM2 reject combined
//!   hash-and-sign ECDSA, so that backend hashes in software).
//! - ECDSA signatures are returned DER-encoded (X9.62), the form X.509 and
//!   TLS carry, so callers never re-encode; [`encoding`] converts the raw
//!   `r || s` form that TPMs and tokens produce.
//! - The blocking trait is deliberate: hardware calls block, and async
//!   callers use `spawn_blocking`.

pub mod encoding;
mod error;
pub mod fsio;
mod types;

use std::fmt::Debug;
use std::sync::Arc;

pub use error::{Error, Result};
pub use types::{
    Algorithm, BackendInfo, CapabilityClass, KeyInfo, KeyLabel, PublicKey, SealedSecret, Signature,
};

/// Runtime key operations: what a running device needs from its keystore.
///
/// Implementations must be safe to share between threads; a backend that
/// talks to a single-threaded device (a TPM) serialises internally.
pub trait KeyStore: Debug + Send + Sync {
    /// What this keystore is and which capability class it can support.
    fn info(&self) -> BackendInfo;

    /// The public half of the key stored under `label`.
    fn public_key(&self, label: &KeyLabel) -> Result<PublicKey>;

    /// Signs `message` with the key under `label`, hashing as the key's
    /// algorithm requires (SHA-256 for ECDSA P-256).
    fn sign(&self, label: &KeyLabel, message: &[u8]) -> Result<Signature>;

    /// Seals a small secret (at most [`SealedSecret::MAX_PLAINTEXT`] bytes)
    /// so that only this keystore can unseal it.
    fn seal(&self, secret: &[u8]) -> Result<SealedSecret>;

    /// Recovers a secret sealed by this keystore; fails if the blob was
    /// modified or sealed elsewhere.
    fn unseal(&self, sealed: &SealedSecret) -> Result<zeroize::Zeroizing<Vec<u8>>>;
}

/// Administrative key operations: provisioning and decommissioning.
pub trait KeyAdmin: KeyStore {
    /// Creates a new key under `label` inside the keystore and returns its
    /// public half. Refuses to overwrite an existing key.
    fn generate(&self, label: &KeyLabel, algorithm: Algorithm) -> Result<PublicKey>;

    /// Destroys the key under `label`.
    fn delete(&self, label: &KeyLabel) -> Result<()>;

    /// Every key this keystore holds for Bulwark.
    fn list(&self) -> Result<Vec<KeyInfo>>;
}

/// A reference to one key in one keystore: what certificate and TLS
/// adapters hold instead of key bytes.
#[derive(Debug, Clone)]
pub struct KeyRef {
    store: Arc<dyn KeyStore>,
    label: KeyLabel,
    public: PublicKey,
}

impl KeyRef {
    /// Binds `label` in `store`, reading its public key once so that later
    /// uses need no round trip to the backend.
    pub fn new(store: Arc<dyn KeyStore>, label: KeyLabel) -> Result<Self> {
        let public = store.public_key(&label)?;
        Ok(Self {
            store,
            label,
            public,
        })
    }

    /// The key's label in its store.
    pub fn label(&self) -> &KeyLabel {
        &self.label
    }

    /// The key's public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The store that holds the key.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// Signs `message` with this key.
    pub fn sign(&self, message: &[u8]) -> Result<Signature> {
        self.store.sign(&self.label, message)
    }
}
