//! Extending and reading a PCR in the SHA-256 bank, for the start-up
//! integrity measurement (the update crate's `integrity::MeasurementSink`).
//!
//! Only PCRs 8 to 15 are accepted ([`ALLOWED`]): 0-7 belong to the
//! firmware (extending them from the OS would spoil its measurements),
//! 16 (debug) and 23 (application support) can be reset from the OS with
//! TPM2_PCR_Reset, so a value in them proves nothing against local code,
//! and 17-22 belong to dynamic launch (DRTM) and cannot be extended at
//! locality 0. [`DEFAULT_PCR`] is 13. On Linux every PCR of 8-15 has a
//! conventional user (UAPI TPM PCR registry): 8/9 GRUB, 10 IMA, 11 the UKI
//! and systemd-pcrphase, 12 systemd-stub's kernel command line and
//! credentials, 13 systemd-stub's system extension images, 14 shim's MOK
//! certificates, 15 systemd-pcrextend/systemd-cryptsetup (machine-id,
//! file systems, volume keys). 13 is the one a Bulwark device (U-Boot or
//! GRUB A/B slots, no UKI with sysexts) leaves unused, and the one
//! systemd-pcrphase and systemd-pcrextend never touch; a device whose
//! boot chain does use it picks another with `[update] measure_pcr`.
//!
//! Each call connects, works and disconnects, as the keystore does. A PCR
//! needs no authorization value (its auth is empty): the extend runs in a
//! password session with the empty password.

use std::str::FromStr;

use keys::{Error, Result};
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectionList, PcrSlot};
use tss_esapi::tcti_ldr::TctiNameConf;

use crate::BACKEND;
use crate::tpm::Tpm;

/// The PCRs this module extends and reads (see the module notes).
pub const ALLOWED: std::ops::RangeInclusive<u8> = 8..=15;

/// The PCR the start-up measurement goes to unless configured otherwise.
pub const DEFAULT_PCR: u8 = 13;

/// Extends PCR `pcr` of the SHA-256 bank with `digest`: the TPM sets it to
/// SHA-256(old value || digest).
///
/// Errors: [`Error::InvalidInput`] for a malformed TCTI or a PCR outside
/// [`ALLOWED`], [`Error::Unavailable`] if the TPM cannot be reached,
/// [`Error::Backend`] if the TPM refuses (e.g. no SHA-256 bank).
pub fn extend(tcti: &str, pcr: u8, digest: &[u8; 32]) -> Result<()> {
    let (conf, handle, _) = check(tcti, pcr)?;
    let mut tpm = Tpm::connect(&conf, tcti)?;
    let target = target(pcr);
    let value = Digest::try_from(digest.to_vec())
        .map_err(|e| tpm.fail("building the digest", &target, e))?;
    let mut values = DigestValues::new();
    values.set(HashingAlgorithm::Sha256, value);
    tpm.context()
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.pcr_extend(handle, values)
        })
        .map_err(|e| tpm.fail("TPM2_PCR_Extend", &target, e))
}

/// The value of PCR `pcr` in the SHA-256 bank.
///
/// Errors: as [`extend`]; [`Error::Backend`] also if the TPM has no
/// SHA-256 bank allocated for that PCR.
pub fn read(tcti: &str, pcr: u8) -> Result<[u8; 32]> {
    let (conf, _, slot) = check(tcti, pcr)?;
    let mut tpm = Tpm::connect(&conf, tcti)?;
    let target = target(pcr);
    let selection = PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &[slot])
        .build()
        .map_err(|e| tpm.fail("building the PCR selection", &target, e))?;
    let (_, _, digests) = tpm
        .context()
        .execute_without_session(|ctx| ctx.pcr_read(selection))
        .map_err(|e| tpm.fail("TPM2_PCR_Read", &target, e))?;
    let value = digests.value().first().ok_or_else(|| Error::Backend {
        backend: BACKEND,
        operation: "TPM2_PCR_Read",
        detail: format!("{target}: the TPM has no SHA-256 bank for it"),
    })?;
    <[u8; 32]>::try_from(value.value()).map_err(|_| Error::Backend {
        backend: BACKEND,
        operation: "TPM2_PCR_Read",
        detail: format!("{target}: {} bytes instead of 32", value.value().len()),
    })
}

fn target(pcr: u8) -> String {
    format!("PCR {pcr} (SHA-256 bank)")
}

/// Parses the TCTI and checks the PCR against [`ALLOWED`].
fn check(tcti: &str, pcr: u8) -> Result<(TctiNameConf, PcrHandle, PcrSlot)> {
    let conf = TctiNameConf::from_str(tcti).map_err(|_| Error::InvalidInput {
        what: "TPM TCTI",
        reason: format!("{tcti:?} is not a TCTI string such as device:/dev/tpmrm0"),
    })?;
    let refused = || Error::InvalidInput {
        what: "PCR index",
        reason: format!(
            "PCR {pcr} is not one the OS may use for measurements: {}..={} only (0-7 are the \
             firmware's, 16 and 23 are resettable, 17-22 belong to dynamic launch)",
            ALLOWED.start(),
            ALLOWED.end()
        ),
    };
    if !ALLOWED.contains(&pcr) {
        return Err(refused());
    }
    // ESYS_TR_PCR0..31 are 0..31; a PCR slot is its bit in the selection.
    let handle = PcrHandle::try_from(u32::from(pcr)).map_err(|_| refused())?;
    let slot = PcrSlot::try_from(1u32 << pcr).map_err(|_| refused())?;
    Ok((conf, handle, slot))
}
