//! Claiming a new device with its setup secret, logging in and out.
//!
//! A new or reset device has no account (no default credentials,
//! 5.2.2.1.1): the first owner can only be created with the unit's setup
//! secret, which stops working once an account exists.

use std::sync::Arc;
use std::time::Instant;

use access::{AccountName, AuthError, Password, Refusal, Role};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use store::eventlog::{Event, Outcome, Severity};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::{Caller, Connection};
use crate::state::Shared;

/// Lockout key for setup-secret attempts (there is no account yet).
const CLAIM: &str = "setup-secret";

/// Claim a new device: the setup secret from its label and the first
/// owner account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimRequest {
    /// The setup secret printed on the unit's label.
    #[schema(value_type = String, format = Password)]
    setup_secret: Password,
    /// The owner account to create.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,31}$")]
    account: String,
    /// Its password (at least the configured minimum length; common
    /// passwords are refused): 12 to 128 characters.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    password: Password,
}

/// An account that was created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Created {
    /// The account.
    account: String,
    /// Its role.
    #[schema(schema_with = crate::api::role_schema)]
    role: Role,
}

/// Claim a new or reset device.
#[utoipa::path(
    post,
    path = "/api/v1/setup/claim",
    tag = "session",
    security(()),
    request_body = ClaimRequest,
    responses(
        (status = 201, description = "Owner account created; the setup secret no longer works", body = Created),
        (status = 400, description = "Invalid input or weak password", body = ErrorBody),
        (status = 401, description = "Wrong setup secret", body = ErrorBody),
        (status = 409, description = "Already claimed", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn claim(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let source = connection.peer.ip();
    let now = Instant::now();
    shared
        .claim_lockout
        .check(CLAIM, source, now)
        .map_err(refusal)?;
    if shared.is_claimed() {
        return Err(ApiError::Conflict(
            "this device already has an owner; a factory reset brings the setup secret back".into(),
        ));
    }
    let name =
        AccountName::parse(&request.account).map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let policy = shared.password_policy();
    policy
        .check(&request.password, name.as_str())
        .map_err(|e| ApiError::InvalidInput(e.to_string()))?;
    let hash = shared.identity.record.setup_secret_hash.clone();
    let secret = request.setup_secret;
    let matches = tokio::task::spawn_blocking(move || {
        identity::secret::SetupSecret::parse(secret.expose())
            .map(|s| s.matches(&hash))
            .unwrap_or(false)
    })
    .await
    .map_err(|e| ApiError::internal("setup secret check", e))?;
    if !matches {
        shared.claim_lockout.record_failure(CLAIM, source, now);
        shared.record_quietly(Event {
            source: Some(connection.peer.to_string()),
            ..Event::system(
                Severity::Warning,
                "setup.claim",
                Outcome::Denied,
                "wrong setup secret",
            )
        });
        return Err(ApiError::InvalidCredentials);
    }
    let params = shared.hash_params;
    let password = request.password;
    let created_name = name.clone();
    shared
        .change_accounts(move |accounts| {
            accounts
                .create_first_owner(created_name, &password, &policy, &params, unix_now())
                .map_err(|e| match e {
                    access::Error::AlreadyClaimed => ApiError::Conflict("already claimed".into()),
                    other => ApiError::InvalidInput(other.to_string()),
                })
        })
        .await?;
    shared.claim_lockout.record_success(CLAIM, source);
    shared.record(Event::by_user(
        name.as_str(),
        Some(&connection.peer.to_string()),
        Severity::Notice,
        "setup.claim",
        Outcome::Success,
        "owner account created with the setup secret",
    ))?;
    shared.notify(
        notify::Kind::SecurityAlert,
        notify::Severity::Info,
        "Device claimed: an owner account was created",
        serde_json::json!({ "role": "owner" }),
    );
    Ok((
        StatusCode::CREATED,
        Json(Created {
            account: name.to_string(),
            role: Role::Owner,
        }),
    ))
}

/// Log in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    /// Account name.
    #[schema(max_length = 32)]
    account: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    password: Password,
}

/// A session.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SessionInfo {
    /// Bearer token; valid only on the TLS connection that logged in.
    token: String,
    /// Idle lifetime in seconds.
    idle_timeout_secs: u64,
    /// The account.
    account: String,
    /// Its role.
    #[schema(schema_with = crate::api::role_schema)]
    role: Role,
}

/// Log in with a password; the token is bound to this TLS connection.
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionInfo),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Wrong account or password", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Slowed down or locked after failures", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> ApiResult<Json<SessionInfo>> {
    let worker = shared.clone();
    let account = request.account.clone();
    let source = connection.peer.ip();
    let result = tokio::task::spawn_blocking(move || {
        let accounts = worker
            .accounts
            .read()
            .map_err(|_| AuthError::InvalidCredentials)?;
        worker.authenticator.authenticate_password(
            &accounts,
            &account,
            &request.password,
            source,
            Instant::now(),
        )
    })
    .await
    .map_err(|e| ApiError::internal("login", e))?;
    let principal = match result {
        Ok(p) => p,
        Err(e) => {
            let locked = matches!(e, AuthError::Locked { .. });
            shared.record_quietly(Event {
                source: Some(connection.peer.to_string()),
                ..Event::system(
                    if locked {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    "login",
                    Outcome::Denied,
                    &format!("login refused: {e}"),
                )
            });
            if locked {
                shared.notify(
                    notify::Kind::SecurityAlert,
                    notify::Severity::Warning,
                    "Repeated failed logins: account or source locked",
                    serde_json::json!({ "source": connection.peer.ip().to_string() }),
                );
            }
            return Err(auth_error(e));
        }
    };
    let token = shared
        .sessions
        .issue(&principal, connection.binding, Instant::now());
    shared.record(Event::by_user(
        principal.id(),
        Some(&connection.peer.to_string()),
        Severity::Info,
        "login",
        Outcome::Success,
        "session opened",
    ))?;
    Ok(Json(SessionInfo {
        token: token.as_str().to_owned(),
        idle_timeout_secs: shared.session_idle().as_secs(),
        account: principal.id().to_owned(),
        role: principal.role(),
    }))
}

/// Log out: the presented token stops working.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "session",
    security(("session" = ["read-status"])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(crate) async fn logout(
    State(shared): State<Arc<Shared>>,
    Extension(_caller): Extension<Caller>,
    headers: HeaderMap,
) -> StatusCode {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        shared.sessions.revoke(token.trim());
    }
    StatusCode::NO_CONTENT
}

pub(crate) fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::Throttled { retry_after } => ApiError::TooManyAttempts {
            retry_after,
            locked: false,
        },
        AuthError::Locked { retry_after } => ApiError::TooManyAttempts {
            retry_after,
            locked: true,
        },
        _ => ApiError::InvalidCredentials,
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Throttled { retry_after } => ApiError::TooManyAttempts {
            retry_after,
            locked: false,
        },
        Refusal::Locked { retry_after } => ApiError::TooManyAttempts {
            retry_after,
            locked: true,
        },
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
