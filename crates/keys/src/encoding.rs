//! Conversions between the raw forms hardware produces and the DER forms
//! X.509 and TLS carry. Fixed-layout DER for two key types does not
//! warrant an ASN.1 dependency in the bottom crate of the tree.

use crate::{Error, Result};

/// DER prefix of a P-256 `SubjectPublicKeyInfo` (id-ecPublicKey, prime256v1)
/// before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410) before the
/// 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Builds a P-256 SPKI from an uncompressed SEC1 point (`04 || x || y`).
pub fn p256_spki_from_point(point: &[u8]) -> Result<Vec<u8>> {
    if point.len() != 65 || point.first() != Some(&0x04) {
        return Err(Error::InvalidInput {
            what: "P-256 public point",
            reason: format!("expected 65 bytes starting 0x04, got {} bytes", point.len()),
        });
    }
    Ok([&P256_SPKI_PREFIX[..], point].concat())
}

/// Builds a P-256 SPKI from the affine coordinates, left-padding each to 32
/// bytes (TPMs strip leading zeros).
pub fn p256_spki_from_xy(x: &[u8], y: &[u8]) -> Result<Vec<u8>> {
    let mut point = vec![0x04];
    point.extend(left_pad32(x, "P-256 x coordinate")?);
    point.extend(left_pad32(y, "P-256 y coordinate")?);
    p256_spki_from_point(&point)
}

/// Builds an Ed25519 SPKI from the 32 raw key bytes.
pub fn ed25519_spki_from_raw(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.len() != 32 {
        return Err(Error::InvalidInput {
            what: "Ed25519 public key",
            reason: format!("expected 32 bytes, got {}", raw.len()),
        });
    }
    Ok([&ED25519_SPKI_PREFIX[..], raw].concat())
}

/// Encodes a raw ECDSA P-256 signature (`r || s`, 32 bytes each, or the two
/// halves given separately with leading zeros stripped) as DER.
pub fn ecdsa_p256_der_from_rs(r: &[u8], s: &[u8]) -> Result<Vec<u8>> {
    let r = der_integer(&left_pad32(r, "ECDSA r")?);
    let s = der_integer(&left_pad32(s, "ECDSA s")?);
    let body_len = r.len() + s.len();
    // Invariant: two INTEGERs of at most 35 bytes each fit a short length.
    let mut out = Vec::with_capacity(body_len + 2);
    out.push(0x30);
    out.push(u8::try_from(body_len).unwrap_or(u8::MAX));
    out.extend(r);
    out.extend(s);
    Ok(out)
}

/// Encodes a 64-byte `r || s` ECDSA P-256 signature as DER.
pub fn ecdsa_p256_der_from_raw(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.len() != 64 {
        return Err(Error::InvalidInput {
            what: "raw ECDSA P-256 signature",
            reason: format!("expected 64 bytes, got {}", raw.len()),
        });
    }
    let (r, s) = raw.split_at(32);
    ecdsa_p256_der_from_rs(r, s)
}

fn left_pad32(bytes: &[u8], what: &'static str) -> Result<[u8; 32]> {
    let trimmed = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    if trimmed.len() > 32 {
        return Err(Error::InvalidInput {
            what,
            reason: format!("{} bytes is longer than 32", bytes.len()),
        });
    }
    let mut out = [0u8; 32];
    out[32 - trimmed.len()..].copy_from_slice(trimmed);
    Ok(out)
}

/// DER INTEGER of an unsigned big-endian value of at most 32 bytes.
fn der_integer(value: &[u8; 32]) -> Vec<u8> {
    let start = value.iter().take_while(|b| **b == 0).count().min(31);
    let digits = &value[start..];
    let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    let mut out = Vec::with_capacity(len + 2);
    out.push(0x02);
    out.push(len as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_signature_pads_high_bit_and_strips_zeros() {
        let mut r = [0u8; 32];
        r[0] = 0x80;
        let mut s = [0u8; 32];
        s[31] = 0x01;
        let der = ecdsa_p256_der_from_rs(&r, &s).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 2 + 1, 0x02, 33]);
        assert_eq!(der[4], 0);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
    }

    #[test]
    fn short_coordinates_are_left_padded() {
        let spki = p256_spki_from_xy(&[1u8; 31], &[2u8; 32]).unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(spki[26], 0x04);
        assert_eq!(spki[27], 0x00);
    }

    #[test]
    fn wrong_lengths_are_named() {
        let err = ed25519_spki_from_raw(&[0u8; 31]).unwrap_err();
        assert!(err.to_string().contains("Ed25519 public key"), "{err}");
        assert!(p256_spki_from_point(&[4u8; 64]).is_err());
        assert!(ecdsa_p256_der_from_raw(&[1u8; 63]).is_err());
    }
}
