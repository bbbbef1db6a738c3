//! `bulwark ca`: the manufacturer CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use identity::ca::ManufacturerCa;
use keys::{Algorithm, KeyLabel, KeyRef, KeyStore};
use serde::{Deserialize, Serialize};

use crate::keystore::{KeystoreSpec, SpecArg};

const CONFIG: &str = "ca.json";
const ROOT_KEY: &str = "ca-root";
const ISSUING_KEY: &str = "ca-issuing";

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root and an issuing CA, each key inside its keystore.
    Init {
        /// Directory for the CA's certificates, registry and settings.
        #[arg(long)]
        dir: PathBuf,
        /// Organization name in the CA certificates.
        #[arg(long)]
        organization: String,
        /// Keystore for the issuing key (software, software+tpm:TCTI, tpm:TCTI, pkcs11:URI).
        #[arg(long, default_value = "software")]
        keystore: SpecArg,
        /// Keystore for the root key; defaults to the issuing keystore.
        #[arg(long)]
        root_keystore: Option<SpecArg>,
        /// Key algorithm.
        #[arg(long, default_value = "ecdsa-p256")]
        algorithm: Algorithm,
    },
}

/// What `ca init` records so that `provision` can reopen the CA's keys.
#[derive(Debug, Serialize, Deserialize)]
struct CaConfig {
    organization: String,
    root_keystore: String,
    issuing_keystore: String,
    issuing_key: KeyLabel,
}

pub(crate) fn run(command: CaCommand) -> Result<()> {
    match command {
        CaCommand::Init {
            dir,
            organization,
            keystore,
            root_keystore,
            algorithm,
        } => {
            let keystore = keystore.spec()?;
            let root_keystore = match root_keystore {
                Some(root) => root.spec()?,
                None => keystore.clone(),
            };
            init(&dir, &organization, &root_keystore, &keystore, algorithm)?;
            println!("manufacturer CA created in {}", dir.display());
            println!("  root certificate:    {}", dir.join("root.pem").display());
            println!(
                "  issuing certificate: {}",
                dir.join("issuing.pem").display()
            );
            Ok(())
        }
    }
}

/// Creates the CA; on any failure the keys it generated are deleted.
pub(crate) fn init(
    dir: &Path,
    organization: &str,
    root_spec: &KeystoreSpec,
    issuing_spec: &KeystoreSpec,
    algorithm: Algorithm,
) -> Result<ManufacturerCa> {
    if dir.join(CONFIG).exists() {
        bail!(
            "{} already holds a CA; refusing to overwrite it",
            dir.display()
        );
    }
    for spec in [root_spec, issuing_spec] {
        if spec.to_string().contains("pin-value=<redacted>") {
            bail!(
                "the CA keystore URI is saved in {CONFIG}: give the PIN with pin-source=file:..., not pin-value"
            );
        }
    }
    let keystore_dir = dir.join("keystore");
    let root_store = root_spec.open(&keystore_dir)?;
    let issuing_store = if root_spec == issuing_spec {
        root_store.clone()
    } else {
        issuing_spec.open(&keystore_dir)?
    };
    let root_label: KeyLabel = ROOT_KEY.parse()?;
    let issuing_label: KeyLabel = ISSUING_KEY.parse()?;
    root_store
        .generate(&root_label, algorithm)
        .context("generating the root CA key")?;
    let made = (|| -> Result<ManufacturerCa> {
        issuing_store
            .generate(&issuing_label, algorithm)
            .context("generating the issuing CA key")?;
        let root_dyn: Arc<dyn KeyStore> = root_store.clone();
        let issuing_dyn: Arc<dyn KeyStore> = issuing_store.clone();
        let ca = ManufacturerCa::create(
            dir,
            organization,
            &KeyRef::new(root_dyn, root_label.clone())?,
            KeyRef::new(issuing_dyn, issuing_label.clone())?,
        )?;
        let config = CaConfig {
            organization: organization.to_owned(),
            root_keystore: root_spec.to_string(),
            issuing_keystore: issuing_spec.to_string(),
            issuing_key: issuing_label.clone(),
        };
        keys::fsio::write_atomic(
            &dir.join(CONFIG),
            &serde_json::to_vec_pretty(&config)?,
            0o600,
        )?;
        Ok(ca)
    })();
    if made.is_err() {
        let _ = root_store.delete(&root_label);
        let _ = issuing_store.delete(&issuing_label);
        let _ = std::fs::remove_file(dir.join("root.pem"));
        let _ = std::fs::remove_file(dir.join("issuing.pem"));
    }
    made
}

/// Opens an existing CA with its issuing key.
pub(crate) fn open(dir: &Path) -> Result<ManufacturerCa> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (create a CA with `bulwark ca init`)",
            path.display()
        )
    })?;
    let config: CaConfig =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let spec: KeystoreSpec = config.issuing_keystore.parse()?;
    let store: Arc<dyn KeyStore> = spec.open(&dir.join("keystore"))?;
    let key = KeyRef::new(store, config.issuing_key).context("reading the issuing CA key")?;
    Ok(ManufacturerCa::load(dir, key)?)
}
