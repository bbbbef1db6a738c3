//! AES-256-GCM sealing with the record's place bound as associated data,
//! and keyed hashes (BLAKE3 in keyed mode, a PRF) that hide record names.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Format version bound into every record's associated data.
pub(crate) const FORMAT: u8 = 1;
const TAG_LEN: usize = 16;

/// A 256-bit key with its two derived uses: sealing and naming.
pub(crate) struct DataKey {
    aead: LessSafeKey,
    names: blake3::Hasher,
}

impl DataKey {
    pub(crate) fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() != 32 {
            return Err(Error::InvalidInput {
                what: "data key",
                reason: format!("{} bytes, expected 32", secret.len()),
            });
        }
        let prk = Salt::new(HKDF_SHA256, b"bulwark-store").extract(secret);
        let expand = |info: &'static [u8]| -> Result<Zeroizing<[u8; 32]>> {
            let mut out = Zeroizing::new([0u8; 32]);
            prk.expand(&[info], &AES_256_GCM)
                .and_then(|okm| okm.fill(out.as_mut()))
                .map_err(|_| Error::InvalidInput {
                    what: "data key",
                    reason: "key derivation failed".into(),
                })?;
            Ok(out)
        };
        let seal = expand(b"seal v1")?;
        let name = expand(b"names v2 (blake3)")?;
        Ok(Self {
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, seal.as_ref()).map_err(|_| {
                Error::InvalidInput {
                    what: "data key",
                    reason: "AES key rejected".into(),
                }
            })?),
            names: blake3::Hasher::new_keyed(&name),
        })
    }

    /// A fresh random key's bytes.
    pub(crate) fn random_secret() -> Result<Zeroizing<Vec<u8>>> {
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| Error::InvalidInput {
                what: "random source",
                reason: "the system random generator failed".into(),
            })?;
        Ok(secret)
    }

    /// The on-disk name of a record: a keyed hash, so names (which may
    /// identify a user) never reach the file in clear.
    pub(crate) fn name(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = self.names.clone();
        for part in parts {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// `nonce || ciphertext || tag`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Error::InvalidInput {
                what: "random source",
                reason: "no nonce".into(),
            })?;
        let mut body = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Error::InvalidInput {
                what: "record",
                reason: "encryption failed".into(),
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`DataKey::seal`] made; `Err(reason)` if it does not
    /// authenticate.
    pub(crate) fn open(
        &self,
        aad: &[u8],
        sealed: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(format!("{} bytes is too short", sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut body = Zeroizing::new(body.to_vec());
        let len = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| "authentication failed (modified, moved, or another key)".to_owned())?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// Associated data: format version, table, record name.
pub(crate) fn aad(table: &str, name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 1 + table.len() + name.len());
    out.push(FORMAT);
    out.push(table.len() as u8);
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(name);
    out
}
