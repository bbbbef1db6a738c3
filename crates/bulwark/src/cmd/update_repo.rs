//! `bulwark update repo ...`: the publisher's side of secure updates.
//!
//! A repository directory holds a keystore with the TUF role keys and the
//! release-signing key (any backend: a PKCS#11 token keeps them off the
//! build host's disk), `bulwark-repo.json` naming them, and the TUF
//! working state. `add` builds and signs a release's chunked manifest and
//! adds it with its image as TUF targets; `publish` signs the metadata
//! into a directory any static HTTPS mirror can serve. `rotate` replaces
//! role keys through a new root version signed by the old and the new
//! root keys (TUF 5.3.4), so devices follow it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use keys::{Algorithm, KeyAdmin, KeyLabel, KeyRef, KeyStore};
use serde::{Deserialize, Serialize};
use update_tuf::{RoleSpec, RootSpec};

use crate::keystore::{KeystoreSpec, SpecArg};

const CONFIG: &str = "bulwark-repo.json";
/// The configuration a key rotation is about to make current, written
/// before the new root is signed: a rotation cut between signing the root
/// and saving [`CONFIG`] is finished (or dropped) by the next command.
const PENDING: &str = "bulwark-repo.next.json";
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
    /// Gives roles new keys in a new root version (publish to make it visible).
    Rotate {
        /// Repository directory.
        dir: PathBuf,
        /// A role whose key is replaced (repeat for several: one root version).
        #[arg(long, required = true)]
        role: Vec<Role>,
    },
}

/// A TUF top-level role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    const ALL: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];

    fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoConfig {
    keystore: String,
    root_days: u64,
    timestamp_days: u64,
    /// Absent in repositories made before `rotate`: the original labels.
    #[serde(default)]
    role_keys: RoleKeys,
}

/// The keystore label of each role's current key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleKeys {
    root: String,
    targets: String,
    snapshot: String,
    timestamp: String,
}

impl Default for RoleKeys {
    fn default() -> Self {
        Self {
            root: "tuf-root".into(),
            targets: "tuf-targets".into(),
            snapshot: "tuf-snapshot".into(),
            timestamp: "tuf-timestamp".into(),
        }
    }
}

impl RoleKeys {
    fn get(&self, role: Role) -> &str {
        match role {
            Role::Root => &self.root,
            Role::Targets => &self.targets,
            Role::Snapshot => &self.snapshot,
            Role::Timestamp => &self.timestamp,
        }
    }

    fn set(&mut self, role: Role, label: String) {
        *match role {
            Role::Root => &mut self.root,
            Role::Targets => &mut self.targets,
            Role::Snapshot => &mut self.snapshot,
            Role::Timestamp => &mut self.timestamp,
        } = label;
    }
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
        RepoCommand::Rotate { dir, role } => rotate(&dir, &role),
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
    let role_keys = RoleKeys::default();
    let labels = Role::ALL.map(|r| role_keys.get(r));
    for label in labels.iter().chain([&RELEASE_KEY]) {
        store
            .generate(&label.parse()?, Algorithm::EcdsaP256Sha256)
            .with_context(|| format!("generating the {label} key"))?;
    }
    let config = RepoConfig {
        keystore: spec.to_string(),
        root_days,
        timestamp_days,
        role_keys,
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
    save(dir, &config)?;
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

fn open(dir: &Path) -> Result<(RepoConfig, Arc<dyn KeyAdmin>)> {
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
    let config = settle_rotation(dir, config, &store)?;
    Ok((config, store))
}

/// Finishes a key rotation that was cut short. [`PENDING`] names the new
/// keys: if the repository's root already names them, the root was signed
/// and only saving the configuration was lost, so it becomes current;
/// otherwise the root was not rotated and it is dropped.
fn settle_rotation(
    dir: &Path,
    config: RepoConfig,
    store: &Arc<dyn KeyAdmin>,
) -> Result<RepoConfig> {
    let path = dir.join(PENDING);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(config),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let store: Arc<dyn KeyStore> = store.clone();
    let next = serde_json::from_str::<RepoConfig>(&text)
        .ok()
        .filter(|next| {
            root_spec(&store, next)
                .is_ok_and(|spec| update_tuf::Repository::open(&dir.join("tuf"), spec).is_ok())
        });
    let settled = match next {
        Some(next) => {
            save(dir, &next)?;
            eprintln!("finished an interrupted key rotation: {CONFIG} names the new root's keys");
            next
        }
        None => {
            eprintln!("dropped an interrupted key rotation: the root was not rotated");
            config
        }
    };
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(settled)
}

fn save(dir: &Path, config: &RepoConfig) -> Result<()> {
    keys::fsio::write_atomic(
        &dir.join(CONFIG),
        serde_json::to_string_pretty(config)?.as_bytes(),
        0o600,
    )?;
    Ok(())
}

fn root_spec(store: &Arc<dyn KeyStore>, config: &RepoConfig) -> Result<RootSpec> {
    let key = |role: Role| -> Result<KeyRef> {
        let label: KeyLabel = config.role_keys.get(role).parse()?;
        KeyRef::new(store.clone(), label)
            .with_context(|| format!("reading the {} role key", role.name()))
    };
    Ok(RootSpec {
        root: RoleSpec::single(key(Role::Root)?, days(config.root_days)),
        targets: RoleSpec::single(key(Role::Targets)?, days(config.root_days)),
        snapshot: RoleSpec::single(key(Role::Snapshot)?, days(config.timestamp_days)),
        timestamp: RoleSpec::single(key(Role::Timestamp)?, days(config.timestamp_days)),
    })
}

/// `tuf-<role>-N` with the lowest N from 2 that the keystore does not hold.
fn fresh_label(role: Role, taken: &[String]) -> Result<KeyLabel> {
    let base = RoleKeys::default().get(role).to_owned();
    let label = (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|l| !taken.contains(l))
        .expect("an unbounded range has a free label");
    Ok(label.parse()?)
}

fn rotate(dir: &Path, roles: &[Role]) -> Result<()> {
    let (mut config, admin) = open(dir)?;
    let store: Arc<dyn KeyStore> = admin.clone();
    let mut repo = update_tuf::Repository::open(&dir.join("tuf"), root_spec(&store, &config)?)
        .context("opening the TUF repository")?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let mut taken: Vec<String> = admin
        .list()?
        .into_iter()
        .map(|k| k.label.as_str().to_owned())
        .collect();
    let mut created = Vec::new();
    let mut retired = Vec::new();
    let generated = roles.iter().try_for_each(|&role| -> Result<()> {
        let label = fresh_label(role, &taken)?;
        admin
            .generate(&label, Algorithm::EcdsaP256Sha256)
            .with_context(|| format!("generating the new {} key {label}", role.name()))?;
        taken.push(label.as_str().to_owned());
        created.push(label.clone());
        retired.push(config.role_keys.get(role).to_owned());
        config.role_keys.set(role, label.as_str().to_owned());
        Ok(())
    });
    let rotated = generated.and_then(|()| {
        let spec = root_spec(&store, &config)?;
        keys::fsio::write_atomic(
            &dir.join(PENDING),
            serde_json::to_string_pretty(&config)?.as_bytes(),
            0o600,
        )?;
        repo.rotate_root(spec).context("signing the rotated root")
    });
    let version = match rotated {
        Ok(version) => version,
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(PENDING));
            // Nothing names the new keys yet: take them back out.
            for label in &created {
                if let Err(d) = admin.delete(label) {
                    tracing::warn!(%label, error = %d, "could not remove an unused new key");
                }
            }
            return Err(e);
        }
    };
    // Should this fail, PENDING still names the new keys and the next
    // command finishes the rotation (`settle_rotation`).
    save(dir, &config)
        .and_then(|()| Ok(std::fs::remove_file(dir.join(PENDING))?))
        .with_context(|| {
            format!(
                "root version {version} is signed but {CONFIG} was not updated; the next `bulwark update repo` command finishes it from {PENDING}"
            )
        })?;
    println!("root version {version}: new keys for {}", {
        roles
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    });
    for ((role, new), old) in roles.iter().zip(&created).zip(&retired) {
        println!("  {}: {new} (retired: {old})", role.name());
    }
    println!(
        "  retired keys stay in {}'s keystore (bulwark has no key delete command);",
        dir.display()
    );
    println!("  publish to make the new root visible to devices");
    Ok(())
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
