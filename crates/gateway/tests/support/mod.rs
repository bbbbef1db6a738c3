//! Fixtures shared by the integration tests and the benchmark: a real
//! Mosquitto broker on a free loopback port (`testkit::mosquitto`), a
//! manufacturer CA with device certificates, and a gateway in front of the
//! broker.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use gateway::{
    Audit, MemoryAudit, Metrics, MqttProxy, Policy, PolicyHandle, ProxyConfig, Quarantine,
};
use identity::ca::{DeviceSubject, ManufacturerCa};
use identity::tls::TlsIdentity;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};

/// Mosquitto on a free loopback port, stopped on drop (shared with other
/// crates' tests through testkit).
pub use testkit::mosquitto::Mosquitto;

/// Our manufacturer CA, a stranger's CA, and a keystore for everything.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca: ManufacturerCa,
    pub stranger: ManufacturerCa,
    keys: Arc<SoftKeyStore>,
}

fn ca(dir: &Path, keys: &Arc<SoftKeyStore>, name: &str) -> ManufacturerCa {
    for l in ["root", "issuing"] {
        keys.generate(
            &format!("{name}-{l}").parse().unwrap(),
            Algorithm::EcdsaP256Sha256,
        )
        .unwrap();
    }
    let store: Arc<dyn KeyStore> = keys.clone();
    let root = KeyRef::new(store.clone(), format!("{name}-root").parse().unwrap()).unwrap();
    let issuing = KeyRef::new(store, format!("{name}-issuing").parse().unwrap()).unwrap();
    ManufacturerCa::create(&dir.join(name), name, &root, issuing).unwrap()
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys =
            Arc::new(SoftKeyStore::open(&dir.path().join("keys"), KekProtection::File).unwrap());
        let ours = ca(dir.path(), &keys, "Acme");
        let stranger = ca(dir.path(), &keys, "Stranger");
        Self {
            _dir: dir,
            ca: ours,
            stranger,
            keys,
        }
    }

    fn key(&self, label: &str) -> KeyRef {
        let label = label.parse().unwrap();
        let _ = self.keys.delete(&label);
        self.keys
            .generate(&label, Algorithm::EcdsaP256Sha256)
            .unwrap();
        let store: Arc<dyn KeyStore> = self.keys.clone();
        KeyRef::new(store, label).unwrap()
    }

    /// The gateway's server configuration: certificate for 127.0.0.1,
    /// clients must chain to our root.
    pub fn gateway_tls(&self) -> Arc<rustls::ServerConfig> {
        let key = self.key("gateway");
        let cert = self
            .ca
            .issue_service("gateway", &["127.0.0.1"], key.public_key(), 1)
            .unwrap();
        let id = TlsIdentity {
            chain: vec![cert, self.ca.issuing().clone()],
            key,
        };
        Arc::new(identity::tls::server_config(&id, &[self.ca.root().clone()]).unwrap())
    }

    /// A device certificate with CN `device_id` (and URI SAN
    /// `urn:uuid:<device_id>`) from `ca`, as a client configuration that
    /// trusts our root for the gateway.
    pub fn device_tls(&self, ca: &ManufacturerCa, device_id: &str) -> Arc<rustls::ClientConfig> {
        let key = self.key(&format!("dev-{device_id}"));
        let cert = ca
            .issue_device(
                &DeviceSubject {
                    device_id: device_id.into(),
                    serial: format!("SN-{device_id}"),
                    model: "Sensor".into(),
                },
                key.public_key(),
            )
            .unwrap();
        let id = TlsIdentity {
            chain: vec![cert, ca.issuing().clone()],
            key,
        };
        Arc::new(identity::tls::client_config(&id, &[self.ca.root().clone()]).unwrap())
    }
}

/// A gateway in front of a broker, stopped on drop.
pub struct Gateway {
    pub proxy: Arc<MqttProxy>,
    pub port: u16,
    pub audit: Arc<MemoryAudit>,
    task: tokio::task::JoinHandle<()>,
}

/// State a gateway shares with the admin endpoint or keeps across a
/// restart, and an extra audit sink (events go to `Gateway::audit` too).
#[derive(Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub quarantine: Arc<Quarantine>,
    pub audit: Option<Arc<dyn Audit>>,
}

impl Gateway {
    pub async fn start(pki: &Pki, broker: SocketAddr, policy: &str) -> Self {
        Self::start_with(pki, broker, policy, Shared::default()).await
    }

    pub async fn start_with(pki: &Pki, broker: SocketAddr, policy: &str, shared: Shared) -> Self {
        let audit = Arc::new(MemoryAudit::default());
        let sink: Arc<dyn Audit> = match shared.audit {
            Some(other) => Arc::new(gateway::audit::Tee(audit.clone(), other)),
            None => audit.clone(),
        };
        let proxy = MqttProxy::new(ProxyConfig {
            tls: pki.gateway_tls(),
            upstream: broker,
            policy: Arc::new(PolicyHandle::new(
                Policy::from_toml(policy, "test policy").unwrap(),
            )),
            audit: sink,
            metrics: shared.metrics,
            quarantine: shared.quarantine,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(proxy.clone().serve(listener));
        Self {
            proxy,
            port,
            audit,
            task,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
