//! Sealed-secret blobs: the layout, and the software half of the hybrid
//! (AES-256-GCM under a random data key that the token's RSA key wraps).
//!
//! Layout, version 1 (all lengths in bytes, integers big-endian):
//!
//! ```text
//! magic "BWPS" (4) | version = 1 (1) | scheme (1)
//! | key-id length n (1) | sealing key CKA_ID (n)
//! | wrapped-key length m (2) | RSA-OAEP wrapped data key (m)
//! | nonce (12) | AES-256-GCM ciphertext || tag (16)
//! ```
//!
//! Scheme 1 wraps with RSA-OAEP over SHA-256 (MGF1-SHA-256), scheme 2 with
//! SHA-1 (MGF1-SHA-1) for tokens that have only that (SoftHSM 2.6 refuses
//! any other OAEP hash with `CKR_ARGUMENTS_BAD`). SHA-1 in OAEP needs
//! neither collision nor second-preimage resistance, and NIST SP 800-131A
//! still allows it for key transport; both are followed by AES-256-GCM.
//!
//! Everything before the ciphertext is the GCM associated data, so a change
//! to any byte of the header, the key id, the wrapped key or the nonce fails
//! authentication even where the token would not notice it. Parsing is
//! strict: every length is bounded and the blob must end exactly where the
//! layout says.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keys::{Error, Result, SealedSecret};
use zeroize::Zeroizing;

use crate::BACKEND;

const MAGIC: &[u8; 4] = b"BWPS";
const VERSION: u8 = 1;
/// The hash of the RSA-OAEP key transport (empty label, MGF1 with the
/// same hash); the blob's scheme byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OaepHash {
    Sha256 = 1,
    Sha1 = 2,
}

impl OaepHash {
    fn from_scheme(scheme: u8) -> Option<Self> {
        match scheme {
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha1),
            _ => None,
        }
    }
}
const TAG_LEN: usize = 16;
/// The data key's length (AES-256).
pub(crate) const DATA_KEY_LEN: usize = 32;
/// Bounds on the variable parts: ids we create are 16 bytes; RSA keys up
/// to 8192 bits.
const MAX_KEY_ID: usize = 64;
const MAX_WRAPPED: usize = 1024;

/// A blob taken apart; borrowed from the blob.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) hash: OaepHash,
    pub(crate) key_id: &'a [u8],
    pub(crate) wrapped: &'a [u8],
    header: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

fn rejected(reason: impl Into<String>) -> Error {
    Error::UnsealFailed {
        backend: BACKEND,
        reason: reason.into(),
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut out = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(&mut out[..])
        .map_err(|_| Error::Backend {
            backend: BACKEND,
            operation: "seal",
            detail: "the system random number generator failed".into(),
        })?;
    Ok(out)
}

/// A fresh random data key.
pub(crate) fn new_data_key() -> Result<Zeroizing<[u8; DATA_KEY_LEN]>> {
    random()
}

/// A fresh random `CKA_ID` for a new key pair.
pub(crate) fn new_key_id() -> Result<[u8; 16]> {
    random::<16>().map(|id| *id)
}

fn aead_key(data_key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, data_key)
        .map(LessSafeKey::new)
        .map_err(|_| rejected("the blob was modified or sealed by another token"))
}

/// Builds a blob: `key_id` names the sealing key, `wrapped` is the data
/// key as the token encrypted it with RSA-OAEP over `hash`.
pub(crate) fn seal(
    hash: OaepHash,
    key_id: &[u8],
    wrapped: &[u8],
    data_key: &[u8],
    plaintext: &[u8],
) -> Result<SealedSecret> {
    let too_long = |what: &str| Error::Backend {
        backend: BACKEND,
        operation: "seal",
        detail: format!("{what} is too long for the sealed-secret format"),
    };
    let id_len = u8::try_from(key_id.len())
        .ok()
        .filter(|n| (1..=MAX_KEY_ID).contains(&usize::from(*n)))
        .ok_or_else(|| too_long("the sealing key id"))?;
    let wrapped_len = u16::try_from(wrapped.len())
        .ok()
        .filter(|n| (1..=MAX_WRAPPED).contains(&usize::from(*n)))
        .ok_or_else(|| too_long("the wrapped data key"))?;
    let nonce = random::<NONCE_LEN>()?;
    let mut blob = Vec::with_capacity(
        MAGIC.len() + 5 + key_id.len() + wrapped.len() + NONCE_LEN + plaintext.len() + TAG_LEN,
    );
    blob.extend_from_slice(MAGIC);
    blob.push(VERSION);
    blob.push(hash as u8);
    blob.push(id_len);
    blob.extend_from_slice(key_id);
    blob.extend_from_slice(&wrapped_len.to_be_bytes());
    blob.extend_from_slice(wrapped);
    blob.extend_from_slice(&nonce[..]);
    let header_len = blob.len();
    let mut body = plaintext.to_vec();
    aead_key(data_key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(&blob[..header_len]),
            &mut body,
        )
        .map_err(|_| Error::Backend {
            backend: BACKEND,
            operation: "seal",
            detail: "AES-256-GCM encryption failed".into(),
        })?;
    blob.extend_from_slice(&body);
    Ok(SealedSecret(blob))
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(rejected(format!("the blob is truncated in its {what}")));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        self.take(1, what)
            .map(|b| b.first().copied().unwrap_or_default())
    }
}

/// Takes a blob apart without any cryptography.
pub(crate) fn parse(blob: &[u8]) -> Result<Parsed<'_>> {
    let mut r = Reader { rest: blob };
    if r.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(rejected("not a PKCS#11 sealed secret (bad magic)"));
    }
    let version = r.byte("version")?;
    if version != VERSION {
        return Err(rejected(format!(
            "format version {version} is not supported (expected {VERSION})"
        )));
    }
    let scheme = r.byte("scheme")?;
    let hash = OaepHash::from_scheme(scheme)
        .ok_or_else(|| rejected(format!("sealing scheme {scheme} is not supported")))?;
    let id_len = usize::from(r.byte("key id length")?);
    if !(1..=MAX_KEY_ID).contains(&id_len) {
        return Err(rejected(format!("key id length {id_len} is out of range")));
    }
    let key_id = r.take(id_len, "key id")?;
    let len_bytes = r.take(2, "wrapped key length")?;
    let wrapped_len = usize::from(u16::from_be_bytes([
        len_bytes.first().copied().unwrap_or_default(),
        len_bytes.get(1).copied().unwrap_or_default(),
    ]));
    if !(1..=MAX_WRAPPED).contains(&wrapped_len) {
        return Err(rejected(format!(
            "wrapped key length {wrapped_len} is out of range"
        )));
    }
    let wrapped = r.take(wrapped_len, "wrapped key")?;
    let nonce: [u8; NONCE_LEN] = r
        .take(NONCE_LEN, "nonce")?
        .try_into()
        .map_err(|_| rejected("the blob is truncated in its nonce"))?;
    let header = blob
        .get(..blob.len() - r.rest.len())
        .ok_or_else(|| rejected("the blob is malformed"))?;
    let ciphertext = r.rest;
    if ciphertext.len() < TAG_LEN {
        return Err(rejected("the blob is truncated in its ciphertext"));
    }
    if ciphertext.len() > SealedSecret::MAX_PLAINTEXT + TAG_LEN {
        return Err(rejected("the ciphertext is longer than any sealed secret"));
    }
    Ok(Parsed {
        hash,
        key_id,
        wrapped,
        header,
        nonce,
        ciphertext,
    })
}

/// Decrypts a parsed blob with the unwrapped data key. The failure reason
/// is the same whatever went wrong, so unseal is no oracle.
pub(crate) fn open(parsed: &Parsed<'_>, data_key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if data_key.len() != DATA_KEY_LEN {
        return Err(rejected("the blob was modified or sealed by another token"));
    }
    let mut body = Zeroizing::new(parsed.ciphertext.to_vec());
    let plaintext_len = aead_key(data_key)?
        .open_in_place(
            Nonce::assume_unique_for_key(parsed.nonce),
            Aad::from(parsed.header),
            &mut body,
        )
        .map_err(|_| rejected("the blob was modified or sealed by another token"))?
        .len();
    body.truncate(plaintext_len);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Zeroizing<[u8; 32]>, SealedSecret) {
        let key = new_data_key().unwrap();
        let blob = seal(
            OaepHash::Sha256,
            &[7u8; 16],
            &[9u8; 256],
            &key[..],
            b"secret bytes",
        )
        .unwrap();
        (key, blob)
    }

    #[test]
    fn round_trip_and_layout() {
        let (key, blob) = sample();
        assert_eq!(&blob.0[..6], b"BWPS\x01\x01");
        assert_eq!(blob.0.len(), 4 + 1 + 1 + 1 + 16 + 2 + 256 + 12 + 12 + 16);
        let parsed = parse(&blob.0).unwrap();
        assert_eq!(parsed.hash, OaepHash::Sha256);
        assert_eq!(parsed.key_id, &[7u8; 16]);
        assert_eq!(parsed.wrapped, &[9u8; 256][..]);
        assert_eq!(&open(&parsed, &key[..]).unwrap()[..], b"secret bytes");
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_rejected() {
        let (key, blob) = sample();
        for i in 0..blob.0.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = blob.0.clone();
                bad[i] ^= bit;
                // The wrapped key is only checked by the token; here the
                // GCM tag over the header catches it.
                let result = parse(&bad).and_then(|p| open(&p, &key[..]));
                assert!(result.is_err(), "flip {bit:#x} at byte {i} went unnoticed");
            }
        }
        for len in 0..blob.0.len() {
            let result = parse(&blob.0[..len]).and_then(|p| open(&p, &key[..]));
            assert!(result.is_err(), "truncation to {len} bytes went unnoticed");
        }
        let mut longer = blob.0.clone();
        longer.push(0);
        assert!(parse(&longer).and_then(|p| open(&p, &key[..])).is_err());
    }

    #[test]
    fn wrong_key_and_bad_lengths_fail_cleanly() {
        let (_, blob) = sample();
        let other = new_data_key().unwrap();
        let parsed = parse(&blob.0).unwrap();
        let err = open(&parsed, &other[..]).unwrap_err();
        assert!(matches!(err, Error::UnsealFailed { .. }), "{err:?}");
        assert!(open(&parsed, &[0u8; 31]).is_err());
        let sha1 = OaepHash::Sha1;
        assert!(seal(sha1, &[], &[1], &other[..], b"x").is_err());
        assert!(seal(sha1, &[1; 65], &[1], &other[..], b"x").is_err());
        assert!(seal(sha1, &[1], &[1; 1025], &other[..], b"x").is_err());
        let blob = seal(sha1, &[1], &[1], &other[..], b"x").unwrap();
        assert_eq!(blob.0[5], 2);
        assert_eq!(parse(&blob.0).unwrap().hash, OaepHash::Sha1);
        let mut unknown = blob.0.clone();
        unknown[5] = 3;
        assert!(
            parse(&unknown)
                .unwrap_err()
                .to_string()
                .contains("scheme 3")
        );
    }
}
