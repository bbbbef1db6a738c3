//! Start-up integrity check (clause 5.2.5.2.1): does a slot hold exactly
//! the image an authentic manifest describes?

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manifest::AuthenticManifest;
use crate::parallel::hash_file_chunks;

/// The outcome of [`verify_slot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Chunks the manifest lists.
    pub chunks: u64,
    /// Bytes the manifest covers.
    pub image_size: u64,
    /// The first chunk whose content differs from the manifest (or cannot
    /// be read because the slot is too short); `None` if intact.
    pub first_bad_chunk: Option<u64>,
    /// Wall time of the check.
    pub duration: Duration,
}

impl IntegrityReport {
    /// Whether every chunk matched.
    pub fn is_intact(&self) -> bool {
        self.first_bad_chunk.is_none()
    }
}

/// Hashes the first `image_size` bytes of `slot_path` chunk by chunk on
/// all cores and compares each with `manifest`. Bytes after the image
/// (a block device larger than it) are not covered. An I/O error other
/// than a short slot is an error, not a finding.
pub fn verify_slot(
    slot_path: &Path,
    manifest: &impl AsRef<AuthenticManifest>,
) -> Result<IntegrityReport> {
    let started = Instant::now();
    let m = manifest.as_ref().manifest();
    let file = File::open(slot_path).map_err(|e| Error::io("opening slot", slot_path, e))?;
    let count = m.chunk_count();
    let first_bad = AtomicU64::new(count);
    let failure: Mutex<Option<(u64, io::Error)>> = Mutex::new(None);
    hash_file_chunks(
        &file,
        m.chunk_size,
        m.image_size,
        &first_bad,
        &|index, result| {
            let good = match result {
                Ok(digest) => m.chunk(index) == Some(&digest),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
                Err(e) => {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    if f.as_ref().is_none_or(|(i, _)| index < *i) {
                        *f = Some((index, e));
                    }
                    false
                }
            };
            if !good {
                first_bad.fetch_min(index, Ordering::AcqRel);
            }
        },
    );
    let first_bad = first_bad.into_inner();
    if let Some((index, e)) = failure.into_inner().unwrap_or_else(|p| p.into_inner())
        && index <= first_bad
    {
        return Err(Error::io("reading slot", slot_path, e));
    }
    Ok(IntegrityReport {
        chunks: count,
        image_size: m.image_size,
        first_bad_chunk: (first_bad < count).then_some(first_bad),
        duration: started.elapsed(),
    })
}
