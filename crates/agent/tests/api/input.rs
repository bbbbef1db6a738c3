#![allow(clippy::unwrap_used, unreachable_pub)]

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, Client, Device, OWNER_PASSWORD, Reply, assert_error_body};

/// What must not change: configuration version and ETag, accounts,
/// interfaces.
async fn snapshot(client: &mut Client) -> (Value, Value, Value) {
    let config = client.call(Method::GET, "/api/v1/config", None).await;
    let accounts = client.call(Method::GET, "/api/v1/accounts", None).await;
    let interfaces = client.call(Method::GET, "/api/v1/interfaces", None).await;
    assert_eq!(config.status, StatusCode::OK);
    (
        json!([config.body["version"], config.body["etag"]]),
        accounts.body,
        interfaces.body,
    )
}

fn refused(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(
        reply.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&reply.raw)
    );
    assert_error_body(reply);
}

/// Oversized, mistyped, malformed, unknown, out-of-range and invalid UTF-8
/// bodies, and path traversal in names, each get a 4xx with the JSON
/// error body and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_an_error_body_and_changes_nothing() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();
    let mut owner = support::claimed(addr, &device).await;
    let before = snapshot(&mut owner).await;
    let etag = before.0[1].as_str().unwrap().to_owned();
    let headers = [
        ("content-type", "application/json"),
        ("if-match", etag.as_str()),
    ];

    // Oversized (> api.max_body_bytes = 65536), each on a connection of its
    // own: the agent may close it after refusing an unread body.
    let big = format!(r#"{{"device": {{"name": "{}"}}}}"#, "a".repeat(70_000)).into_bytes();
    for path in [
        "/api/v1/config",
        "/api/v1/config/bundle",
        "/api/v1/accounts",
    ] {
        let mut c = support::session(addr, &root, "owner", OWNER_PASSWORD).await;
        let method = if path == "/api/v1/config" {
            Method::PUT
        } else {
            Method::POST
        };
        let reply = c.raw(method, path, &headers, big.clone()).await;
        refused(
            &reply,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("oversized {path}"),
        );
    }

    // Wrong content type.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &[("content-type", "text/plain"), ("if-match", &etag)],
            br#"{"device": {"name": "x"}}"#.to_vec(),
        )
        .await;
    refused(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain");
    let reply = owner
        .raw(
            Method::POST,
            "/api/v1/config/bundle",
            &[("content-type", "text/plain")],
            b"{}".to_vec(),
        )
        .await;
    refused(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "text/plain bundle",
    );

    // Malformed JSON.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            br#"{"device": "#.to_vec(),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "malformed JSON");

    // Unknown field, named in the message.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            br#"{"device": {"name": "x"}, "backdoor_enabled": true}"#.to_vec(),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "unknown field");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("backdoor_enabled"),
        "{:?}",
        reply.body
    );
    let reply = owner
        .call(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({
                "account": "eve", "role": "viewer", "password": OWNER_PASSWORD,
                "current_password": OWNER_PASSWORD, "is_admin": true,
            })),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "unknown account field");
    assert!(reply.body["message"].as_str().unwrap().contains("is_admin"));

    // Below the security floor.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            br#"{"auth": {"min_password_length": 4}}"#.to_vec(),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "min_password_length 4");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("auth.min_password_length"),
        "{:?}",
        reply.body
    );
    // Out of any range, and a role that does not exist.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            br#"{"auth": {"session_idle_secs": 5}}"#.to_vec(),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "session_idle_secs 5");
    let reply = owner
        .call(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({
                "account": "eve", "role": "root", "password": OWNER_PASSWORD,
                "current_password": OWNER_PASSWORD,
            })),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "role root");

    // Invalid UTF-8 inside a JSON string.
    let reply = owner
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            b"{\"device\": {\"name\": \"ab\xff\xfecd\"}}".to_vec(),
        )
        .await;
    refused(&reply, StatusCode::BAD_REQUEST, "invalid UTF-8");

    // Path traversal in names.
    let reply = owner
        .call(
            Method::DELETE,
            "/api/v1/accounts/..%2F..%2Fetc",
            Some(json!({"current_password": OWNER_PASSWORD})),
        )
        .await;
    assert!(
        matches!(
            reply.status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
        ),
        "account traversal: {} {:?}",
        reply.status,
        reply.body
    );
    assert_error_body(&reply);
    let reply = owner
        .call(
            Method::PUT,
            "/api/v1/interfaces/..%2Fx",
            Some(json!({"enabled": false, "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert!(
        matches!(
            reply.status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
        ),
        "interface traversal: {} {:?}",
        reply.status,
        reply.body
    );
    assert_error_body(&reply);
    for user in ["../x", "..", "a/b", "", "x\u{0}y"] {
        let reply = owner
            .call(
                Method::POST,
                "/api/v1/user-data/removal",
                Some(json!({"user": user, "current_password": OWNER_PASSWORD})),
            )
            .await;
        refused(&reply, StatusCode::BAD_REQUEST, &format!("user {user:?}"));
    }

    assert_eq!(snapshot(&mut owner).await, before, "state changed");
    // Nothing was removed either: no removal receipt was raised.
    let kinds: Vec<Value> = support::notifications(&mut owner)
        .await
        .into_iter()
        .map(|n| n["kind"].clone())
        .collect();
    assert!(!kinds.contains(&json!("removal_receipt")), "{kinds:?}");
    agent.shutdown().await;
}
