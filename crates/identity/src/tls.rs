//! TLS with keys that never leave their keystore.
//!
//! [`KeystoreSigningKey`] lets rustls sign handshakes through a
//! [`KeyRef`], whatever backend holds the key (software, TPM, PKCS#11).
//! [`server_config`] and [`client_config`] build mutual-TLS configurations
//! on the aws-lc-rs provider with TLS 1.2 and 1.3 only; both sides verify
//! the peer against the trust anchors given (the manufacturer root, or an
//! operator's CA) with rustls-webpki.
//!
//! A handshake signature is a blocking keystore call (a TPM takes a few
//! milliseconds); at device connection rates that is acceptable inside the
//! async task, and it keeps the adapter free of a runtime dependency.

use std::sync::Arc;

use keys::{Algorithm, KeyRef};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{RootCertStore, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::{Error, Result};

/// The one crypto provider Bulwark uses for TLS.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.2 and 1.3; nothing older is compiled in.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A keystore key as a rustls signing key.
#[derive(Debug, Clone)]
pub struct KeystoreSigningKey(pub KeyRef);

impl KeystoreSigningKey {
    fn scheme(&self) -> SignatureScheme {
        match self.0.public_key().algorithm() {
            Algorithm::Ed25519 => SignatureScheme::ED25519,
            _ => SignatureScheme::ECDSA_NISTP256_SHA256,
        }
    }
}

impl SigningKey for KeystoreSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = self.scheme();
        offered
            .contains(&scheme)
            .then(|| Box::new(KeystoreSigner(self.0.clone(), scheme)) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(
            self.0.public_key().spki_der(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.public_key().algorithm() {
            Algorithm::Ed25519 => SignatureAlgorithm::ED25519,
            _ => SignatureAlgorithm::ECDSA,
        }
    }
}

#[derive(Debug)]
struct KeystoreSigner(KeyRef, SignatureScheme);

impl Signer for KeystoreSigner {
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, rustls::Error> {
        self.0.sign(message).map(|s| s.0).map_err(|e| {
            tracing::warn!(key = %self.0.label(), error = %e, "TLS handshake signature failed");
            rustls::Error::General(format!("keystore signature failed: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.1
    }
}

/// A certificate chain (own certificate first) and the key it certifies.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// The end-entity certificate followed by its issuers (root optional).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, in its keystore.
    pub key: KeyRef,
}

impl TlsIdentity {
    fn certified(&self) -> Result<Arc<CertifiedKey>> {
        let certified = CertifiedKey::new(
            self.chain.clone(),
            Arc::new(KeystoreSigningKey(self.key.clone())),
        );
        certified.keys_match().map_err(|e| {
            Error::cert(
                "TLS identity",
                format!("key does not match certificate: {e}"),
            )
        })?;
        Ok(Arc::new(certified))
    }
}

fn roots(anchors: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for anchor in anchors {
        store
            .add(anchor.clone())
            .map_err(|e| Error::cert("trust anchor", e))?;
    }
    if store.is_empty() {
        return Err(Error::InvalidInput {
            what: "trust anchors",
            reason: "at least one is needed to authenticate peers".into(),
        });
    }
    Ok(Arc::new(store))
}

/// A server that presents `identity` and requires every client to present
/// a certificate chaining to one of `client_anchors` (mutual TLS).
pub fn server_config(
    identity: &TlsIdentity,
    client_anchors: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(client_anchors)?, provider.clone())
            .build()
            .map_err(|e| Error::cert("client verifier", e))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::cert("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::unwrap_or_clone(
            identity.certified()?,
        )))))
}

/// A management-API server: presents `identity`; clients may present a
/// certificate, which must then chain to one of `client_anchors` (machine
/// clients), or none (people, who log in with a password). With no anchors,
/// client certificates are not requested at all. `tls13_only` drops TLS 1.2.
pub fn api_server_config(
    identity: &TlsIdentity,
    client_anchors: &[CertificateDer<'static>],
    tls13_only: bool,
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        VERSIONS
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::cert("TLS versions", e))?;
    let builder = if client_anchors.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(client_anchors)?, provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| Error::cert("client verifier", e))?;
        builder.with_client_cert_verifier(verifier)
    };
    Ok(
        builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::unwrap_or_clone(
            identity.certified()?,
        )))),
    )
}

/// A client that presents `identity` and accepts only servers chaining to
/// `server_anchors`.
pub fn client_config(
    identity: &TlsIdentity,
    server_anchors: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(roots(server_anchors)?, provider.clone())
            .build()
            .map_err(|e| Error::cert("server verifier", e))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::cert("TLS versions", e))?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::unwrap_or_clone(
            identity.certified()?,
        )))))
}

/// A client of a device's management API (an app, a fleet service): the
/// device certificate must chain to `anchors`, and when `device_id` is
/// given its URI name must be `urn:uuid:<device_id>`. Device certificates
/// name the unit, not a host (devices move between addresses), so the
/// usual DNS-name check is replaced by this identity check.
pub fn device_client_config(
    anchors: &[CertificateDer<'static>],
    device_id: Option<&str>,
    identity: Option<&TlsIdentity>,
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(anchors)?, provider.clone())
        .build()
        .map_err(|e| Error::cert("server verifier", e))?;
    let verifier = Arc::new(DeviceVerifier {
        inner,
        device_id: device_id.map(|d| format!("urn:uuid:{d}")),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| Error::cert("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            Arc::unwrap_or_clone(id.certified()?),
        ))),
        None => builder.with_no_client_auth(),
    })
}

#[derive(Debug)]
struct DeviceVerifier {
    inner: Arc<WebPkiServerVerifier>,
    device_id: Option<String>,
}

impl rustls::client::danger::ServerCertVerifier for DeviceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            // The chain, validity and usage were checked; only the name
            // did not match: check the device identity instead.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                let uris = crate::x509::uri_names(end_entity.as_ref());
                match &self.device_id {
                    Some(expected) if !uris.iter().any(|u| u == expected) => Err(
                        rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
                    ),
                    _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
