//! Behaviour baselines through the MQTT gateway against the real
//! Mosquitto: after a device learned its topic, a new topic is reported
//! with the evidence; a topic reached through an MQTT 5 topic alias is
//! the topic it stands for, not a new one.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A PUBLISH (QoS 0) that sets or uses topic alias `alias`.
fn publish_aliased(topic: &str, alias: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic.as_bytes());
    b.extend([3, 0x23]);
    b.extend(alias.to_be_bytes());
    b.extend_from_slice(payload);
    raw::frame(0x30, &b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_topic_after_learning_is_reported_and_aliases_resolve() {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let policy = format!("[anomaly]\nlearning_secs = 0\nlearning_observations = 5\n{POLICY}");
    let gw = Gateway::start(&pki, broker.addr(), &policy).await;
    let mut sub = Client::direct(&broker, "watcher");
    sub.connected().await.unwrap();
    sub.subscribed("#").await;

    let mut s = raw::connect(&gw, pki.device_tls(&pki.ca, "sensor-1")).await;
    s.write_all(&raw::connect_v5("sensor-1")).await.unwrap();
    let mut first = [0u8; 2];
    timeout(WAIT, s.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first[0], 0x20, "CONNACK expected");
    let mut rest = vec![0u8; usize::from(first[1])];
    s.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest[1], 0, "connection accepted");

    // Learning: five messages to one topic, the first setting alias 1.
    let mut bytes = publish_aliased("sensors/sensor-1/temp", 1, b"21.5");
    for _ in 0..4 {
        bytes.extend(raw::publish_v5("sensors/sensor-1/temp", b"21.6"));
    }
    // Learned from here on: the alias names a known topic ...
    bytes.extend(publish_aliased("", 1, b"21.7"));
    // ... and this one is new.
    bytes.extend(raw::publish_v5("sensors/sensor-1/door", b"open"));
    s.write_all(&bytes).await.unwrap();

    // Alert only: every message still reaches the broker.
    let got = sub.received(7).await;
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(got[6], "sensors/sensor-1/door");
    let anomalies: Vec<_> = gw
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == action::ANOMALY)
        .collect();
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    let e = &anomalies[0];
    assert_eq!(e.device.as_deref(), Some("sensor-1"));
    assert!(
        e.detail.starts_with("first-seen")
            && e.detail.contains(
                "first topic `sensors/sensor-1/door` after 6 messages; 1 activities known"
            ),
        "{}",
        e.detail
    );
    assert!(refusals(&gw).is_empty());
}
