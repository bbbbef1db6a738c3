//! The publisher's side of a manifest: hashing an image into its chunk
//! list (on all cores, in bounded memory), ready to sign.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::manifest::{Digest, FORMAT, MAX_CHUNK_SIZE, MAX_CHUNKS, MIN_CHUNK_SIZE, Manifest};
use crate::{Error, Result};

/// What a release says besides its image (the chunk list and size come
/// from the image).
#[derive(Debug, Clone)]
pub struct Release {
    /// Hardware compatibility string.
    pub compatible: String,
    /// Human version.
    pub version: String,
    /// Monotonic version number.
    pub version_code: u64,
    /// Lowest installed version this release may be installed over.
    pub min_version_code: u64,
    /// Security version (the anti-rollback floor once committed).
    pub security_version: u64,
    /// Chunk length (power of two, 64 KiB to 4 MiB).
    pub chunk_size: u32,
}

/// Builds the manifest of `image` for `release`; the result still has to
/// be signed ([`crate::manifest::SignedManifest::sign`]) and is checked
/// for consistency first, so a publisher cannot sign what a device would
/// refuse.
pub fn manifest_for_image(image: &Path, release: &Release, created_unix: i64) -> Result<Manifest> {
    let chunk_size = release.chunk_size;
    if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::inconsistent(format!(
            "chunk size {chunk_size} is not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
        )));
    }
    let file = File::open(image).map_err(|e| Error::io("opening", image, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("reading the size of", image, e))?
        .len();
    let count = Manifest::chunk_count_for(size, chunk_size);
    if count as usize > MAX_CHUNKS {
        return Err(Error::inconsistent(format!(
            "{count} chunks is more than {MAX_CHUNKS}: use larger chunks"
        )));
    }
    let hashes: Mutex<Vec<Option<Digest>>> = Mutex::new(vec![None; count as usize]);
    let failure: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let limit = AtomicU64::new(count);
    crate::parallel::hash_file_chunks(
        &file,
        chunk_size,
        size,
        &limit,
        &|index, result| match result {
            Ok(hash) => {
                if let Ok(mut h) = hashes.lock()
                    && let Some(slot) = h.get_mut(index as usize)
                {
                    *slot = Some(hash);
                }
            }
            Err(e) => {
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e);
                }
            }
        },
    );
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(Error::io("reading", image, e));
    }
    let chunks = hashes
        .into_inner()
        .map_err(|_| Error::inconsistent("hashing failed"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::inconsistent("a chunk was not hashed"))?;
    let manifest = Manifest {
        format: FORMAT,
        compatible: release.compatible.clone(),
        version: release.version.clone(),
        version_code: release.version_code,
        min_version_code: release.min_version_code,
        security_version: release.security_version,
        image_size: size,
        chunk_size,
        chunks,
        created_unix,
    };
    manifest.check_consistent()?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn release(chunk_size: u32) -> Release {
        Release {
            compatible: "plug-1".into(),
            version: "1.0.0".into(),
            version_code: 1,
            min_version_code: 0,
            security_version: 1,
            chunk_size,
        }
    }

    #[test]
    fn chunks_hash_the_image_in_order_with_a_short_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        let image: Vec<u8> = (0..(3 * 65536 + 100)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &image).unwrap();
        let m = manifest_for_image(&path, &release(65536), 0).unwrap();
        assert_eq!(m.image_size, image.len() as u64);
        assert_eq!(m.chunks.len(), 4);
        for (i, chunk) in image.chunks(65536).enumerate() {
            assert_eq!(m.chunks[i], crate::manifest::chunk_hash(chunk), "chunk {i}");
        }
    }

    #[test]
    fn a_bad_chunk_size_is_refused_before_reading() {
        let err = manifest_for_image(Path::new("/nonexistent"), &release(1000), 0).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
    }
}
