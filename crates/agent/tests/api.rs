//! The management API against a real agent on loopback: setup claim,
//! login, the guard on every route, configuration, interfaces, removal and
//! reset.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

/// Configuration: ETags, weakenings, signed bundles.
#[path = "api/config.rs"]
mod config;
/// User-data removal and factory reset over the API.
#[path = "api/data.rs"]
mod data;
/// Malformed, oversized and out-of-range input is refused without effect.
/// Disclosure documents are public; nothing else is.
#[path = "api/disclosure.rs"]
mod disclosure;
/// Notifications reach the local hub (MQTT over mutual TLS).
#[path = "api/hub.rs"]
mod hub;
#[path = "api/input.rs"]
mod input;
/// Enabling and disabling listener interfaces.
#[path = "api/interfaces.rs"]
mod interfaces;
/// Brute-force logins slow down, then lock.
#[path = "api/lockout.rs"]
mod lockout;
/// Machine clients with certificates from a service CA.
#[path = "api/machines.rs"]
mod machines;
/// Every documented route is guarded as documented; unknown paths are 404.
#[path = "api/routes.rs"]
mod routes;
/// Channel-bound sessions, logout, and the notification stream.
#[path = "api/sessions.rs"]
mod sessions;
/// The setup secret claims once; a factory reset brings it back.
#[path = "api/setup.rs"]
mod setup;
/// TLS versions and cipher suites, probed with `openssl s_client`.
#[path = "api/tls.rs"]
mod tls;
/// Secure updates: install from a TUF repository (owner only), a flipped
/// byte refused at its chunk, commit after boot, fail-safe mode.
#[path = "api/update.rs"]
mod update;

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
