//! Device status (the queryable notification point for devices without a
//! screen, 5.2.8) and the API document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiResult, ErrorBody};
use crate::interfaces::InterfaceInfo;
use crate::state::Shared;

/// The device's identity as status reports it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeviceStatus {
    /// Random device identifier.
    device_id: String,
    /// Serial number.
    serial: String,
    /// Model.
    model: String,
    /// A development unit (development CA, software keys): not for
    /// production.
    development: bool,
    /// Keystore backend holding the device key.
    keystore: String,
    /// SHA-256 of the device certificate.
    certificate_sha256: String,
}

/// Configuration version summary.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigSummary {
    /// Version number.
    version: u64,
    /// ETag of the current version.
    etag: String,
}

/// Notification summary.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NotificationSummary {
    /// Sequence number of the newest notification.
    latest_seq: Option<u64>,
    /// Delivery to each configured hub (MQTT broker, webhook).
    hubs: Vec<notify::HubStatus>,
}

/// Status of the device.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// Identity.
    device: DeviceStatus,
    /// Whether an owner account exists (the setup secret was used).
    claimed: bool,
    /// Configuration.
    configuration: ConfigSummary,
    /// Interfaces.
    interfaces: Vec<InterfaceInfo>,
    /// Notifications.
    notifications: NotificationSummary,
    /// Seconds since the agent started.
    uptime_secs: u64,
    /// The running slot failed its start-up integrity check: every route
    /// but status, sign-in, notifications and updates answers 503
    /// `fail-safe`, and only the management listener runs.
    fail_safe: bool,
    /// What the start-up integrity check found, in fail-safe mode.
    integrity_failure: Option<String>,
}

/// Device status.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "status",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    responses(
        (status = 200, description = "Device status", body = Status),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub(crate) async fn status(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Status>> {
    let record = &shared.identity.record;
    let configuration = {
        let settings = shared
            .settings
            .read()
            .map_err(|_| crate::error::ApiError::internal("status", "settings lock"))?;
        ConfigSummary {
            version: settings.version,
            etag: settings.etag(),
        }
    };
    Ok(Json(Status {
        device: DeviceStatus {
            device_id: record.device_id.clone(),
            serial: record.serial.clone(),
            model: record.model.clone(),
            development: record.development,
            keystore: record.keystore.clone(),
            certificate_sha256: record.certificate_sha256.clone(),
        },
        claimed: shared.is_claimed(),
        configuration,
        interfaces: shared.interfaces.list().await,
        notifications: NotificationSummary {
            latest_seq: shared.notifier.recent(None, 1).last().map(|n| n.seq),
            hubs: shared.hubs.iter().map(notify::HubHandle::status).collect(),
        },
        uptime_secs: shared.started.elapsed().as_secs(),
        fail_safe: shared.fail_safe(),
        integrity_failure: shared.integrity_failure(),
    }))
}

/// This API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "status",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(crate) async fn openapi(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared
        .openapi_json
        .get()
        .map(|s| s.as_str().to_owned())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body)
}
