//! The gateway alone in its own process, for `bench/gateway.sh`: its CPU
//! time is then that process's `/proc/<pid>/stat`, apart from the load
//! generator's. Stands in for `bulwark gateway` until that command exists.
//!
//! ```text
//! bench_gateway DIR DEVICES MQTT_UPSTREAM MODBUS_UPSTREAM COAP_UPSTREAM
//! ```
//!
//! Creates a software keystore and a manufacturer CA in DIR (as the
//! integration tests do), a gateway certificate for 127.0.0.1 and device
//! certificates `sensor-1` .. `sensor-DEVICES`, writes the chains as DER
//! files for the load generator (`mqtt_load`, which opens the same
//! keystore for the device keys), starts the MQTT (mutual TLS), Modbus
//! TCP and CoAP proxies on free loopback ports with a policy that allows
//! the benchmark's traffic (rate limits out of the way: the benchmark
//! measures inspection, not throttling), then writes
//! `DIR/ports` = `mqtt modbus coap` and serves until killed. Refusals are
//! counted and printed to stderr: a benchmark run must see none.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gateway::{
    Audit, CoapProxy, CoapProxyConfig, GatewayEvent, Metrics, ModbusProxy, ModbusProxyConfig,
    MqttProxy, Policy, PolicyHandle, ProxyConfig,
};
use identity::ca::{DeviceSubject, ManufacturerCa};
use identity::tls::TlsIdentity;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};

/// Counts refusals and prints each; everything else is ignored.
#[derive(Debug, Default)]
struct CountingAudit {
    refusals: AtomicU64,
}

impl Audit for CountingAudit {
    fn record(&self, event: GatewayEvent) {
        if event.reason.is_some() || event.action.ends_with("refused") {
            let n = self.refusals.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!("bench_gateway: refusal {n}: {event:?}");
        }
    }
}

fn key(keys: &Arc<SoftKeyStore>, label: &str) -> KeyRef {
    let label = label.parse().unwrap();
    let _ = keys.delete(&label);
    keys.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
    let store: Arc<dyn KeyStore> = keys.clone();
    KeyRef::new(store, label).unwrap()
}

/// The policy: devices `sensor-1..=n` publish under `sensors/<id>/`, QoS
/// up to 1; Modbus reads of holding registers 0..19 on unit 1 and CoAP
/// GET /time from 127.0.0.1.
fn policy(n: usize) -> String {
    let mut p = String::from(
        r#"
[limits]
messages_per_second = 10000000
bytes_per_second = 4000000000
max_connections = 1000

[groups.sensors]
publish = ["sensors/%c/#"]
max_qos = 1

[modbus]
requests_per_second = 1000000
bytes_per_second = 1000000000

[coap]
datagrams_per_second = 1000000
bytes_per_second = 1000000000

[[modbus.devices]]
name = "bench-modbus"
source = "127.0.0.1"
unit_ids = [1]
ranges = { 3 = [[0, 19]] }

[[coap.devices]]
name = "bench-coap"
source = "127.0.0.1"
methods = ["GET"]
paths = [["time"]]
"#,
    );
    for i in 1..=n {
        p.push_str(&format!(
            "\n[[devices]]\nname = \"sensor-{i}\"\nidentity = \"sensor-{i}\"\ngroup = \"sensors\"\n"
        ));
    }
    p
}

fn write_chain(dir: &Path, name: &str, chain: &[rustls_pki_types::CertificateDer<'_>]) {
    for (i, cert) in chain.iter().enumerate() {
        std::fs::write(dir.join(format!("{name}.{i}.der")), cert.as_ref()).unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, devices, mqtt_up, modbus_up, coap_up] = args.as_slice() else {
        eprintln!("usage: bench_gateway DIR DEVICES MQTT_UPSTREAM MODBUS_UPSTREAM COAP_UPSTREAM");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let devices: usize = devices.parse().expect("DEVICES: a number");
    let addr = |s: &str| -> SocketAddr { s.parse().expect("upstream: host:port") };
    let (mqtt_up, modbus_up, coap_up) = (addr(mqtt_up), addr(modbus_up), addr(coap_up));

    let keys = Arc::new(SoftKeyStore::open(&dir.join("keys"), KekProtection::File).unwrap());
    for l in ["ca-root", "ca-issuing"] {
        key(&keys, l);
    }
    let store: Arc<dyn KeyStore> = keys.clone();
    let root = KeyRef::new(store.clone(), "ca-root".parse().unwrap()).unwrap();
    let issuing = KeyRef::new(store, "ca-issuing".parse().unwrap()).unwrap();
    let ca = ManufacturerCa::create(&dir.join("ca"), "Bench", &root, issuing).unwrap();
    std::fs::write(dir.join("root.der"), ca.root().as_ref()).unwrap();
    for i in 1..=devices {
        let id = format!("sensor-{i}");
        let k = key(&keys, &format!("dev-{id}"));
        let cert = ca
            .issue_device(
                &DeviceSubject {
                    device_id: id.clone(),
                    serial: format!("SN-{id}"),
                    model: "Bench".into(),
                },
                k.public_key(),
            )
            .unwrap();
        write_chain(dir, &id, &[cert, ca.issuing().clone()]);
    }
    let gw_key = key(&keys, "gateway");
    let gw_cert = ca
        .issue_service("gateway", &["127.0.0.1"], gw_key.public_key(), 1)
        .unwrap();
    let tls = identity::tls::server_config(
        &TlsIdentity {
            chain: vec![gw_cert, ca.issuing().clone()],
            key: gw_key,
        },
        &[ca.root().clone()],
    )
    .unwrap();

    let policy = Arc::new(PolicyHandle::new(
        Policy::from_toml(&policy(devices), "bench policy").unwrap(),
    ));
    let audit = Arc::new(CountingAudit::default());
    // Per-device counters, as `bulwark gateway` keeps them for its metrics
    // endpoint (part of the per-packet cost).
    let metrics = Arc::new(Metrics::default());
    let quarantine: Arc<gateway::Quarantine> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let modbus = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coap = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ports = format!(
            "{} {} {}\n",
            mqtt.local_addr().unwrap().port(),
            modbus.local_addr().unwrap().port(),
            coap.local_addr().unwrap().port()
        );
        let mqtt = MqttProxy::new(ProxyConfig {
            tls: Arc::new(tls),
            upstream: mqtt_up,
            policy: policy.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        })
        .serve(mqtt);
        let modbus = ModbusProxy::new(ModbusProxyConfig {
            upstream: modbus_up,
            policy: policy.clone(),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: quarantine.clone(),
        })
        .serve(modbus);
        let coap = CoapProxy::new(CoapProxyConfig {
            upstream: coap_up,
            policy,
            audit: audit.clone(),
            metrics,
            quarantine,
        })
        .serve(coap);
        // Written last and renamed: the script polls for this file.
        std::fs::write(dir.join("ports.tmp"), ports).unwrap();
        std::fs::rename(dir.join("ports.tmp"), dir.join("ports")).unwrap();
        tokio::join!(mqtt, modbus, coap);
    });
}
