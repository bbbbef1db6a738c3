//! Publisher side: create a repository, add targets, sign releases with
//! keystore-held keys, rotate the root.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keys::KeyRef;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::KeySource;
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target, Timestamp};

use crate::clock::{Clock, SystemClock, add, to_jiff};
use crate::signer::KeyRefSigner;
use crate::{Error, Result, SIGNED_AT_FIELD};

/// The publisher's own bookkeeping in its working directory.
const STATE_FILE: &str = "publisher.json";

/// What [`Repository::open`] needs beside the roots: the last release and
/// the targets staged for the next.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PublisherState {
    version: u64,
    targets: BTreeMap<String, PathBuf>,
}

/// TUF specification version written into every role.
const SPEC_VERSION: &str = "1.0.0";

/// The keys, threshold and lifetime of one top-level role.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    /// Keys that may sign for the role; each lives in some keystore.
    pub keys: Vec<KeyRef>,
    /// How many distinct keys must sign (at least 1, at most `keys.len()`).
    pub threshold: u64,
    /// How long metadata of this role stays valid after signing.
    pub expires_in: Duration,
}

impl RoleSpec {
    /// One key, threshold 1.
    pub fn single(key: KeyRef, expires_in: Duration) -> Self {
        Self {
            keys: vec![key],
            threshold: 1,
            expires_in,
        }
    }
}

/// The four top-level roles of a repository.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// Signs root metadata: the trust anchor devices are provisioned with.
    pub root: RoleSpec,
    /// Signs the list of targets (update bundles) with their hashes.
    pub targets: RoleSpec,
    /// Signs the versions of all targets metadata (consistency).
    pub snapshot: RoleSpec,
    /// Signs the freshness of the snapshot; expires soonest.
    pub timestamp: RoleSpec,
}

/// What [`Repository::sign_and_publish`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The version of the targets, snapshot and timestamp metadata.
    pub version: u64,
    /// The root version it is signed under.
    pub root_version: u64,
    /// `<out>/metadata`: serve this as the metadata base URL.
    pub metadata_dir: PathBuf,
    /// `<out>/targets`: serve this as the targets base URL.
    pub targets_dir: PathBuf,
}

/// A TUF repository being published.
///
/// The working directory holds every root version ever signed
/// (`<dir>/root/N.root.json`) and the current one (`<dir>/root.json`);
/// each release is written, complete, to the directory given to
/// [`Repository::sign_and_publish`]. Consistent snapshots are on:
/// metadata files carry their version and targets their SHA-256 in the
/// file name, so a mirror can hold several releases at once.
#[derive(Debug)]
pub struct Repository {
    dir: PathBuf,
    spec: RootSpec,
    root: Signed<Root>,
    roots: Vec<Vec<u8>>,
    targets: BTreeMap<String, PathBuf>,
    version: u64,
    clock: Arc<dyn Clock>,
    rt: tokio::runtime::Runtime,
}

impl Repository {
    /// Creates a repository in `dir` (created if missing) and signs
    /// `1.root.json` with the root keys. Refuses a directory that already
    /// holds one ([`Repository::open`] it instead).
    pub fn init(dir: &Path, spec: RootSpec) -> Result<Self> {
        Self::init_with_clock(dir, spec, Arc::new(SystemClock))
    }

    /// [`Repository::init`] with a chosen clock for signing and expiry times.
    pub fn init_with_clock(dir: &Path, spec: RootSpec, clock: Arc<dyn Clock>) -> Result<Self> {
        if dir.join("root").join("1.root.json").exists() {
            return Err(Error::InvalidSpec {
                reason: format!(
                    "{} already holds a repository: open it instead",
                    dir.display()
                ),
            });
        }
        std::fs::create_dir_all(dir.join("root")).map_err(|e| io(dir, e))?;
        let rt = runtime()?;
        let (root, sources) = build_root(&spec, NonZeroU64::MIN, clock.as_ref())?;
        let signed = rt.block_on(async {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            SignedRole::new(root.clone(), &KeyHolder::Root(root), &sources, &rng).await
        });
        let signed = signed.map_err(|e| publish_err("root", &e))?;
        check_root_signed(None, signed.signed())?;
        let mut repo = Self {
            dir: dir.to_owned(),
            spec,
            root: signed.signed().clone(),
            roots: Vec::new(),
            targets: BTreeMap::new(),
            version: 0,
            clock,
            rt,
        };
        repo.store_root(signed.buffer().clone())?;
        repo.save_state()?;
        Ok(repo)
    }

    /// Reopens the repository in `dir` (made by [`Repository::init`]) for
    /// a later release. `spec` must name exactly the keys and thresholds of
    /// the current root version; its lifetimes apply to new metadata.
    pub fn open(dir: &Path, spec: RootSpec) -> Result<Self> {
        Self::open_with_clock(dir, spec, Arc::new(SystemClock))
    }

    /// [`Repository::open`] with a chosen clock.
    pub fn open_with_clock(dir: &Path, spec: RootSpec, clock: Arc<dyn Clock>) -> Result<Self> {
        let mut roots = Vec::new();
        loop {
            let path = dir
                .join("root")
                .join(format!("{}.root.json", roots.len() + 1));
            match std::fs::read(&path) {
                Ok(bytes) => roots.push(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(io(&path, e)),
            }
        }
        let current = roots.last().ok_or_else(|| Error::InvalidSpec {
            reason: format!("{} holds no root metadata", dir.display()),
        })?;
        let root: Signed<Root> = serde_json::from_slice(current).map_err(|e| Error::Metadata {
            detail: format!("current root in {}: {e}", dir.display()),
        })?;
        let (expected, _) = build_root(&spec, root.signed.version, clock.as_ref())?;
        for role in [
            RoleType::Root,
            RoleType::Targets,
            RoleType::Snapshot,
            RoleType::Timestamp,
        ] {
            let same = match (expected.roles.get(&role), root.signed.roles.get(&role)) {
                (Some(a), Some(b)) => {
                    let mut ak = a.keyids.clone();
                    let mut bk = b.keyids.clone();
                    ak.sort();
                    bk.sort();
                    ak == bk && a.threshold == b.threshold
                }
                _ => false,
            };
            if !same {
                return Err(Error::InvalidSpec {
                    reason: format!(
                        "{role} keys or threshold differ from root version {}",
                        root.signed.version
                    ),
                });
            }
        }
        let state_path = dir.join(STATE_FILE);
        let state: PublisherState = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Metadata {
                detail: format!("{}: {e}", state_path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PublisherState::default(),
            Err(e) => return Err(io(&state_path, e)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            spec,
            root,
            roots,
            targets: state.targets,
            version: state.version,
            clock,
            rt: runtime()?,
        })
    }

    /// The current root metadata as signed JSON: what devices are
    /// provisioned with as their trust anchor.
    pub fn root_json(&self) -> &[u8] {
        self.roots.last().map(Vec::as_slice).unwrap_or_default()
    }

    /// The current root version.
    pub fn root_version(&self) -> u64 {
        self.root.signed.version.get()
    }

    /// The version of the last release (0 before the first).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Adds (or replaces) target `name` with the contents of `path`, for
    /// the next release. `name` is a plain file name: `[A-Za-z0-9._-]`,
    /// not starting with `.`, at most 128 characters.
    pub fn add_target(&mut self, name: &str, path: &Path) -> Result<()> {
        check_target_name(name)?;
        let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
        if !meta.is_file() {
            return Err(Error::Io {
                path: path.to_owned(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        self.targets.insert(name.to_owned(), path.to_owned());
        self.save_state()
    }

    /// Removes target `name` from the next release; returns whether it was
    /// listed.
    pub fn remove_target(&mut self, name: &str) -> Result<bool> {
        let listed = self.targets.remove(name).is_some();
        self.save_state()?;
        Ok(listed)
    }

    /// Signs a new release (targets, snapshot and timestamp metadata, each
    /// at version `previous + 1`) and writes the complete repository to
    /// `<out>/metadata` and `<out>/targets`. Every root version is written
    /// too, so that devices provisioned with an older root can walk the
    /// chain.
    pub fn sign_and_publish(&mut self, out: &Path) -> Result<Release> {
        let metadata_dir = out.join("metadata");
        let targets_dir = out.join("targets");
        for d in [&metadata_dir, &targets_dir] {
            std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
        }
        // Copy each target first and hash the copy: what is signed is
        // exactly what is served, even if the source changes meanwhile.
        let mut staged = Vec::new();
        for (name, source) in &self.targets {
            let tmp = targets_dir.join(format!(".staging.{name}"));
            std::fs::copy(source, &tmp).map_err(|e| io(source, e))?;
            let target = self
                .rt
                .block_on(Target::from_path(&tmp))
                .map_err(|e| Error::Publish {
                    what: "target",
                    detail: e.to_string(),
                })?;
            let final_name = format!("{}.{name}", hex::encode(&target.hashes.sha256));
            let dest = targets_dir.join(final_name);
            std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
            staged.push((name.clone(), target));
        }

        let version = self
            .version
            .checked_add(1)
            .ok_or_else(|| Error::InvalidSpec {
                reason: "version counter exhausted".into(),
            })?;
        let nz = NonZeroU64::new(version).unwrap_or(NonZeroU64::MIN);
        let now = now_seconds(self.clock.as_ref());
        let sources = sources_for(&[
            &self.spec.targets,
            &self.spec.snapshot,
            &self.spec.timestamp,
        ])?;
        let mut timestamp = Timestamp::new(
            SPEC_VERSION.to_owned(),
            nz,
            add(now, self.spec.timestamp.expires_in),
        );
        // Our addition, covered by the timestamp signature: when it was
        // signed. Devices keep the newest one to notice a clock set back.
        timestamp
            ._extra
            .insert(SIGNED_AT_FIELD.to_owned(), now.to_string().into());

        let root_path = self.dir.join("root.json");
        let signed = self.rt.block_on(async {
            let mut editor = RepositoryEditor::new(&root_path).await?;
            editor
                .targets_version(nz)?
                .targets_expires(add(now, self.spec.targets.expires_in))?
                .snapshot_version(nz)
                .snapshot_expires(add(now, self.spec.snapshot.expires_in))
                .timestamp_version(nz)
                .timestamp_expires(add(now, self.spec.timestamp.expires_in))
                .timestamp(timestamp)?;
            for (name, target) in staged {
                editor.add_target(name, target)?;
            }
            let signed = editor.sign(&sources).await?;
            signed.write(&metadata_dir).await?;
            Ok::<_, tough::error::Error>(())
        });
        signed.map_err(|e| publish_err("release", &e))?;
        for (i, root) in self.roots.iter().enumerate() {
            let path = metadata_dir.join(format!("{}.root.json", i + 1));
            std::fs::write(&path, root).map_err(|e| io(&path, e))?;
        }
        self.version = version;
        self.save_state()?;
        tracing::info!(
            version,
            root_version = self.root_version(),
            "signed release"
        );
        Ok(Release {
            version,
            root_version: self.root_version(),
            metadata_dir,
            targets_dir,
        })
    }

    /// Rotates the root: signs root version N+1 naming the keys of `new`,
    /// with a threshold of both the current root keys and the new root
    /// keys (TUF 5.3.4), so devices trusting version N accept it. The next
    /// [`Repository::sign_and_publish`] signs with the new keys. Rotating
    /// the timestamp or snapshot keys also makes devices forget the
    /// versions they trusted, which recovers from a fast-forward attack.
    pub fn rotate_root(&mut self, new: RootSpec) -> Result<u64> {
        let version =
            self.root
                .signed
                .version
                .checked_add(1)
                .ok_or_else(|| Error::InvalidSpec {
                    reason: "root version exhausted".into(),
                })?;
        let (new_root, new_sources) = build_root(&new, version, self.clock.as_ref())?;
        let old_sources = sources_for(&[&self.spec.root])?;
        let old_root = self.root.signed.clone();
        let signed = self.rt.block_on(async {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let by_new = SignedRole::new(
                new_root.clone(),
                &KeyHolder::Root(new_root.clone()),
                &new_sources,
                &rng,
            )
            .await?;
            let by_old =
                SignedRole::new(new_root, &KeyHolder::Root(old_root), &old_sources, &rng).await?;
            by_new.add_old_signatures(by_old.signed().signatures.clone())
        });
        let signed = signed.map_err(|e| publish_err("rotated root", &e))?;
        check_root_signed(Some(&self.root.signed), signed.signed())?;
        self.root = signed.signed().clone();
        self.spec = new;
        self.store_root(signed.buffer().clone())?;
        tracing::info!(root_version = version.get(), "rotated root");
        Ok(version.get())
    }

    fn save_state(&self) -> Result<()> {
        let state = PublisherState {
            version: self.version,
            targets: self.targets.clone(),
        };
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| Error::Metadata {
            detail: e.to_string(),
        })?;
        keys::fsio::write_atomic(&path, &bytes, 0o644).map_err(|e| Error::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn store_root(&mut self, buffer: Vec<u8>) -> Result<()> {
        let n = self.root.signed.version.get();
        let versioned = self.dir.join("root").join(format!("{n}.root.json"));
        std::fs::write(&versioned, &buffer).map_err(|e| io(&versioned, e))?;
        let current = self.dir.join("root.json");
        keys::fsio::write_atomic(&current, &buffer, 0o644).map_err(|e| Error::Io {
            path: current.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.roots.push(buffer);
        Ok(())
    }
}

/// Root metadata for `spec` at `version`, and the root role's signers.
fn build_root(
    spec: &RootSpec,
    version: NonZeroU64,
    clock: &dyn Clock,
) -> Result<(Root, Vec<Box<dyn KeySource>>)> {
    let mut keys = HashMap::new();
    let mut roles = HashMap::new();
    for (role, rs) in [
        (RoleType::Root, &spec.root),
        (RoleType::Targets, &spec.targets),
        (RoleType::Snapshot, &spec.snapshot),
        (RoleType::Timestamp, &spec.timestamp),
    ] {
        let mut keyids = Vec::new();
        for key in &rs.keys {
            let signer = KeyRefSigner::new(key.clone())?;
            let id = signer.key_id()?;
            if !keyids.contains(&id) {
                keyids.push(id.clone());
            }
            keys.insert(id, signer.tuf_key().clone());
        }
        let threshold = NonZeroU64::new(rs.threshold)
            .filter(|t| t.get() <= keyids.len() as u64)
            .ok_or_else(|| Error::InvalidSpec {
                reason: format!(
                    "{role} threshold {} with {} distinct keys",
                    rs.threshold,
                    keyids.len()
                ),
            })?;
        roles.insert(
            role,
            RoleKeys {
                keyids,
                threshold,
                _extra: HashMap::new(),
            },
        );
    }
    let root = Root {
        spec_version: SPEC_VERSION.to_owned(),
        consistent_snapshot: true,
        version,
        expires: add(now_seconds(clock), spec.root.expires_in),
        keys,
        roles,
        _extra: HashMap::new(),
    };
    Ok((root, sources_for(&[&spec.root])?))
}

/// Checks what a device will check: the new root meets its own threshold
/// and, when rotating, the previous root's threshold.
fn check_root_signed(previous: Option<&Root>, new: &Signed<Root>) -> Result<()> {
    let verdict = match previous {
        Some(prev) => prev
            .verify_role(new)
            .and_then(|()| new.signed.verify_role(new)),
        None => new.signed.verify_role(new),
    };
    verdict.map_err(|e| Error::InvalidSpec {
        reason: format!("root version {} would not verify: {e}", new.signed.version),
    })
}

fn sources_for(roles: &[&RoleSpec]) -> Result<Vec<Box<dyn KeySource>>> {
    let mut out: Vec<Box<dyn KeySource>> = Vec::new();
    for role in roles {
        for key in &role.keys {
            out.push(Box::new(KeyRefSigner::new(key.clone())?));
        }
    }
    Ok(out)
}

fn check_target_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidTargetName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only [A-Za-z0-9._-] are allowed");
    }
    Ok(())
}

/// Now, in whole seconds: metadata times then have one fixed form
/// (`YYYY-MM-DDTHH:MM:SSZ`, as the TUF specification writes them), and
/// files of one role differ in length only where their content does.
fn now_seconds(clock: &dyn Clock) -> jiff::Timestamp {
    let now = to_jiff(clock.now());
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn publish_err(what: &'static str, e: &tough::error::Error) -> Error {
    Error::Publish {
        what,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_are_plain_file_names() {
        assert!(check_target_name("bundle-1.2.3.manifest").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(
                matches!(check_target_name(bad), Err(Error::InvalidTargetName { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
