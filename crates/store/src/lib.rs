//! Protected storage: encrypted, crash-safe records with per-user
//! crypto-erase, and a tamper-evident event log.
//!
//! Main types:
//! - [`Store`]: records in redb, one table per data category of clause
//!   5.2.5.1.2, every value sealed with AES-256-GCM bound to its table and
//!   name; record names are keyed hashes, so nothing in the file is clear
//!   text. User data is sealed under a per-user key; removing a user
//!   destroys the key (crypto-erase) and compacts the file.
//! - [`eventlog::EventLog`]: an append-only, hash-chained log with signed
//!   checkpoints; [`eventlog::verify`] says where a log was changed.
//!
//! Destructive operations take an [`access::Authorization`], which only
//! the access-control layer can create.
//!
//! Design decisions:
//! - redb for ACID commits with fsync (an acknowledged write survives a
//!   power cut); the event log is its own append-only file so that
//!   tampering can be located record by record.
//! - The store's data key is sealed by the keystore (TPM, PKCS#11 or
//!   software), so a copied state directory is useless without it.

mod crypto;
mod error;
pub mod eventlog;
mod keyring;
mod records;

pub use error::{Error, Result};
pub use records::{Category, RemovalReceipt, Store};
