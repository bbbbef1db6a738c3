//! Accounts: list, create, delete (owner, password re-entered), and
//! changing one's own password.

use std::sync::Arc;

use access::{AccountName, Password, Permission, Role};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use store::eventlog::{Event, Outcome, Severity};
use utoipa::ToSchema;

use crate::api::session::unix_now;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::state::Shared;

/// An account, without its credential.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AccountInfo {
    /// Name.
    name: String,
    /// Role.
    #[schema(schema_with = crate::api::role_schema)]
    role: Role,
    /// Created (Unix seconds).
    created_unix: i64,
}

/// Every account.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("session" = ["manage-users"]), ("mtls" = ["manage-users"])),
    responses(
        (status = 200, description = "Accounts", body = [AccountInfo]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Vec<AccountInfo>>> {
    let accounts = shared
        .accounts
        .read()
        .map_err(|_| ApiError::internal("accounts", "lock"))?;
    Ok(Json(
        accounts
            .list()
            .map(|a| AccountInfo {
                name: a.name().to_string(),
                role: a.role(),
                created_unix: a.created_unix(),
            })
            .collect(),
    ))
}

/// Create an account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// New account name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,31}$")]
    account: String,
    /// Its role.
    #[schema(schema_with = crate::api::role_schema)]
    role: Role,
    /// Its password: 12 to 128 characters (the policy floor and
    /// ceiling; the configured minimum may be higher), not a common one.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    password: Password,
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Create an account (needs the caller's password re-entered).
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("session" = ["manage-users"]), ("mtls" = ["manage-users"])),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created", body = AccountInfo),
        (status = 400, description = "Invalid input or weak password", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 409, description = "Account exists", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<CreateRequest>,
) -> ApiResult<(StatusCode, Json<AccountInfo>)> {
    let name =
        AccountName::parse(&request.account).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let policy = shared.password_policy();
    policy
        .check(&request.password, name.as_str())
        .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let proof = shared
        .authorize_destructive(&caller, Permission::ManageUsers, request.current_password)
        .await?;
    let params = shared.hash_params;
    let (role, password, created) = (request.role, request.password, name.clone());
    let now = unix_now();
    shared
        .change_accounts(move |accounts| {
            accounts
                .create(&proof, created, role, &password, &policy, &params, now)
                .map_err(|e| match e {
                    access::Error::AccountExists { .. } => ApiError::Conflict(e.to_string()),
                    other => ApiError::InvalidInput(other.to_string()),
                })
        })
        .await?;
    shared.record(actor_event(
        &caller,
        "account.create",
        &format!("created account {name} with role {role:?}"),
    ))?;
    Ok((
        StatusCode::CREATED,
        Json(AccountInfo {
            name: name.to_string(),
            role,
            created_unix: now,
        }),
    ))
}

/// Re-entered password for a destructive operation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reauthentication {
    /// The caller's own password (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Delete an account; its sessions end. The last owner cannot be deleted.
#[utoipa::path(
    delete,
    path = "/api/v1/accounts/{name}",
    tag = "accounts",
    security(("session" = ["manage-users"]), ("mtls" = ["manage-users"])),
    params(("name" = String, Path, description = "Account name", pattern = "^[a-z0-9][a-z0-9._-]{0,31}$")),
    request_body = Reauthentication,
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "Last owner", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<Reauthentication>,
) -> ApiResult<StatusCode> {
    let name = AccountName::parse(&name).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let proof = shared
        .authorize_destructive(&caller, Permission::ManageUsers, request.current_password)
        .await?;
    let deleted = name.clone();
    shared
        .change_accounts(move |accounts| {
            if accounts.get(deleted.as_str()).is_none() {
                return Err(ApiError::NotFound(format!("no account named {deleted}")));
            }
            accounts
                .delete(&proof, deleted.as_str())
                .map_err(|e| match e {
                    access::Error::LastOwner => ApiError::Conflict(e.to_string()),
                    other => ApiError::InvalidInput(other.to_string()),
                })
        })
        .await?;
    shared.sessions.revoke_principal(name.as_str());
    shared.record(actor_event(
        &caller,
        "account.delete",
        &format!("deleted account {name}"),
    ))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change one's own password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordChange {
    /// Current password.
    #[schema(value_type = String, format = Password)]
    current_password: Password,
    /// New password: 12 to 128 characters (the policy floor and
    /// ceiling; the configured minimum may be higher), not a common one.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    new_password: Password,
}

/// Change the caller's own password; the caller's other sessions end.
#[utoipa::path(
    put,
    path = "/api/v1/account/password",
    tag = "accounts",
    security(("session" = ["read-status"])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Invalid input or weak password", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not a person", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn change_password(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<PasswordChange>,
) -> ApiResult<StatusCode> {
    if caller.principal.kind() != access::PrincipalKind::Person {
        return Err(ApiError::Forbidden("services have no password".into()));
    }
    let policy = shared.password_policy();
    policy
        .check(&request.new_password, caller.principal.id())
        .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    // Re-verify the current password through the lockout, like a login.
    shared
        .reauthenticate(&caller, Some(request.current_password.clone()))
        .await?;
    let params = shared.hash_params;
    let id = caller.principal.id().to_owned();
    shared
        .change_accounts(move |accounts| {
            accounts
                .change_password(
                    &id,
                    &request.current_password,
                    &request.new_password,
                    &policy,
                    &params,
                )
                .map_err(|e| ApiError::InvalidInput(e.to_string()))
        })
        .await?;
    shared.sessions.revoke_principal(caller.principal.id());
    shared.record(actor_event(
        &caller,
        "account.password",
        "password changed; sessions ended",
    ))?;
    Ok(StatusCode::NO_CONTENT)
}

/// A failed action by `caller`, as a warning.
pub(crate) fn actor_failure(caller: &Caller, action: &str, detail: &str) -> Event {
    Event {
        severity: Severity::Warning,
        outcome: Outcome::Failure,
        ..actor_event(caller, action, detail)
    }
}

/// An event by the caller (a person's identity is sealed under their key).
pub(crate) fn actor_event(caller: &Caller, action: &str, detail: &str) -> Event {
    let source = caller.source();
    match caller.principal.kind() {
        access::PrincipalKind::Person => Event::by_user(
            caller.principal.id(),
            Some(&source),
            Severity::Notice,
            action,
            Outcome::Success,
            detail,
        ),
        _ => Event {
            actor: Some(caller.principal.id().to_owned()),
            source: Some(source),
            ..Event::system(Severity::Notice, action, Outcome::Success, detail)
        },
    }
}
