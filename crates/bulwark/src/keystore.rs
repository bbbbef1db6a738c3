//! Choosing and opening a keystore from the command line.
//!
//! A keystore is named by a short spec string so that the same text works
//! on the command line and in the CA's `ca.json`:
//!
//! | spec | keystore |
//! |---|---|
//! | `software` | software keys in `<dir>`; KEK sealed by the TPM when one is configured, else a 0600 file |
//! | `software+tpm:<TCTI>` | software keys whose KEK the TPM at `<TCTI>` seals |
//! | `tpm:<TCTI>` | keys inside the TPM 2.0 at `<TCTI>` (e.g. `tpm:device:/dev/tpmrm0`) |
//! | `pkcs11:<...>` | an RFC 7512 PKCS#11 URI naming the token (PIN via `pin-source`) |

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use keys::KeyAdmin;
use keys_soft::{KekProtection, SoftKeyStore};

/// A parsed keystore spec.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeystoreSpec {
    /// Software keystore; KEK sealed by the TPM at the TCTI if given.
    Software { seal_with_tpm: Option<String> },
    /// TPM 2.0 keys.
    Tpm { tcti: String },
    /// PKCS#11 token addressed by URI.
    Pkcs11 { uri: String },
}

impl FromStr for KeystoreSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if s == "software" {
            Ok(Self::Software {
                seal_with_tpm: None,
            })
        } else if let Some(tcti) = s.strip_prefix("software+tpm:") {
            Ok(Self::Software {
                seal_with_tpm: Some(non_empty(tcti, "TCTI")?),
            })
        } else if let Some(tcti) = s.strip_prefix("tpm:") {
            Ok(Self::Tpm {
                tcti: non_empty(tcti, "TCTI")?,
            })
        } else if s.starts_with("pkcs11:") {
            Ok(Self::Pkcs11 { uri: s.to_owned() })
        } else {
            bail!(
                "unknown keystore {:?}: use software, software+tpm:<TCTI>, tpm:<TCTI> or a pkcs11: URI",
                redact(s)
            )
        }
    }
}

fn non_empty(value: &str, what: &str) -> Result<String> {
    if value.is_empty() {
        bail!("the keystore spec needs a {what} after the colon");
    }
    Ok(value.to_owned())
}

/// Hides everything after a `pin-value=` so a mistyped spec cannot print a PIN.
fn redact(s: &str) -> String {
    match s.find("pin-value=") {
        Some(at) => format!("{}pin-value=<redacted>", &s[..at]),
        None => s.to_owned(),
    }
}

impl fmt::Display for KeystoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Software {
                seal_with_tpm: None,
            } => f.write_str("software"),
            Self::Software {
                seal_with_tpm: Some(t),
            } => write!(f, "software+tpm:{t}"),
            Self::Tpm { tcti } => write!(f, "tpm:{tcti}"),
            Self::Pkcs11 { uri } => f.write_str(&redact(uri)),
        }
    }
}

impl fmt::Debug for KeystoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeystoreSpec({self})")
    }
}

impl KeystoreSpec {
    /// Opens the keystore. `dir` holds whatever the backend keeps on disk
    /// (software key files, the TPM's handle index).
    pub(crate) fn open(&self, dir: &Path) -> Result<Arc<dyn KeyAdmin>> {
        match self {
            Self::Software { seal_with_tpm } => {
                let protection = match seal_with_tpm {
                    None => KekProtection::File,
                    Some(tcti) => KekProtection::SealedBy(open_tpm(tcti, &dir.join("tpm"))?),
                };
                let path = dir.join("software");
                let store = SoftKeyStore::open(&path, protection).with_context(|| {
                    format!("opening the software keystore in {}", path.display())
                })?;
                Ok(Arc::new(store))
            }
            Self::Tpm { tcti } => Ok(open_tpm(tcti, &dir.join("tpm"))?),
            Self::Pkcs11 { uri } => open_pkcs11(uri),
        }
    }
}

#[cfg(feature = "tpm")]
fn open_tpm(tcti: &str, index_dir: &Path) -> Result<Arc<dyn KeyAdmin>> {
    let store = keys_tpm::TpmKeyStore::open(keys_tpm::TpmConfig {
        tcti: tcti.to_owned(),
        state_dir: index_dir.to_path_buf(),
    })
    .with_context(|| format!("opening the TPM at {tcti}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(tcti: &str, _index_dir: &Path) -> Result<Arc<dyn KeyAdmin>> {
    bail!(
        "this bulwark was built without TPM support (cargo feature `tpm`, needs libtss2-dev); cannot open {tcti}"
    )
}

impl KeystoreSpec {
    /// The TPM NV counter that backs the update security floor when this
    /// keystore uses a TPM (`tpm:` and `software+tpm:`), defined on first
    /// use (see `keys_tpm::counter`); `None` for the other keystores.
    pub(crate) fn floor_counter(&self) -> Result<Option<Box<dyn agent::MonotonicCounter>>> {
        match self {
            Self::Tpm { tcti }
            | Self::Software {
                seal_with_tpm: Some(tcti),
            } => open_floor_counter(tcti).map(Some),
            Self::Software {
                seal_with_tpm: None,
            }
            | Self::Pkcs11 { .. } => Ok(None),
        }
    }
}

impl KeystoreSpec {
    /// The TPM PCR the start-up integrity measurement is extended into
    /// (`pcr`, default `keys_tpm::pcr::DEFAULT_PCR`) when this keystore
    /// uses a TPM; `None` for the other keystores.
    pub(crate) fn measurement(
        &self,
        pcr: Option<u8>,
    ) -> Result<Option<Box<dyn agent::MeasurementSink>>> {
        match self {
            Self::Tpm { tcti }
            | Self::Software {
                seal_with_tpm: Some(tcti),
            } => pcr_sink(tcti, pcr).map(Some),
            Self::Software {
                seal_with_tpm: None,
            }
            | Self::Pkcs11 { .. } => Ok(None),
        }
    }
}

/// A PCR of the keystore's TPM as the update crate's measurement sink.
#[cfg(feature = "tpm")]
#[derive(Debug)]
struct TpmPcr {
    tcti: String,
    pcr: u8,
}

#[cfg(feature = "tpm")]
impl agent::MeasurementSink for TpmPcr {
    fn extend(&self, digest: &[u8; 32]) -> update::Result<()> {
        Ok(keys_tpm::pcr::extend(&self.tcti, self.pcr, digest)?)
    }

    fn describe(&self) -> String {
        format!("TPM PCR {} (SHA-256 bank)", self.pcr)
    }
}

#[cfg(feature = "tpm")]
fn pcr_sink(tcti: &str, pcr: Option<u8>) -> Result<Box<dyn agent::MeasurementSink>> {
    let pcr = pcr.unwrap_or(keys_tpm::pcr::DEFAULT_PCR);
    anyhow::ensure!(
        keys_tpm::pcr::ALLOWED.contains(&pcr),
        "update.measure_pcr: PCR {pcr} is not one of {:?}",
        keys_tpm::pcr::ALLOWED
    );
    Ok(Box::new(TpmPcr {
        tcti: tcti.to_owned(),
        pcr,
    }))
}

#[cfg(not(feature = "tpm"))]
fn pcr_sink(tcti: &str, _pcr: Option<u8>) -> Result<Box<dyn agent::MeasurementSink>> {
    bail!(
        "this bulwark was built without TPM support (cargo feature `tpm`, needs libtss2-dev); cannot open {tcti}"
    )
}

/// The update crate's view of the TPM counter.
#[cfg(feature = "tpm")]
#[derive(Debug)]
struct TpmFloorCounter(keys_tpm::TpmCounter);

#[cfg(feature = "tpm")]
impl agent::MonotonicCounter for TpmFloorCounter {
    fn read(&self) -> update::Result<u64> {
        Ok(self.0.read()?)
    }

    fn increment(&self) -> update::Result<u64> {
        Ok(self.0.increment()?)
    }
}

#[cfg(feature = "tpm")]
fn open_floor_counter(tcti: &str) -> Result<Box<dyn agent::MonotonicCounter>> {
    let counter = keys_tpm::TpmCounter::open_or_define(tcti)
        .with_context(|| format!("opening the security floor counter in the TPM at {tcti}"))?;
    Ok(Box::new(TpmFloorCounter(counter)))
}

#[cfg(not(feature = "tpm"))]
fn open_floor_counter(tcti: &str) -> Result<Box<dyn agent::MonotonicCounter>> {
    bail!(
        "this bulwark was built without TPM support (cargo feature `tpm`, needs libtss2-dev); cannot open {tcti}"
    )
}

#[cfg(feature = "pkcs11")]
fn open_pkcs11(uri: &str) -> Result<Arc<dyn KeyAdmin>> {
    let store = keys_pkcs11::Pkcs11KeyStore::open_uri(uri)
        .with_context(|| format!("opening the PKCS#11 token {}", redact(uri)))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "pkcs11"))]
fn open_pkcs11(uri: &str) -> Result<Arc<dyn KeyAdmin>> {
    bail!(
        "this bulwark was built without PKCS#11 support (cargo feature `pkcs11`); cannot open {}",
        redact(uri)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_pins_never_print() {
        for s in [
            "software",
            "software+tpm:device:/dev/tpmrm0",
            "tpm:swtpm:host=127.0.0.1,port=2321",
        ] {
            assert_eq!(s.parse::<KeystoreSpec>().unwrap().to_string(), s);
        }
        let spec: KeystoreSpec = "pkcs11:token=a?pin-value=123456".parse().unwrap();
        assert!(!format!("{spec} {spec:?}").contains("123456"));
        let err = "hsm:pin-value=987654"
            .parse::<KeystoreSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown keystore") && !err.contains("987654"),
            "{err}"
        );
        assert!("tpm:".parse::<KeystoreSpec>().is_err());
    }
}

/// A keystore spec as typed on the command line. Parsed by our code after
/// clap, because clap echoes rejected values verbatim and a `pkcs11:` URI
/// may carry a PIN.
#[derive(Clone)]
pub(crate) struct SpecArg(String);

impl FromStr for SpecArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for SpecArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecArg({})", redact(&self.0))
    }
}

impl SpecArg {
    /// The parsed spec.
    pub(crate) fn spec(&self) -> Result<KeystoreSpec> {
        self.0.parse()
    }
}
