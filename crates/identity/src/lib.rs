//! Device identity: the manufacturer CA, per-unit provisioning (IDevID
//! certificate, setup secret, label) and TLS with keys that never leave
//! their keystore.
//!
//! Main types:
//! - [`ca::ManufacturerCa`]: a root and an issuing CA whose keys live in any
//!   keystore backend, plus the [`registry::Registry`] of every unit issued
//!   (so no serial or identifier is ever issued twice).
//! - [`provision::provision`]: makes one unit unique: a device key created
//!   inside the device's keystore, a certificate carrying the unit's serial
//!   and identifier, and a random setup secret of which only a hash stays
//!   on the device (clause 5.2.6.1.4: no common critical SSPs).
//! - [`tls`]: rustls server and client configurations (TLS 1.2+ only,
//!   mutual authentication) that sign through [`keys::KeyRef`].
//!
//! Design decisions:
//! - Identifiers are random (UUID v4), never derived from personal data or
//!   hardware addresses (clause 5.2.6.1.3); the serial number is the
//!   maker's. docs/identifiers.md lists every persistent identifier.
//! - Provisioning is all or nothing: files are staged in a sibling
//!   directory and renamed into place; a failure deletes the new key.
//! - Certificates are built by rcgen and parsed by x509-parser, with the
//!   same aws-lc-rs provider as rustls.

pub mod ca;
mod error;
pub mod provision;
pub mod registry;
pub mod secret;
pub mod signer;
pub mod tls;
pub mod x509;

pub use error::{Error, Result};
