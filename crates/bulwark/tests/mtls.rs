//! Mutual TLS between a device whose key is in a TPM (swtpm) and a peer
//! whose key is in a PKCS#11 token (SoftHSM2), over loopback TCP; and the
//! refusals when either side's certificate comes from an untrusted CA.
//!
//! The body runs in a child process (`testkit::pkcs11::isolated`) because
//! SoftHSM2 reads its configuration once per process.

use std::path::Path;
use std::sync::Arc;

use identity::ca::{DeviceSubject, ManufacturerCa};
use identity::tls::{TlsIdentity, client_config, server_config};
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use testkit::softhsm::SoftHsm;
use testkit::swtpm::Swtpm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ca(dir: &Path, name: &str) -> ManufacturerCa {
    let store = Arc::new(
        SoftKeyStore::open(&dir.join(format!("{name}-keys")), KekProtection::File).unwrap(),
    );
    for l in ["root", "issuing"] {
        store
            .generate(&l.parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
    }
    let s: Arc<dyn KeyStore> = store;
    let root = KeyRef::new(s.clone(), "root".parse().unwrap()).unwrap();
    let issuing = KeyRef::new(s, "issuing".parse().unwrap()).unwrap();
    ManufacturerCa::create(&dir.join(name), name, &root, issuing).unwrap()
}

struct Sides {
    device: TlsIdentity,
    peer: TlsIdentity,
    _tpm: Swtpm,
    _dir: tempfile::TempDir,
    trusted: ManufacturerCa,
    untrusted: ManufacturerCa,
    device_id: String,
}

fn sides(hsm: &SoftHsm) -> Sides {
    let dir = tempfile::tempdir().unwrap();
    let trusted = ca(dir.path(), "Acme");
    let untrusted = ca(dir.path(), "Mallory");
    let tpm = Swtpm::start();
    let tpm_store = Arc::new(
        keys_tpm::TpmKeyStore::open(keys_tpm::TpmConfig::new(tpm.tcti(), dir.path().join("tpm")))
            .unwrap(),
    );
    let device_label = "idevid".parse().unwrap();
    let device_public = tpm_store
        .generate(&device_label, Algorithm::EcdsaP256Sha256)
        .unwrap();
    let device_id = "7b0c5a52-3f7e-4c3e-9d1a-2f3c4d5e6f70".to_owned();
    let device_cert = trusted
        .issue_device(
            &DeviceSubject {
                device_id: device_id.clone(),
                serial: "T-1".into(),
                model: "M".into(),
            },
            &device_public,
        )
        .unwrap();
    let tpm_dyn: Arc<dyn KeyStore> = tpm_store;
    let device = TlsIdentity {
        chain: vec![device_cert, trusted.issuing().clone()],
        key: KeyRef::new(tpm_dyn, device_label).unwrap(),
    };
    let hsm_store = Arc::new(keys_pkcs11::Pkcs11KeyStore::open_uri(&hsm.uri()).unwrap());
    let peer_label = "peer-tls".parse().unwrap();
    let _ = hsm_store.delete(&peer_label);
    let peer_public = hsm_store
        .generate(&peer_label, Algorithm::EcdsaP256Sha256)
        .unwrap();
    let peer_cert = trusted
        .issue_service("peer", &["peer.test"], &peer_public, 30)
        .unwrap();
    let hsm_dyn: Arc<dyn KeyStore> = hsm_store;
    let peer = TlsIdentity {
        chain: vec![peer_cert, trusted.issuing().clone()],
        key: KeyRef::new(hsm_dyn, peer_label).unwrap(),
    };
    Sides {
        device,
        peer,
        _tpm: tpm,
        _dir: dir,
        trusted,
        untrusted,
        device_id,
    }
}

/// Runs one handshake plus an echo; returns what each side saw.
fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (Result<String, String>, Result<Vec<u8>, String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned())
                .ok_or("no client certificate")?;
            let subject = identity::x509::summarize(&client_cert)
                .map_err(|e| e.to_string())?
                .subject;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(subject)
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let client_result = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let name =
                rustls::pki_types::ServerName::try_from("peer.test").map_err(|e| e.to_string())?;
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
            let mut echo = Vec::new();
            tls.read_to_end(&mut echo)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(echo)
        }
        .await;
        let server_result = tokio::time::timeout(std::time::Duration::from_secs(20), server_task)
            .await
            .map_err(|_| "server timed out".to_owned())
            .and_then(|j| j.map_err(|e| e.to_string()))
            .and_then(|r| r);
        (server_result, client_result)
    })
}

#[test]
fn tpm_device_and_pkcs11_peer_authenticate_each_other() {
    testkit::pkcs11::isolated(
        || SoftHsm::new("mtls-ok"),
        |hsm| {
            let s = sides(hsm);
            let anchors = [s.trusted.root().clone()];
            let server = server_config(&s.peer, &anchors).unwrap();
            let client = client_config(&s.device, &anchors).unwrap();
            let (server_saw, client_got) = exchange(server, client);
            let subject = server_saw.expect("server side of the handshake");
            assert!(subject.contains(&s.device_id), "server saw {subject}");
            assert_eq!(client_got.expect("client side"), b"hello");
        },
    );
}

#[test]
fn untrusted_ca_is_refused() {
    testkit::pkcs11::isolated(
        || SoftHsm::new("mtls-bad"),
        |hsm| {
            let s = sides(hsm);
            // The server trusts only Mallory's CA: the device is refused.
            let server = server_config(&s.peer, &[s.untrusted.root().clone()]).unwrap();
            let client = client_config(&s.device, &[s.trusted.root().clone()]).unwrap();
            let (server_saw, client_got) = exchange(server, client);
            let err = server_saw.expect_err("a device from an untrusted CA was accepted");
            assert!(
                err.contains("certificate") || err.contains("UnknownIssuer"),
                "{err}"
            );
            assert!(client_got.is_err() || client_got.as_deref() == Ok(&b""[..]));
            // The device trusts only Mallory's CA: the peer is refused.
            let server = server_config(&s.peer, &[s.trusted.root().clone()]).unwrap();
            let client = client_config(&s.device, &[s.untrusted.root().clone()]).unwrap();
            let (_, client_got) = exchange(server, client);
            let err = client_got.expect_err("a peer from an untrusted CA was accepted");
            assert!(
                err.contains("UnknownIssuer") || err.contains("certificate"),
                "{err}"
            );
        },
    );
}
