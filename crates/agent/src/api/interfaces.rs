//! Listing interfaces, and enabling or disabling one (owner, password
//! re-entered; 5.2.6.2).

use std::sync::Arc;

use access::{Password, Permission};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::accounts::actor_event;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::JsonBody;
use crate::guard::Caller;
use crate::interfaces::InterfaceInfo;
use crate::state::Shared;

/// Every interface the agent exposes.
#[utoipa::path(
    get,
    path = "/api/v1/interfaces",
    tag = "interfaces",
    security(("session" = ["read-status"]), ("mtls" = ["read-status"])),
    responses(
        (status = 200, description = "Interfaces", body = [InterfaceInfo]),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(shared): State<Arc<Shared>>) -> Json<Vec<InterfaceInfo>> {
    Json(shared.interfaces.list().await)
}

/// Enable or disable an interface.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetInterface {
    /// Whether it should be enabled.
    enabled: bool,
    /// The caller's own password, re-entered (people only).
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

/// Enable or disable an interface; a disabled listener closes its port.
#[utoipa::path(
    put,
    path = "/api/v1/interfaces/{name}",
    tag = "interfaces",
    security(("session" = ["manage-interfaces"]), ("mtls" = ["manage-interfaces"])),
    params(("name" = String, Path, description = "Interface name", pattern = "^[a-z-]{1,32}$")),
    request_body = SetInterface,
    responses(
        (status = 200, description = "Changed", body = InterfaceInfo),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Not authenticated or wrong password", body = ErrorBody),
        (status = 403, description = "Not permitted", body = ErrorBody),
        (status = 404, description = "No such interface", body = ErrorBody),
        (status = 409, description = "Would disable the last management interface", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
    )
)]
pub(crate) async fn set(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<SetInterface>,
) -> ApiResult<Json<InterfaceInfo>> {
    shared
        .authorize_destructive(
            &caller,
            Permission::ManageInterfaces,
            request.current_password,
        )
        .await?;
    let info = shared
        .interfaces
        .set(&name, request.enabled, &shared.store)
        .await?;
    shared.record(actor_event(
        &caller,
        "interface.change",
        &format!(
            "interface {} {}",
            info.name,
            if info.enabled { "enabled" } else { "disabled" }
        ),
    ))?;
    shared.notify(
        notify::Kind::SecurityAlert,
        notify::Severity::Info,
        "An interface was enabled or disabled",
        serde_json::json!({ "interface": info.name, "enabled": info.enabled, "by": caller.principal.id() }),
    );
    Ok(Json(info))
}
