//! `bulwark provision`: give one unit its identity.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use identity::provision::{self, ProvisionRequest, Provisioned};
use keys::Algorithm;

use crate::keystore::{KeystoreSpec, SpecArg};

/// File in the state directory naming the device's keystore.
pub(crate) const KEYSTORE_SPEC_FILE: &str = "keystore.spec";

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// The manufacturer CA directory (from `bulwark ca init`).
    #[arg(long)]
    ca: PathBuf,
    /// The unit's serial number, as printed on it.
    #[arg(long)]
    serial: String,
    /// The product model.
    #[arg(long)]
    model: String,
    /// Keystore for the device key (software, software+tpm:TCTI, tpm:TCTI, pkcs11:URI).
    #[arg(long, default_value = "software")]
    keystore: SpecArg,
    /// Device key algorithm.
    #[arg(long, default_value = "ecdsa-p256")]
    algorithm: Algorithm,
    /// Where to write the label file (identifier, setup secret, fingerprint).
    #[arg(long)]
    label_out: Option<PathBuf>,
    /// Mark the unit as a development unit.
    #[arg(long)]
    development: bool,
    /// Replace an existing identity on this unit.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(state_dir: &Path, args: ProvisionArgs) -> Result<()> {
    let ca = super::ca::open(&args.ca)?;
    let request = ProvisionRequest {
        serial: args.serial,
        model: args.model,
        algorithm: args.algorithm,
        development: args.development,
        force: args.force,
    };
    let unit = provision_unit(&ca, state_dir, &args.keystore.spec()?, &request)?;
    let label = args
        .label_out
        .unwrap_or_else(|| state_dir.join("label.txt"));
    provision::write_label(&label, &unit)?;
    print_new_unit(&unit, &label);
    Ok(())
}

/// Opens the device keystore, provisions, and records which keystore holds
/// the device key.
pub(crate) fn provision_unit(
    ca: &identity::ca::ManufacturerCa,
    state_dir: &Path,
    spec: &KeystoreSpec,
    request: &ProvisionRequest,
) -> Result<Provisioned> {
    if spec.to_string().contains("pin-value=<redacted>") {
        bail!(
            "the device keystore URI is saved on the device: give the PIN with pin-source=file:..., not pin-value"
        );
    }
    if !state_dir.exists() {
        keys::fsio::ensure_private_dir(state_dir)?;
    }
    let store = spec.open(&state_dir.join("keystore"))?;
    let unit = provision::provision(ca, store.as_ref(), state_dir, request)?;
    keys::fsio::write_atomic(
        &state_dir.join(KEYSTORE_SPEC_FILE),
        format!("{spec}\n").as_bytes(),
        0o600,
    )?;
    record_provisioning(state_dir, &unit)?;
    Ok(unit)
}

pub(crate) fn print_new_unit(unit: &Provisioned, label: &Path) {
    let r = &unit.record;
    println!("provisioned device {}", r.device_id);
    println!("  serial:              {}", r.serial);
    println!("  model:               {}", r.model);
    println!("  keystore:            {}", r.keystore);
    println!("  certificate sha256:  {}", r.certificate_sha256);
    println!("  setup secret:        {}", unit.setup_secret.expose());
    println!(
        "  (shown once; also on the label file {}, mode 0600 — print it, then delete it)",
        label.display()
    );
}

/// Opens the store and event log for the first time and records the
/// provisioning in it, under a signed checkpoint.
fn record_provisioning(state_dir: &Path, unit: &Provisioned) -> Result<()> {
    use store::eventlog::{Event, EventLog, Outcome, Severity};
    let device = super::device::Device::open(state_dir)?;
    let store = device.store()?;
    let log = EventLog::open(&device.store_dir(), store, device.key()?)?;
    log.append(Event::system(
        Severity::Notice,
        "device.provisioned",
        Outcome::Success,
        &format!(
            "device {} serial {} certificate {}",
            unit.record.device_id, unit.record.serial, unit.record.certificate_sha256
        ),
    ))?;
    log.close()?;
    Ok(())
}
