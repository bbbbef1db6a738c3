//! Request extractors that turn axum's rejections into [`ApiError`]s, so
//! every malformed body gets the same error shape with a clear message.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON object body, parsed into `T` (unknown fields are refused by `T`).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        // Serde also builds a struct from a JSON array of its fields in
        // order (`[null, null]`); every body here is documented as an
        // object, so nothing else is accepted.
        if !value.is_object() {
            return Err(ApiError::InvalidInput("expected a JSON object".into()));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::InvalidInput(format!("invalid request body: {e}")))
    }
}

pub(crate) fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::InvalidInput(other.body_text()),
    }
}
