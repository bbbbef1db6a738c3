//! Crash-safe file writes shared by the backends and the identity files.
//!
//! A power cut must never leave half a key file or half an index: every
//! write goes to a temporary file in the same directory, is flushed to the
//! disk, renamed over the target (atomic on POSIX file systems) and the
//! directory entry is flushed too.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Writes `bytes` to `path` atomically with permission bits `mode`
/// (e.g. `0o600` for anything secret).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        // The mode given to open() is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting permissions on", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        file.sync_all()
            .map_err(|e| Error::io("flushing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory so that a rename or removal inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("flushing directory", dir, e))
}

/// Creates `dir` (and parents) with permission bits `mode` if missing, and
/// makes sure an existing one is not open to group or others.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("setting permissions on", dir, e))?;
    }
    check_private(dir)
}

/// Refuses a file or directory that group or others can access: a secret
/// lying open is treated as compromised, as OpenSSH does with keys.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io("inspecting", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Corrupt {
            location: path.display().to_string(),
            reason: format!(
                "permissions {mode:04o} let group or others access it; expected 0600/0700"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_with_exact_mode() {
        let dir = tempfile_dir();
        let path = dir.join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left"
        );
        check_private(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&path).unwrap_err().to_string();
        assert!(err.contains("0644"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("keys-fsio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
