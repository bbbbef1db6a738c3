//! 5.2.6.1.4 (and 5.2.2.1.1): no standard password opens the device, and
//! nothing is served to a caller with no credentials at all.

use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use super::{Context, JSON, describe_failure};
use crate::report::{Finding, Verdict};

/// Well-known factory pairs (account, password), tried in this order. Five
/// at most: the device slows a source down after three failures and
/// locks it after more, and the assessor must not lock out the owner.
const DEFAULT_PAIRS: [(&str, &str); 5] = [
    ("admin", "admin"),
    ("admin", "password"),
    ("root", "root"),
    ("user", "user"),
    ("admin", ""),
];

/// Login attempts with each well-known pair are all refused. A 429
/// (slowed down or locked after failures) is a refusal too; any 2xx is a
/// login.
pub(crate) async fn default_credentials(cx: &Context<'_>) -> Finding {
    let mut evidence = Vec::new();
    let mut accepted = false;
    let mut unanswered = false;
    for (account, password) in DEFAULT_PAIRS {
        let body = serde_json::json!({ "account": account, "password": password });
        let shown = if password.is_empty() {
            "(empty)"
        } else {
            password
        };
        // These passwords are public knowledge; the token a device might
        // return is not, and is never quoted.
        let sent = format!("POST /api/v1/session {account} / {shown}");
        match cx
            .http
            .send(
                Method::POST,
                "/api/v1/session",
                &[JSON],
                Bytes::from(body.to_string()),
            )
            .await
        {
            Ok(reply) if reply.status.is_success() => {
                accepted = true;
                evidence.push(format!(
                    "{sent} → {}: LOGGED IN (response body withheld)",
                    reply.status.as_u16()
                ));
            }
            Ok(reply) if reply.status == StatusCode::TOO_MANY_REQUESTS => {
                evidence.push(format!(
                    "{sent} → {} (refused: slowed down after failures)",
                    reply.summary()
                ));
            }
            Ok(reply) if reply.status.is_client_error() => {
                evidence.push(format!("{sent} → {} (refused)", reply.summary()));
            }
            Ok(reply) => {
                unanswered = true;
                evidence.push(format!(
                    "{sent} → {} (neither refused nor accepted)",
                    reply.summary()
                ));
            }
            Err(e) => {
                unanswered = true;
                evidence.push(format!("{sent} → {}", describe_failure(&e)));
            }
        }
    }
    let verdict = if accepted {
        Verdict::Fail
    } else if unanswered {
        Verdict::Error
    } else {
        Verdict::Pass
    };
    Finding::new(
        "5.2.6.1.4",
        &["5.2.2.1.1"],
        "default-credentials",
        "Well-known default account/password pairs are refused",
        verdict,
        evidence,
    )
}

/// `GET /api/v1/status` without credentials is refused (401 or 403): a
/// device that answers anyone has, in effect, an empty default credential.
pub(crate) async fn anonymous_status(cx: &Context<'_>) -> Finding {
    let sent = "GET /api/v1/status without credentials";
    let (verdict, line) = match cx
        .http
        .send_patiently(Method::GET, "/api/v1/status", &[], Bytes::new())
        .await
    {
        Ok(reply) => {
            let verdict = match reply.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Verdict::Pass,
                StatusCode::NOT_FOUND => Verdict::NotApplicable,
                s if s.is_server_error() => Verdict::Error,
                _ => Verdict::Fail,
            };
            let note = match verdict {
                Verdict::Pass => " (refused)",
                Verdict::Fail if reply.status.is_success() => " (SERVED TO A STRANGER)",
                Verdict::Fail => " (not refused for lack of credentials)",
                Verdict::NotApplicable => " (the device has no status route)",
                Verdict::Error => "",
            };
            (verdict, format!("{sent} → {}{note}", reply.summary()))
        }
        Err(e) => (Verdict::Error, format!("{sent} → {}", describe_failure(&e))),
    };
    Finding::new(
        "5.2.6.1.4",
        &["5.2.2.1.1", "5.2.6.1.1"],
        "anonymous-status",
        "Device status is refused without credentials",
        verdict,
        vec![line],
    )
}
