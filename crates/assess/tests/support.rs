//! Test support: a provisioned development device running the real agent
//! on loopback (copied in its essentials from the agent's own test
//! support), a one-request HTTPS client to claim it, and a deliberately
//! broken fake device with a certificate from the same manufacturer CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent::{Agent, AgentParts, RunningAgent};
use agent_config::AgentFile;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use identity::ca::{DeviceSubject, ManufacturerCa};
use identity::provision::{self, ProvisionRequest};
use identity::tls::TlsIdentity;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// The owner account the tests claim a device with: named `admin`, so
/// the default-credential probe meets a real account with that name.
pub const OWNER: &str = "admin";
/// Its password (strong; the policy accepts it).
pub const OWNER_PASSWORD: &str = "correct horse battery staple 42";

/// Cheap hashing so tests do not spend seconds in argon2.
fn fast_hashing() -> access::HashParams {
    access::HashParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// A manufacturer CA with software keys under `dir`.
pub fn create_ca(dir: &Path, organization: &str) -> ManufacturerCa {
    let ca_keys = Arc::new(SoftKeyStore::open(&dir.join("ca-keys"), KekProtection::File).unwrap());
    for l in ["root", "issuing"] {
        ca_keys
            .generate(&l.parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
    }
    let store: Arc<dyn KeyStore> = ca_keys;
    let root_key = KeyRef::new(store.clone(), "root".parse().unwrap()).unwrap();
    let issuing_key = KeyRef::new(store, "issuing".parse().unwrap()).unwrap();
    ManufacturerCa::create(&dir.join("ca"), organization, &root_key, issuing_key).unwrap()
}

/// A provisioned device and its manufacturer CA.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub ca: ManufacturerCa,
    pub setup_secret: String,
    pub device_id: String,
    pub state_dir: PathBuf,
}

impl Device {
    /// A CA and one unit with a software keystore.
    pub fn provision() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca(dir.path(), "Acme Devices");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        let device_keys =
            SoftKeyStore::open(&state_dir.join("keystore"), KekProtection::File).unwrap();
        let unit = provision::provision(
            &ca,
            &device_keys,
            &state_dir,
            &ProvisionRequest {
                serial: "SN-0001".into(),
                model: "Plug-1".into(),
                algorithm: Algorithm::EcdsaP256Sha256,
                development: true,
                force: false,
            },
        )
        .unwrap();
        Self {
            setup_secret: unit.setup_secret.expose().to_owned(),
            device_id: unit.record.device_id.clone(),
            dir,
            ca,
            state_dir,
        }
    }

    /// The boot file: the management API on an ephemeral loopback port.
    pub fn file(&self) -> AgentFile {
        let mut file = AgentFile {
            state_dir: self.state_dir.clone(),
            ..AgentFile::default()
        };
        file.api.listen = "127.0.0.1:0".parse().unwrap();
        file
    }

    /// Writes what `bulwark comply build` installs for the agent to
    /// publish (security.txt, the disclosure summary, a document) and
    /// returns its directory.
    pub fn write_disclosure(&self, expires: &str, support_until: &str) -> PathBuf {
        let public = self.dir.path().join("disclosure");
        for sub in [".well-known", "public", "docs"] {
            std::fs::create_dir_all(public.join(sub)).unwrap();
        }
        std::fs::write(
            public.join(".well-known/security.txt"),
            format!("Contact: mailto:security@example.test\nExpires: {expires}\n"),
        )
        .unwrap();
        std::fs::write(
            public.join("public/disclosure.json"),
            json!({ "product": "Plug", "security_updates_until": support_until }).to_string(),
        )
        .unwrap();
        std::fs::write(public.join("docs/support-policy.md"), "# Support\n").unwrap();
        public
    }

    /// Starts the real agent with `file`; returns it and its address.
    pub async fn start_with(&self, file: AgentFile) -> (RunningAgent, SocketAddr) {
        let keystore: Arc<dyn KeyStore> = Arc::new(
            SoftKeyStore::open(&self.state_dir.join("keystore"), KekProtection::File).unwrap(),
        );
        let running = Agent::start(AgentParts {
            file,
            identity: provision::load(&self.state_dir).unwrap(),
            keystore,
            hash_params: fast_hashing(),
            floor_counter: None,
            measurement: None,
        })
        .await
        .unwrap();
        let addr = running.local_addr(agent::MANAGEMENT_API).await.unwrap();
        (running, addr)
    }

    /// The manufacturer root the device certificate chains to.
    pub fn root(&self) -> CertificateDer<'static> {
        self.ca.root().clone()
    }

    /// The assessor's target for a device at `addr`.
    pub fn target(&self, addr: SocketAddr) -> assess::Target {
        assess::Target {
            url: format!("https://{addr}"),
            manufacturer_root: vec![self.root()],
            device_id: Some(self.device_id.clone()),
        }
    }

    /// Claims the device with the setup secret, as [`OWNER`].
    pub async fn claim(&self, addr: SocketAddr) {
        let (status, body) = post_json(
            addr,
            &self.root(),
            "/api/v1/setup/claim",
            &json!({
                "setup_secret": self.setup_secret,
                "account": OWNER,
                "password": OWNER_PASSWORD,
            }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "claim: {body:?}");
    }
}

/// One JSON POST on a fresh connection that verifies the device certificate.
pub async fn post_json(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let config =
        identity::tls::device_client_config(std::slice::from_ref(root), None, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("device").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "device")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let raw = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

/// The session token the fake hands out for admin/admin: it must never
/// reach a report.
pub const FAKE_TOKEN: &str = "fake-session-token-0123456789abcdef";

/// A broken device on loopback: a valid IDevID certificate from `ca`
/// (so the TLS checks pass), but admin/admin logs in, status is served to
/// anyone although its document says it is protected, a non-JSON login
/// body is a 500, security.txt has expired and support has ended.
pub struct Fake {
    pub addr: SocketAddr,
    pub device_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    pub async fn start(ca: &ManufacturerCa, dir: &Path) -> Self {
        let keys = SoftKeyStore::open(&dir.join("fake-keys"), KekProtection::File).unwrap();
        keys.generate(&"tls".parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
        let keys: Arc<dyn KeyStore> = Arc::new(keys);
        let key = KeyRef::new(keys, "tls".parse().unwrap()).unwrap();
        let device_id = "9f3c2a4e-7b1d-4c8e-a5f6-0d2b3c4e5f60".to_owned();
        let cert = ca
            .issue_device(
                &DeviceSubject {
                    device_id: device_id.clone(),
                    serial: "FAKE-1".into(),
                    model: "Fake".into(),
                },
                key.public_key(),
            )
            .unwrap();
        let identity = TlsIdentity {
            chain: vec![cert, ca.issuing().clone()],
            key,
        };
        let config = identity::tls::api_server_config(&identity, &[], false).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), hyper::service::service_fn(fake))
                        .await;
                });
            }
        });
        Self {
            addr,
            device_id,
            task,
        }
    }

    pub fn target(&self, ca: &ManufacturerCa) -> assess::Target {
        assess::Target {
            url: format!("https://{}", self.addr),
            manufacturer_root: vec![ca.root().clone()],
            device_id: Some(self.device_id.clone()),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", body.to_string())
}

async fn fake(
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = Limited::new(request.into_body(), 2 * 1024 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let not_found = json!({"error": "not-found", "message": "no such route"});
    Ok(match (method, path.as_str()) {
        (Method::POST, "/api/v1/session") => match serde_json::from_slice::<Value>(&body) {
            Ok(login) if login["account"] == "admin" && login["password"] == "admin" => {
                json_reply(StatusCode::OK, &json!({ "token": FAKE_TOKEN }))
            }
            Ok(_) => json_reply(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid-credentials", "message": "wrong"}),
            ),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "parser exploded".into(),
            ),
        },
        (Method::GET, "/api/v1/status") => {
            json_reply(StatusCode::OK, &json!({"device": {"serial": "FAKE-1"}}))
        }
        (Method::GET, "/api/v1/openapi.json") => json_reply(
            StatusCode::OK,
            &json!({
                "openapi": "3.1.0",
                "paths": {
                    "/api/v1/session": {"post": {"security": [{}]}},
                    "/api/v1/status": {"get": {"security": [{"session": ["read-status"]}]}},
                    "/api/v1/openapi.json": {"get": {"security": [{}]}},
                }
            }),
        ),
        (Method::GET, "/.well-known/security.txt") => reply(
            StatusCode::OK,
            "text/plain",
            "Contact: mailto:security@example.test\nExpires: 2020-01-01T00:00:00Z\n".into(),
        ),
        (Method::GET, "/api/v1/disclosure") => json_reply(
            StatusCode::OK,
            &json!({"security_updates_until": "2021-06-30"}),
        ),
        _ => json_reply(StatusCode::NOT_FOUND, &not_found),
    })
}

/// Assesses `target` with the default options (openssl from `PATH`).
pub async fn assess(target: &assess::Target) -> assess::Report {
    assess::run(target, &assess::Options::default())
        .await
        .unwrap()
}

/// The finding of `check`, which must be there exactly once.
pub fn finding<'a>(report: &'a assess::Report, check: &str) -> &'a assess::Finding {
    let found: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.check == check)
        .collect();
    assert_eq!(found.len(), 1, "{check} in {:#?}", report.findings);
    found[0]
}

/// Every check id the assessor runs, in order.
pub const CHECKS: [&str; 10] = [
    "device-certificate",
    "tls-legacy-versions",
    "tls12-weak-suites",
    "tls13-accepted",
    "guarded-routes",
    "anonymous-status",
    "security-txt",
    "disclosure-summary",
    "malformed-input",
    "default-credentials",
];
