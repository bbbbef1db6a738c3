//! The manufacturer's record of every unit issued: what makes "two units
//! share no serial or identifier" checkable, and the list an auditor or a
//! gateway's firmware manifest starts from.
//!
//! An append-only JSON-lines file, locked while read and appended so two
//! provisioning processes cannot issue the same serial.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One issued unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedUnit {
    /// The maker's serial number.
    pub serial: String,
    /// The random device identifier.
    pub device_id: String,
    /// The product model.
    pub model: String,
    /// SHA-256 of the issued certificate.
    pub certificate_sha256: String,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
}

/// The registry file of a manufacturer CA.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
}

/// A locked registry: held while a unit is checked and recorded.
#[derive(Debug)]
pub struct LockedRegistry {
    file: File,
    path: PathBuf,
    units: Vec<IssuedUnit>,
}

impl Registry {
    /// The registry at `path` (created on first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file behind it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the exclusive lock and reads every entry.
    pub fn lock(&self) -> Result<LockedRegistry> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(|e| Error::io("opening", &self.path, e))?;
        file.lock()
            .map_err(|e| Error::io("locking", &self.path, e))?;
        let mut units = Vec::new();
        for (n, line) in BufReader::new(&file).lines().enumerate() {
            let line = line.map_err(|e| Error::io("reading", &self.path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let unit = serde_json::from_str(&line).map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                reason: format!("line {}: {e}", n + 1),
            })?;
            units.push(unit);
        }
        Ok(LockedRegistry {
            file,
            path: self.path.clone(),
            units,
        })
    }
}

impl LockedRegistry {
    /// Every unit issued so far.
    pub fn units(&self) -> &[IssuedUnit] {
        &self.units
    }

    /// The unit holding `serial`, if any.
    pub fn by_serial(&self, serial: &str) -> Option<&IssuedUnit> {
        self.units.iter().find(|u| u.serial == serial)
    }

    /// Records a unit durably (the line is flushed to disk before return).
    pub fn append(&mut self, unit: IssuedUnit) -> Result<()> {
        let mut line = serde_json::to_string(&unit).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("appending to", &self.path, e))?;
        self.units.push(unit);
        Ok(())
    }
}
