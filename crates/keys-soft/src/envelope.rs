//! The AES-256-GCM envelope format of key files and sealed secrets.
//!
//! Layout: `magic (4) | version (1) | algorithm (1) | nonce (12) |
//! ciphertext || tag (16)`. The first six bytes and the key label are the
//! associated data, so any change to the header, label or body fails
//! authentication.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keys::{Algorithm, Error, KeyLabel, Result};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 6;
const TAG_LEN: usize = 16;

/// Which kind of blob: each has its own derived key and magic.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    KeyFile,
    Sealed,
}

impl Purpose {
    fn magic(self) -> &'static [u8; 4] {
        match self {
            Self::KeyFile => b"BWSK",
            Self::Sealed => b"BWSS",
        }
    }

    fn info(self) -> &'static [u8] {
        match self {
            Self::KeyFile => b"bulwark soft keystore v1: key files",
            Self::Sealed => b"bulwark soft keystore v1: sealed secrets",
        }
    }
}

pub(crate) struct Envelope {
    key_files: LessSafeKey,
    sealed: LessSafeKey,
    rng: SystemRandom,
}

fn derive(kek: &[u8], purpose: Purpose) -> Result<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"bulwark-soft-keystore").extract(kek);
    let info = [purpose.info()];
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| Error::Backend {
            backend: "software",
            operation: "deriving envelope keys",
            detail: "HKDF expand failed".into(),
        })?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn algorithm_code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => 1,
        Algorithm::Ed25519 => 2,
        _ => 0,
    }
}

fn algorithm_from_code(code: u8) -> Option<Algorithm> {
    match code {
        1 => Some(Algorithm::EcdsaP256Sha256),
        2 => Some(Algorithm::Ed25519),
        _ => None,
    }
}

impl Envelope {
    pub(crate) fn new(kek: &[u8]) -> Result<Self> {
        Ok(Self {
            key_files: derive(kek, Purpose::KeyFile)?,
            sealed: derive(kek, Purpose::Sealed)?,
            rng: SystemRandom::new(),
        })
    }

    fn key(&self, purpose: Purpose) -> &LessSafeKey {
        match purpose {
            Purpose::KeyFile => &self.key_files,
            Purpose::Sealed => &self.sealed,
        }
    }

    pub(crate) fn seal_key(
        &self,
        label: &KeyLabel,
        algorithm: Algorithm,
        pkcs8: &[u8],
    ) -> Result<Vec<u8>> {
        self.seal_with(
            Purpose::KeyFile,
            algorithm_code(algorithm),
            label.as_str().as_bytes(),
            pkcs8,
        )
    }

    pub(crate) fn open_key(
        &self,
        label: &KeyLabel,
        blob: &[u8],
    ) -> std::result::Result<(Algorithm, Zeroizing<Vec<u8>>), String> {
        let code = *blob
            .get(5)
            .ok_or("file is too short to be a key envelope")?;
        let algorithm =
            algorithm_from_code(code).ok_or_else(|| format!("unknown algorithm code {code}"))?;
        let pkcs8 = self.open(Purpose::KeyFile, label.as_str().as_bytes(), blob)?;
        Ok((algorithm, pkcs8))
    }

    pub(crate) fn seal(&self, purpose: Purpose, context: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        self.seal_with(purpose, 0, context, plain)
    }

    fn seal_with(
        &self,
        purpose: Purpose,
        code: u8,
        context: &[u8],
        plain: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(purpose.magic());
        out.push(VERSION);
        out.push(code);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Error::Backend {
            backend: "software",
            operation: "sealing",
            detail: "no randomness for the nonce".into(),
        })?;
        out.extend_from_slice(&nonce);
        let aad = [&out[..HEADER_LEN], context].concat();
        let mut body = plain.to_vec();
        self.key(purpose)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Error::Backend {
                backend: "software",
                operation: "sealing",
                detail: "AES-GCM encryption failed".into(),
            })?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub(crate) fn open(
        &self,
        purpose: Purpose,
        context: &[u8],
        blob: &[u8],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
        if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(format!("{} bytes is too short for an envelope", blob.len()));
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        if &header[..4] != purpose.magic() {
            return Err("not a Bulwark envelope of this kind (bad magic)".into());
        }
        if header[4] != VERSION {
            return Err(format!("unsupported envelope version {}", header[4]));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce length")?;
        let aad = [header, context].concat();
        let mut body = Zeroizing::new(body.to_vec());
        let plain_len = self
            .key(purpose)
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| "authentication failed: modified, or made with another key".to_owned())?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}
