//! Access control: roles, the permission matrix, and [`Authorization`],
//! the proof value that destructive operations take.
//!
//! Clauses 5.2.3.1.2 and 5.2.4.1.2 require that only authorized entities
//! reset a device or remove user data. Rather than trusting every caller
//! to check, the storage layer's destructive functions take an
//! [`Authorization`], which only [`authorize`] can create and only after
//! the permission matrix allows it. Skipping the check is then a compile
//! error, not a code-review finding.
//!
//! ```
//! use access::{Permission, Principal, Role, Freshness, authorize};
//! let owner = Principal::verified_person("alice", Role::Owner);
//! let proof = authorize(&owner, Permission::RemoveUserData, Freshness::Reauthenticated).unwrap();
//! assert_eq!(proof.principal(), "alice");
//! let viewer = Principal::verified_person("bob", Role::Viewer);
//! assert!(authorize(&viewer, Permission::RemoveUserData, Freshness::Reauthenticated).is_err());
//! ```
//!
//! Design decisions:
//! - The matrix is code, not configuration: a device maker cannot ship a
//!   weaker one by accident. docs/security-model.md renders it.
//! - Destructive permissions need a person who re-entered their password
//!   ([`Freshness::Reauthenticated`]) or a service explicitly granted the
//!   permission; a role alone is not enough.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Authenticated by a session token.
    Session,
    /// Re-entered the password for this operation.
    Reauthenticated,
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
    /// A person whose password or token the caller has verified.
    pub fn verified_person(id: impl Into<String>, role: Role) -> Self {
        Self {
            id: id.into(),
            kind: PrincipalKind::Person,
            role,
            grants: Vec::new(),
        }
    }

    /// A machine whose certificate the caller has verified, with the
    /// permissions its configuration grants it explicitly.
    pub fn verified_machine(id: impl Into<String>, grants: Vec<Permission>) -> Self {
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

/// Applies the permission matrix and the freshness rule.
pub fn authorize(
    principal: &Principal,
    permission: Permission,
    freshness: Freshness,
) -> Result<Authorization, Error> {
    let granted = principal.grants.contains(&permission);
    if !granted && !role_allows(principal.role, permission) {
        return Err(Error::NotPermitted {
            principal: principal.id.clone(),
            role: principal.role,
            permission,
        });
    }
    if permission.is_destructive()
        && principal.kind == PrincipalKind::Person
        && freshness != Freshness::Reauthenticated
    {
        return Err(Error::ReauthenticationRequired {
            principal: principal.id.clone(),
            permission,
        });
    }
    Ok(Authorization {
        principal: principal.id.clone(),
        permission,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_or_granted_service_may_destroy() {
        for perm in Permission::ALL.into_iter().filter(|p| p.is_destructive()) {
            for role in [Role::Operator, Role::Viewer] {
                let p = Principal::verified_person("u", role);
                assert!(
                    authorize(&p, perm, Freshness::Reauthenticated).is_err(),
                    "{role:?} {perm:?}"
                );
            }
            let owner = Principal::verified_person("o", Role::Owner);
            assert!(matches!(
                authorize(&owner, perm, Freshness::Session),
                Err(Error::ReauthenticationRequired { .. })
            ));
            assert!(authorize(&owner, perm, Freshness::Reauthenticated).is_ok());
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
