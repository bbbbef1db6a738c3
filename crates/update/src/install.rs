//! The streaming installer: chunk by chunk into the inactive slot, each
//! chunk's hash checked against the verified manifest before it is
//! written, chunks already in the active slot copied locally.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::boot::{BootControl, SlotName, Slots};
use crate::error::{Error, Result};
use crate::integrity::verify_slot;
use crate::journal::{Journal, JournalFile};
use crate::manifest::{Digest, Manifest, SignedManifest, VerifiedManifest, sha256};
use crate::parallel::{chunks_in_flight, hash_buffers, hash_file_chunks};
use crate::records::SlotRecords;

/// Where an image's chunks come from: a local bundle file, or (in
/// `update-tuf`) an HTTP download.
pub trait ChunkSource {
    /// Fills `buf` (the chunk's exact length) with chunk `index`, which
    /// starts at `offset` in the image. Indices come in increasing order;
    /// chunks the installer finds locally are skipped.
    fn read_chunk(&mut self, index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The source's total length, if known before reading: an install
    /// whose source is longer than the manifest's image is refused before
    /// anything is written.
    fn len_hint(&self) -> Option<u64> {
        None
    }

    /// Called after the last chunk: whether the source has data beyond
    /// `image_size` (endless-data defence for sources of unknown length).
    fn has_data_beyond(&mut self, image_size: u64) -> io::Result<bool> {
        let _ = image_size;
        Ok(false)
    }
}

/// An image fetched in ranges (HTTP `Range`): read front to back like a
/// [`ReaderSource`], but when the installer skips ahead by more than
/// `max_gap` bytes (chunks reused from the active slot, or already in the
/// slot from an interrupted attempt) it opens a new range at the next
/// chunk it needs instead of downloading what it skips. This is what
/// makes an adaptive update download little over the network.
pub struct RangedSource<R, F> {
    open: F,
    current: Option<ReaderSource<R>>,
    max_gap: u64,
}

impl<R, F> std::fmt::Debug for RangedSource<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangedSource")
            .field("position", &self.current.as_ref().map(|c| c.position))
            .field("max_gap", &self.max_gap)
            .finish_non_exhaustive()
    }
}

impl<R: Read, F: FnMut(u64) -> io::Result<R>> RangedSource<R, F> {
    /// `open(offset)` yields the image from `offset` on; gaps of at most
    /// `max_gap` bytes are read and discarded rather than reopened (a new
    /// request costs a round trip and headers).
    pub fn new(open: F, max_gap: u64) -> Self {
        Self {
            open,
            current: None,
            max_gap,
        }
    }
}

impl<R: Read, F: FnMut(u64) -> io::Result<R>> ChunkSource for RangedSource<R, F> {
    fn read_chunk(&mut self, index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let current = match self.current.take() {
            Some(c) if c.position <= offset && offset - c.position <= self.max_gap => c,
            _ => ReaderSource::starting_at((self.open)(offset)?, offset),
        };
        let current = self.current.insert(current);
        current.read_chunk(index, offset, buf)
    }

    fn has_data_beyond(&mut self, image_size: u64) -> io::Result<bool> {
        match &mut self.current {
            // Only when the open range already reaches the end: reading a
            // skipped tail to check it would download reused chunks. The
            // repository client bounds every range by the signed length.
            Some(c) if c.position <= image_size && image_size - c.position <= self.max_gap => {
                c.has_data_beyond(image_size)
            }
            _ => Ok(false),
        }
    }
}

/// An image in a local file (a bundle's image, a USB stick).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("opening image", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("inspecting image", path, e))?
            .len();
        Ok(Self { file, len })
    }
}

impl ChunkSource for FileSource {
    fn read_chunk(&mut self, _index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn len_hint(&self) -> Option<u64> {
        Some(self.len)
    }

    fn has_data_beyond(&mut self, image_size: u64) -> io::Result<bool> {
        Ok(self.file.metadata()?.len() > image_size)
    }
}

/// An image read once, front to back, from any reader (a pipe, a
/// decompressor, a socket). Skipped chunks are read and discarded.
#[derive(Debug)]
pub struct ReaderSource<R> {
    reader: R,
    position: u64,
}

impl<R: Read> ReaderSource<R> {
    /// Reads the image from `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            position: 0,
        }
    }

    /// Reads the image from `offset` on: `reader` yields the bytes from
    /// there (a resumed or ranged download, see [`RangedSource`]).
    pub fn starting_at(reader: R, offset: u64) -> Self {
        Self {
            reader,
            position: offset,
        }
    }

    fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        if offset < self.position {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a sequential source cannot go back",
            ));
        }
        let want = offset - self.position;
        let skipped = io::copy(&mut (&mut self.reader).take(want), &mut io::sink())?;
        self.position += skipped;
        if skipped < want {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

impl<R: Read> ChunkSource for ReaderSource<R> {
    fn read_chunk(&mut self, _index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.skip_to(offset)?;
        self.reader.read_exact(buf)?;
        self.position += buf.len() as u64;
        Ok(())
    }

    fn has_data_beyond(&mut self, image_size: u64) -> io::Result<bool> {
        self.skip_to(image_size)?;
        let mut byte = [0u8; 1];
        loop {
            match self.reader.read(&mut byte) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The slot written and marked "try once".
    pub slot: SlotName,
    /// Bytes read from the chunk source.
    pub downloaded_bytes: u64,
    /// Bytes copied from the active slot (adaptive update).
    pub reused_bytes: u64,
    /// Bytes a previous, interrupted attempt had already written.
    pub resumed_bytes: u64,
    /// Chunks in the image.
    pub chunks: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Tuning of [`Installer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Flush the slot and record progress in the journal after about this
    /// many bytes: what a power cut costs at most, against one flush each.
    pub checkpoint_bytes: u64,
    /// Copy chunks found in the active slot instead of reading the source.
    pub reuse_active: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            checkpoint_bytes: 32 * 1024 * 1024,
            reuse_active: true,
        }
    }
}

/// Installs verified releases into the inactive slot.
#[derive(Debug)]
pub struct Installer<'a> {
    boot: &'a dyn BootControl,
    slots: &'a Slots,
    records: SlotRecords,
    journal: JournalFile,
    options: InstallOptions,
}

/// A chunk found in the active slot: where, and how long.
type Local = HashMap<Digest, (u64, usize)>;

impl<'a> Installer<'a> {
    /// An installer writing `slots` under `boot`, keeping its journal and
    /// the slot records in `state_dir`.
    pub fn new(boot: &'a dyn BootControl, slots: &'a Slots, state_dir: &Path) -> Result<Self> {
        Ok(Self {
            boot,
            slots,
            records: SlotRecords::new(state_dir)?,
            journal: JournalFile::new(state_dir),
            options: InstallOptions::default(),
        })
    }

    /// Replaces the default options.
    pub fn with_options(mut self, options: InstallOptions) -> Self {
        self.options = options;
        self
    }

    /// The slot records this installer keeps.
    pub fn records(&self) -> &SlotRecords {
        &self.records
    }

    /// Bytes an install of `release` would fetch from its source now: the
    /// chunks after those an interrupted attempt left in the slot, less
    /// those the active slot supplies. Checked against a data budget before
    /// anything is downloaded.
    pub fn bytes_to_fetch(&self, release: &VerifiedManifest) -> Result<u64> {
        let m = release.manifest();
        let state = self.boot.state()?;
        let target = state.active.other();
        let digest = hex::encode(release.authentic().digest());
        let start = match self.journal.load() {
            Some(j) if j.manifest_sha256 == digest && j.slot == target => j.chunks_done,
            _ => 0,
        }
        .min(m.chunk_count());
        let local = if self.options.reuse_active {
            self.local_chunks(state.active, m)
        } else {
            None
        };
        let supplied = |i: u64, len: usize| {
            local.as_ref().is_some_and(|(_, map)| {
                m.chunks
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .and_then(|hash| map.get(hash))
                    .is_some_and(|&(_, l)| l == len)
            })
        };
        Ok((start..m.chunk_count())
            .map(|i| m.chunk_range(i).1)
            .enumerate()
            .filter(|&(k, len)| !supplied(start + k as u64, len))
            .map(|(_, len)| len as u64)
            .sum())
    }

    /// Installs `release` from `source` into the inactive slot, then marks
    /// it "try once". Resumes an interrupted install of the same release
    /// into the same slot. Order: refuse an over-long source; forget the
    /// slot's record and any stale trial mark; write chunks, each verified
    /// before its write; flush; re-read and verify the whole slot; record
    /// the release; mark the slot.
    pub fn install(
        &self,
        release: &VerifiedManifest,
        source: &mut dyn ChunkSource,
    ) -> Result<InstallReport> {
        let started = Instant::now();
        let m = release.manifest();
        let booted = self.boot.booted()?;
        let state = self.boot.state()?;
        if booted != state.active {
            return Err(Error::SlotBusy {
                reason: format!(
                    "the system runs slot {booted} on trial; commit it or fall back to {} first",
                    state.active
                ),
            });
        }
        let target = state.active.other();
        if let Some(len) = source.len_hint()
            && len > m.image_size
        {
            return Err(Error::ImageTooLong {
                declared: m.image_size,
            });
        }
        tracing::info!(slot = %target, version = %m.version, chunks = m.chunks.len(), "installing");

        // From here the target slot's content changes: it must not be
        // bootable and must not claim to hold any release.
        if matches!(state.tried, Some((slot, _)) if slot == target) {
            self.boot.fallback()?;
        }
        self.records.remove(target)?;

        let digest = hex::encode(release.authentic().digest());
        let start = match self.journal.load() {
            Some(j) if j.manifest_sha256 == digest && j.slot == target => j.chunks_done,
            _ => {
                self.journal.store(&Journal {
                    manifest_sha256: digest.clone(),
                    slot: target,
                    chunks_done: 0,
                })?;
                0
            }
        }
        .min(m.chunk_count());

        let slot_path = &self.slots.get(target).path;
        let slot = open_slot(slot_path, target, m.image_size)?;
        let local = if self.options.reuse_active {
            self.local_chunks(state.active, m)
        } else {
            None
        };
        let mut report = InstallReport {
            slot: target,
            downloaded_bytes: 0,
            reused_bytes: 0,
            resumed_bytes: m.chunk_range(start).0.min(m.image_size),
            chunks: m.chunk_count(),
            duration: Duration::ZERO,
        };
        let mut done = start;
        let written = self.write_chunks(
            m,
            &digest,
            target,
            &slot,
            slot_path,
            source,
            local.as_ref(),
            &mut done,
            &mut report,
        );
        if let Err(e) = written {
            // Keep what is durable so that the next attempt resumes there
            // (a dropped link), unless the release itself is bad.
            if matches!(e, Error::Source { .. }) && done > start {
                self.checkpoint(&slot, slot_path, &digest, target, done)?;
            }
            return Err(e);
        }

        match source.has_data_beyond(m.image_size) {
            Ok(false) => {}
            Ok(true) => {
                self.journal.remove()?;
                return Err(Error::ImageTooLong {
                    declared: m.image_size,
                });
            }
            Err(e) => {
                return Err(Error::Source {
                    index: m.chunk_count(),
                    source: e,
                });
            }
        }
        slot.sync_all()
            .map_err(|e| Error::io("flushing slot", slot_path, e))?;
        drop(slot);

        let check = verify_slot(slot_path, release)?;
        if let Some(index) = check.first_bad_chunk {
            // What was written is not what was verified: start over next time.
            self.journal.remove()?;
            return Err(Error::WriteVerification {
                slot: target,
                index,
            });
        }
        self.records.store(target, release.authentic())?;
        self.boot.mark_try_once(target)?;
        self.journal.remove()?;
        report.duration = started.elapsed();
        tracing::info!(
            slot = %target,
            downloaded = report.downloaded_bytes,
            reused = report.reused_bytes,
            resumed = report.resumed_bytes,
            "installed; slot marked to be tried once"
        );
        Ok(report)
    }

    /// Flushes the slot, then records that chunks `0..done` are durable.
    fn checkpoint(
        &self,
        slot: &File,
        slot_path: &Path,
        digest: &str,
        target: SlotName,
        done: u64,
    ) -> Result<()> {
        slot.sync_data()
            .map_err(|e| Error::io("flushing slot", slot_path, e))?;
        self.journal.store(&Journal {
            manifest_sha256: digest.to_owned(),
            slot: target,
            chunks_done: done,
        })
    }

    /// Writes chunks from `*done` on, advancing `*done` past each chunk
    /// written and checkpointing every `checkpoint_bytes`.
    #[allow(clippy::too_many_arguments)]
    fn write_chunks(
        &self,
        m: &Manifest,
        digest: &str,
        target: SlotName,
        slot: &File,
        slot_path: &Path,
        source: &mut dyn ChunkSource,
        local: Option<&(File, Local)>,
        done: &mut u64,
        report: &mut InstallReport,
    ) -> Result<()> {
        let chunk_size = m.chunk_size as usize;
        // A batch fits the memory budget and does not span a checkpoint.
        let by_checkpoint =
            usize::try_from(self.options.checkpoint_bytes / u64::from(m.chunk_size))
                .unwrap_or(usize::MAX)
                .max(1);
        let batch_len = chunks_in_flight(chunk_size).min(by_checkpoint) as u64;
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let mut since_checkpoint = 0u64;
        let mut index = *done;
        while index < m.chunk_count() {
            let mut end = (index + batch_len).min(m.chunk_count());
            let count = (end - index) as usize;
            let mut read_failure = None;
            buffers.resize_with(count.max(buffers.len()), || vec![0u8; chunk_size]);
            let mut from_local = vec![false; count];
            for (k, i) in (index..end).enumerate() {
                let (offset, len) = m.chunk_range(i);
                let buf = &mut buffers[k][..len];
                let expected = m
                    .chunk(i)
                    .ok_or_else(|| Error::inconsistent("chunk index"))?;
                from_local[k] = local
                    .and_then(|(file, map)| {
                        let &(at, l) = map.get(expected)?;
                        (l == len && file.read_exact_at(buf, at).is_ok()).then_some(())
                    })
                    .is_some();
                if !from_local[k]
                    && let Err(e) = read_source(source, i, offset, buf)
                {
                    // A dropped link: the chunks of this batch read so far
                    // are still verified and written below, so the next
                    // attempt resumes after them.
                    read_failure = Some(e);
                    end = i;
                    break;
                }
            }
            let views: Vec<&[u8]> = (index..end)
                .enumerate()
                .map(|(k, i)| &buffers[k][..m.chunk_range(i).1])
                .collect();
            let hashes = hash_buffers(&views);
            drop(views);
            for (k, i) in (index..end).enumerate() {
                let (offset, len) = m.chunk_range(i);
                let expected = m
                    .chunk(i)
                    .ok_or_else(|| Error::inconsistent("chunk index"))?;
                let mut good = hashes.get(k) == Some(expected);
                if !good && from_local[k] {
                    // The active slot did not hold what its hash promised
                    // (changed underneath us): fetch the chunk instead.
                    from_local[k] = false;
                    read_source(source, i, offset, &mut buffers[k][..len])?;
                    good = sha256(&buffers[k][..len]) == *expected;
                }
                if !good {
                    tracing::warn!(chunk = i, "chunk does not match the signed manifest");
                    return Err(Error::ChunkMismatch { index: i });
                }
                // Invariant: only bytes whose hash matched reach the slot.
                slot.write_all_at(&buffers[k][..len], offset)
                    .map_err(|e| Error::io("writing slot", slot_path, e))?;
                if from_local[k] {
                    report.reused_bytes += len as u64;
                } else {
                    report.downloaded_bytes += len as u64;
                }
                since_checkpoint += len as u64;
                *done = i + 1;
            }
            if let Some(e) = read_failure {
                return Err(e);
            }
            index = end;
            if since_checkpoint >= self.options.checkpoint_bytes && index < m.chunk_count() {
                self.checkpoint(slot, slot_path, digest, target, index)?;
                since_checkpoint = 0;
            }
        }
        Ok(())
    }

    /// The chunks of the active slot whose hashes the new manifest lists:
    /// taken from the active slot's record when its chunk size matches
    /// (no hashing needed: every copied chunk is verified anyway), else by
    /// hashing the active slot on all cores. `None` if the active slot
    /// cannot be read; the install then reads everything from the source.
    fn local_chunks(&self, active: SlotName, m: &Manifest) -> Option<(File, Local)> {
        let path = &self.slots.get(active).path;
        let file = File::open(path)
            .inspect_err(|e| tracing::warn!(slot = %active, error = %e, "active slot unreadable; no chunks reused"))
            .ok()?;
        let wanted: HashSet<&Digest> = m.chunks.iter().collect();
        let mut map = Local::new();
        if let Some(record) = self.recorded(active)
            && record.chunk_size == m.chunk_size
        {
            for (i, hash) in record.chunks.iter().enumerate() {
                if wanted.contains(hash) {
                    let (offset, len) = record.chunk_range(i as u64);
                    map.entry(*hash).or_insert((offset, len));
                }
            }
            return Some((file, map));
        }
        let size = file.metadata().ok()?.len();
        let count = Manifest::chunk_count_for(size, m.chunk_size);
        let found = Mutex::new(Local::new());
        hash_file_chunks(
            &file,
            m.chunk_size,
            size,
            &AtomicU64::new(count),
            &|i, hash| {
                if let Ok(hash) = hash
                    && wanted.contains(&hash)
                {
                    let at = Manifest::chunk_layout(m.chunk_size, size, i);
                    found
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(hash)
                        .or_insert(at);
                }
            },
        );
        map = found.into_inner().unwrap_or_else(|p| p.into_inner());
        Some((file, map))
    }

    /// The manifest recorded for `slot`, parsed without verification: it
    /// is only a hint of where chunks are, and every chunk copied is
    /// verified against the new, verified manifest before it is written.
    fn recorded(&self, slot: SlotName) -> Option<Manifest> {
        let wire = self.records.load(slot).ok()??;
        SignedManifest::unverified_payload(&wire)
    }
}

fn read_source(
    source: &mut dyn ChunkSource,
    index: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    source
        .read_chunk(index, offset, buf)
        .map_err(|e| Error::Source { index, source: e })
}

/// Opens the slot for writing: a regular file is created or cut to the
/// image size; a block device must be large enough.
fn open_slot(path: &Path, name: SlotName, image_size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("opening slot", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("inspecting slot", path, e))?;
    if meta.is_file() {
        if meta.len() != image_size {
            file.set_len(image_size)
                .map_err(|e| Error::io("sizing slot", path, e))?;
        }
    } else {
        let capacity = device_size(&file).map_err(|e| Error::io("sizing slot", path, e))?;
        if capacity < image_size {
            return Err(Error::SlotTooSmall {
                slot: name,
                capacity,
                needed: image_size,
            });
        }
    }
    Ok(file)
}

fn device_size(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = file;
    let end = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(end)
}
