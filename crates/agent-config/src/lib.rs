//! The device agent's configuration as typed, validated values: the boot
//! file, the runtime device settings with their security floor, versions
//! for optimistic concurrency, and signed configuration bundles.
//!
//! Main types and how they fit:
//!
//! - [`AgentFile`]: `/etc/bulwark/agent.toml`, read once at start by
//!   [`AgentFile::from_toml`]. Listener, limits, machine clients, trust
//!   anchors, notification sinks, configuration signers, and the optional
//!   `[update]` section ([`UpdateSection`]: slots, boot loader, release
//!   keys, TUF repository).
//! - [`DeviceSettings`]: what an owner or operator changes at run time
//!   (JSON through the API, or inside a bundle). [`DeviceSettings::validate`]
//!   turns it into [`Validated`], the proof type every change goes through;
//!   it lists the acknowledged [`Weakening`]s the agent must warn about.
//! - [`Versioned`]: validated settings plus a change counter; its
//!   [`Versioned::etag`] serves `If-Match` on the API.
//! - [`Bundle`]: a signed settings change. [`Bundle::verify`] checks it
//!   against [`TrustedSigners`] (built from [`AgentFile::config_signers`])
//!   and yields a [`VerifiedBundle`], which only the verifier constructs.
//!
//! ```
//! use agent_config::{AgentFile, DeviceSettings, Error, Versioned};
//!
//! let file = AgentFile::from_toml("[api]\nmax_body_bytes = 131072\n").unwrap();
//! assert_eq!(file.api.max_body_bytes, 131072);
//! assert_eq!(file.keystore, "software"); // embedded default
//!
//! let current = Versioned::initial(DeviceSettings::default().validate().unwrap());
//! let change = DeviceSettings::from_json(br#"{"tls": {"min_version": "1.2"}}"#).unwrap();
//! // TLS 1.2 is weaker than the secure default: refused unless acknowledged.
//! assert!(matches!(change.validate(), Err(Error::WeakeningNotAcknowledged { .. })));
//! let change = DeviceSettings::from_json(
//!     br#"{"tls": {"min_version": "1.2"}, "danger_acknowledged": ["tls.min_version"]}"#,
//! ).unwrap();
//! let validated = change.validate().unwrap();
//! assert_eq!(validated.weakenings()[0].field, "tls.min_version");
//! let next = current.next(validated);
//! assert_eq!(next.version, 2);
//! assert_ne!(next.etag(), current.etag());
//! ```
//!
//! # Secure defaults and floors (ISO/IEC 27402 5.2.5.2.1)
//!
//! `DeviceSettings::default()` is the secure configuration. A
//! security-relevant setting may be made weaker than its default only
//! within a floor, and past an acknowledgement threshold only when its
//! dotted path is listed in `danger_acknowledged`:
//!
//! | setting                    | secure default | no acknowledgement needed | needs acknowledgement | refused (floor)  | out of range |
//! |----------------------------|----------------|---------------------------|-----------------------|------------------|--------------|
//! | `auth.min_password_length` | 12             | 12..=128                  | —                     | < 12             | > 128        |
//! | `auth.session_idle_secs`   | 900            | 60..=3600                 | 3601..=86400          | > 86400          | < 60         |
//! | `auth.lockout_after`       | 10             | 3..=10                    | 11..=100              | > 100            | < 3          |
//! | `auth.lockout_secs`        | 900            | 300..=86400               | 60..=299              | < 60             | > 86400      |
//! | `tls.min_version`          | "1.3"          | "1.3"                     | "1.2"                 | below 1.2 (not expressible) | — |
//! | `updates.automatic`        | true           | true                      | false                 | —                | —            |
//!
//! Refusals past the floor are [`Error::BelowSecurityFloor`]; missing
//! acknowledgements are [`Error::WeakeningNotAcknowledged`]; values too
//! strict to operate are [`Error::OutOfRange`]. Names in
//! `danger_acknowledged` must come from [`WEAKENABLE_SETTINGS`].
//!
//! # Design decisions
//!
//! - **Parse, then validate, with proof types.** Untrusted bytes become a
//!   typed value once ([`DeviceSettings::from_json`]); [`Validated`] and
//!   [`VerifiedBundle`] have no public constructor, so a change that skipped
//!   validation or signature checks does not compile.
//! - **Unknown fields are errors** everywhere (`deny_unknown_fields`): a
//!   misspelt `lockout_secs` must not silently fall back to a default.
//!   Every field may be omitted and then takes its (secure) default.
//! - **Weakening is explicit and visible.** Rather than a global "insecure
//!   mode", each weakened setting is acknowledged by name and reported back
//!   as a [`Weakening`] so the agent can raise a notification, and the
//!   acknowledgement is part of the settings (and their digest), so it is
//!   audited with them.
//! - **Authenticate before parsing** (5.2.2.2, 5.2.6.2). [`Bundle::verify`]
//!   checks size, the small wire envelope and a signature over the exact
//!   payload bytes before the payload JSON is parsed; target, sequence
//!   (replay), expiry and settings are checked afterwards. Signing bytes,
//!   not a re-serialisation, means no canonical JSON is needed to verify.
//! - **The digest is over canonical serde_json output** (declared field
//!   order, no maps), so equal settings always give equal ETags.
//! - **Errors name the field.** Every [`Error`] about a field carries its
//!   dotted path and the accepted range or format; parse errors also carry
//!   the line. Values from untrusted input are truncated before they are
//!   put into a message.
//! - **OpenAPI states the validator's limits.** [`DeviceSettings`] derives
//!   `utoipa::ToSchema` with `minimum`/`maximum`/`pattern`/`max_length`
//!   attributes; a unit test compares the schema with the validator.

mod bundle;
mod check;
mod decode;
mod error;
mod file;
mod settings;
mod version;

pub use bundle::{
    Bundle, BundlePayload, DeviceTarget, MAX_BUNDLE_BYTES, MAX_SIGNATURES, Target, TrustedSigners,
    VerifiedBundle, key_id, public_key_from_pem,
};
pub use error::{Error, Result};
pub use file::{
    AgentFile, ApiSection, BootLoader, HealthCheckSection, InterfacesSection, MAX_AGENT_FILE_BYTES,
    MqttHub, NOTIFICATION_KINDS, NOTIFICATION_SEVERITIES, NotificationsSection, PERMISSIONS,
    ServiceEntry, SignerEntry, TlsSection, UpdateRepository, UpdateSection, Webhook,
};
pub use settings::{
    AuthSettings, DeviceInfo, DeviceSettings, InstallMode, LogLevel, LoggingSettings,
    MAX_SETTINGS_JSON_BYTES, MaintenanceWindow, RestartMode, TelemetrySettings, TimeOfDay,
    TimeSettings, TlsSettings, TlsVersion, UpdateSettings, Validated, WEAKENABLE_SETTINGS,
    Weakening, Weekday,
};
pub use version::Versioned;
