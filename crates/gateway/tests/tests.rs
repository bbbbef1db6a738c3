//! Integration tests of the MQTT gateway against a real Mosquitto broker,
//! with real MQTT clients (rumqttc, over mutual TLS with certificates from
//! a real manufacturer CA). Packets no real client will send (wildcard
//! topics, oversized lengths) go over a raw TLS connection.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Behaviour baselines and anomaly events on MQTT traffic.
mod anomaly;
// CoAP through the gateway against a real libcoap server and client.
mod coap;
// Modbus TCP through the gateway against a real pymodbus server.
mod modbus;
// MQTT connection limits, deadlines, and a flood beside a well-behaved
// device.
mod limits;
// The metrics endpoint, gateway events in the tamper-evident event log,
// quarantine across a restart, and the recovery path.
mod observe;
mod support;

use std::sync::Arc;
use std::time::Duration;

use gateway::ViolationKind;
use gateway::audit::action;
use gateway::mqtt::codec;
use rumqttc::TlsConfiguration;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use support::{Gateway, Mosquitto, Pki};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

const POLICY: &str = r#"
[limits]
max_packet_size = 4096

[quarantine]
strikes = 3
window_secs = 30
duration_secs = 2

[groups.sensors]
publish = ["sensors/%c/#"]
subscribe = ["commands/%c/+"]
max_qos = 1

[[devices]]
name = "sensor-1"
identity = "sensor-1"
group = "sensors"

[[devices]]
name = "flooder"
identity = "urn:uuid:flooder"
client_id = "flooder"
group = "sensors"
rules = { messages_per_second = 5 }
"#;

/// A rumqttc MQTT 5 client whose event loop runs in a task until its
/// first error.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    fn start(opts: MqttOptions) -> Self {
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            for _ in 0..1_000_000 {
                let e = eventloop.poll().await;
                let stop = e.is_err();
                if tx.send(e).is_err() || stop {
                    return;
                }
            }
        });
        Self {
            client,
            events,
            task,
        }
    }

    fn via_gateway(gw: &Gateway, tls: Arc<rustls::ClientConfig>, client_id: &str) -> Self {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", gw.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_transport(rumqttc::Transport::tls_with_config(
            TlsConfiguration::Rustls(tls),
        ));
        Self::start(opts)
    }

    fn direct(broker: &Mosquitto, client_id: &str) -> Self {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker.port);
        opts.set_keep_alive(Duration::from_secs(30));
        Self::start(opts)
    }

    async fn next(&mut self) -> Result<Event, ConnectionError> {
        timeout(WAIT, self.events.recv())
            .await
            .expect("no MQTT event within the bound")
            .expect("event loop ended")
    }

    /// Waits for CONNACK (or the error that replaced it).
    async fn connected(&mut self) -> Result<(), ConnectionError> {
        for _ in 0..100 {
            if let Event::Incoming(Packet::ConnAck(_)) = self.next().await? {
                return Ok(());
            }
        }
        panic!("no CONNACK");
    }

    /// Waits for the error that ends the connection.
    async fn error(&mut self) -> ConnectionError {
        for _ in 0..10_000 {
            if let Err(e) = self.next().await {
                return e;
            }
        }
        panic!("connection did not end");
    }

    async fn subscribed(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        for _ in 0..100 {
            if let Event::Incoming(Packet::SubAck(_)) = self.next().await.unwrap() {
                return;
            }
        }
        panic!("no SUBACK");
    }

    /// The topics of the next `n` publishes received.
    async fn received(&mut self, n: usize) -> Vec<String> {
        let mut topics = Vec::new();
        for _ in 0..10_000 {
            if topics.len() == n {
                break;
            }
            if let Event::Incoming(Packet::Publish(p)) = self.next().await.unwrap() {
                topics.push(String::from_utf8(p.topic.to_vec()).unwrap());
            }
        }
        topics
    }
}

fn disconnect_reason(e: &ConnectionError) -> Option<DisconnectReasonCode> {
    match e {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            Some(*reason_code)
        }
        _ => None,
    }
}

fn refusals(gw: &Gateway) -> Vec<ViolationKind> {
    gw.audit
        .events()
        .iter()
        .filter(|e| e.action == action::MQTT_REFUSED)
        .filter_map(|e| e.reason)
        .collect()
}

async fn setup() -> (Pki, Mosquitto, Gateway) {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let gw = Gateway::start(&pki, broker.addr(), POLICY).await;
    (pki, broker, gw)
}

/// Raw bytes over mutual TLS, for packets no real client sends.
mod raw {
    use super::*;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub(crate) type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

    pub(crate) async fn connect(gw: &Gateway, tls: Arc<rustls::ClientConfig>) -> Stream {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap()
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        codec::encode_remaining(body.len(), &mut f);
        f.extend_from_slice(body);
        f
    }

    pub(crate) fn connect_v5(client_id: &str) -> Vec<u8> {
        let mut b = string("MQTT");
        b.extend([5, 0x02, 0, 30, 0]);
        b.extend(string(client_id));
        frame(0x10, &b)
    }

    pub(crate) fn publish_v5(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = string(topic);
        b.push(0);
        b.extend_from_slice(payload);
        frame(0x30, &b)
    }

    /// Every frame the gateway sends until it closes (bounded).
    pub(crate) async fn frames_until_closed(s: &mut Stream) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        for _ in 0..1000 {
            match timeout(WAIT, s.read(&mut chunk))
                .await
                .expect("gateway did not close")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let mut frames = Vec::new();
        let mut rest = &buf[..];
        while let Ok(Some(h)) = codec::frame_header(rest, codec::MAX_REMAINING_LENGTH) {
            if rest.len() < h.frame_len() {
                break;
            }
            frames.push(rest[..h.frame_len()].to_vec());
            rest = &rest[h.frame_len()..];
        }
        frames
    }

    /// Connects as `client_id`, sends `bytes` after the CONNACK, and
    /// returns the reason code of the DISCONNECT the gateway answers with.
    pub(crate) async fn refused_with(gw: &Gateway, pki: &Pki, client_id: &str, bytes: &[u8]) -> u8 {
        let mut s = connect(gw, pki.device_tls(&pki.ca, client_id)).await;
        s.write_all(&connect_v5(client_id)).await.unwrap();
        let mut first = [0u8; 2];
        timeout(WAIT, s.read_exact(&mut first))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first[0], 0x20, "CONNACK expected");
        let mut rest = vec![0u8; usize::from(first[1])];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest[1], 0, "connection accepted");
        s.write_all(bytes).await.unwrap();
        let frames = frames_until_closed(&mut s).await;
        let last = frames.last().expect("a DISCONNECT");
        assert_eq!(last[0], 0xe0, "DISCONNECT expected, got {frames:?}");
        last[2]
    }
}

/// Allowed traffic flows through to the broker and back.
mod forwarding {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allowed_publish_reaches_a_subscriber_on_the_broker() {
        let (pki, broker, gw) = setup().await;
        let mut sub = Client::direct(&broker, "watcher");
        sub.connected().await.unwrap();
        sub.subscribed("#").await;

        let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
        dev.connected().await.unwrap();
        dev.client
            .publish("sensors/sensor-1/temp", QoS::AtLeastOnce, false, "21.5")
            .await
            .unwrap();
        assert_eq!(sub.received(1).await, ["sensors/sensor-1/temp"]);

        // And the other way: a command published on the broker reaches the
        // device through its allowed subscription.
        dev.subscribed("commands/sensor-1/+").await;
        sub.client
            .publish("commands/sensor-1/reboot", QoS::AtLeastOnce, false, "now")
            .await
            .unwrap();
        assert_eq!(dev.received(1).await, ["commands/sensor-1/reboot"]);
        assert!(refusals(&gw).is_empty());
        let connected = gw.audit.events();
        assert!(
            connected
                .iter()
                .any(|e| e.action == action::MQTT_CONNECTED
                    && e.device.as_deref() == Some("sensor-1"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn policy_reload_keeps_allowed_connections() {
        let (pki, broker, gw) = setup().await;
        let mut sub = Client::direct(&broker, "watcher");
        sub.connected().await.unwrap();
        sub.subscribed("#").await;
        let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
        dev.connected().await.unwrap();
        dev.client
            .publish("sensors/sensor-1/a", QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
        assert_eq!(sub.received(1).await, ["sensors/sensor-1/a"]);

        let wider = POLICY.replace(
            "publish = [\"sensors/%c/#\"]",
            "publish = [\"sensors/%c/#\", \"status/%c\"]",
        );
        gw.proxy
            .policy()
            .replace(gateway::Policy::from_toml(&wider, "reloaded").unwrap());
        dev.client
            .publish("status/sensor-1", QoS::AtLeastOnce, false, "up")
            .await
            .unwrap();
        assert_eq!(sub.received(1).await, ["status/sensor-1"]);
        assert_eq!(gw.proxy.active_connections(), 1);
    }
}

/// Refusals: the packet never reaches the broker, the connection closes,
/// MQTT 5 clients get a reason code, an event is recorded.
mod refusal {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbidden_topic_is_refused_with_not_authorized() {
        let (pki, broker, gw) = setup().await;
        let mut sub = Client::direct(&broker, "watcher");
        sub.connected().await.unwrap();
        sub.subscribed("#").await;

        let tls = pki.device_tls(&pki.ca, "sensor-1");
        let mut dev = Client::via_gateway(&gw, tls.clone(), "sensor-1");
        dev.connected().await.unwrap();
        dev.client
            .publish("sensors/sensor-2/temp", QoS::AtMostOnce, false, "spoof")
            .await
            .unwrap();
        let e = dev.error().await;
        assert_eq!(
            disconnect_reason(&e),
            Some(DisconnectReasonCode::NotAuthorized),
            "{e:?}"
        );

        // A later allowed message is the first the subscriber sees.
        let mut dev = Client::via_gateway(&gw, tls, "sensor-1");
        dev.connected().await.unwrap();
        dev.client
            .publish("sensors/sensor-1/ok", QoS::AtLeastOnce, false, "1")
            .await
            .unwrap();
        assert_eq!(sub.received(1).await, ["sensors/sensor-1/ok"]);
        assert_eq!(refusals(&gw), [ViolationKind::NotAuthorized]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscription_outside_the_policy_is_refused() {
        let (pki, _broker, gw) = setup().await;
        let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
        dev.connected().await.unwrap();
        dev.client.subscribe("#", QoS::AtMostOnce).await.unwrap();
        let e = dev.error().await;
        assert_eq!(
            disconnect_reason(&e),
            Some(DisconnectReasonCode::NotAuthorized),
            "{e:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_3_client_is_just_closed() {
        let (pki, _broker, gw) = setup().await;
        let mut opts = rumqttc::MqttOptions::new("sensor-1", "127.0.0.1", gw.port);
        opts.set_transport(rumqttc::Transport::tls_with_config(
            TlsConfiguration::Rustls(pki.device_tls(&pki.ca, "sensor-1")),
        ));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let mut connacked = false;
        let mut ended = None;
        for _ in 0..100 {
            match timeout(WAIT, eventloop.poll()).await.unwrap() {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    connacked = true;
                    client
                        .publish("elsewhere/x", rumqttc::QoS::AtMostOnce, false, "x")
                        .await
                        .unwrap();
                }
                Ok(_) => {}
                Err(e) => {
                    ended = Some(e);
                    break;
                }
            }
        }
        assert!(connacked);
        assert!(ended.is_some(), "connection stayed open");
        assert_eq!(refusals(&gw), [ViolationKind::NotAuthorized]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wildcard_in_a_publish_topic_is_refused() {
        let (pki, _broker, gw) = setup().await;
        let code = raw::refused_with(
            &gw,
            &pki,
            "sensor-1",
            &raw::publish_v5("sensors/sensor-1/#", b"x"),
        )
        .await;
        assert_eq!(code, 0x90, "Topic Name invalid");
        let code = raw::refused_with(&gw, &pki, "sensor-1", &raw::publish_v5("", b"x")).await;
        assert_eq!(code, 0x90);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_remaining_length_is_refused_before_the_body() {
        let (pki, _broker, gw) = setup().await;
        // Announces 268,435,455 bytes and sends none of them: the refusal
        // comes at once, so nothing waited for (or allocated) the body.
        let code = raw::refused_with(&gw, &pki, "sensor-1", &[0x30, 0xff, 0xff, 0xff, 0x7f]).await;
        assert_eq!(code, 0x95, "Packet too large");
        // Just over the policy's 4096.
        let code = raw::refused_with(&gw, &pki, "sensor-1", &[0x30, 0x81, 0x20]).await;
        assert_eq!(code, 0x95);
        // A fifth length byte is malformed.
        let code =
            raw::refused_with(&gw, &pki, "sensor-1", &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]).await;
        assert_eq!(code, 0x81, "Malformed packet");
        assert_eq!(
            refusals(&gw),
            [
                ViolationKind::PacketTooLarge,
                ViolationKind::PacketTooLarge,
                ViolationKind::Malformed
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_state_violations() {
        let (pki, _broker, gw) = setup().await;
        // Second CONNECT, a server-only packet, QoS 3.
        assert_eq!(
            raw::refused_with(&gw, &pki, "sensor-1", &raw::connect_v5("sensor-1")).await,
            0x82
        );
        assert_eq!(
            raw::refused_with(&gw, &pki, "sensor-1", &[0xd0, 0x00]).await,
            0x82
        );
        assert_eq!(
            raw::refused_with(&gw, &pki, "sensor-1", &[0x36, 0x03, 0, 1, b'a']).await,
            0x81
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_id_must_match_the_certificate() {
        let (pki, _broker, gw) = setup().await;
        let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-2");
        let e = dev.connected().await.unwrap_err();
        assert!(
            matches!(
                e,
                ConnectionError::ConnectionRefused(ConnectReturnCode::ClientIdentifierNotValid)
            ),
            "{e:?}"
        );
        assert_eq!(refusals(&gw), [ViolationKind::ClientIdMismatch]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn certificate_from_an_unknown_ca_is_refused() {
        let (pki, _broker, gw) = setup().await;
        let mut dev =
            Client::via_gateway(&gw, pki.device_tls(&pki.stranger, "sensor-1"), "sensor-1");
        // TLS 1.3: the client learns of the refusal as an alert after its
        // side of the handshake.
        let e = dev.connected().await.unwrap_err();
        assert!(format!("{e:?}").contains("UnknownCA"), "{e:?}");
        let ok = testkit::wait_until(WAIT, || {
            gw.audit
                .events()
                .iter()
                .any(|e| e.action == action::TLS_REFUSED)
        });
        assert!(ok, "no TLS refusal event: {:?}", gw.audit.events());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn device_not_in_the_policy_is_refused() {
        let (pki, _broker, gw) = setup().await;
        let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "intruder"), "intruder");
        let e = dev.connected().await.unwrap_err();
        assert!(
            matches!(
                e,
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
            ),
            "{e:?}"
        );
    }
}

/// Rate limits lead to quarantine, and quarantine lifts.
mod quarantine {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flooding_device_is_quarantined_then_released() {
        let (pki, _broker, gw) = setup().await;
        let tls = pki.device_tls(&pki.ca, "flooder");
        let mut dev = Client::via_gateway(&gw, tls.clone(), "flooder");
        dev.connected().await.unwrap();
        for i in 0..40 {
            dev.client
                .publish(format!("sensors/flooder/{i}"), QoS::AtMostOnce, false, "x")
                .await
                .unwrap();
        }
        let e = dev.error().await;
        assert_eq!(
            disconnect_reason(&e),
            Some(DisconnectReasonCode::MessageRateTooHigh),
            "{e:?}"
        );
        let now = tokio::time::Instant::now();
        let listed = gw.proxy.quarantine().list(now);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].device, "flooder");
        assert!(
            gw.audit
                .events()
                .iter()
                .any(|e| e.action == action::QUARANTINE_START)
        );

        // Refused while quarantined: MQTT 5 "Banned".
        let mut again = Client::via_gateway(&gw, tls.clone(), "flooder");
        let e = again.connected().await.unwrap_err();
        assert!(
            matches!(
                e,
                ConnectionError::ConnectionRefused(ConnectReturnCode::Banned)
            ),
            "{e:?}"
        );
        // A well-behaved device is not affected.
        let mut other = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
        other.connected().await.unwrap();

        // The policy's period is 2 s; poll (bounded) until it lifts.
        let mut lifted = false;
        for _ in 0..50 {
            if gw
                .proxy
                .quarantine()
                .remaining("flooder", tokio::time::Instant::now())
                .is_none()
            {
                lifted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(lifted, "quarantine did not lift");
        let mut back = Client::via_gateway(&gw, tls, "flooder");
        back.connected().await.unwrap();
    }
}
