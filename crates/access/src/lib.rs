//! Access control for the device: who someone is (authentication, sessions,
//! brute-force lockout) and what they may do (roles, the permission matrix,
//! and [`Authorization`], the proof value that destructive operations take).
//!
//! Clauses 5.2.3.1.2 and 5.2.4.1.2 require that only authorized entities
//! reset a device or remove user data. Rather than trusting every caller
//! to check, the storage layer's destructive functions take an
//! [`Authorization`], which only [`authorize`] can create and only after
//! the permission matrix allows it. Skipping the check is then a compile
//! error, not a code-review finding. The same holds one step earlier: a
//! [`Principal`] can only come out of the authentication layer
//! ([`authn::Authenticator`] for passwords, [`session::Sessions`] for
//! tokens, [`authn::ServiceDirectory`] for mutual-TLS machines), and the
//! [`Freshness::Reauthenticated`] that destructive operations need holds a
//! [`authn::Reauthenticated`] proof only a fresh password check yields.
//!
//! Modules, bottom up: [`password`] (policy and Argon2id hashes),
//! [`accounts`] (person accounts and the first-owner claim), [`lockout`]
//! (throttling and locking per account and per source), [`authn`]
//! (password login, re-authentication, machine identities) and
//! [`session`] (channel-bound session tokens).
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Instant;
//! use access::accounts::{AccountName, Accounts};
//! use access::authn::Authenticator;
//! use access::lockout::LockoutPolicy;
//! use access::password::{HashParams, Password, PasswordPolicy};
//! use access::{Error, Freshness, Permission, authorize};
//!
//! let params = HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
//! let policy = PasswordPolicy::default();
//! let pw = Password::new("correct horse battery staple".into());
//! let mut accounts = Accounts::default();
//! let alice = AccountName::parse("alice").unwrap();
//! accounts.create_first_owner(alice, &pw, &policy, &params, 0).unwrap();
//!
//! let authn = Authenticator::new(policy, params, LockoutPolicy::default());
//! let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let owner = authn.authenticate_password(&accounts, "alice", &pw, ip, Instant::now()).unwrap();
//! // A session is enough to read, not to remove user data...
//! assert!(authorize(&owner, Permission::ReadLogs, Freshness::Session).is_ok());
//! assert!(matches!(
//!     authorize(&owner, Permission::RemoveUserData, Freshness::Session),
//!     Err(Error::ReauthenticationRequired { .. })
//! ));
//! // ...which needs the password entered again.
//! let proof = authn.reauthenticate(&accounts, &owner, &pw, ip, Instant::now()).unwrap();
//! let granted = authorize(&owner, Permission::RemoveUserData, Freshness::Reauthenticated(&proof));
//! assert_eq!(granted.unwrap().principal(), "alice");
//! ```
//!
//! Design decisions:
//! - The matrix is code, not configuration: a device maker cannot ship a
//!   weaker one by accident. docs/security-model.md renders it.
//! - Destructive permissions need a person who re-entered their password
//!   ([`Freshness::Reauthenticated`], which carries the proof) or a service
//!   explicitly granted the permission; a role alone is not enough.
//! - Time is passed in as [`std::time::Instant`] (and Unix seconds for
//!   records), never read inside, so expiry and lockout are testable with
//!   synthetic instants.
//! - Tests of other crates build principals with the `test-support`
//!   feature (`Principal::for_tests`, `Principal::machine_for_tests`,
//!   `Reauthenticated::for_tests`); production code cannot.
//! - The main types are re-exported here, so `access::Password` and
//!   `access::password::Password` name the same type.

pub mod accounts;
pub mod authn;
pub mod lockout;
pub mod password;
pub mod session;

pub use accounts::{Account, AccountName, Accounts};
pub use authn::{AuthError, Authenticator, Reauthenticated, ServiceDirectory, ServiceGrant};
pub use lockout::{Lockout, LockoutPolicy, Refusal};
pub use password::{HashParams, Password, PasswordHash, PasswordPolicy, dummy_verify};
pub use session::{ChannelBinding, SessionError, SessionPolicy, SessionToken, Sessions};

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role a principal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The device's owner: everything, destructive operations included.
    Owner,
    /// Day-to-day operation: configuration and logs, nothing destructive.
    Operator,
    /// Read-only.
    Viewer,
    /// A machine client (gateway, fleet service): only what it is granted.
    Service,
}

/// Something a principal may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Read device status and identity.
    ReadStatus,
    /// Read configuration.
    ReadConfig,
    /// Change configuration.
    ChangeConfig,
    /// Read the event log.
    ReadLogs,
    /// Create and remove accounts.
    ManageUsers,
    /// Remove user data (clause 5.2.4).
    RemoveUserData,
    /// Factory reset (clause 5.2.3).
    FactoryReset,
    /// Install a software update (clause 5.2.7).
    InstallUpdate,
    /// Enable or disable interfaces.
    ManageInterfaces,
}

impl Permission {
    /// Every permission, for rendering the matrix.
    pub const ALL: [Permission; 9] = [
        Self::ReadStatus,
        Self::ReadConfig,
        Self::ChangeConfig,
        Self::ReadLogs,
        Self::ManageUsers,
        Self::RemoveUserData,
        Self::FactoryReset,
        Self::InstallUpdate,
        Self::ManageInterfaces,
    ];

    /// Destructive operations need re-authentication or an explicit grant.
    pub fn is_destructive(self) -> bool {
        matches!(
            self,
            Self::RemoveUserData
                | Self::FactoryReset
                | Self::InstallUpdate
                | Self::ManageInterfaces
        )
    }
}

/// Whether `role` may exercise `permission` (before the freshness rule).
pub fn role_allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Owner => true,
        Role::Operator => matches!(
            permission,
            ReadStatus | ReadConfig | ChangeConfig | ReadLogs
        ),
        Role::Viewer => matches!(permission, ReadStatus | ReadConfig),
        // Services get nothing by role: only explicit grants.
        Role::Service => matches!(permission, ReadStatus),
    }
}

/// How recently a person proved who they are.
#[derive(Debug, Clone, Copy)]
pub enum Freshness<'a> {
    /// Authenticated by a session token (or, for machines, by mutual TLS).
    Session,
    /// Re-entered the password for this operation; only
    /// [`authn::Authenticator::reauthenticate`] yields the proof.
    Reauthenticated(&'a authn::Reauthenticated),
}

/// Whether a principal is a person or a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A person with an account and a password.
    Person,
    /// A machine authenticated by mutual TLS.
    Machine,
}

/// An authenticated entity. Constructed by the authentication layer once
/// credentials have been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: String,
    kind: PrincipalKind,
    role: Role,
    grants: Vec<Permission>,
}

impl Principal {
    /// A person whose password or token the caller has verified. Only the
    /// authentication layer of this crate calls it.
    pub(crate) fn verified_person(id: impl Into<String>, role: Role) -> Self {
        Self {
            id: id.into(),
            kind: PrincipalKind::Person,
            role,
            grants: Vec::new(),
        }
    }

    /// A machine whose certificate the caller has verified, with the
    /// permissions its configuration grants it explicitly.
    pub(crate) fn verified_machine(id: impl Into<String>, grants: Vec<Permission>) -> Self {
        Self {
            id: id.into(),
            kind: PrincipalKind::Machine,
            role: Role::Service,
            grants,
        }
    }

    /// The principal's identifier (account name or certificate identity).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether it is a person or a machine.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// Permissions granted explicitly (machines only; empty for persons).
    pub fn grants(&self) -> &[Permission] {
        &self.grants
    }

    /// **Test support only** (feature `test-support`): a person principal
    /// without any authentication. Never enable the feature outside
    /// `[dev-dependencies]`.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_tests(id: impl Into<String>, role: Role) -> Self {
        Self::verified_person(id, role)
    }

    /// **Test support only** (feature `test-support`): a machine principal
    /// with `grants`, without any certificate.
    #[cfg(any(test, feature = "test-support"))]
    pub fn machine_for_tests(id: impl Into<String>, grants: Vec<Permission>) -> Self {
        Self::verified_machine(id, grants)
    }
}

/// Why an authorization was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The role does not include the permission and nothing grants it.
    #[error("{principal} ({role:?}) is not allowed to {permission:?}")]
    NotPermitted {
        /// Who asked.
        principal: String,
        /// Their role.
        role: Role,
        /// What they asked for.
        permission: Permission,
    },
    /// A destructive operation needs the password entered again.
    #[error("{permission:?} needs {principal} to re-enter their password")]
    ReauthenticationRequired {
        /// Who asked.
        principal: String,
        /// What they asked for.
        permission: Permission,
    },
    /// The re-authentication proof belongs to someone else.
    #[error("{principal} presented a re-authentication proof of {proven}")]
    ReauthenticationOfAnotherPrincipal {
        /// Who asked.
        principal: String,
        /// Whom the proof is for.
        proven: String,
    },
    /// An authorization for one permission was offered for another.
    #[error("this needs an authorization for {needed:?}, not {got:?}")]
    WrongAuthorization {
        /// What the operation needs.
        needed: Permission,
        /// What was offered.
        got: Permission,
    },
    /// The password does not meet the policy. The reason is a sentence
    /// for the person choosing it and never contains the password.
    #[error("weak password: {reason}")]
    WeakPassword {
        /// Which rule it broke.
        reason: String,
    },
    /// Argon2 refused the configured cost parameters.
    #[error("invalid password hashing parameters: {reason}")]
    InvalidHashParams {
        /// What Argon2 said.
        reason: String,
    },
    /// Hashing a password failed (e.g. no random salt available).
    #[error("password hashing failed: {reason}")]
    HashingFailed {
        /// What failed.
        reason: String,
    },
    /// A stored password hash is not a well-formed Argon2id PHC string.
    #[error("invalid stored password hash: {reason}")]
    InvalidPasswordHash {
        /// What is wrong with it.
        reason: String,
    },
    /// An account name breaks the naming rule. The name itself is left
    /// out: it may be a password typed into the wrong field.
    #[error("invalid account name: {reason}")]
    InvalidAccountName {
        /// Which rule it broke.
        reason: String,
    },
    /// The device already has an account, so it cannot be claimed again.
    #[error("the device has already been claimed")]
    AlreadyClaimed,
    /// An account with this name exists.
    #[error("account {name} already exists")]
    AccountExists {
        /// The name.
        name: String,
    },
    /// No account has this name.
    #[error("no account named {name}")]
    UnknownAccount {
        /// The name asked for.
        name: String,
    },
    /// Deleting this account would leave the device without an owner.
    /// (The caller named the account, so the variant does not repeat it.)
    #[error("the last owner cannot be deleted")]
    LastOwner,
    /// The current password given to change a password was wrong.
    #[error("the current password of {name} is incorrect")]
    OldPasswordIncorrect {
        /// The account.
        name: String,
    },
    /// Person accounts cannot hold this role (services use certificates).
    #[error("accounts cannot have the {role:?} role")]
    RoleNotForAccounts {
        /// The role asked for.
        role: Role,
    },
}

/// Proof that the access-control layer allowed `principal` to exercise
/// one permission. Only [`authorize`] creates it.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    principal: String,
    permission: Permission,
}

impl Authorization {
    /// Who was authorized (for receipts and the event log).
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// What they were authorized to do.
    pub fn permission(&self) -> Permission {
        self.permission
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Authorization({} may {:?})",
            self.principal, self.permission
        )
    }
}

/// Applies the permission matrix and the freshness rule: a person needs
/// [`Freshness::Reauthenticated`] with their own proof for destructive
/// permissions; a machine needs an explicit grant and no re-authentication.
pub fn authorize(
    principal: &Principal,
    permission: Permission,
    freshness: Freshness<'_>,
) -> Result<Authorization, Error> {
    let granted = principal.grants.contains(&permission);
    if !granted && !role_allows(principal.role, permission) {
        return Err(Error::NotPermitted {
            principal: principal.id.clone(),
            role: principal.role,
            permission,
        });
    }
    if permission.is_destructive() && principal.kind == PrincipalKind::Person {
        match freshness {
            Freshness::Session => {
                return Err(Error::ReauthenticationRequired {
                    principal: principal.id.clone(),
                    permission,
                });
            }
            Freshness::Reauthenticated(proof) if proof.principal() != principal.id => {
                return Err(Error::ReauthenticationOfAnotherPrincipal {
                    principal: principal.id.clone(),
                    proven: proof.principal().to_owned(),
                });
            }
            Freshness::Reauthenticated(_) => {}
        }
    }
    Ok(Authorization {
        principal: principal.id.clone(),
        permission,
    })
}

/// Cheap Argon2id parameters for tests in this crate.
#[cfg(test)]
pub(crate) const FAST_HASH: password::HashParams = password::HashParams {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

#[cfg(test)]
mod tests {
    use super::*;
    use authn::Reauthenticated;

    #[test]
    fn only_owner_or_granted_service_may_destroy() {
        for perm in Permission::ALL.into_iter().filter(|p| p.is_destructive()) {
            for role in [Role::Operator, Role::Viewer] {
                let p = Principal::verified_person("u", role);
                let proof = Reauthenticated::for_tests(&p);
                assert!(
                    authorize(&p, perm, Freshness::Reauthenticated(&proof)).is_err(),
                    "{role:?} {perm:?}"
                );
            }
            let owner = Principal::verified_person("o", Role::Owner);
            assert!(matches!(
                authorize(&owner, perm, Freshness::Session),
                Err(Error::ReauthenticationRequired { .. })
            ));
            let proof = Reauthenticated::for_tests(&owner);
            assert!(authorize(&owner, perm, Freshness::Reauthenticated(&proof)).is_ok());
            let other = Principal::verified_person("o2", Role::Owner);
            let foreign = Reauthenticated::for_tests(&other);
            assert!(matches!(
                authorize(&owner, perm, Freshness::Reauthenticated(&foreign)),
                Err(Error::ReauthenticationOfAnotherPrincipal { .. })
            ));
            let bare = Principal::verified_machine("gw", vec![]);
            assert!(authorize(&bare, perm, Freshness::Session).is_err());
            let granted = Principal::verified_machine("fleet", vec![perm]);
            assert_eq!(
                authorize(&granted, perm, Freshness::Session)
                    .unwrap()
                    .permission(),
                perm
            );
        }
    }

    #[test]
    fn operators_configure_and_viewers_read() {
        let op = Principal::verified_person("op", Role::Operator);
        assert!(authorize(&op, Permission::ChangeConfig, Freshness::Session).is_ok());
        let viewer = Principal::verified_person("v", Role::Viewer);
        assert!(authorize(&viewer, Permission::ChangeConfig, Freshness::Session).is_err());
        assert!(authorize(&viewer, Permission::ReadConfig, Freshness::Session).is_ok());
    }
}
