//! The manufacturer CA: a root that signs an issuing CA, which signs every
//! unit's IDevID certificate. Both keys stay in their keystores (the root
//! ideally offline in a PKCS#11 token); this type only ever holds
//! [`KeyRef`]s.

use std::path::{Path, PathBuf};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keys::fsio::write_atomic;
use keys::{KeyRef, PublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::registry::Registry;
use crate::signer::{RcgenKey, SubjectKey};
use crate::x509::{SERIAL_NUMBER_OID, certs_from_pem, spki_of, to_pem};
use crate::{Error, Result};

const ROOT_FILE: &str = "root.pem";
const ISSUING_FILE: &str = "issuing.pem";
const REGISTRY_FILE: &str = "issued.jsonl";

/// What goes into a unit's certificate.
#[derive(Debug, Clone)]
pub struct DeviceSubject {
    /// The random device identifier (UUID).
    pub device_id: String,
    /// The maker's serial number.
    pub serial: String,
    /// The product model.
    pub model: String,
}

/// A loaded manufacturer CA, ready to issue device certificates.
#[derive(Debug)]
pub struct ManufacturerCa {
    dir: PathBuf,
    root: CertificateDer<'static>,
    issuing: CertificateDer<'static>,
    issuing_key: KeyRef,
}

impl ManufacturerCa {
    /// Creates the root and issuing certificates for `organization` in
    /// `dir`, signing with keys that already exist in their keystores.
    /// Refuses to overwrite an existing CA.
    pub fn create(
        dir: &Path,
        organization: &str,
        root_key: &KeyRef,
        issuing_key: KeyRef,
    ) -> Result<Self> {
        check_text("organization", organization, 64)?;
        if dir.join(ROOT_FILE).exists() || dir.join(ISSUING_FILE).exists() {
            return Err(Error::InvalidInput {
                what: "CA directory",
                reason: format!(
                    "{} already holds a CA; refusing to overwrite it",
                    dir.display()
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let now = OffsetDateTime::now_utc();

        let mut root_params = CertificateParams::default();
        root_params.distinguished_name = dn(organization, &format!("{organization} Root CA"));
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        root_params.not_before = now - Duration::minutes(5);
        root_params.not_after = now + Duration::days(25 * 365);
        root_params.serial_number = Some(random_serial()?);
        let root_signer = RcgenKey(root_key.clone());
        let root = root_params
            .self_signed(&root_signer)
            .map_err(|e| Error::cert("root CA", e))?;

        let mut issuing_params = CertificateParams::default();
        issuing_params.distinguished_name =
            dn(organization, &format!("{organization} Device Issuing CA"));
        issuing_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        issuing_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        issuing_params.not_before = now - Duration::minutes(5);
        issuing_params.not_after = now + Duration::days(20 * 365);
        issuing_params.serial_number = Some(random_serial()?);
        issuing_params.use_authority_key_identifier_extension = true;
        let root_issuer = Issuer::from_params(&root_params, &root_signer);
        let issuing = issuing_params
            .signed_by(&SubjectKey(issuing_key.public_key().clone()), &root_issuer)
            .map_err(|e| Error::cert("issuing CA", e))?;

        write_atomic(&dir.join(ROOT_FILE), root.pem().as_bytes(), 0o644)?;
        write_atomic(&dir.join(ISSUING_FILE), issuing.pem().as_bytes(), 0o644)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            root: root.der().clone(),
            issuing: issuing.der().clone(),
            issuing_key,
        })
    }

    /// Loads the CA in `dir`, checking that `issuing_key` is the key its
    /// issuing certificate names.
    pub fn load(dir: &Path, issuing_key: KeyRef) -> Result<Self> {
        let read = |name: &str| -> Result<CertificateDer<'static>> {
            let path = dir.join(name);
            let pem = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
            certs_from_pem(name, &pem)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::cert(name, "empty"))
        };
        let root = read(ROOT_FILE)?;
        let issuing = read(ISSUING_FILE)?;
        if spki_of(&issuing)? != issuing_key.public_key().spki_der() {
            return Err(Error::InvalidInput {
                what: "issuing key",
                reason: format!(
                    "key {} is not the key certified in {}",
                    issuing_key.label(),
                    dir.join(ISSUING_FILE).display()
                ),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            root,
            issuing,
            issuing_key,
        })
    }

    /// The root certificate (the trust anchor devices and peers pin).
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The issuing CA certificate.
    pub fn issuing(&self) -> &CertificateDer<'static> {
        &self.issuing
    }

    /// Issuing CA then root, in PEM: the chain a device presents after its
    /// own certificate.
    pub fn chain_pem(&self) -> String {
        to_pem(&self.issuing) + &to_pem(&self.root)
    }

    /// The registry of issued units.
    pub fn registry(&self) -> Registry {
        Registry::new(self.dir.join(REGISTRY_FILE))
    }

    /// Issues an IDevID certificate (IEEE 802.1AR style: serial number in
    /// the subject, no expiry) for a device public key.
    pub fn issue_device(
        &self,
        subject: &DeviceSubject,
        key: &PublicKey,
    ) -> Result<CertificateDer<'static>> {
        check_text("serial number", &subject.serial, 64)?;
        check_text("model", &subject.model, 64)?;
        let issuer = Issuer::from_ca_cert_der(&self.issuing, RcgenKey(self.issuing_key.clone()))
            .map_err(|e| Error::cert("issuing CA", e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, subject.device_id.as_str());
        name.push(
            DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
            DnValue::PrintableString(
                subject
                    .serial
                    .as_str()
                    .try_into()
                    .map_err(|e| Error::cert("serial number", e))?,
            ),
        );
        name.push(DnType::OrganizationalUnitName, subject.model.as_str());
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:uuid:{}", subject.device_id)
                .try_into()
                .map_err(|e| Error::cert("device URI", e))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        // IEEE 802.1AR: an IDevID has no well-defined expiry.
        params.not_after = OffsetDateTime::new_utc(
            time::Date::from_calendar_date(9999, time::Month::December, 31)
                .map_err(|e| Error::cert("validity", e))?,
            time::Time::from_hms(23, 59, 59).map_err(|e| Error::cert("validity", e))?,
        );
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&SubjectKey(key.clone()), &issuer)
            .map_err(|e| Error::cert(format!("device {}", subject.device_id), e))?;
        Ok(cert.der().clone())
    }
}

impl ManufacturerCa {
    /// Issues a certificate for a service that devices talk to (a gateway,
    /// a fleet server): `name` is its common name, `dns_names` the host
    /// names clients will check. Valid for `days`.
    pub fn issue_service(
        &self,
        name: &str,
        dns_names: &[&str],
        key: &PublicKey,
        days: i64,
    ) -> Result<CertificateDer<'static>> {
        check_text("service name", name, 64)?;
        let issuer = Issuer::from_ca_cert_der(&self.issuing, RcgenKey(self.issuing_key.clone()))
            .map_err(|e| Error::cert("issuing CA", e))?;
        let mut params = CertificateParams::new(
            dns_names
                .iter()
                .map(|d| (*d).to_owned())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Error::cert(format!("service {name}"), e))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&SubjectKey(key.clone()), &issuer)
            .map_err(|e| Error::cert(format!("service {name}"), e))?;
        Ok(cert.der().clone())
    }
}

fn dn(organization: &str, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    name
}

/// Refuses text that is empty, too long or has characters outside a
/// conservative allow-list (it goes into certificates and file names).
pub(crate) fn check_text(what: &'static str, value: &str, max: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.len() > max {
        Some(format!("it is longer than {max} characters"))
    } else {
        value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || " -.:_()/+,".contains(*c)))
            .map(|c| format!("character {c:?} is not allowed"))
    };
    match reason {
        Some(reason) => Err(Error::InvalidInput { what, reason }),
        None => Ok(()),
    }
}

/// A random positive 128-bit certificate serial (RFC 5280 allows 20 bytes).
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::cert("serial", "the system random generator failed"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
