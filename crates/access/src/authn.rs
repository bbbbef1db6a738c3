//! Authentication: the only place (with [`crate::session`]) that turns
//! credentials into a [`Principal`].
//!
//! People log in with a password through [`Authenticator`], which applies
//! [`Lockout`] before looking at the password and answers "invalid
//! credentials" alike for an unknown account and a wrong password, after
//! the same Argon2 work, so neither the answer nor its timing tells which
//! accounts exist. [`Authenticator::reauthenticate`] yields the
//! [`Reauthenticated`] proof that [`crate::Freshness::Reauthenticated`]
//! carries, so a destructive operation cannot be authorized on a session
//! alone. Machines are authenticated by mutual TLS; the
//! [`ServiceDirectory`] maps a verified certificate identity to the
//! permissions configuration grants it.
//!
//! ```
//! use access::authn::{ServiceDirectory, ServiceGrant};
//! use access::{Freshness, Permission, PrincipalKind, authorize};
//! let dir = ServiceDirectory::new(vec![ServiceGrant {
//!     identity: "fleet.example.net".into(),
//!     grants: vec![Permission::InstallUpdate],
//! }]);
//! let fleet = dir.principal_for("fleet.example.net").unwrap();
//! assert_eq!(fleet.kind(), PrincipalKind::Machine);
//! // Machines need no re-authentication, only the grant.
//! assert!(authorize(&fleet, Permission::InstallUpdate, Freshness::Session).is_ok());
//! assert!(authorize(&fleet, Permission::FactoryReset, Freshness::Session).is_err());
//! assert!(dir.principal_for("intruder.example.net").is_none());
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::lockout::{Lockout, LockoutPolicy, Refusal};
use crate::password::{HashParams, Password, PasswordPolicy, dummy_verify};
use crate::{Permission, Principal, PrincipalKind};

/// Why a login or re-authentication failed. Safe to show the client: it
/// never says whether the account exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown account or wrong password (deliberately indistinguishable).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many recent failures for this account or source.
    #[error("too many failed attempts; retry in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until an attempt is accepted.
        retry_after: Duration,
    },
    /// Locked after too many failures for this account or source.
    #[error("temporarily locked; retry in {} s", retry_after.as_secs().max(1))]
    Locked {
        /// How long until the lock lifts.
        retry_after: Duration,
    },
    /// Machines authenticate by certificate and have no password to
    /// re-enter; their grants suffice.
    #[error("machine principals do not re-authenticate")]
    MachineCannotReauthenticate,
}

impl From<Refusal> for AuthError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Locked { retry_after } => Self::Locked { retry_after },
            Refusal::Throttled { retry_after } => Self::Throttled { retry_after },
        }
    }
}

/// Proof that a person re-entered their password for the operation at
/// hand. Only [`Authenticator::reauthenticate`] creates it; it is neither
/// `Clone` nor serializable, so it lives for one request and is passed as
/// [`crate::Freshness::Reauthenticated`].
#[derive(Debug, PartialEq, Eq)]
pub struct Reauthenticated {
    principal: String,
}

impl Reauthenticated {
    /// Whose password was checked.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// **Test support only** (feature `test-support`): a proof without a
    /// password check.
    #[cfg(any(test, feature = "test-support"))]
    pub fn for_tests(principal: &Principal) -> Self {
        Self {
            principal: principal.id().to_owned(),
        }
    }
}

/// Password authentication with brute-force lockout.
#[derive(Debug)]
pub struct Authenticator {
    policy: PasswordPolicy,
    params: HashParams,
    lockout: Lockout,
}

impl Authenticator {
    /// An authenticator with fresh lockout counters. `policy` and `params`
    /// are kept for the agent's account operations and for the dummy
    /// verification of unknown accounts.
    pub fn new(policy: PasswordPolicy, params: HashParams, lockout: LockoutPolicy) -> Self {
        Self {
            policy,
            params,
            lockout: Lockout::new(lockout),
        }
    }

    /// The password policy for new passwords.
    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// The hashing parameters for new hashes.
    pub fn hash_params(&self) -> &HashParams {
        &self.params
    }

    /// The lockout counters (e.g. for metrics).
    pub fn lockout(&self) -> &Lockout {
        &self.lockout
    }

    /// Logs a person in. Lockout is checked first (so during a lock even
    /// the right password is refused), then the password; the outcome is
    /// recorded against both `name` and `source`.
    pub fn authenticate_password(
        &self,
        accounts: &Accounts,
        name: &str,
        password: &Password,
        source: IpAddr,
        now: Instant,
    ) -> Result<Principal, AuthError> {
        self.verify(accounts, name, password, source, now)
            .map(|role| Principal::verified_person(name, role))
    }

    /// Checks that the person behind `principal` (typically from a session)
    /// still knows the password, under the same lockout as a login.
    pub fn reauthenticate(
        &self,
        accounts: &Accounts,
        principal: &Principal,
        password: &Password,
        source: IpAddr,
        now: Instant,
    ) -> Result<Reauthenticated, AuthError> {
        if principal.kind() != PrincipalKind::Person {
            return Err(AuthError::MachineCannotReauthenticate);
        }
        self.verify(accounts, principal.id(), password, source, now)?;
        Ok(Reauthenticated {
            principal: principal.id().to_owned(),
        })
    }

    fn verify(
        &self,
        accounts: &Accounts,
        name: &str,
        password: &Password,
        source: IpAddr,
        now: Instant,
    ) -> Result<crate::Role, AuthError> {
        self.lockout.check(name, source, now)?;
        let role = match accounts.get(name) {
            Some(account) if account.password().verify(password) => Some(account.role()),
            Some(_) => None,
            None => {
                // Same work as a wrong password, so timing does not reveal
                // which accounts exist.
                dummy_verify(password, &self.params);
                None
            }
        };
        match role {
            Some(role) => {
                self.lockout.record_success(name, source);
                Ok(role)
            }
            None => {
                self.lockout.record_failure(name, source, now);
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}

/// One machine client and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGrant {
    /// The subject common name of its client certificate.
    pub identity: String,
    /// The permissions it holds beyond reading status.
    pub grants: Vec<Permission>,
}

/// Machine clients authenticated by mutual TLS, from configuration.
#[derive(Debug, Clone, Default)]
pub struct ServiceDirectory {
    by_identity: HashMap<String, Vec<Permission>>,
}

impl ServiceDirectory {
    /// A directory of `grants`. Entries naming the same identity are
    /// merged (the union of their grants); entries with an empty identity
    /// are ignored, so a certificate without a common name matches none.
    pub fn new(grants: Vec<ServiceGrant>) -> Self {
        let mut by_identity: HashMap<String, Vec<Permission>> = HashMap::new();
        for grant in grants.into_iter().filter(|g| !g.identity.is_empty()) {
            let held = by_identity.entry(grant.identity).or_default();
            for permission in grant.grants {
                if !held.contains(&permission) {
                    held.push(permission);
                }
            }
        }
        Self { by_identity }
    }

    /// The principal for a client whose certificate chain the TLS layer
    /// has verified, by its subject common name (exact match); `None` for
    /// an identity the configuration does not know.
    pub fn principal_for(&self, verified_common_name: &str) -> Option<Principal> {
        let grants = self.by_identity.get(verified_common_name)?;
        Some(Principal::verified_machine(
            verified_common_name,
            grants.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::accounts::AccountName;
    use crate::{Error, FAST_HASH, Freshness, Role, authorize};

    const GOOD: &str = "correct horse battery staple";

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn setup() -> (Authenticator, Accounts) {
        let mut accounts = Accounts::default();
        accounts
            .create_first_owner(
                AccountName::parse("alice").unwrap(),
                &pw(GOOD),
                &PasswordPolicy::default(),
                &FAST_HASH,
                0,
            )
            .unwrap();
        let authn = Authenticator::new(
            PasswordPolicy::default(),
            FAST_HASH,
            LockoutPolicy::default(),
        );
        (authn, accounts)
    }

    #[test]
    fn right_password_yields_a_person() {
        let (authn, accounts) = setup();
        let p = authn
            .authenticate_password(&accounts, "alice", &pw(GOOD), ip(1), Instant::now())
            .unwrap();
        assert_eq!(p.id(), "alice");
        assert_eq!(p.role(), Role::Owner);
        assert_eq!(p.kind(), PrincipalKind::Person);
        assert!(p.grants().is_empty());
    }

    #[test]
    fn unknown_account_and_wrong_password_look_the_same() {
        let (authn, accounts) = setup();
        let now = Instant::now();
        let wrong = authn.authenticate_password(&accounts, "alice", &pw("nope"), ip(1), now);
        let unknown = authn.authenticate_password(&accounts, "zed", &pw(GOOD), ip(2), now);
        let invalid = authn.authenticate_password(&accounts, "NOT VALID", &pw(GOOD), ip(3), now);
        assert_eq!(wrong, Err(AuthError::InvalidCredentials));
        assert_eq!(unknown, Err(AuthError::InvalidCredentials));
        assert_eq!(invalid, Err(AuthError::InvalidCredentials));
        // Unknown accounts are counted too, so probing them is throttled.
        assert_eq!(authn.lockout().tracked(), (3, 3));
    }

    #[test]
    fn locked_account_refuses_the_right_password_until_the_lock_lifts() {
        let (authn, accounts) = setup();
        let t0 = Instant::now();
        let mut now = t0;
        // Guesses from many sources, waiting out each throttle delay.
        for n in 0..10u8 {
            let r = authn.authenticate_password(&accounts, "alice", &pw("guess"), ip(n), now);
            assert_eq!(r, Err(AuthError::InvalidCredentials), "guess {n}");
            now += authn.lockout().policy().delay_after(u32::from(n) + 1);
        }
        let locked_at = now;
        let r = authn.authenticate_password(&accounts, "alice", &pw(GOOD), ip(200), now);
        assert!(matches!(r, Err(AuthError::Locked { .. })), "{r:?}");
        let proof = authn.reauthenticate(
            &accounts,
            &Principal::for_tests("alice", Role::Owner),
            &pw(GOOD),
            ip(201),
            now,
        );
        assert!(matches!(proof, Err(AuthError::Locked { .. })));
        let lifted = locked_at + Duration::from_secs(15 * 60);
        authn
            .authenticate_password(&accounts, "alice", &pw(GOOD), ip(200), lifted)
            .unwrap();
    }

    #[test]
    fn throttled_attempts_are_refused_before_the_password_is_checked() {
        let (authn, accounts) = setup();
        let now = Instant::now();
        for _ in 0..3 {
            let _ = authn.authenticate_password(&accounts, "alice", &pw("x"), ip(1), now);
        }
        assert_eq!(
            authn.authenticate_password(&accounts, "alice", &pw(GOOD), ip(1), now),
            Err(AuthError::Throttled {
                retry_after: Duration::from_secs(1)
            })
        );
        let later = now + Duration::from_secs(1);
        authn
            .authenticate_password(&accounts, "alice", &pw(GOOD), ip(1), later)
            .unwrap();
        // Success cleared the account's counter; the source's fades.
        assert_eq!(authn.lockout().tracked(), (0, 1));
    }

    #[test]
    fn reauthentication_proof_unlocks_destructive_permissions() {
        let (authn, accounts) = setup();
        let now = Instant::now();
        let owner = authn
            .authenticate_password(&accounts, "alice", &pw(GOOD), ip(1), now)
            .unwrap();
        assert!(matches!(
            authorize(&owner, Permission::FactoryReset, Freshness::Session),
            Err(Error::ReauthenticationRequired { .. })
        ));
        assert_eq!(
            authn
                .reauthenticate(&accounts, &owner, &pw("wrong"), ip(1), now)
                .unwrap_err(),
            AuthError::InvalidCredentials
        );
        let proof = authn
            .reauthenticate(&accounts, &owner, &pw(GOOD), ip(1), now)
            .unwrap();
        assert_eq!(proof.principal(), "alice");
        let auth = authorize(
            &owner,
            Permission::FactoryReset,
            Freshness::Reauthenticated(&proof),
        )
        .unwrap();
        assert_eq!(auth.permission(), Permission::FactoryReset);
        let machine = Principal::machine_for_tests("alice", vec![]);
        assert_eq!(
            authn
                .reauthenticate(&accounts, &machine, &pw(GOOD), ip(1), now)
                .unwrap_err(),
            AuthError::MachineCannotReauthenticate
        );
    }

    #[test]
    fn service_directory_knows_only_configured_identities() {
        let grants: Vec<ServiceGrant> = serde_json::from_str(
            r#"[{"identity":"gw-01","grants":["read-logs"]},
                {"identity":"gw-01","grants":["install-update","read-logs"]},
                {"identity":"","grants":["factory-reset"]}]"#,
        )
        .unwrap();
        let dir = ServiceDirectory::new(grants);
        let gw = dir.principal_for("gw-01").unwrap();
        assert_eq!(gw.role(), Role::Service);
        assert_eq!(gw.kind(), PrincipalKind::Machine);
        assert_eq!(
            gw.grants(),
            [Permission::ReadLogs, Permission::InstallUpdate]
        );
        assert!(dir.principal_for("GW-01").is_none());
        assert!(dir.principal_for("").is_none());
        assert!(
            serde_json::from_str::<ServiceGrant>(r#"{"identity":"x","grants":[],"role":"owner"}"#)
                .is_err()
        );
    }
}
