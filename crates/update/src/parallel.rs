//! Chunk hashing on all cores with bounded memory.
//!
//! Each worker owns one chunk-sized buffer and pulls chunk indices from a
//! shared counter, so memory is `workers × chunk_size` whatever the image
//! size, and no worker waits for a slow neighbour. Scoped threads need no
//! thread pool crate.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crate::manifest::{Digest, Manifest, sha256};

fn chunk_range(chunk_size: u32, size: u64, index: u64) -> (u64, usize) {
    Manifest::chunk_layout(chunk_size, size, index)
}

/// Memory allowed for chunk buffers in flight (the install's buffer
/// pool, parallel reads): keeps peak RSS flat at any image size. Two
/// chunks are always allowed, so 4 MiB chunks still hash on two cores
/// (8 MiB).
pub(crate) const IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;

/// Chunks of `chunk_size` that fit the in-flight budget (at least two).
pub(crate) fn chunks_in_flight(chunk_size: usize) -> usize {
    (IN_FLIGHT_BYTES / chunk_size.max(1)).max(2)
}

/// Worker threads for chunks of `chunk_size`: one per core, but no more
/// than the memory budget allows.
pub(crate) fn workers(chunk_size: usize) -> usize {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(chunks_in_flight(chunk_size))
}

/// Hashes chunks `0..limit` of the first `size` bytes of `file`, cut at
/// `chunk_size`, on all cores, calling `visit(index, hash)` for each (in no
/// particular order; `Err` for a chunk that could not be read). Workers
/// take no index at or above `limit`, which `visit` may lower (e.g. to the
/// first bad chunk) to stop early while every lower index is still visited.
pub(crate) fn hash_file_chunks(
    file: &File,
    chunk_size: u32,
    size: u64,
    limit: &AtomicU64,
    visit: &(dyn Fn(u64, io::Result<Digest>) + Sync),
) {
    let next = AtomicU64::new(0);
    let n = workers(chunk_size as usize);
    thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                let mut buf = vec![0u8; chunk_size as usize];
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= limit.load(Ordering::Acquire) {
                        break;
                    }
                    let (offset, len) = chunk_range(chunk_size, size, index);
                    let chunk = &mut buf[..len];
                    let result = file.read_exact_at(chunk, offset).map(|()| sha256(chunk));
                    visit(index, result);
                }
            });
        }
    });
}
