//! Reading certificates: PEM framing and the fields `bulwark identity show`
//! prints.

use aws_lc_rs::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Error, Result};

/// OID of the X.520 `serialNumber` attribute (2.5.4.5), which carries the
/// unit's serial number in the subject (IEEE 802.1AR).
pub const SERIAL_NUMBER_OID: &[u64] = &[2, 5, 4, 5];

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(digest(&SHA256, der))
}

/// Wraps a DER certificate in PEM armour.
pub fn to_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// Wraps DER in PEM armour with `label` (e.g. `PUBLIC KEY` for an SPKI).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every certificate in a PEM text, in order.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::cert(what, format!("PEM does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(Error::cert(what, "no certificate in the PEM text"));
    }
    Ok(certs)
}

/// What a device certificate says, for display and checks.
#[derive(Debug, Clone, Serialize)]
pub struct CertSummary {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// The certificate's own serial (hex).
    pub certificate_serial: String,
    /// The unit's serial number from the subject, if present.
    pub unit_serial: Option<String>,
    /// The subject alternative name URIs.
    pub uris: Vec<String>,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// SHA-256 over the DER.
    pub sha256: String,
}

/// Parses a DER certificate into a [`CertSummary`].
pub fn summarize(der: &[u8]) -> Result<CertSummary> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::cert("parse", e.to_string()))?;
    let unit_serial = cert
        .subject()
        .iter_attributes()
        .find(|a| {
            a.attr_type()
                .iter()
                .is_some_and(|arcs| arcs.eq(SERIAL_NUMBER_OID.iter().copied()))
        })
        .and_then(|a| a.as_str().ok().map(str::to_owned));
    let uris = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let time = |t: x509_parser::time::ASN1Time| {
        t.to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        certificate_serial: cert.raw_serial_as_string(),
        unit_serial,
        uris,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        sha256: fingerprint(der),
    })
}

/// The DER `SubjectPublicKeyInfo` inside a certificate.
pub fn spki_of(der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::cert("parse", e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// The URI subject alternative names of a certificate (empty when it
/// cannot be parsed).
pub fn uri_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}
