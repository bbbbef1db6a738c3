//! The encrypted record store on redb.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use access::{Authorization, Permission};
use keys::KeyStore;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::crypto::{DataKey, aad};
use crate::keyring::Keyring;
use crate::{Error, Result};

/// The data categories of clause 5.2.5.1.2, each in its own table so a
/// record can never be read back as another category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Device configuration.
    Configuration,
    /// Identifying data (device and network identifiers).
    Identifiers,
    /// Sensitive security parameters: accounts, credentials, tokens.
    SecurityParameters,
    /// Security settings that only ever rise (the reset floor).
    SecurityFloor,
}

impl Category {
    fn table(self) -> &'static str {
        match self {
            Self::Configuration => "configuration",
            Self::Identifiers => "identifiers",
            Self::SecurityParameters => "ssp",
            Self::SecurityFloor => "security-floor",
        }
    }

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.table())
    }
}

const USER_TABLE: &str = "user-data";
const USER_DATA: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new(USER_TABLE);
const MAX_NAME: usize = 255;
const MAX_VALUE: usize = 1 << 20;

/// A receipt for a user data removal (clause 5.2.4.2): what was removed,
/// when, and on whose authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalReceipt {
    /// Users whose data was removed.
    pub users: Vec<String>,
    /// Categories of data removed.
    pub categories: Vec<&'static str>,
    /// Records deleted from the store.
    pub records_deleted: u64,
    /// Whether the users' keys were destroyed (crypto-erase).
    pub keys_destroyed: bool,
    /// Who authorized it.
    pub authorized_by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// An encrypted, crash-safe record store.
pub struct Store {
    path: PathBuf,
    db: RwLock<Database>,
    keyring: Keyring,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::InvalidInput {
            what: "record name",
            reason: format!("must be 1 to {MAX_NAME} bytes, got {}", name.len()),
        });
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE {
        return Err(Error::InvalidInput {
            what: "record value",
            reason: format!("{} bytes is more than {MAX_VALUE}", value.len()),
        });
    }
    Ok(())
}

/// Plaintext of a record: `name length (2) | name | value`, so the name
/// can be listed although the table key is a keyed hash.
fn frame(name: &str, value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 + name.len() + value.len()));
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value);
    out
}

fn unframe(plain: &[u8]) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let (name, value) = split_frame(plain)?;
    Some((name.to_owned(), Zeroizing::new(value.to_vec())))
}

fn split_frame(plain: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes([*plain.first()?, *plain.get(1)?]) as usize;
    let name = std::str::from_utf8(plain.get(2..2 + len)?).ok()?;
    Some((name, plain.get(2 + len..)?))
}

/// Checks that the record carries `name` and turns the plaintext into the
/// value in place (no second buffer for the secret).
fn into_value(
    table: &'static str,
    name: &str,
    mut plain: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>> {
    let header = match split_frame(&plain) {
        Some((stored, _)) if stored == name => 2 + stored.len(),
        _ => {
            return Err(Error::Tampered {
                table,
                reason: "record does not carry its own name".into(),
            });
        }
    };
    plain.drain(..header);
    Ok(plain)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, with its data keys
    /// sealed by `keystore`.
    pub fn open(dir: &Path, keystore: Arc<dyn KeyStore>) -> Result<Self> {
        keys::fsio::ensure_private_dir(dir)?;
        let keyring = Keyring::open(dir, keystore)?;
        let path = dir.join("store.redb");
        let db = Database::create(&path).map_err(|e| Error::db(&path, e))?;
        Ok(Self {
            path,
            db: RwLock::new(db),
            keyring,
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn db_mut(&self) -> RwLockWriteGuard<'_, Database> {
        self.db.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        edit: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<()>,
    ) -> Result<()> {
        let db = self.db();
        let txn = db.begin_write().map_err(|e| Error::db(&self.path, e))?;
        {
            let mut t = txn
                .open_table(table)
                .map_err(|e| Error::db(&self.path, e))?;
            edit(&mut t)?;
        }
        // Durability::Immediate (redb's default): fsync before returning,
        // so an acknowledged write survives a power cut.
        txn.commit().map_err(|e| Error::db(&self.path, e))
    }

    /// Runs `f` on the stored bytes under `key`, inside the read
    /// transaction (no copy of the ciphertext).
    fn with_raw<T>(
        &self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<T>> {
        let db = self.db();
        let txn = db.begin_read().map_err(|e| Error::db(&self.path, e))?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(Error::db(&self.path, e)),
        };
        match t.get(key).map_err(|e| Error::db(&self.path, e))? {
            Some(v) => f(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` under `name` in `category`, replacing any previous
    /// value. Returns once the write is durable.
    pub fn put(&self, category: Category, name: &str, value: &[u8]) -> Result<()> {
        check_name(name)?;
        check_value(value)?;
        let key = self
            .keyring
            .store_key
            .name(&[category.table().as_bytes(), name.as_bytes()]);
        let sealed = self
            .keyring
            .store_key
            .seal(&aad(category.table(), &key), &frame(name, value))?;
        self.write(category.definition(), |t| {
            t.insert(&key[..], &sealed[..])
                .map_err(|e| Error::db(&self.path, e))?;
            Ok(())
        })
    }

    /// The value under `name` in `category`.
    pub fn get(&self, category: Category, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        check_name(name)?;
        let table = category.table();
        let key = self
            .keyring
            .store_key
            .name(&[table.as_bytes(), name.as_bytes()]);
        self.with_raw(category.definition(), &key, |sealed| {
            let plain = self
                .keyring
                .store_key
                .open(&aad(table, &key), sealed)
                .map_err(|reason| Error::Tampered { table, reason })?;
            into_value(table, name, plain)
        })
    }

    /// Deletes `name` from `category`; returns whether it existed.
    pub fn delete(&self, category: Category, name: &str) -> Result<bool> {
        check_name(name)?;
        let key = self
            .keyring
            .store_key
            .name(&[category.table().as_bytes(), name.as_bytes()]);
        let mut existed = false;
        self.write(category.definition(), |t| {
            existed = t
                .remove(&key[..])
                .map_err(|e| Error::db(&self.path, e))?
                .is_some();
            Ok(())
        })?;
        Ok(existed)
    }

    /// Every record name in `category`, sorted.
    pub fn names(&self, category: Category) -> Result<Vec<String>> {
        let mut names = self.scan(
            category.definition(),
            category.table(),
            &self.keyring.store_key,
            &[],
        )?;
        names.sort();
        Ok(names)
    }

    fn scan(
        &self,
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        table_name: &'static str,
        key: &DataKey,
        prefix: &[u8],
    ) -> Result<Vec<String>> {
        let db = self.db();
        let txn = db.begin_read().map_err(|e| Error::db(&self.path, e))?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(Error::db(&self.path, e)),
        };
        let mut names = Vec::new();
        for entry in t.range(prefix..).map_err(|e| Error::db(&self.path, e))? {
            let (k, v) = entry.map_err(|e| Error::db(&self.path, e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            let plain = key
                .open(&aad(table_name, k.value()), v.value())
                .map_err(|reason| Error::Tampered {
                    table: table_name,
                    reason,
                })?;
            let (name, _) = unframe(&plain).ok_or(Error::Tampered {
                table: table_name,
                reason: "malformed record".into(),
            })?;
            names.push(name);
        }
        Ok(names)
    }

    fn user_record_key(&self, user: &str, name: &str) -> Vec<u8> {
        let mut key = self
            .keyring
            .store_key
            .name(&[b"user", user.as_bytes()])
            .to_vec();
        key.extend_from_slice(&self.keyring.store_key.name(&[
            b"record",
            user.as_bytes(),
            name.as_bytes(),
        ]));
        key
    }

    /// Stores user data under the user's own key (created on first use).
    pub fn put_user(&self, user: &str, name: &str, value: &[u8]) -> Result<()> {
        check_name(user)?;
        check_name(name)?;
        check_value(value)?;
        let user_key = self.keyring.user_key_or_create(user)?;
        let key = self.user_record_key(user, name);
        let sealed = user_key.seal(&aad(USER_TABLE, &key), &frame(name, value))?;
        self.write(USER_DATA, |t| {
            t.insert(&key[..], &sealed[..])
                .map_err(|e| Error::db(&self.path, e))?;
            Ok(())
        })
    }

    /// A user's value under `name`.
    pub fn get_user(&self, user: &str, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(user_key) = self.keyring.user_key(user)? else {
            return Ok(None);
        };
        let key = self.user_record_key(user, name);
        self.with_raw(USER_DATA, &key, |sealed| {
            let plain = user_key
                .open(&aad(USER_TABLE, &key), sealed)
                .map_err(|reason| Error::Tampered {
                    table: USER_TABLE,
                    reason,
                })?;
            into_value(USER_TABLE, name, plain)
        })
    }

    /// Names of a user's records.
    pub fn user_names(&self, user: &str) -> Result<Vec<String>> {
        let Some(user_key) = self.keyring.user_key(user)? else {
            return Ok(Vec::new());
        };
        let prefix = self.keyring.store_key.name(&[b"user", user.as_bytes()]);
        let mut names = self.scan(USER_DATA, USER_TABLE, &user_key, &prefix)?;
        names.sort();
        Ok(names)
    }

    /// Users that have data in the store.
    pub fn users(&self) -> Vec<String> {
        self.keyring.user_ids()
    }

    /// Removes one user's data (or every user's with `None`): records
    /// deleted, keys destroyed, the file compacted so freed pages are
    /// reused. Needs an [`Authorization`] for
    /// [`Permission::RemoveUserData`].
    pub fn remove_user_data(
        &self,
        auth: &Authorization,
        user: Option<&str>,
    ) -> Result<RemovalReceipt> {
        require(auth, Permission::RemoveUserData)?;
        if let Some(user) = user
            && self.keyring.user_key(user)?.is_none()
        {
            return Err(Error::UnknownUser(user.to_owned()));
        }
        let mut deleted = 0u64;
        let prefixes: Vec<[u8; 32]> = match user {
            Some(u) => vec![self.keyring.store_key.name(&[b"user", u.as_bytes()])],
            None => Vec::new(),
        };
        self.write(USER_DATA, |t| {
            if user.is_none() {
                deleted = t.len().map_err(|e| Error::db(&self.path, e))?;
                t.retain(|_, _| false)
                    .map_err(|e| Error::db(&self.path, e))?;
                return Ok(());
            }
            for prefix in &prefixes {
                let keys: Vec<Vec<u8>> = t
                    .range(&prefix[..]..)
                    .map_err(|e| Error::db(&self.path, e))?
                    .map_while(|e| e.ok())
                    .map(|(k, _)| k.value().to_vec())
                    .take_while(|k| k.starts_with(prefix))
                    .collect();
                for k in keys {
                    t.remove(&k[..]).map_err(|e| Error::db(&self.path, e))?;
                    deleted += 1;
                }
            }
            Ok(())
        })?;
        // The records are gone; destroying the keys makes any copy of their
        // ciphertext (free pages, journals, backups) unreadable.
        let users = self.keyring.destroy(user)?;
        self.compact()?;
        Ok(RemovalReceipt {
            users,
            categories: vec![USER_TABLE, "event-log user fields"],
            records_deleted: deleted,
            keys_destroyed: true,
            authorized_by: auth.principal().to_owned(),
            at: now(),
        })
    }

    /// Factory reset: configuration, identifiers, credentials and all user
    /// data return to factory default; the security floor is kept (a reset
    /// must not re-open what configuration closed). Needs an
    /// [`Authorization`] for [`Permission::FactoryReset`].
    pub fn factory_reset(&self, auth: &Authorization) -> Result<RemovalReceipt> {
        require(auth, Permission::FactoryReset)?;
        let db = self.db();
        let txn = db.begin_write().map_err(|e| Error::db(&self.path, e))?;
        let mut deleted = 0u64;
        for category in [
            Category::Configuration,
            Category::Identifiers,
            Category::SecurityParameters,
        ] {
            let mut t = txn
                .open_table(category.definition())
                .map_err(|e| Error::db(&self.path, e))?;
            deleted += t.len().map_err(|e| Error::db(&self.path, e))?;
            t.retain(|_, _| false)
                .map_err(|e| Error::db(&self.path, e))?;
        }
        {
            let mut t = txn
                .open_table(USER_DATA)
                .map_err(|e| Error::db(&self.path, e))?;
            deleted += t.len().map_err(|e| Error::db(&self.path, e))?;
            t.retain(|_, _| false)
                .map_err(|e| Error::db(&self.path, e))?;
        }
        txn.commit().map_err(|e| Error::db(&self.path, e))?;
        drop(db);
        let users = self.keyring.destroy(None)?;
        self.compact()?;
        Ok(RemovalReceipt {
            users,
            categories: vec!["configuration", "identifiers", "ssp", USER_TABLE],
            records_deleted: deleted,
            keys_destroyed: true,
            authorized_by: auth.principal().to_owned(),
            at: now(),
        })
    }

    /// Raises a security floor value; a lower value is refused, so the
    /// floor only rises. Returns the value now in force.
    pub fn raise_floor(&self, name: &str, value: u64) -> Result<u64> {
        let current = self.floor(name)?;
        if let Some(current) = current
            && value < current
        {
            return Err(Error::InvalidInput {
                what: "security floor",
                reason: format!("{name} is at {current}; a floor never goes down (asked {value})"),
            });
        }
        self.put(Category::SecurityFloor, name, &value.to_be_bytes())?;
        Ok(value)
    }

    /// The security floor value for `name`, if set.
    pub fn floor(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .get(Category::SecurityFloor, name)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes))
    }

    /// Rewrites the database so freed pages are returned and reused.
    pub fn compact(&self) -> Result<()> {
        let mut db = self.db_mut();
        db.compact().map_err(|e| Error::db(&self.path, e))?;
        Ok(())
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The database file (for tests and diagnostics).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn require(auth: &Authorization, needed: Permission) -> Result<()> {
    if auth.permission() != needed {
        return Err(Error::WrongAuthorization {
            granted: auth.permission(),
            needed,
        });
    }
    Ok(())
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
