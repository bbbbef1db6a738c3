//! Notifications (5.2.8): a list to poll and a server-sent event stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use notify::Notification;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;

/// Which notifications to list.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only those after this sequence number.
    #[param(minimum = 0)]
    after: Option<u64>,
    /// At most this many (1-256, default 50).
    #[param(minimum = 1, maximum = 256)]
    limit: Option<u32>,
}

/// Recent notifications, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "notifications",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    params(ListQuery),
    responses(
        (status = 200, description = "Notifications", body = [Notification]),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Notification>>> {
    let Query(query) = query.map_err(|e| ApiError::InvalidInput(e.body_text()))?;
    // Documented as int64 (OpenAPI has no unsigned format).
    if query.after.is_some_and(|a| i64::try_from(a).is_err()) {
        return Err(ApiError::InvalidInput(
            "after: must be at most 2^63 - 1".into(),
        ));
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=256).contains(&limit) {
        return Err(ApiError::InvalidInput("limit: must be 1-256".into()));
    }
    Ok(Json(shared.notifier.recent(query.after, limit as usize)))
}

/// A live stream of notifications (server-sent events, one JSON
/// notification per `data:` line).
#[utoipa::path(
    get,
    path = "/api/v1/notifications/stream",
    tag = "notifications",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    responses(
        (status = 200, description = "Event stream", content_type = "text/event-stream"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(crate) async fn stream(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = shared.notifier.subscribe();
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(n) => {
                let event = SseEvent::default()
                    .id(n.seq.to_string())
                    .event("notification")
                    .json_data(&n)
                    .unwrap_or_default();
                Some((Ok(event), receiver))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                let event = SseEvent::default().event("lagged").data(missed.to_string());
                Some((Ok(event), receiver))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
