#![allow(clippy::unwrap_used, unreachable_pub)]

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::{self, Client, Device, OWNER_PASSWORD, assert_error_body};

/// A setup secret of the right shape that is not this unit's.
fn wrong_secret(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    let last = chars.iter().rposition(char::is_ascii_alphanumeric).unwrap();
    chars[last] = if chars[last] == '7' { '8' } else { '7' };
    chars.into_iter().collect()
}

/// The setup secret creates the first owner exactly once; nothing else
/// creates an account without a session; a factory reset brings the
/// secret back and ends the old owner.
#[tokio::test]
async fn setup_secret_works_once_and_factory_reset_brings_it_back() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut client = Client::connect(addr, &device.root()).await;

    // No other route creates an account without a session.
    let create = client
        .call(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({"account": "mallory", "role": "owner", "password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(create.status, StatusCode::UNAUTHORIZED);
    assert_error_body(&create);

    // A wrong secret is refused and creates nothing.
    let wrong = wrong_secret(&device.setup_secret);
    assert_ne!(wrong, device.setup_secret);
    let refused = client.claim(&wrong).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    assert_error_body(&refused);
    let login = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::UNAUTHORIZED, "no owner yet");

    let claimed = client.claim(&device.setup_secret).await;
    assert_eq!(claimed.status, StatusCode::CREATED, "{:?}", claimed.body);
    assert_eq!(claimed.body["role"], "owner");
    // Once claimed, every claim is refused, right secret or not.
    for secret in [device.setup_secret.clone(), wrong] {
        let again = client.claim(&secret).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    }

    let login = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK);
    let accounts = client.call(Method::GET, "/api/v1/accounts", None).await;
    let names: Vec<&str> = accounts
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner"], "the unauthenticated create made nothing");

    let reset = client
        .call(
            Method::POST,
            "/api/v1/reset",
            Some(json!({"confirm": "factory-reset", "current_password": OWNER_PASSWORD})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);

    // Every session ended; the old owner is gone.
    let status = client.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    let mut fresh = Client::connect(addr, &device.root()).await;
    let old = fresh.login("owner", OWNER_PASSWORD).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{:?}", old.body);

    // The setup secret works again, once.
    let reclaim = fresh
        .call(
            Method::POST,
            "/api/v1/setup/claim",
            Some(json!({
                "setup_secret": device.setup_secret,
                "account": "second-owner",
                "password": OWNER_PASSWORD,
            })),
        )
        .await;
    assert_eq!(reclaim.status, StatusCode::CREATED, "{:?}", reclaim.body);
    assert_eq!(
        fresh.claim(&device.setup_secret).await.status,
        StatusCode::CONFLICT
    );
    let mut second = support::session(addr, &device.root(), "second-owner", OWNER_PASSWORD).await;
    let status = second.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.body["claimed"], true);
    agent.shutdown().await;
}
