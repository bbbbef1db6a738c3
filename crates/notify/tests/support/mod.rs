//! Fixtures: a throwaway PKI (rcgen, so Mosquitto can be given a key
//! file), TLS configurations on Bulwark's provider, and an HTTPS server
//! written with hyper that answers with a script of status codes.

// Test code: `pub` for the test modules, a panic is the failure report.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A certificate and its private key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key: KeyPair,
}

impl Leaf {
    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }
}

/// A one-level CA.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} Test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `name`, valid for `sans` (host names or IPs), for
    /// server and client use.
    pub fn issue(&self, name: &str, sans: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    /// A device's client configuration: presents `device` (issued by this
    /// CA) and trusts servers from `server_ca`.
    pub fn client_config(&self, device: &Leaf, server_ca: &Ca) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(identity::tls::provider())
                .with_protocol_versions(VERSIONS)
                .unwrap()
                .with_root_certificates(server_ca.roots())
                .with_client_auth_cert(vec![device.cert.clone()], device.key_der())
                .unwrap(),
        )
    }

    /// A server configuration presenting `server`, no client certificate.
    pub fn server_config(&self, server: &Leaf) -> Arc<rustls::ServerConfig> {
        Arc::new(
            rustls::ServerConfig::builder_with_provider(identity::tls::provider())
                .with_protocol_versions(VERSIONS)
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![server.cert.clone()], server.key_der())
                .unwrap(),
        )
    }
}

/// Everything for mutual TLS between a device and a broker on 127.0.0.1.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Leaf,
    pub device: Leaf,
}

impl Pki {
    pub fn new() -> Self {
        let ca = Ca::new("Hub");
        let server = ca.issue("broker", &["127.0.0.1"]);
        let device = ca.issue("device-1", &[]);
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
            server,
            device,
        };
        let write =
            |name: &str, text: &str| std::fs::write(pki.dir.path().join(name), text).unwrap();
        write("ca.pem", &pki.ca.pem);
        write("server.pem", &pki.server.cert_pem);
        write("server.key", &pki.server.key.serialize_pem());
        write("device.pem", &pki.device.cert_pem);
        write("device.key", &pki.device.key.serialize_pem());
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Mosquitto listener lines: TLS with our server certificate, client
    /// certificates from our CA required.
    pub fn broker_conf(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            self.path("ca.pem"),
            self.path("server.pem"),
            self.path("server.key")
        )
    }

    /// The device's side: its certificate, trusting our CA.
    pub fn device_tls(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config(&self.device, &self.ca)
    }
}

/// One request the HTTPS server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub answered: u16,
}

/// An HTTPS server on 127.0.0.1 that answers the n-th request with
/// `script[n]` (200 once the script runs out) and records every request.
pub struct HttpsServer {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    pub async fn start(tls: Arc<rustls::ServerConfig>, script: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let script = Arc::new(script);
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let log = log.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    // A refused handshake is the client's business.
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let script = script.clone();
                        async move {
                            let method = request.method().to_string();
                            let path = request.uri().to_string();
                            let content_type = request
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = request.into_body().collect().await?.to_bytes().to_vec();
                            let mut log = log.lock().unwrap();
                            let answered = script.get(log.len()).copied().unwrap_or(200);
                            log.push(Received {
                                method,
                                path,
                                content_type,
                                body,
                                answered,
                            });
                            let mut response = Response::new(Full::new(Bytes::from_static(b"")));
                            *response.status_mut() = StatusCode::from_u16(answered).unwrap();
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            port,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `ready` every 20 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready()
}
