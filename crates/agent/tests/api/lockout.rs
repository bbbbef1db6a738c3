#![allow(clippy::unwrap_used, unreachable_pub)]

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::support::{self, Client, Device, OWNER_PASSWORD, Reply, assert_error_body};

/// Configured lockout: 4 failures, 120 s (below 300 s, so acknowledged).
const LOCK_AFTER: u32 = 4;
const LOCK_SECS: u64 = 120;

fn retry_after(reply: &Reply) -> u64 {
    reply
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", reply.body))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Wrong passwords slow down after 3 failures (429 slow-down with
/// Retry-After), lock after the configured count (429 locked), and during
/// the lock even the right password is refused. The lockout settings come
/// from the stored device settings at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_slow_down_then_lock_even_the_right_password() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut owner = support::claimed(addr, &device).await;
    let changed = support::put_settings(
        &mut owner,
        json!({
            "auth": {"lockout_after": LOCK_AFTER, "lockout_secs": LOCK_SECS},
            "danger_acknowledged": ["auth.lockout_secs"],
        }),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    agent.shutdown().await;

    // The lockout policy is read at start.
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut client = Client::connect(addr, &device.root()).await;
    let wrong = "not the password at all 99";

    for n in 1..=3 {
        let reply = client.login("owner", wrong).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "failure {n}");
    }
    // Slowed: refused before the password is checked, with a wait.
    let slowed = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(
        slowed.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        slowed.body
    );
    assert_error_body(&slowed);
    assert_eq!(slowed.body["error"], "slow-down");
    let wait = retry_after(&slowed);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;

    // The fourth failure locks.
    let reply = client.login("owner", wrong).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
    let locked = client.login("owner", wrong).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(locked.body["error"], "locked", "{:?}", locked.body);
    let wait = retry_after(&locked);
    assert!(
        wait > 0 && wait <= LOCK_SECS,
        "Retry-After {wait} outside 1..={LOCK_SECS}"
    );

    // During the lock the right password is refused too, from this source
    // for any account and for this account from anywhere.
    let right = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(
        right.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        right.body
    );
    assert_eq!(right.body["error"], "locked");
    assert!(client.token.is_none());
    let mut other = Client::connect(addr, &device.root()).await;
    let sprayed = other.login("someone-else", OWNER_PASSWORD).await;
    assert_eq!(
        sprayed.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        sprayed.body
    );
    agent.shutdown().await;
}
