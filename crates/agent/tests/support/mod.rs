//! Test support: a provisioned development device in a temporary
//! directory, an agent running on it on loopback, and an HTTPS client that
//! keeps one TLS connection (sessions are bound to it).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent::{Agent, AgentParts, RunningAgent};
use agent_config::AgentFile;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use identity::ca::ManufacturerCa;
use identity::provision::{self, ProvisionRequest};
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// Cheap hashing so tests do not spend seconds in argon2.
pub fn fast_hashing() -> access::HashParams {
    access::HashParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// A strong password the policy accepts.
pub const OWNER_PASSWORD: &str = "correct horse battery staple 42";

/// A provisioned device and its manufacturer CA.
pub struct Device {
    pub dir: tempfile::TempDir,
    pub ca: ManufacturerCa,
    pub ca_keys: Arc<SoftKeyStore>,
    pub setup_secret: String,
    pub state_dir: PathBuf,
}

impl Device {
    /// A CA and one unit with a software keystore.
    pub fn provision() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, ca_keys) = create_ca(root, "Acme Devices");
        let state_dir = root.join("state");
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
            dir,
            ca,
            ca_keys,
            state_dir,
        }
    }

    /// A boot file for this device on an ephemeral loopback port.
    pub fn file(&self) -> AgentFile {
        let mut file = AgentFile {
            state_dir: self.state_dir.clone(),
            ..AgentFile::default()
        };
        file.api.listen = "127.0.0.1:0".parse().unwrap();
        file
    }

    /// The parts the agent runs on.
    pub fn parts(&self, file: AgentFile) -> AgentParts {
        let keystore: Arc<dyn KeyStore> = Arc::new(
            SoftKeyStore::open(&self.state_dir.join("keystore"), KekProtection::File).unwrap(),
        );
        AgentParts {
            file,
            identity: provision::load(&self.state_dir).unwrap(),
            keystore,
            hash_params: fast_hashing(),
            floor_counter: None,
            measurement: None,
        }
    }

    /// Starts the agent with `file`.
    pub async fn start_with(&self, file: AgentFile) -> RunningAgent {
        Agent::start(self.parts(file)).await.unwrap()
    }

    /// Starts the agent with the default test file.
    pub async fn start(&self) -> RunningAgent {
        self.start_with(self.file()).await
    }

    /// The manufacturer root, which the device's certificate chains to.
    pub fn root(&self) -> CertificateDer<'static> {
        self.ca.root().clone()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Value,
    pub raw: Bytes,
}

/// One TLS connection to the agent, kept alive between requests.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    pub token: Option<String>,
}

impl Client {
    /// Connects, trusting the manufacturer root.
    pub async fn connect(addr: SocketAddr, root: &CertificateDer<'static>) -> Self {
        Self::connect_with(addr, client_config(root, None)).await
    }

    /// Connects with a given client configuration.
    pub async fn connect_with(addr: SocketAddr, config: rustls::ClientConfig) -> Self {
        Self::try_connect_with(addr, config).await.unwrap()
    }

    /// Connects, returning the error if the handshake fails.
    pub async fn try_connect_with(
        addr: SocketAddr,
        config: rustls::ClientConfig,
    ) -> std::io::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(ServerName::try_from("SN-0001").unwrap(), tcp)
            .await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            token: None,
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "device");
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Full::new(Bytes::from(body))).unwrap()
    }

    /// Sends a request, returning transport errors (e.g. a TLS alert)
    /// instead of panicking.
    pub async fn try_raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, hyper::Error> {
        let request = self.request(method, path, headers, body);
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let raw = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
            raw,
        })
    }

    /// Sends a GET and returns the response head with its body unread (for
    /// streams). The connection serves nothing else afterwards.
    pub async fn open(&mut self, path: &str) -> hyper::Response<hyper::body::Incoming> {
        let request = self.request(Method::GET, path, &[], Vec::new());
        self.sender.ready().await.unwrap();
        self.sender.send_request(request).await.unwrap()
    }

    /// Sends a request with a raw body and headers.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.try_raw(method, path, headers, body).await.unwrap()
    }

    /// Sends JSON (or nothing).
    pub async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        match body {
            Some(b) => {
                self.raw(
                    method,
                    path,
                    &[("content-type", "application/json")],
                    serde_json::to_vec(&b).unwrap(),
                )
                .await
            }
            None => self.raw(method, path, &[], Vec::new()).await,
        }
    }

    /// Claims the device as `owner` with the setup secret.
    pub async fn claim(&mut self, secret: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/setup/claim",
            Some(serde_json::json!({
                "setup_secret": secret,
                "account": "owner",
                "password": OWNER_PASSWORD,
            })),
        )
        .await
    }

    /// Logs in and keeps the token.
    pub async fn login(&mut self, account: &str, password: &str) -> Reply {
        let reply = self
            .call(
                Method::POST,
                "/api/v1/session",
                Some(serde_json::json!({ "account": account, "password": password })),
            )
            .await;
        if reply.status == StatusCode::OK {
            self.token = reply.body["token"].as_str().map(str::to_owned);
        }
        reply
    }
}

/// A rustls client trusting `root`, optionally with a client identity.
pub fn client_config(
    root: &CertificateDer<'static>,
    identity: Option<&identity::tls::TlsIdentity>,
) -> rustls::ClientConfig {
    identity::tls::device_client_config(std::slice::from_ref(root), None, identity).unwrap()
}

/// A manufacturer CA with software keys under `dir`.
pub fn create_ca(dir: &Path, organization: &str) -> (ManufacturerCa, Arc<SoftKeyStore>) {
    let ca_keys = Arc::new(SoftKeyStore::open(&dir.join("ca-keys"), KekProtection::File).unwrap());
    for l in ["root", "issuing"] {
        ca_keys
            .generate(&l.parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
    }
    let store: Arc<dyn KeyStore> = ca_keys.clone();
    let root_key = KeyRef::new(store.clone(), "root".parse().unwrap()).unwrap();
    let issuing_key = KeyRef::new(store, "issuing".parse().unwrap()).unwrap();
    let ca = ManufacturerCa::create(&dir.join("ca"), organization, &root_key, issuing_key).unwrap();
    (ca, ca_keys)
}

/// A fresh P-256 key in a new software keystore at `dir`.
pub fn soft_key(dir: &Path, label: &str) -> KeyRef {
    let keys = SoftKeyStore::open(dir, KekProtection::File).unwrap();
    keys.generate(&label.parse().unwrap(), Algorithm::EcdsaP256Sha256)
        .unwrap();
    let keys: Arc<dyn KeyStore> = Arc::new(keys);
    KeyRef::new(keys, label.parse().unwrap()).unwrap()
}

/// A machine client identity with common name `cn`, issued by `ca`.
pub fn service_identity(ca: &ManufacturerCa, dir: &Path, cn: &str) -> identity::tls::TlsIdentity {
    let key = soft_key(&dir.join(format!("{cn}-keys")), "client");
    let cert = ca.issue_service(cn, &[], key.public_key(), 30).unwrap();
    identity::tls::TlsIdentity {
        chain: vec![cert, ca.issuing().clone()],
        key,
    }
}

/// A password the policy accepts for a second account.
pub const VIEWER_PASSWORD: &str = "purple elephant juggles 7 lanterns";

/// A new connection logged in as `account`.
pub async fn session(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    account: &str,
    password: &str,
) -> Client {
    let mut client = Client::connect(addr, root).await;
    let login = client.login(account, password).await;
    assert_eq!(
        login.status,
        StatusCode::OK,
        "login as {account}: {:?}",
        login.body
    );
    client
}

/// Claims the device as `owner`; returns a connection logged in as it.
pub async fn claimed(addr: SocketAddr, device: &Device) -> Client {
    let mut client = Client::connect(addr, &device.root()).await;
    let claim = client.claim(&device.setup_secret).await;
    assert_eq!(claim.status, StatusCode::CREATED, "{:?}", claim.body);
    let login = client.login("owner", OWNER_PASSWORD).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    client
}

/// Creates the account `viewer` (role viewer) as the owner.
pub async fn create_viewer(owner: &mut Client) {
    let created = owner
        .call(
            Method::POST,
            "/api/v1/accounts",
            Some(serde_json::json!({
                "account": "viewer",
                "role": "viewer",
                "password": VIEWER_PASSWORD,
                "current_password": OWNER_PASSWORD,
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}

/// Asserts the uniform error shape: JSON with string `error` and `message`.
pub fn assert_error_body(reply: &Reply) {
    assert!(
        reply.body["error"].is_string() && reply.body["message"].is_string(),
        "{} without an error body: {:?}",
        reply.status,
        String::from_utf8_lossy(&reply.raw)
    );
}

/// Replaces the settings through the API (reads the ETag first).
pub async fn put_settings(client: &mut Client, settings: Value) -> Reply {
    let current = client.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(current.status, StatusCode::OK, "{:?}", current.body);
    let etag = current.body["etag"].as_str().unwrap().to_owned();
    client
        .raw(
            Method::PUT,
            "/api/v1/config",
            &[("content-type", "application/json"), ("if-match", &etag)],
            serde_json::to_vec(&settings).unwrap(),
        )
        .await
}

/// Polls an async condition every 20 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if ready().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The notifications the agent lists now (oldest first).
pub async fn notifications(client: &mut Client) -> Vec<Value> {
    let list = client
        .call(Method::GET, "/api/v1/notifications?limit=256", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    list.body.as_array().unwrap().clone()
}
