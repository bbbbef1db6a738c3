//! What the device publishes about itself to anyone (5.1.2.1.2, 5.1.3):
//! security.txt, the support end date and the user-facing security
//! documents, from the `bulwark comply build` output installed with the
//! firmware. Public by requirement, and nothing else is.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::Shared;

/// The documents served, by name (the `docs/<name>.md` files of the
/// comply output). A fixed list: a request names one of these or nothing.
const DOCUMENTS: [&str; 3] = [
    "security-features",
    "support-policy",
    "vulnerability-disclosure",
];

fn read(shared: &Shared, relative: &str, content_type: &'static str) -> ApiResult<Response> {
    let dir = shared.file.disclosure_dir.as_ref().ok_or_else(|| {
        ApiError::NotFound("this device publishes no disclosure documents".into())
    })?;
    let bytes = std::fs::read(dir.join(relative))
        .map_err(|_| ApiError::NotFound(format!("{relative} is not installed")))?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// security.txt (RFC 9116): where to report a vulnerability.
#[utoipa::path(
    get,
    path = "/.well-known/security.txt",
    tag = "disclosure",
    security(()),
    responses(
        (status = 200, description = "security.txt", content_type = "text/plain"),
        (status = 404, description = "Not installed", body = ErrorBody),
    )
)]
pub(crate) async fn security_txt(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    read(
        &shared,
        ".well-known/security.txt",
        "text/plain; charset=utf-8",
    )
}

/// Product, version, end of security support and the public documents.
#[utoipa::path(
    get,
    path = "/api/v1/disclosure",
    tag = "disclosure",
    security(()),
    responses(
        (status = 200, description = "Disclosure summary", content_type = "application/json"),
        (status = 404, description = "Not installed", body = ErrorBody),
    )
)]
pub(crate) async fn summary(State(shared): State<Arc<Shared>>) -> ApiResult<Response> {
    read(&shared, "public/disclosure.json", "application/json")
}

/// One public security document (Markdown).
#[utoipa::path(
    get,
    path = "/api/v1/disclosure/{document}",
    tag = "disclosure",
    security(()),
    params(("document" = String, Path, description = "security-features, support-policy or vulnerability-disclosure")),
    responses(
        (status = 200, description = "The document", content_type = "text/markdown"),
        (status = 404, description = "No such document", body = ErrorBody),
    )
)]
pub(crate) async fn document(
    State(shared): State<Arc<Shared>>,
    Path(document): Path<String>,
) -> ApiResult<Response> {
    let Some(name) = DOCUMENTS.iter().find(|d| **d == document) else {
        return Err(ApiError::NotFound(format!(
            "no public document named {document:?}; there are {}",
            DOCUMENTS.join(", ")
        )));
    };
    read(
        &shared,
        &format!("docs/{name}.md"),
        "text/markdown; charset=utf-8",
    )
}
