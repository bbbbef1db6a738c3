//! `bulwark keys`: inspect a keystore (public halves only).

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;

use crate::keystore::SpecArg;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the keys and what protects them.
    List {
        /// The keystore (defaults to this device's).
        #[arg(long)]
        keystore: Option<SpecArg>,
    },
}

pub(crate) fn run(state_dir: &Path, command: KeysCommand) -> Result<()> {
    let KeysCommand::List { keystore } = command;
    let spec = match keystore {
        Some(arg) => arg.spec()?,
        None => std::fs::read_to_string(state_dir.join(super::provision::KEYSTORE_SPEC_FILE))?
            .trim()
            .parse()?,
    };
    let store = spec.open(&state_dir.join("keystore"))?;
    let info = store.info();
    println!("{} — {}", info.backend, info.description);
    for key in store.list()? {
        println!(
            "{:<24} {:<11} sha256:{}",
            key.label.as_str(),
            key.public_key.algorithm().name(),
            key.public_key.fingerprint()
        );
    }
    Ok(())
}
