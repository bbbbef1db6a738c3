//! The HTTPS management API under `/api/v1/`: routes, the OpenAPI
//! document generated from them, and the middleware stack.

pub(crate) mod accounts;
pub(crate) mod config;
pub(crate) mod danger;
pub(crate) mod data;
pub(crate) mod disclosure;
pub(crate) mod interfaces;
pub(crate) mod notifications;
pub(crate) mod session;
pub(crate) mod status;
pub(crate) mod update;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::guard::{Connection, MTLS_SCHEME, RouteTable, SESSION_SCHEME, guard};
use crate::state::Shared;

/// Where the API document is served (public, like the login route).
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bulwark device agent",
        description = "Management API of a device that meets the ISO/IEC 27402 baseline. Every route but setup claim, login and this document needs a session token (bound to the TLS connection that logged in) or a client certificate of a configured service.",
        license(name = "Apache-2.0 OR MIT")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody)),
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SESSION_SCHEME,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            MTLS_SCHEME,
            SecurityScheme::MutualTls {
                description: Some(
                    "client certificate from a configured service CA; the certificate's common name must be a configured service".into(),
                ),
                extensions: None,
            },
        );
    }
}

/// Limits the middleware applies, from the boot file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_concurrent: usize,
}

/// The schema of a role name.
pub(crate) fn role_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["owner", "operator", "viewer", "service"]))
        .build()
}

/// The routes and their document, before the middleware.
pub(crate) fn routes() -> (Router<Arc<Shared>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(status::status))
        .routes(routes!(status::openapi))
        .routes(routes!(session::claim))
        .routes(routes!(session::login, session::logout))
        .routes(routes!(accounts::list, accounts::create))
        .routes(routes!(accounts::delete))
        .routes(routes!(accounts::change_password))
        .routes(routes!(config::get, config::put))
        .routes(routes!(config::apply_bundle))
        .routes(routes!(interfaces::list))
        .routes(routes!(interfaces::set))
        .routes(routes!(data::remove_user_data))
        .routes(routes!(data::factory_reset))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::stream))
        .routes(routes!(disclosure::security_txt))
        .routes(routes!(disclosure::summary))
        .routes(routes!(disclosure::document))
        .routes(routes!(update::status))
        .routes(routes!(update::progress))
        .routes(routes!(update::install))
        .routes(routes!(update::check))
        .routes(routes!(update::restart))
        .routes(routes!(danger::danger_rollback))
        .split_for_parts()
}

/// Documents the guard's fail-safe refusal (503 `fail-safe`) on every
/// operation outside [`crate::guard::FAIL_SAFE_ROUTES`].
fn document_fail_safe(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description("Fail-safe mode: the device failed its start-up integrity check")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation
                && !crate::guard::allowed_in_fail_safe(method, path)
            {
                operation
                    .responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}

/// The whole application: routes, guard, middleware.
pub(crate) fn app(shared: Arc<Shared>, limits: Limits) -> anyhow::Result<(Router, RouteTable)> {
    let (router, mut doc) = routes();
    document_fail_safe(&mut doc);
    let table = RouteTable::from_openapi(&doc).map_err(|e| anyhow::anyhow!(e))?;
    let json = doc.to_pretty_json()?;
    let _ = shared.openapi_json.set(Arc::new(json));
    let guarded = router
        .route_layer(from_fn_with_state(
            (shared.clone(), Arc::new(table.clone())),
            guard,
        ))
        .fallback(not_found)
        .with_state(shared.clone());
    // Read top-down: trace, timeout, body limit, global concurrency with
    // load shedding, per-client rate limit; the guard sits on the routes.
    let stack = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(from_fn_with_state(limits, timeout))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            ApiError::Unavailable
        }))
        .load_shed()
        .concurrency_limit(limits.max_concurrent)
        .layer(from_fn_with_state(shared, rate_limit));
    Ok((guarded.layer(stack), table))
}

/// The path whose requests may run as long as an install takes (a slot
/// write of a large image), as may [`danger::PATH`]'s; every other request
/// has the configured limit.
const INSTALL_PATH: &str = "/api/v1/update/install";
/// How long an install request may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Request timeout: the configured limit, or an hour for an install.
async fn timeout(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let limit = if path == INSTALL_PATH || path == danger::PATH {
        INSTALL_TIMEOUT
    } else {
        limits.request_timeout
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Per-client rate limit, keyed on the peer address (before
/// authentication, so floods of bad logins are limited too).
async fn rate_limit(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(connection) = request.extensions().get::<Connection>()
        && shared.rate.check_key(&connection.peer.ip()).is_err()
    {
        return ApiError::TooManyAttempts {
            retry_after: Duration::from_secs(1),
            locked: false,
        }
        .into_response();
    }
    next.run(request).await
}
