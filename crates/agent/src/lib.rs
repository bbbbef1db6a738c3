//! The device agent: the HTTPS management API a device maker embeds.
//!
//! [`Agent::start`] takes a provisioned device (identity, keystore) and the
//! boot file ([`agent_config::AgentFile`]) and serves `/api/v1/` on every
//! enabled listener interface. People authenticate with an account and a
//! password (argon2id, brute-force lockout) and get a session token bound
//! to their TLS connection; machines authenticate with a client
//! certificate from a configured service CA. A new or reset device has no
//! account: the first owner is created with the unit's setup secret.
//!
//! ```no_run
//! # async fn run(parts: agent::AgentParts) -> anyhow::Result<()> {
//! let running = agent::Agent::start(parts).await?;
//! println!("listening on {:?}", running.local_addr(agent::MANAGEMENT_API).await);
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Design decisions:
//! - The access rule of each route is declared once, in its OpenAPI
//!   annotation, and the guard enforces what the document says; a route
//!   without a declared rule is refused for everyone ([`guard`]).
//! - Destructive operations (reset, removal, interface changes, account
//!   changes) need the owner role and the password re-entered; a service
//!   needs an explicit grant ([`access::authorize`]).
//! - Only HTTP/1.1 over TLS 1.2/1.3 with the aws-lc-rs provider's default
//!   (AEAD, forward-secret) suites: nothing weak to negotiate down to.
//! - Everything the agent records goes to the store's tamper-evident
//!   event log; secrets (passwords, tokens, the setup secret) never do.
//! - With `[update]` in the boot file, the running slot is checked
//!   against its signed release before any listener starts; on a
//!   mismatch the agent raises a critical `integrity_failure`
//!   notification and runs in fail-safe mode: the guard refuses every
//!   route but status, sign-in, notifications and updates (503
//!   `fail-safe`), and only the management listener runs, until a valid
//!   release is installed, booted and verified at the next start.
//! - With `[update.repository]`, a scheduler task checks for releases
//!   every `updates.check_interval_secs` (plus jitter) of the settings,
//!   announces a newer one and installs it when the update policy allows
//!   (see `updates::check_once`, shared with `POST /api/v1/update/check`).

pub mod api;
pub mod error;
mod extract;
pub mod guard;
pub mod interfaces;
mod progress;
mod serve;
mod state;
mod updates;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use agent_config::{AgentFile, TrustedSigners};
use anyhow::{Context, Result};
use governor::{Quota, RateLimiter};
use identity::provision::DeviceIdentity;
use identity::tls::TlsIdentity;
use keys::{KeyRef, KeyStore};
use rustls_pki_types::CertificateDer;
use store::eventlog::{Event, EventLog, Outcome, Severity};
use tokio::task::JoinHandle;

pub use guard::{Requirement, RouteTable};
pub use interfaces::{MAINTENANCE_API, MANAGEMENT_API};
pub use state::Shared;
pub use update::anti_rollback::MonotonicCounter;
pub use update::integrity::MeasurementSink;
pub use updates::DIR as UPDATE_DIR;

/// What the agent runs on: a provisioned device and its boot file.
pub struct AgentParts {
    /// The boot configuration.
    pub file: AgentFile,
    /// The device's identity.
    pub identity: DeviceIdentity,
    /// The keystore holding the device key and sealing the store.
    pub keystore: Arc<dyn KeyStore>,
    /// Argon2id cost for new password hashes (default: OWASP baseline).
    pub hash_params: access::HashParams,
    /// A counter that backs the update security floor against a rollback
    /// of the store (a TPM NV counter where the device has a TPM); `None`
    /// keeps the floor in the store alone.
    pub floor_counter: Option<Box<dyn MonotonicCounter>>,
    /// Where the start-up integrity check's outcome is measured (a TPM
    /// PCR where the device has a TPM); `None` measures nothing.
    pub measurement: Option<Box<dyn MeasurementSink>>,
}

impl std::fmt::Debug for AgentParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentParts")
            .field("serial", &self.identity.record.serial)
            .finish_non_exhaustive()
    }
}

/// The agent.
#[derive(Debug)]
pub struct Agent;

/// A running agent.
#[derive(Debug)]
pub struct RunningAgent {
    shared: Arc<Shared>,
    table: RouteTable,
    ticker: JoinHandle<()>,
    /// The update scheduler, when `[update]` has a repository.
    scheduler: Option<JoinHandle<()>>,
}

impl Agent {
    /// Opens the store and event log, builds the API and starts every
    /// enabled listener.
    pub async fn start(parts: AgentParts) -> Result<RunningAgent> {
        let AgentParts {
            file,
            identity,
            keystore,
            hash_params,
            floor_counter,
            measurement,
        } = parts;
        let state_dir = file.state_dir.clone();
        let device_key = KeyRef::new(keystore.clone(), identity.record.key_label.clone())
            .context("reading the device key from its keystore")?;
        let store_dir = state_dir.join("store");
        let store = Arc::new(
            store::Store::open(&store_dir, keystore.clone())
                .with_context(|| format!("opening the store in {}", store_dir.display()))?,
        );
        let events = Arc::new(
            EventLog::open(&store_dir, store.clone(), device_key.clone())
                .context("opening the event log")?,
        );
        let accounts = state::load_accounts(&store).context("reading accounts")?;
        let settings = state::load_settings(&store).context("reading settings")?;
        let auth = &settings.settings.auth;
        let lockout = access::LockoutPolicy {
            lock_after: auth.lockout_after,
            lock_for: Duration::from_secs(u64::from(auth.lockout_secs)),
            ..access::LockoutPolicy::default()
        };
        let password_policy = access::PasswordPolicy {
            min_length: auth.min_password_length as usize,
            ..access::PasswordPolicy::default()
        };
        let session_policy = access::SessionPolicy {
            idle: Duration::from_secs(u64::from(auth.session_idle_secs)),
            ..access::SessionPolicy::default()
        };
        let tls13_only = settings.settings.tls.min_version == agent_config::TlsVersion::V1_3;
        let services = access::ServiceDirectory::new(
            file.services
                .iter()
                .map(|s| {
                    Ok(access::ServiceGrant {
                        identity: s.identity.clone(),
                        grants: s
                            .grants
                            .iter()
                            .map(|g| serde_json::from_value(serde_json::Value::String(g.clone())))
                            .collect::<Result<_, _>>()
                            .with_context(|| format!("grants of service {}", s.identity))?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        );
        let signers = TrustedSigners::from_pem_files(&file.config_signers)
            .context("reading configuration signers")?;
        let client_anchors = read_anchors(&file.tls.service_anchors)?;
        let tls_identity = TlsIdentity {
            chain: std::iter::once(identity.certificate.clone())
                .chain(identity.chain.iter().cloned())
                .collect(),
            key: device_key.clone(),
        };
        let tls = Arc::new(
            identity::tls::api_server_config(&tls_identity, &client_anchors, tls13_only)
                .context("building the TLS configuration")?,
        );
        let notifier = notify::Notifier::new(256);
        let hubs = attach_hubs(&file, &identity, &tls_identity, &notifier)?;
        let quota =
            Quota::per_second(NonZeroU32::new(file.api.per_client_rps).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(file.api.per_client_burst).unwrap_or(NonZeroU32::MIN));
        let interfaces = interfaces::Interfaces::new(&file, &store)?;
        // The start-up integrity check (5.2.5.2.1) runs before any
        // listener starts, so a device that fails it never serves more
        // than the fail-safe routes.
        let (updates, startup) = match &file.update {
            Some(section) => {
                let updates = Arc::new(
                    updates::Updates::open(
                        section,
                        &state_dir,
                        store.clone(),
                        floor_counter,
                        measurement,
                    )
                    .context("opening the update engine ([update])")?,
                );
                let worker = updates.clone();
                let startup = tokio::task::spawn_blocking(move || worker.startup_check())
                    .await
                    .context("start-up integrity check")?;
                (Some(updates), Some(startup))
            }
            None => (None, None),
        };
        let limits = api::Limits {
            max_body_bytes: file.api.max_body_bytes,
            request_timeout: Duration::from_secs(file.api.request_timeout_secs),
            max_concurrent: file.api.max_concurrent_requests,
        };
        let shared = Arc::new(Shared {
            file,
            identity,
            store,
            events,
            notifier,
            authenticator: access::Authenticator::new(password_policy, hash_params, lockout),
            claim_lockout: access::Lockout::new(access::LockoutPolicy::default()),
            sessions: access::Sessions::new(session_policy),
            session_policy,
            hash_params,
            services,
            accounts: RwLock::new(accounts),
            settings: RwLock::new(settings),
            signers,
            interfaces,
            rate: RateLimiter::keyed(quota),
            started: Instant::now(),
            openapi_json: OnceLock::new(),
            hubs,
            updates,
        });
        if let Some(startup) = &startup {
            report_startup(&shared, startup)?;
        }
        let (app, table) = api::app(shared.clone(), limits)?;
        let context = Arc::new(serve::ServeContext::new(app, tls, shared.clone()));
        shared.interfaces.start(context, shared.fail_safe()).await?;
        shared
            .record(Event::system(
                Severity::Notice,
                "agent.start",
                Outcome::Success,
                &format!(
                    "agent started{}",
                    if shared.identity.record.development {
                        " (DEVELOPMENT unit)"
                    } else {
                        ""
                    }
                ),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ticker = tokio::spawn(tick(shared.clone()));
        let scheduler = shared
            .updates
            .as_ref()
            .is_some_and(|u| u.has_repository())
            .then(|| tokio::spawn(updates::scheduler(shared.clone())));
        Ok(RunningAgent {
            shared,
            table,
            ticker,
            scheduler,
        })
    }
}

/// Records what the start-up integrity check found; on a failure also
/// raises the critical `integrity_failure` notification (to the local
/// list and the hub: the alert path stays up in fail-safe mode).
fn report_startup(shared: &Shared, startup: &updates::Startup) -> Result<()> {
    let event = match startup {
        updates::Startup::Verified {
            slot,
            version,
            waived,
        } => startup_passed(
            Severity::Info,
            "update.integrity",
            format!("slot {slot} verified against its signed release {version}"),
            *waived,
        ),
        updates::Startup::Committed {
            slot,
            version,
            waived,
        } => startup_passed(
            Severity::Notice,
            "update.commit",
            format!("trial slot {slot} verified; release {version} committed"),
            *waived,
        ),
        updates::Startup::Failed { finding } => {
            tracing::error!(%finding, "start-up integrity check failed: fail-safe mode");
            shared.notify(
                notify::Kind::IntegrityFailure,
                notify::Severity::Critical,
                "Start-up integrity check failed: the device runs in fail-safe mode",
                serde_json::json!({ "finding": finding, "fail_safe": true }),
            );
            Event::system(
                Severity::Alert,
                "update.integrity",
                Outcome::Failure,
                &format!("start-up integrity check failed, fail-safe mode: {finding}"),
            )
        }
    };
    shared.record(event).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The event of a start-up check that passed. A release that runs below
/// anti-rollback by the owner's waiver (danger_rollback) is a warning,
/// every time, so the audit trail never reads as an ordinary start.
fn startup_passed(severity: Severity, action: &str, what: String, waived: bool) -> Event {
    if !waived {
        return Event::system(severity, action, Outcome::Success, &what);
    }
    Event::system(
        Severity::Warning,
        action,
        Outcome::Success,
        &format!(
            "{what}; below anti-rollback, accepted under the owner's rollback waiver (danger_rollback)"
        ),
    )
}

/// Housekeeping: time-bounded event-log checkpoints, forgetting idle
/// rate-limit keys.
async fn tick(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(Duration::from_secs(10));
    loop {
        interval.tick().await;
        let worker = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = worker.events.tick() {
                tracing::error!(error = %e, "event log checkpoint failed");
            }
        })
        .await;
        shared.rate.retain_recent();
        shared.rate.shrink_to_fit();
    }
}

fn read_anchors(files: &[std::path::PathBuf]) -> Result<Vec<CertificateDer<'static>>> {
    let mut anchors = Vec::new();
    for path in files {
        anchors.extend(read_pem_certs(path)?);
    }
    Ok(anchors)
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    let certs = identity::x509::certs_from_pem("trust anchor", &pem)
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// The route of one hub from its `kinds` and `min_severity` (validated
/// against the same names by agent-config).
fn route(kinds: &[String], min_severity: Option<&str>) -> Result<notify::Route> {
    fn parse<T: serde::de::DeserializeOwned>(field: &str, value: &str) -> Result<T> {
        serde_json::from_value(serde_json::Value::String(value.to_owned()))
            .with_context(|| format!("notification {field} `{value}`"))
    }
    Ok(notify::Route {
        kinds: kinds
            .iter()
            .map(|k| parse("kind", k))
            .collect::<Result<_>>()?,
        min_severity: match min_severity {
            Some(s) => parse("severity", s)?,
            None => notify::Severity::Info,
        },
    })
}

/// Starts forwarding to every configured hub (an MQTT broker, a webhook,
/// or both), each with its route.
fn attach_hubs(
    file: &AgentFile,
    identity: &DeviceIdentity,
    tls_identity: &TlsIdentity,
    notifier: &notify::Notifier,
) -> Result<Vec<notify::HubHandle>> {
    let capacity = file.notifications.queue_capacity;
    let retry = notify::RetryPolicy::default();
    let mut hubs = Vec::new();
    if let Some(mqtt) = &file.notifications.mqtt {
        let anchors = read_pem_certs(&mqtt.ca_file)?;
        let tls = Arc::new(identity::tls::client_config(tls_identity, &anchors)?);
        let hub = notify::Hub::Mqtt(notify::MqttHub {
            host: mqtt.host.clone(),
            port: mqtt.port,
            topic: mqtt.topic.clone(),
            client_id: format!("bulwark-{}", identity.record.serial),
            tls,
        });
        let route = route(&mqtt.kinds, mqtt.min_severity.as_deref())?;
        hubs.push(notifier.attach_routed_hub(hub, capacity, retry, route));
    }
    if let Some(webhook) = &file.notifications.webhook {
        let anchors = read_pem_certs(&webhook.ca_file)?;
        let tls = Arc::new(identity::tls::client_config(tls_identity, &anchors)?);
        let hub = notify::Hub::Webhook(notify::Webhook {
            url: webhook.url.clone(),
            tls,
        });
        let route = route(&webhook.kinds, webhook.min_severity.as_deref())?;
        hubs.push(notifier.attach_routed_hub(hub, capacity, retry, route));
    }
    Ok(hubs)
}

impl RunningAgent {
    /// Where a listener interface listens now (None when disabled).
    pub async fn local_addr(&self, interface: &str) -> Option<SocketAddr> {
        self.shared.interfaces.local_addr(interface).await
    }

    /// The access rule of every route, as enforced.
    pub fn routes(&self) -> &RouteTable {
        &self.table
    }

    /// The notifier (to raise notifications from other parts of the
    /// device, e.g. the update engine).
    pub fn notifier(&self) -> &notify::Notifier {
        &self.shared.notifier
    }

    /// Stops listening, flushes notifications to the hub (bounded) and
    /// writes a final signed checkpoint of the event log.
    pub async fn shutdown(self) {
        self.ticker.abort();
        if let Some(scheduler) = &self.scheduler {
            scheduler.abort();
        }
        if let Some(updates) = &self.shared.updates {
            updates.cancel_pending_restart();
        }
        self.shared.interfaces.stop_all().await;
        self.shared.record_quietly(Event::system(
            Severity::Notice,
            "agent.stop",
            Outcome::Success,
            "agent stopped",
        ));
        if let Err(e) = self.shared.events.checkpoint() {
            tracing::error!(error = %e, "final event log checkpoint failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// agent-config checks hub routes against its own list of names; it
    /// must be notify's list exactly.
    #[test]
    fn boot_file_notification_names_are_notifys() {
        let kinds: Vec<String> = notify::Kind::ALL
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(kinds, agent_config::NOTIFICATION_KINDS);
        let severities: Vec<String> = [
            notify::Severity::Info,
            notify::Severity::Warning,
            notify::Severity::Critical,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(severities, agent_config::NOTIFICATION_SEVERITIES);
    }

    #[test]
    fn routes_parse_kinds_and_severity() {
        let r = route(&["update_available".into()], Some("warning")).unwrap();
        assert_eq!(r.kinds, [notify::Kind::UpdateAvailable]);
        assert_eq!(r.min_severity, notify::Severity::Warning);
        assert_eq!(route(&[], None).unwrap(), notify::Route::default());
        assert!(route(&["nope".into()], None).is_err());
    }
}
