//! API errors: a status, a short code and a message for the client; the
//! detail behind a server error goes to the log, never to the client.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `invalid-input`.
    pub error: &'static str,
    /// What was wrong, for a person; never internal detail.
    pub message: String,
}

/// Everything a handler or the guard can refuse with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was malformed or a value was out of range.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// No valid credentials were presented.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were wrong (the same answer for an unknown account).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The caller may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Nothing by that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the device's state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// `If-Match` did not match the current version.
    #[error("the configuration changed since it was read")]
    VersionMismatch,
    /// `If-Match` is required for this change.
    #[error("If-Match with the current ETag is required")]
    VersionRequired,
    /// Too many requests or failed attempts: try again later.
    #[error("too many attempts")]
    TooManyAttempts {
        /// When to try again.
        retry_after: Duration,
        /// Whether the account or source is locked (not just slowed).
        locked: bool,
    },
    /// Wrong content type.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Body too large.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Something failed inside; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// The device is busy or shutting down.
    #[error("service unavailable")]
    Unavailable,
    /// The device failed its start-up integrity check and runs in
    /// fail-safe mode: only the recovery routes answer.
    #[error("fail-safe mode")]
    FailSafe,
    /// An update release was refused (signature, hardware, version,
    /// security floor, a chunk that does not match): the message says why.
    #[error("release refused: {0}")]
    ReleaseRefused(String),
    /// The update repository or the download failed or was refused.
    #[error("update repository: {0}")]
    BadGateway(String),
}

impl ApiError {
    /// An internal failure, logged with its detail.
    pub(crate) fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{context}: {e}"))
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::InvalidInput(m) => (StatusCode::BAD_REQUEST, "invalid-input", m.clone()),
            Self::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "log in (POST /api/v1/session) or present a client certificate".into(),
            ),
            Self::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "account or password is wrong".into(),
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not-found", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            Self::VersionMismatch => (
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                self.to_string(),
            ),
            Self::VersionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "version-required",
                self.to_string(),
            ),
            Self::TooManyAttempts {
                retry_after,
                locked,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                if *locked { "locked" } else { "slow-down" },
                format!(
                    "{}; try again in {} s",
                    if *locked {
                        "locked after repeated failures"
                    } else {
                        "too many attempts"
                    },
                    retry_after.as_secs().max(1)
                ),
            ),
            Self::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                m.clone(),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                self.to_string(),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the device log".into(),
            ),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "busy; try again shortly".into(),
            ),
            Self::FailSafe => (
                StatusCode::SERVICE_UNAVAILABLE,
                "fail-safe",
                "the device failed its start-up integrity check and runs in fail-safe mode: only status, sign-in, notifications and updates are available until a valid release is installed and booted".into(),
            ),
            Self::ReleaseRefused(m) => (StatusCode::BAD_REQUEST, "release-refused", m.clone()),
            Self::BadGateway(m) => (StatusCode::BAD_GATEWAY, "repository-failed", m.clone()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(detail = %self, "request failed");
        } else {
            tracing::debug!(%status, %message, "request refused");
        }
        let mut response = (status, Json(ErrorBody { error, message })).into_response();
        if let Self::TooManyAttempts { retry_after, .. } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
