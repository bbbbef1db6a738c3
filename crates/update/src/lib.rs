//! Signed update releases installed chunk by chunk into A/B slots, each
//! chunk verified before it is written (ISO/IEC 27402 5.2.7, 5.2.5.2.1).
//!
//! The main types and how they fit:
//! - [`manifest::Manifest`] describes a release: hardware, version codes,
//!   security version, image size and a SHA-256 per chunk. Publishers
//!   sign it with [`manifest::SignedManifest::sign`] through keystore keys;
//!   devices check it with [`manifest::SignedManifest::verify`], the only
//!   way to get a [`manifest::VerifiedManifest`].
//! - [`install::Installer`] takes a `VerifiedManifest` and a
//!   [`install::ChunkSource`] and writes the inactive slot, then marks it
//!   "try once" through a [`boot::BootControl`] (simulated in a file,
//!   U-Boot's environment, or GRUB's).
//! - [`commit::confirm_boot`] runs after a boot: it checks the running slot
//!   against the release recorded for it ([`integrity::verify_slot`]) and
//!   commits a healthy trial, raising the [`anti_rollback::SecurityFloor`],
//!   or falls back; a slot below the floor is refused as a rollback unless
//!   a [`waiver::RollbackWaiver`] (the owner's audited override) names
//!   its release.
//!
//! ```
//! # use std::sync::Arc;
//! # use keys::{Algorithm, KeyAdmin, KeyRef};
//! use update::boot::{FileBootControl, SlotName, Slots};
//! use update::install::{FileSource, Installer};
//! use update::manifest::{Device, Manifest, SignedManifest, TrustedKeys};
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = keys_soft::SoftKeyStore::open(&dir.path().join("keys"), keys_soft::KekProtection::File).unwrap();
//! # let label = "release".parse().unwrap();
//! # store.generate(&label, Algorithm::Ed25519).unwrap();
//! # let key = KeyRef::new(Arc::new(store), label).unwrap();
//! // Publisher: hash the image per chunk and sign the manifest.
//! let image = vec![7u8; 100_000];
//! let chunks = image.chunks(65536).map(update::manifest::chunk_hash).collect();
//! let manifest = Manifest {
//!     format: update::manifest::FORMAT,
//!     compatible: "bw-100".into(),
//!     version: "1.1.0".into(),
//!     version_code: 2,
//!     min_version_code: 0,
//!     security_version: 1,
//!     image_size: image.len() as u64,
//!     chunk_size: 65536,
//!     chunks,
//!     created_unix: 0,
//! };
//! let wire = SignedManifest::sign(&manifest, &[&key]).unwrap();
//!
//! // Device: verify, then install into the inactive slot.
//! let trusted = TrustedKeys::new(&[key.public_key().clone()]).unwrap();
//! let device = Device { compatible: "bw-100".into(), current_version_code: 1, security_floor: 0 };
//! let release = SignedManifest::verify(&wire, &trusted, 1, &device).unwrap();
//! # let image_path = dir.path().join("image");
//! # std::fs::write(&image_path, &image).unwrap();
//! let slots = Slots::new(dir.path().join("slot-a"), dir.path().join("slot-b"));
//! let boot = FileBootControl::create(&dir.path().join("boot.json"), SlotName::A).unwrap();
//! let installer = Installer::new(&boot, &slots, &dir.path().join("state")).unwrap();
//! let report = installer.install(&release, &mut FileSource::open(&image_path).unwrap()).unwrap();
//! assert_eq!(report.slot, SlotName::B);
//! assert_eq!(boot.boot().unwrap(), SlotName::B); // tried once
//! ```
//!
//! Design decisions:
//! - **A hash per chunk, not one hash of the image.** One hash can only be
//!   checked after the whole image has streamed, so unverified bytes
//!   would already sit in the slot (SWUpdate's and tough's weakness). With
//!   a signed hash per chunk every chunk is checked *before* it is written
//!   and no unverified byte reaches a slot; the chunks also hash in
//!   parallel on all cores, adaptive updates find reusable chunks by hash,
//!   and an interrupted install resumes at a chunk boundary. A flat list
//!   (32 bytes per chunk, 64 KiB to 4 MiB chunks) is small enough that a
//!   Merkle tree would add code without saving anything a device needs.
//! - **Domain separation.** Signatures cover
//!   `b"bulwark-update-manifest-v1\0" || payload`, so a release key's
//!   signature over a manifest can never be presented as a signature over
//!   a configuration bundle or a log checkpoint, nor the reverse, even if
//!   an operator reuses a key; the version in the prefix retires old
//!   formats.
//! - **Signatures before parsing.** The wire form carries the payload's
//!   exact bytes (base64); signatures are checked over them before the
//!   payload is parsed, so unauthenticated input meets only a tiny JSON
//!   envelope.
//! - **The journal is the state.** No lock files: an install records the
//!   release digest and the count of durable, verified chunks, and the
//!   next attempt resumes or restarts; each slot's record (the signed
//!   manifest it holds) is removed before the slot is written and stored
//!   only after it verified, so a power cut never leaves a bootable slot
//!   that claims a release it does not hold.
//! - **Bounded memory.** Chunk buffers in flight are capped at 4 MiB (two
//!   chunks at least), whatever the image size; the rest of the memory is
//!   the manifest (32 bytes per chunk).

pub mod anti_rollback;
pub mod boot;
pub mod commit;
mod error;
pub mod health;
pub mod install;
pub mod integrity;
mod journal;
pub mod manifest;
mod parallel;
pub mod progress;
pub mod publish;
pub mod records;
pub mod waiver;

pub use error::{Error, Result};
pub use progress::{InstallPhase, InstallProgress, ProgressSnapshot};
