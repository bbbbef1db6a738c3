//! The agent's shared state and the operations several routes use:
//! persisting accounts and settings in the encrypted store, recording
//! events, and raising notifications.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use access::{Accounts, Authenticator, Lockout, ServiceDirectory, Sessions};
use agent_config::{AgentFile, DeviceSettings, TrustedSigners, Versioned};
use governor::DefaultKeyedRateLimiter;
use identity::provision::DeviceIdentity;
use notify::{Kind, Notifier, Severity as NoteSeverity};
use serde::{Deserialize, Serialize};
use store::Category;
use store::eventlog::{Event, EventLog, Outcome, Severity};

use crate::error::ApiError;
use crate::guard::Connection;
use crate::interfaces::Interfaces;

/// Store record names.
pub(crate) const ACCOUNTS: &str = "agent.accounts";
pub(crate) const SETTINGS: &str = "agent.settings";
/// Security-floor name of the last applied configuration bundle sequence:
/// it only rises, so an old bundle cannot be replayed, not even after a
/// factory reset.
pub(crate) const BUNDLE_SEQUENCE: &str = "agent.config-bundle.sequence";

/// The settings as persisted: a version and the settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredSettings {
    pub(crate) version: u64,
    pub(crate) settings: DeviceSettings,
}

/// Everything the routes share.
pub struct Shared {
    pub(crate) file: AgentFile,
    pub(crate) identity: DeviceIdentity,
    pub(crate) store: Arc<store::Store>,
    pub(crate) events: Arc<EventLog>,
    pub(crate) notifier: Notifier,
    pub(crate) authenticator: Authenticator,
    /// Failed setup-secret claims, per source (the secret is the only
    /// credential of an unclaimed device).
    pub(crate) claim_lockout: Lockout,
    pub(crate) sessions: Sessions,
    pub(crate) session_policy: access::SessionPolicy,
    pub(crate) hash_params: access::HashParams,
    pub(crate) services: ServiceDirectory,
    pub(crate) accounts: RwLock<Accounts>,
    pub(crate) settings: RwLock<Versioned>,
    pub(crate) signers: TrustedSigners,
    pub(crate) interfaces: Interfaces,
    pub(crate) rate: DefaultKeyedRateLimiter<IpAddr>,
    pub(crate) started: Instant,
    pub(crate) openapi_json: OnceLock<Arc<String>>,
    pub(crate) hubs: Vec<notify::HubHandle>,
    /// The update engine, when the boot file has `[update]`.
    pub(crate) updates: Option<Arc<crate::updates::Updates>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("serial", &self.identity.record.serial)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Appends an event; a failure to log is itself an internal error.
    pub(crate) fn record(&self, event: Event) -> Result<(), ApiError> {
        self.events
            .append(event)
            .map(|_| ())
            .map_err(|e| ApiError::internal("event log", e))
    }

    /// Appends an event where failing the request would help nobody (a
    /// refusal is already being returned); the failure is logged.
    pub(crate) fn record_quietly(&self, event: Event) {
        if let Err(e) = self.events.append(event) {
            tracing::error!(error = %e, "could not append to the event log");
        }
    }

    /// Raises a notification (5.2.8).
    pub(crate) fn notify(
        &self,
        kind: Kind,
        severity: NoteSeverity,
        title: &str,
        detail: serde_json::Value,
    ) {
        self.notifier.notify(kind, severity, title, detail);
    }

    /// A client certificate that chains to a service anchor but names no
    /// configured service (5.2.6.2 c): refused and logged.
    pub(crate) fn unknown_client(&self, identity: &str, connection: &Connection) {
        tracing::warn!(%identity, peer = %connection.peer, "unknown client identity refused");
        self.record_quietly(Event {
            source: Some(connection.peer.to_string()),
            ..Event::system(
                Severity::Warning,
                "client.unknown",
                Outcome::Denied,
                &format!("certificate identity {identity:?} is not a configured service"),
            )
        });
    }

    /// Changes the accounts in one step: `change` works on a copy, which
    /// is persisted and only then becomes current, so a refused change or
    /// a failed save changes nothing. Runs off the async threads, because
    /// changes that set a password hash it (argon2id, tens of ms).
    pub(crate) async fn change_accounts<F>(self: &Arc<Self>, change: F) -> Result<(), ApiError>
    where
        F: FnOnce(&mut Accounts) -> Result<(), ApiError> + Send + 'static,
    {
        let worker = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut accounts = worker
                .accounts
                .write()
                .map_err(|_| ApiError::internal("accounts", "lock"))?;
            let mut updated = accounts.clone();
            change(&mut updated)?;
            worker.save_accounts(&updated)?;
            *accounts = updated;
            Ok(())
        })
        .await
        .map_err(|e| ApiError::internal("accounts", e))?
    }

    /// Persists the accounts (encrypted, as security parameters).
    fn save_accounts(&self, accounts: &Accounts) -> Result<(), ApiError> {
        let bytes = serde_json::to_vec(accounts).map_err(|e| ApiError::internal("accounts", e))?;
        self.store
            .put(Category::SecurityParameters, ACCOUNTS, &bytes)
            .map_err(|e| ApiError::internal("saving accounts", e))
    }

    /// Persists the settings.
    pub(crate) fn save_settings(&self, versioned: &Versioned) -> Result<(), ApiError> {
        let stored = StoredSettings {
            version: versioned.version,
            settings: versioned.settings.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| ApiError::internal("settings", e))?;
        self.store
            .put(Category::Configuration, SETTINGS, &bytes)
            .map_err(|e| ApiError::internal("saving settings", e))
    }

    /// Whether the agent runs in fail-safe mode (the running slot failed
    /// its start-up integrity check).
    pub(crate) fn fail_safe(&self) -> bool {
        self.integrity_failure().is_some()
    }

    /// The start-up integrity finding, in fail-safe mode.
    pub(crate) fn integrity_failure(&self) -> Option<String> {
        self.updates.as_ref().and_then(|u| u.fail_safe())
    }

    /// Whether the device has been claimed (has any account).
    pub(crate) fn is_claimed(&self) -> bool {
        self.accounts.read().map(|a| !a.is_empty()).unwrap_or(true)
    }
}

/// Loads the accounts from the store (empty on a new or reset device).
pub(crate) fn load_accounts(store: &store::Store) -> anyhow::Result<Accounts> {
    match store.get(Category::SecurityParameters, ACCOUNTS)? {
        Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
        None => Ok(Accounts::default()),
    }
}

/// Loads the settings (secure defaults, version 1, on a new device).
pub(crate) fn load_settings(store: &store::Store) -> anyhow::Result<Versioned> {
    match store.get(Category::Configuration, SETTINGS)? {
        Some(bytes) => {
            let stored: StoredSettings = serde_json::from_slice(&bytes)?;
            Ok(Versioned {
                version: stored.version,
                settings: stored.settings,
            })
        }
        None => Ok(Versioned {
            version: 1,
            settings: DeviceSettings::default(),
        }),
    }
}

impl Shared {
    /// The password policy the current settings ask for.
    pub(crate) fn password_policy(&self) -> access::PasswordPolicy {
        let min = self
            .settings
            .read()
            .map(|s| s.settings.auth.min_password_length as usize)
            .unwrap_or(12);
        access::PasswordPolicy {
            min_length: min,
            ..access::PasswordPolicy::default()
        }
    }

    /// How long an unused session lives.
    pub(crate) fn session_idle(&self) -> std::time::Duration {
        self.session_policy.idle
    }

    /// Checks a person's re-entered password (under the login lockout).
    pub(crate) async fn reauthenticate(
        self: &Arc<Self>,
        caller: &crate::guard::Caller,
        password: Option<access::Password>,
    ) -> Result<access::Reauthenticated, ApiError> {
        let password = password.ok_or_else(|| {
            ApiError::Forbidden("re-enter your password (current_password) for this".into())
        })?;
        let worker = self.clone();
        let principal = caller.principal.clone();
        let source = caller.connection.peer.ip();
        let result = tokio::task::spawn_blocking(move || {
            let accounts = worker
                .accounts
                .read()
                .map_err(|_| access::AuthError::InvalidCredentials)?;
            worker.authenticator.reauthenticate(
                &accounts,
                &principal,
                &password,
                source,
                Instant::now(),
            )
        })
        .await
        .map_err(|e| ApiError::internal("re-authentication", e))?;
        result.map_err(|e| {
            self.record_quietly(Event {
                source: Some(caller.source()),
                ..Event::system(
                    Severity::Warning,
                    "reauthenticate",
                    Outcome::Denied,
                    &format!("password re-entry refused: {e}"),
                )
            });
            crate::api::session::auth_error(e)
        })
    }

    /// Authorizes a destructive operation: machines by their grants,
    /// people by role and a password re-entered now.
    pub(crate) async fn authorize_destructive(
        self: &Arc<Self>,
        caller: &crate::guard::Caller,
        permission: access::Permission,
        password: Option<access::Password>,
    ) -> Result<access::Authorization, ApiError> {
        let denied = |e: access::Error| ApiError::Forbidden(e.to_string());
        if caller.principal.kind() == access::PrincipalKind::Machine {
            return access::authorize(&caller.principal, permission, access::Freshness::Session)
                .map_err(denied);
        }
        // Role first: a viewer learns nothing by guessing passwords here.
        if !access::role_allows(caller.principal.role(), permission) {
            return Err(ApiError::Forbidden(format!(
                "{} may not {}",
                caller.principal.id(),
                crate::guard::permission_name(permission)
            )));
        }
        let proof = self.reauthenticate(caller, password).await?;
        access::authorize(
            &caller.principal,
            permission,
            access::Freshness::Reauthenticated(&proof),
        )
        .map_err(denied)
    }

    /// Factory reset: the store's reset, then the in-memory state follows
    /// (no accounts, default settings, every session ended, interfaces as
    /// the boot file says).
    pub(crate) async fn factory_reset(
        self: &Arc<Self>,
        proof: &access::Authorization,
    ) -> Result<store::RemovalReceipt, ApiError> {
        let receipt = {
            let mut accounts = self
                .accounts
                .write()
                .map_err(|_| ApiError::internal("reset", "accounts lock"))?;
            let mut settings = self
                .settings
                .write()
                .map_err(|_| ApiError::internal("reset", "settings lock"))?;
            let receipt = self
                .store
                .factory_reset(proof)
                .map_err(|e| ApiError::internal("factory reset", e))?;
            *accounts = Accounts::default();
            *settings = Versioned {
                version: 1,
                settings: DeviceSettings::default(),
            };
            receipt
        };
        self.sessions.revoke_all();
        self.interfaces
            .reload(&self.file, &self.store)
            .await
            .map_err(|e| ApiError::internal("reset interfaces", e))?;
        Ok(receipt)
    }
}
