//! After a boot: confirm a trial (commit and raise the security floor) or
//! fall back; refuse a slot below the security floor unless the owner's
//! rollback waiver names its release.

use crate::anti_rollback::SecurityFloor;
use crate::boot::{BootControl, SlotName, Slots};
use crate::error::Result;
use crate::health::{self, HealthCheck};
use crate::integrity::{IntegrityReport, verify_slot};
use crate::manifest::{AuthenticManifest, SignedManifest, TrustedKeys};
use crate::records::SlotRecords;
use crate::waiver::{WaiverFile, waived};

/// Commits `slot`, which holds `release`, then raises the security floor
/// to the release's security version. In this order: a crash in between
/// leaves the floor low until the next commit (harmless, and
/// [`confirm_boot`] raises it again), whereas the reverse order could
/// leave a committed slot below the floor.
pub fn commit_slot(
    boot: &dyn BootControl,
    floor: &dyn SecurityFloor,
    slot: SlotName,
    release: &AuthenticManifest,
) -> Result<()> {
    boot.commit(slot)?;
    floor.raise(release.manifest().security_version)?;
    tracing::info!(%slot, version = %release.manifest().version, "slot committed");
    Ok(())
}

/// How the keys and device identity are checked after a boot.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// Keys trusted to sign releases.
    pub keys: &'a TrustedKeys,
    /// Signatures needed.
    pub threshold: usize,
    /// This device's hardware compatibility string.
    pub compatible: &'a str,
}

/// What [`confirm_boot`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootOutcome {
    /// The system runs its committed slot, which verified.
    Committed {
        /// The slot.
        slot: SlotName,
        /// The running release.
        release: Box<AuthenticManifest>,
    },
    /// The system runs a trial slot, which verified and is now committed.
    TrialCommitted {
        /// The slot.
        slot: SlotName,
        /// The running release.
        release: Box<AuthenticManifest>,
    },
    /// The running slot failed its check. A trial was abandoned (the next
    /// boot uses the committed slot); for the committed slot itself the
    /// caller must enter fail-safe mode.
    Failed {
        /// The slot.
        slot: SlotName,
        /// Whether it was a trial (now abandoned).
        was_trial: bool,
        /// Why: no record, a record that does not verify, or the first
        /// bad chunk.
        reason: String,
    },
}

/// The start-up check (5.2.5.2.1) and trial confirmation: verifies the
/// booted slot against the signed manifest it was installed from; if it
/// is a trial that verifies, commits it and raises the floor; if a trial
/// fails, falls back.
pub fn confirm_boot(
    boot: &dyn BootControl,
    slots: &Slots,
    records: &SlotRecords,
    floor: &dyn SecurityFloor,
    trust: Trust<'_>,
) -> Result<BootOutcome> {
    confirm_boot_with_health(boot, slots, records, floor, trust, &[])
}

/// [`confirm_boot`], where a trial that verifies must also pass `health`
/// (run in order, after the integrity check) to be committed; a failing
/// check abandons the trial like a failed integrity check does. The
/// committed slot is not re-judged by health checks: there is nothing
/// older to fall back to.
pub fn confirm_boot_with_health(
    boot: &dyn BootControl,
    slots: &Slots,
    records: &SlotRecords,
    floor: &dyn SecurityFloor,
    trust: Trust<'_>,
    health: &[HealthCheck],
) -> Result<BootOutcome> {
    confirm_boot_with_waiver(boot, slots, records, floor, trust, health, None)
}

/// [`confirm_boot_with_health`], which also refuses a slot whose release
/// is below the security floor (a boot loader or an attacker falling back
/// to an old, vulnerable slot after the floor rose) unless a waiver in
/// `waiver` names that release (see [`crate::waiver`]). Committing a trial
/// withdraws every waiver but the one naming the committed release. A
/// waiver file that cannot be read counts as none: the floor holds.
pub fn confirm_boot_with_waiver(
    boot: &dyn BootControl,
    slots: &Slots,
    records: &SlotRecords,
    floor: &dyn SecurityFloor,
    trust: Trust<'_>,
    health: &[HealthCheck],
    waiver: Option<&WaiverFile>,
) -> Result<BootOutcome> {
    let booted = boot.booted()?;
    let state = boot.state()?;
    let was_trial = booted != state.active;
    let waivers = waiver.map_or_else(Vec::new, |file| {
        file.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "rollback waiver unreadable: not applied");
            Vec::new()
        })
    });
    let floor_now = floor.get()?;
    let checked = check_slot(slots, records, booted, trust)?.and_then(|release| {
        let m = release.manifest();
        if m.security_version < floor_now {
            if !waived(&waivers, release.digest()) {
                return Err(format!(
                    "slot {booted} holds release {} with security version {}, below the security floor {floor_now}: refused as a rollback",
                    m.version, m.security_version
                ));
            }
            tracing::warn!(
                slot = %booted,
                version = %m.version,
                security_version = m.security_version,
                floor = floor_now,
                "release below the security floor accepted under the owner's rollback waiver"
            );
        }
        if was_trial {
            health::run_all(health)?;
        }
        Ok(release)
    });
    match checked {
        Ok(release) => {
            if was_trial {
                commit_slot(boot, floor, booted, &release)?;
                let keep: Vec<_> = waivers
                    .iter()
                    .filter(|w| w.names(release.digest()))
                    .cloned()
                    .collect();
                if let Some(file) = waiver
                    && keep.len() != waivers.len()
                {
                    // A waived release may still sit in the other slot:
                    // from now on it is a rollback like any other.
                    file.store(&keep)?;
                }
                Ok(BootOutcome::TrialCommitted {
                    slot: booted,
                    release: Box::new(release),
                })
            } else {
                floor.raise(release.manifest().security_version)?;
                Ok(BootOutcome::Committed {
                    slot: booted,
                    release: Box::new(release),
                })
            }
        }
        Err(reason) => {
            tracing::error!(slot = %booted, %reason, "booted slot failed its integrity check");
            if was_trial {
                boot.fallback()?;
            }
            Ok(BootOutcome::Failed {
                slot: booted,
                was_trial,
                reason,
            })
        }
    }
}

/// The release `slot` holds, verified against its record; `Err(reason)`
/// for a finding, `Err` of the outer result for an I/O failure.
pub fn check_slot(
    slots: &Slots,
    records: &SlotRecords,
    slot: SlotName,
    trust: Trust<'_>,
) -> Result<Result<AuthenticManifest, String>> {
    let Some(wire) = records.load(slot)? else {
        return Ok(Err(format!("slot {slot} has no release record")));
    };
    let release = match SignedManifest::verify_installed(
        &wire,
        trust.keys,
        trust.threshold,
        trust.compatible,
    ) {
        Ok(release) => release,
        Err(e) => return Ok(Err(format!("slot {slot}'s record does not verify: {e}"))),
    };
    let report: IntegrityReport = verify_slot(&slots.get(slot).path, &release)?;
    Ok(match report.first_bad_chunk {
        None => Ok(release),
        Some(index) => Err(format!(
            "slot {slot} differs from its release at chunk {index}"
        )),
    })
}
