//! Secure updates on the device (ISO/IEC 27402 5.2.7) and the start-up
//! integrity check with its fail-safe mode (5.2.5.2.1), wired from the
//! boot file's `[update]` section to the `update` and `update-tuf` crates.
//!
//! - [`Updates::open`] reads the release-signing keys, the repository's
//!   provisioned root and opens the boot loader.
//! - [`Updates::startup_check`] runs before any listener starts: it checks
//!   the booted slot against the signed manifest it was installed from
//!   ([`update::commit::confirm_boot_with_waiver`]), commits a trial that
//!   verifies and passes the `[[update.health_checks]]` (raising
//!   the security floor) and, on a mismatch, puts the agent in fail-safe
//!   mode, which only a restart after a good check ends. Its outcome,
//!   good or bad, is then extended into the measurement sink (a TPM PCR,
//!   `[update] measure_pcr`) when there is one
//!   ([`update::integrity::StartupMeasurement`]).
//! - [`Updates::install`] fetches `<release>.manifest.json` through TUF,
//!   verifies it ([`SignedManifest::verify`]: keys, threshold, hardware,
//!   version, security floor) and streams `<release>.image` into the
//!   inactive slot, each chunk verified before it is written.
//! - [`check_once`] is one policy-driven update check (5.2.7.2 b), shared
//!   by the scheduler task ([`scheduler`]) and `POST /api/v1/update/check`:
//!   it finds the newest release that verifies for this device, announces
//!   it once, and installs it when the settings' `updates` policy allows it
//!   now, through the same [`run_install`] path as the install route.
//! - [`danger`] is the owner's audited override of anti-rollback for one
//!   exact release; the start-up check refuses any other slot below the
//!   security floor as a rollback.
//!
//! Design decisions:
//! - Release files are two TUF targets named after the release
//!   (`<release>.manifest.json`, `<release>.image`): TUF target names are
//!   plain file names, so a release cannot be a directory.
//! - The security floor lives in the encrypted store (security floor
//!   category, name [`FLOOR`]): it survives a factory reset and only rises
//!   ([`StoreFloor`]). Given a monotonic counter (a TPM NV counter), the
//!   floor in force is the higher of the store's and the counter's
//!   ([`update::anti_rollback::CounterBackedFloor`]), so putting back an
//!   old copy of the store does not lower it.
//! - Slot records, the install journal and the TUF datastore live in
//!   `<state_dir>/update/` ([`DIR`]), beside the store, where the update
//!   crate's crash-safe ordering expects them.
//! - One install at a time: a flag taken before the work starts and
//!   released by a guard the blocking task owns, so a request that times
//!   out does not let a second install write the same slot.
//! - Maintenance windows are read on the wall clock of `time.timezone`
//!   (jiff, with the tz database embedded for devices without one).
//! - The release last announced is remembered in memory only: after a
//!   restart the newest release is announced once more, which errs on the
//!   side of telling the user.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use agent_config::{
    BootLoader, InstallMode, MaintenanceWindow, RestartMode, TimeOfDay, UpdateSection,
    UpdateSettings, Weekday,
};
use anyhow::Context;
use serde::Serialize;
use update::anti_rollback::{CounterBackedFloor, MonotonicCounter, SecurityFloor};
use update::boot::{BootControl, FileBootControl, GrubEnv, SlotName, Slots, UBootEnv};
use update::commit::{BootOutcome, Trust, confirm_boot_with_waiver};
use update::health::HealthCheck;
use update::install::{Installer, RANGE_GAP, RangedSource};
use update::integrity::{MeasurementSink, StartupMeasurement};
use update::manifest::{Device, Manifest, SignedManifest, TrustedKeys};
use update::records::SlotRecords;
use utoipa::ToSchema;

use store::eventlog::{Event, Outcome, Severity};

use crate::progress::{InstallProgressView, RunningInstall};
use crate::state::Shared;

pub(crate) mod danger;

/// Where update state lives under the agent's state directory.
pub const DIR: &str = "update";

/// Store name of the security floor for releases (the anti-rollback
/// security version).
pub(crate) const FLOOR: &str = "update.security-version";

/// Largest PEM key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Largest provisioned root metadata read.
const MAX_ROOT_FILE: u64 = 1024 * 1024;

/// How long `update.restart_command` may run.
const RESTART_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most release manifests one check fetches: bounds the work a
/// repository listing can cause.
const MAX_CHECKED_RELEASES: usize = 256;

/// The suffix of a release's manifest target.
const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The TUF target holding a release's signed manifest.
pub(crate) fn manifest_target(release: &str) -> String {
    format!("{release}{MANIFEST_SUFFIX}")
}

/// The TUF target holding a release's image.
pub(crate) fn image_target(release: &str) -> String {
    format!("{release}.image")
}

/// A release name: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or
/// digit (so that both target names are plain TUF file names).
pub(crate) fn valid_release(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The security floor in the agent's encrypted store.
#[derive(Debug)]
pub(crate) struct StoreFloor {
    store: Arc<store::Store>,
    // Serialises the read-compare-raise of concurrent commits.
    lock: Mutex<()>,
}

impl StoreFloor {
    pub(crate) fn new(store: Arc<store::Store>) -> Self {
        Self {
            store,
            lock: Mutex::new(()),
        }
    }

    fn failed(&self, e: store::Error) -> update::Error {
        update::Error::Io {
            action: "using the security floor in",
            path: self.store.path().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl SecurityFloor for StoreFloor {
    fn get(&self) -> update::Result<u64> {
        self.store
            .floor(FLOOR)
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.failed(e))
    }

    fn raise(&self, version: u64) -> update::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if version <= self.get()? {
            return Ok(());
        }
        self.store
            .raise_floor(FLOOR, version)
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }
}

struct Repository {
    metadata_url: String,
    targets_url: String,
    root: Vec<u8>,
    /// Trust anchors for an `https://` mirror (`ca_file` or the platform).
    tls_roots: update_tuf::TlsRoots,
}

/// What the start-up check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Startup {
    /// The committed slot verified.
    Verified {
        /// The slot.
        slot: SlotName,
        /// Its release's version.
        version: String,
        /// Accepted below anti-rollback under the owner's waiver.
        waived: bool,
    },
    /// A trial slot verified and is now committed.
    Committed {
        /// The slot.
        slot: SlotName,
        /// Its release's version.
        version: String,
        /// Accepted below anti-rollback under the owner's waiver.
        waived: bool,
    },
    /// The running slot did not verify: fail-safe mode.
    Failed {
        /// What was found.
        finding: String,
    },
}

/// A release as the API reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReleaseInfo {
    /// Human version.
    version: String,
    /// Monotonic version number.
    version_code: u64,
    /// Security version (anti-rollback).
    security_version: u64,
    /// Image size in bytes.
    image_size: u64,
}

impl From<&Manifest> for ReleaseInfo {
    fn from(m: &Manifest) -> Self {
        Self {
            version: m.version.clone(),
            version_code: m.version_code,
            security_version: m.security_version,
            image_size: m.image_size,
        }
    }
}

/// One slot and the release it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SlotInfo {
    /// `a` or `b`.
    slot: String,
    /// The verified release recorded for it; absent when it holds none
    /// (never installed, being written, or its record does not verify).
    release: Option<ReleaseInfo>,
    /// Why its record does not verify, when it does not.
    record_problem: Option<String>,
}

/// A slot on trial.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct TrialInfo {
    /// The slot marked "try once".
    slot: String,
    /// Boot attempts it has left.
    attempts_left: u32,
}

/// The boot loader's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct BootInfo {
    /// The committed slot.
    active: String,
    /// The slot the running system booted from.
    booted: String,
    /// A slot marked to be tried on the next boot.
    trial: Option<TrialInfo>,
}

/// What the last install did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InstallSummary {
    /// The release name asked for.
    pub(crate) release: String,
    /// `installed` or `failed`.
    #[schema(pattern = "^(installed|failed)$")]
    pub(crate) outcome: String,
    /// Why it failed.
    pub(crate) message: Option<String>,
    /// The release's version, once its manifest verified.
    pub(crate) version: Option<String>,
    /// The slot written and marked "try once".
    pub(crate) slot: Option<String>,
    /// Bytes downloaded.
    pub(crate) downloaded_bytes: u64,
    /// Bytes copied from the active slot instead (adaptive update).
    pub(crate) reused_bytes: u64,
    /// Chunks in the image.
    pub(crate) chunks: u64,
    /// Wall time in milliseconds.
    pub(crate) duration_ms: u64,
    /// When it ended (Unix seconds).
    pub(crate) finished_unix: i64,
}

/// Update status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UpdateStatus {
    /// Whether the boot file configures updates (`[update]`).
    configured: bool,
    /// Whether installs can fetch releases (`[update.repository]`).
    repository_configured: bool,
    /// The running slot failed its start-up integrity check: every route
    /// but status, sign-in, notifications and updates is refused.
    fail_safe: bool,
    /// What the start-up integrity check found, in fail-safe mode.
    integrity_failure: Option<String>,
    /// This device's hardware compatibility string.
    compatible: Option<String>,
    /// The boot loader's state.
    boot: Option<BootInfo>,
    /// Both slots.
    slots: Vec<SlotInfo>,
    /// Releases below this security version are refused.
    security_floor: Option<u64>,
    /// The last install since the agent started.
    last_install: Option<InstallSummary>,
    /// A release is installed and waits for a restart to be tried.
    restart_pending: bool,
    /// Whether the agent can restart the device (`update.restart_command`).
    restart_configured: bool,
}

impl UpdateStatus {
    pub(crate) fn not_configured() -> Self {
        Self {
            configured: false,
            repository_configured: false,
            fail_safe: false,
            integrity_failure: None,
            compatible: None,
            boot: None,
            slots: Vec::new(),
            security_floor: None,
            last_install: None,
            restart_pending: false,
            restart_configured: false,
        }
    }
}

/// Why an install was refused or failed; the API maps each to a status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    /// The release is not in the repository.
    #[error("{0}")]
    NotFound(String),
    /// The release (manifest or image) was refused: a clear reason.
    #[error("{0}")]
    Refused(String),
    /// The repository or the transfer failed (TUF refusals included).
    #[error("{0}")]
    Repository(String),
    /// The device's state does not allow an install now.
    #[error("{0}")]
    Busy(String),
    /// Something failed on the device.
    #[error("{0}")]
    Internal(String),
}

/// The device's update engine.
pub(crate) struct Updates {
    compatible: String,
    slots: Slots,
    boot: Box<dyn BootControl>,
    dir: PathBuf,
    trusted: TrustedKeys,
    threshold: usize,
    floor: Box<dyn SecurityFloor>,
    repository: Option<Repository>,
    finding: RwLock<Option<String>>,
    /// The install that runs now: the one-install-at-a-time flag, and
    /// its progress.
    running: Mutex<Option<RunningInstall>>,
    last_install: Mutex<Option<InstallSummary>>,
    /// Version code of the release last announced as available.
    announced: Mutex<Option<u64>>,
    /// Checks a trial must pass before it is committed.
    health: Vec<HealthCheck>,
    /// Restarts the device into an installed release (`None`: the user
    /// must).
    restart_command: Option<Vec<String>>,
    /// The announced automatic restart, cancelled by a newer one or by
    /// shutdown.
    pending_restart: Mutex<Option<tokio::task::AbortHandle>>,
    /// Where the start-up check's outcome is measured (a TPM PCR).
    measurement: Option<Box<dyn MeasurementSink>>,
    /// The manifest digest of the release whose anti-rollback the owner
    /// waived, only while the danger route installs it ([`danger`]).
    armed_waiver: Mutex<Option<update::manifest::Digest>>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates")
            .field("compatible", &self.compatible)
            .field("slots", &self.slots)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

/// Frees the install flag when the install ends, however it ends.
#[derive(Debug)]
pub(crate) struct InstallGuard(Arc<Updates>);

impl Drop for InstallGuard {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = None;
    }
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= max,
        "{} is {len} bytes; at most {max} are read",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

impl Updates {
    /// Reads the keys and the provisioned root, opens the boot loader.
    /// The security floor is the store's, backed by `floor_counter` if
    /// there is one.
    pub(crate) fn open(
        section: &UpdateSection,
        state_dir: &Path,
        store: Arc<store::Store>,
        floor_counter: Option<Box<dyn MonotonicCounter>>,
        measurement: Option<Box<dyn MeasurementSink>>,
    ) -> anyhow::Result<Self> {
        let dir = state_dir.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut keys = Vec::with_capacity(section.trusted_keys.len());
        for (i, path) in section.trusted_keys.iter().enumerate() {
            let field = format!("update.trusted_keys[{i}]");
            let pem = String::from_utf8(read_bounded(path, MAX_KEY_FILE)?)
                .with_context(|| format!("{field}: {} is not text", path.display()))?;
            let key = agent_config::public_key_from_pem(&field, &pem)
                .with_context(|| format!("{field}: {}", path.display()))?;
            keys.push(key);
        }
        let trusted = TrustedKeys::new(&keys).context("update.trusted_keys")?;
        let booted = || -> anyhow::Result<SlotName> {
            if let Some(slot) = &section.booted_slot {
                return Ok(slot.parse()?);
            }
            let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
            update::boot::booted_from_cmdline(&cmdline).context(
                "update.booted_slot is not set and /proc/cmdline names no slot (bulwark.slot= or rauc.slot=)",
            )
        };
        let boot: Box<dyn BootControl> = match section.boot_loader()? {
            BootLoader::File(path) => {
                let initial = match &section.booted_slot {
                    Some(slot) => slot.parse()?,
                    None => SlotName::A,
                };
                Box::new(
                    FileBootControl::create(&path, initial)
                        .with_context(|| format!("opening the boot state {}", path.display()))?,
                )
            }
            BootLoader::UBoot(config) => Box::new(UBootEnv::uboot(Some(config), booted()?)),
            BootLoader::Grub(file) => Box::new(GrubEnv::grub(file, booted()?)),
        };
        let repository = match &section.repository {
            Some(r) => Some(Repository {
                metadata_url: r.metadata_url.clone(),
                targets_url: r.targets_url.clone(),
                root: read_bounded(&r.root_file, MAX_ROOT_FILE)
                    .context("update.repository.root_file")?,
                tls_roots: match &r.ca_file {
                    Some(path) => update_tuf::TlsRoots::CaPem(
                        read_bounded(path, MAX_ROOT_FILE).context("update.repository.ca_file")?,
                    ),
                    None => update_tuf::TlsRoots::Platform,
                },
            }),
            None => None,
        };
        Ok(Self {
            compatible: section.compatible.clone(),
            slots: Slots::new(&section.slot_a, &section.slot_b),
            boot,
            dir,
            trusted,
            threshold: section.threshold as usize,
            floor: match floor_counter {
                Some(counter) => Box::new(CounterBackedFloor::new(StoreFloor::new(store), counter)),
                None => Box::new(StoreFloor::new(store)),
            },
            repository,
            finding: RwLock::new(None),
            running: Mutex::new(None),
            last_install: Mutex::new(None),
            announced: Mutex::new(None),
            health: section
                .health_checks
                .iter()
                .map(|hc| HealthCheck {
                    name: hc.name.clone(),
                    program: PathBuf::from(&hc.command[0]),
                    args: hc.command[1..].to_vec(),
                    timeout: std::time::Duration::from_secs(u64::from(hc.timeout_secs)),
                })
                .collect(),
            restart_command: section.restart_command.clone(),
            pending_restart: Mutex::new(None),
            measurement,
            armed_waiver: Mutex::new(None),
        })
    }

    fn trust(&self) -> Trust<'_> {
        Trust {
            keys: &self.trusted,
            threshold: self.threshold,
            compatible: &self.compatible,
        }
    }

    fn records(&self) -> update::Result<SlotRecords> {
        SlotRecords::new(&self.dir)
    }

    /// The start-up integrity check (blocking: hashes the running slot on
    /// all cores). A failure, including one to run the check at all,
    /// enters fail-safe mode: an unverifiable system is not trusted.
    pub(crate) fn startup_check(&self) -> Startup {
        let outcome = self.records().and_then(|records| {
            confirm_boot_with_waiver(
                &*self.boot,
                &self.slots,
                &records,
                &*self.floor,
                self.trust(),
                &self.health,
                Some(&self.waiver_file()),
            )
        });
        self.measure(&outcome);
        // Whether the running release stands only by the owner's waiver
        // (the check keeps the waiver naming it, and only that one).
        let waived = |release: &update::manifest::AuthenticManifest| {
            self.waiver_file()
                .load()
                .is_ok_and(|w| update::waiver::waived(&w, release.digest()))
        };
        let startup = match outcome {
            Ok(BootOutcome::Committed { slot, release }) => Startup::Verified {
                slot,
                version: release.manifest().version.clone(),
                waived: waived(&release),
            },
            Ok(BootOutcome::TrialCommitted { slot, release }) => Startup::Committed {
                slot,
                version: release.manifest().version.clone(),
                waived: waived(&release),
            },
            Ok(BootOutcome::Failed {
                slot,
                was_trial,
                reason,
            }) => Startup::Failed {
                finding: if was_trial {
                    format!(
                        "{reason}; the trial was abandoned: the next boot returns to slot {}",
                        slot.other()
                    )
                } else {
                    reason
                },
            },
            Ok(other) => Startup::Failed {
                finding: format!("unexpected start-up check outcome: {other:?}"),
            },
            Err(e) => Startup::Failed {
                finding: format!("the start-up integrity check could not run: {e}"),
            },
        };
        if let Startup::Failed { finding } = &startup
            && let Ok(mut slot) = self.finding.write()
        {
            *slot = Some(finding.clone());
        }
        startup
    }

    /// Extends the measurement sink, if any, with the check's outcome
    /// (failures too, see `update::integrity`). A sink that fails is
    /// logged, not fatal: the check's verdict stands on its own, and a
    /// verifier sees the missing measurement as a PCR that does not match.
    fn measure(&self, outcome: &update::Result<BootOutcome>) {
        let Some(sink) = &self.measurement else {
            return;
        };
        let measurement = match outcome {
            Ok(BootOutcome::Committed { slot, release })
            | Ok(BootOutcome::TrialCommitted { slot, release }) => StartupMeasurement::Verified {
                slot: *slot,
                manifest: *release.digest(),
            },
            Ok(BootOutcome::Failed { slot, .. }) => {
                StartupMeasurement::Failed { slot: Some(*slot) }
            }
            // An outcome this agent does not know is not a verified one.
            Ok(_) | Err(_) => StartupMeasurement::Failed { slot: None },
        };
        let digest = measurement.digest();
        match sink.extend(&digest) {
            Ok(()) => tracing::info!(
                register = %sink.describe(),
                measurement = %hex::encode(digest),
                ?measurement,
                "measured the start-up integrity check"
            ),
            Err(e) => tracing::error!(
                register = %sink.describe(),
                error = %e,
                "could not measure the start-up integrity check"
            ),
        }
    }

    /// The integrity finding while in fail-safe mode.
    pub(crate) fn fail_safe(&self) -> Option<String> {
        self.finding.read().ok().and_then(|f| f.clone())
    }

    /// Whether installs can fetch releases.
    pub(crate) fn has_repository(&self) -> bool {
        self.repository.is_some()
    }

    /// Takes the install flag for an install of `release`; `None` while
    /// another install runs.
    pub(crate) fn try_begin(self: &Arc<Self>, release: &str) -> Option<InstallGuard> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return None;
        }
        *running = Some(RunningInstall::new(release));
        Some(InstallGuard(self.clone()))
    }

    /// The running install's progress, or the last install's outcome.
    pub(crate) fn progress(&self) -> InstallProgressView {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let last = self.last_install.lock().ok().and_then(|l| l.clone());
        InstallProgressView::new(running, last)
    }

    /// The counters of the running install (fresh ones when the caller
    /// did not take the flag through [`Self::try_begin`]).
    fn progress_counters(&self) -> Arc<update::InstallProgress> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(
                || Arc::new(update::InstallProgress::new()),
                |r| r.progress(),
            )
    }

    /// Keeps `summary` as the last install report.
    pub(crate) fn remember(&self, summary: InstallSummary) {
        if let Ok(mut last) = self.last_install.lock() {
            *last = Some(summary);
        }
    }

    /// The status (blocking: reads the boot state and verifies the slot
    /// records' signatures).
    pub(crate) fn status(&self) -> update::Result<UpdateStatus> {
        let state = self.boot.state()?;
        let booted = self.boot.booted()?;
        let records = self.records()?;
        let mut slots = Vec::new();
        for slot in [SlotName::A, SlotName::B] {
            let (release, record_problem) = match records.load(slot)? {
                None => (None, None),
                Some(wire) => match SignedManifest::verify_installed(
                    &wire,
                    &self.trusted,
                    self.threshold,
                    &self.compatible,
                ) {
                    Ok(authentic) => (Some(ReleaseInfo::from(authentic.manifest())), None),
                    Err(e) => (None, Some(e.to_string())),
                },
            };
            slots.push(SlotInfo {
                slot: slot.to_string(),
                release,
                record_problem,
            });
        }
        let integrity_failure = self.fail_safe();
        Ok(UpdateStatus {
            configured: true,
            repository_configured: self.has_repository(),
            fail_safe: integrity_failure.is_some(),
            integrity_failure,
            compatible: Some(self.compatible.clone()),
            boot: Some(BootInfo {
                active: state.active.to_string(),
                booted: booted.to_string(),
                trial: state.tried.map(|(slot, attempts_left)| TrialInfo {
                    slot: slot.to_string(),
                    attempts_left,
                }),
            }),
            slots,
            security_floor: Some(self.floor.get()?),
            last_install: self.last_install.lock().ok().and_then(|l| l.clone()),
            restart_pending: Self::trial_waits(&state, booted),
            restart_configured: self.restart_command.is_some(),
        })
    }

    /// Whether a slot is marked to be tried and is not the one running.
    fn trial_waits(state: &update::boot::BootState, booted: SlotName) -> bool {
        state
            .tried
            .is_some_and(|(slot, attempts)| slot != booted && attempts > 0)
    }

    /// Whether an installed release waits for a restart.
    pub(crate) fn restart_pending(&self) -> update::Result<bool> {
        Ok(Self::trial_waits(&self.boot.state()?, self.boot.booted()?))
    }

    /// Whether the agent can restart the device.
    pub(crate) fn can_restart(&self) -> bool {
        self.restart_command.is_some()
    }

    /// Runs `update.restart_command` (blocking). It normally returns at
    /// once (the system then stops the agent); a failure is reported.
    pub(crate) fn restart_now(&self) -> Result<(), String> {
        let Some(command) = &self.restart_command else {
            return Err(
                "no update.restart_command is configured: restart the device by hand".into(),
            );
        };
        let check = HealthCheck {
            name: "restart".into(),
            program: PathBuf::from(&command[0]),
            args: command[1..].to_vec(),
            timeout: RESTART_COMMAND_TIMEOUT,
        };
        update::health::run(&check)
    }

    /// Replaces the scheduled restart, if any, by `next`.
    pub(crate) fn set_pending_restart(&self, next: Option<tokio::task::AbortHandle>) {
        if let Ok(mut pending) = self.pending_restart.lock()
            && let Some(previous) = std::mem::replace(&mut *pending, next)
        {
            previous.abort();
        }
    }

    /// Cancels an announced automatic restart (agent shutdown).
    pub(crate) fn cancel_pending_restart(&self) {
        self.set_pending_restart(None);
    }

    /// The version code of the running release: that of the booted slot's
    /// record when it verifies, else 0 (the security floor still holds).
    fn current_version_code(&self) -> update::Result<u64> {
        let booted = self.boot.booted()?;
        let Some(wire) = self.records()?.load(booted)? else {
            return Ok(0);
        };
        Ok(
            SignedManifest::verify_installed(
                &wire,
                &self.trusted,
                self.threshold,
                &self.compatible,
            )
            .map(|a| a.manifest().version_code)
            .unwrap_or(0),
        )
    }

    /// A verified view of the repository (blocking: refreshes the TUF
    /// metadata).
    fn client(&self) -> Result<update_tuf::Client, InstallError> {
        let repo = self.repository.as_ref().ok_or_else(|| {
            InstallError::Busy("no update repository is configured ([update.repository])".into())
        })?;
        update_tuf::Client::new_with_tls(
            &repo.root,
            &repo.metadata_url,
            &repo.targets_url,
            &self.dir.join("tuf"),
            update_tuf::Limits {
                max_fetch_target_size: update::manifest::MAX_WIRE_BYTES as u64,
                ..update_tuf::Limits::default()
            },
            Arc::new(update_tuf::SystemClock),
            &repo.tls_roots,
        )
        .map_err(tuf_error)
    }

    /// What a release is checked against.
    fn device(&self) -> Result<Device, InstallError> {
        Ok(Device {
            compatible: self.compatible.clone(),
            current_version_code: self.current_version_code().map_err(update_error)?,
            security_floor: self.floor.get().map_err(update_error)?,
        })
    }

    /// Finds the newest release in the repository (blocking): among the
    /// releases that list both targets, the manifest with the highest
    /// version code that is authentic for this device (release keys,
    /// threshold, hardware). `available` tells whether it may be installed
    /// now (newer than the running release, not below its minimum version
    /// or the security floor). Manifests that do not verify are skipped
    /// and logged: a bad release must not hide a good one.
    pub(crate) fn find_newest(&self) -> Result<Found, InstallError> {
        let client = self.client()?;
        let targets = client.targets();
        let names: std::collections::HashSet<&str> =
            targets.iter().map(|t| t.name.as_str()).collect();
        let releases: Vec<&str> = targets
            .iter()
            .filter_map(|t| t.name.strip_suffix(MANIFEST_SUFFIX))
            .filter(|r| valid_release(r) && names.contains(image_target(r).as_str()))
            .collect();
        if releases.len() > MAX_CHECKED_RELEASES {
            tracing::warn!(
                releases = releases.len(),
                checked = MAX_CHECKED_RELEASES,
                "the update repository lists more releases than one check fetches"
            );
        }
        let mut newest: Option<(String, Vec<u8>, Manifest)> = None;
        for release in releases.into_iter().take(MAX_CHECKED_RELEASES) {
            let wire = match client.fetch_target(&manifest_target(release)) {
                Ok(wire) => wire,
                Err(e @ update_tuf::Error::Io { .. }) => return Err(tuf_error(e)),
                Err(e) => {
                    tracing::warn!(%release, error = %e, "release manifest not fetched");
                    continue;
                }
            };
            let manifest = match SignedManifest::verify_installed(
                &wire,
                &self.trusted,
                self.threshold,
                &self.compatible,
            ) {
                Ok(authentic) => authentic.manifest().clone(),
                Err(e) => {
                    tracing::warn!(%release, error = %e, "release manifest does not verify");
                    continue;
                }
            };
            if newest
                .as_ref()
                .is_none_or(|(_, _, m)| manifest.version_code > m.version_code)
            {
                newest = Some((release.to_owned(), wire, manifest));
            }
        }
        let device = self.device()?;
        let available = newest.as_ref().is_some_and(|(_, wire, _)| {
            SignedManifest::verify(wire, &self.trusted, self.threshold, &device).is_ok()
        });
        Ok(Found {
            newest: newest.map(|(release, _, m)| NewestRelease {
                release,
                version: m.version,
                version_code: m.version_code,
                security_version: m.security_version,
                image_size: m.image_size,
            }),
            installed_version_code: device.current_version_code,
            available,
        })
    }

    /// Whether `version_code` is announced for the first time (and
    /// remembers it).
    fn first_announcement(&self, version_code: u64) -> bool {
        let Ok(mut announced) = self.announced.lock() else {
            return true;
        };
        if announced.is_some_and(|a| a >= version_code) {
            return false;
        }
        *announced = Some(version_code);
        true
    }

    /// Fetches, verifies and installs `release` into the inactive slot and
    /// marks it "try once" (blocking). `before_write` runs once the
    /// manifest verified and before the first byte is written: the
    /// notification that the device is about to be interrupted.
    pub(crate) fn install(
        &self,
        release: &str,
        data_budget: u64,
        before_write: &dyn Fn(&Manifest),
    ) -> Result<InstallSummary, InstallError> {
        let started = Instant::now();
        let client = self.client()?;
        let wire = client
            .fetch_target(&manifest_target(release))
            .map_err(tuf_error)?;
        let device = self.device()?;
        let verified = self.verify_for_install(&wire, &device)?;
        let installer = Installer::new(&*self.boot, &self.slots, &self.dir)
            .map_err(update_error)?
            .with_progress(self.progress_counters());
        if data_budget > 0 {
            let needed = installer.bytes_to_fetch(&verified).map_err(update_error)?;
            if needed > data_budget {
                return Err(InstallError::Refused(format!(
                    "release {release} needs {needed} bytes of download (after reusing what the active slot holds), over updates.data_budget_bytes ({data_budget})"
                )));
            }
        }
        before_write(verified.manifest());
        // The image is fetched in ranges (HTTP Range) where chunks are
        // needed: chunks reused from the active slot, or left verified in
        // the slot by an attempt cut mid-way, are not downloaded. Every
        // chunk is still checked against the signed manifest before it is
        // written.
        let image = image_target(release);
        let open = |at: u64, end: Option<u64>| {
            if at > 0 {
                tracing::info!(release, offset = at, end, "image download from an offset");
            }
            match end {
                Some(end) => client.open_target_range(&image, at, end),
                None => client.open_target_from(&image, at),
            }
            .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let mut source = RangedSource::new(open, RANGE_GAP);
        let report = installer
            .install(&verified, &mut source)
            .map_err(update_error)?;
        Ok(InstallSummary {
            release: release.to_owned(),
            outcome: "installed".into(),
            message: None,
            version: Some(verified.manifest().version.clone()),
            slot: Some(report.slot.to_string()),
            downloaded_bytes: report.downloaded_bytes,
            reused_bytes: report.reused_bytes,
            chunks: report.chunks,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            finished_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        })
    }
}

/// What [`Updates::find_newest`] found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    newest: Option<NewestRelease>,
    installed_version_code: u64,
    available: bool,
}

/// The newest release a check found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct NewestRelease {
    /// The release's name in the repository.
    release: String,
    /// Human version.
    version: String,
    /// Monotonic version number.
    version_code: u64,
    /// Security version (anti-rollback).
    security_version: u64,
    /// Image size in bytes.
    image_size: u64,
}

/// What one update check found and did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CheckOutcome {
    /// The newest release in the repository that is authentic for this
    /// device (release keys, threshold, hardware); absent when there is
    /// none.
    newest: Option<NewestRelease>,
    /// The version code of the running release (0 when unknown).
    installed_version_code: u64,
    /// Whether `newest` may be installed: newer than the running release
    /// and not below its minimum version or the security floor.
    available: bool,
    /// The install the update policy started (automatic installs, inside
    /// the maintenance window); absent when none ran.
    automatic_install: Option<InstallSummary>,
}

/// Whether the maintenance window is open at `now`, read on the wall
/// clock of `zone` (no window: always).
pub(crate) fn window_open(
    window: Option<&MaintenanceWindow>,
    zone: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
) -> bool {
    let Some(window) = window else {
        return true;
    };
    let local = now.to_zoned(zone.clone());
    let day = match local.weekday() {
        jiff::civil::Weekday::Monday => Weekday::Mon,
        jiff::civil::Weekday::Tuesday => Weekday::Tue,
        jiff::civil::Weekday::Wednesday => Weekday::Wed,
        jiff::civil::Weekday::Thursday => Weekday::Thu,
        jiff::civil::Weekday::Friday => Weekday::Fri,
        jiff::civil::Weekday::Saturday => Weekday::Sat,
        jiff::civil::Weekday::Sunday => Weekday::Sun,
    };
    let (hour, minute) = (local.hour(), local.minute());
    u8::try_from(hour)
        .ok()
        .zip(u8::try_from(minute).ok())
        .and_then(|(h, m)| TimeOfDay::new(h, m))
        .is_some_and(|t| window.contains(day, t))
}

/// Whether the policy lets the device install on its own at `now`.
fn may_install_automatically(
    policy: &UpdateSettings,
    zone: &jiff::tz::TimeZone,
    now: jiff::Timestamp,
) -> bool {
    policy.automatic
        && policy.install == InstallMode::Automatic
        && window_open(policy.window.as_ref(), zone, now)
}

/// Installs `release` (blocking; the caller holds the install flag):
/// warns the user before the first byte is written (5.2.7.2), and keeps
/// the outcome as the last install. The caller records the event under
/// its actor.
pub(crate) fn run_install(
    shared: &Arc<Shared>,
    engine: &Updates,
    release: &str,
) -> Result<InstallSummary, InstallError> {
    let budget = shared
        .settings
        .read()
        .map(|s| s.settings.updates.data_budget_bytes)
        .unwrap_or_default();
    let result = engine.install(release, budget, &|manifest| {
        shared.notify(
            notify::Kind::UpdateAvailable,
            notify::Severity::Warning,
            "Installing an update: the device will be interrupted to restart into it",
            serde_json::json!({
                "release": release,
                "version": manifest.version,
                "security_version": manifest.security_version,
                "image_size": manifest.image_size,
            }),
        );
    });
    match &result {
        Ok(summary) => {
            engine.remember(summary.clone());
            announce_restart(shared, engine, summary);
        }
        Err(e) => engine.remember(InstallSummary::failed(release, e)),
    }
    result
}

/// After an install: the release takes effect at the next restart, which
/// interrupts the device, so the user hears of it first (5.2.7.2 b). With
/// `updates.restart` `automatic` and a restart command, the agent restarts
/// the device `restart_notice_secs` later; otherwise it asks for the
/// restart (`POST /api/v1/update/restart`, or by hand).
fn announce_restart(shared: &Arc<Shared>, engine: &Updates, summary: &InstallSummary) {
    let policy = shared
        .settings
        .read()
        .map(|s| s.settings.updates.clone())
        .unwrap_or_default();
    let version = summary.version.clone().unwrap_or_default();
    let detail = serde_json::json!({
        "release": summary.release,
        "version": version,
        "restart": policy.restart,
        "restart_in_secs": policy.restart_notice_secs,
        "restart_configured": engine.can_restart(),
    });
    let automatic = policy.restart == RestartMode::Automatic && engine.can_restart();
    let Some(runtime) = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|_| automatic)
    else {
        let how = if engine.can_restart() {
            "confirm the restart (POST /api/v1/update/restart)"
        } else {
            "restart the device"
        };
        shared.notify(
            notify::Kind::RestartPending,
            notify::Severity::Warning,
            &format!("Update {version} is installed: {how} to start it"),
            detail,
        );
        return;
    };
    shared.notify(
        notify::Kind::RestartPending,
        notify::Severity::Warning,
        &format!(
            "Update {version} is installed: the device restarts in {} s to start it",
            policy.restart_notice_secs
        ),
        detail,
    );
    let notice = std::time::Duration::from_secs(u64::from(policy.restart_notice_secs));
    let task = schedule_restart(
        &runtime,
        shared,
        notice,
        &format!("release {}", summary.release),
    );
    engine.set_pending_restart(Some(task));
}

/// Restarts the device after `delay` through `update.restart_command` and
/// records the outcome as `update.restart`. Returns the handle that
/// cancels it while it waits.
pub(crate) fn schedule_restart(
    runtime: &tokio::runtime::Handle,
    shared: &Arc<Shared>,
    delay: std::time::Duration,
    release: &str,
) -> tokio::task::AbortHandle {
    let shared = shared.clone();
    let release = release.to_owned();
    runtime
        .spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(engine) = shared.updates.clone() else {
                return;
            };
            // Recorded first: a restart that works stops this process
            // before it could record anything afterwards.
            shared.record_quietly(Event::system(
                Severity::Notice,
                "update.restart",
                Outcome::Success,
                &format!("restarting into {release}"),
            ));
            let outcome = tokio::task::spawn_blocking(move || engine.restart_now())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            let Err(e) = outcome else { return };
            let event = Event::system(
                Severity::Warning,
                "update.restart",
                Outcome::Failure,
                &format!("restart into {release} failed: {e}"),
            );
            shared.record_quietly(event);
        })
        .abort_handle()
}

impl InstallSummary {
    /// The report of an install that failed with `error`.
    fn failed(release: &str, error: &InstallError) -> Self {
        Self {
            release: release.to_owned(),
            outcome: "failed".into(),
            message: Some(error.to_string()),
            version: None,
            slot: None,
            downloaded_bytes: 0,
            reused_bytes: 0,
            chunks: 0,
            duration_ms: 0,
            finished_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

/// One update check (blocking): finds the newest release, announces it
/// once (`updates.notify_available`), and installs it when the policy
/// allows an automatic install now and no other install runs. Events of
/// an automatic install are recorded with the actor `system`.
pub(crate) fn check_once(shared: &Arc<Shared>) -> Result<CheckOutcome, InstallError> {
    let updates = shared.updates.clone().ok_or_else(|| {
        InstallError::Busy("updates are not configured on this device ([update])".into())
    })?;
    // A poisoned lock falls back to the secure defaults.
    let (policy, zone) = shared
        .settings
        .read()
        .map(|s| {
            (
                s.settings.updates.clone(),
                s.settings.time_zone().unwrap_or(jiff::tz::TimeZone::UTC),
            )
        })
        .unwrap_or_else(|_| (UpdateSettings::default(), jiff::tz::TimeZone::UTC));
    let found = updates.find_newest()?;
    let mut outcome = CheckOutcome {
        newest: found.newest,
        installed_version_code: found.installed_version_code,
        available: found.available,
        automatic_install: None,
    };
    let Some(newest) = outcome.newest.clone().filter(|_| outcome.available) else {
        return Ok(outcome);
    };
    if policy.notify_available && updates.first_announcement(newest.version_code) {
        shared.notify(
            notify::Kind::UpdateAvailable,
            notify::Severity::Info,
            &format!("Update {} is available", newest.version),
            serde_json::json!({
                "release": newest.release,
                "version": newest.version,
                "version_code": newest.version_code,
                "security_version": newest.security_version,
                "image_size": newest.image_size,
            }),
        );
    }
    if !may_install_automatically(&policy, &zone, jiff::Timestamp::now()) {
        return Ok(outcome);
    }
    let Some(guard) = updates.try_begin(&newest.release) else {
        tracing::info!(release = %newest.release, "automatic install deferred: another install is running");
        return Ok(outcome);
    };
    let result = run_install(shared, &updates, &newest.release);
    drop(guard);
    let summary = match result {
        Ok(summary) => {
            shared.record_quietly(Event::system(
                Severity::Notice,
                "update.install",
                Outcome::Success,
                &format!(
                    "automatic update: release {} (version {}) installed into slot {}; tried once on the next boot",
                    summary.release,
                    summary.version.as_deref().unwrap_or("?"),
                    summary.slot.as_deref().unwrap_or("?"),
                ),
            ));
            summary
        }
        Err(e) => {
            shared.record_quietly(Event::system(
                Severity::Warning,
                "update.install",
                Outcome::Failure,
                &format!(
                    "automatic update: release {} not installed: {e}",
                    newest.release
                ),
            ));
            InstallSummary::failed(&newest.release, &e)
        }
    };
    outcome.automatic_install = Some(summary);
    Ok(outcome)
}

/// A random delay in `0..=max_secs` seconds. Jitter only spreads a
/// fleet's checks over time, so the standard library's randomly keyed
/// hasher is random enough; it is not used for anything secret.
fn jitter(max_secs: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        time::OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .unsigned_abs(),
    );
    std::time::Duration::from_secs(hasher.finish() % (u64::from(max_secs) + 1))
}

/// The update scheduler (5.2.7.2 b): every `updates.check_interval_secs`
/// plus a random jitter, one [`check_once`]. The first check waits a full
/// interval too, so a restart loop cannot turn into a check loop. The
/// policy is read afresh before every wait and every check.
pub(crate) async fn scheduler(shared: Arc<Shared>) {
    loop {
        let (interval, max_jitter) = shared
            .settings
            .read()
            .map(|s| {
                let u = &s.settings.updates;
                (u.check_interval_secs, u.jitter_secs)
            })
            .unwrap_or_else(|_| {
                let d = UpdateSettings::default();
                (d.check_interval_secs, d.jitter_secs)
            });
        let wait = std::time::Duration::from_secs(u64::from(interval)) + jitter(max_jitter);
        tokio::time::sleep(wait).await;
        let worker = shared.clone();
        match tokio::task::spawn_blocking(move || check_once(&worker)).await {
            Ok(Ok(outcome)) => tracing::info!(
                available = outcome.available,
                installed_version_code = outcome.installed_version_code,
                "update check done"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "update check failed");
                shared.record_quietly(Event::system(
                    Severity::Warning,
                    "update.check",
                    Outcome::Failure,
                    &format!("scheduled update check failed: {e}"),
                ));
            }
            Err(e) => tracing::error!(error = %e, "update check task failed"),
        }
    }
}

/// A TUF client refusal or failure.
fn tuf_error(e: update_tuf::Error) -> InstallError {
    match e {
        update_tuf::Error::TargetNotFound { name } => InstallError::NotFound(format!(
            "the update repository has no target {name:?} (a release needs <release>.manifest.json and <release>.image)"
        )),
        e @ update_tuf::Error::Io { .. } => InstallError::Internal(e.to_string()),
        e => InstallError::Repository(format!("update repository: {e}")),
    }
}

/// An update crate refusal or failure.
fn update_error(e: update::Error) -> InstallError {
    use update::Error as E;
    match e {
        E::Source { index, source } => {
            let cause = update_tuf::Error::from_io(source);
            InstallError::Repository(format!(
                "downloading chunk {index} of the image failed: {cause}"
            ))
        }
        e @ (E::Malformed { .. }
        | E::UntrustedSigner { .. }
        | E::BadSignature { .. }
        | E::BelowThreshold { .. }
        | E::WrongHardware { .. }
        | E::Rollback { .. }
        | E::TooOldToUpgrade { .. }
        | E::BelowSecurityFloor { .. }
        | E::Inconsistent { .. }
        | E::ChunkMismatch { .. }
        | E::ImageTooLong { .. }
        | E::SlotTooSmall { .. }) => InstallError::Refused(format!("release refused: {e}")),
        e @ E::SlotBusy { .. } => InstallError::Busy(e.to_string()),
        e => InstallError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_are_plain_target_names() {
        for good in ["1.2.0", "bw-100_2024.06", "a", &"a".repeat(64)] {
            assert!(valid_release(good), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", &"a".repeat(65)] {
            assert!(!valid_release(bad), "{bad}");
        }
        assert_eq!(manifest_target("1.2.0"), "1.2.0.manifest.json");
        assert_eq!(image_target("1.2.0"), "1.2.0.image");
    }

    /// Window evaluation against the clock: a Friday 08:00 UTC instant is
    /// inside a Friday morning window, outside a Thursday-night window
    /// that ended at 06:00 and inside one that wraps past midnight to
    /// 09:00; no window is always open, and offsets are converted to UTC.
    #[test]
    fn window_is_read_in_the_devices_time_zone_including_past_midnight_and_dst() {
        use agent_config::{MaintenanceWindow, TimeOfDay, Weekday};
        use jiff::tz::TimeZone;
        let t = |h, m| TimeOfDay::new(h, m).unwrap();
        let utc = TimeZone::UTC;
        // Friday 2027-01-15 08:00 UTC.
        let friday_0800 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let window = |days: Vec<Weekday>, start, end| MaintenanceWindow { days, start, end };
        let open = |w: &MaintenanceWindow, zone: &TimeZone, at| window_open(Some(w), zone, at);
        assert!(window_open(None, &utc, friday_0800));
        assert!(open(
            &window(vec![Weekday::Fri], t(7, 0), t(9, 0)),
            &utc,
            friday_0800
        ));
        assert!(!open(
            &window(vec![Weekday::Fri], t(8, 1), t(9, 0)),
            &utc,
            friday_0800
        ));
        assert!(!open(
            &window(vec![Weekday::Thu], t(22, 0), t(6, 0)),
            &utc,
            friday_0800
        ));
        assert!(open(
            &window(vec![Weekday::Thu], t(22, 0), t(9, 0)),
            &utc,
            friday_0800
        ));
        // The same instant is 09:00 in Berlin (UTC+1 in January).
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert!(!open(
            &window(vec![Weekday::Fri], t(7, 0), t(9, 0)),
            &berlin,
            friday_0800
        ));
        assert!(open(
            &window(vec![Weekday::Fri], t(8, 30), t(9, 30)),
            &berlin,
            friday_0800
        ));
        // New York springs forward on Sunday 2027-03-14: 01:59 EST is
        // followed by 03:00 EDT. A window inside the gap never opens; one
        // that starts in it is open from 03:00.
        let ny = TimeZone::get("America/New_York").unwrap();
        let before_gap = jiff::civil::date(2027, 3, 14)
            .at(1, 59, 0, 0)
            .to_zoned(ny.clone())
            .unwrap()
            .timestamp();
        let after_gap = before_gap + jiff::SignedDuration::from_secs(60);
        assert_eq!(after_gap.to_zoned(ny.clone()).hour(), 3);
        let in_gap = window(vec![Weekday::Sun], t(2, 0), t(2, 59));
        assert!(!open(&in_gap, &ny, before_gap));
        assert!(!open(&in_gap, &ny, after_gap));
        let from_gap = window(vec![Weekday::Sun], t(2, 30), t(4, 0));
        assert!(!open(&from_gap, &ny, before_gap));
        assert!(open(&from_gap, &ny, after_gap));

        let policy = |automatic, install| UpdateSettings {
            automatic,
            install,
            ..UpdateSettings::default()
        };
        assert!(may_install_automatically(
            &policy(true, InstallMode::Automatic),
            &utc,
            friday_0800
        ));
        assert!(!may_install_automatically(
            &policy(true, InstallMode::Manual),
            &utc,
            friday_0800
        ));
        assert!(!may_install_automatically(
            &policy(false, InstallMode::Automatic),
            &utc,
            friday_0800
        ));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(0), std::time::Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(5) <= std::time::Duration::from_secs(5));
        }
    }
}
