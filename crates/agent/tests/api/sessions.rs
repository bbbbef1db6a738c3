#![allow(clippy::unwrap_used, unreachable_pub)]

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::{self, Client, Device, OWNER_PASSWORD};

/// A token works only on the TLS connection that logged in; presenting
/// it on another connection is treated as theft and ends the session
/// (access::session revokes on a wrong channel). Logout ends it too.
#[tokio::test]
async fn session_tokens_are_bound_to_their_connection_and_end_at_logout() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();
    let mut owner = support::claimed(addr, &device).await;
    let token = owner.token.clone().unwrap();
    let ok = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(ok.status, StatusCode::OK);

    let mut thief = Client::connect(addr, &root).await;
    thief.token = Some(token.clone());
    let stolen = thief.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED, "{:?}", stolen.body);
    support::assert_error_body(&stolen);
    let revoked = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(
        revoked.status,
        StatusCode::UNAUTHORIZED,
        "a token seen on a foreign connection must end its session"
    );

    // A fresh session; logout ends it.
    let login = owner.login("owner", OWNER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    let token = owner.token.clone().unwrap();
    assert_eq!(
        owner.call(Method::GET, "/api/v1/status", None).await.status,
        StatusCode::OK
    );
    let logout = owner.call(Method::DELETE, "/api/v1/session", None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let after = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{:?}", after.body);
    assert_eq!(
        owner.token.as_deref(),
        Some(token.as_str()),
        "the same token was presented"
    );
    agent.shutdown().await;
}

/// The notification stream is an event stream that delivers a
/// notification raised after it was opened.
#[tokio::test]
async fn notification_stream_delivers_a_later_notification() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();
    let mut listener = support::claimed(addr, &device).await;
    let response = listener.open("/api/v1/notifications/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut body = response.into_body();

    let mut changer = support::session(addr, &root, "owner", OWNER_PASSWORD).await;
    let changed =
        support::put_settings(&mut changer, json!({"device": {"name": "Streamed"}})).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let version = changed.body["version"].as_u64().unwrap();

    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = body.frame().await.expect("stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
            // Only complete lines: an event may span frames.
            let complete = seen.rsplit_once('\n').map_or("", |(c, _)| c);
            for line in complete.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let note: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                if note["kind"] == "configuration_changed" && note["detail"]["version"] == version {
                    return note;
                }
            }
        }
    })
    .await;
    let note =
        found.unwrap_or_else(|_| panic!("no configuration_changed event in 5 s; got {seen:?}"));
    assert_eq!(note["detail"]["by"], "owner");
    assert!(seen.contains("event: notification"), "{seen:?}");
    drop(body);
    drop(listener);
    agent.shutdown().await;
}
