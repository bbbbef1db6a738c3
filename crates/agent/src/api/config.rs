//! Configuration through the API: read with an ETag, change with
//! `If-Match` (optimistic concurrency), or apply a signed bundle. Either
//! way the change is validated before anything is used, applied
//! atomically, confirmed with the new version and digest (5.2.2.2 d), and
//! audited with the old and new digest.

use std::sync::Arc;

use agent_config::{Bundle, DeviceSettings, DeviceTarget, Versioned};
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use store::eventlog::Severity;
use utoipa::ToSchema;

use crate::api::accounts::actor_event;
use crate::api::session::unix_now;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::state::{BUNDLE_SEQUENCE, Shared};

/// A signed configuration bundle as it travels (documentation only: the
/// bytes are verified as they are, before anything in them is parsed).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct BundleWire {
    /// Base64 of the payload JSON (issuer, target, sequence, expiry,
    /// settings).
    payload: String,
    /// Signatures over the payload by trusted configuration signers.
    signatures: Vec<BundleSignature>,
}

/// One signature of a bundle.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct BundleSignature {
    /// Hex SHA-256 of the signer's public key (SPKI).
    key_id: String,
    /// Base64 signature.
    signature: String,
}

/// The configuration and its version.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigView {
    /// Version number; rises with every change.
    version: u64,
    /// Strong ETag of this version, for `If-Match`.
    etag: String,
    /// SHA-256 of the settings (hex).
    digest: String,
    /// The settings.
    settings: DeviceSettings,
}

/// The outcome of a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConfigChanged {
    /// New version.
    version: u64,
    /// New ETag.
    etag: String,
    /// SHA-256 of the new settings (hex).
    digest: String,
    /// Digest of the settings it replaced.
    previous_digest: String,
    /// Settings weakened below their secure default (acknowledged with
    /// `danger_acknowledged`); each raised a warning notification.
    weakened: Vec<String>,
}

fn view(versioned: &Versioned) -> ConfigView {
    ConfigView {
        version: versioned.version,
        etag: versioned.etag(),
        digest: hex::encode(versioned.digest()),
        settings: versioned.settings.clone(),
    }
}

fn with_etag<T: Serialize>(etag: &str, body: T) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// Read the configuration.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    tag = "config",
    security(("session" = ["read-config"]), ("mtls" = ["read-config"])),
    responses(
        (status = 200, description = "Current configuration; the ETag header names its version", body = ConfigView),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
    )
)]
pub(crate) async fn get(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    let settings = shared
        .settings
        .read()
        .map_err(|_| ApiError::internal("config", "lock"))?;
    let v = view(&settings);
    Ok(with_etag(&v.etag.clone(), v))
}

/// Replace the configuration; `If-Match` must carry the current ETag.
#[utoipa::path(
    put,
    path = "/api/v1/config",
    tag = "config",
    security(("session" = ["change-config"]), ("mtls" = ["change-config"])),
    params(("If-Match" = String, Header, description = "ETag of the version this change is based on")),
    request_body = DeviceSettings,
    responses(
        (status = 200, description = "Applied", body = ConfigChanged),
        (status = 400, description = "Invalid settings, below the security floor, or weakening not acknowledged", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 412, description = "Changed since read", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 428, description = "If-Match missing", body = ErrorBody),
    )
)]
pub(crate) async fn put(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(settings): JsonBody<DeviceSettings>,
) -> ApiResult<Response> {
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::VersionRequired)?
        .trim()
        .to_owned();
    let validated = settings
        .validate()
        .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let changed = apply(&shared, &caller, validated, Some(&if_match), "api")?;
    Ok(with_etag(&changed.etag.clone(), changed))
}

/// Apply a signed configuration bundle (JSON wire format of
/// `bulwark config sign`): signer, target, sequence and expiry are checked
/// before any setting is read.
#[utoipa::path(
    post,
    path = "/api/v1/config/bundle",
    tag = "config",
    security(("session" = ["change-config"]), ("mtls" = ["change-config"])),
    request_body(content = BundleWire, description = "Signed bundle (JSON)", content_type = "application/json"),
    responses(
        (status = 200, description = "Applied", body = ConfigChanged),
        (status = 400, description = "Bad signature, unknown signer, wrong target, replayed, expired or invalid settings", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    )
)]
pub(crate) async fn apply_bundle(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    // Axum's own rejection is plain text; keep the API's error shape.
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidInput(rejection.body_text())
        }
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".into(),
        ));
    }
    let last = shared
        .store
        .floor(BUNDLE_SEQUENCE)
        .map_err(|e| ApiError::internal("bundle sequence", e))?
        .unwrap_or(0);
    let target = DeviceTarget {
        serial: shared.identity.record.serial.clone(),
        model: shared.identity.record.model.clone(),
    };
    let verified = Bundle::verify(&body, &shared.signers, &target, last, unix_now())
        .map_err(|e| ApiError::InvalidInput(format!("configuration bundle refused: {e}")))?;
    let sequence = verified.sequence();
    let source = format!("bundle #{sequence} signed by {}", verified.signer());
    let changed = apply(&shared, &caller, verified.into_validated(), None, &source)?;
    shared
        .store
        .raise_floor(BUNDLE_SEQUENCE, sequence)
        .map_err(|e| ApiError::internal("bundle sequence", e))?;
    Ok(with_etag(&changed.etag.clone(), changed))
}

fn apply(
    shared: &Shared,
    caller: &Caller,
    validated: agent_config::Validated,
    if_match: Option<&str>,
    via: &str,
) -> ApiResult<ConfigChanged> {
    let weakened: Vec<String> = validated
        .weakenings()
        .iter()
        .map(|w| w.field.clone())
        .collect();
    let mut current = shared
        .settings
        .write()
        .map_err(|_| ApiError::internal("config", "lock"))?;
    if let Some(expected) = if_match
        && expected != current.etag()
        && expected != "*"
    {
        return Err(ApiError::VersionMismatch);
    }
    let previous_digest = hex::encode(current.digest());
    let next = current.next(validated);
    shared.save_settings(&next)?;
    *current = next;
    let changed = ConfigChanged {
        version: current.version,
        etag: current.etag(),
        digest: hex::encode(current.digest()),
        previous_digest,
        weakened,
    };
    drop(current);
    let mut event = actor_event(
        caller,
        "config.change",
        &format!(
            "configuration v{} applied via {via}: digest {} -> {}",
            changed.version, changed.previous_digest, changed.digest
        ),
    );
    if !changed.weakened.is_empty() {
        event.severity = Severity::Warning;
    }
    shared.record(event)?;
    shared.notify(
        notify::Kind::ConfigurationChanged,
        notify::Severity::Info,
        "Configuration changed",
        serde_json::json!({
            "version": changed.version,
            "digest": changed.digest,
            "previous_digest": changed.previous_digest,
            "by": caller.principal.id(),
        }),
    );
    for field in &changed.weakened {
        shared.notify(
            notify::Kind::Warning,
            notify::Severity::Warning,
            "A security setting was weakened below its secure default",
            serde_json::json!({ "setting": field, "version": changed.version }),
        );
    }
    Ok(changed)
}
