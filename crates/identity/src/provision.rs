//! Provisioning one unit: the step that makes a device unique.
//!
//! [`provision`] creates, all or nothing, a device key inside the unit's
//! keystore, an IDevID certificate from the manufacturer CA, and a setup
//! secret of which only a hash stays on the device. The identity lives in
//! `<state>/identity/`:
//!
//! | file | content |
//! |---|---|
//! | `device.json` | [`DeviceRecord`]: identifiers, key label, fingerprints, setup secret hash |
//! | `device.pem` | the unit's certificate |
//! | `chain.pem` | issuing CA then root |
//!
//! Files are written to `identity.staging/` and renamed into place; a
//! failure at any step deletes the new key, so nothing is half-made.

use std::fs;
use std::path::{Path, PathBuf};

use keys::fsio::{ensure_private_dir, sync_dir, write_atomic};
use keys::{Algorithm, KeyAdmin, KeyLabel};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ca::{DeviceSubject, ManufacturerCa, check_text};
use crate::registry::IssuedUnit;
use crate::secret::SetupSecret;
use crate::x509::{certs_from_pem, fingerprint, to_pem};
use crate::{Error, Result};

const IDENTITY: &str = "identity";
const STAGING: &str = "identity.staging";
const RECORD: &str = "device.json";
const CERT: &str = "device.pem";
const CHAIN: &str = "chain.pem";
const FORMAT: u32 = 1;
/// Written before the device key is generated, so that a crash at any
/// later point leaves a record of which key to discard.
const PENDING_KEY: &str = "pending-key-label";

/// What the factory says about the unit being provisioned.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The maker's serial number (printable characters only).
    pub serial: String,
    /// The product model.
    pub model: String,
    /// Algorithm of the device key.
    pub algorithm: Algorithm,
    /// A development unit: marked as such in every status output.
    pub development: bool,
    /// Replace an existing identity on this unit.
    pub force: bool,
}

/// The identity a device keeps about itself (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// File format version.
    pub format: u32,
    /// Random device identifier (UUID v4).
    pub device_id: String,
    /// The maker's serial number.
    pub serial: String,
    /// The product model.
    pub model: String,
    /// Label of the device key in its keystore.
    pub key_label: KeyLabel,
    /// Which keystore backend holds the key.
    pub keystore: String,
    /// SHA-256 of the device public key (SPKI).
    pub public_key_sha256: String,
    /// SHA-256 of the device certificate.
    pub certificate_sha256: String,
    /// Argon2id hash of the setup secret (the secret itself is not kept).
    pub setup_secret_hash: String,
    /// Whether this is a development unit.
    pub development: bool,
    /// When it was provisioned (RFC 3339).
    pub provisioned_at: String,
}

/// A freshly provisioned unit; the setup secret exists only in here.
#[derive(Debug)]
pub struct Provisioned {
    /// What the device keeps.
    pub record: DeviceRecord,
    /// The setup secret, to print on the label once.
    pub setup_secret: SetupSecret,
    /// The device certificate.
    pub certificate: CertificateDer<'static>,
}

/// An identity read back from the state directory.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// The record.
    pub record: DeviceRecord,
    /// The device certificate.
    pub certificate: CertificateDer<'static>,
    /// Issuing CA and root.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Where a unit's identity lives under its state directory.
pub fn identity_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(IDENTITY)
}

/// Provisions the unit whose state lives in `state_dir` and whose keys are
/// in `device_keys`.
pub fn provision(
    ca: &ManufacturerCa,
    device_keys: &dyn KeyAdmin,
    state_dir: &Path,
    request: &ProvisionRequest,
) -> Result<Provisioned> {
    check_text("serial number", &request.serial, 64)?;
    check_text("model", &request.model, 64)?;
    if !state_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| Error::io("creating", state_dir, e))?;
    }
    discard_staging(state_dir, device_keys)?;

    let previous = match load(state_dir) {
        Ok(existing) if !request.force => {
            return Err(Error::AlreadyProvisioned {
                dir: identity_dir(state_dir),
                device_id: existing.record.device_id,
            });
        }
        Ok(existing) => Some(existing.record),
        Err(Error::NotProvisioned { .. }) => None,
        Err(e) if request.force => {
            tracing::warn!(error = %e, "replacing an unreadable identity");
            None
        }
        Err(e) => return Err(e),
    };

    let mut registry = ca.registry().lock()?;
    if let Some(unit) = registry.by_serial(&request.serial) {
        let same_unit = previous
            .as_ref()
            .is_some_and(|p| p.serial == request.serial);
        if !same_unit {
            return Err(Error::DuplicateSerial {
                serial: request.serial.clone(),
                device_id: unit.device_id.clone(),
            });
        }
    }

    let device_id = uuid::Uuid::new_v4().to_string();
    let key_label: KeyLabel = format!("idevid-{}", &device_id[..8]).parse()?;
    let staging = state_dir.join(STAGING);
    ensure_private_dir(&staging)?;
    write_atomic(
        &staging.join(PENDING_KEY),
        key_label.as_str().as_bytes(),
        0o600,
    )?;
    let public = match device_keys.generate(&key_label, request.algorithm) {
        Ok(public) => public,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e.into());
        }
    };

    // From here on a failure must remove the key we just made.
    let made = (|| -> Result<Provisioned> {
        let subject = DeviceSubject {
            device_id: device_id.clone(),
            serial: request.serial.clone(),
            model: request.model.clone(),
        };
        let certificate = ca.issue_device(&subject, &public)?;
        let setup_secret = SetupSecret::generate()?;
        let now = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| Error::cert("timestamp", e))?;
        let record = DeviceRecord {
            format: FORMAT,
            device_id: device_id.clone(),
            serial: request.serial.clone(),
            model: request.model.clone(),
            key_label: key_label.clone(),
            keystore: device_keys.info().backend.to_owned(),
            public_key_sha256: public.fingerprint(),
            certificate_sha256: fingerprint(&certificate),
            setup_secret_hash: setup_secret.hash()?,
            development: request.development,
            provisioned_at: now.clone(),
        };
        write_identity(&staging, &record, &certificate, &ca.chain_pem())?;
        registry.append(IssuedUnit {
            serial: record.serial.clone(),
            device_id: record.device_id.clone(),
            model: record.model.clone(),
            certificate_sha256: record.certificate_sha256.clone(),
            issued_at: now,
        })?;
        swap_into_place(state_dir)?;
        Ok(Provisioned {
            record,
            setup_secret,
            certificate,
        })
    })();

    match made {
        Ok(provisioned) => {
            if let Some(old) = previous.filter(|p| p.key_label != key_label)
                && let Err(e) = device_keys.delete(&old.key_label)
            {
                tracing::warn!(key = %old.key_label, error = %e, "could not delete the replaced device key");
            }
            Ok(provisioned)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(state_dir.join(STAGING));
            if let Err(cleanup) = device_keys.delete(&key_label) {
                tracing::warn!(key = %key_label, error = %cleanup, "could not delete the key of a failed provisioning");
            }
            Err(e)
        }
    }
}

/// Reads the identity of the unit whose state is in `state_dir`.
pub fn load(state_dir: &Path) -> Result<DeviceIdentity> {
    let dir = identity_dir(state_dir);
    let record_path = dir.join(RECORD);
    let text = match fs::read_to_string(&record_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotProvisioned { dir });
        }
        Err(e) => return Err(Error::io("reading", &record_path, e)),
    };
    let record: DeviceRecord = serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        path: record_path.clone(),
        reason: e.to_string(),
    })?;
    if record.format != FORMAT {
        return Err(Error::Corrupt {
            path: record_path,
            reason: format!("unsupported format version {}", record.format),
        });
    }
    let read_pem = |name: &str| -> Result<Vec<CertificateDer<'static>>> {
        let path = dir.join(name);
        let pem = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        certs_from_pem(name, &pem)
    };
    let certificate = read_pem(CERT)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::cert(CERT, "empty"))?;
    if fingerprint(&certificate) != record.certificate_sha256 {
        return Err(Error::Corrupt {
            path: dir.join(CERT),
            reason: "certificate does not match the fingerprint in device.json".into(),
        });
    }
    let chain = read_pem(CHAIN)?;
    Ok(DeviceIdentity {
        record,
        certificate,
        chain,
    })
}

/// Writes the label file for the factory printer: identifier, serial,
/// setup secret and certificate fingerprint. Readable by its owner only.
pub fn write_label(path: &Path, unit: &Provisioned) -> Result<()> {
    let text = zeroize::Zeroizing::new(format!(
        "device-id: {}\nserial: {}\nmodel: {}\nsetup-secret: {}\ncertificate-sha256: {}\n",
        unit.record.device_id,
        unit.record.serial,
        unit.record.model,
        unit.setup_secret.expose(),
        unit.record.certificate_sha256,
    ));
    Ok(write_atomic(path, text.as_bytes(), 0o600)?)
}

fn write_identity(
    staging: &Path,
    record: &DeviceRecord,
    certificate: &CertificateDer<'_>,
    chain_pem: &str,
) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Corrupt {
        path: staging.join(RECORD),
        reason: e.to_string(),
    })?;
    write_atomic(&staging.join(CERT), to_pem(certificate).as_bytes(), 0o644)?;
    write_atomic(&staging.join(CHAIN), chain_pem.as_bytes(), 0o644)?;
    // The record goes last: its presence marks a complete identity.
    write_atomic(&staging.join(RECORD), &json, 0o600)?;
    Ok(())
}

/// Renames the staged identity over the current one. The old identity is
/// moved aside first so that a crash leaves one complete identity.
fn swap_into_place(state_dir: &Path) -> Result<()> {
    let live = state_dir.join(IDENTITY);
    let staging = state_dir.join(STAGING);
    let old = state_dir.join("identity.old");
    let _ = fs::remove_dir_all(&old);
    if live.exists() {
        fs::rename(&live, &old).map_err(|e| Error::io("moving aside", &live, e))?;
    }
    fs::rename(&staging, &live).map_err(|e| Error::io("renaming into place", &live, e))?;
    sync_dir(state_dir)?;
    let _ = fs::remove_file(live.join(PENDING_KEY));
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// Removes a staging directory left by a crash during provisioning, with
/// the key it names (a key no identity refers to).
fn discard_staging(state_dir: &Path, device_keys: &dyn KeyAdmin) -> Result<()> {
    let staging = state_dir.join(STAGING);
    if !staging.exists() {
        return Ok(());
    }
    if let Ok(text) = fs::read_to_string(staging.join(PENDING_KEY))
        && let Ok(label) = text.trim().parse::<KeyLabel>()
    {
        let _ = device_keys.delete(&label);
    }
    tracing::warn!(dir = %staging.display(), "discarding an interrupted provisioning");
    fs::remove_dir_all(&staging).map_err(|e| Error::io("removing", &staging, e))
}
