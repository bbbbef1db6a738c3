//! Secure updates over the API (5.2.7): the update status, and installing
//! a release from the configured TUF repository. Installing needs the
//! owner with the password re-entered, or a service granted
//! `install-update` (5.2.7.1.2); both routes stay open in fail-safe mode,
//! as the recovery channel.

use std::sync::Arc;

use access::{Password, Permission};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use store::eventlog::{Outcome, Severity};
use utoipa::ToSchema;

use crate::api::accounts::actor_event;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::state::Shared;
use crate::updates::{InstallError, InstallSummary, UpdateStatus, valid_release};

/// Update status: boot state, the release in each slot, the security
/// floor, fail-safe mode and the last install.
#[utoipa::path(
    get,
    path = "/api/v1/update/status",
    tag = "update",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    responses(
        (status = 200, description = "Update status", body = UpdateStatus),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub(crate) async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<Json<UpdateStatus>> {
    let Some(updates) = shared.updates.clone() else {
        return Ok(Json(UpdateStatus::not_configured()));
    };
    let status = tokio::task::spawn_blocking(move || updates.status())
        .await
        .map_err(|e| ApiError::internal("update status", e))?
        .map_err(|e| ApiError::internal("update status", e))?;
    Ok(Json(status))
}

/// Install a release.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstallRequest {
    /// The release's name in the repository: its targets are
    /// `<release>.manifest.json` and `<release>.image`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    release: String,
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Install a release into the inactive slot: the manifest is fetched
/// through TUF and verified (release keys, threshold, hardware, version,
/// security floor), then the image is streamed with every chunk verified
/// before it is written, and the slot is marked to be tried once on the
/// next boot. A `update_available` warning announces the interruption
/// before the first byte is written.
#[utoipa::path(
    post,
    path = "/api/v1/update/install",
    tag = "update",
    security(("session" = ["install-update"]), ("mtls" = ["install-update"])),
    request_body = InstallRequest,
    responses(
        (status = 200, description = "Installed and marked to be tried once on the next boot", body = InstallSummary),
        (status = 400, description = "Invalid input, or the release was refused (the message says why: signature, hardware, version, security floor, the chunk that did not match)", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted, or the password was not re-entered", body = ErrorBody),
        (status = 404, description = "No such release in the repository", body = ErrorBody),
        (status = 409, description = "Updates or the repository are not configured, another install is running, or a trial boot awaits its commit", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        (status = 502, description = "The update repository or the download failed or was refused (TUF: expired, rolled back, inconsistent, too slow, too long)", body = ErrorBody),
    )
)]
pub(crate) async fn install(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<InstallRequest>,
) -> ApiResult<Json<InstallSummary>> {
    if !valid_release(&request.release) {
        return Err(ApiError::InvalidInput(
            "release: 1-64 characters of letters, digits and . _ -, starting with a letter or digit"
                .into(),
        ));
    }
    shared
        .authorize_destructive(&caller, Permission::InstallUpdate, request.current_password)
        .await?;
    let updates = shared.updates.clone().ok_or_else(|| {
        ApiError::Conflict("updates are not configured on this device ([update])".into())
    })?;
    if !updates.has_repository() {
        return Err(ApiError::Conflict(
            "no update repository is configured ([update.repository])".into(),
        ));
    }
    let guard = updates
        .try_begin()
        .ok_or_else(|| ApiError::Conflict("another install is running".into()))?;
    let worker = shared.clone();
    let release = request.release.clone();
    let engine = updates.clone();
    // The guard moves into the blocking task: if this request times out,
    // the install still runs to its end and holds the flag until then.
    let result = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        engine.install(&release, &|manifest| {
            // 5.2.7.2: tell the user before the device's function is
            // interrupted.
            worker.notify(
                notify::Kind::UpdateAvailable,
                notify::Severity::Warning,
                "Installing an update: the device will be interrupted to restart into it",
                serde_json::json!({
                    "release": release,
                    "version": manifest.version,
                    "security_version": manifest.security_version,
                    "image_size": manifest.image_size,
                }),
            );
        })
    })
    .await
    .map_err(|e| ApiError::internal("update install", e))?;
    match result {
        Ok(summary) => {
            updates.remember(summary.clone());
            shared.record(actor_event(
                &caller,
                "update.install",
                &format!(
                    "release {} (version {}) installed into slot {}; tried once on the next boot",
                    summary.release,
                    summary.version.as_deref().unwrap_or("?"),
                    summary.slot.as_deref().unwrap_or("?"),
                ),
            ))?;
            Ok(Json(summary))
        }
        Err(e) => {
            let message = e.to_string();
            let mut event = actor_event(
                &caller,
                "update.install",
                &format!("release {} not installed: {message}", request.release),
            );
            event.severity = Severity::Warning;
            event.outcome = Outcome::Failure;
            shared.record_quietly(event);
            updates.remember(InstallSummary {
                release: request.release.clone(),
                outcome: "failed".into(),
                message: Some(message),
                version: None,
                slot: None,
                downloaded_bytes: 0,
                reused_bytes: 0,
                chunks: 0,
                duration_ms: 0,
                finished_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            });
            Err(match e {
                InstallError::NotFound(m) => ApiError::NotFound(m),
                InstallError::Refused(m) => ApiError::ReleaseRefused(m),
                InstallError::Repository(m) => ApiError::BadGateway(m),
                InstallError::Busy(m) => ApiError::Conflict(m),
                InstallError::Internal(m) => ApiError::internal("update install", m),
            })
        }
    }
}
