//! tough's `KeySource` / `Sign` over a [`keys::KeyRef`]: metadata is signed
//! inside whichever keystore holds the key.

use std::collections::HashMap;

use aws_lc_rs::rand::SecureRandom;
use keys::{Algorithm, KeyRef};
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::{EcdsaKey, EcdsaScheme, Ed25519Key, Ed25519Scheme, Key};
use tough::sign::Sign;

use crate::{Error, Result};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A TUF signing key that lives in a keystore: tough's [`KeySource`] and
/// [`Sign`] over a [`KeyRef`].
///
/// The private key never leaves the keystore: `sign` calls
/// [`KeyRef::sign`] (on tokio's blocking pool, since hardware calls block),
/// and [`KeySource::write`] is refused.
#[derive(Debug, Clone)]
pub struct KeyRefSigner {
    key: KeyRef,
    tuf_key: Key,
}

impl KeyRefSigner {
    /// Wraps `key`; fails for an algorithm TUF metadata cannot carry.
    /// ECDSA P-256 (`ecdsa-sha2-nistp256`) and Ed25519 are supported.
    pub fn new(key: KeyRef) -> Result<Self> {
        let public = key.public_key();
        let raw = public.raw().to_vec();
        let tuf_key = match public.algorithm() {
            Algorithm::EcdsaP256Sha256 => Key::Ecdsa {
                keyval: EcdsaKey {
                    public: raw.into(),
                    _extra: HashMap::new(),
                },
                scheme: EcdsaScheme::EcdsaSha2Nistp256,
                _extra: HashMap::new(),
            },
            Algorithm::Ed25519 => Key::Ed25519 {
                keyval: Ed25519Key {
                    public: raw.into(),
                    _extra: HashMap::new(),
                },
                scheme: Ed25519Scheme::Ed25519,
                _extra: HashMap::new(),
            },
            other => {
                return Err(Error::UnsupportedKey {
                    label: key.label().to_string(),
                    algorithm: other.to_string(),
                });
            }
        };
        Ok(Self { key, tuf_key })
    }

    /// The key as TUF metadata lists it.
    pub fn tuf_key(&self) -> &Key {
        &self.tuf_key
    }

    /// The TUF key ID: SHA-256 over the canonical JSON of the key.
    pub fn key_id(&self) -> Result<Decoded<Hex>> {
        self.tuf_key.key_id().map_err(|e| Error::Publish {
            what: "key id",
            detail: e.to_string(),
        })
    }

    /// The wrapped key.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key
    }
}

#[tough::async_trait]
impl Sign for KeyRefSigner {
    fn tuf_key(&self) -> Key {
        self.tuf_key.clone()
    }

    async fn sign(
        &self,
        msg: &[u8],
        _rng: &(dyn SecureRandom + Sync),
    ) -> std::result::Result<Vec<u8>, BoxError> {
        // KeyRef::sign hashes as the algorithm requires and returns DER for
        // ECDSA, raw 64 bytes for Ed25519: the forms TUF verifiers expect.
        let key = self.key.clone();
        let msg = msg.to_vec();
        let signature = tokio::task::spawn_blocking(move || key.sign(&msg)).await??;
        Ok(signature.0)
    }
}

#[tough::async_trait]
impl KeySource for KeyRefSigner {
    async fn as_sign(&self) -> std::result::Result<Box<dyn Sign>, BoxError> {
        Ok(Box::new(self.clone()))
    }

    async fn write(&self, _value: &str, _key_id_hex: &str) -> std::result::Result<(), BoxError> {
        Err(format!(
            "key {} lives in a keystore and is never written out",
            self.key.label()
        )
        .into())
    }
}
