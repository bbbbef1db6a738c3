//! Start-up integrity check (clause 5.2.5.2.1): does a slot hold exactly
//! the image an authentic manifest describes?
//!
//! The outcome of that check is also *measured*: [`StartupMeasurement`]
//! is extended into a TPM PCR through a [`MeasurementSink`], so a remote
//! verifier can tell from a quote which release the device booted and
//! whether it verified.
//!
//! # The measurement (version 1)
//!
//! The digest extended is SHA-256 over these bytes, nothing else:
//!
//! | bytes | content |
//! |---|---|
//! | 29 | [`MEASUREMENT_DOMAIN`], the ASCII `bulwark/startup-integrity/v1` and a NUL |
//! | 1 | the slot: `A` (0x41), `B` (0x42), or 0x00 when the check could not tell |
//! | 1 | the outcome: 0x01 verified, 0x02 failed |
//! | 32 | verified: the manifest's digest, SHA-256 of its signed payload bytes (`AuthenticManifest::digest`, the same for any set of signatures); failed: 32 zero bytes |
//!
//! A verifier holding the signed manifest recomputes the digest from the
//! payload, then the expected PCR as `SHA-256(0^32 || measurement)` (PCR
//! reset at boot, one extend; [`extend_pcr`]). The domain string keeps the
//! digest from meaning anything else; a change of layout changes the
//! version in it.
//!
//! Design decisions:
//! - **Measured after the check, whatever its result.** A failed check is
//!   extended too (with the failure outcome), so the PCR never stays at its
//!   reset value when the agent ran: a device that failed cannot pass for
//!   one that never measured, and a verifier sees the failure instead of
//!   an absence. The failure's reason is not measured (it is free text a
//!   verifier cannot recompute); it is in the event log.
//! - **Committed and trial-committed are one outcome.** Either way the
//!   slot verified against that manifest; the difference is local state.
//! - **One extend per agent start.** An agent restarted without a reboot
//!   extends again: the PCR is then the chain of that many measurements
//!   ([`extend_pcr`] applied each time), and each start logs the
//!   measurement. The sink is the caller's (the agent's `AgentParts`); a
//!   device without a TPM has none and measures nothing.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::boot::SlotName;
use crate::error::{Error, Result};
use crate::manifest::{AuthenticManifest, Digest, sha256};
use crate::parallel::hash_file_chunks;
use crate::progress::InstallProgress;

/// The outcome of [`verify_slot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Chunks the manifest lists.
    pub chunks: u64,
    /// Bytes the manifest covers.
    pub image_size: u64,
    /// The first chunk whose content differs from the manifest (or cannot
    /// be read because the slot is too short); `None` if intact.
    pub first_bad_chunk: Option<u64>,
    /// Wall time of the check.
    pub duration: Duration,
}

impl IntegrityReport {
    /// Whether every chunk matched.
    pub fn is_intact(&self) -> bool {
        self.first_bad_chunk.is_none()
    }
}

/// Hashes the first `image_size` bytes of `slot_path` chunk by chunk on
/// all cores and compares each with `manifest`. Bytes after the image
/// (a block device larger than it) are not covered. An I/O error other
/// than a short slot is an error, not a finding.
pub fn verify_slot(
    slot_path: &Path,
    manifest: &impl AsRef<AuthenticManifest>,
) -> Result<IntegrityReport> {
    verify_slot_with_progress(slot_path, manifest, &InstallProgress::new())
}

/// [`verify_slot`], adding the bytes of each chunk that matched to
/// `progress`'s `verified_bytes` as it goes (the installer's last check).
pub fn verify_slot_with_progress(
    slot_path: &Path,
    manifest: &impl AsRef<AuthenticManifest>,
    progress: &InstallProgress,
) -> Result<IntegrityReport> {
    let started = Instant::now();
    let m = manifest.as_ref().manifest();
    let file = File::open(slot_path).map_err(|e| Error::io("opening slot", slot_path, e))?;
    let count = m.chunk_count();
    let first_bad = AtomicU64::new(count);
    let failure: Mutex<Option<(u64, io::Error)>> = Mutex::new(None);
    hash_file_chunks(
        &file,
        m.chunk_size,
        m.image_size,
        &first_bad,
        &|index, result| {
            let good = match result {
                Ok(digest) => {
                    let good = m.chunk(index) == Some(&digest);
                    if good {
                        progress.verified(m.chunk_range(index).1 as u64);
                    }
                    good
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                Err(e) => {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    if f.as_ref().is_none_or(|(i, _)| index < *i) {
                        *f = Some((index, e));
                    }
                    false
                }
            };
            if !good {
                first_bad.fetch_min(index, Ordering::AcqRel);
            }
        },
    );
    let first_bad = first_bad.into_inner();
    if let Some((index, e)) = failure.into_inner().unwrap_or_else(|p| p.into_inner())
        && index <= first_bad
    {
        return Err(Error::io("reading slot", slot_path, e));
    }
    Ok(IntegrityReport {
        chunks: count,
        image_size: m.image_size,
        first_bad_chunk: (first_bad < count).then_some(first_bad),
        duration: started.elapsed(),
    })
}

/// The domain separator at the start of a [`StartupMeasurement`]'s
/// encoding; its `v1` is the encoding's version.
pub const MEASUREMENT_DOMAIN: &[u8; 29] = b"bulwark/startup-integrity/v1\0";

/// What the start-up check found, in the form that is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMeasurement {
    /// `slot` holds exactly the release whose manifest digest is `manifest`.
    Verified {
        /// The booted slot.
        slot: SlotName,
        /// [`AuthenticManifest::digest`] of the release it holds.
        manifest: Digest,
    },
    /// The check failed or could not run; `slot` if it got that far.
    Failed {
        /// The booted slot, if known.
        slot: Option<SlotName>,
    },
}

impl StartupMeasurement {
    /// The bytes hashed (see the module notes for the layout).
    pub fn encode(&self) -> Vec<u8> {
        let slot_byte = |slot: Option<SlotName>| match slot {
            Some(SlotName::A) => b'A',
            Some(SlotName::B) => b'B',
            None => 0,
        };
        let (slot, outcome, manifest) = match self {
            Self::Verified { slot, manifest } => (slot_byte(Some(*slot)), 1u8, *manifest),
            Self::Failed { slot } => (slot_byte(*slot), 2u8, [0u8; 32]),
        };
        let mut out = Vec::with_capacity(MEASUREMENT_DOMAIN.len() + 2 + 32);
        out.extend_from_slice(MEASUREMENT_DOMAIN);
        out.push(slot);
        out.push(outcome);
        out.extend_from_slice(&manifest);
        out
    }

    /// The digest extended into the PCR: SHA-256 of [`Self::encode`].
    pub fn digest(&self) -> Digest {
        sha256(&self.encode())
    }
}

/// What a TPM does on TPM2_PCR_Extend in the SHA-256 bank:
/// SHA-256(`pcr` || `measurement`). For verifiers and tests.
pub fn extend_pcr(pcr: &Digest, measurement: &Digest) -> Digest {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(pcr);
    both[32..].copy_from_slice(measurement);
    sha256(&both)
}

/// Where the start-up measurement goes: a TPM PCR on a device that has
/// one (the agent's CLI builds it from the keystore's TPM).
pub trait MeasurementSink: std::fmt::Debug + Send + Sync {
    /// Extends the measurement register with `digest`.
    fn extend(&self, digest: &Digest) -> Result<()>;

    /// Names the register for logs, e.g. "TPM PCR 13".
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers computed independently with Python's hashlib:
    /// `hashlib.sha256(b"bulwark/startup-integrity/v1\0" + b"A" + b"\x01" + bytes(range(32))).hexdigest()`
    /// and the same with `b"\x00" + b"\x02" + bytes(32)`; the PCR value
    /// is `hashlib.sha256(bytes(32) + m).hexdigest()`.
    #[test]
    fn measurement_encoding_is_stable() {
        let manifest: Digest = std::array::from_fn(|i| i as u8);
        let verified = StartupMeasurement::Verified {
            slot: SlotName::A,
            manifest,
        };
        assert_eq!(hex::encode(verified.digest()), VERIFIED_A);
        assert_eq!(
            hex::encode(extend_pcr(&[0; 32], &verified.digest())),
            VERIFIED_A_PCR
        );
        let failed = StartupMeasurement::Failed { slot: None };
        assert_eq!(hex::encode(failed.digest()), FAILED_UNKNOWN);
        let failed_b = StartupMeasurement::Failed {
            slot: Some(SlotName::B),
        };
        assert_eq!(hex::encode(failed_b.digest()), FAILED_B);
    }

    const VERIFIED_A: &str = "4a7d4549e9e9edceca603b1ed4921aea963c1c44cabdd2100767b8e9c1958a2e";
    const VERIFIED_A_PCR: &str = "b0dfb6b8433ae2d23467207ae67415de91c755ad5230f0fc6db468d2001cd752";
    const FAILED_UNKNOWN: &str = "fe2d8e399b4630e6a06ed828038db1dd287f02586b0b70074a596c65dc882d60";
    const FAILED_B: &str = "68f44f417cfddb8a334a979393e779a1fcf15a6fefc229b72d6e4d9885962d22";
}
