//! Signed configuration bundles (ISO/IEC 27402 5.2.2.2): settings changes
//! that only a trusted signer can make, checked before anything is used.

use std::io::Read;
use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, ParsedPublicKey};
use data_encoding::BASE64;
use keys::{Algorithm, KeyRef, PublicKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, truncate};
use crate::file::{SignerEntry, is_identity_char};
use crate::settings::{DeviceSettings, Validated};
use crate::{check, decode};

/// Largest bundle accepted by [`Bundle::verify`].
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// Most signatures one bundle may carry; bounds verification work.
pub const MAX_SIGNATURES: usize = 8;

/// Largest PEM public key file read by [`TrustedSigners::from_pem_files`].
const MAX_PEM_BYTES: u64 = 16 * 1024;

/// DER prefix of a P-256 `SubjectPublicKeyInfo` before the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// What a bundle says: which device, which change, which settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundlePayload {
    /// Who issued the bundle (a management system's name): 1 to 128
    /// characters without control characters. Informational; the trusted
    /// signer is what authorises it.
    pub issuer: String,
    /// Which devices the bundle is for.
    pub target: Target,
    /// Monotonic counter per device: a bundle is accepted only if its
    /// sequence is greater than the last one applied.
    pub sequence: u64,
    /// Unix time (seconds) after which the bundle is refused.
    #[serde(default)]
    pub not_after_unix: Option<i64>,
    /// The complete new settings.
    pub settings: DeviceSettings,
}

/// The devices a bundle is for; at least one field must be set, and each
/// set field must equal the device's value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// One device's serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// Every device of a model.
    #[serde(default)]
    pub model: Option<String>,
}

/// The device a bundle is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTarget {
    /// This device's serial number.
    pub serial: String,
    /// This device's model.
    pub model: String,
}

/// The wire form: the payload's exact bytes (base64) and signatures over
/// them. Signing bytes rather than a re-serialisation means the verifier
/// never depends on canonical JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    payload: String,
    signatures: Vec<BundleSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleSignature {
    /// Lower-case hex SHA-256 of the signer's SPKI DER.
    key_id: String,
    /// Base64 signature: DER for ECDSA, 64 bytes for Ed25519.
    signature: String,
}

/// A bundle whose signature, target, sequence, expiry and settings have
/// all been checked. Only [`Bundle::verify`] constructs it, so code that
/// applies a bundle cannot skip a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    signer: String,
    issuer: String,
    sequence: u64,
    validated: Validated,
}

impl VerifiedBundle {
    /// The configured name of the trusted signer whose signature verified.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// The issuer the payload names.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The bundle's sequence: store it as the new last sequence.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The validated settings.
    pub fn validated(&self) -> &Validated {
        &self.validated
    }

    /// The validated settings, consuming the bundle.
    pub fn into_validated(self) -> Validated {
        self.validated
    }
}

/// One trusted configuration signer.
#[derive(Debug, Clone)]
struct TrustedSigner {
    name: String,
    key_id: String,
    key: ParsedPublicKey,
}

/// The keys allowed to sign configuration bundles.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners {
    signers: Vec<TrustedSigner>,
}

impl TrustedSigners {
    /// Trusts each `(name, key)`. Refuses unsupported algorithms, keys
    /// that do not parse, and repeated names or keys.
    pub fn new(signers: Vec<(String, PublicKey)>) -> Result<Self> {
        let mut out = Self::default();
        for (name, key) in signers {
            out.add(name, &key)?;
        }
        Ok(out)
    }

    /// Reads each signer's PEM `SubjectPublicKeyInfo` file.
    pub fn from_pem_files(entries: &[SignerEntry]) -> Result<Self> {
        let mut out = Self::default();
        for entry in entries {
            let pem = read_small(&entry.public_key_file)?;
            let key = public_key_from_pem(&entry.name, &pem)?;
            out.add(entry.name.clone(), &key)?;
        }
        Ok(out)
    }

    /// How many signers are trusted.
    pub fn len(&self) -> usize {
        self.signers.len()
    }

    /// Whether no signer is trusted (every bundle is then refused).
    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    fn add(&mut self, name: String, key: &PublicKey) -> Result<()> {
        if name.is_empty() || name.chars().count() > 64 || !name.chars().all(is_identity_char) {
            return Err(check::invalid(
                "config_signers.name",
                "1 to 64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        let (algorithm, raw) = split_spki(key.algorithm(), key.spki_der())
            .ok_or_else(|| invalid_key(&name, "not a P-256 or Ed25519 SubjectPublicKeyInfo"))?;
        let parsed = ParsedPublicKey::new(algorithm, raw)
            .map_err(|e| invalid_key(&name, &format!("key rejected: {e}")))?;
        let key_id = key_id(key.spki_der());
        if self
            .signers
            .iter()
            .any(|s| s.name == name || s.key_id == key_id)
        {
            return Err(Error::DuplicateSigner { signer: name });
        }
        self.signers.push(TrustedSigner {
            name,
            key_id,
            key: parsed,
        });
        Ok(())
    }
}

fn invalid_key(signer: &str, reason: &str) -> Error {
    Error::InvalidPublicKey {
        signer: signer.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Hex SHA-256 of a SPKI DER: how bundles name their signer's key.
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        spki_der,
    ))
}

/// The verification algorithm and raw key of a SPKI, if its layout is
/// exactly that of the claimed algorithm.
fn split_spki(
    algorithm: Algorithm,
    spki: &[u8],
) -> Option<(
    &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
    &[u8],
)> {
    match algorithm {
        Algorithm::EcdsaP256Sha256 => spki
            .strip_prefix(&P256_SPKI_PREFIX)
            .filter(|point| point.len() == 65)
            .map(|point| (&ECDSA_P256_SHA256_ASN1 as _, point)),
        Algorithm::Ed25519 => spki
            .strip_prefix(&ED25519_SPKI_PREFIX)
            .filter(|raw| raw.len() == 32)
            .map(|raw| (&ED25519 as _, raw)),
        _ => None,
    }
}

/// Parses a PEM `PUBLIC KEY` block holding a P-256 or Ed25519 SPKI.
pub fn public_key_from_pem(signer: &str, pem: &str) -> Result<PublicKey> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let body = pem
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(body, _)| body)
        .ok_or_else(|| invalid_key(signer, "no PEM PUBLIC KEY block"))?;
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = BASE64
        .decode(base64.as_bytes())
        .map_err(|e| invalid_key(signer, &format!("PEM body is not base64: {e}")))?;
    let algorithm = if der.starts_with(&P256_SPKI_PREFIX) {
        Algorithm::EcdsaP256Sha256
    } else if der.starts_with(&ED25519_SPKI_PREFIX) {
        Algorithm::Ed25519
    } else {
        return Err(invalid_key(
            signer,
            "not a P-256 or Ed25519 SubjectPublicKeyInfo",
        ));
    };
    if split_spki(algorithm, &der).is_none() {
        return Err(invalid_key(
            signer,
            "SubjectPublicKeyInfo has the wrong length",
        ));
    }
    Ok(PublicKey::from_spki_der(algorithm, der))
}

fn read_small(path: &Path) -> Result<String> {
    let read_error = |source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(Error::TooLarge {
            document: "public key file",
            len: text.len(),
            max: MAX_PEM_BYTES as usize,
        });
    }
    Ok(text)
}

impl Bundle {
    /// Serialises `payload`, signs those exact bytes with `key` and returns
    /// the wire JSON. Does not validate the settings: the device does that
    /// on [`Bundle::verify`].
    pub fn sign(payload: &BundlePayload, key: &KeyRef) -> Result<Vec<u8>> {
        let bytes = serde_json::to_vec(payload).map_err(|e| Error::InvalidField {
            document: "bundle payload",
            field: ".".to_owned(),
            line: None,
            column: None,
            reason: e.to_string(),
        })?;
        let signature = key.sign(&bytes).map_err(Error::Signing)?;
        let bundle = Self {
            payload: BASE64.encode(&bytes),
            signatures: vec![BundleSignature {
                key_id: key_id(key.public_key().spki_der()),
                signature: BASE64.encode(signature.as_ref()),
            }],
        };
        // Invariant: a struct of strings always serialises.
        Ok(serde_json::to_vec(&bundle).expect("bundle wire form always serialises"))
    }

    /// Checks a bundle in the order that exposes the least code to
    /// unauthenticated input: size, wire JSON, a signature by a trusted key
    /// over the payload bytes, and only then the payload itself (target,
    /// sequence against `last_sequence`, expiry against `now_unix`,
    /// settings).
    pub fn verify(
        wire: &[u8],
        signers: &TrustedSigners,
        device: &DeviceTarget,
        last_sequence: u64,
        now_unix: i64,
    ) -> Result<VerifiedBundle> {
        let bundle: Self = decode::json("configuration bundle", wire, MAX_BUNDLE_BYTES)?;
        check::count("signatures", &bundle.signatures, MAX_SIGNATURES)?;
        let payload = BASE64
            .decode(bundle.payload.as_bytes())
            .map_err(|e| Error::Malformed {
                document: "configuration bundle",
                line: None,
                column: None,
                reason: format!("`payload` is not base64: {e}"),
            })?;
        let signer = bundle.authenticate(signers, &payload)?;

        // Authenticated from here on: the payload comes from `signer`.
        let payload: BundlePayload = decode::json("bundle payload", &payload, MAX_BUNDLE_BYTES)?;
        check::chars(
            "issuer",
            &payload.issuer,
            1,
            128,
            |c| !c.is_control(),
            "1 to 128 characters without control characters",
        )?;
        payload.target.check(device)?;
        if payload.sequence <= last_sequence {
            return Err(Error::Replayed {
                sequence: payload.sequence,
                last: last_sequence,
            });
        }
        if let Some(not_after_unix) = payload.not_after_unix
            && now_unix > not_after_unix
        {
            return Err(Error::Expired {
                not_after_unix,
                now_unix,
            });
        }
        let validated = payload.settings.validate()?;
        Ok(VerifiedBundle {
            signer: signer.name.clone(),
            issuer: payload.issuer,
            sequence: payload.sequence,
            validated,
        })
    }

    /// The first trusted signer whose signature verifies over `payload`.
    fn authenticate<'s>(
        &self,
        signers: &'s TrustedSigners,
        payload: &[u8],
    ) -> Result<&'s TrustedSigner> {
        let mut bad = None;
        for entry in &self.signatures {
            let Some(signer) = signers
                .signers
                .iter()
                .find(|s| s.key_id.eq_ignore_ascii_case(&entry.key_id))
            else {
                continue;
            };
            let verified = BASE64
                .decode(entry.signature.as_bytes())
                .ok()
                .is_some_and(|sig| signer.key.verify_sig(payload, &sig).is_ok());
            if verified {
                return Ok(signer);
            }
            bad.get_or_insert(signer);
        }
        match bad {
            Some(signer) => Err(Error::BadSignature {
                signer: signer.name.clone(),
            }),
            None => Err(Error::UnknownSigner {
                key_ids: self
                    .signatures
                    .iter()
                    .map(|s| truncate(&s.key_id))
                    .collect(),
            }),
        }
    }
}

impl Target {
    fn check(&self, device: &DeviceTarget) -> Result<()> {
        if self.serial.is_none() && self.model.is_none() {
            return Err(check::invalid(
                "target",
                "a target naming a serial, a model or both",
            ));
        }
        for (field, wanted, have) in [
            ("target.serial", &self.serial, &device.serial),
            ("target.model", &self.model, &device.model),
        ] {
            if let Some(wanted) = wanted
                && wanted != have
            {
                return Err(Error::WrongTarget {
                    field,
                    expected: have.clone(),
                    found: truncate(wanted),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keys::KeyAdmin;
    use keys_soft::{KekProtection, SoftKeyStore};

    use super::*;

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        _dir: tempfile::TempDir,
        key: KeyRef,
        other: KeyRef,
        signers: TrustedSigners,
        device: DeviceTarget,
    }

    fn fixture(algorithm: Algorithm) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftKeyStore::open(&dir.path().join("keys"), KekProtection::File).unwrap();
        let signer = "signer".parse().unwrap();
        let other = "other".parse().unwrap();
        store.generate(&signer, algorithm).unwrap();
        store.generate(&other, algorithm).unwrap();
        let store: Arc<dyn keys::KeyStore> = Arc::new(store);
        let key = KeyRef::new(store.clone(), signer).unwrap();
        let other = KeyRef::new(store, other).unwrap();
        let signers =
            TrustedSigners::new(vec![("fleet".to_owned(), key.public_key().clone())]).unwrap();
        Fixture {
            _dir: dir,
            key,
            other,
            signers,
            device: DeviceTarget {
                serial: "SN-0001".to_owned(),
                model: "BW-100".to_owned(),
            },
        }
    }

    fn payload() -> BundlePayload {
        let mut settings = DeviceSettings::default();
        settings.device.name = "Signed".to_owned();
        BundlePayload {
            issuer: "fleet-manager".to_owned(),
            target: Target {
                serial: Some("SN-0001".to_owned()),
                model: None,
            },
            sequence: 5,
            not_after_unix: Some(NOW + 3600),
            settings,
        }
    }

    impl Fixture {
        fn verify(&self, wire: &[u8]) -> Result<VerifiedBundle> {
            Bundle::verify(wire, &self.signers, &self.device, 4, NOW)
        }

        fn signed(&self, payload: &BundlePayload) -> Vec<u8> {
            Bundle::sign(payload, &self.key).unwrap()
        }
    }

    fn valid_bundle_verifies(algorithm: Algorithm) {
        let f = fixture(algorithm);
        let verified = f.verify(&f.signed(&payload())).unwrap();
        assert_eq!(verified.signer(), "fleet");
        assert_eq!(verified.issuer(), "fleet-manager");
        assert_eq!(verified.sequence(), 5);
        assert_eq!(verified.validated().settings().device.name, "Signed");
        assert_eq!(
            verified.into_validated().into_settings(),
            payload().settings
        );
    }

    #[test]
    fn valid_ecdsa_bundle_verifies() {
        valid_bundle_verifies(Algorithm::EcdsaP256Sha256);
    }

    #[test]
    fn valid_ed25519_bundle_verifies() {
        valid_bundle_verifies(Algorithm::Ed25519);
    }

    /// Re-encodes a wire bundle with a changed payload, keeping the signature.
    fn tamper(wire: &[u8], change: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut bundle: Bundle = serde_json::from_slice(wire).unwrap();
        let mut payload = BASE64.decode(bundle.payload.as_bytes()).unwrap();
        change(&mut payload);
        bundle.payload = BASE64.encode(&payload);
        serde_json::to_vec(&bundle).unwrap()
    }

    #[test]
    fn tampered_payload_is_refused() {
        for algorithm in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let f = fixture(algorithm);
            let wire = f.signed(&payload());
            let tampered = tamper(&wire, |p| {
                let text = String::from_utf8(p.clone()).unwrap();
                *p = text
                    .replace("\"sequence\":5", "\"sequence\":6")
                    .into_bytes();
            });
            assert_ne!(tampered, wire);
            let err = f.verify(&tampered).unwrap_err();
            assert!(
                matches!(&err, Error::BadSignature { signer } if signer == "fleet"),
                "{err:?}"
            );
            // Even a change that leaves the payload unparseable is a bad
            // signature, not a parse error: the payload is parsed after.
            let err = f.verify(&tamper(&wire, |p| p.push(b'x'))).unwrap_err();
            assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
        }
    }

    #[test]
    fn tampered_signature_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let wire = f.signed(&payload());
        let mut bundle: Bundle = serde_json::from_slice(&wire).unwrap();
        bundle.signatures[0].signature = BASE64.encode(b"not a signature");
        let err = f.verify(&serde_json::to_vec(&bundle).unwrap()).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
        bundle.signatures[0].signature = "***".to_owned();
        let err = f.verify(&serde_json::to_vec(&bundle).unwrap()).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn unknown_signer_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let wire = Bundle::sign(&payload(), &f.other).unwrap();
        let err = f.verify(&wire).unwrap_err();
        let Error::UnknownSigner { key_ids } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            key_ids,
            &[truncate(&key_id(f.other.public_key().spki_der()))]
        );
        // No signer trusted at all: every bundle is refused.
        let none = TrustedSigners::default();
        let err = Bundle::verify(&f.signed(&payload()), &none, &f.device, 0, NOW).unwrap_err();
        assert!(matches!(err, Error::UnknownSigner { .. }));
    }

    #[test]
    fn a_signature_claiming_a_trusted_key_id_must_verify_with_that_key() {
        // The other key signs, but the bundle claims the trusted key's id.
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let wire = Bundle::sign(&payload(), &f.other).unwrap();
        let mut bundle: Bundle = serde_json::from_slice(&wire).unwrap();
        bundle.signatures[0].key_id = key_id(f.key.public_key().spki_der());
        let err = f.verify(&serde_json::to_vec(&bundle).unwrap()).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn one_good_signature_among_several_suffices() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let good: Bundle = serde_json::from_slice(&f.signed(&payload())).unwrap();
        let mut other: Bundle =
            serde_json::from_slice(&Bundle::sign(&payload(), &f.other).unwrap()).unwrap();
        other.signatures.extend(good.signatures);
        let verified = f.verify(&serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(verified.signer(), "fleet");
    }

    #[test]
    fn wrong_target_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let mut p = payload();
        p.target.serial = Some("SN-0002".to_owned());
        let err = f.verify(&f.signed(&p)).unwrap_err();
        assert!(
            matches!(&err, Error::WrongTarget { field: "target.serial", expected, found } if expected == "SN-0001" && found == "SN-0002"),
            "{err:?}"
        );
        p.target = Target {
            serial: None,
            model: Some("BW-200".to_owned()),
        };
        let err = f.verify(&f.signed(&p)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongTarget {
                    field: "target.model",
                    ..
                }
            ),
            "{err:?}"
        );
        p.target = Target {
            serial: Some("SN-0001".to_owned()),
            model: Some("BW-200".to_owned()),
        };
        let err = f.verify(&f.signed(&p)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongTarget {
                    field: "target.model",
                    ..
                }
            ),
            "{err:?}"
        );
        p.target = Target::default();
        let err = f.verify(&f.signed(&p)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidFormat { field, .. } if field == "target"),
            "{err:?}"
        );
        // A model-wide bundle reaches every device of the model.
        p.target.model = Some("BW-100".to_owned());
        f.verify(&f.signed(&p)).unwrap();
    }

    #[test]
    fn replayed_sequence_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let wire = f.signed(&payload());
        for last in [5, 6, u64::MAX] {
            let err = Bundle::verify(&wire, &f.signers, &f.device, last, NOW).unwrap_err();
            assert!(
                matches!(err, Error::Replayed { sequence: 5, last: l } if l == last),
                "{err:?}"
            );
        }
        Bundle::verify(&wire, &f.signers, &f.device, 4, NOW).unwrap();
    }

    #[test]
    fn expired_bundle_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let wire = f.signed(&payload());
        let not_after = NOW + 3600;
        Bundle::verify(&wire, &f.signers, &f.device, 0, not_after).unwrap();
        let err = Bundle::verify(&wire, &f.signers, &f.device, 0, not_after + 1).unwrap_err();
        assert!(
            matches!(err, Error::Expired { not_after_unix, now_unix } if not_after_unix == not_after && now_unix == not_after + 1),
            "{err:?}"
        );
        let mut p = payload();
        p.not_after_unix = None;
        Bundle::verify(&f.signed(&p), &f.signers, &f.device, 0, i64::MAX).unwrap();
    }

    #[test]
    fn oversized_bundle_is_refused_before_parsing() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let mut wire = f.signed(&payload());
        wire.resize(MAX_BUNDLE_BYTES + 1, b' ');
        let err = f.verify(&wire).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { len, max: MAX_BUNDLE_BYTES, .. } if len == MAX_BUNDLE_BYTES + 1),
            "{err:?}"
        );
        // Trailing whitespace within the limit is fine.
        wire.truncate(MAX_BUNDLE_BYTES);
        f.verify(&wire).unwrap();
    }

    #[test]
    fn invalid_settings_in_a_signed_bundle_are_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        let mut p = payload();
        p.settings.auth.min_password_length = 8;
        let err = f.verify(&f.signed(&p)).unwrap_err();
        assert!(matches!(err, Error::BelowSecurityFloor { .. }), "{err:?}");
        // Weakenings travel with their acknowledgement and are reported.
        let mut p = payload();
        p.settings.auth.lockout_after = 50;
        p.settings.danger_acknowledged = vec!["auth.lockout_after".to_owned()];
        let verified = f.verify(&f.signed(&p)).unwrap();
        assert_eq!(
            verified.validated().weakenings()[0].field,
            "auth.lockout_after"
        );
    }

    #[test]
    fn malformed_wire_is_refused() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        for (wire, what) in [
            (&b"not json"[..], "malformed"),
            (
                b"{\"payload\": \"\", \"signatures\": [], \"x\": 1}",
                "unknown",
            ),
            (b"{\"payload\": \"!!\", \"signatures\": []}", "malformed"),
            (b"{\"payload\": 1, \"signatures\": []}", "field"),
            (b"[]", "field"),
            (b"\xff", "utf8"),
        ] {
            let err = f.verify(wire).unwrap_err();
            let ok = match what {
                "malformed" => matches!(err, Error::Malformed { .. }),
                "unknown" => matches!(err, Error::UnknownField { .. }),
                "field" => matches!(err, Error::InvalidField { .. }),
                _ => matches!(err, Error::NotUtf8 { .. }),
            };
            assert!(ok, "{wire:?}: {err:?}");
        }
        let nine = serde_json::json!({
            "payload": "",
            "signatures": vec![serde_json::json!({"key_id": "00", "signature": ""}); MAX_SIGNATURES + 1],
        });
        let err = f.verify(nine.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, Error::TooManyEntries { .. }), "{err:?}");
    }

    #[test]
    fn signed_payload_with_unknown_fields_is_refused_after_authentication() {
        let f = fixture(Algorithm::Ed25519);
        // Sign a payload with an extra field by signing raw bytes.
        let mut value = serde_json::to_value(payload()).unwrap();
        value["extra"] = serde_json::json!(true);
        let bytes = serde_json::to_vec(&value).unwrap();
        let signature = f.key.sign(&bytes).unwrap();
        let wire = serde_json::json!({
            "payload": BASE64.encode(&bytes),
            "signatures": [{"key_id": key_id(f.key.public_key().spki_der()), "signature": BASE64.encode(&signature.0)}],
        });
        let err = f.verify(wire.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownField { document: "bundle payload", field, .. } if field == "extra"),
            "{err:?}"
        );
    }

    #[test]
    fn key_id_matches_the_keys_fingerprint() {
        let f = fixture(Algorithm::EcdsaP256Sha256);
        assert_eq!(
            key_id(f.key.public_key().spki_der()),
            f.key.public_key().fingerprint()
        );
    }

    fn pem(der: &[u8]) -> String {
        let b64 = BASE64.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn trusted_signers_from_pem_files() {
        let ec = fixture(Algorithm::EcdsaP256Sha256);
        let ed = fixture(Algorithm::Ed25519);
        let dir = tempfile::tempdir().unwrap();
        let ec_path = dir.path().join("ec.pem");
        let ed_path = dir.path().join("ed.pem");
        std::fs::write(&ec_path, pem(ec.key.public_key().spki_der())).unwrap();
        std::fs::write(&ed_path, pem(ed.key.public_key().spki_der())).unwrap();
        let entries = [
            SignerEntry {
                name: "ec".to_owned(),
                public_key_file: ec_path.clone(),
            },
            SignerEntry {
                name: "ed".to_owned(),
                public_key_file: ed_path,
            },
        ];
        let signers = TrustedSigners::from_pem_files(&entries).unwrap();
        assert_eq!(signers.len(), 2);
        let v = Bundle::verify(&ec.signed(&payload()), &signers, &ec.device, 0, NOW).unwrap();
        assert_eq!(v.signer(), "ec");
        let v = Bundle::verify(&ed.signed(&payload()), &signers, &ed.device, 0, NOW).unwrap();
        assert_eq!(v.signer(), "ed");

        let missing = [SignerEntry {
            name: "x".to_owned(),
            public_key_file: dir.path().join("missing.pem"),
        }];
        assert!(matches!(
            TrustedSigners::from_pem_files(&missing),
            Err(Error::ReadFile { .. })
        ));
        let twice = [
            entries[0].clone(),
            SignerEntry {
                name: "again".to_owned(),
                ..entries[0].clone()
            },
        ];
        assert!(matches!(
            TrustedSigners::from_pem_files(&twice),
            Err(Error::DuplicateSigner { signer }) if signer == "again"
        ));
    }

    #[test]
    fn bad_pem_keys_are_refused() {
        let ec = fixture(Algorithm::EcdsaP256Sha256);
        let spki = ec.key.public_key().spki_der().to_vec();
        let bad_point = {
            let mut der = spki.clone();
            let last = der.len() - 1;
            der[last] ^= 0xff; // almost surely off the curve
            der
        };
        for text in [
            "".to_owned(),
            "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n".to_owned(),
            pem(b"\x30\x03\x02\x01\x00"),
            pem(&spki[..spki.len() - 1]),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        ] {
            assert!(
                matches!(
                    public_key_from_pem("k", &text),
                    Err(Error::InvalidPublicKey { .. })
                ),
                "{text}"
            );
        }
        let key = public_key_from_pem("k", &pem(&bad_point)).unwrap();
        assert!(matches!(
            TrustedSigners::new(vec![("k".to_owned(), key)]),
            Err(Error::InvalidPublicKey { .. })
        ));
        assert!(matches!(
            TrustedSigners::new(vec![("bad name".to_owned(), ec.key.public_key().clone())]),
            Err(Error::InvalidFormat { .. })
        ));
    }
}
