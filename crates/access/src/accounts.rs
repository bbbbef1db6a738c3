//! Person accounts: names, roles and password hashes, and the rules for
//! changing them (first-owner claim, managed creation and deletion, and
//! never losing the last owner).
//!
//! A device ships with no account (clause 5.2.2: no universal default
//! password). The first person who proves possession of the device's
//! setup secret claims it with [`Accounts::create_first_owner`]; after
//! that, accounts are created and deleted only with an
//! [`Authorization`] for [`Permission::ManageUsers`]. [`Accounts`] is
//! plain data (serde) so the agent can keep it in the encrypted store.
//!
//! ```
//! use access::accounts::{AccountName, Accounts};
//! use access::password::{HashParams, Password, PasswordPolicy};
//! use access::{Error, Role};
//! let params = HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
//! let policy = PasswordPolicy::default();
//! let mut accounts = Accounts::default();
//! let pw = Password::new("correct horse battery staple".into());
//! let alice = AccountName::parse("alice").unwrap();
//! accounts.create_first_owner(alice.clone(), &pw, &policy, &params, 1_700_000_000).unwrap();
//! assert_eq!(accounts.get("alice").unwrap().role(), Role::Owner);
//! assert_eq!(
//!     accounts.create_first_owner(alice, &pw, &policy, &params, 0),
//!     Err(Error::AlreadyClaimed)
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::password::{HashParams, Password, PasswordHash, PasswordPolicy};
use crate::{Authorization, Error, Permission, Role};

/// A validated account name: 1–32 characters of `[a-z0-9._-]`, starting
/// with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 32;

    /// Parses an account name; the error says which rule it broke (but
    /// not the name, which may be a password typed into the wrong field).
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| {
            Err(Error::InvalidAccountName {
                reason: reason.to_owned(),
            })
        };
        let Some(first) = name.chars().next() else {
            return invalid("it is empty");
        };
        if name.len() > Self::MAX_LEN {
            return invalid("it is longer than 32 characters");
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        {
            return invalid("only a-z, 0-9, '.', '_' and '-' are allowed");
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return invalid("it must start with a letter or digit");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AccountName {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<AccountName> for String {
    fn from(name: AccountName) -> Self {
        name.0
    }
}

/// One person's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    name: AccountName,
    role: Role,
    password: PasswordHash,
    created_unix: i64,
}

impl Account {
    /// The account name.
    pub fn name(&self) -> &AccountName {
        &self.name
    }

    /// The role it holds.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The hash of its password.
    pub fn password(&self) -> &PasswordHash {
        &self.password
    }

    /// When it was created (Unix seconds).
    pub fn created_unix(&self) -> i64 {
        self.created_unix
    }
}

/// The serialized form of [`Accounts`]: a list, checked for duplicates on
/// load, so that the name inside each account is the only copy of it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    accounts: Vec<Account>,
}

/// Every person account on the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AccountsFile", into = "AccountsFile")]
pub struct Accounts {
    // Invariant: each key equals its account's name.
    by_name: BTreeMap<AccountName, Account>,
}

impl TryFrom<AccountsFile> for Accounts {
    type Error = Error;

    fn try_from(file: AccountsFile) -> Result<Self, Error> {
        let mut by_name = BTreeMap::new();
        for account in file.accounts {
            if let Some(dup) = by_name.insert(account.name.clone(), account) {
                return Err(Error::AccountExists {
                    name: dup.name.to_string(),
                });
            }
        }
        Ok(Self { by_name })
    }
}

impl From<Accounts> for AccountsFile {
    fn from(accounts: Accounts) -> Self {
        Self {
            accounts: accounts.by_name.into_values().collect(),
        }
    }
}

impl Accounts {
    /// Whether there are no accounts yet (the device is unclaimed).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The account called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Account> {
        let name = AccountName::parse(name).ok()?;
        self.by_name.get(&name)
    }

    /// Every account, in name order.
    pub fn list(&self) -> impl Iterator<Item = &Account> {
        self.by_name.values()
    }

    /// Claims an unclaimed device: creates its first account, an owner.
    /// Fails with [`Error::AlreadyClaimed`] once any account exists. The
    /// caller checks the device's setup secret first.
    pub fn create_first_owner(
        &mut self,
        name: AccountName,
        password: &Password,
        policy: &PasswordPolicy,
        params: &HashParams,
        now_unix: i64,
    ) -> Result<(), Error> {
        if !self.is_empty() {
            return Err(Error::AlreadyClaimed);
        }
        self.insert(name, Role::Owner, password, policy, params, now_unix)
    }

    /// Creates an account. `by` must be an authorization for
    /// [`Permission::ManageUsers`]; persons cannot hold
    /// [`Role::Service`].
    #[allow(clippy::too_many_arguments)] // Each is a distinct input; a struct would only rename them.
    pub fn create(
        &mut self,
        by: &Authorization,
        name: AccountName,
        role: Role,
        password: &Password,
        policy: &PasswordPolicy,
        params: &HashParams,
        now_unix: i64,
    ) -> Result<(), Error> {
        require_manage_users(by)?;
        if role == Role::Service {
            return Err(Error::RoleNotForAccounts { role });
        }
        if self.by_name.contains_key(&name) {
            return Err(Error::AccountExists {
                name: name.to_string(),
            });
        }
        self.insert(name, role, password, policy, params, now_unix)
    }

    /// Deletes an account. `by` must be for [`Permission::ManageUsers`];
    /// the last owner cannot be deleted ([`Error::LastOwner`]), so the
    /// device never becomes unmanageable. The caller also revokes the
    /// account's sessions.
    pub fn delete(&mut self, by: &Authorization, name: &str) -> Result<(), Error> {
        require_manage_users(by)?;
        let account = self.get(name).ok_or_else(|| Error::UnknownAccount {
            name: name.to_owned(),
        })?;
        if account.role == Role::Owner && self.owners() == 1 {
            return Err(Error::LastOwner);
        }
        let key = account.name.clone();
        self.by_name.remove(&key);
        Ok(())
    }

    /// Changes a password after checking the old one. This applies no
    /// brute-force lockout: the agent puts the request behind
    /// [`crate::authn::Authenticator::reauthenticate`] or its own limit.
    pub fn change_password(
        &mut self,
        name: &str,
        old: &Password,
        new: &Password,
        policy: &PasswordPolicy,
        params: &HashParams,
    ) -> Result<(), Error> {
        let key = AccountName::parse(name).map_err(|_| Error::UnknownAccount {
            name: name.to_owned(),
        })?;
        let account = self
            .by_name
            .get_mut(&key)
            .ok_or_else(|| Error::UnknownAccount {
                name: name.to_owned(),
            })?;
        if !account.password.verify(old) {
            return Err(Error::OldPasswordIncorrect {
                name: name.to_owned(),
            });
        }
        if old.expose() == new.expose() {
            return Err(Error::WeakPassword {
                reason: "The new password must differ from the current one.".to_owned(),
            });
        }
        policy.check(new, name)?;
        account.password = PasswordHash::new(new, params)?;
        Ok(())
    }

    fn owners(&self) -> usize {
        self.list().filter(|a| a.role == Role::Owner).count()
    }

    fn insert(
        &mut self,
        name: AccountName,
        role: Role,
        password: &Password,
        policy: &PasswordPolicy,
        params: &HashParams,
        now_unix: i64,
    ) -> Result<(), Error> {
        policy.check(password, name.as_str())?;
        let account = Account {
            password: PasswordHash::new(password, params)?,
            name: name.clone(),
            role,
            created_unix: now_unix,
        };
        self.by_name.insert(name, account);
        Ok(())
    }
}

fn require_manage_users(by: &Authorization) -> Result<(), Error> {
    if by.permission() == Permission::ManageUsers {
        Ok(())
    } else {
        Err(Error::WrongAuthorization {
            needed: Permission::ManageUsers,
            got: by.permission(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FAST_HASH, Freshness, Principal, authorize};

    const NOW: i64 = 1_700_000_000;

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn manage(by: &str) -> Authorization {
        authorize(
            &Principal::for_tests(by, Role::Owner),
            Permission::ManageUsers,
            Freshness::Session,
        )
        .unwrap()
    }

    fn claimed() -> Accounts {
        let mut accounts = Accounts::default();
        accounts
            .create_first_owner(
                name("alice"),
                &pw("correct horse battery staple"),
                &PasswordPolicy::default(),
                &FAST_HASH,
                NOW,
            )
            .unwrap();
        accounts
    }

    #[test]
    fn names_are_validated() {
        let longest = "a".repeat(32);
        let too_long = "a".repeat(33);
        for ok in ["a", "alice", "0perator", "j.doe_2-x", longest.as_str()] {
            assert_eq!(AccountName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Alice",
            "-alice",
            ".a",
            "_a",
            "al ice",
            "ålice",
            too_long.as_str(),
        ] {
            assert!(
                matches!(
                    AccountName::parse(bad),
                    Err(Error::InvalidAccountName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(serde_json::from_str::<AccountName>("\"Bad Name\"").is_err());
        let n: AccountName = serde_json::from_str("\"bob\"").unwrap();
        assert_eq!(n.to_string(), "bob");
    }

    #[test]
    fn first_owner_claim_works_once() {
        let mut accounts = Accounts::default();
        assert!(accounts.is_empty());
        let policy = PasswordPolicy::default();
        // A weak password does not claim the device.
        assert!(matches!(
            accounts.create_first_owner(name("alice"), &pw("password"), &policy, &FAST_HASH, NOW),
            Err(Error::WeakPassword { .. })
        ));
        assert!(accounts.is_empty());
        let good = pw("correct horse battery staple");
        accounts
            .create_first_owner(name("alice"), &good, &policy, &FAST_HASH, NOW)
            .unwrap();
        let alice = accounts.get("alice").unwrap();
        assert_eq!(alice.role(), Role::Owner);
        assert_eq!(alice.created_unix(), NOW);
        assert!(alice.password().verify(&good));
        assert_eq!(
            accounts.create_first_owner(name("mallory"), &good, &policy, &FAST_HASH, NOW),
            Err(Error::AlreadyClaimed)
        );
        assert!(accounts.get("mallory").is_none());
        assert_eq!(accounts.list().count(), 1);
    }

    #[test]
    fn create_needs_manage_users_and_a_fresh_name() {
        let mut accounts = claimed();
        let policy = PasswordPolicy::default();
        let good = pw("another long passphrase");
        let wrong = authorize(
            &Principal::for_tests("alice", Role::Owner),
            Permission::ReadLogs,
            Freshness::Session,
        )
        .unwrap();
        assert_eq!(
            accounts.create(
                &wrong,
                name("bob"),
                Role::Viewer,
                &good,
                &policy,
                &FAST_HASH,
                NOW
            ),
            Err(Error::WrongAuthorization {
                needed: Permission::ManageUsers,
                got: Permission::ReadLogs
            })
        );
        let by = manage("alice");
        accounts
            .create(
                &by,
                name("bob"),
                Role::Operator,
                &good,
                &policy,
                &FAST_HASH,
                NOW,
            )
            .unwrap();
        assert_eq!(accounts.get("bob").unwrap().role(), Role::Operator);
        assert_eq!(
            accounts.create(
                &by,
                name("bob"),
                Role::Viewer,
                &good,
                &policy,
                &FAST_HASH,
                NOW
            ),
            Err(Error::AccountExists { name: "bob".into() })
        );
        assert_eq!(
            accounts.create(
                &by,
                name("svc"),
                Role::Service,
                &good,
                &policy,
                &FAST_HASH,
                NOW
            ),
            Err(Error::RoleNotForAccounts {
                role: Role::Service
            })
        );
        // The policy sees the account name.
        assert!(matches!(
            accounts.create(
                &by,
                name("carol"),
                Role::Viewer,
                &pw("carol-is-the-best"),
                &policy,
                &FAST_HASH,
                NOW
            ),
            Err(Error::WeakPassword { .. })
        ));
    }

    #[test]
    fn last_owner_cannot_be_deleted() {
        let mut accounts = claimed();
        let by = manage("alice");
        assert_eq!(accounts.delete(&by, "alice"), Err(Error::LastOwner));
        let policy = PasswordPolicy::default();
        let good = pw("another long passphrase");
        accounts
            .create(
                &by,
                name("bob"),
                Role::Owner,
                &good,
                &policy,
                &FAST_HASH,
                NOW,
            )
            .unwrap();
        accounts
            .create(
                &by,
                name("vic"),
                Role::Viewer,
                &good,
                &policy,
                &FAST_HASH,
                NOW,
            )
            .unwrap();
        assert_eq!(
            accounts.delete(&by, "nobody"),
            Err(Error::UnknownAccount {
                name: "nobody".into()
            })
        );
        accounts.delete(&by, "alice").unwrap();
        assert!(accounts.get("alice").is_none());
        assert_eq!(accounts.delete(&by, "bob"), Err(Error::LastOwner));
        accounts.delete(&by, "vic").unwrap();
        let read = authorize(
            &Principal::for_tests("bob", Role::Owner),
            Permission::ReadStatus,
            Freshness::Session,
        )
        .unwrap();
        assert!(matches!(
            accounts.delete(&read, "bob"),
            Err(Error::WrongAuthorization { .. })
        ));
        assert_eq!(accounts.list().count(), 1);
    }

    #[test]
    fn change_password_checks_old_and_new() {
        let mut accounts = claimed();
        let policy = PasswordPolicy::default();
        let old = pw("correct horse battery staple");
        let new = pw("a different long passphrase");
        assert_eq!(
            accounts.change_password("alice", &new, &new, &policy, &FAST_HASH),
            Err(Error::OldPasswordIncorrect {
                name: "alice".into()
            })
        );
        assert!(matches!(
            accounts.change_password("alice", &old, &old, &policy, &FAST_HASH),
            Err(Error::WeakPassword { .. })
        ));
        assert!(matches!(
            accounts.change_password("alice", &old, &pw("qwertyuiop123"), &policy, &FAST_HASH),
            Err(Error::WeakPassword { .. })
        ));
        assert!(matches!(
            accounts.change_password("Nobody!", &old, &new, &policy, &FAST_HASH),
            Err(Error::UnknownAccount { .. })
        ));
        accounts
            .change_password("alice", &old, &new, &policy, &FAST_HASH)
            .unwrap();
        let alice = accounts.get("alice").unwrap();
        assert!(alice.password().verify(&new));
        assert!(!alice.password().verify(&old));
    }

    #[test]
    fn serde_round_trip_refuses_duplicates() {
        let accounts = claimed();
        let json = serde_json::to_string(&accounts).unwrap();
        assert!(!json.contains("correct horse"));
        let back: Accounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, accounts);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let one = value["accounts"][0].clone();
        let dup = serde_json::json!({ "accounts": [one.clone(), one] });
        assert!(serde_json::from_value::<Accounts>(dup).is_err());
        let mut renamed = value["accounts"][0].clone();
        renamed["name"] = "Not Valid".into();
        let bad = serde_json::json!({ "accounts": [renamed] });
        assert!(serde_json::from_value::<Accounts>(bad).is_err());
    }
}
