//! The management API against a real agent on loopback: setup claim,
//! login, the guard on every route, configuration, interfaces, removal and
//! reset.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use hyper::{Method, StatusCode};
use support::{Client, Device, OWNER_PASSWORD};

#[tokio::test]
async fn setup_secret_claims_once_and_login_works() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut client = Client::connect(addr, &device.root()).await;
    let status = client.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    let claimed = client.claim(&device.setup_secret).await;
    assert_eq!(claimed.status, StatusCode::CREATED, "{:?}", claimed.body);
    let again = client.claim(&device.setup_secret).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let login = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    let status = client.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["device"]["development"], true);
    agent.shutdown().await;
}
