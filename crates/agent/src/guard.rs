//! The access guard: who is calling, and may they call this route?
//!
//! Each route's requirement is read from the OpenAPI document generated
//! from the handlers' own annotations (`security(("session" =
//! ["change-config"]))`, or `security(())` for the few public routes), so
//! the document a tester reads is the policy that is enforced. A route
//! with no declared requirement is refused for everyone: adding a route
//! cannot skip the check. The guard runs as a route layer, so unknown
//! paths stay 404 instead of revealing that authentication exists.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use access::{Permission, Principal};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::Shared;

/// The security scheme names used in the OpenAPI document.
pub const SESSION_SCHEME: &str = "session";
/// Mutual TLS with a client certificate from a configured service CA.
pub const MTLS_SCHEME: &str = "mtls";

/// What a route demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone may call it (setup claim, login, the API document).
    Public,
    /// An authenticated principal allowed this permission.
    Permission(Permission),
}

/// Requirements by (method, path template).
#[derive(Debug, Default, Clone)]
pub struct RouteTable(HashMap<(Method, String), Requirement>);

impl RouteTable {
    /// Reads the requirements from an OpenAPI document; fails on a route
    /// whose requirement is missing or names no known permission.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<Self, String> {
        let value = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let mut table = HashMap::new();
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
                table.insert((method, path.clone()), requirement);
            }
        }
        Ok(Self(table))
    }

    /// The requirement of a route, if it declared one.
    pub fn get(&self, method: &Method, path: &str) -> Option<Requirement> {
        self.0.get(&(method.clone(), path.to_owned())).copied()
    }

    /// Every route with its requirement (for tests and documentation).
    pub fn routes(&self) -> impl Iterator<Item = (&Method, &str, Requirement)> {
        self.0.iter().map(|((m, p), r)| (m, p.as_str(), *r))
    }
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
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(requirement) = table.get(request.method(), &path) else {
        tracing::error!(method = %request.method(), %path, "route without a declared requirement refused");
        return Err(ApiError::Forbidden(
            "this route declares no access rule".into(),
        ));
    };
    let Requirement::Permission(permission) = requirement else {
        return Ok(next.run(request).await);
    };
    let connection = request
        .extensions()
        .get::<Connection>()
        .cloned()
        .ok_or_else(|| ApiError::internal("guard", "request without connection info"))?;
    let principal = authenticate(&shared, &request, &connection)?;
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
) -> Result<Principal, ApiError> {
    if let Some(cn) = &connection.client_identity {
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

/// The kebab-case name of a permission, as in the API document.
pub fn permission_name(permission: Permission) -> String {
    serde_json::to_value(permission)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{permission:?}"))
}
