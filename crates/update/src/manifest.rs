//! The signed release manifest: what an image is, which hardware it is for,
//! its version for anti-rollback, and a SHA-256 per chunk.

use std::collections::HashSet;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, ParsedPublicKey};
use data_encoding::BASE64;
use keys::{Algorithm, KeyRef, PublicKey, encoding};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, truncate};

/// The only manifest format this crate reads and writes.
pub const FORMAT: u32 = 1;

/// Prefix of every signed message: a signature over an update manifest
/// can never be replayed as a configuration bundle, a log checkpoint or
/// anything else the same key signs, and vice versa.
pub const SIGNING_CONTEXT: &[u8] = b"bulwark-update-manifest-v1\0";

/// Smallest chunk size accepted (64 KiB: `sha2`/aws-lc stream at full
/// speed from 64 KiB reads).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;

/// Largest chunk size accepted (4 MiB: bounds the memory of a batch).
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Most chunks one manifest may list (16 GiB at 64 KiB, 1 TiB at 4 MiB);
/// bounds the manifest's memory and parse time.
pub const MAX_CHUNKS: usize = 1 << 18;

/// Largest signed manifest accepted on the wire.
pub const MAX_WIRE_BYTES: usize = 32 * 1024 * 1024;

/// Most signatures one manifest may carry; bounds verification work.
pub const MAX_SIGNATURES: usize = 16;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// What a release says about its image. Publishers build one; devices
/// only ever see it through [`VerifiedManifest`] or [`AuthenticManifest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u32,
    /// Hardware compatibility string; must equal the device's exactly.
    pub compatible: String,
    /// Human version, e.g. `2.4.1` (1 to 64 printable characters).
    pub version: String,
    /// Monotonic version number: a device installs only a higher one.
    pub version_code: u64,
    /// The lowest installed version code this release may be installed
    /// over (e.g. a release that needs a data migration added in an
    /// intermediate one).
    pub min_version_code: u64,
    /// Security version: a device refuses releases below its floor, and
    /// committing this release raises the floor to it.
    pub security_version: u64,
    /// Exact image length in bytes.
    pub image_size: u64,
    /// Chunk length: a power of two from [`MIN_CHUNK_SIZE`] to
    /// [`MAX_CHUNK_SIZE`]; the last chunk may be shorter.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order (hex in JSON).
    #[serde(with = "hex_digests")]
    pub chunks: Vec<Digest>,
    /// When the release was built (Unix seconds); informational.
    pub created_unix: i64,
}

impl std::fmt::Debug for Manifest {
    // The chunk list can be a quarter of a million hashes: show its size.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("format", &self.format)
            .field("compatible", &self.compatible)
            .field("version", &self.version)
            .field("version_code", &self.version_code)
            .field("min_version_code", &self.min_version_code)
            .field("security_version", &self.security_version)
            .field("image_size", &self.image_size)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunks.len())
            .field("created_unix", &self.created_unix)
            .finish()
    }
}

impl Manifest {
    /// Number of chunks an image of `image_size` bytes has at `chunk_size`.
    pub fn chunk_count_for(image_size: u64, chunk_size: u32) -> u64 {
        image_size.div_ceil(u64::from(chunk_size.max(1)))
    }

    /// Offset and length of chunk `index` (which must be below the count).
    pub fn chunk_range(&self, index: u64) -> (u64, usize) {
        Self::chunk_layout(self.chunk_size, self.image_size, index)
    }

    /// Offset and length of chunk `index` of `size` bytes cut at
    /// `chunk_size`.
    pub fn chunk_layout(chunk_size: u32, size: u64, index: u64) -> (u64, usize) {
        let chunk = u64::from(chunk_size);
        let offset = index.saturating_mul(chunk);
        let len = size.saturating_sub(offset).min(chunk);
        // Invariant: len <= chunk_size (a u32) fits usize on our targets.
        (offset, usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// The expected hash of chunk `index`, if it exists.
    pub fn chunk(&self, index: u64) -> Option<&Digest> {
        usize::try_from(index).ok().and_then(|i| self.chunks.get(i))
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Every check of the manifest against itself and our limits.
    pub(crate) fn check_consistent(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::inconsistent(format!(
                "format {} is not {FORMAT}",
                self.format
            )));
        }
        if self.version.is_empty()
            || self.version.chars().count() > 64
            || self.version.chars().any(char::is_control)
        {
            return Err(Error::inconsistent(
                "version must be 1 to 64 characters without control characters",
            ));
        }
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return Err(Error::inconsistent(format!(
                "chunk_size {} is not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        if self.image_size == 0 {
            return Err(Error::inconsistent("image_size is 0"));
        }
        if self.chunks.len() > MAX_CHUNKS {
            return Err(Error::inconsistent(format!(
                "{} chunks exceed the limit of {MAX_CHUNKS}",
                self.chunks.len()
            )));
        }
        let want = Self::chunk_count_for(self.image_size, self.chunk_size);
        if self.chunk_count() != want {
            return Err(Error::inconsistent(format!(
                "{} chunk hashes listed, but image_size {} at chunk_size {} has {want} chunks",
                self.chunks.len(),
                self.image_size,
                self.chunk_size
            )));
        }
        if self.min_version_code > self.version_code {
            return Err(Error::inconsistent(format!(
                "min_version_code {} is above version_code {}",
                self.min_version_code, self.version_code
            )));
        }
        Ok(())
    }
}

/// The device a manifest is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// This device's hardware compatibility string.
    pub compatible: String,
    /// Version code of the committed (running) release.
    pub current_version_code: u64,
    /// The device's security floor (see [`crate::anti_rollback`]).
    pub security_floor: u64,
}

/// The keys trusted to sign release manifests.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

#[derive(Debug, Clone)]
struct TrustedKey {
    key_id: String,
    key: ParsedPublicKey,
}

impl TrustedKeys {
    /// Trusts each key. Refuses keys whose SPKI is not exactly a P-256 or
    /// Ed25519 key, keys aws-lc rejects, and the same key twice (it would
    /// count twice towards a threshold).
    pub fn new(keys: &[PublicKey]) -> Result<Self> {
        let mut out = Self::default();
        for key in keys {
            let key_id = key_id(key);
            let rebuilt = match key.algorithm() {
                Algorithm::EcdsaP256Sha256 => encoding::p256_spki_from_point(key.raw()),
                Algorithm::Ed25519 => encoding::ed25519_spki_from_raw(key.raw()),
                other => {
                    return Err(Error::inconsistent(format!(
                        "trusted key {key_id}: algorithm {other} is not supported"
                    )));
                }
            };
            if rebuilt.ok().as_deref() != Some(key.spki_der()) {
                return Err(Error::inconsistent(format!(
                    "trusted key {key_id}: not a plain P-256 or Ed25519 SubjectPublicKeyInfo"
                )));
            }
            let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
                match key.algorithm() {
                    Algorithm::Ed25519 => &ED25519,
                    _ => &ECDSA_P256_SHA256_ASN1,
                };
            let parsed = ParsedPublicKey::new(algorithm, key.raw()).map_err(|e| {
                Error::inconsistent(format!("trusted key {key_id} is rejected: {e}"))
            })?;
            if out.keys.iter().any(|k| k.key_id == key_id) {
                return Err(Error::inconsistent(format!(
                    "trusted key {key_id} is listed twice"
                )));
            }
            out.keys.push(TrustedKey {
                key_id,
                key: parsed,
            });
        }
        Ok(out)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted (every manifest is then refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Lower-case hex SHA-256 of a key's SPKI DER: how signatures name keys.
pub fn key_id(key: &PublicKey) -> String {
    hex::encode(digest(&SHA256, key.spki_der()))
}

/// The wire form: the payload's exact bytes and signatures over
/// [`SIGNING_CONTEXT`] followed by them. Signing bytes rather than a
/// re-serialisation means the verifier never needs canonical JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    payload: String,
    signatures: Vec<WireSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    /// Hex SHA-256 of the signer's SPKI DER.
    key_id: String,
    /// Base64: DER for ECDSA, 64 bytes for Ed25519.
    signature: String,
}

/// A manifest whose signatures (threshold of distinct trusted keys),
/// hardware and internal consistency were checked, but not its version:
/// what the start-up integrity check of an *installed* slot needs. Only
/// this module constructs it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticManifest {
    manifest: Manifest,
    digest: Digest,
    wire: Vec<u8>,
    signers: Vec<String>,
}

impl std::fmt::Debug for AuthenticManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticManifest")
            .field("manifest", &self.manifest)
            .field("digest", &hex::encode(self.digest))
            .field("signers", &self.signers)
            .finish_non_exhaustive()
    }
}

impl AuthenticManifest {
    /// The checked manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the signed payload bytes: the release's identity (the
    /// same for any set of signatures over the same payload).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The signed wire bytes, to keep as the slot's record.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Key ids of the trusted keys whose signatures verified.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }
}

/// A manifest fit to install: authentic, for this hardware, newer than
/// the installed release and not below the security floor (or, through
/// [`SignedManifest::danger_verify_waiving_rollback`], the one release an
/// owner's waiver names). Only those two functions construct it, so the
/// installer cannot be handed anything less.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    authentic: AuthenticManifest,
}

impl VerifiedManifest {
    /// The checked manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.authentic.manifest
    }

    /// The authentic part (for the integrity check and slot records).
    pub fn authentic(&self) -> &AuthenticManifest {
        &self.authentic
    }
}

impl AsRef<AuthenticManifest> for VerifiedManifest {
    fn as_ref(&self) -> &AuthenticManifest {
        &self.authentic
    }
}

impl AsRef<AuthenticManifest> for AuthenticManifest {
    fn as_ref(&self) -> &AuthenticManifest {
        self
    }
}

impl SignedManifest {
    /// Serialises `manifest`, signs [`SIGNING_CONTEXT`] `||` those bytes
    /// with every key, and returns the wire JSON. Checks the manifest's
    /// consistency first, so a publisher cannot sign one no device takes.
    pub fn sign(manifest: &Manifest, keys: &[&KeyRef]) -> Result<Vec<u8>> {
        manifest.check_consistent()?;
        let payload = serde_json::to_vec(manifest)
            .map_err(|e| Error::inconsistent(format!("manifest does not serialise: {e}")))?;
        let message = signed_message(&payload);
        let mut signatures = Vec::with_capacity(keys.len());
        for key in keys {
            let signature = key.sign(&message).map_err(Error::Signing)?;
            signatures.push(WireSignature {
                key_id: key_id(key.public_key()),
                signature: BASE64.encode(signature.as_ref()),
            });
        }
        let wire = Self {
            payload: BASE64.encode(&payload),
            signatures,
        };
        serde_json::to_vec(&wire)
            .map_err(|e| Error::inconsistent(format!("wire form does not serialise: {e}")))
    }

    /// Checks a release for installation, in the order that exposes the
    /// least code to unauthenticated input: size and wire JSON; signatures
    /// by at least `threshold` (at least 1) distinct trusted keys over the
    /// payload bytes; only then the payload itself: hardware, anti-rollback
    /// (version code above the installed one, security version not below
    /// the floor) and internal consistency.
    pub fn verify(
        wire: &[u8],
        keys: &TrustedKeys,
        threshold: usize,
        device: &Device,
    ) -> Result<VerifiedManifest> {
        let authentic = Self::authenticate(wire, keys, threshold, &device.compatible)?;
        Self::check_for_device(authentic, device, false)
    }

    /// [`SignedManifest::verify`], except that anti-rollback (version code
    /// above the installed one, security version not below the floor) is
    /// waived for the one release whose payload digest is `waived`: the
    /// owner's audited override (see [`crate::waiver`]). Signatures,
    /// threshold, hardware, the release's minimum installed version and
    /// consistency still hold, and any other release is checked in full.
    pub fn danger_verify_waiving_rollback(
        wire: &[u8],
        keys: &TrustedKeys,
        threshold: usize,
        device: &Device,
        waived: &Digest,
    ) -> Result<VerifiedManifest> {
        let authentic = Self::authenticate(wire, keys, threshold, &device.compatible)?;
        let waive = authentic.digest == *waived;
        Self::check_for_device(authentic, device, waive)
    }

    /// The device-specific checks after authentication.
    fn check_for_device(
        authentic: AuthenticManifest,
        device: &Device,
        waive_rollback: bool,
    ) -> Result<VerifiedManifest> {
        let m = &authentic.manifest;
        if !waive_rollback && m.version_code <= device.current_version_code {
            return Err(Error::Rollback {
                offered: m.version_code,
                installed: device.current_version_code,
            });
        }
        if device.current_version_code < m.min_version_code {
            return Err(Error::TooOldToUpgrade {
                min: m.min_version_code,
                installed: device.current_version_code,
            });
        }
        if !waive_rollback && m.security_version < device.security_floor {
            return Err(Error::BelowSecurityFloor {
                offered: m.security_version,
                floor: device.security_floor,
            });
        }
        m.check_consistent()?;
        Ok(VerifiedManifest { authentic })
    }

    /// Checks the record of an *installed* release (signatures, hardware,
    /// consistency; not versions, which only matter before installing).
    pub fn verify_installed(
        wire: &[u8],
        keys: &TrustedKeys,
        threshold: usize,
        compatible: &str,
    ) -> Result<AuthenticManifest> {
        let authentic = Self::authenticate(wire, keys, threshold, compatible)?;
        authentic.manifest.check_consistent()?;
        Ok(authentic)
    }

    /// The payload of a signed manifest *without checking anything*: only
    /// for hints whose every use is verified against a verified manifest.
    pub(crate) fn unverified_payload(wire: &[u8]) -> Option<Manifest> {
        let signed: Self = serde_json::from_slice(wire).ok()?;
        let payload = BASE64.decode(signed.payload.as_bytes()).ok()?;
        serde_json::from_slice(&payload).ok()
    }

    fn authenticate(
        wire: &[u8],
        keys: &TrustedKeys,
        threshold: usize,
        compatible: &str,
    ) -> Result<AuthenticManifest> {
        if wire.len() > MAX_WIRE_BYTES {
            return Err(Error::Malformed {
                reason: format!("{} bytes exceed the limit of {MAX_WIRE_BYTES}", wire.len()),
            });
        }
        let signed: Self = serde_json::from_slice(wire).map_err(|e| Error::Malformed {
            reason: e.to_string(),
        })?;
        if signed.signatures.len() > MAX_SIGNATURES {
            return Err(Error::Malformed {
                reason: format!(
                    "{} signatures exceed the limit of {MAX_SIGNATURES}",
                    signed.signatures.len()
                ),
            });
        }
        let payload = BASE64
            .decode(signed.payload.as_bytes())
            .map_err(|e| Error::Malformed {
                reason: format!("`payload` is not base64: {e}"),
            })?;
        let signers = signed.check_signatures(keys, threshold.max(1), &payload)?;

        // Authenticated from here on.
        let manifest: Manifest = serde_json::from_slice(&payload)
            .map_err(|e| Error::inconsistent(format!("signed payload is not a manifest: {e}")))?;
        if manifest.compatible != compatible {
            return Err(Error::WrongHardware {
                expected: compatible.to_owned(),
                found: truncate(&manifest.compatible),
            });
        }
        Ok(AuthenticManifest {
            manifest,
            digest: sha256(&payload),
            wire: wire.to_vec(),
            signers,
        })
    }

    /// Key ids of the distinct trusted keys whose signature verifies, if
    /// there are at least `threshold` of them.
    fn check_signatures(
        &self,
        keys: &TrustedKeys,
        threshold: usize,
        payload: &[u8],
    ) -> Result<Vec<String>> {
        let message = signed_message(payload);
        let mut good: HashSet<&str> = HashSet::new();
        let mut bad = None;
        for entry in &self.signatures {
            let Some(key) = keys
                .keys
                .iter()
                .find(|k| k.key_id.eq_ignore_ascii_case(&entry.key_id))
            else {
                continue;
            };
            if good.contains(key.key_id.as_str()) {
                continue;
            }
            let verified = BASE64
                .decode(entry.signature.as_bytes())
                .ok()
                .is_some_and(|sig| key.key.verify_sig(&message, &sig).is_ok());
            if verified {
                good.insert(&key.key_id);
            } else {
                bad.get_or_insert(&key.key_id);
            }
        }
        if good.len() >= threshold {
            let mut signers: Vec<String> = good.into_iter().map(str::to_owned).collect();
            signers.sort();
            return Ok(signers);
        }
        match (good.len(), bad) {
            (0, Some(key_id)) => Err(Error::BadSignature {
                key_id: key_id.clone(),
            }),
            (0, None) => Err(Error::UntrustedSigner {
                key_ids: self
                    .signatures
                    .iter()
                    .map(|s| truncate(&s.key_id))
                    .collect(),
            }),
            (have, _) => Err(Error::BelowThreshold {
                have,
                need: threshold,
            }),
        }
    }
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, payload].concat()
}

/// SHA-256 of one chunk, as a manifest lists it.
pub fn chunk_hash(chunk: &[u8]) -> Digest {
    sha256(chunk)
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

mod hex_digests {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Digest;

    pub(super) fn serialize<S: Serializer>(digests: &[Digest], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(digests.iter().map(hex::encode))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| {
                let mut out = [0u8; 32];
                hex::decode_to_slice(t, &mut out)
                    .map_err(|e| D::Error::custom(format!("chunk hash {t:?}: {e}")))?;
                Ok(out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keys::KeyAdmin;
    use keys_soft::{KekProtection, SoftKeyStore};

    use super::*;

    struct Keys {
        _dir: tempfile::TempDir,
        a: KeyRef,
        b: KeyRef,
        untrusted: KeyRef,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let store = SoftKeyStore::open(&dir.path().join("keys"), KekProtection::File).unwrap();
        for (label, alg) in [
            ("a", Algorithm::EcdsaP256Sha256),
            ("b", Algorithm::Ed25519),
            ("u", Algorithm::EcdsaP256Sha256),
        ] {
            store.generate(&label.parse().unwrap(), alg).unwrap();
        }
        let store: Arc<dyn keys::KeyStore> = Arc::new(store);
        let k = |l: &str| KeyRef::new(store.clone(), l.parse().unwrap()).unwrap();
        Keys {
            a: k("a"),
            b: k("b"),
            untrusted: k("u"),
            _dir: dir,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            compatible: "bw-100".to_owned(),
            version: "2.0.0".to_owned(),
            version_code: 20,
            min_version_code: 5,
            security_version: 3,
            image_size: 3 * 65536 + 1,
            chunk_size: 65536,
            chunks: vec![[7u8; 32]; 4],
            created_unix: 1_800_000_000,
        }
    }

    fn device() -> Device {
        Device {
            compatible: "bw-100".to_owned(),
            current_version_code: 10,
            security_floor: 3,
        }
    }

    fn trusted(k: &Keys) -> TrustedKeys {
        TrustedKeys::new(&[k.a.public_key().clone(), k.b.public_key().clone()]).unwrap()
    }

    #[test]
    fn signed_manifest_verifies_and_round_trips() {
        let k = keys();
        let wire = SignedManifest::sign(&manifest(), &[&k.a, &k.b]).unwrap();
        let v = SignedManifest::verify(&wire, &trusted(&k), 2, &device()).unwrap();
        assert_eq!(v.manifest(), &manifest());
        assert_eq!(v.authentic().signers().len(), 2);
        assert_eq!(v.authentic().wire(), &wire[..]);
        // The digest names the payload, not the signatures.
        let again = SignedManifest::sign(&manifest(), &[&k.a]).unwrap();
        let v2 = SignedManifest::verify(&again, &trusted(&k), 1, &device()).unwrap();
        assert_eq!(v.authentic().digest(), v2.authentic().digest());
    }

    #[test]
    fn signatures_cover_the_domain_prefix() {
        // A signature over the bare payload (as another protocol using the
        // same key would make) is refused.
        let k = keys();
        let payload = serde_json::to_vec(&manifest()).unwrap();
        let sig = k.a.sign(&payload).unwrap();
        let wire = serde_json::to_vec(&serde_json::json!({
            "payload": BASE64.encode(&payload),
            "signatures": [{"key_id": key_id(k.a.public_key()), "signature": BASE64.encode(&sig.0)}],
        }))
        .unwrap();
        let err = SignedManifest::verify(&wire, &trusted(&k), 1, &device()).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn threshold_counts_distinct_keys() {
        let k = keys();
        let twice = SignedManifest::sign(&manifest(), &[&k.a, &k.a]).unwrap();
        let err = SignedManifest::verify(&twice, &trusted(&k), 2, &device()).unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { have: 1, need: 2 }),
            "{err:?}"
        );
        let with_untrusted = SignedManifest::sign(&manifest(), &[&k.a, &k.untrusted]).unwrap();
        let err = SignedManifest::verify(&with_untrusted, &trusted(&k), 2, &device()).unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { have: 1, need: 2 }),
            "{err:?}"
        );
        // Threshold 0 is treated as 1: an unsigned manifest never passes.
        let unsigned = SignedManifest::sign(&manifest(), &[]).unwrap();
        let err = SignedManifest::verify(&unsigned, &trusted(&k), 0, &device()).unwrap_err();
        assert!(matches!(err, Error::UntrustedSigner { .. }), "{err:?}");
    }

    #[test]
    fn tampered_payload_is_refused_before_parsing() {
        let k = keys();
        let wire = SignedManifest::sign(&manifest(), &[&k.a]).unwrap();
        let mut signed: SignedManifest = serde_json::from_slice(&wire).unwrap();
        // Garbage that is not even JSON: refused as a bad signature, so the
        // payload parser never saw it.
        signed.payload = BASE64.encode(b"{not json");
        let err = SignedManifest::verify(
            &serde_json::to_vec(&signed).unwrap(),
            &trusted(&k),
            1,
            &device(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn payload_checks_name_what_was_wrong() {
        let k = keys();
        let t = trusted(&k);
        let verify = |m: &Manifest, d: &Device| {
            // Sign without the publisher-side consistency check.
            let payload = serde_json::to_vec(m).unwrap();
            let sig = k.a.sign(&signed_message(&payload)).unwrap();
            let wire = serde_json::to_vec(&serde_json::json!({
                "payload": BASE64.encode(&payload),
                "signatures": [{"key_id": key_id(k.a.public_key()), "signature": BASE64.encode(&sig.0)}],
            }))
            .unwrap();
            SignedManifest::verify(&wire, &t, 1, d).unwrap_err()
        };
        let mut m = manifest();
        m.compatible = "bw-200".to_owned();
        assert!(matches!(
            verify(&m, &device()),
            Error::WrongHardware { expected, found } if expected == "bw-100" && found == "bw-200"
        ));
        let mut m = manifest();
        m.version_code = 10;
        assert!(matches!(
            verify(&m, &device()),
            Error::Rollback {
                offered: 10,
                installed: 10
            }
        ));
        let mut d = device();
        d.current_version_code = 4;
        assert!(matches!(
            verify(&manifest(), &d),
            Error::TooOldToUpgrade {
                min: 5,
                installed: 4
            }
        ));
        let mut d = device();
        d.security_floor = 4;
        assert!(matches!(
            verify(&manifest(), &d),
            Error::BelowSecurityFloor {
                offered: 3,
                floor: 4
            }
        ));
        let mut m = manifest();
        m.chunks.pop();
        assert!(
            matches!(verify(&m, &device()), Error::Inconsistent { reason } if reason.contains("3 chunk hashes"))
        );
        let mut m = manifest();
        m.chunk_size = 65536 * 3;
        assert!(
            matches!(verify(&m, &device()), Error::Inconsistent { reason } if reason.contains("power of two"))
        );
        let mut m = manifest();
        m.chunk_size = 4096;
        assert!(matches!(verify(&m, &device()), Error::Inconsistent { .. }));
    }

    #[test]
    fn malformed_wire_is_refused() {
        let k = keys();
        for wire in [
            &b"nope"[..],
            b"{\"payload\":\"\",\"signatures\":[],\"x\":1}",
            b"{\"payload\":\"!!\",\"signatures\":[]}",
        ] {
            let err = SignedManifest::verify(wire, &trusted(&k), 1, &device()).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
        }
        let many = serde_json::json!({
            "payload": "",
            "signatures": vec![serde_json::json!({"key_id": "00", "signature": ""}); MAX_SIGNATURES + 1],
        });
        let err = SignedManifest::verify(many.to_string().as_bytes(), &trusted(&k), 1, &device())
            .unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    }

    /// The override waives anti-rollback only: for the one digest it
    /// names, and never signatures, hardware or the minimum version.
    #[test]
    fn the_rollback_waiver_covers_only_its_release_and_only_anti_rollback() {
        let k = keys();
        let mut old = manifest();
        old.version_code = 8;
        old.security_version = 2;
        let wire = SignedManifest::sign(&old, &[&k.a]).unwrap();
        let digest = *SignedManifest::verify_installed(&wire, &trusted(&k), 1, "bw-100")
            .unwrap()
            .digest();
        let danger = |wire: &[u8], device: &Device, waived: &Digest| {
            SignedManifest::danger_verify_waiving_rollback(wire, &trusted(&k), 1, device, waived)
        };
        let err = SignedManifest::verify(&wire, &trusted(&k), 1, &device()).unwrap_err();
        assert!(matches!(err, Error::Rollback { .. }), "{err:?}");
        let v = danger(&wire, &device(), &digest).unwrap();
        assert_eq!(v.manifest(), &old);
        // Another digest waives nothing.
        let err = danger(&wire, &device(), &[0; 32]).unwrap_err();
        assert!(matches!(err, Error::Rollback { .. }), "{err:?}");
        // Only the security floor in the way: waived as well.
        let mut d = device();
        d.current_version_code = 7;
        let err = SignedManifest::verify(&wire, &trusted(&k), 1, &d).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowSecurityFloor {
                    offered: 2,
                    floor: 3
                }
            ),
            "{err:?}"
        );
        danger(&wire, &d, &digest).unwrap();
        // Still checked: the minimum installed version, hardware, the
        // signature threshold.
        let mut d = device();
        d.current_version_code = 4;
        let err = danger(&wire, &d, &digest).unwrap_err();
        assert!(matches!(err, Error::TooOldToUpgrade { .. }), "{err:?}");
        let mut d = device();
        d.compatible = "bw-200".into();
        let err = danger(&wire, &d, &digest).unwrap_err();
        assert!(matches!(err, Error::WrongHardware { .. }), "{err:?}");
        let err = SignedManifest::danger_verify_waiving_rollback(
            &wire,
            &trusted(&k),
            2,
            &device(),
            &digest,
        )
        .unwrap_err();
        assert!(matches!(err, Error::BelowThreshold { .. }), "{err:?}");
        let forged = SignedManifest::sign(&old, &[&k.untrusted]).unwrap();
        let err = danger(&forged, &device(), &digest).unwrap_err();
        assert!(matches!(err, Error::UntrustedSigner { .. }), "{err:?}");
    }

    #[test]
    fn trusted_keys_refuse_duplicates() {
        let k = keys();
        let err =
            TrustedKeys::new(&[k.a.public_key().clone(), k.a.public_key().clone()]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn chunk_ranges_cover_the_image() {
        let m = manifest();
        assert_eq!(m.chunk_range(0), (0, 65536));
        assert_eq!(m.chunk_range(3), (3 * 65536, 1));
        assert_eq!(Manifest::chunk_count_for(65536, 65536), 1);
        assert_eq!(Manifest::chunk_count_for(65537, 65536), 2);
    }
}
