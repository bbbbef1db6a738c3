#![allow(clippy::unwrap_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use testkit::mosquitto::Mosquitto;

use crate::support::{self, Device};

/// The hub's own CA: the broker's certificate and the listening client's.
struct HubPki {
    dir: tempfile::TempDir,
}

impl HubPki {
    fn new(manufacturer_root_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Home Hub Test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, sans: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf("broker", vec!["127.0.0.1".into()]);
        let (listener, listener_key) = leaf("listener", vec![]);
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("hub-ca.pem", &ca_cert.pem());
        // The broker accepts the hub's own clients and the manufacturer's
        // devices, which present their factory certificate.
        write(
            "clients.pem",
            &format!("{}{}", ca_cert.pem(), manufacturer_root_pem),
        );
        write("server.pem", &server);
        write("server.key", &server_key);
        write("listener.pem", &listener);
        write("listener.key", &listener_key);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// A notification raised by the agent (a claim) reaches the user's local
/// hub: an MQTT broker over mutual TLS, the device presenting its factory
/// certificate (5.2.8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_the_local_hub_over_mutual_tls() {
    testkit::require_tool("mosquitto_sub", "mosquitto-clients");
    testkit::require_tool("stdbuf", "coreutils");
    let device = Device::provision();
    let root_pem = identity::x509::to_pem(device.root().as_ref());
    let pki = HubPki::new(&root_pem);
    let broker = Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        pki.path("clients.pem"),
        pki.path("server.pem"),
        pki.path("server.key")
    ));
    let topic = "home/devices/sn-0001/notifications";
    let mut listener = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1"])
        .args([
            "-p",
            &broker.port.to_string(),
            "--cafile",
            &pki.path("hub-ca.pem"),
        ])
        .args([
            "--cert",
            &pki.path("listener.pem"),
            "--key",
            &pki.path("listener.key"),
        ])
        .args(["-q", "1", "-t", topic, "-C", "1", "-W", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = listener.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Give the subscription a moment to be in place before anything is
    // published (QoS 1 to a subscriber that is not there yet is lost).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut file = device.file();
    file.notifications.mqtt = Some(agent_config::MqttHub {
        host: "127.0.0.1".into(),
        port: broker.port,
        topic: topic.into(),
        ca_file: pki.dir.path().join("hub-ca.pem"),
        kinds: Vec::new(),
        min_severity: None,
    });
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut client = support::Client::connect(addr, &device.root()).await;
    assert_eq!(client.claim(&device.setup_secret).await.status, 201);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = None;
    while line.is_none() && Instant::now() < deadline {
        line = rx.recv_timeout(Duration::from_millis(200)).ok();
    }
    let line =
        line.unwrap_or_else(|| panic!("nothing reached the hub; broker log:\n{}", broker.log()));
    let note: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(note["kind"], "security_alert", "{note}");
    assert!(
        note["title"].as_str().unwrap().contains("claimed"),
        "{note}"
    );
    let _ = listener.wait();
    agent.shutdown().await;
}
