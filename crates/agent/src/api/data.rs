//! User data removal (5.2.4) and factory reset (5.2.3) over the API, with
//! the authorization rules of the access crate: owner (or a service
//! granted it) and, for people, the password re-entered.

use std::sync::Arc;

use access::{Password, Permission};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use store::eventlog::Severity;
use utoipa::ToSchema;

use crate::api::accounts::actor_event;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::state::Shared;

/// Remove user data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemovalRequest {
    /// One user's data, or everyone's when absent.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    user: Option<String>,
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// What was removed, on whose authority (5.2.4.2).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Receipt {
    /// Users whose data was removed.
    users: Vec<String>,
    /// Data categories removed.
    categories: Vec<String>,
    /// Records deleted.
    records_deleted: u64,
    /// Whether the users' keys were destroyed (crypto-erase).
    keys_destroyed: bool,
    /// Who authorized it.
    authorized_by: String,
    /// When (RFC 3339).
    at: String,
}

impl From<store::RemovalReceipt> for Receipt {
    fn from(r: store::RemovalReceipt) -> Self {
        Self {
            users: r.users,
            categories: r.categories.into_iter().map(str::to_owned).collect(),
            records_deleted: r.records_deleted,
            keys_destroyed: r.keys_destroyed,
            authorized_by: r.authorized_by,
            at: r.at,
        }
    }
}

fn valid_user(user: &str) -> bool {
    let mut chars = user.chars();
    user.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

/// Remove one user's data, or all user data.
#[utoipa::path(
    post,
    path = "/api/v1/user-data/removal",
    tag = "data",
    security(("session" = ["remove-user-data"]), ("mtls" = ["remove-user-data"])),
    request_body = RemovalRequest,
    responses(
        (status = 200, description = "Removed; the receipt says what and on whose authority", body = Receipt),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 404, description = "No data stored for that user", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn remove_user_data(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<RemovalRequest>,
) -> ApiResult<Json<Receipt>> {
    if let Some(user) = &request.user
        && !valid_user(user)
    {
        return Err(ApiError::InvalidInput(
            "user: 1-64 characters of letters, digits and . _ @ -, starting with a letter or digit"
                .into(),
        ));
    }
    let proof = shared
        .authorize_destructive(
            &caller,
            Permission::RemoveUserData,
            request.current_password,
        )
        .await?;
    let worker = shared.clone();
    let user = request.user.clone();
    let receipt =
        tokio::task::spawn_blocking(move || worker.store.remove_user_data(&proof, user.as_deref()))
            .await
            .map_err(|e| ApiError::internal("user data removal", e))?
            .map_err(|e| match e {
                // Nothing stored for that user: the caller's mistake.
                store::Error::UnknownUser(user) => {
                    ApiError::NotFound(format!("no data stored for user {user:?}"))
                }
                other => ApiError::internal("user data removal", other),
            })?;
    let receipt = Receipt::from(receipt);
    let mut event = actor_event(
        &caller,
        "user-data.remove",
        &format!(
            "removed {} records of {} user(s); keys destroyed: {}",
            receipt.records_deleted,
            receipt.users.len(),
            receipt.keys_destroyed
        ),
    );
    event.severity = Severity::Notice;
    shared.record(event)?;
    shared.notify(
        notify::Kind::RemovalReceipt,
        notify::Severity::Info,
        "User data removed",
        serde_json::to_value(&receipt).unwrap_or_default(),
    );
    Ok(Json(receipt))
}

/// Factory reset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetRequest {
    /// Must be `factory-reset`: a reset is never an accident.
    #[schema(pattern = "^factory-reset$")]
    confirm: String,
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Factory reset: configuration, accounts and user data return to factory
/// state (the security floor stays); every session ends and the setup
/// secret works again.
#[utoipa::path(
    post,
    path = "/api/v1/reset",
    tag = "data",
    security(("session" = ["factory-reset"]), ("mtls" = ["factory-reset"])),
    request_body = ResetRequest,
    responses(
        (status = 200, description = "Reset done", body = Receipt),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn factory_reset(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<ResetRequest>,
) -> ApiResult<Json<Receipt>> {
    if request.confirm != "factory-reset" {
        return Err(ApiError::InvalidInput(
            "confirm: must be the text factory-reset".into(),
        ));
    }
    let proof = shared
        .authorize_destructive(&caller, Permission::FactoryReset, request.current_password)
        .await?;
    let receipt = shared.factory_reset(&proof).await?;
    let receipt = Receipt::from(receipt);
    let mut event = actor_event(
        &caller,
        "factory-reset",
        &format!("factory reset: {} records removed", receipt.records_deleted),
    );
    event.severity = Severity::Warning;
    shared.record(event)?;
    shared.notify(
        notify::Kind::Reset,
        notify::Severity::Warning,
        "Factory reset: accounts, configuration and user data removed",
        serde_json::to_value(&receipt).unwrap_or_default(),
    );
    Ok(Json(receipt))
}
