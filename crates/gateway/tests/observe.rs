//! Observability and quarantine state against real parts: the metrics
//! endpoint scraped over TCP after real MQTT traffic (and its output
//! checked by Prometheus's own `promtool`), gateway events in the store's
//! tamper-evident event log, quarantine that survives a restart and is
//! released over the admin endpoint, and the recovery path of a
//! quarantined device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::admin::Admin;
use gateway::audit::action;
use gateway::event_log::EventLogAudit;
use gateway::{GatewayEvent, MemoryAudit, Metrics, Quarantine, ViolationKind};
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
use rumqttc::v5::{ConnectionError, MqttOptions};
use store::eventlog::{EventLog, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{Gateway, Mosquitto, Pki, Shared};
use super::{Client, WAIT, disconnect_reason};

const POLICY: &str = r#"
[quarantine]
strikes = 3
window_secs = 30
duration_secs = 60

[groups.sensors]
publish = ["sensors/%c/#"]
subscribe = ["commands/%c/+"]
max_qos = 1

[groups.sensors.recovery]
publish = ["updates/%c/status"]
subscribe = ["updates/%c/#"]

[[devices]]
name = "sensor-1"
identity = "sensor-1"
group = "sensors"

[[devices]]
name = "legacy"
identity = "legacy"
rules = { publish = ["sensors/%c/#"], max_qos = 1 }
"#;

/// The admin endpoint on a free loopback port, stopped on drop.
struct AdminServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    async fn start(metrics: &Arc<Metrics>, quarantine: &Arc<Quarantine>) -> Self {
        let admin = Arc::new(Admin {
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
            audit: Arc::new(MemoryAudit::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self {
            addr,
            task: tokio::spawn(admin.serve(listener)),
        }
    }

    /// One HTTP/1.1 request; (status, head, body).
    async fn request(&self, method: &str, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
            .await
            .expect("admin endpoint did not answer")
            .unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    /// GET /metrics, checked for format; samples by `name{labels}`.
    async fn scrape(&self) -> HashMap<String, f64> {
        let (status, head, body) = self.request("GET", "/metrics").await;
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        samples(&body)
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parses exposition text: every line is a comment (`# HELP`/`# TYPE`)
/// or `name{labels} value`; panics naming the first line that is not.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            assert!(
                c.starts_with("HELP bulwark_gateway_") || c.starts_with("TYPE bulwark_gateway_"),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            out.insert(series.to_owned(), v).is_none(),
            "duplicate {line:?}"
        );
    }
    out
}

/// Prometheus's own checker, when installed (Debian package
/// `prometheus`); the test fails loudly without it.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install the Debian package `prometheus`");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mqtt(device: &str) -> String {
    format!("protocol=\"mqtt\",device=\"{device}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_real_mqtt_traffic() {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let shared = Shared::default();
    let admin = AdminServer::start(&shared.metrics, &shared.quarantine).await;
    let gw = Gateway::start_with(&pki, broker.addr(), POLICY, shared).await;
    let mut watcher = Client::direct(&broker, "watcher");
    watcher.connected().await.unwrap();
    watcher.subscribed("#").await;

    let tls = pki.device_tls(&pki.ca, "sensor-1");
    let mut dev = Client::via_gateway(&gw, tls, "sensor-1");
    dev.connected().await.unwrap();
    for i in 0..3 {
        dev.client
            .publish(
                format!("sensors/sensor-1/{i}"),
                QoS::AtLeastOnce,
                false,
                "21.5",
            )
            .await
            .unwrap();
    }
    assert_eq!(watcher.received(3).await.len(), 3);

    let s1 = mqtt("sensor-1");
    let out_key = format!("bulwark_gateway_bytes_total{{{s1},direction=\"out\"}}");
    // The PUBACKs may still be on their way to the device: poll, bounded.
    let mut m = admin.scrape().await;
    for _ in 0..100 {
        if m.get(&out_key).is_some_and(|&v| v >= 16.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = admin.scrape().await;
    }
    // CONNECT and three PUBLISH; the broker's CONNACK and PUBACKs back.
    assert_eq!(m[&format!("bulwark_gateway_accepted_total{{{s1}}}")], 4.0);
    assert_eq!(m[&format!("bulwark_gateway_connections{{{s1}}}")], 1.0);
    let bytes_in = m[&format!("bulwark_gateway_bytes_total{{{s1},direction=\"in\"}}")];
    let bytes_out = m[&out_key];
    // Each PUBLISH carries its topic (16) and payload (4).
    assert!(bytes_in > 3.0 * 20.0, "{bytes_in}");
    // CONNACK and three PUBACKs are at least 4 bytes each.
    assert!(bytes_out >= 16.0, "{bytes_out}");
    assert_eq!(m["bulwark_gateway_quarantined{device=\"sensor-1\"}"], 0.0);
    assert_eq!(m["bulwark_gateway_audit_dropped_total"], 0.0);

    // A refusal, and a certificate no device is bound to.
    dev.client
        .publish("sensors/sensor-2/x", QoS::AtMostOnce, false, "spoof")
        .await
        .unwrap();
    let e = dev.error().await;
    assert_eq!(
        disconnect_reason(&e),
        Some(DisconnectReasonCode::NotAuthorized)
    );
    let mut intruder = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "intruder"), "intruder");
    assert!(intruder.connected().await.is_err());

    let mut m = HashMap::new();
    for _ in 0..100 {
        m = admin.scrape().await;
        if m.get(&format!("bulwark_gateway_connections{{{s1}}}")) == Some(&0.0)
            && m.contains_key(&format!(
                "bulwark_gateway_refused_total{{{},reason=\"unknown-device\"}}",
                mqtt("")
            ))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        m[&format!("bulwark_gateway_connections{{{s1}}}")],
        0.0,
        "{m:?}"
    );
    assert_eq!(
        m[&format!("bulwark_gateway_refused_total{{{s1},reason=\"not-authorized\"}}")],
        1.0
    );
    assert_eq!(
        m[&format!(
            "bulwark_gateway_refused_total{{{},reason=\"unknown-device\"}}",
            mqtt("")
        )],
        1.0
    );
    // The refused PUBLISH was not counted as accepted.
    assert_eq!(m[&format!("bulwark_gateway_accepted_total{{{s1}}}")], 4.0);

    let (_, _, text) = admin.request("GET", "/metrics").await;
    promtool_check(&text);
    assert_eq!(admin.request("GET", "/nothing").await.0, 404);
    assert_eq!(admin.request("POST", "/metrics").await.0, 405);
}

/// A keystore with a device key, a store and its event log, as the agent
/// opens them.
struct LogFixture {
    _dir: tempfile::TempDir,
    store_dir: std::path::PathBuf,
    store: Arc<store::Store>,
    signer: KeyRef,
    log: Arc<EventLog>,
}

impl LogFixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys =
            Arc::new(SoftKeyStore::open(&dir.path().join("keys"), KekProtection::File).unwrap());
        let label = "device".parse().unwrap();
        keys.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
        let keys: Arc<dyn KeyStore> = keys;
        let signer = KeyRef::new(keys.clone(), label).unwrap();
        let store_dir = dir.path().join("store");
        let store = Arc::new(store::Store::open(&store_dir, keys).unwrap());
        let log = Arc::new(EventLog::open(&store_dir, store.clone(), signer.clone()).unwrap());
        Self {
            _dir: dir,
            store_dir,
            store,
            signer,
            log,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_land_in_the_event_log_and_it_verifies() {
    let f = LogFixture::new();
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let metrics = Arc::new(Metrics::default());
    let sink = Arc::new(EventLogAudit::start(f.log.clone(), 64, metrics.clone()).unwrap());
    let gw = Gateway::start_with(
        &pki,
        broker.addr(),
        POLICY,
        Shared {
            metrics: metrics.clone(),
            audit: Some(sink.clone()),
            ..Shared::default()
        },
    )
    .await;
    let mut intruder = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "intruder"), "intruder");
    assert!(intruder.connected().await.is_err());
    let mut dev = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
    dev.connected().await.unwrap();
    dev.client
        .publish("sensors/sensor-2/x", QoS::AtMostOnce, false, "spoof")
        .await
        .unwrap();
    dev.error().await;
    // Unknown device, connected, refused: three events, written by the
    // writer thread.
    let mut written = false;
    for _ in 0..200 {
        if f.log.len() >= 3 {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(written, "only {} events in the log", f.log.len());
    f.log.checkpoint().unwrap();

    let report =
        store::eventlog::verify(&f.store_dir, f.signer.public_key(), Some(&f.store)).unwrap();
    assert!(report.is_intact(), "{report:?}");
    let events = store::eventlog::export(&f.store_dir, &f.store).unwrap();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.event.action == action::MQTT_REFUSED)
        .map(|e| &e.event)
        .collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(refused.iter().all(|e| e.outcome == Outcome::Denied));
    assert_eq!(refused[0].actor.as_deref(), Some("unidentified"));
    assert!(
        refused[0].detail.starts_with("unknown-device: "),
        "{:?}",
        refused[0]
    );
    assert_eq!(refused[1].actor.as_deref(), Some("sensor-1"));
    assert!(
        refused[1].detail.starts_with("not-authorized: "),
        "{:?}",
        refused[1]
    );
    assert!(
        refused[1]
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    );
    assert_eq!(metrics.audit_dropped_total(), 0);
}

#[test]
fn a_full_event_log_queue_drops_and_counts_instead_of_blocking() {
    let f = LogFixture::new();
    let metrics = Arc::new(Metrics::default());
    let sink = EventLogAudit::start(f.log.clone(), 1, metrics.clone()).unwrap();
    let started = std::time::Instant::now();
    for i in 0..500 {
        gateway::Audit::record(
            &sink,
            GatewayEvent {
                action: action::MQTT_REFUSED,
                device: Some("flooder".into()),
                peer: "127.0.0.1:1".parse().unwrap(),
                reason: Some(ViolationKind::RateExceeded),
                detail: format!("burst {i}"),
            },
        );
    }
    // 500 fsynced appends take far longer than this; handing off does not.
    let elapsed = started.elapsed();
    sink.close();
    let dropped = metrics.audit_dropped_total();
    assert!(dropped > 0, "nothing dropped in {elapsed:?}");
    assert_eq!(f.log.len() + dropped, 500);
    let report =
        store::eventlog::verify(&f.store_dir, f.signer.public_key(), Some(&f.store)).unwrap();
    assert!(report.is_intact(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_survives_a_restart_and_the_operator_releases_it() {
    let state = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let tls = pki.device_tls(&pki.ca, "legacy");
    {
        let quarantine = Arc::new(Quarantine::open(state.path()).unwrap());
        let shared = Shared {
            quarantine: quarantine.clone(),
            ..Shared::default()
        };
        let admin = AdminServer::start(&shared.metrics, &quarantine).await;
        let gw = Gateway::start_with(&pki, broker.addr(), POLICY, shared).await;
        let mut dev = Client::via_gateway(&gw, tls.clone(), "legacy");
        dev.connected().await.unwrap();
        let (status, _, body) = admin.request("POST", "/quarantine/legacy").await;
        assert_eq!(status, 200, "{body}");
        // The open connection is closed at its next packet.
        dev.client
            .publish("sensors/legacy/t", QoS::AtMostOnce, false, "1")
            .await
            .unwrap();
        let e = dev.error().await;
        assert_eq!(
            disconnect_reason(&e),
            Some(DisconnectReasonCode::NotAuthorized)
        );
        let m = admin.scrape().await;
        assert_eq!(m["bulwark_gateway_quarantined{device=\"legacy\"}"], 1.0);
    }

    // A new gateway on the same state directory.
    let quarantine = Arc::new(Quarantine::open(state.path()).unwrap());
    let shared = Shared {
        quarantine: quarantine.clone(),
        ..Shared::default()
    };
    let admin = AdminServer::start(&shared.metrics, &quarantine).await;
    let gw = Gateway::start_with(&pki, broker.addr(), POLICY, shared).await;
    let mut dev = Client::via_gateway(&gw, tls.clone(), "legacy");
    let e = dev.connected().await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectionError::ConnectionRefused(ConnectReturnCode::Banned)
        ),
        "{e:?}"
    );
    let (status, _, body) = admin.request("GET", "/quarantine").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["device"], "legacy", "{body}");
    assert_eq!(listed[0]["manual"], true, "{body}");
    assert!(listed[0]["until"].is_null(), "until released: {body}");

    let (status, _, body) = admin.request("POST", "/quarantine/legacy/release").await;
    assert_eq!(status, 200, "{body}");
    let mut dev = Client::via_gateway(&gw, tls, "legacy");
    dev.connected().await.unwrap();
    assert_eq!(
        admin.request("POST", "/quarantine/legacy/release").await.0,
        404
    );
    // Released for good: a third start finds nothing.
    let again = Quarantine::open(state.path()).unwrap();
    assert!(again.list(tokio::time::Instant::now()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_device_may_use_only_its_recovery_path() {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let gw = Gateway::start(&pki, broker.addr(), POLICY).await;
    let mut watcher = Client::direct(&broker, "watcher");
    watcher.connected().await.unwrap();
    watcher.subscribed("#").await;
    gw.proxy
        .quarantine()
        .quarantine_manual("sensor-1", None, "test", tokio::time::Instant::now())
        .unwrap();
    let tls = pki.device_tls(&pki.ca, "sensor-1");

    // A kept session could bring its old subscriptions back: refused.
    let mut opts = MqttOptions::new("sensor-1", "127.0.0.1", gw.port);
    opts.set_clean_start(false);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls.clone()),
    ));
    let e = Client::start(opts).connected().await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectionError::ConnectionRefused(ConnectReturnCode::Banned)
        ),
        "{e:?}"
    );

    // Clean session: connected, on the recovery path only.
    let mut dev = Client::via_gateway(&gw, tls.clone(), "sensor-1");
    dev.connected().await.unwrap();
    dev.subscribed("updates/sensor-1/#").await;
    watcher
        .client
        .publish("updates/sensor-1/firmware", QoS::AtLeastOnce, false, "v2")
        .await
        .unwrap();
    assert_eq!(dev.received(1).await, ["updates/sensor-1/firmware"]);
    dev.client
        .publish("updates/sensor-1/status", QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(
        watcher.received(2).await,
        ["updates/sensor-1/firmware", "updates/sensor-1/status"]
    );
    // Its normal topics are not on the path.
    dev.client
        .publish("sensors/sensor-1/temp", QoS::AtMostOnce, false, "20")
        .await
        .unwrap();
    let e = dev.error().await;
    assert_eq!(
        disconnect_reason(&e),
        Some(DisconnectReasonCode::NotAuthorized)
    );

    // Released: its normal rules again; the refused message never arrived
    // (this one is the next the watcher sees).
    assert!(
        gw.proxy
            .quarantine()
            .release("sensor-1", tokio::time::Instant::now())
            .unwrap()
    );
    let mut dev = Client::via_gateway(&gw, tls, "sensor-1");
    dev.connected().await.unwrap();
    dev.client
        .publish("sensors/sensor-1/temp", QoS::AtLeastOnce, false, "21")
        .await
        .unwrap();
    assert_eq!(watcher.received(1).await, ["sensors/sensor-1/temp"]);
    let connected: Vec<_> = gw
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == action::MQTT_CONNECTED)
        .map(|e| e.detail)
        .collect();
    assert!(connected[0].contains("recovery path only"), "{connected:?}");
    assert!(!connected[1].contains("recovery"), "{connected:?}");
}
