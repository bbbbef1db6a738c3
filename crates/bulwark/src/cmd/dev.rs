//! The main job on embedded defaults: a development unit.
//!
//! First run: a development CA in `<state>/dev-ca`, then a unit with a
//! software keystore, printed with its setup secret. Later runs print the
//! identity again, never the secret. The agent will run from here next.

use std::path::Path;

use anyhow::Result;
use identity::provision::ProvisionRequest;
use keys::Algorithm;

use crate::keystore::KeystoreSpec;

pub(crate) fn run(state_dir: &Path) -> Result<()> {
    match identity::provision::load(state_dir) {
        Ok(_) => {
            super::identity::show_text(state_dir)?;
            println!();
            println!(
                "setup secret: shown when this unit was provisioned (label file {})",
                state_dir.join("label.txt").display()
            );
            Ok(())
        }
        Err(identity::Error::NotProvisioned { .. }) => provision_dev_unit(state_dir),
        Err(e) => Err(e.into()),
    }
}

fn provision_dev_unit(state_dir: &Path) -> Result<()> {
    let ca_dir = state_dir.join("dev-ca");
    let spec = KeystoreSpec::Software {
        seal_with_tpm: None,
    };
    let ca = if ca_dir.join("ca.json").exists() {
        super::ca::open(&ca_dir)?
    } else {
        super::ca::init(
            &ca_dir,
            "Bulwark Development",
            &spec,
            &spec,
            Algorithm::EcdsaP256Sha256,
        )?
    };
    let serial = format!(
        "DEV-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    );
    let request = ProvisionRequest {
        serial,
        model: "bulwark-dev".into(),
        algorithm: Algorithm::EcdsaP256Sha256,
        development: true,
        force: false,
    };
    let unit = super::provision::provision_unit(&ca, state_dir, &spec, &request)?;
    let label = state_dir.join("label.txt");
    identity::provision::write_label(&label, &unit)?;
    println!("DEVELOPMENT UNIT: not for production (development CA, identity and keystore)");
    super::provision::print_new_unit(&unit, &label);
    println!();
    println!("state directory: {}", state_dir.display());
    println!("next: `bulwark identity show` prints this identity again (without the secret)");
    Ok(())
}
