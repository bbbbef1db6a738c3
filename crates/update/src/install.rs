//! The streaming installer: chunk by chunk into the inactive slot, each
//! chunk's hash checked against the verified manifest before it is
//! written, chunks already in the active slot copied locally.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::boot::{BootControl, SlotName, Slots};
use crate::error::{Error, Result};
use crate::integrity::verify_slot_with_progress;
use crate::journal::{Journal, JournalFile};
use crate::manifest::{Digest, Manifest, SignedManifest, VerifiedManifest, sha256};
use crate::parallel::{chunks_in_flight, hash_file_chunks, workers};
use crate::progress::{InstallPhase, InstallProgress};
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

    /// Called once before the first chunk is read, with the byte ranges
    /// `start..end` the installer will read, in increasing order
    /// (adjacent chunks merged). A source that pays per request (HTTP
    /// ranges) asks for exactly these bytes. Chunks the active slot then
    /// fails to supply are read too, outside the plan.
    fn plan(&mut self, runs: &[(u64, u64)]) {
        let _ = runs;
    }
}

/// The `max_gap` the agent gives [`RangedSource`] (and the benchmark, so
/// that it measures what devices do): runs of reused bytes up to this long
/// are read through rather than skipped with a new range request, which
/// costs a round trip (and over TLS a handshake).
pub const RANGE_GAP: u64 = 256 * 1024;

/// An image fetched in ranges (HTTP `Range`): read front to back like a
/// [`ReaderSource`], but when the installer skips ahead by more than
/// `max_gap` bytes (chunks reused from the active slot, or already in the
/// slot from an interrupted attempt) it opens a new range at the next
/// chunk it needs instead of downloading what it skips. This is what
/// makes an adaptive update download little over the network.
///
/// Given a [`ChunkSource::plan`], each range is bounded at the end of the
/// planned run it serves (runs at most `max_gap` apart merged), so a
/// server does not stream past the bytes needed until the connection is
/// dropped; without one, ranges are open-ended.
pub struct RangedSource<R, F> {
    open: F,
    current: Option<ReaderSource<R>>,
    /// Where the open range ends, if it is bounded.
    current_end: Option<u64>,
    max_gap: u64,
    /// The planned runs, merged across gaps of at most `max_gap`.
    plan: Option<Vec<(u64, u64)>>,
}

impl<R, F> std::fmt::Debug for RangedSource<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangedSource")
            .field("position", &self.current.as_ref().map(|c| c.position))
            .field("max_gap", &self.max_gap)
            .field("current_end", &self.current_end)
            .field("planned_runs", &self.plan.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl<R: Read, F: FnMut(u64, Option<u64>) -> io::Result<R>> RangedSource<R, F> {
    /// `open(offset, end)` yields the image from `offset` on, up to `end`
    /// (exclusive) if given, else to its end; gaps of at most `max_gap`
    /// bytes are read and discarded rather than reopened (a new request
    /// costs a round trip and headers).
    pub fn new(open: F, max_gap: u64) -> Self {
        Self {
            open,
            current: None,
            current_end: None,
            max_gap,
            plan: None,
        }
    }

    /// Where a range opened at `offset` for a chunk ending at `need_end`
    /// ends: with the planned run holding it; alone for a chunk outside
    /// the plan (the active slot failed to supply it); open-ended without
    /// a plan.
    fn range_end(&self, offset: u64, need_end: u64) -> Option<u64> {
        let plan = self.plan.as_ref()?;
        let run = plan
            .get(plan.partition_point(|&(_, end)| end <= offset))
            .filter(|&&(start, _)| start <= offset);
        Some(run.map_or(need_end, |&(_, end)| end.max(need_end)))
    }
}

impl<R: Read, F: FnMut(u64, Option<u64>) -> io::Result<R>> ChunkSource for RangedSource<R, F> {
    fn read_chunk(&mut self, index: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let need_end = offset.saturating_add(buf.len() as u64);
        let current = match self.current.take() {
            Some(c)
                if c.position <= offset
                    && offset - c.position <= self.max_gap
                    && self.current_end.is_none_or(|end| need_end <= end) =>
            {
                c
            }
            _ => {
                let end = self.range_end(offset, need_end);
                let reader = (self.open)(offset, end)?;
                self.current_end = end;
                ReaderSource::starting_at(reader, offset)
            }
        };
        let current = self.current.insert(current);
        current.read_chunk(index, offset, buf)
    }

    fn has_data_beyond(&mut self, image_size: u64) -> io::Result<bool> {
        match &mut self.current {
            // Only when the open range already reaches the end: reading a
            // skipped tail to check it would download reused chunks. The
            // repository client bounds every range by the signed length.
            Some(c)
                if c.position <= image_size
                    && image_size - c.position <= self.max_gap
                    && self.current_end.is_none_or(|end| end >= image_size) =>
            {
                c.has_data_beyond(image_size)
            }
            _ => Ok(false),
        }
    }

    fn plan(&mut self, runs: &[(u64, u64)]) {
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
        for &(start, end) in runs {
            match merged.last_mut() {
                Some(last) if start.saturating_sub(last.1) <= self.max_gap => {
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        self.current = None;
        self.plan = Some(merged);
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
    progress: Arc<InstallProgress>,
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
            progress: Arc::default(),
        })
    }

    /// Reports each install's progress in `progress`, for another thread
    /// to watch ([`InstallProgress::snapshot`]).
    pub fn with_progress(mut self, progress: Arc<InstallProgress>) -> Self {
        self.progress = progress;
        self
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
        Ok(needed_chunks(m, start, local.as_ref().map(|(_, map)| map))
            .map(|i| m.chunk_range(i).1 as u64)
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
        let progress = &*self.progress;
        progress.begin();
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

        let resumed_bytes = m.chunk_range(start).0.min(m.image_size);
        progress.plan(m.chunk_count(), m.image_size, (start, resumed_bytes));

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
            resumed_bytes,
            chunks: m.chunk_count(),
            duration: Duration::ZERO,
        };
        let needed = needed_chunks(m, start, local.as_ref().map(|(_, map)| map));
        source.plan(&byte_runs(m, needed));
        progress.enter(InstallPhase::Writing);
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
                checkpoint(&self.journal, &slot, slot_path, &digest, target, done)?;
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
        progress.enter(InstallPhase::Flushing);
        slot.sync_all()
            .map_err(|e| Error::io("flushing slot", slot_path, e))?;
        drop(slot);

        progress.enter(InstallPhase::VerifyingSlot);
        let check = verify_slot_with_progress(slot_path, release, progress)?;
        if let Some(index) = check.first_bad_chunk {
            // What was written is not what was verified: start over next time.
            self.journal.remove()?;
            return Err(Error::WriteVerification {
                slot: target,
                index,
            });
        }
        progress.enter(InstallPhase::Marking);
        self.records.store(target, release.authentic())?;
        self.boot.mark_try_once(target)?;
        self.journal.remove()?;
        progress.enter(InstallPhase::Done);
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

    /// Writes chunks from `*done` on, advancing `*done` past the chunks
    /// written without a gap, and checkpointing every `checkpoint_bytes`.
    ///
    /// A pipeline, so that reading, hashing, writing and flushing overlap:
    /// this thread reads chunks from the source (which need not be `Send`)
    /// into a fixed pool of buffers; workers, one per core, copy reused
    /// chunks from the active slot, hash each chunk, and write it only if
    /// its hash matches; a checkpoint thread flushes the slot and then
    /// records in the journal the chunks written before that flush began.
    /// Memory stays at the pool's size whatever the image size.
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
        let progress = &*self.progress;
        let journal = &self.journal;
        let active = local.map(|(file, _)| file);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Mutex::new(job_rx);
        let (fin_tx, fin_rx) = mpsc::channel::<Finished>();
        let (checkpoint_tx, checkpoint_rx) = mpsc::channel::<u64>();
        let checkpoint_failure: Mutex<Option<Error>> = Mutex::new(None);
        thread::scope(|s| {
            for _ in 0..workers(chunk_size) {
                let fin_tx = fin_tx.clone();
                let job_rx = &job_rx;
                s.spawn(move || {
                    loop {
                        let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(mut job) = job else { break };
                        let outcome = verify_and_write(&mut job, m, slot, slot_path, active);
                        if let Outcome::Written { reused } = outcome {
                            progress.chunk_written(m.chunk_range(job.index).1 as u64, reused);
                        }
                        let finished = Finished {
                            index: job.index,
                            buf: job.buf,
                            outcome,
                        };
                        if fin_tx.send(finished).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(fin_tx);
            let checkpoint_failure = &checkpoint_failure;
            s.spawn(move || {
                while let Ok(mut upto) = checkpoint_rx.recv() {
                    // Only the latest matters if flushing fell behind.
                    while let Ok(later) = checkpoint_rx.try_recv() {
                        upto = later;
                    }
                    if let Err(e) = checkpoint(journal, slot, slot_path, digest, target, upto) {
                        *checkpoint_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        break;
                    }
                }
            });
            let mut feed = Feed {
                m,
                local: local.map(|(_, map)| map),
                progress,
                checkpoint_bytes: self.options.checkpoint_bytes,
                pool: chunks_in_flight(chunk_size),
                allocated: 0,
                free: Vec::new(),
                in_flight: 0,
                next: *done,
                refetch: Vec::new(),
                written: BTreeSet::new(),
                contiguous: *done,
                checkpointed: *done,
                mismatch: None,
                failure: None,
            };
            feed.run(
                source,
                &job_tx,
                &fin_rx,
                &checkpoint_tx,
                checkpoint_failure,
                report,
            );
            // Workers and the checkpoint thread end once their channel is
            // closed; the scope waits for them.
            drop(job_tx);
            drop(checkpoint_tx);
            *done = feed.contiguous;
            feed.outcome()
        })?;
        match checkpoint_failure
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

/// The chunks from `start` on that the active slot (`local`) does not
/// supply, in order: what an install reads from its source (the same
/// test as [`Feed::run`]'s).
fn needed_chunks<'m>(
    m: &'m Manifest,
    start: u64,
    local: Option<&'m Local>,
) -> impl Iterator<Item = u64> + 'm {
    (start..m.chunk_count()).filter(move |&i| {
        let len = m.chunk_range(i).1;
        !local.is_some_and(|map| {
            m.chunk(i)
                .and_then(|hash| map.get(hash))
                .is_some_and(|&(_, l)| l == len)
        })
    })
}

/// The byte ranges `start..end` of `chunks` (increasing), adjacent
/// chunks merged: the plan handed to [`ChunkSource::plan`].
fn byte_runs(m: &Manifest, chunks: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for i in chunks {
        let (offset, len) = m.chunk_range(i);
        let end = offset + len as u64;
        match runs.last_mut() {
            Some(last) if last.1 == offset => last.1 = end,
            _ => runs.push((offset, end)),
        }
    }
    runs
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

/// Flushes the slot, then records that chunks `0..done` are durable.
/// Chunks written concurrently with the flush are not claimed: `done`
/// only counts chunks whose write returned before it began.
fn checkpoint(
    journal: &JournalFile,
    slot: &File,
    slot_path: &Path,
    digest: &str,
    target: SlotName,
    done: u64,
) -> Result<()> {
    slot.sync_data()
        .map_err(|e| Error::io("flushing slot", slot_path, e))?;
    journal.store(&Journal {
        manifest_sha256: digest.to_owned(),
        slot: target,
        chunks_done: done,
    })
}

/// A chunk handed to a worker, in a buffer of the pool.
struct Job {
    index: u64,
    /// Where in the active slot to copy the chunk from; `None` if `buf`
    /// already holds it, read from the source.
    local_at: Option<u64>,
    buf: Vec<u8>,
}

/// What a worker did with a [`Job`].
enum Outcome {
    /// Verified and written.
    Written { reused: bool },
    /// The active slot did not hold what its hash promised (changed
    /// underneath us, or unreadable): fetch the chunk from the source.
    Refetch,
    /// The source's chunk does not match the signed manifest.
    Mismatch,
    /// Writing the slot failed.
    Failed(Error),
}

/// A [`Job`] done, its buffer back for the pool.
struct Finished {
    index: u64,
    buf: Vec<u8>,
    outcome: Outcome,
}

/// A worker's part: the chunk's bytes are hashed and written only if the
/// hash is the manifest's.
fn verify_and_write(
    job: &mut Job,
    m: &Manifest,
    slot: &File,
    slot_path: &Path,
    active: Option<&File>,
) -> Outcome {
    let (offset, len) = m.chunk_range(job.index);
    let Some(expected) = m.chunk(job.index) else {
        return Outcome::Failed(Error::inconsistent("chunk index"));
    };
    let Some(buf) = job.buf.get_mut(..len) else {
        return Outcome::Failed(Error::inconsistent("chunk length"));
    };
    if let Some(at) = job.local_at {
        let copied = active.is_some_and(|file| file.read_exact_at(buf, at).is_ok());
        if !copied || sha256(buf) != *expected {
            return Outcome::Refetch;
        }
    } else if sha256(buf) != *expected {
        tracing::warn!(
            chunk = job.index,
            "chunk does not match the signed manifest"
        );
        return Outcome::Mismatch;
    }
    // Invariant: only bytes whose hash matched reach the slot.
    match slot.write_all_at(buf, offset) {
        Ok(()) => Outcome::Written {
            reused: job.local_at.is_some(),
        },
        Err(e) => Outcome::Failed(Error::io("writing slot", slot_path, e)),
    }
}

/// The reading side of [`Installer::write_chunks`]: hands chunks to the
/// workers in index order and keeps the books on what they finished.
struct Feed<'m> {
    m: &'m Manifest,
    local: Option<&'m Local>,
    progress: &'m InstallProgress,
    checkpoint_bytes: u64,
    /// Buffers allowed (the in-flight memory budget).
    pool: usize,
    allocated: usize,
    free: Vec<Vec<u8>>,
    in_flight: usize,
    /// The next chunk not yet handed out.
    next: u64,
    /// Chunks the active slot failed to supply, to read from the source.
    refetch: Vec<u64>,
    /// Chunks written at or above `contiguous`.
    written: BTreeSet<u64>,
    /// Chunks `0..contiguous` are written.
    contiguous: u64,
    /// The last count handed to the checkpoint thread.
    checkpointed: u64,
    /// The lowest chunk found not to match.
    mismatch: Option<u64>,
    /// The first read or write failure.
    failure: Option<Error>,
}

impl Feed<'_> {
    fn run(
        &mut self,
        source: &mut dyn ChunkSource,
        jobs: &mpsc::Sender<Job>,
        finished: &mpsc::Receiver<Finished>,
        checkpoints: &mpsc::Sender<u64>,
        checkpoint_failure: &Mutex<Option<Error>>,
        report: &mut InstallReport,
    ) {
        let count = self.m.chunk_count();
        loop {
            let stopped = self.mismatch.is_some()
                || self.failure.is_some()
                || checkpoint_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some();
            let more = !stopped && (!self.refetch.is_empty() || self.next < count);
            if !more && self.in_flight == 0 {
                return;
            }
            if !more || (self.free.is_empty() && self.allocated == self.pool) {
                match finished.recv() {
                    Ok(f) => self.finish(f, checkpoints, report),
                    Err(_) => {
                        self.failure = Some(Error::inconsistent("install workers stopped"));
                        return;
                    }
                }
                continue;
            }
            while let Ok(f) = finished.try_recv() {
                self.finish(f, checkpoints, report);
            }
            let mut buf = self.free.pop().unwrap_or_default();
            if buf.is_empty() {
                self.allocated += 1;
                buf = vec![0u8; self.m.chunk_size as usize];
            }
            let (index, may_reuse) = match self.refetch.pop() {
                Some(index) => (index, false),
                None => {
                    self.next += 1;
                    (self.next - 1, true)
                }
            };
            let (offset, len) = self.m.chunk_range(index);
            let local_at = self
                .local
                .filter(|_| may_reuse)
                .and_then(|map| map.get(self.m.chunk(index)?))
                .and_then(|&(at, l)| (l == len).then_some(at));
            if local_at.is_none() {
                if let Err(e) = read_source(source, index, offset, &mut buf[..len]) {
                    // A dropped link: the chunks handed out so far are
                    // still verified and written, so the next attempt
                    // resumes after them.
                    self.free.push(buf);
                    self.failure = Some(e);
                    continue;
                }
                self.progress.downloaded(len as u64);
            }
            let job = Job {
                index,
                local_at,
                buf,
            };
            if jobs.send(job).is_err() {
                self.failure = Some(Error::inconsistent("install workers stopped"));
                continue;
            }
            self.in_flight += 1;
        }
    }

    fn finish(&mut self, f: Finished, checkpoints: &mpsc::Sender<u64>, report: &mut InstallReport) {
        self.in_flight -= 1;
        self.free.push(f.buf);
        match f.outcome {
            Outcome::Written { reused } => {
                let len = self.m.chunk_range(f.index).1 as u64;
                if reused {
                    report.reused_bytes += len;
                } else {
                    report.downloaded_bytes += len;
                }
                self.written.insert(f.index);
                while self.written.remove(&self.contiguous) {
                    self.contiguous += 1;
                }
            }
            Outcome::Refetch => self.refetch.push(f.index),
            Outcome::Mismatch => {
                self.mismatch = Some(self.mismatch.map_or(f.index, |i| i.min(f.index)));
            }
            Outcome::Failed(e) => {
                self.failure.get_or_insert(e);
            }
        }
        let since = (self.contiguous - self.checkpointed).saturating_mul(self.m.chunk_size.into());
        if since >= self.checkpoint_bytes
            && self.contiguous < self.m.chunk_count()
            && checkpoints.send(self.contiguous).is_ok()
        {
            self.checkpointed = self.contiguous;
        }
    }

    /// The first chunk refused wins over a failure: it is what the
    /// release's publisher or the link must fix.
    fn outcome(&mut self) -> Result<()> {
        if let Some(index) = self.mismatch {
            return Err(Error::ChunkMismatch { index });
        }
        self.failure.take().map_or(Ok(()), Err)
    }
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
