//! Lets rcgen sign certificates with a key held in any keystore.

use keys::{Algorithm, KeyRef};
use rcgen::{PublicKeyData, SignatureAlgorithm, SigningKey};

/// A [`KeyRef`] seen through rcgen's signing traits.
#[derive(Debug, Clone)]
pub struct RcgenKey(pub KeyRef);

/// The rcgen algorithm matching a keystore algorithm.
pub fn rcgen_algorithm(algorithm: Algorithm) -> &'static SignatureAlgorithm {
    match algorithm {
        Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    }
}

impl PublicKeyData for RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        rcgen_algorithm(self.0.public_key().algorithm())
    }
}

impl SigningKey for RcgenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map(|s| s.0).map_err(|e| {
            tracing::warn!(key = %self.0.label(), error = %e, "certificate signing failed");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A public key alone, for certificates issued over a key the CA never
/// holds (the device's).
#[derive(Debug, Clone)]
pub struct SubjectKey(pub keys::PublicKey);

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.raw()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        rcgen_algorithm(self.0.algorithm())
    }
}
