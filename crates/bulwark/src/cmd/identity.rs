//! `bulwark identity`: what this device is, without any secret.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;
use keys::{KeyRef, KeyStore};
use serde::Serialize;

use crate::keystore::KeystoreSpec;

#[derive(Debug, Subcommand)]
pub(crate) enum IdentityCommand {
    /// Print the identity (identifiers, keystore, certificate).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct Shown {
    device_id: String,
    serial: String,
    model: String,
    development: bool,
    provisioned_at: String,
    keystore: keys::BackendInfo,
    key_label: String,
    key_matches_certificate: bool,
    certificate: identity::x509::CertSummary,
    issuer_chain: Vec<String>,
}

pub(crate) fn run(state_dir: &Path, command: IdentityCommand) -> Result<()> {
    let IdentityCommand::Show { json } = command;
    let shown = gather(state_dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print_text(&shown);
    }
    Ok(())
}

fn gather(state_dir: &Path) -> Result<Shown> {
    let id = identity::provision::load(state_dir)?;
    let spec_path = state_dir.join(super::provision::KEYSTORE_SPEC_FILE);
    let spec: KeystoreSpec = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?
        .trim()
        .parse()?;
    let store: std::sync::Arc<dyn KeyStore> = spec.open(&state_dir.join("keystore"))?;
    let key = KeyRef::new(store.clone(), id.record.key_label.clone())
        .context("reading the device key from its keystore")?;
    let cert_spki = identity::x509::spki_of(&id.certificate)?;
    Ok(Shown {
        device_id: id.record.device_id.clone(),
        serial: id.record.serial.clone(),
        model: id.record.model.clone(),
        development: id.record.development,
        provisioned_at: id.record.provisioned_at.clone(),
        keystore: store.info(),
        key_label: id.record.key_label.to_string(),
        key_matches_certificate: key.public_key().spki_der() == cert_spki.as_slice(),
        certificate: identity::x509::summarize(&id.certificate)?,
        issuer_chain: id
            .chain
            .iter()
            .map(|c| identity::x509::summarize(c).map(|s| s.subject))
            .collect::<identity::Result<_>>()?,
    })
}

pub(crate) fn show_text(state_dir: &Path) -> Result<()> {
    print_text(&gather(state_dir)?);
    Ok(())
}

fn print_text(s: &Shown) {
    if s.development {
        println!("DEVELOPMENT UNIT: not for production (development CA, identity and keystore)");
    }
    println!("device id:        {}", s.device_id);
    println!("serial:           {}", s.serial);
    println!("model:            {}", s.model);
    println!("provisioned at:   {}", s.provisioned_at);
    println!(
        "keystore:         {} — {} (capability class {})",
        s.keystore.backend, s.keystore.description, s.keystore.class as u8
    );
    println!(
        "device key:       {} ({})",
        s.key_label,
        if s.key_matches_certificate {
            "matches the certificate"
        } else {
            "DOES NOT MATCH the certificate"
        }
    );
    println!("certificate:      {}", s.certificate.subject);
    println!("  issued by:      {}", s.certificate.issuer);
    println!(
        "  valid:          {} to {}",
        s.certificate.not_before, s.certificate.not_after
    );
    println!("  sha256:         {}", s.certificate.sha256);
}
