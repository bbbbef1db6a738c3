//! The access guard: who is calling, and may they call this route?
//!
//! Each route's requirement is read from the OpenAPI document generated
//! from the handlers' own annotations (`security(("session" =
//! ["change-config"]))`, or `security(())` for the few public routes), so
//! the document a tester reads is the policy that is enforced. A route
//! with no declared requirement is refused for everyone: adding a route
//! cannot skip the check. The guard runs as a route layer, so unknown
//! paths stay 404 instead of revealing that authentication exists; a
//! known path with an undeclared method is 405 with `Allow`. A client
//! certificate authenticates only on routes that declare the `mtls`
//! scheme; session-only routes (logout, own password) need the token.
//!
//! Fail-safe mode (5.2.5.2.1): when the start-up integrity check failed,
//! the guard refuses every route outside [`FAIL_SAFE_ROUTES`] with 503
//! `fail-safe` before authentication and before any handler, so no
//! handler can forget the check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use access::{Permission, Principal};
use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};
use crate::state::Shared;

/// The security scheme names used in the OpenAPI document.
pub const SESSION_SCHEME: &str = "session";
/// Mutual TLS with a client certificate from a configured service CA.
pub const MTLS_SCHEME: &str = "mtls";

/// The routes that answer in fail-safe mode: status, sign-in and claim,
/// the API document, the notification list (the alert path), and the
/// update routes (the recovery channel), but not the anti-rollback
/// override `danger_rollback`: recovery needs a release the floor allows,
/// and a device that failed its integrity check is no place to reopen a
/// way back to old software.
pub const FAIL_SAFE_ROUTES: [(&str, &str); 11] = [
    ("GET", "/api/v1/status"),
    ("POST", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("POST", "/api/v1/setup/claim"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/notifications"),
    ("GET", "/api/v1/update/status"),
    ("GET", "/api/v1/update/progress"),
    ("POST", "/api/v1/update/install"),
    ("POST", "/api/v1/update/check"),
    ("POST", "/api/v1/update/restart"),
];

/// Whether a route answers in fail-safe mode.
pub fn allowed_in_fail_safe(method: &str, path: &str) -> bool {
    FAIL_SAFE_ROUTES
        .iter()
        .any(|(m, p)| m.eq_ignore_ascii_case(method) && *p == path)
}

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone may call it (setup claim, login, the API document).
    Public,
    /// An authenticated principal allowed this permission.
    Permission(Permission),
}

/// What one operation declares.
#[derive(Debug, Clone, Copy)]
struct Route {
    requirement: Requirement,
    /// It declares the `mtls` scheme: only such routes accept a client
    /// certificate; the others need a session token even on a connection
    /// that presented one.
    accepts_certificate: bool,
}

/// Requirements by path template, then method: looked up on every request
/// by borrowed path and method, without allocating.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    routes: HashMap<String, HashMap<Method, Route>>,
}

impl RouteTable {
    /// Reads the requirements from an OpenAPI document; fails on a route
    /// whose requirement is missing or names no known permission.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<Self, String> {
        let value = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let mut routes: HashMap<String, HashMap<Method, Route>> = HashMap::new();
        let paths = value
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or("the API document has no paths")?;
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                let Ok(method) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let requirement =
                    requirement_of(operation).map_err(|e| format!("{method} {path}: {e}"))?;
                let route = Route {
                    requirement,
                    accepts_certificate: declares_scheme(operation, MTLS_SCHEME),
                };
                routes
                    .entry(path.clone())
                    .or_default()
                    .insert(method, route);
            }
        }
        Ok(Self { routes })
    }

    /// The requirement of a route, if it declared one.
    pub fn get(&self, method: &Method, path: &str) -> Option<Requirement> {
        Some(self.routes.get(path)?.get(method)?.requirement)
    }

    /// Whether a route accepts a service's client certificate (it
    /// declares the `mtls` scheme).
    pub fn accepts_client_certificate(&self, method: &Method, path: &str) -> bool {
        self.routes
            .get(path)
            .and_then(|r| r.get(method))
            .is_some_and(|r| r.accepts_certificate)
    }

    /// The methods declared for a path, sorted (for `Allow`).
    fn methods(&self, path: &str) -> Vec<&str> {
        let mut methods: Vec<&str> = self
            .routes
            .get(path)
            .map(|r| r.keys().map(Method::as_str).collect())
            .unwrap_or_default();
        methods.sort_unstable();
        methods
    }

    /// Every route with its requirement (for tests and documentation).
    pub fn routes(&self) -> impl Iterator<Item = (&Method, &str, Requirement)> {
        self.routes.iter().flat_map(|(p, methods)| {
            methods
                .iter()
                .map(move |(m, r)| (m, p.as_str(), r.requirement))
        })
    }
}

fn declares_scheme(operation: &serde_json::Value, scheme: &str) -> bool {
    operation
        .get("security")
        .and_then(|s| s.as_array())
        .is_some_and(|alternatives| {
            alternatives
                .iter()
                .any(|a| a.as_object().is_some_and(|a| a.contains_key(scheme)))
        })
}

fn requirement_of(operation: &serde_json::Value) -> Result<Requirement, String> {
    let security = operation
        .get("security")
        .and_then(|s| s.as_array())
        .ok_or("no security requirement declared")?;
    let mut found: Option<Permission> = None;
    for alternative in security {
        let Some(alternative) = alternative.as_object() else {
            return Err("malformed security requirement".into());
        };
        if alternative.is_empty() {
            return Ok(Requirement::Public);
        }
        for (scheme, scopes) in alternative {
            if scheme != SESSION_SCHEME && scheme != MTLS_SCHEME {
                return Err(format!("unknown security scheme {scheme}"));
            }
            let scopes = scopes.as_array().ok_or("scopes are not a list")?;
            let [scope] = scopes.as_slice() else {
                return Err("exactly one permission per route".into());
            };
            let permission: Permission = serde_json::from_value(scope.clone())
                .map_err(|_| format!("unknown permission {scope}"))?;
            if found.is_some_and(|p| p != permission) {
                return Err("alternatives name different permissions".into());
            }
            found = Some(permission);
        }
    }
    found
        .map(Requirement::Permission)
        .ok_or_else(|| "no security requirement declared".into())
}

/// What the connection layer knows about the peer, per TLS connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The TLS exporter value (RFC 9266) that binds sessions to this
    /// connection.
    pub binding: access::ChannelBinding,
    /// Common name of a verified client certificate, if one was presented.
    pub client_identity: Option<String>,
    /// Which interface accepted it.
    pub interface: &'static str,
}

/// The authenticated caller, for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// From where.
    pub connection: Connection,
}

impl Caller {
    /// The source for event records.
    pub fn source(&self) -> String {
        format!("{} via {}", self.connection.peer, self.connection.interface)
    }
}

/// The guard middleware.
pub(crate) async fn guard(
    State((shared, table)): State<(Arc<Shared>, Arc<RouteTable>)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // MatchedPath is reference-counted: cloning it allocates nothing.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let path = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or_default();
    let Some(requirement) = table.get(request.method(), path) else {
        // A known path with another method: 405 with the declared ones
        // (no handler runs; the request is refused either way).
        let allowed = table.methods(path);
        if !allowed.is_empty() {
            return Ok(method_not_allowed(request.method(), &allowed));
        }
        tracing::error!(method = %request.method(), %path, "route without a declared requirement refused");
        return Err(ApiError::Forbidden(
            "this route declares no access rule".into(),
        ));
    };
    if shared.fail_safe() && !allowed_in_fail_safe(request.method().as_str(), path) {
        return Err(ApiError::FailSafe);
    }
    let Requirement::Permission(permission) = requirement else {
        return Ok(next.run(request).await);
    };
    let connection = request
        .extensions()
        .get::<Connection>()
        .cloned()
        .ok_or_else(|| ApiError::internal("guard", "request without connection info"))?;
    let certificate_ok = table.accepts_client_certificate(request.method(), path);
    let principal = authenticate(&shared, &request, &connection, certificate_ok)?;
    match access::authorize(&principal, permission, access::Freshness::Session) {
        Ok(_) | Err(access::Error::ReauthenticationRequired { .. }) => {}
        Err(_) => {
            return Err(ApiError::Forbidden(format!(
                "{} may not {}",
                principal.id(),
                permission_name(permission)
            )));
        }
    }
    request.extensions_mut().insert(Caller {
        principal,
        connection,
    });
    Ok(next.run(request).await)
}

fn authenticate(
    shared: &Shared,
    request: &Request,
    connection: &Connection,
    certificate_ok: bool,
) -> Result<Principal, ApiError> {
    if let Some(cn) = connection
        .client_identity
        .as_ref()
        .filter(|_| certificate_ok)
    {
        // The chain was verified in the handshake against the service
        // anchors; the directory decides whether this identity is known.
        return shared.services.principal_for(cn).ok_or_else(|| {
            shared.unknown_client(cn, connection);
            ApiError::Forbidden("unknown client identity".into())
        });
    }
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthenticated)?;
    shared
        .sessions
        .validate(token.trim(), &connection.binding, Instant::now())
        .map_err(|_| ApiError::Unauthenticated)
}

fn method_not_allowed(method: &Method, allowed: &[&str]) -> Response {
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(ErrorBody {
            error: "method-not-allowed",
            message: format!(
                "{method} is not allowed here; allowed: {}",
                allowed.join(", ")
            ),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, v);
    }
    response
}

/// The kebab-case name of a permission, as in the API document.
pub fn permission_name(permission: Permission) -> String {
    serde_json::to_value(permission)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{permission:?}"))
}
