//! The store's envelope keys and the per-user keys that make crypto-erase
//! possible.
//!
//! - `store.key`: the store's data key, sealed by the keystore (TPM,
//!   PKCS#11 or software). Without the keystore the database is noise.
//! - `users.key`: every user's data key, encrypted under an *epoch key*
//!   that is itself sealed by the keystore. Removing a user rewrites this
//!   file under a fresh epoch key, so copies of the user's key left in old
//!   file blocks, redb free pages or backups are sealed under an epoch key
//!   that no longer exists in usable form (see docs/storage.md for the
//!   residual risk of old sealed blobs on flash).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use keys::fsio::write_atomic;
use keys::{KeyStore, SealedSecret};
use zeroize::Zeroizing;

use crate::crypto::DataKey;
use crate::{Error, Result};

const STORE_KEY: &str = "store.key";
const USERS_KEY: &str = "users.key";
const USERS_MAGIC: &[u8; 4] = b"BWUK";

pub(crate) struct Keyring {
    dir: PathBuf,
    keystore: Arc<dyn KeyStore>,
    pub(crate) store_key: DataKey,
    users: Mutex<BTreeMap<String, Zeroizing<Vec<u8>>>>,
}

impl Keyring {
    pub(crate) fn open(dir: &Path, keystore: Arc<dyn KeyStore>) -> Result<Self> {
        let store_key_path = dir.join(STORE_KEY);
        let secret = if store_key_path.exists() {
            let sealed = std::fs::read(&store_key_path)
                .map_err(|e| Error::io("reading", &store_key_path, e))?;
            keystore
                .unseal(&SealedSecret(sealed))
                .map_err(|e| Error::Corrupt {
                    path: store_key_path.clone(),
                    reason: format!("cannot unseal the store key: {e}"),
                })?
        } else {
            let secret = DataKey::random_secret()?;
            let sealed = keystore.seal(&secret)?;
            write_atomic(&store_key_path, &sealed.0, 0o600)?;
            secret
        };
        let users = read_users(&dir.join(USERS_KEY), keystore.as_ref())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            store_key: DataKey::new(&secret)?,
            keystore,
            users: Mutex::new(users),
        })
    }

    fn users(&self) -> MutexGuard<'_, BTreeMap<String, Zeroizing<Vec<u8>>>> {
        // Every mutation replaces the map in one assignment; a panic
        // cannot leave it half-changed.
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user's key, if the user has one.
    pub(crate) fn user_key(&self, user: &str) -> Result<Option<DataKey>> {
        self.users()
            .get(user)
            .map(|secret| DataKey::new(secret))
            .transpose()
    }

    /// The user's key, creating (and durably recording) it on first use.
    pub(crate) fn user_key_or_create(&self, user: &str) -> Result<DataKey> {
        let mut users = self.users();
        if let Some(secret) = users.get(user) {
            return DataKey::new(secret);
        }
        let mut next = users.clone();
        let secret = DataKey::random_secret()?;
        next.insert(user.to_owned(), secret.clone());
        write_users(&self.dir.join(USERS_KEY), self.keystore.as_ref(), &next)?;
        *users = next;
        DataKey::new(&secret)
    }

    /// Destroys the keys of `users` (all users if `None`) under a fresh
    /// epoch key. Returns the users whose keys were destroyed.
    pub(crate) fn destroy(&self, which: Option<&str>) -> Result<Vec<String>> {
        let mut users = self.users();
        let mut next = users.clone();
        let removed: Vec<String> = match which {
            Some(user) => next
                .remove(user)
                .map(|_| vec![user.to_owned()])
                .unwrap_or_default(),
            None => std::mem::take(&mut next).into_keys().collect(),
        };
        write_users(&self.dir.join(USERS_KEY), self.keystore.as_ref(), &next)?;
        *users = next;
        Ok(removed)
    }

    /// Users that currently hold a key.
    pub(crate) fn user_ids(&self) -> Vec<String> {
        self.users().keys().cloned().collect()
    }
}

fn read_users(
    path: &Path,
    keystore: &dyn KeyStore,
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>> {
    let blob = match std::fs::read(path) {
        Ok(blob) => blob,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if blob.len() < 8 || &blob[..4] != USERS_MAGIC {
        return Err(corrupt("not a Bulwark user key file"));
    }
    let sealed_len = u32::from_be_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
    let rest = &blob[8..];
    if rest.len() < sealed_len {
        return Err(corrupt("truncated"));
    }
    let (sealed, body) = rest.split_at(sealed_len);
    let epoch = keystore
        .unseal(&SealedSecret(sealed.to_vec()))
        .map_err(|e| corrupt(&format!("cannot unseal the epoch key: {e}")))?;
    let key = DataKey::new(&epoch)?;
    let plain = key
        .open(USERS_MAGIC, body)
        .map_err(|reason| corrupt(&reason))?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&plain).map_err(|e| corrupt(&e.to_string()))?;
    map.into_iter()
        .map(|(user, hex_key)| {
            let key = hex::decode(hex_key).map_err(|e| corrupt(&e.to_string()))?;
            Ok((user, Zeroizing::new(key)))
        })
        .collect()
}

fn write_users(
    path: &Path,
    keystore: &dyn KeyStore,
    users: &BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<()> {
    let epoch = DataKey::random_secret()?;
    let sealed = keystore.seal(&epoch)?;
    let map: BTreeMap<&str, Zeroizing<String>> = users
        .iter()
        .map(|(u, k)| (u.as_str(), Zeroizing::new(hex::encode(k.as_slice()))))
        .collect();
    let plain = Zeroizing::new(serde_json::to_vec(&map).map_err(|e| Error::InvalidInput {
        what: "user key map",
        reason: e.to_string(),
    })?);
    let body = DataKey::new(&epoch)?.seal(USERS_MAGIC, &plain)?;
    let mut out = Vec::with_capacity(8 + sealed.0.len() + body.len());
    out.extend_from_slice(USERS_MAGIC);
    out.extend_from_slice(&(sealed.0.len() as u32).to_be_bytes());
    out.extend_from_slice(&sealed.0);
    out.extend_from_slice(&body);
    write_atomic(path, &out, 0o600)?;
    Ok(())
}
