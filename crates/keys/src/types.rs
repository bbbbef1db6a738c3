use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A signature algorithm a key is created for. A key serves one algorithm
/// only, so a key can never be tricked into a second scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256: every backend supports it.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256Sha256,
    /// Ed25519 (RFC 8032): where the backend has it.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl Algorithm {
    /// The name used in configuration, on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsa-p256",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ecdsa-p256" => Ok(Self::EcdsaP256Sha256),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(Error::InvalidInput {
                what: "algorithm",
                reason: format!("{other:?} is not one of ecdsa-p256, ed25519"),
            }),
        }
    }
}

/// The name of a key inside a keystore.
///
/// Invariant: 1 to 64 characters from `[A-Za-z0-9._-]`, not starting with
/// `.` — safe as a file name, a PKCS#11 `CKA_LABEL` and a log field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyLabel(String);

impl KeyLabel {
    /// Longest label accepted.
    pub const MAX_LEN: usize = 64;

    /// The label as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyLabel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let reason = if s.is_empty() {
            Some("it is empty".to_owned())
        } else if s.len() > Self::MAX_LEN {
            Some(format!("it is longer than {} characters", Self::MAX_LEN))
        } else if s.starts_with('.') {
            Some("it starts with '.'".to_owned())
        } else {
            s.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .map(|c| format!("character {c:?} is not allowed (use A-Z a-z 0-9 . _ -)"))
        };
        match reason {
            Some(reason) => Err(Error::InvalidInput {
                what: "key label",
                reason,
            }),
            None => Ok(Self(s.to_owned())),
        }
    }
}

impl TryFrom<String> for KeyLabel {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<KeyLabel> for String {
    fn from(label: KeyLabel) -> Self {
        label.0
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public key as a DER-encoded X.509 `SubjectPublicKeyInfo`, the form
/// certificates, CSRs and verifiers all take.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    algorithm: Algorithm,
    #[serde(with = "hex::serde")]
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Wraps an already DER-encoded `SubjectPublicKeyInfo`.
    pub fn from_spki_der(algorithm: Algorithm, spki_der: Vec<u8>) -> Self {
        Self {
            algorithm,
            spki_der,
        }
    }

    /// The algorithm the key serves.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The raw key inside the SPKI: the uncompressed SEC1 point for P-256,
    /// the 32 key bytes for Ed25519.
    pub fn raw(&self) -> &[u8] {
        let len = match self.algorithm {
            Algorithm::EcdsaP256Sha256 => 65,
            Algorithm::Ed25519 => 32,
        };
        self.spki_der
            .get(self.spki_der.len().saturating_sub(len)..)
            .unwrap_or_default()
    }

    /// SHA-256 over the SPKI, hex: how keys are named in logs and labels.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.spki_der))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm)
            .field("sha256", &self.fingerprint())
            .finish()
    }
}

/// A signature: DER (X9.62) for ECDSA, 64 raw bytes for Ed25519.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(pub Vec<u8>);

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A secret sealed to one keystore: opaque bytes that only the keystore
/// that produced them can turn back into the secret. Safe to store in a
/// plain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret(pub Vec<u8>);

impl SealedSecret {
    /// Largest secret a backend must accept: enough for a 256-bit key plus
    /// metadata, small enough for a TPM sealed data object (128 bytes).
    pub const MAX_PLAINTEXT: usize = 128;
}

/// The capability class (see the requirements' tiering) a keystore can
/// support on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CapabilityClass {
    /// Class 1, basic: unique keys, but not hardware-backed.
    Basic = 1,
    /// Class 2, enhanced: keys protected by a hardware root of trust.
    Enhanced = 2,
}

/// What a keystore says about itself; shown by `bulwark identity show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Short backend name: `software`, `tpm2`, `pkcs11`.
    pub backend: &'static str,
    /// Human description, e.g. "software, class 1 only (KEK in a 0600 file)".
    pub description: String,
    /// Whether private keys are protected by hardware.
    pub hardware_backed: bool,
    /// The highest capability class the keystore supports.
    pub class: CapabilityClass,
}

/// One key as listed by [`crate::KeyAdmin::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's label.
    pub label: KeyLabel,
    /// Its public half (and so its algorithm).
    pub public_key: PublicKey,
}
