//! Test helper, not shipped: plays a device's update cycle once, the way
//! the agent will, so tests/tests.rs can SIGKILL it anywhere:
//! confirm the current boot, verify the release, install it, reboot
//! (simulated), confirm the new boot. Prints each step; on success the
//! last line is `done <peak RSS in KiB>`.
//!
//! Usage: update-crash-installer DIR MANIFEST IMAGE [CHECKPOINT_BYTES]
//! where DIR holds `boot.json`, `slot-a`, `slot-b`, `state/` and
//! `trusted.json` (a JSON list of public keys).

use std::io::Write;
use std::path::PathBuf;

use keys::PublicKey;
use update::anti_rollback::{FileSecurityFloor, SecurityFloor};
use update::boot::{BootControl, FileBootControl, Slots};
use update::commit::{BootOutcome, Trust, check_slot, confirm_boot};
use update::install::{FileSource, InstallOptions, Installer};
use update::manifest::{Device, SignedManifest, TrustedKeys};

const COMPATIBLE: &str = "bw-crash";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, manifest, image, rest @ ..] = args.as_slice() else {
        return Err("usage: update-crash-installer DIR MANIFEST IMAGE [CHECKPOINT_BYTES]".into());
    };
    let checkpoint_bytes = match rest.first() {
        Some(n) => n.parse()?,
        None => 1024 * 1024,
    };
    let dir = PathBuf::from(dir);
    let mut out = std::io::stdout().lock();
    let boot = FileBootControl::open(&dir.join("boot.json"))?;
    let slots = Slots::new(dir.join("slot-a"), dir.join("slot-b"));
    let state = dir.join("state");
    let floor = FileSecurityFloor::new(&state.join("floor.json"));
    let public: Vec<PublicKey> = serde_json::from_slice(&std::fs::read(dir.join("trusted.json"))?)?;
    let keys = TrustedKeys::new(&public)?;
    let trust = Trust {
        keys: &keys,
        threshold: 1,
        compatible: COMPATIBLE,
    };
    let installer = Installer::new(&boot, &slots, &state)?.with_options(InstallOptions {
        checkpoint_bytes,
        ..InstallOptions::default()
    });

    let outcome = confirm_boot(&boot, &slots, installer.records(), &floor, trust)?;
    writeln!(out, "confirmed {outcome:?}")?;
    if let BootOutcome::Failed { .. } = outcome {
        return Err(format!("boot failed its check: {outcome:?}").into());
    }
    let active = boot.active()?;
    let current = check_slot(&slots, installer.records(), active, trust)?
        .map_err(|reason| format!("active slot: {reason}"))?;
    let device = Device {
        compatible: COMPATIBLE.to_owned(),
        current_version_code: current.manifest().version_code,
        security_floor: floor.get()?,
    };
    let release = SignedManifest::verify(&std::fs::read(manifest)?, &keys, 1, &device)?;
    writeln!(out, "verified {}", release.manifest().version_code)?;
    let report = installer.install(&release, &mut FileSource::open(image.as_ref())?)?;
    writeln!(
        out,
        "installed slot={} downloaded={} reused={} resumed={}",
        report.slot, report.downloaded_bytes, report.reused_bytes, report.resumed_bytes
    )?;
    let booted = boot.boot()?;
    writeln!(out, "booted {booted}")?;
    let outcome = confirm_boot(&boot, &slots, installer.records(), &floor, trust)?;
    let BootOutcome::TrialCommitted { .. } = outcome else {
        return Err(format!("new release not committed: {outcome:?}").into());
    };
    writeln!(out, "done {}", peak_rss_kib())?;
    out.flush()?;
    Ok(())
}

/// `VmHWM` of this process from /proc (0 if unavailable).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
