//! The few DER shapes PKCS#11 EC keys come in: `CKA_EC_PARAMS` (a curve
//! OID, or for Edwards curves possibly a PrintableString name) and
//! `CKA_EC_POINT` (a DER OCTET STRING around the point, though some tokens
//! return the bare point).

use cryptoki::object::KeyType;
use keys::Algorithm;

/// `CKA_EC_PARAMS` for P-256: OID 1.2.840.10045.3.1.7 (prime256v1).
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// `CKA_EC_PARAMS` for Ed25519: OID 1.3.101.112 (RFC 8410).
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// PKCS#11 3.0 also allows the curve name as a PrintableString.
const ED25519_NAME_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// The algorithm a key of this type and domain serves, if it is one of ours.
pub(crate) fn algorithm_of(key_type: KeyType, params: &[u8]) -> Option<Algorithm> {
    if key_type == KeyType::EC && params == P256_PARAMS {
        Some(Algorithm::EcdsaP256Sha256)
    } else if key_type == KeyType::EC_EDWARDS
        && (params == ED25519_PARAMS || params == ED25519_NAME_PARAMS)
    {
        Some(Algorithm::Ed25519)
    } else {
        None
    }
}

/// The raw public point from `CKA_EC_POINT`: unwraps the DER OCTET STRING
/// PKCS#11 specifies, and accepts the bare point some tokens return. The
/// lengths decide, so the two forms cannot be confused.
pub(crate) fn point_from_attribute(value: &[u8], algorithm: Algorithm) -> Option<&[u8]> {
    let len = match algorithm {
        Algorithm::EcdsaP256Sha256 => 65,
        Algorithm::Ed25519 => 32,
        _ => return None,
    };
    let point = match value {
        [0x04, n, rest @ ..] if usize::from(*n) == len && rest.len() == len => rest,
        bare if bare.len() == len => bare,
        _ => return None,
    };
    match algorithm {
        Algorithm::EcdsaP256Sha256 if point.first() != Some(&0x04) => None,
        _ => Some(point),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_unwrapped_by_length() {
        let mut p256 = vec![0x04; 65];
        p256[1] = 0x41;
        let wrapped = [&[0x04, 0x41][..], &p256].concat();
        assert_eq!(
            point_from_attribute(&wrapped, Algorithm::EcdsaP256Sha256),
            Some(&p256[..])
        );
        assert_eq!(
            point_from_attribute(&p256, Algorithm::EcdsaP256Sha256),
            Some(&p256[..])
        );
        assert_eq!(
            point_from_attribute(&p256[1..], Algorithm::EcdsaP256Sha256),
            None
        );
        let ed = [0x11u8; 32];
        let wrapped = [&[0x04, 0x20][..], &ed].concat();
        assert_eq!(
            point_from_attribute(&wrapped, Algorithm::Ed25519),
            Some(&ed[..])
        );
        assert_eq!(point_from_attribute(&ed, Algorithm::Ed25519), Some(&ed[..]));
        assert_eq!(
            point_from_attribute(&[0x04, 0x20, 1], Algorithm::Ed25519),
            None
        );
    }

    #[test]
    fn curves_are_recognised() {
        assert_eq!(
            algorithm_of(KeyType::EC, P256_PARAMS),
            Some(Algorithm::EcdsaP256Sha256)
        );
        assert_eq!(
            algorithm_of(KeyType::EC_EDWARDS, ED25519_PARAMS),
            Some(Algorithm::Ed25519)
        );
        assert_eq!(
            algorithm_of(KeyType::EC_EDWARDS, ED25519_NAME_PARAMS),
            Some(Algorithm::Ed25519)
        );
        assert_eq!(algorithm_of(KeyType::EC, ED25519_PARAMS), None);
        assert_eq!(algorithm_of(KeyType::RSA, P256_PARAMS), None);
    }
}
