//! Secure updates over the API (5.2.7): the update status, and installing
//! a release from the configured TUF repository. Installing needs the
//! owner with the password re-entered, or a service granted
//! `install-update` (5.2.7.1.2); both routes stay open in fail-safe mode,
//! as the recovery channel. A check runs on demand too; it installs only
//! what the settings' update policy would install on its own.

use std::sync::Arc;

use access::{Password, Permission};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::accounts::{actor_event, actor_failure};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::progress::InstallProgressView;
use crate::state::Shared;
use crate::updates::{
    CheckOutcome, InstallError, InstallGuard, InstallSummary, UpdateStatus, Updates, check_once,
    run_install, schedule_restart, valid_release,
};

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
///
/// An install of a large image takes minutes: with `Prefer:
/// respond-async` (RFC 7240) the answer is 202 as soon as the install
/// started, with `Location: /api/v1/update/progress` to poll; its outcome
/// is then that route's `last_install`.
#[utoipa::path(
    post,
    path = "/api/v1/update/install",
    tag = "update",
    security(("session" = ["install-update"]), ("mtls" = ["install-update"])),
    params(("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 once the install started, and report through GET /api/v1/update/progress")),
    request_body = InstallRequest,
    responses(
        (status = 200, description = "Installed and marked to be tried once on the next boot", body = InstallSummary),
        (status = 202, description = "Started (`Prefer: respond-async`): poll the Location, GET /api/v1/update/progress", body = InstallProgressView),
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
    headers: HeaderMap,
    JsonBody(request): JsonBody<InstallRequest>,
) -> ApiResult<Response> {
    check_release_name(&request.release)?;
    shared
        .authorize_destructive(&caller, Permission::InstallUpdate, request.current_password)
        .await?;
    let (updates, guard) = begin_install(&shared, &request.release)?;
    let worker = shared.clone();
    let release = request.release;
    let engine = updates.clone();
    // The guard moves into the blocking task: the install runs to its end
    // and holds the flag until then, whether the client waits for it
    // (and times out or goes away) or polls.
    let task = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let result = run_install(&worker, &engine, &release);
        let recorded = record_install(&worker, &caller, &release, &result);
        (result, recorded)
    });
    if prefers_async(&headers) {
        let view = updates.progress();
        let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, HeaderValue::from_static(PROGRESS_PATH));
        headers.insert(
            "preference-applied",
            HeaderValue::from_static("respond-async"),
        );
        return Ok(response);
    }
    let (result, recorded) = task
        .await
        .map_err(|e| ApiError::internal("update install", e))?;
    let summary = result.map_err(install_error)?;
    // An asynchronous install has no one to answer: the failure to record
    // it was logged.
    recorded?;
    Ok(Json(summary).into_response())
}

/// Where a client polls an install it started asynchronously.
const PROGRESS_PATH: &str = "/api/v1/update/progress";

/// Whether the request asks for an asynchronous answer (RFC 7240
/// `Prefer: respond-async`, possibly among other preferences).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// Records an install's outcome under the caller that asked for it. A
/// success that cannot be recorded is an error (an unaudited change of
/// the device); a failure is recorded quietly, as its own error is what
/// the caller needs to hear.
fn record_install(
    shared: &Shared,
    caller: &Caller,
    release: &str,
    result: &Result<InstallSummary, InstallError>,
) -> ApiResult<()> {
    let event = match result {
        Ok(summary) => actor_event(
            caller,
            "update.install",
            &format!(
                "release {} (version {}) installed into slot {}; tried once on the next boot",
                summary.release,
                summary.version.as_deref().unwrap_or("?"),
                summary.slot.as_deref().unwrap_or("?"),
            ),
        ),
        Err(e) => {
            shared.record_quietly(actor_failure(
                caller,
                "update.install",
                &format!("release {release} not installed: {e}"),
            ));
            return Ok(());
        }
    };
    shared.record(event).inspect_err(|e| {
        tracing::error!(release, error = %e, "an installed release could not be recorded in the event log");
    })
}

/// Progress of the running install, or the outcome of the last one (an
/// install started with `Prefer: respond-async` reports here).
#[utoipa::path(
    get,
    path = "/api/v1/update/progress",
    tag = "update",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    responses(
        (status = 200, description = "The running install's phase and counters, or the last install's outcome", body = InstallProgressView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 409, description = "Updates are not configured", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub(crate) async fn progress(
    State(shared): State<Arc<Shared>>,
) -> ApiResult<Json<InstallProgressView>> {
    Ok(Json(engine(&shared)?.progress()))
}

/// A release name as the repository's target names need it, or 400.
pub(super) fn check_release_name(release: &str) -> ApiResult<()> {
    if valid_release(release) {
        return Ok(());
    }
    Err(ApiError::InvalidInput(
        "release: 1-64 characters of letters, digits and . _ -, starting with a letter or digit"
            .into(),
    ))
}

/// The update engine with a repository, or 409.
fn engine_with_repository(shared: &Shared) -> ApiResult<Arc<Updates>> {
    let updates = engine(shared)?;
    if !updates.has_repository() {
        return Err(ApiError::Conflict(
            "no update repository is configured ([update.repository])".into(),
        ));
    }
    Ok(updates)
}

/// The engine and its install flag, taken for `release`; 409 when updates
/// or the repository are not configured or another install runs.
pub(super) fn begin_install(
    shared: &Shared,
    release: &str,
) -> ApiResult<(Arc<Updates>, InstallGuard)> {
    let updates = engine_with_repository(shared)?;
    let guard = updates
        .try_begin(release)
        .ok_or_else(|| ApiError::Conflict("another install is running".into()))?;
    Ok((updates, guard))
}

/// The update engine, or 409 when the boot file has no `[update]`.
fn engine(shared: &Shared) -> ApiResult<Arc<Updates>> {
    shared.updates.clone().ok_or_else(|| {
        ApiError::Conflict("updates are not configured on this device ([update])".into())
    })
}

pub(super) fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::NotFound(m) => ApiError::NotFound(m),
        InstallError::Refused(m) => ApiError::ReleaseRefused(m),
        InstallError::Repository(m) => ApiError::BadGateway(m),
        InstallError::Busy(m) => ApiError::Conflict(m),
        InstallError::Internal(m) => ApiError::internal("update", m),
    }
}

/// The caller's password, re-entered for an action that interrupts the
/// device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestartRequest {
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Restart the device now to start the installed release (the confirmed
/// restart of `updates.restart` = `confirm`, or an earlier one than the
/// announced automatic restart). It interrupts the device: owner with the
/// password re-entered, or a service granted `install-update`. The
/// answer comes before the restart command runs.
#[utoipa::path(
    post,
    path = "/api/v1/update/restart",
    tag = "update",
    security(("session" = ["install-update"]), ("mtls" = ["install-update"])),
    request_body = RestartRequest,
    responses(
        (status = 202, description = "The device restarts now"),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted, or the password was not re-entered", body = ErrorBody),
        (status = 409, description = "Updates or update.restart_command are not configured, or no installed release waits for a restart", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn restart(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<RestartRequest>,
) -> ApiResult<axum::http::StatusCode> {
    shared
        .authorize_destructive(&caller, Permission::InstallUpdate, request.current_password)
        .await?;
    let updates = engine(&shared)?;
    if !updates.can_restart() {
        return Err(ApiError::Conflict(
            "no update.restart_command is configured: restart the device by hand".into(),
        ));
    }
    let probe = updates.clone();
    let pending = tokio::task::spawn_blocking(move || probe.restart_pending())
        .await
        .map_err(|e| ApiError::internal("update restart", e))?
        .map_err(|e| ApiError::internal("update restart", e))?;
    if !pending {
        return Err(ApiError::Conflict(
            "no installed release waits for a restart".into(),
        ));
    }
    shared.record(actor_event(
        &caller,
        "update.restart",
        "restart into the installed release requested",
    ))?;
    // Answer first: the restart stops this process.
    let task = schedule_restart(
        &tokio::runtime::Handle::current(),
        &shared,
        std::time::Duration::from_millis(200),
        "the installed release",
    );
    updates.set_pending_restart(Some(task));
    Ok(axum::http::StatusCode::ACCEPTED)
}

/// Check the update repository now (5.2.7.2 b): finds the newest release
/// that verifies for this device, raises one `update_available`
/// notification per new release (settings `updates.notify_available`),
/// and, when the settings' `updates` policy allows an automatic install
/// now (`automatic`, `install` = `automatic`, inside the maintenance
/// window), installs it as the scheduler would.
#[utoipa::path(
    post,
    path = "/api/v1/update/check",
    tag = "update",
    security(("session" = ["install-update"]), ("mtls" = ["install-update"])),
    responses(
        (status = 200, description = "The check ran; what it found and whether the policy installed it", body = CheckOutcome),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 409, description = "Updates or the repository are not configured", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 502, description = "The update repository failed or was refused (TUF: expired, rolled back, inconsistent, too slow, too long)", body = ErrorBody),
    )
)]
pub(crate) async fn check(State(shared): State<Arc<Shared>>) -> ApiResult<Json<CheckOutcome>> {
    engine_with_repository(&shared)?;
    let worker = shared.clone();
    let outcome = tokio::task::spawn_blocking(move || check_once(&worker))
        .await
        .map_err(|e| ApiError::internal("update check", e))?
        .map_err(install_error)?;
    Ok(Json(outcome))
}
