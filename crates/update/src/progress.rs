//! Progress of an install that another thread (the agent's API, a CLI
//! progress bar) can watch while [`Installer::install`] runs.
//!
//! Plain atomics, no lock: the installer's workers never wait for a
//! reader, and a reader never waits for them. A snapshot is not one
//! atomic read of all fields, but each counter only grows during an
//! install, and the phase is read first, so the counters in a snapshot are
//! at least as far along as the phase says.
//!
//! [`Installer::install`]: crate::install::Installer::install

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use serde::Serialize;

/// Shared, lock-free progress of one install; the installer updates it,
/// any thread reads it. Each call of `install` starts it over from
/// [`InstallPhase::Preparing`].
#[derive(Debug, Default)]
pub struct InstallProgress {
    phase: AtomicU8,
    chunks_total: AtomicU64,
    chunks_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    downloaded_bytes: AtomicU64,
    reused_bytes: AtomicU64,
    resumed_bytes: AtomicU64,
    verified_bytes: AtomicU64,
}

/// What an [`InstallProgress`] said at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    /// Where the install is.
    pub phase: InstallPhase,
    /// Chunks in the image (0 until the install has looked at the journal).
    pub chunks_total: u64,
    /// Chunks verified and written (resumed ones included).
    pub chunks_done: u64,
    /// The image size.
    pub bytes_total: u64,
    /// Bytes of the `chunks_done`.
    pub bytes_done: u64,
    /// Bytes read from the source so far.
    pub downloaded_bytes: u64,
    /// Bytes copied from the active slot so far.
    pub reused_bytes: u64,
    /// Bytes already in the slot from an interrupted attempt.
    pub resumed_bytes: u64,
    /// Bytes re-read and verified after the flush (phase
    /// [`InstallPhase::VerifyingSlot`]).
    pub verified_bytes: u64,
}

/// The steps of an install, in the order they happen; an install only
/// moves forward through them (a failed one stays where it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallPhase {
    /// Checking the boot state, reading the journal, finding chunks in the
    /// active slot.
    #[default]
    Preparing,
    /// Verifying chunks and writing them into the slot.
    Writing,
    /// Flushing the slot to the device.
    Flushing,
    /// Re-reading the flushed slot and verifying every chunk.
    VerifyingSlot,
    /// Recording the release for the slot and marking it "try once".
    Marking,
    /// Installed; the slot boots once on the next reboot.
    Done,
}

impl InstallPhase {
    const ALL: [Self; 6] = [
        Self::Preparing,
        Self::Writing,
        Self::Flushing,
        Self::VerifyingSlot,
        Self::Marking,
        Self::Done,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Preparing => 0,
            Self::Writing => 1,
            Self::Flushing => 2,
            Self::VerifyingSlot => 3,
            Self::Marking => 4,
            Self::Done => 5,
        }
    }

    fn from_code(code: u8) -> Self {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(Self::Preparing)
    }
}

impl InstallProgress {
    /// Progress of an install that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// The progress now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        // The phase first: it is stored after the counters of the steps
        // before it, so what follows is at least that far along.
        let phase = InstallPhase::from_code(self.phase.load(Ordering::Acquire));
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        ProgressSnapshot {
            phase,
            chunks_total: get(&self.chunks_total),
            chunks_done: get(&self.chunks_done),
            bytes_total: get(&self.bytes_total),
            bytes_done: get(&self.bytes_done),
            downloaded_bytes: get(&self.downloaded_bytes),
            reused_bytes: get(&self.reused_bytes),
            resumed_bytes: get(&self.resumed_bytes),
            verified_bytes: get(&self.verified_bytes),
        }
    }

    /// A new install starts: everything back to zero.
    pub(crate) fn begin(&self) {
        for counter in [
            &self.chunks_total,
            &self.chunks_done,
            &self.bytes_total,
            &self.bytes_done,
            &self.downloaded_bytes,
            &self.reused_bytes,
            &self.resumed_bytes,
            &self.verified_bytes,
        ] {
            counter.store(0, Ordering::Release);
        }
        self.phase
            .store(InstallPhase::Preparing.code(), Ordering::Release);
    }

    /// The image's size, and what an interrupted attempt left durable.
    pub(crate) fn plan(&self, chunks_total: u64, bytes_total: u64, resumed: (u64, u64)) {
        let (resumed_chunks, resumed_bytes) = resumed;
        self.chunks_total.store(chunks_total, Ordering::Release);
        self.bytes_total.store(bytes_total, Ordering::Release);
        self.resumed_bytes.store(resumed_bytes, Ordering::Release);
        self.bytes_done.store(resumed_bytes, Ordering::Release);
        self.chunks_done.store(resumed_chunks, Ordering::Release);
    }

    /// Moves to `phase` (never back: a late call for an earlier phase is
    /// ignored).
    pub(crate) fn enter(&self, phase: InstallPhase) {
        self.phase.fetch_max(phase.code(), Ordering::AcqRel);
    }

    /// `len` bytes were read from the source.
    pub(crate) fn downloaded(&self, len: u64) {
        self.downloaded_bytes.fetch_add(len, Ordering::AcqRel);
    }

    /// A chunk of `len` bytes was verified and written; `reused` if it was
    /// copied from the active slot.
    pub(crate) fn chunk_written(&self, len: u64, reused: bool) {
        if reused {
            self.reused_bytes.fetch_add(len, Ordering::AcqRel);
        }
        self.bytes_done.fetch_add(len, Ordering::AcqRel);
        self.chunks_done.fetch_add(1, Ordering::AcqRel);
    }

    /// `len` bytes of the flushed slot were re-read and matched.
    pub(crate) fn verified(&self, len: u64) {
        self.verified_bytes.fetch_add(len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward_and_serialize_in_snake_case() {
        let p = InstallProgress::new();
        assert_eq!(p.snapshot().phase, InstallPhase::Preparing);
        p.enter(InstallPhase::VerifyingSlot);
        p.enter(InstallPhase::Writing);
        assert_eq!(p.snapshot().phase, InstallPhase::VerifyingSlot);
        for (i, phase) in InstallPhase::ALL.iter().enumerate() {
            assert_eq!(usize::from(phase.code()), i);
            assert_eq!(InstallPhase::from_code(phase.code()), *phase);
        }
        assert_eq!(
            serde_json::to_string(&InstallPhase::VerifyingSlot).unwrap_or_default(),
            "\"verifying_slot\""
        );
        p.begin();
        assert_eq!(p.snapshot(), ProgressSnapshot::default_for_test());
    }

    impl ProgressSnapshot {
        fn default_for_test() -> Self {
            Self {
                phase: InstallPhase::Preparing,
                chunks_total: 0,
                chunks_done: 0,
                bytes_total: 0,
                bytes_done: 0,
                downloaded_bytes: 0,
                reused_bytes: 0,
                resumed_bytes: 0,
                verified_bytes: 0,
            }
        }
    }
}
