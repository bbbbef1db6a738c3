//! `bulwark update repo ...`: the publisher's side of secure updates.
//!
//! A repository directory holds a keystore with the TUF role keys and the
//! release-signing key (any backend: a PKCS#11 token keeps them off the
//! build host's disk), `bulwark-repo.json` naming them, and the TUF
//! working state. `add` builds and signs a release's chunked manifest and
//! adds it with its image as TUF targets; `publish` signs the metadata
//! into a directory any static HTTPS mirror can serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use keys::{Algorithm, KeyAdmin, KeyLabel, KeyRef, KeyStore};
use serde::{Deserialize, Serialize};
use update_tuf::{RoleSpec, RootSpec};

use crate::keystore::{KeystoreSpec, SpecArg};

const CONFIG: &str = "bulwark-repo.json";
const ROLES: [&str; 4] = ["tuf-root", "tuf-targets", "tuf-snapshot", "tuf-timestamp"];
const RELEASE_KEY: &str = "release";
/// The release-signing public key devices trust (`[update] trusted_keys`).
pub(crate) const RELEASE_PEM: &str = "release-signing.pem";

/// `bulwark update repo ...`
#[derive(Debug, Subcommand)]
pub(crate) enum RepoCommand {
    /// Creates a repository: role keys and a release-signing key.
    Init {
        /// Repository directory (created).
        dir: PathBuf,
        /// Keystore for the keys (software, software+tpm:TCTI, tpm:TCTI, pkcs11:URI).
        #[arg(long, default_value = "software")]
        keystore: SpecArg,
        /// Days the root metadata stays valid.
        #[arg(long, default_value_t = 365)]
        root_days: u64,
        /// Days the timestamp metadata stays valid (devices refuse older).
        #[arg(long, default_value_t = 7)]
        timestamp_days: u64,
    },
    /// Builds, signs and adds a release (its manifest and image).
    Add {
        /// Repository directory.
        dir: PathBuf,
        /// Release name (targets `<name>.manifest.json` and `<name>.image`).
        #[arg(long)]
        release: String,
        /// The image to install into a slot.
        #[arg(long)]
        image: PathBuf,
        /// Hardware compatibility string devices must match.
        #[arg(long)]
        compatible: String,
        /// Human version.
        #[arg(long)]
        version: String,
        /// Monotonic version number.
        #[arg(long)]
        version_code: u64,
        /// Security version (anti-rollback floor once committed).
        #[arg(long)]
        security_version: u64,
        /// Lowest installed version code this release may replace.
        #[arg(long, default_value_t = 0)]
        min_version_code: u64,
        /// Chunk size in bytes (power of two, 65536 to 4194304).
        #[arg(long, default_value_t = 1 << 20)]
        chunk_size: u32,
    },
    /// Signs the metadata and writes a servable repository to `out`.
    Publish {
        /// Repository directory.
        dir: PathBuf,
        /// Output directory (metadata/ and targets/).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoConfig {
    keystore: String,
    root_days: u64,
    timestamp_days: u64,
}

pub(crate) fn run(command: RepoCommand) -> Result<()> {
    match command {
        RepoCommand::Init {
            dir,
            keystore,
            root_days,
            timestamp_days,
        } => init(&dir, &keystore.spec()?, root_days, timestamp_days),
        RepoCommand::Add {
            dir,
            release,
            image,
            compatible,
            version,
            version_code,
            security_version,
            min_version_code,
            chunk_size,
        } => add(
            &dir,
            &release,
            &image,
            &update::publish::Release {
                compatible,
                version,
                version_code,
                min_version_code,
                security_version,
                chunk_size,
            },
        ),
        RepoCommand::Publish { dir, out } => publish(&dir, &out),
    }
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

fn init(dir: &Path, spec: &KeystoreSpec, root_days: u64, timestamp_days: u64) -> Result<()> {
    if dir.join(CONFIG).exists() {
        bail!("{} already holds a repository", dir.display());
    }
    if spec.to_string().contains("pin-value=<redacted>") {
        bail!(
            "the keystore is saved in {CONFIG}: give the PIN with pin-source=file:..., not pin-value"
        );
    }
    keys::fsio::ensure_private_dir(dir)?;
    let store = spec.open(&dir.join("keystore"))?;
    for label in ROLES.iter().chain([&RELEASE_KEY]) {
        store
            .generate(&label.parse()?, Algorithm::EcdsaP256Sha256)
            .with_context(|| format!("generating the {label} key"))?;
    }
    let config = RepoConfig {
        keystore: spec.to_string(),
        root_days,
        timestamp_days,
    };
    let store: Arc<dyn KeyStore> = store;
    update_tuf::Repository::init(&dir.join("tuf"), root_spec(&store, &config)?)
        .context("creating the TUF repository")?;
    let release = KeyRef::new(store, RELEASE_KEY.parse()?)?;
    keys::fsio::write_atomic(
        &dir.join(RELEASE_PEM),
        identity::x509::pem("PUBLIC KEY", release.public_key().spki_der()).as_bytes(),
        0o644,
    )?;
    keys::fsio::write_atomic(
        &dir.join(CONFIG),
        serde_json::to_string_pretty(&config)?.as_bytes(),
        0o600,
    )?;
    println!("update repository created in {}", dir.display());
    println!(
        "  devices trust releases signed by {} ([update] trusted_keys)",
        dir.join(RELEASE_PEM).display()
    );
    println!(
        "  and the TUF root {} (provision it on the device)",
        dir.join("tuf/root/1.root.json").display()
    );
    Ok(())
}

fn open(dir: &Path) -> Result<(RepoConfig, Arc<dyn KeyStore>)> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (create one with `bulwark update repo init`)",
            path.display()
        )
    })?;
    let config: RepoConfig =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let spec: KeystoreSpec = config.keystore.parse()?;
    let store: Arc<dyn KeyAdmin> = spec.open(&dir.join("keystore"))?;
    Ok((config, store))
}

fn root_spec(store: &Arc<dyn KeyStore>, config: &RepoConfig) -> Result<RootSpec> {
    let key = |label: &str| -> Result<KeyRef> {
        let label: KeyLabel = label.parse()?;
        KeyRef::new(store.clone(), label).with_context(|| "reading a repository key".to_string())
    };
    Ok(RootSpec {
        root: RoleSpec::single(key(ROLES[0])?, days(config.root_days)),
        targets: RoleSpec::single(key(ROLES[1])?, days(config.root_days)),
        snapshot: RoleSpec::single(key(ROLES[2])?, days(config.timestamp_days)),
        timestamp: RoleSpec::single(key(ROLES[3])?, days(config.timestamp_days)),
    })
}

fn add(dir: &Path, name: &str, image: &Path, release: &update::publish::Release) -> Result<()> {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.');
    if !valid_name {
        bail!("release name: 1-64 characters of letters, digits, . _ -, not starting with a dot");
    }
    let (config, store) = open(dir)?;
    let store: Arc<dyn KeyStore> = store;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let manifest = update::publish::manifest_for_image(image, release, now)
        .with_context(|| format!("building the manifest of {}", image.display()))?;
    let key = KeyRef::new(store.clone(), RELEASE_KEY.parse()?)?;
    let wire = update::manifest::SignedManifest::sign(&manifest, &[&key])?;
    let staged = dir.join("releases").join(name);
    std::fs::create_dir_all(&staged)?;
    let manifest_path = staged.join("manifest.json");
    keys::fsio::write_atomic(&manifest_path, &wire, 0o644)?;
    let mut repo = update_tuf::Repository::open(&dir.join("tuf"), root_spec(&store, &config)?)
        .context("opening the TUF repository")?;
    repo.add_target(&format!("{name}.manifest.json"), &manifest_path)?;
    repo.add_target(&format!("{name}.image"), image)?;
    println!(
        "release {name}: version {} (code {}, security {}), {} bytes in {} chunks; publish to make it visible",
        manifest.version,
        manifest.version_code,
        manifest.security_version,
        manifest.image_size,
        manifest.chunks.len()
    );
    Ok(())
}

fn publish(dir: &Path, out: &Path) -> Result<()> {
    let (config, store) = open(dir)?;
    let store: Arc<dyn KeyStore> = store;
    let mut repo = update_tuf::Repository::open(&dir.join("tuf"), root_spec(&store, &config)?)
        .context("opening the TUF repository")?;
    let release = repo.sign_and_publish(out)?;
    println!(
        "published repository version {} (root version {}) to {}",
        release.version,
        release.root_version,
        out.display()
    );
    Ok(())
}
