//! The owner's audited override of anti-rollback (5.2.7, issue #5 item
//! 5): installing one exact release that the version order or the
//! security floor refuses. The floor is never lowered; the owner grants a
//! waiver naming the release's manifest digest (`update::waiver`), which
//! is armed for exactly one install and, stored beside the slot records,
//! lets the start-up check accept that release below the floor.
//!
//! Design decisions:
//! - The waiver is armed in memory, only while the danger route holds
//!   the install flag, and disarmed by a guard when that install ends:
//!   the ordinary install route and the scheduler never see it, so the
//!   same release stays refused there.
//! - The grant checks everything else first (TUF, signatures, threshold,
//!   hardware, minimum version, consistency): only anti-rollback is
//!   waived, and only a release that anti-rollback actually refuses.

use update::manifest::{Device, Digest, Manifest, SignedManifest, VerifiedManifest};
use update::waiver::{RollbackWaiver, WaiverFile};

use super::{InstallError, Updates, manifest_target, tuf_error, update_error};

/// A release the owner asked to install past anti-rollback, checked in
/// everything else.
#[derive(Debug, Clone)]
pub(crate) struct RollbackCandidate {
    /// Its verified manifest.
    pub(crate) manifest: Manifest,
    /// SHA-256 of its signed manifest payload: what the owner acknowledges.
    pub(crate) digest: Digest,
    /// The security floor now.
    pub(crate) floor: u64,
    /// The version code of the running release.
    pub(crate) installed_version_code: u64,
    /// Why the ordinary install refuses it; `None` when it does not (then
    /// there is nothing to override).
    pub(crate) refusal: Option<String>,
}

impl RollbackCandidate {
    /// The digest as the owner acknowledges it: lower-case hex.
    pub(crate) fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// Keeps a waiver armed for the install running under the danger route.
/// Dropped, it disarms the waiver and, unless [`ArmedWaiver::installed`]
/// was called, puts the stored waivers back as they were before the
/// grant: an install that failed (or panicked, or could not be audited)
/// leaves no slot holding the release, so nothing may accept it.
#[derive(Debug)]
pub(crate) struct ArmedWaiver<'a> {
    updates: &'a Updates,
    previous: Vec<RollbackWaiver>,
    installed: bool,
}

impl ArmedWaiver<'_> {
    /// The release is in its slot: the stored waiver stays for the
    /// start-up check.
    pub(crate) fn installed(mut self) {
        self.installed = true;
    }
}

impl Drop for ArmedWaiver<'_> {
    fn drop(&mut self) {
        *self
            .updates
            .armed_waiver
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        if !self.installed
            && let Err(e) = self.updates.waiver_file().store(&self.previous)
        {
            tracing::error!(error = %e, "could not withdraw the rollback waiver");
        }
    }
}

impl Updates {
    /// Where the owner's rollback waiver is kept.
    pub(super) fn waiver_file(&self) -> WaiverFile {
        WaiverFile::new(&self.dir)
    }

    /// The manifest check of an install: the ordinary one, except while
    /// the danger route has armed a waiver, which then waives
    /// anti-rollback for the release it names (and only that one).
    pub(super) fn verify_for_install(
        &self,
        wire: &[u8],
        device: &Device,
    ) -> Result<VerifiedManifest, InstallError> {
        let armed = *self.armed_waiver.lock().unwrap_or_else(|p| p.into_inner());
        match armed {
            Some(digest) => SignedManifest::danger_verify_waiving_rollback(
                wire,
                &self.trusted,
                self.threshold,
                device,
                &digest,
            ),
            None => SignedManifest::verify(wire, &self.trusted, self.threshold, device),
        }
        .map_err(update_error)
    }

    /// Fetches `release`'s manifest through TUF and checks it in
    /// everything but anti-rollback (blocking). The caller holds the
    /// install flag.
    pub(crate) fn rollback_candidate(
        &self,
        release: &str,
    ) -> Result<RollbackCandidate, InstallError> {
        let client = self.client()?;
        let wire = client
            .fetch_target(&manifest_target(release))
            .map_err(tuf_error)?;
        let device = self.device()?;
        let authentic = SignedManifest::verify_installed(
            &wire,
            &self.trusted,
            self.threshold,
            &self.compatible,
        )
        .map_err(update_error)?;
        let digest = *authentic.digest();
        SignedManifest::danger_verify_waiving_rollback(
            &wire,
            &self.trusted,
            self.threshold,
            &device,
            &digest,
        )
        .map_err(update_error)?;
        let refusal = match SignedManifest::verify(&wire, &self.trusted, self.threshold, &device) {
            Ok(_) => None,
            Err(
                e @ (update::Error::Rollback { .. } | update::Error::BelowSecurityFloor { .. }),
            ) => Some(e.to_string()),
            Err(e) => return Err(update_error(e)),
        };
        Ok(RollbackCandidate {
            manifest: authentic.manifest().clone(),
            digest,
            floor: device.security_floor,
            installed_version_code: device.current_version_code,
            refusal,
        })
    }

    /// Grants the waiver for `candidate` on behalf of `owner`: stores it
    /// beside the waiver of the committed release, if that runs under one
    /// (so a restart before the new release is tried, or a fallback to the
    /// committed slot, still finds it), and arms it for the install that
    /// follows while the returned guard lives.
    pub(crate) fn grant_rollback_waiver(
        &self,
        candidate: &RollbackCandidate,
        owner: &str,
    ) -> Result<ArmedWaiver<'_>, InstallError> {
        let file = self.waiver_file();
        let previous = file.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "rollback waiver unreadable: replaced");
            Vec::new()
        });
        let waiver = RollbackWaiver {
            manifest_sha256: candidate.digest_hex(),
            version: candidate.manifest.version.clone(),
            version_code: candidate.manifest.version_code,
            security_version: candidate.manifest.security_version,
            floor: candidate.floor,
            granted_by: owner.to_owned(),
            granted_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let committed = self.committed_digest();
        let mut waivers = vec![waiver];
        waivers.extend(
            previous
                .iter()
                .filter(|w| committed.is_some_and(|d| w.names(&d)) && !w.names(&candidate.digest))
                .cloned(),
        );
        file.store(&waivers)
            .map_err(|e| InstallError::Internal(e.to_string()))?;
        *self.armed_waiver.lock().unwrap_or_else(|p| p.into_inner()) = Some(candidate.digest);
        Ok(ArmedWaiver {
            updates: self,
            previous,
            installed: false,
        })
    }

    /// The manifest digest of the committed slot's release, when its
    /// record verifies.
    fn committed_digest(&self) -> Option<Digest> {
        let active = self.boot.state().ok()?.active;
        let wire = self.records().ok()?.load(active).ok()??;
        SignedManifest::verify_installed(&wire, &self.trusted, self.threshold, &self.compatible)
            .ok()
            .map(|a| *a.digest())
    }
}
