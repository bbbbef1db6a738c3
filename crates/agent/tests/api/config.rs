#![allow(clippy::unwrap_used, unreachable_pub)]

use agent_config::{Bundle, BundlePayload, DeviceSettings, SignerEntry, Target};
use hyper::{Method, StatusCode};
use keys::KeyRef;
use serde_json::{Value, json};

use crate::support::{self, Client, Device, Reply, assert_error_body};

async fn put(client: &mut Client, if_match: Option<&str>, settings: &Value) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(etag) = if_match {
        headers.push(("if-match", etag));
    }
    client
        .raw(
            Method::PUT,
            "/api/v1/config",
            &headers,
            serde_json::to_vec(settings).unwrap(),
        )
        .await
}

fn etag_header(reply: &Reply) -> String {
    reply
        .headers
        .get("etag")
        .unwrap_or_else(|| panic!("no ETag header: {:?}", reply.headers))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Changes need `If-Match` with the current ETag (428 without, 412 when
/// stale); an applied change answers with the new version and digest; a
/// weakening needs `danger_acknowledged` and raises a warning; every
/// change raises a configuration_changed notification.
#[tokio::test]
async fn config_changes_need_the_current_etag_and_weakenings_are_acknowledged_and_announced() {
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut owner = support::claimed(addr, &device).await;

    let read = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(read.status, StatusCode::OK);
    let etag = etag_header(&read);
    assert_eq!(read.body["etag"], etag.as_str());
    let version = read.body["version"].as_u64().unwrap();
    let digest = read.body["digest"].as_str().unwrap().to_owned();

    let renamed = json!({"device": {"name": "Lab unit 3"}});
    let missing = put(&mut owner, None, &renamed).await;
    assert_eq!(
        missing.status,
        StatusCode::PRECONDITION_REQUIRED,
        "{:?}",
        missing.body
    );
    assert_error_body(&missing);
    let stale = put(&mut owner, Some("\"v0-0000000000000000\""), &renamed).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{:?}",
        stale.body
    );
    assert_error_body(&stale);
    let unchanged = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(
        etag_header(&unchanged),
        etag,
        "a refused change changed the version"
    );

    let applied = put(&mut owner, Some(&etag), &renamed).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["version"], version + 1);
    assert_eq!(applied.body["previous_digest"], digest.as_str());
    assert_ne!(applied.body["digest"], digest.as_str());
    assert_eq!(applied.body["weakened"], json!([]));
    let new_etag = etag_header(&applied);
    assert_ne!(new_etag, etag);
    assert_eq!(applied.body["etag"], new_etag.as_str());
    let read = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(etag_header(&read), new_etag);
    assert_eq!(read.body["settings"]["device"]["name"], "Lab unit 3");
    assert_eq!(read.body["digest"], applied.body["digest"]);

    // The old ETag is now stale.
    let stale = put(&mut owner, Some(&etag), &json!({})).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    // A weakening without acknowledgement is refused and changes nothing.
    let weak = json!({"device": {"name": "Lab unit 3"}, "auth": {"session_idle_secs": 7200}});
    let refused = put(&mut owner, Some(&new_etag), &weak).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("auth.session_idle_secs"),
        "{:?}",
        refused.body
    );
    let read = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(etag_header(&read), new_etag);

    let mut acknowledged = weak.clone();
    acknowledged["danger_acknowledged"] = json!(["auth.session_idle_secs"]);
    let applied = put(&mut owner, Some(&new_etag), &acknowledged).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["weakened"], json!(["auth.session_idle_secs"]));
    assert_eq!(applied.body["version"], version + 2);

    let notes = support::notifications(&mut owner).await;
    let warning = notes
        .iter()
        .find(|n| n["kind"] == "warning")
        .unwrap_or_else(|| panic!("no warning notification: {notes:?}"));
    assert_eq!(warning["detail"]["setting"], "auth.session_idle_secs");
    let changes: Vec<&Value> = notes
        .iter()
        .filter(|n| n["kind"] == "configuration_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{notes:?}");
    assert_eq!(changes[1]["detail"]["version"], version + 2);
    assert_eq!(changes[1]["detail"]["digest"], applied.body["digest"]);
    agent.shutdown().await;
}

/// Writes a PEM `PUBLIC KEY` for `key`.
fn public_key_pem(key: &KeyRef) -> String {
    // Same armour as a certificate, other label.
    identity::x509::to_pem(key.public_key().spki_der()).replace("CERTIFICATE", "PUBLIC KEY")
}

fn payload(sequence: u64, serial: &str, name: &str) -> BundlePayload {
    let mut settings = DeviceSettings::default();
    settings.device.name = name.to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    BundlePayload {
        issuer: "fleet-manager".to_owned(),
        target: Target {
            serial: Some(serial.to_owned()),
            model: None,
        },
        sequence,
        not_after_unix: Some(now + 3600),
        settings,
    }
}

async fn post_bundle(client: &mut Client, wire: &[u8]) -> Reply {
    client
        .raw(
            Method::POST,
            "/api/v1/config/bundle",
            &[("content-type", "application/json")],
            wire.to_vec(),
        )
        .await
}

/// A bundle signed by a configured signer applies once; a replay, a
/// tampered payload, another device's bundle and an unknown signer are
/// refused and change nothing.
#[tokio::test]
async fn signed_bundles_apply_once_and_tampered_replayed_or_misdirected_ones_are_refused() {
    let device = Device::provision();
    let signer = support::soft_key(&device.path().join("signer-keys"), "fleet");
    let stranger = support::soft_key(&device.path().join("stranger-keys"), "fleet");
    let pem_path = device.path().join("fleet.pem");
    std::fs::write(&pem_path, public_key_pem(&signer)).unwrap();
    let mut file = device.file();
    file.config_signers = vec![SignerEntry {
        name: "fleet".to_owned(),
        public_key_file: pem_path,
    }];
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut owner = support::claimed(addr, &device).await;

    let first = Bundle::sign(&payload(1, "SN-0001", "Signed one"), &signer).unwrap();
    let applied = post_bundle(&mut owner, &first).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["version"], 2);
    let read = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(read.body["settings"]["device"]["name"], "Signed one");

    let replayed = post_bundle(&mut owner, &first).await;
    assert_eq!(
        replayed.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        replayed.body
    );
    assert!(
        replayed.body["message"]
            .as_str()
            .unwrap()
            .contains("sequence"),
        "{:?}",
        replayed.body
    );

    // Flip one character of the signed payload (base64), keep the signature.
    let mut tampered: Value = serde_json::from_slice(
        &Bundle::sign(&payload(2, "SN-0001", "Signed two"), &signer).unwrap(),
    )
    .unwrap();
    let text = tampered["payload"].as_str().unwrap().to_owned();
    let mut chars: Vec<char> = text.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    tampered["payload"] = Value::String(chars.into_iter().collect());
    let reply = post_bundle(&mut owner, &serde_json::to_vec(&tampered).unwrap()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("signature")
    );

    let elsewhere = Bundle::sign(&payload(3, "SN-9999", "Not for us"), &signer).unwrap();
    let reply = post_bundle(&mut owner, &elsewhere).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert!(reply.body["message"].as_str().unwrap().contains("SN-9999"));

    let unknown = Bundle::sign(&payload(4, "SN-0001", "Stranger"), &stranger).unwrap();
    let reply = post_bundle(&mut owner, &unknown).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert_error_body(&reply);

    let read = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(
        read.body["version"], 2,
        "a refused bundle changed the settings"
    );
    assert_eq!(read.body["settings"]["device"]["name"], "Signed one");

    // The refusals consumed no sequence number: the next one applies.
    let next = Bundle::sign(&payload(2, "SN-0001", "Signed two"), &signer).unwrap();
    let applied = post_bundle(&mut owner, &next).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["version"], 3);
    agent.shutdown().await;
}
