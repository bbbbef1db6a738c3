//! Signatures per second and full mutual-TLS handshakes per second for
//! each keystore backend, single thread. `bench/keys.sh` runs this next to
//! `openssl speed ecdsap256` and prints the ratios.
//!
//! Handshakes run in memory (no sockets), so they measure the protocol's
//! crypto: both sides sign with the backend under test, and the baseline
//! is rustls with the same kind of key loaded directly into aws-lc-rs.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::ca::ManufacturerCa;
use identity::tls::{TlsIdentity, client_config, server_config};
use keys::{Algorithm, KeyAdmin, KeyLabel, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const WINDOW: Duration = Duration::from_secs(3);

fn rate(mut op: impl FnMut()) -> f64 {
    op();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < WINDOW {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn report(what: &str, per_second: f64) {
    println!("{what:<44} {per_second:>10.1} /s");
}

fn handshake(client: &Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) {
    let name = ServerName::try_from("peer.test").expect("name");
    let mut c = rustls::ClientConnection::new(client.clone(), name).expect("client");
    let mut s = rustls::ServerConnection::new(server.clone()).expect("server");
    let mut buf = Vec::new();
    for _ in 0..20 {
        if !c.is_handshaking() && !s.is_handshaking() {
            return;
        }
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server read");
        }
        s.process_new_packets().expect("server process");
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read");
        }
        c.process_new_packets().expect("client process");
    }
    panic!("handshake did not finish");
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: ManufacturerCa,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SoftKeyStore::open(&dir.path().join("ca-keys"), KekProtection::File).expect("ca store"),
    );
    for l in ["root", "issuing"] {
        store
            .generate(&l.parse().expect("label"), Algorithm::EcdsaP256Sha256)
            .expect("ca key");
    }
    let s: Arc<dyn KeyStore> = store;
    let root = KeyRef::new(s.clone(), "root".parse().expect("label")).expect("root");
    let issuing = KeyRef::new(s, "issuing".parse().expect("label")).expect("issuing");
    let ca = ManufacturerCa::create(&dir.path().join("ca"), "Bench", &root, issuing).expect("ca");
    Pki { _dir: dir, ca }
}

fn identity_in(pki: &Pki, store: Arc<dyn KeyAdmin>, label: &str) -> TlsIdentity {
    let label: KeyLabel = label.parse().expect("label");
    let _ = store.delete(&label);
    let public = store
        .generate(&label, Algorithm::EcdsaP256Sha256)
        .expect("generate");
    let cert = pki
        .ca
        .issue_service("peer", &["peer.test"], &public, 1)
        .expect("cert");
    let store: Arc<dyn KeyStore> = store;
    TlsIdentity {
        chain: vec![cert, pki.ca.issuing().clone()],
        key: KeyRef::new(store, label).expect("keyref"),
    }
}

fn bench_backend(name: &str, pki: &Pki, store: Arc<dyn KeyAdmin>) {
    let label: KeyLabel = "bench-sign".parse().expect("label");
    let _ = store.delete(&label);
    store
        .generate(&label, Algorithm::EcdsaP256Sha256)
        .expect("generate");
    let msg = [0x5a_u8; 64];
    report(
        &format!("{name}: ecdsa-p256 sign"),
        rate(|| {
            store.sign(&label, &msg).expect("sign");
        }),
    );
    let _ = store.delete(&label);
    let id = identity_in(pki, store.clone(), "bench-tls");
    let anchors = [pki.ca.root().clone()];
    let server = Arc::new(full_handshakes_server(
        server_config(&id, &anchors).expect("server config"),
    ));
    let client = Arc::new(full_handshakes_client(
        client_config(&id, &anchors).expect("client config"),
    ));
    report(
        &format!("{name}: mTLS handshake (both sides)"),
        rate(|| handshake(&client, &server)),
    );
    let _ = store.delete(&"bench-tls".parse().expect("label"));
}

/// rustls with the key loaded straight into aws-lc-rs: the ceiling any
/// keystore adapter is measured against.
fn bench_native(pki: &Pki) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).expect("parse");
    let spki = keys::encoding::p256_spki_from_point(pair.public_key().as_ref()).expect("spki");
    let public = keys::PublicKey::from_spki_der(Algorithm::EcdsaP256Sha256, spki);
    let cert = pki
        .ca
        .issue_service("peer", &["peer.test"], &public, 1)
        .expect("cert");
    let chain: Vec<CertificateDer<'static>> = vec![cert, pki.ca.issuing().clone()];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()));
    let provider = identity::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.root().clone()).expect("root");
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key())
        .expect("server");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key())
        .expect("client");
    let msg = [0x5a_u8; 64];
    report(
        "aws-lc-rs direct: ecdsa-p256 sign",
        rate(|| {
            pair.sign(&rng, &msg).expect("sign");
        }),
    );
    let (client, server) = (
        Arc::new(full_handshakes_client(client)),
        Arc::new(full_handshakes_server(server)),
    );
    report(
        "rustls native keys: mTLS handshake",
        rate(|| handshake(&client, &server)),
    );
}

/// No session resumption: every handshake signs on both sides.
fn full_handshakes_client(mut config: rustls::ClientConfig) -> rustls::ClientConfig {
    config.resumption = rustls::client::Resumption::disabled();
    config
}

fn full_handshakes_server(mut config: rustls::ServerConfig) -> rustls::ServerConfig {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let pki = pki();
    bench_native(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let soft = Arc::new(
        SoftKeyStore::open(&dir.path().join("soft"), KekProtection::File).expect("soft store"),
    );
    bench_backend("software", &pki, soft.clone());
    let ed = "bench-ed".parse().expect("label");
    soft.generate(&ed, Algorithm::Ed25519).expect("ed25519");
    report(
        "software: ed25519 sign",
        rate(|| {
            soft.sign(&ed, &[0x5a; 64]).expect("sign");
        }),
    );

    let tpm = testkit::swtpm::Swtpm::start();
    let tpm_store = Arc::new(
        keys_tpm::TpmKeyStore::open(keys_tpm::TpmConfig::new(tpm.tcti(), dir.path().join("tpm")))
            .expect("tpm store"),
    );
    bench_backend("tpm2 (swtpm)", &pki, tpm_store);

    // bench/keys.sh creates a SoftHSM2 token and exports its URI; the
    // module reads SOFTHSM2_CONF once, so the script sets that too.
    let uri = std::env::var("BULWARK_BENCH_PKCS11_URI")
        .expect("BULWARK_BENCH_PKCS11_URI is not set: run bench/keys.sh");
    let hsm = Arc::new(keys_pkcs11::Pkcs11KeyStore::open_uri(&uri).expect("pkcs11 store"));
    bench_backend("pkcs11 (SoftHSM2)", &pki, hsm);
}
