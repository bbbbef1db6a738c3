//! `POST /api/v1/update/danger_rollback`: the owner's explicit, audited
//! override of anti-rollback (5.2.7, issue #5 item 5). It installs one
//! exact release that the ordinary install refuses as a rollback (not
//! newer than the running release, or below the security floor); every
//! other check still holds. The floor is not lowered: a waiver bound to
//! the release's manifest digest lets the start-up check accept that
//! release (`crate::updates::danger`, `update::waiver`).
//!
//! Design decisions:
//! - Only a person with the owner role and the password re-entered: the
//!   route declares no `mtls` scheme, so a service's `install-update`
//!   grant (meant for releases anti-rollback allows) never reaches it, and
//!   the handler checks the role again.
//! - The owner acknowledges the release by its manifest digest, as
//!   weakened settings are acknowledged by name: a request without it is
//!   refused with a message naming the digest, and a digest binds the
//!   override to one release even if the repository changes meanwhile.
//! - Recorded at `alert` severity (the event log's highest) before any
//!   byte is written, with a critical `security_alert` notification; no
//!   override happens unaudited.
//! - Not a fail-safe recovery route: a device that failed its start-up
//!   integrity check recovers with the ordinary install of a release the
//!   floor allows, and a compromised-looking device is the last place to
//!   open a way back to old, vulnerable software.

use std::sync::Arc;

use access::{Password, Permission, PrincipalKind, Role};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use store::eventlog::Severity;
use utoipa::ToSchema;

use crate::api::accounts::{actor_event, actor_failure};
use crate::api::update::{begin_install, check_release_name, install_error};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::state::Shared;
use crate::updates::{InstallSummary, Updates, run_install};

/// The route's path (the request timeout of an install applies to it).
pub(crate) const PATH: &str = "/api/v1/update/danger_rollback";

/// Install a release past anti-rollback.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DangerRollbackRequest {
    /// The release's name in the repository: its targets are
    /// `<release>.manifest.json` and `<release>.image`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    release: String,
    /// The owner's own password, re-entered.
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
    /// The SHA-256 of the release's signed manifest payload (64 hex
    /// digits): the owner's acknowledgement that this exact release is
    /// installed although anti-rollback refuses it. A request without it
    /// is refused with a message naming the value.
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    acknowledge_manifest_sha256: Option<String>,
}

/// Install an older release, or one below the security floor, into the
/// inactive slot (the owner's audited override of anti-rollback). The
/// manifest is fetched through TUF and verified in everything else
/// (release keys, threshold, hardware, minimum installed version), the
/// image is streamed with every chunk verified before it is written, and
/// the slot is tried once on the next boot; the start-up check accepts
/// that release, and only it, below the floor, which stays where it is.
/// The override is recorded at `alert` severity with a critical
/// `security_alert` notification before the first byte is written.
#[utoipa::path(
    post,
    path = "/api/v1/update/danger_rollback",
    tag = "update",
    security(("session" = ["install-update"])),
    request_body = DangerRollbackRequest,
    responses(
        (status = 200, description = "Installed and marked to be tried once on the next boot", body = InstallSummary),
        (status = 400, description = "Invalid input, the acknowledgement is missing or names another manifest digest (the message names the right one), or the release was refused for a reason other than anti-rollback (signature, hardware, minimum version, a chunk that did not match)", body = ErrorBody),
        (status = 401, description = "Not authenticated (a session is needed: client certificates are not accepted here) or wrong password", body = ErrorBody),
        (status = 403, description = "Not an owner, or the password was not re-entered", body = ErrorBody),
        (status = 404, description = "No such release in the repository", body = ErrorBody),
        (status = 409, description = "Updates or the repository are not configured, another install is running, a trial boot awaits its commit, or anti-rollback does not refuse the release (use the ordinary install)", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        (status = 502, description = "The update repository or the download failed or was refused (TUF: expired, rolled back, inconsistent, too slow, too long)", body = ErrorBody),
    )
)]
pub(crate) async fn danger_rollback(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<DangerRollbackRequest>,
) -> ApiResult<Json<InstallSummary>> {
    check_release_name(&request.release)?;
    let acknowledged = request
        .acknowledge_manifest_sha256
        .map(|a| a.to_ascii_lowercase());
    if acknowledged
        .as_ref()
        .is_some_and(|a| a.len() != 64 || !a.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::InvalidInput(
            "acknowledge_manifest_sha256: 64 hex digits".into(),
        ));
    }
    if caller.principal.kind() != PrincipalKind::Person || caller.principal.role() != Role::Owner {
        return Err(ApiError::Forbidden(format!(
            "{} may not override anti-rollback: only an owner may",
            caller.principal.id()
        )));
    }
    shared
        .authorize_destructive(&caller, Permission::InstallUpdate, request.current_password)
        .await?;
    let (updates, guard) = begin_install(&shared, &request.release)?;
    let worker = shared.clone();
    let release = request.release;
    // The guard moves into the blocking task: the install runs to its end
    // and holds the flag (and the armed waiver) until then.
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        override_rollback(
            &worker,
            &updates,
            &caller,
            &release,
            acknowledged.as_deref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal("update danger_rollback", e))?
    .map(Json)
}

/// The route's work (blocking; the caller holds the install flag).
fn override_rollback(
    shared: &Arc<Shared>,
    engine: &Updates,
    caller: &Caller,
    release: &str,
    acknowledged: Option<&str>,
) -> ApiResult<InstallSummary> {
    let candidate = engine.rollback_candidate(release).map_err(install_error)?;
    let Some(refusal) = &candidate.refusal else {
        return Err(ApiError::Conflict(format!(
            "anti-rollback does not refuse release {release}: install it through POST /api/v1/update/install"
        )));
    };
    let m = &candidate.manifest;
    let digest = candidate.digest_hex();
    if acknowledged != Some(digest.as_str()) {
        return Err(ApiError::InvalidInput(format!(
            "release {release} (version {}, version code {}, security version {}) is refused by anti-rollback: {refusal}; to install it anyway, set `acknowledge_manifest_sha256` to its manifest digest {digest}",
            m.version, m.version_code, m.security_version
        )));
    }
    let armed = engine
        .grant_rollback_waiver(&candidate, caller.principal.id())
        .map_err(install_error)?;
    let detail = format!(
        "anti-rollback overridden by {}: release {release} (version {}, version code {}, security version {}, manifest sha256 {digest}) installed over the running version code {} with the security floor at {}, which stays",
        caller.principal.id(),
        m.version,
        m.version_code,
        m.security_version,
        candidate.installed_version_code,
        candidate.floor,
    );
    let mut event = actor_event(caller, "update.danger_rollback", &detail);
    event.severity = Severity::Alert;
    // Dropping `armed` on this error withdraws the waiver: nothing is
    // installed without its record.
    shared.record(event)?;
    shared.notify(
        notify::Kind::SecurityAlert,
        notify::Severity::Critical,
        "Anti-rollback overridden by the owner: an older release is being installed",
        serde_json::json!({
            "release": release,
            "version": m.version,
            "version_code": m.version_code,
            "security_version": m.security_version,
            "security_floor": candidate.floor,
            "manifest_sha256": digest,
            "owner": caller.principal.id(),
        }),
    );
    match run_install(shared, engine, release) {
        Ok(summary) => {
            armed.installed();
            shared.record_quietly(actor_event(
                caller,
                "update.install",
                &format!(
                    "release {release} (version {}) installed into slot {} past anti-rollback; tried once on the next boot",
                    m.version,
                    summary.slot.as_deref().unwrap_or("?"),
                ),
            ));
            Ok(summary)
        }
        Err(e) => {
            drop(armed);
            shared.record_quietly(actor_failure(
                caller,
                "update.install",
                &format!("release {release} not installed past anti-rollback: {e}"),
            ));
            Err(install_error(e))
        }
    }
}
