//! Opening this device's parts (identity, keystore, store) from its state
//! directory, shared by the subcommands that need them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use identity::provision::DeviceIdentity;
use keys::{KeyRef, KeyStore};

use crate::keystore::KeystoreSpec;

/// A provisioned device, opened.
pub(crate) struct Device {
    pub(crate) identity: DeviceIdentity,
    pub(crate) keystore: Arc<dyn KeyStore>,
    /// How the keystore was opened (which TPM, if any).
    pub(crate) spec: KeystoreSpec,
    pub(crate) state_dir: PathBuf,
}

impl Device {
    pub(crate) fn open(state_dir: &Path) -> Result<Self> {
        let identity = identity::provision::load(state_dir)?;
        let spec_path = state_dir.join(super::provision::KEYSTORE_SPEC_FILE);
        let spec: KeystoreSpec = std::fs::read_to_string(&spec_path)
            .with_context(|| format!("reading {}", spec_path.display()))?
            .trim()
            .parse()?;
        let keystore: Arc<dyn KeyStore> = spec.open(&state_dir.join("keystore"))?;
        Ok(Self {
            identity,
            keystore,
            spec,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// The device key, checked to be in the keystore.
    pub(crate) fn key(&self) -> Result<KeyRef> {
        KeyRef::new(
            self.keystore.clone(),
            self.identity.record.key_label.clone(),
        )
        .context("reading the device key from its keystore")
    }

    /// Where the store and event log live.
    pub(crate) fn store_dir(&self) -> PathBuf {
        self.state_dir.join("store")
    }

    pub(crate) fn store(&self) -> Result<Arc<store::Store>> {
        let dir = self.store_dir();
        Ok(Arc::new(
            store::Store::open(&dir, self.keystore.clone())
                .with_context(|| format!("opening the store in {}", dir.display()))?,
        ))
    }
}
