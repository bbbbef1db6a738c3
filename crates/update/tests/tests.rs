//! Integration tests for the update crate, one module per concern:
//! `install` (happy path, adaptive reuse, resume, boot-state rules),
//! `attacks` (each refused, nothing bootable written), `integrity`
//! (first bad chunk), `boot_env` (real `grub-editenv` and `fw_setenv`),
//! `commit` (confirm or fall back, security floor), and, with the
//! `crash-test` feature, `memory` (peak RSS) and `crash` (SIGKILL loop).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use keys::{Algorithm, KeyAdmin, KeyRef};
use keys_soft::{KekProtection, SoftKeyStore};
use update::Error;
use update::anti_rollback::{FileSecurityFloor, SecurityFloor};
use update::boot::{BootControl, FileBootControl, SlotName, Slots};
use update::commit::{
    BootOutcome, Trust, confirm_boot, confirm_boot_with_health, confirm_boot_with_waiver,
};
use update::install::{ChunkSource, FileSource, InstallOptions, Installer, ReaderSource};
use update::integrity::verify_slot;
use update::manifest::{
    AuthenticManifest, Device, FORMAT, Manifest, SignedManifest, TrustedKeys, VerifiedManifest,
    chunk_hash,
};
use update::records::SlotRecords;
use update::waiver::{RollbackWaiver, WaiverFile};

const CHUNK: usize = 64 * 1024;
const HW: &str = "bw-100";

/// Deterministic bytes: chunk `i` of an image is a function of `seed(i)`.
fn image(chunks: usize, last_len: usize, seed: impl Fn(usize) -> u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks * CHUNK);
    for i in 0..chunks {
        let mut x = seed(i) | 1;
        let len = if i + 1 == chunks { last_len } else { CHUNK };
        for _ in 0..len / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend(std::iter::repeat_n(0xA5, len % 8));
    }
    out
}

fn manifest(image: &[u8], version_code: u64, security_version: u64) -> Manifest {
    Manifest {
        format: FORMAT,
        compatible: HW.to_owned(),
        version: format!("1.{version_code}.0"),
        version_code,
        min_version_code: 0,
        security_version,
        image_size: image.len() as u64,
        chunk_size: CHUNK as u32,
        chunks: image.chunks(CHUNK).map(chunk_hash).collect(),
        created_unix: 1_800_000_000,
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: KeyRef,
    second: KeyRef,
    untrusted: KeyRef,
    trusted: TrustedKeys,
    boot: FileBootControl,
    slots: Slots,
    floor: FileSecurityFloor,
    base: Vec<u8>,
}

impl Fixture {
    /// Slot A holds and has committed release 1 (`base`), with its record.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let store = SoftKeyStore::open(&dir.join("keys"), KekProtection::File).unwrap();
        for label in ["release", "second", "untrusted"] {
            store
                .generate(&label.parse().unwrap(), Algorithm::EcdsaP256Sha256)
                .unwrap();
        }
        let store: Arc<dyn keys::KeyStore> = Arc::new(store);
        let key = |l: &str| KeyRef::new(store.clone(), l.parse().unwrap()).unwrap();
        let (k, second, untrusted) = (key("release"), key("second"), key("untrusted"));
        let trusted =
            TrustedKeys::new(&[k.public_key().clone(), second.public_key().clone()]).unwrap();
        let slots = Slots::new(dir.join("slot-a"), dir.join("slot-b"));
        let boot = FileBootControl::create(&dir.join("boot.json"), SlotName::A).unwrap();
        let floor = FileSecurityFloor::new(&dir.join("state").join("floor.json"));
        let base = image(40, 1000, |i| i as u64 * 31 + 1);
        let f = Self {
            _tmp: tmp,
            dir,
            key: k,
            second,
            untrusted,
            trusted,
            boot,
            slots,
            floor,
            base,
        };
        std::fs::write(&f.slots.a.path, &f.base).unwrap();
        let installed = f.authentic(&f.sign(&manifest(&f.base, 1, 1)));
        f.records().store(SlotName::A, &installed).unwrap();
        f
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn records(&self) -> SlotRecords {
        SlotRecords::new(&self.state()).unwrap()
    }

    fn sign(&self, m: &Manifest) -> Vec<u8> {
        SignedManifest::sign(m, &[&self.key]).unwrap()
    }

    fn authentic(&self, wire: &[u8]) -> AuthenticManifest {
        SignedManifest::verify_installed(wire, &self.trusted, 1, HW).unwrap()
    }

    fn device(&self, current_version_code: u64) -> Device {
        Device {
            compatible: HW.to_owned(),
            current_version_code,
            security_floor: self.floor.get().unwrap(),
        }
    }

    fn verify(&self, wire: &[u8]) -> Result<VerifiedManifest, Error> {
        SignedManifest::verify(wire, &self.trusted, 1, &self.device(1))
    }

    fn release(&self, image: &[u8], version_code: u64) -> VerifiedManifest {
        self.verify(&self.sign(&manifest(image, version_code, 1)))
            .unwrap()
    }

    fn installer(&self) -> Installer<'_> {
        Installer::new(&self.boot, &self.slots, &self.state())
            .unwrap()
            .with_options(InstallOptions {
                checkpoint_bytes: 4 * CHUNK as u64,
                ..InstallOptions::default()
            })
    }

    fn image_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn trust(&self) -> Trust<'_> {
        Trust {
            keys: &self.trusted,
            threshold: 1,
            compatible: HW,
        }
    }

    /// Nothing about slot B is bootable: no trial mark, no record, and a
    /// power-on boots A.
    fn assert_b_not_bootable(&self) {
        assert_eq!(self.boot.state().unwrap().tried, None);
        assert_eq!(self.records().load(SlotName::B).unwrap(), None);
        assert_eq!(self.boot.boot().unwrap(), SlotName::A);
    }
}

/// A source over bytes in memory that counts reads and can fail at a chunk.
struct Counting {
    bytes: Vec<u8>,
    read: u64,
    fail_at: Option<u64>,
}

impl ChunkSource for Counting {
    fn read_chunk(&mut self, index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.fail_at == Some(index) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "link dropped",
            ));
        }
        let start = usize::try_from(offset).unwrap();
        let src = self
            .bytes
            .get(start..start + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        self.read += buf.len() as u64;
        Ok(())
    }
}

/// A reader that counts the bytes taken from it.
struct CountingReader<'a>(io::Cursor<Vec<u8>>, &'a std::cell::Cell<u64>);

impl io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.set(self.1.get() + n as u64);
        Ok(n)
    }
}

/// An in-memory "HTTP server" for a `RangedSource`: records each range
/// opened (`start`, `end`) and counts what it sends and what is read.
struct RangeServer<'a> {
    image: &'a [u8],
    opened: std::cell::RefCell<Vec<(u64, Option<u64>)>>,
    served: std::cell::Cell<u64>,
}

impl<'a> RangeServer<'a> {
    fn new(image: &'a [u8]) -> Self {
        Self {
            image,
            opened: std::cell::RefCell::default(),
            served: std::cell::Cell::new(0),
        }
    }

    /// The `open` closure of a `RangedSource`.
    fn open<'s>(&'s self) -> impl FnMut(u64, Option<u64>) -> io::Result<CountingReader<'s>> + 's {
        move |at, end| {
            self.opened.borrow_mut().push((at, end));
            let at = usize::try_from(at).unwrap();
            let end = end.map_or(self.image.len(), |e| usize::try_from(e).unwrap());
            let part = self.image[at..end].to_vec();
            Ok(CountingReader(io::Cursor::new(part), &self.served))
        }
    }

    /// Bytes the ranges opened hold: what a server would send.
    fn sent(&self) -> u64 {
        let len = self.image.len() as u64;
        self.opened
            .borrow()
            .iter()
            .map(|&(at, end)| end.unwrap_or(len) - at)
            .sum()
    }
}

fn counting(bytes: &[u8]) -> Counting {
    Counting {
        bytes: bytes.to_vec(),
        read: 0,
        fail_at: None,
    }
}

/// Happy path, adaptive reuse, resume and the boot-state rules.
mod install {
    use super::*;

    #[test]
    fn install_writes_the_inactive_slot_and_marks_it_try_once() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.release(&new, 2);
        let path = f.image_file("v2.img", &new);
        let report = f
            .installer()
            .install(&release, &mut FileSource::open(&path).unwrap())
            .unwrap();
        assert_eq!(report.slot, SlotName::B);
        assert_eq!(report.chunks, 40);
        assert_eq!(
            report.downloaded_bytes + report.reused_bytes,
            new.len() as u64
        );
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
        assert_eq!(
            std::fs::read(&f.slots.a.path).unwrap(),
            f.base,
            "active slot touched"
        );
        assert_eq!(f.boot.state().unwrap().tried, Some((SlotName::B, 1)));
        assert!(f.records().load(SlotName::B).unwrap().is_some());
        assert!(!f.state().join("install-journal.json").exists());

        // First boot of B, confirmed: committed, floor raised.
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let outcome = confirm_boot(&f.boot, &f.slots, &f.records(), &f.floor, f.trust()).unwrap();
        assert!(
            matches!(
                outcome,
                BootOutcome::TrialCommitted {
                    slot: SlotName::B,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(f.boot.active().unwrap(), SlotName::B);
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
    }

    #[test]
    fn adaptive_update_reads_only_changed_chunks() {
        // One chunk of 40 changed (2.5%), at a different position in
        // another chunk moved: both found locally.
        let new = image(40, 1000, |i| match i {
            7 => 0xdead,
            8 => 9 * 31 + 1, // chunk 9 of the base image, moved
            _ => i as u64 * 31 + 1,
        });
        for with_record in [true, false] {
            let f = Fixture::new();
            if !with_record {
                // No record: the installer hashes the active slot instead.
                f.records().remove(SlotName::A).unwrap();
            }
            let release = f.release(&new, 2);
            let mut source = counting(&new);
            let report = f.installer().install(&release, &mut source).unwrap();
            assert_eq!(
                report.downloaded_bytes, CHUNK as u64,
                "with_record={with_record}"
            );
            assert_eq!(source.read, CHUNK as u64);
            assert_eq!(report.reused_bytes, new.len() as u64 - CHUNK as u64);
            assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
        }
    }

    /// A ranged source (HTTP `Range`) opens a range only where chunks are
    /// needed, bounded by the installer's plan: an image with two changed
    /// chunks far apart costs two ranges of exactly one chunk each, not
    /// the whole image read and discarded, nor a server streaming past
    /// the chunk until the connection is dropped.
    #[test]
    fn ranged_source_downloads_only_the_changed_chunks() {
        let new = image(40, 1000, |i| match i {
            5 => 0xbeef,
            30 => 0xcafe,
            _ => i as u64 * 31 + 1,
        });
        let f = Fixture::new();
        let release = f.release(&new, 2);
        let server = RangeServer::new(&new);
        let mut source = update::install::RangedSource::new(server.open(), CHUNK as u64);
        assert_eq!(
            f.installer().bytes_to_fetch(&release).unwrap(),
            2 * CHUNK as u64,
            "the estimate a data budget is checked against"
        );
        let report = f.installer().install(&release, &mut source).unwrap();
        assert_eq!(report.downloaded_bytes, 2 * CHUNK as u64);
        let c = CHUNK as u64;
        assert_eq!(
            *server.opened.borrow(),
            [(5 * c, Some(6 * c)), (30 * c, Some(31 * c))]
        );
        assert_eq!(server.sent(), 2 * c, "bytes the ranges hold");
        assert_eq!(server.served.get(), 2 * c, "bytes taken from the ranges");
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
    }

    /// Adjacent changed chunks make one run, and runs at most `max_gap`
    /// apart one range (the reused chunk between them read through):
    /// chunks 5, 6 and 8 cost one range 5..9, chunk 30 one more, and the
    /// changed last (short) chunk a range ending at the image's end.
    #[test]
    fn ranged_source_merges_adjacent_and_near_runs() {
        let new = image(40, 1000, |i| match i {
            5 | 6 | 8 | 30 | 39 => 0xbeef + i as u64,
            _ => i as u64 * 31 + 1,
        });
        let f = Fixture::new();
        let release = f.release(&new, 2);
        let server = RangeServer::new(&new);
        let mut source = update::install::RangedSource::new(server.open(), CHUNK as u64);
        let report = f.installer().install(&release, &mut source).unwrap();
        let c = CHUNK as u64;
        let len = new.len() as u64;
        assert_eq!(report.downloaded_bytes, 4 * c + 1000);
        assert_eq!(
            *server.opened.borrow(),
            [
                (5 * c, Some(9 * c)),
                (30 * c, Some(31 * c)),
                (39 * c, Some(len))
            ]
        );
        assert_eq!(server.served.get(), 5 * c + 1000, "chunk 7 read through");
        assert_eq!(server.sent(), server.served.get());
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
    }

    /// A chunk the active slot fails to supply (changed underneath its
    /// record) is fetched outside the plan, in a range of its own.
    #[test]
    fn ranged_source_fetches_an_unplanned_chunk_alone() {
        let f = Fixture::new();
        let mut a = f.base.clone();
        a[3 * CHUNK + 10] ^= 1;
        std::fs::write(&f.slots.a.path, &a).unwrap();
        let release = f.release(&f.base, 2);
        let server = RangeServer::new(&f.base);
        let mut source = update::install::RangedSource::new(server.open(), CHUNK as u64);
        let report = f.installer().install(&release, &mut source).unwrap();
        let c = CHUNK as u64;
        assert_eq!(report.downloaded_bytes, c);
        assert_eq!(*server.opened.borrow(), [(3 * c, Some(4 * c))]);
        assert_eq!(server.served.get(), c);
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), f.base);
    }

    /// Without a plan (a caller reading chunks itself) ranges stay
    /// open-ended, as before plans existed.
    #[test]
    fn ranged_source_without_a_plan_opens_open_ended_ranges() {
        let new = image(8, 1000, |i| i as u64 + 7);
        let server = RangeServer::new(&new);
        let mut source = update::install::RangedSource::new(server.open(), CHUNK as u64);
        let mut buf = vec![0u8; CHUNK];
        let c = CHUNK as u64;
        source.read_chunk(1, c, &mut buf).unwrap();
        source.read_chunk(5, 5 * c, &mut buf).unwrap();
        assert_eq!(buf, new[5 * CHUNK..6 * CHUNK]);
        assert_eq!(*server.opened.borrow(), [(c, None), (5 * c, None)]);
    }

    #[test]
    fn changed_active_slot_is_not_trusted_for_reuse() {
        // The record says chunk 3 is there, but the active slot was
        // modified: the chunk fails its hash and is fetched instead.
        let f = Fixture::new();
        let mut a = f.base.clone();
        a[3 * CHUNK + 10] ^= 1;
        std::fs::write(&f.slots.a.path, &a).unwrap();
        let release = f.release(&f.base, 2);
        let mut source = counting(&f.base);
        let report = f.installer().install(&release, &mut source).unwrap();
        assert_eq!(report.downloaded_bytes, CHUNK as u64);
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), f.base);
    }

    #[test]
    fn interrupted_install_resumes_from_the_journal() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.release(&new, 2);
        let mut failing = counting(&new);
        failing.fail_at = Some(30);
        let err = f.installer().install(&release, &mut failing).unwrap_err();
        assert!(matches!(err, Error::Source { index: 30, .. }), "{err:?}");
        f.assert_b_not_bootable();

        let mut source = counting(&new);
        let report = f.installer().install(&release, &mut source).unwrap();
        assert!(report.resumed_bytes >= 24 * CHUNK as u64, "{report:?}");
        assert_eq!(source.read + report.resumed_bytes, new.len() as u64);
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);

        // A different release into the same slot does not resume.
        let newer = image(40, 1000, |i| i as u64 * 1231 + 3);
        let mut failing = counting(&newer);
        failing.fail_at = Some(39);
        f.boot.fallback().unwrap();
        let release3 = f.release(&newer, 3);
        f.installer().install(&release3, &mut failing).unwrap_err();
        let other = f.release(&new, 2);
        let report = f.installer().install(&other, &mut counting(&new)).unwrap();
        assert_eq!(report.resumed_bytes, 0);
    }

    #[test]
    fn a_stale_trial_mark_is_cleared_before_the_slot_is_written() {
        let f = Fixture::new();
        // As if an earlier install had marked B and been cut off.
        f.boot.mark_try_once(SlotName::B).unwrap();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let mut failing = counting(&new);
        failing.fail_at = Some(1);
        f.installer()
            .install(&f.release(&new, 2), &mut failing)
            .unwrap_err();
        f.assert_b_not_bootable();
    }

    #[test]
    fn install_is_refused_while_a_trial_runs() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        f.installer()
            .install(&f.release(&new, 2), &mut counting(&new))
            .unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let err = f
            .installer()
            .install(&f.release(&new, 3), &mut counting(&new))
            .unwrap_err();
        assert!(matches!(err, Error::SlotBusy { .. }), "{err:?}");
        assert_eq!(
            std::fs::read(&f.slots.b.path).unwrap(),
            new,
            "running slot touched"
        );
    }

    #[test]
    fn a_sequential_reader_is_a_source() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| {
            if i % 2 == 0 {
                i as u64 * 31 + 1
            } else {
                10_000 + i as u64
            }
        });
        let report = f
            .installer()
            .install(&f.release(&new, 2), &mut ReaderSource::new(&new[..]))
            .unwrap();
        assert_eq!(
            report.downloaded_bytes,
            20 * CHUNK as u64 - (CHUNK as u64 - 1000)
        );
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
    }
}

/// Each attack is refused with an error naming it, and slot B is left
/// unbootable (no trial mark, no record; power-on boots A).
mod attacks {
    use super::*;

    fn new_image() -> Vec<u8> {
        image(40, 1000, |i| i as u64 * 977 + 5)
    }

    #[test]
    fn unsigned_manifest_is_refused() {
        let f = Fixture::new();
        let wire = SignedManifest::sign(&manifest(&new_image(), 2, 1), &[]).unwrap();
        let err = f.verify(&wire).unwrap_err();
        assert!(matches!(err, Error::UntrustedSigner { .. }), "{err:?}");
        f.assert_b_not_bootable();
    }

    #[test]
    fn untrusted_key_is_refused() {
        let f = Fixture::new();
        let wire = SignedManifest::sign(&manifest(&new_image(), 2, 1), &[&f.untrusted]).unwrap();
        let err = f.verify(&wire).unwrap_err();
        assert!(matches!(err, Error::UntrustedSigner { key_ids } if key_ids.len() == 1));
        f.assert_b_not_bootable();
    }

    #[test]
    fn signatures_below_the_threshold_are_refused() {
        let f = Fixture::new();
        let wire =
            SignedManifest::sign(&manifest(&new_image(), 2, 1), &[&f.key, &f.untrusted]).unwrap();
        let err = SignedManifest::verify(&wire, &f.trusted, 2, &f.device(1)).unwrap_err();
        assert!(
            matches!(err, Error::BelowThreshold { have: 1, need: 2 }),
            "{err:?}"
        );
        let both =
            SignedManifest::sign(&manifest(&new_image(), 2, 1), &[&f.key, &f.second]).unwrap();
        SignedManifest::verify(&both, &f.trusted, 2, &f.device(1)).unwrap();
    }

    #[test]
    fn other_hardware_is_refused() {
        let f = Fixture::new();
        let mut m = manifest(&new_image(), 2, 1);
        m.compatible = "bw-200".to_owned();
        let err = f.verify(&f.sign(&m)).unwrap_err();
        assert!(matches!(err, Error::WrongHardware { .. }), "{err:?}");
    }

    #[test]
    fn rollback_is_refused() {
        let f = Fixture::new();
        let wire = f.sign(&manifest(&new_image(), 4, 1));
        let err = SignedManifest::verify(&wire, &f.trusted, 1, &f.device(5)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Rollback {
                    offered: 4,
                    installed: 5
                }
            ),
            "{err:?}"
        );
        f.floor.raise(2).unwrap();
        let err = f
            .verify(&f.sign(&manifest(&new_image(), 6, 1)))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowSecurityFloor {
                    offered: 1,
                    floor: 2
                }
            ),
            "{err:?}"
        );
    }

    /// A byte flipped in the first, a middle and the last chunk: refused at
    /// that chunk, which never reaches the slot.
    #[test]
    fn a_flipped_byte_is_caught_before_its_chunk_is_written() {
        let new = new_image();
        for position in [0, 17 * CHUNK + 4321, new.len() - 1] {
            let f = Fixture::new();
            let release = f.release(&new, 2);
            let mut bad = new.clone();
            bad[position] ^= 0x01;
            let path = f.image_file("bad.img", &bad);
            let err = f
                .installer()
                .install(&release, &mut FileSource::open(&path).unwrap())
                .unwrap_err();
            let index = (position / CHUNK) as u64;
            assert!(
                matches!(err, Error::ChunkMismatch { index: i } if i == index),
                "{position}: {err:?}"
            );
            let slot = std::fs::read(&f.slots.b.path).unwrap();
            let range = index as usize * CHUNK..(index as usize * CHUNK + CHUNK).min(bad.len());
            assert_ne!(
                slot[range.clone()],
                bad[range],
                "bad chunk reached the slot"
            );
            assert_eq!(slot[..range_start(index)], new[..range_start(index)]);
            f.assert_b_not_bootable();
        }
    }

    fn range_start(index: u64) -> usize {
        index as usize * CHUNK
    }

    #[test]
    fn chunks_of_another_release_are_refused() {
        // The manifest of release 3 with the image of release 2.
        let f = Fixture::new();
        let v2 = new_image();
        let v3 = image(40, 1000, |i| {
            if i < 5 {
                i as u64 * 977 + 5
            } else {
                4242 + i as u64
            }
        });
        let release = f.release(&v3, 3);
        let err = f
            .installer()
            .install(&release, &mut counting(&v2))
            .unwrap_err();
        assert!(matches!(err, Error::ChunkMismatch { index: 5 }), "{err:?}");
        f.assert_b_not_bootable();
    }

    #[test]
    fn a_source_longer_than_declared_is_refused() {
        let f = Fixture::new();
        let new = new_image();
        let release = f.release(&new, 2);
        let mut endless = new.clone();
        endless.extend(std::iter::repeat_n(0u8, 4096));
        // Known length: refused before anything is written.
        let path = f.image_file("long.img", &endless);
        let err = f
            .installer()
            .install(&release, &mut FileSource::open(&path).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::ImageTooLong { declared } if declared == new.len() as u64));
        assert!(!f.slots.b.path.exists(), "slot written");
        // A stream (endless zeros after the image): refused at its end.
        let stream = io::Read::chain(&new[..], io::repeat(0));
        let err = f
            .installer()
            .install(&release, &mut ReaderSource::new(stream))
            .unwrap_err();
        assert!(matches!(err, Error::ImageTooLong { .. }), "{err:?}");
        f.assert_b_not_bootable();
    }
}

/// The start-up integrity check reports the first bad chunk.
mod integrity {
    use super::*;

    #[test]
    fn verify_slot_names_the_first_bad_chunk() {
        let f = Fixture::new();
        let release = f.authentic(&f.sign(&manifest(&f.base, 1, 1)));
        let path = &f.slots.a.path;
        let report = verify_slot(path, &release).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.chunks, 40);

        let mut bytes = f.base.clone();
        bytes[33 * CHUNK] ^= 0x80;
        bytes[9 * CHUNK + 5] ^= 0x01;
        std::fs::write(path, &bytes).unwrap();
        assert_eq!(
            verify_slot(path, &release).unwrap().first_bad_chunk,
            Some(9)
        );

        std::fs::write(path, &f.base[..20 * CHUNK + 7]).unwrap();
        assert_eq!(
            verify_slot(path, &release).unwrap().first_bad_chunk,
            Some(20)
        );

        // Bytes after the image (a larger block device) are not covered.
        let mut longer = f.base.clone();
        longer.extend([1, 2, 3]);
        std::fs::write(path, &longer).unwrap();
        assert!(verify_slot(path, &release).unwrap().is_intact());

        let err = verify_slot(&f.dir.join("missing"), &release).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
}

/// After a boot: commit a healthy trial and raise the floor, or fall back.
mod commit {
    use super::*;

    #[test]
    fn a_corrupted_trial_falls_back() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let m = manifest(&new, 2, 7);
        let release = f.verify(&f.sign(&m)).unwrap();
        f.installer()
            .install(&release, &mut counting(&new))
            .unwrap();
        // Corrupt B after it was marked (bit rot, tampering).
        let mut b = new.clone();
        b[12 * CHUNK] ^= 0xff;
        std::fs::write(&f.slots.b.path, &b).unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let outcome = confirm_boot(&f.boot, &f.slots, &f.records(), &f.floor, f.trust()).unwrap();
        assert!(
            matches!(&outcome, BootOutcome::Failed { slot: SlotName::B, was_trial: true, reason } if reason.contains("chunk 12")),
            "{outcome:?}"
        );
        assert_eq!(f.floor.get().unwrap(), 0, "floor raised by a failed trial");
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
    }

    #[test]
    fn an_unhealthy_trial_falls_back_and_a_healthy_one_commits() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.verify(&f.sign(&manifest(&new, 2, 7))).unwrap();
        let check = |script: &str| update::health::HealthCheck {
            name: "service".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout: std::time::Duration::from_secs(10),
        };
        let confirm = |checks: &[update::health::HealthCheck]| {
            confirm_boot_with_health(&f.boot, &f.slots, &f.records(), &f.floor, f.trust(), checks)
                .unwrap()
        };
        f.installer()
            .install(&release, &mut counting(&new))
            .unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let outcome = confirm(&[
            check("exit 0"),
            check("echo 'port 1883 closed' >&2; exit 1"),
        ]);
        assert!(
            matches!(&outcome, BootOutcome::Failed { slot: SlotName::B, was_trial: true, reason } if reason.contains("port 1883 closed")),
            "{outcome:?}"
        );
        assert_eq!(
            f.floor.get().unwrap(),
            0,
            "floor raised by an unhealthy trial"
        );
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        // The committed slot is not judged by health checks.
        let outcome = confirm(&[check("exit 1")]);
        assert!(
            matches!(
                outcome,
                BootOutcome::Committed {
                    slot: SlotName::A,
                    ..
                }
            ),
            "{outcome:?}"
        );
        // Installed again and healthy this time: committed.
        f.installer()
            .install(&release, &mut counting(&new))
            .unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let outcome = confirm(&[check("exit 0")]);
        assert!(
            matches!(
                outcome,
                BootOutcome::TrialCommitted {
                    slot: SlotName::B,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(f.floor.get().unwrap(), 7);
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
    }

    #[test]
    fn committing_raises_the_floor_and_refuses_older_security_versions() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.verify(&f.sign(&manifest(&new, 2, 7))).unwrap();
        f.installer()
            .install(&release, &mut counting(&new))
            .unwrap();
        f.boot.boot().unwrap();
        confirm_boot(&f.boot, &f.slots, &f.records(), &f.floor, f.trust()).unwrap();
        assert_eq!(f.floor.get().unwrap(), 7);
        let err = SignedManifest::verify(
            &f.sign(&manifest(&f.base, 3, 6)),
            &f.trusted,
            1,
            &f.device(2),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BelowSecurityFloor {
                    offered: 6,
                    floor: 7
                }
            ),
            "{err:?}"
        );
    }

    /// Slot B runs release 2 (security version 7) and is committed, so the
    /// floor is 7; slot A still holds release 1 (security version 1).
    fn upgraded() -> Fixture {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.verify(&f.sign(&manifest(&new, 2, 7))).unwrap();
        f.installer()
            .install(&release, &mut counting(&new))
            .unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        confirm_boot(&f.boot, &f.slots, &f.records(), &f.floor, f.trust()).unwrap();
        assert_eq!(f.floor.get().unwrap(), 7);
        f
    }

    /// The check failed on `slot`, which was (or was not) a trial.
    #[track_caller]
    fn assert_failed(outcome: &BootOutcome, slot: SlotName, trial: bool) {
        assert!(
            matches!(outcome, BootOutcome::Failed { slot: s, was_trial, .. } if *s == slot && *was_trial == trial),
            "{outcome:?}"
        );
    }

    fn waiver_for(release: &AuthenticManifest, floor: u64) -> RollbackWaiver {
        RollbackWaiver {
            manifest_sha256: hex::encode(release.digest()),
            version: release.manifest().version.clone(),
            version_code: release.manifest().version_code,
            security_version: release.manifest().security_version,
            floor,
            granted_by: "owner".into(),
            granted_unix: 1_800_000_000,
        }
    }

    /// Once the floor rose, the old release left in the other slot is a
    /// rollback: a late fallback to it (the boot loader trying it, or its
    /// environment rolled back to commit it) is refused at start-up, and a
    /// waiver naming another release does not change that.
    #[test]
    fn a_late_fallback_to_a_slot_below_the_floor_is_refused() {
        let f = upgraded();
        let confirm = |waiver: Option<&WaiverFile>| {
            confirm_boot_with_waiver(
                &f.boot,
                &f.slots,
                &f.records(),
                &f.floor,
                f.trust(),
                &[],
                waiver,
            )
            .unwrap()
        };
        let waivers = WaiverFile::new(&f.state());
        let other = f.authentic(&f.sign(&manifest(&f.base, 1, 2)));
        waivers.store(&[waiver_for(&other, 7)]).unwrap();

        f.boot.mark_try_once(SlotName::A).unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        let outcome = confirm(Some(&waivers));
        assert!(
            matches!(&outcome, BootOutcome::Failed { slot: SlotName::A, was_trial: true, reason }
                if reason.contains("security version 1, below the security floor 7")),
            "{outcome:?}"
        );
        assert_eq!(f.boot.boot().unwrap(), SlotName::B, "no fallback");

        f.boot.commit(SlotName::A).unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        let outcome = confirm(None);
        assert_failed(&outcome, SlotName::A, false);
        assert_eq!(f.floor.get().unwrap(), 7);
    }

    /// The owner's override: a waiver naming release 1 lets it be
    /// installed (older and below the floor) and boot, committed without
    /// touching the floor, across restarts; committing a newer release
    /// withdraws the waiver, and release 1 is a rollback again.
    #[test]
    fn a_rollback_waiver_lets_exactly_its_release_run_until_a_newer_one_commits() {
        let f = upgraded();
        let waivers = WaiverFile::new(&f.state());
        let confirm = || {
            confirm_boot_with_waiver(
                &f.boot,
                &f.slots,
                &f.records(),
                &f.floor,
                f.trust(),
                &[],
                Some(&waivers),
            )
            .unwrap()
        };
        let old_wire = f.sign(&manifest(&f.base, 1, 1));
        let old = f.authentic(&old_wire);
        let err = SignedManifest::verify(&old_wire, &f.trusted, 1, &f.device(2)).unwrap_err();
        assert!(matches!(err, Error::Rollback { .. }), "{err:?}");
        let release = SignedManifest::danger_verify_waiving_rollback(
            &old_wire,
            &f.trusted,
            1,
            &f.device(2),
            old.digest(),
        )
        .unwrap();
        waivers.store(&[waiver_for(&old, 7)]).unwrap();
        let report = f
            .installer()
            .install(&release, &mut counting(&f.base))
            .unwrap();
        assert_eq!(report.slot, SlotName::A);

        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        let outcome = confirm();
        assert!(
            matches!(
                outcome,
                BootOutcome::TrialCommitted {
                    slot: SlotName::A,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(f.floor.get().unwrap(), 7, "the floor moved");
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        let outcome = confirm();
        assert!(
            matches!(
                outcome,
                BootOutcome::Committed {
                    slot: SlotName::A,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(waivers.load().unwrap(), [waiver_for(&old, 7)]);

        // A newer release at the floor's level commits and ends the waiver.
        let newer = image(40, 1000, |i| i as u64 * 131 + 9);
        let wire = f.sign(&manifest(&newer, 3, 8));
        let release = SignedManifest::verify(&wire, &f.trusted, 1, &f.device(1)).unwrap();
        f.installer()
            .install(&release, &mut counting(&newer))
            .unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::B);
        let outcome = confirm();
        assert!(
            matches!(
                outcome,
                BootOutcome::TrialCommitted {
                    slot: SlotName::B,
                    ..
                }
            ),
            "{outcome:?}"
        );
        assert_eq!(f.floor.get().unwrap(), 8);
        assert_eq!(waivers.load().unwrap(), [], "the waiver outlived its use");
        f.boot.mark_try_once(SlotName::A).unwrap();
        assert_eq!(f.boot.boot().unwrap(), SlotName::A);
        let outcome = confirm();
        assert_failed(&outcome, SlotName::A, true);
    }

    #[test]
    fn a_corrupted_committed_slot_is_reported() {
        let f = Fixture::new();
        let mut a = f.base.clone();
        a[0] ^= 1;
        std::fs::write(&f.slots.a.path, &a).unwrap();
        let outcome = confirm_boot(&f.boot, &f.slots, &f.records(), &f.floor, f.trust()).unwrap();
        assert_failed(&outcome, SlotName::A, false);
    }
}

/// The boot loader environments, driven through the real tools.
mod boot_env {
    use std::process::Command;

    use update::boot::{GrubEnv, UBootEnv};

    use super::*;

    fn exercise(boot: &dyn BootControl, list: &dyn Fn() -> String) {
        assert_eq!(boot.active().unwrap(), SlotName::A);
        boot.mark_try_once(SlotName::B).unwrap();
        let env = list();
        assert!(env.contains("BOOT_ORDER=B A"), "{env}");
        assert!(env.contains("BOOT_B_LEFT=1"), "{env}");
        assert_eq!(boot.state().unwrap().tried, Some((SlotName::B, 1)));
        assert_eq!(boot.active().unwrap(), SlotName::A);
        boot.fallback().unwrap();
        let env = list();
        assert!(
            env.contains("BOOT_ORDER=A B") && env.contains("BOOT_B_LEFT=0"),
            "{env}"
        );
        assert!(!env.contains("BULWARK_TRY"), "{env}");
        boot.mark_try_once(SlotName::B).unwrap();
        boot.commit(SlotName::B).unwrap();
        let env = list();
        assert!(
            env.contains("BOOT_ORDER=B A") && env.contains("BOOT_B_LEFT=3"),
            "{env}"
        );
        assert_eq!(boot.active().unwrap(), SlotName::B);
        assert_eq!(boot.state().unwrap().tried, None);
    }

    #[test]
    fn grub_editenv_backend() {
        testkit::require_tool("grub-editenv", "grub2-common");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("grubenv");
        let boot = GrubEnv::grub(file.clone(), SlotName::A);
        exercise(&boot, &|| {
            let out = Command::new("grub-editenv")
                .arg(&file)
                .arg("list")
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        });
    }

    /// CRC-32 (IEEE), for building a U-Boot environment image.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn uboot_fw_setenv_backend() {
        testkit::require_tool("fw_setenv", "libubootenv-tool");
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("uboot.env");
        let config = dir.path().join("fw_env.config");
        // A file-backed 16 KiB environment holding `bootdelay=1`.
        let mut data = b"bootdelay=1\0\0".to_vec();
        data.resize(0x4000 - 4, 0);
        let mut image = crc32(&data).to_le_bytes().to_vec();
        image.extend(&data);
        std::fs::write(&env, &image).unwrap();
        std::fs::write(&config, format!("{} 0x0000 0x4000\n", env.display())).unwrap();
        let boot = UBootEnv::uboot(Some(config.clone()), SlotName::A);
        exercise(&boot, &|| {
            let out = Command::new("fw_printenv")
                .arg("-c")
                .arg(&config)
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        });
        let out = Command::new("fw_printenv")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("bootdelay=1"));
    }
}

/// Writes the files the crash-test helper reads: slot A with release 1
/// committed, the trusted keys, and the boot state.
#[cfg(feature = "crash-test")]
fn helper_device(f: &Fixture, base: &[u8], compatible: &str) -> PathBuf {
    let dir = f.dir.join("device");
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("slot-a"), base).unwrap();
    let mut m = manifest(base, 1, 0);
    m.compatible = compatible.to_owned();
    let wire = f.sign(&m);
    let authentic = SignedManifest::verify_installed(&wire, &f.trusted, 1, compatible).unwrap();
    SlotRecords::new(&dir.join("state"))
        .unwrap()
        .store(SlotName::A, &authentic)
        .unwrap();
    std::fs::write(
        dir.join("trusted.json"),
        serde_json::to_vec(&[f.key.public_key().clone()]).unwrap(),
    )
    .unwrap();
    FileBootControl::create(&dir.join("boot.json"), SlotName::A).unwrap();
    dir
}

#[cfg(feature = "crash-test")]
const CRASH_HW: &str = "bw-crash";

#[cfg(feature = "crash-test")]
fn release_files(
    f: &Fixture,
    dir: &std::path::Path,
    (image, name): (&[u8], &str),
    version_code: u64,
    security_version: u64,
) -> (PathBuf, PathBuf) {
    let mut m = manifest(image, version_code, security_version);
    m.compatible = CRASH_HW.to_owned();
    let manifest_path = dir.join(format!("release-{version_code}.json"));
    std::fs::write(&manifest_path, f.sign(&m)).unwrap();
    let image_path = dir.join(format!("image-{name}.img"));
    if !image_path.exists() {
        std::fs::write(&image_path, image).unwrap();
    }
    (manifest_path, image_path)
}

/// Peak memory of a whole install stays flat.
#[cfg(feature = "crash-test")]
mod memory {
    use std::process::Command;

    use super::*;

    #[test]
    fn peak_rss_of_a_64_mib_install_stays_under_16_mib() {
        let f = Fixture::new();
        let base = image(1024, CHUNK, |i| i as u64 + 1);
        let dir = helper_device(&f, &base, CRASH_HW);
        let new = image(1024, CHUNK, |i| i as u64 * 7 + 3);
        let (manifest_path, image_path) = release_files(&f, &dir, (&new, "new"), 2, 1);
        let out = Command::new(env!("CARGO_BIN_EXE_update-crash-installer"))
            .arg(&dir)
            .arg(&manifest_path)
            .arg(&image_path)
            // The default checkpoint interval, so batches are full size.
            .arg(InstallOptions::default().checkpoint_bytes.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let peak: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("done "))
            .unwrap()
            .parse()
            .unwrap();
        eprintln!("peak RSS of a 64 MiB install: {peak} KiB");
        assert!(peak > 0 && peak <= 16 * 1024, "peak RSS {peak} KiB");
        assert_eq!(std::fs::read(dir.join("slot-b")).unwrap(), new);
    }
}

/// Power cuts: the helper plays install, reboot and commit, and is
/// SIGKILLed at random moments. After every kill a power-on boots a slot
/// that verifies against the signed release recorded for it, never below
/// the security floor, and the next attempt (resume or restart) works.
#[cfg(feature = "crash-test")]
mod crash {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use update::commit::check_slot;

    use super::*;

    const KILLS: u32 = 300;

    fn variant(v: u64) -> Vec<u8> {
        // Variants share about half their chunks: reuse is exercised too.
        image(64, CHUNK, |i| {
            if i as u64 % 4 == v % 4 {
                1000 * (v % 4 + 1) + i as u64
            } else {
                i as u64 + 1
            }
        })
    }

    #[test]
    fn power_cuts_at_300_random_points_leave_a_verified_bootable_slot() {
        let f = Fixture::new();
        let dir = helper_device(&f, &variant(0), CRASH_HW);
        let exe = env!("CARGO_BIN_EXE_update-crash-installer");
        let slots = Slots::new(dir.join("slot-a"), dir.join("slot-b"));
        let records = SlotRecords::new(&dir.join("state")).unwrap();
        let floor = FileSecurityFloor::new(&dir.join("state").join("floor.json"));
        let boot = FileBootControl::open(&dir.join("boot.json")).unwrap();
        let trust = Trust {
            keys: &f.trusted,
            threshold: 1,
            compatible: CRASH_HW,
        };
        let variants: Vec<Vec<u8>> = (0..4).map(variant).collect();
        let run = |version: u64| {
            let v = (version % 4) as usize;
            let (m, i) = release_files(
                &f,
                &dir,
                (&variants[v], &v.to_string()),
                version,
                version / 5,
            );
            Command::new(exe)
                .arg(&dir)
                .arg(m)
                .arg(i)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };

        // Calibrate: how long one uninterrupted cycle takes here.
        let mut version = 2;
        let started = Instant::now();
        let out = run(version).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Kill delays are drawn from [0, typical cycle); every tenth run
        // is left to complete and refreshes the estimate.
        let mut cycle = started.elapsed();
        version += 1;

        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut kills = 0;
        let mut completed = 0;
        let mut phases = std::collections::BTreeMap::new();
        let mut resumed = 0;
        let deadline = Instant::now() + Duration::from_secs(240);
        while kills < KILLS {
            assert!(
                Instant::now() < deadline,
                "crash loop too slow: {kills} kills"
            );
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let calibrate = (kills + completed) % 10 == 9;
            let delay = if calibrate {
                Duration::from_secs(60)
            } else {
                cycle.mul_f64((seed % 1000) as f64 / 1000.0)
            };
            let mut child = run(version);
            let spawned = Instant::now();
            while child.try_wait().unwrap().is_none() && spawned.elapsed() < delay {
                std::thread::sleep(Duration::from_micros(200));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            } else if calibrate {
                cycle = (cycle * 3 + spawned.elapsed()) / 4;
            }
            let out = child.wait_with_output().unwrap();
            let killed = out.status.code().is_none();
            assert!(
                killed || out.status.success(),
                "helper failed at version {version}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if killed {
                // The last step the helper reported before the kill.
                let stdout = String::from_utf8_lossy(&out.stdout);
                let step = stdout
                    .lines()
                    .last()
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or("start")
                    .to_owned();
                *phases.entry(step).or_insert(0u32) += 1;
            } else {
                completed += 1;
                let stdout = String::from_utf8_lossy(&out.stdout);
                if stdout.contains("installed") && !stdout.contains(" resumed=0") {
                    resumed += 1;
                }
            }

            // Power on.
            let booted = boot.boot().unwrap();
            let release = check_slot(&slots, &records, booted, trust)
                .unwrap()
                .unwrap_or_else(|reason| {
                    panic!("version {version}, after kill {kills}: booted {booted}: {reason}")
                });
            let installed = release.manifest();
            assert!(
                installed.security_version >= floor.get().unwrap(),
                "booted {booted} below the security floor"
            );
            // Advance once this release runs; otherwise retry it (resume).
            if installed.version_code == version {
                version += 1;
            }
        }
        // A fresh attempt after the last kill completes.
        let out = run(version).wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "final install failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let booted = boot.boot().unwrap();
        let release = check_slot(&slots, &records, booted, trust)
            .unwrap()
            .unwrap();
        assert_eq!(release.manifest().version_code, version);
        assert!(version > 10, "too few releases went through: {version}");
        eprintln!(
            "{kills} kills by phase {phases:?}, {completed} uninterrupted runs, \
             {version} releases, cycle {cycle:?}"
        );
        // Kills landed in every phase: before and during the install
        // ("verified" = writing), and during first boot and commit.
        let at = |p: &str| phases.get(p).copied().unwrap_or(0);
        assert!(at("verified") >= 100, "{phases:?}");
        assert!(at("start") + at("confirmed") >= 10, "{phases:?}");
        assert!(at("installed") + at("booted") >= 10, "{phases:?}");
        // Some completed installs picked up an interrupted one's progress.
        assert!(resumed >= 3, "only {resumed} installs resumed");
    }
}

/// Without the helper binary the power-cut and memory tests do not exist:
/// fail loudly instead of passing with less coverage than claimed.
#[cfg(not(feature = "crash-test"))]
#[test]
fn crash_installer_is_built() {
    panic!(
        "the power-cut and memory tests need `--features crash-test` \
         (bash scripts/test.sh uses --all-features)"
    );
}

/// Install progress watched from another thread while the install runs.
mod progress {
    use std::sync::mpsc;

    use update::install::InstallReport;
    use update::{InstallPhase, InstallProgress, ProgressSnapshot};

    use super::*;

    /// A source that, before reading chunk `gate`, says so and waits until
    /// the test has looked at the progress.
    struct Gated {
        inner: Counting,
        gate: u64,
        arrived: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
    }

    impl ChunkSource for Gated {
        fn read_chunk(&mut self, index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if index == self.gate {
                // A test that stopped watching must not hang the install.
                let _ = self.arrived.send(());
                let _ = self.go.recv();
            }
            self.inner.read_chunk(index, offset, buf)
        }
    }

    /// Installs `release` from `image` in a thread while this one polls
    /// the progress; returns every snapshot taken, the one taken while the
    /// source waited at chunk `gate`, and the report.
    fn watch(
        installer: Installer<'_>,
        release: &VerifiedManifest,
        image: &[u8],
        gate: u64,
    ) -> (Vec<ProgressSnapshot>, ProgressSnapshot, InstallReport) {
        let progress = Arc::new(InstallProgress::new());
        let installer = installer.with_progress(progress.clone());
        let (arrived, arrived_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let mut source = Gated {
            inner: counting(image),
            gate,
            arrived,
            go: go_rx,
        };
        let (seen, at_gate, report) = std::thread::scope(|s| {
            let go = go;
            let install = s.spawn(move || installer.install(release, &mut source));
            let mut seen = Vec::new();
            let mut at_gate = None;
            while !install.is_finished() {
                let snapshot = progress.snapshot();
                if seen.last() != Some(&snapshot) {
                    seen.push(snapshot);
                }
                if arrived_rx.try_recv().is_ok() {
                    let snapshot = progress.snapshot();
                    seen.push(snapshot);
                    at_gate = Some(snapshot);
                    go.send(()).unwrap();
                }
                std::thread::yield_now();
            }
            let report = install.join().unwrap().unwrap();
            seen.push(progress.snapshot());
            (seen, at_gate, report)
        });
        let at_gate = at_gate.expect("the install never read the gated chunk");
        (seen, at_gate, report)
    }

    /// Phases only move forward, no counter goes back, and at the end
    /// everything adds up to the image and matches the report.
    fn assert_consistent(seen: &[ProgressSnapshot], report: &InstallReport, image_len: u64) {
        for pair in seen.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(a.phase <= b.phase, "phase went back: {a:?} then {b:?}");
            for (x, y, what) in [
                (a.chunks_done, b.chunks_done, "chunks_done"),
                (a.bytes_done, b.bytes_done, "bytes_done"),
                (a.downloaded_bytes, b.downloaded_bytes, "downloaded_bytes"),
                (a.reused_bytes, b.reused_bytes, "reused_bytes"),
                (a.verified_bytes, b.verified_bytes, "verified_bytes"),
            ] {
                assert!(x <= y, "{what} went back: {a:?} then {b:?}");
            }
        }
        let last = *seen.last().unwrap();
        assert_eq!(last.phase, InstallPhase::Done);
        assert_eq!(last.chunks_total, report.chunks);
        assert_eq!(last.chunks_done, last.chunks_total);
        assert_eq!(last.bytes_total, image_len);
        assert_eq!(last.bytes_done, image_len);
        assert_eq!(last.verified_bytes, image_len);
        assert_eq!(
            last.downloaded_bytes + last.reused_bytes + last.resumed_bytes,
            image_len,
            "{last:?}"
        );
        assert_eq!(
            (last.downloaded_bytes, last.reused_bytes, last.resumed_bytes),
            (
                report.downloaded_bytes,
                report.reused_bytes,
                report.resumed_bytes
            )
        );
    }

    #[test]
    fn progress_moves_forward_and_adds_up_to_the_image() {
        let f = Fixture::new();
        // Even chunks are release 1's (copied from slot A), odd ones new.
        let new = image(40, 1000, |i| {
            if i % 2 == 0 {
                i as u64 * 31 + 1
            } else {
                10_000 + i as u64
            }
        });
        let release = f.release(&new, 2);
        let (seen, at_gate, report) = watch(f.installer(), &release, &new, 21);
        assert_eq!(at_gate.phase, InstallPhase::Writing, "{at_gate:?}");
        assert_eq!(at_gate.chunks_total, 40);
        assert_eq!(at_gate.bytes_total, new.len() as u64);
        assert!(at_gate.chunks_done < 40, "{at_gate:?}");
        assert_eq!(at_gate.verified_bytes, 0);
        assert!(report.reused_bytes > 0 && report.downloaded_bytes > 0);
        assert_consistent(&seen, &report, new.len() as u64);
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
    }

    #[test]
    fn a_resumed_install_starts_with_the_chunks_already_done() {
        let f = Fixture::new();
        let new = image(40, 1000, |i| i as u64 * 977 + 5);
        let release = f.release(&new, 2);
        let mut failing = counting(&new);
        failing.fail_at = Some(30);
        f.installer().install(&release, &mut failing).unwrap_err();

        // The first chunk the resumed install reads is 30.
        let (seen, at_gate, report) = watch(f.installer(), &release, &new, 30);
        let resumed = 30 * CHUNK as u64;
        assert_eq!(report.resumed_bytes, resumed);
        assert_eq!(at_gate.phase, InstallPhase::Writing, "{at_gate:?}");
        assert_eq!(
            (
                at_gate.chunks_done,
                at_gate.bytes_done,
                at_gate.resumed_bytes,
                at_gate.downloaded_bytes
            ),
            (30, resumed, resumed, 0),
            "{at_gate:?}"
        );
        for s in seen.iter().filter(|s| s.phase >= InstallPhase::Writing) {
            assert!(s.chunks_done >= 30, "{s:?}");
        }
        assert_consistent(&seen, &report, new.len() as u64);
        assert_eq!(std::fs::read(&f.slots.b.path).unwrap(), new);
    }
}
