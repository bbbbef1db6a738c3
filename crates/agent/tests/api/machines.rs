#![allow(clippy::unwrap_used, unreachable_pub)]

use agent_config::ServiceEntry;
use hyper::{Method, StatusCode};

use crate::support::{self, Client, Device, assert_error_body};

/// A machine client with a certificate from the configured service CA and
/// a configured common name gets exactly its grants, without a token; a
/// certificate from another CA fails the handshake; an unknown common
/// name from the right CA is refused.
#[tokio::test]
async fn machine_clients_get_their_grants_and_nothing_else() {
    let device = Device::provision();
    let anchor = device.path().join("service-ca.pem");
    std::fs::write(&anchor, identity::x509::to_pem(device.root().as_ref())).unwrap();
    let mut file = device.file();
    file.tls.service_anchors = vec![anchor];
    file.services = vec![ServiceEntry {
        identity: "gateway-1".to_owned(),
        grants: vec!["read-status".to_owned()],
    }];
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let root = device.root();

    let gateway = support::service_identity(&device.ca, device.path(), "gateway-1");
    let mut machine =
        Client::connect_with(addr, support::client_config(&root, Some(&gateway))).await;
    let status = machine.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["device"]["serial"], "SN-0001");
    for (method, path) in [
        (Method::GET, "/api/v1/config"),
        (Method::GET, "/api/v1/accounts"),
    ] {
        let reply = machine.call(method, path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {:?}",
            reply.body
        );
        assert_error_body(&reply);
    }
    let reset = machine
        .call(
            Method::POST,
            "/api/v1/reset",
            Some(serde_json::json!({"confirm": "factory-reset"})),
        )
        .await;
    assert_eq!(reset.status, StatusCode::FORBIDDEN, "{:?}", reset.body);

    // Same name, another CA: the handshake (or the first request, which
    // meets the server's alert under TLS 1.3) fails.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _keys) = support::create_ca(other_dir.path(), "Other Corp");
    let forged = support::service_identity(&other_ca, other_dir.path(), "gateway-1");
    let outcome =
        match Client::try_connect_with(addr, support::client_config(&root, Some(&forged))).await {
            Err(e) => Err(e.to_string()),
            Ok(mut c) => c
                .try_raw(Method::GET, "/api/v1/status", &[], Vec::new())
                .await
                .map_err(|e| e.to_string()),
        };
    assert!(
        outcome.is_err(),
        "a foreign CA's certificate was accepted: {outcome:?}"
    );

    // The right CA, a name that is not configured.
    let intruder = support::service_identity(&device.ca, device.path(), "intruder-9");
    let mut stranger =
        Client::connect_with(addr, support::client_config(&root, Some(&intruder))).await;
    let reply = stranger.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert_error_body(&reply);

    // People without certificates still log in as usual.
    let mut owner = support::claimed(addr, &device).await;
    let status = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::OK);
    agent.shutdown().await;
}
