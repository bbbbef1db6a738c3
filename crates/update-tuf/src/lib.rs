//! TUF repositories for update bundles: a publisher that signs with
//! keystore-held keys, and a device client with every TUF check plus
//! clock step-back, slow-retrieval and endless-data defences.
//!
//! Built on AWS's `tough` (TUF 1.0 client and editor). The main types:
//!
//! - [`Repository`] (publisher): [`Repository::init`] from a [`RootSpec`]
//!   (keys, threshold and lifetime per role) or [`Repository::open`] (a
//!   later process, same keys), [`Repository::add_target`],
//!   [`Repository::sign_and_publish`] (one release: targets, snapshot and
//!   timestamp metadata, written with every root version to a directory a
//!   web server or CDN can serve), [`Repository::rotate_root`] (root N+1
//!   signed by the old and the new root keys).
//! - [`KeyRefSigner`]: tough's `KeySource`/`Sign` over a [`keys::KeyRef`],
//!   so signing happens inside the keystore (software, TPM, PKCS#11);
//!   ECDSA P-256 and Ed25519.
//! - [`Client`] (device): verifies the repository from the provisioned
//!   root ([`Client::new`]), then [`Client::fetch_target`] (small files,
//!   verified bytes) or [`Client::open_target`] (a [`TargetReader`]
//!   bounded by the signed length). [`Limits`] bounds sizes, rate and
//!   time; [`Clock`] is where "now" comes from.
//! - [`Error`]: one variant per refusal (`Untrusted`, `Expired`,
//!   `Rollback`, `Inconsistent`, `EndlessData`, `SlowRetrieval`,
//!   `DeadlineExceeded`, `ClockSteppedBack`, ...).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use keys::{Algorithm, KeyAdmin, KeyRef};
//! use update_tuf::{Client, Limits, Repository, RoleSpec, RootSpec};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Arc::new(
//!     keys_soft::SoftKeyStore::open(&dir.path().join("keys"), keys_soft::KekProtection::File)
//!         .unwrap(),
//! );
//! let key = |name: &str| {
//!     let label = name.parse().unwrap();
//!     store.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
//!     KeyRef::new(store.clone(), label).unwrap()
//! };
//! let day = Duration::from_secs(86_400);
//! let spec = RootSpec {
//!     root: RoleSpec::single(key("root"), 365 * day),
//!     targets: RoleSpec::single(key("targets"), 30 * day),
//!     snapshot: RoleSpec::single(key("snapshot"), 7 * day),
//!     timestamp: RoleSpec::single(key("timestamp"), day),
//! };
//!
//! // Publisher.
//! let mut repo = Repository::init(&dir.path().join("work"), spec).unwrap();
//! std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
//! repo.add_target("manifest.json", &dir.path().join("manifest.json")).unwrap();
//! let release = repo.sign_and_publish(&dir.path().join("www")).unwrap();
//!
//! // Device, provisioned with the root; here the mirror is a local path.
//! let url = |p: &std::path::Path| format!("file://{}/", p.display());
//! let client = Client::new(
//!     repo.root_json(),
//!     &url(&release.metadata_dir),
//!     &url(&release.targets_dir),
//!     &dir.path().join("device"),
//!     Limits::default(),
//! )
//! .unwrap();
//! assert_eq!(client.fetch_target("manifest.json").unwrap(), b"{}");
//! ```
//!
//! Design decisions:
//! - tough does the TUF workflow (root chain, thresholds, versions,
//!   snapshot hashes, expiry, lengths); we add what it lacks and keep its
//!   types out of most of our API. Its `http` feature (reqwest) stays off:
//!   our transport is hyper over TCP, so the minimum rate per window and
//!   the deadline per file are ours, and no second HTTP/TLS stack enters
//!   the tree. tough still links rustls 0.23 with the aws-lc-rs provider,
//!   the workspace's only one (no ring).
//! - `http://`, `https://` and `file://`: TUF metadata authenticates
//!   itself, so a mirror needs no TLS for integrity; `https://` (rustls,
//!   aws-lc-rs, TLS 1.2/1.3, trust anchors from [`TlsRoots`]: a CA PEM or
//!   the platform store) adds confidentiality, so an observer cannot tell
//!   which release a device fetches, and a network attacker cannot even
//!   serve stale-but-signed metadata.
//! - Clock step-back: the publisher puts its signing time in timestamp
//!   metadata (`bulwark_signed_at`, covered by the signature); the device
//!   keeps the newest one in its datastore and refuses a clock earlier than
//!   it minus [`Limits::clock_tolerance`], before any expiry check trusts
//!   that clock. Expiry is checked twice: by tough against the system
//!   clock and by us against the [`Clock`].
//! - The device starts from the newer of the provisioned root and the
//!   verified root tough keeps in the datastore, so revoked root keys stay
//!   revoked across restarts.
//! - Consistent snapshots: versioned metadata and hash-named targets let a
//!   mirror hold several releases and make mix-and-match visible.
//! - Blocking API over a private single-threaded tokio runtime (tough is
//!   async; keystores and installers are blocking): async callers use
//!   `spawn_blocking`.
//! - [`TargetReader`] hands bytes out before the final hash check (that is
//!   what streaming means); only its end-of-stream proves the whole
//!   target. The update installer verifies each chunk against the signed
//!   manifest before writing it, so nothing unverified reaches a slot.

mod client;
mod clock;
mod error;
mod publish;
mod signer;
mod transport;

pub use client::{Client, Limits, TargetInfo, TargetReader};
pub use clock::{Clock, SystemClock};
pub use error::{Error, Result};
pub use publish::{Release, Repository, RoleSpec, RootSpec};
pub use signer::KeyRefSigner;
pub use transport::TlsRoots;

/// The field our publisher adds to timestamp metadata (covered by its
/// signature): when the timestamp was signed, in RFC 3339.
pub const SIGNED_AT_FIELD: &str = "bulwark_signed_at";
