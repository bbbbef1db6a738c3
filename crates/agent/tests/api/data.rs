#![allow(clippy::unwrap_used, unreachable_pub)]

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, Device, OWNER_PASSWORD, VIEWER_PASSWORD, assert_error_body};

/// User-data removal and factory reset need the owner with the password
/// re-entered: without it 403, as a viewer 403 (even with its password);
/// with it a receipt, and a removal_receipt notification.
#[tokio::test]
async fn removal_and_reset_need_the_owner_with_the_password_re_entered() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();
    let mut owner = support::claimed(addr, &device).await;
    support::create_viewer(&mut owner).await;
    let mut viewer = support::session(addr, &root, "viewer", VIEWER_PASSWORD).await;

    let refusals = [
        ("/api/v1/user-data/removal", json!({})),
        ("/api/v1/reset", json!({"confirm": "factory-reset"})),
    ];
    for (path, body) in &refusals {
        let reply = owner.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path} without password: {:?}",
            reply.body
        );
        assert_error_body(&reply);
        let mut with_password = body.clone();
        with_password["current_password"] = json!(VIEWER_PASSWORD);
        let reply = viewer.call(Method::POST, path, Some(with_password)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path} as viewer: {:?}",
            reply.body
        );
    }
    let careless = owner
        .call(
            Method::POST,
            "/api/v1/reset",
            Some(json!({"confirm": "yes", "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(
        careless.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        careless.body
    );
    let wrong = owner
        .call(
            Method::POST,
            "/api/v1/user-data/removal",
            Some(json!({"current_password": "not my password at all"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{:?}", wrong.body);
    let before: Vec<Value> = support::notifications(&mut owner).await;
    assert!(before.iter().all(|n| n["kind"] != "removal_receipt"));

    // Regression: a user with no data was a 500 internal error.
    let unknown = owner
        .call(
            Method::POST,
            "/api/v1/user-data/removal",
            Some(json!({"user": "alice", "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{:?}", unknown.body);
    assert_error_body(&unknown);

    // The owner's own data (its sealed event-log identity, at least).
    let removed = owner
        .call(
            Method::POST,
            "/api/v1/user-data/removal",
            Some(json!({"user": "owner", "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    assert_eq!(removed.body["authorized_by"], "owner");
    assert_eq!(removed.body["users"], json!(["owner"]));
    assert_eq!(removed.body["keys_destroyed"], true);
    assert!(removed.body["at"].is_string() && removed.body["records_deleted"].is_u64());
    let notes = support::notifications(&mut owner).await;
    let receipt = notes
        .iter()
        .find(|n| n["kind"] == "removal_receipt")
        .unwrap_or_else(|| panic!("no removal receipt notification: {notes:?}"));
    assert_eq!(receipt["detail"]["authorized_by"], "owner");

    let reset = owner
        .call(
            Method::POST,
            "/api/v1/reset",
            Some(json!({"confirm": "factory-reset", "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    assert_eq!(reset.body["authorized_by"], "owner");
    // Every session ended with it.
    for client in [&mut owner, &mut viewer] {
        let status = client.call(Method::GET, "/api/v1/status", None).await;
        assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    }
    agent.shutdown().await;
}
