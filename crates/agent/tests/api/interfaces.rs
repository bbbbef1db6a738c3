#![allow(clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{self, Client, Device, OWNER_PASSWORD, VIEWER_PASSWORD};

async fn set(client: &mut Client, name: &str, enabled: bool) -> support::Reply {
    client
        .call(
            Method::PUT,
            &format!("/api/v1/interfaces/{name}"),
            Some(json!({"enabled": enabled, "current_password": OWNER_PASSWORD})),
        )
        .await
}

fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits (bounded) until a port refuses TCP connections.
async fn closes(addr: SocketAddr) -> bool {
    support::eventually(Duration::from_secs(5), || async move {
        tokio::task::spawn_blocking(move || !accepts(addr))
            .await
            .unwrap()
    })
    .await
}

fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
}

/// The maintenance listener is off until an owner enables it; a disabled
/// listener's port refuses connections; the last enabled listener cannot
/// be disabled; a viewer may not change interfaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_interfaces_close_their_ports_and_the_last_one_stays() {
    let device = Device::provision();
    let mut file = device.file();
    file.api.maintenance_listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = device.start_with(file).await;
    let management = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    assert_eq!(
        agent.local_addr(agent::MAINTENANCE_API).await,
        None,
        "off by default"
    );
    let root = device.root();
    let mut owner = support::claimed(management, &device).await;
    support::create_viewer(&mut owner).await;

    let list = owner.call(Method::GET, "/api/v1/interfaces", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body.as_array().unwrap().len(), 2, "{:?}", list.body);
    assert_eq!(entry(&list.body, "management-api")["enabled"], true);
    assert_eq!(entry(&list.body, "maintenance-api")["enabled"], false);
    assert_eq!(
        entry(&list.body, "maintenance-api")["listening_on"],
        Value::Null
    );

    // A viewer may not, even with its password.
    let mut viewer = support::session(management, &root, "viewer", VIEWER_PASSWORD).await;
    let denied = viewer
        .call(
            Method::PUT,
            "/api/v1/interfaces/maintenance-api",
            Some(json!({"enabled": true, "current_password": VIEWER_PASSWORD})),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{:?}", denied.body);
    // The only enabled listener cannot be disabled.
    let last = set(&mut owner, "management-api", false).await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{:?}", last.body);
    assert!(accepts(management));

    let enabled = set(&mut owner, "maintenance-api", true).await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    let maintenance = agent.local_addr(agent::MAINTENANCE_API).await.unwrap();
    assert_eq!(enabled.body["listening_on"], maintenance.to_string());
    assert!(accepts(maintenance));

    // Over the maintenance link, turn the management listener off.
    let mut onsite = support::session(maintenance, &root, "owner", OWNER_PASSWORD).await;
    let off = set(&mut onsite, "management-api", false).await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
    assert_eq!(off.body["enabled"], false);
    assert!(
        closes(management).await,
        "{management} still accepts connections"
    );
    assert_eq!(agent.local_addr(agent::MANAGEMENT_API).await, None);
    let last = set(&mut onsite, "maintenance-api", false).await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{:?}", last.body);

    // And back on; then the maintenance listener off from there.
    let on = set(&mut onsite, "management-api", true).await;
    assert_eq!(on.status, StatusCode::OK, "{:?}", on.body);
    let management = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut owner = support::session(management, &root, "owner", OWNER_PASSWORD).await;
    let off = set(&mut owner, "maintenance-api", false).await;
    assert_eq!(off.status, StatusCode::OK, "{:?}", off.body);
    assert!(
        closes(maintenance).await,
        "{maintenance} still accepts connections"
    );
    let list = owner.call(Method::GET, "/api/v1/interfaces", None).await;
    assert_eq!(entry(&list.body, "maintenance-api")["enabled"], false);
    assert_eq!(
        entry(&list.body, "maintenance-api")["listening_on"],
        Value::Null
    );
    agent.shutdown().await;
}
