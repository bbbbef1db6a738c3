//! 5.2.6.2: malformed input to a public route is refused with a client
//! error and the device's error body, never a server error.

use hyper::Method;
use hyper::body::Bytes;

use super::{Context, describe_failure};
use crate::report::{Finding, Verdict};

/// The public route every probe goes to (it takes a JSON body).
const PATH: &str = "/api/v1/session";

/// 1 MiB: larger than any management request needs.
const OVERSIZED: usize = 1024 * 1024;

fn probes() -> Vec<(&'static str, &'static str, Bytes)> {
    let mut oversized = Vec::with_capacity(OVERSIZED + 32);
    oversized.extend_from_slice(br#"{"account":""#);
    oversized.resize(OVERSIZED, b'a');
    oversized.extend_from_slice(br#"","password":"x"}"#);
    vec![
        (
            "broken JSON",
            "application/json",
            Bytes::from_static(br#"{"account": "assess-probe", "password": "#),
        ),
        (
            "unknown field",
            "application/json",
            Bytes::from_static(
                br#"{"account":"assess-probe","password":"not-a-password","assess_probe":true}"#,
            ),
        ),
        (
            "wrong content type",
            "text/plain",
            Bytes::from_static(b"account=assess-probe&password=not-a-password"),
        ),
        (
            "oversized body (1 MiB)",
            "application/json",
            Bytes::from(oversized),
        ),
    ]
}

/// Each malformed request to `POST /api/v1/session` gets a 4xx with a JSON
/// error body (`error` and `message` strings).
pub(crate) async fn malformed_input(cx: &Context<'_>) -> Finding {
    let mut evidence = Vec::new();
    let (mut failed, mut errors) = (false, false);
    for (what, content_type, body) in probes() {
        let sent = format!("POST {PATH} {what} ({} bytes, {content_type})", body.len());
        match cx
            .http
            .send_patiently(Method::POST, PATH, &[("content-type", content_type)], body)
            .await
        {
            Ok(reply) if reply.status.is_client_error() && reply.error_code().is_some() => {
                evidence.push(format!("{sent} → {}", reply.summary()));
            }
            Ok(reply) if reply.status.is_client_error() => {
                failed = true;
                evidence.push(format!(
                    "{sent} → {} (refused, but WITHOUT a JSON error body)",
                    reply.summary()
                ));
            }
            Ok(reply) => {
                failed = true;
                let why = if reply.status.is_server_error() {
                    "a SERVER ERROR"
                } else {
                    "NOT REFUSED"
                };
                evidence.push(format!("{sent} → {} ({why})", reply.summary()));
            }
            Err(e) => {
                errors = true;
                evidence.push(format!("{sent} → {}", describe_failure(&e)));
            }
        }
    }
    let verdict = if failed {
        Verdict::Fail
    } else if errors {
        Verdict::Error
    } else {
        Verdict::Pass
    };
    Finding::new(
        "5.2.6.2",
        &[],
        "malformed-input",
        "Malformed input to a public route is refused with a 4xx and a JSON error body",
        verdict,
        evidence,
    )
}
