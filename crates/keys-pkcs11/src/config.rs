//! How to reach a token: which module, which token, which PIN.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use keys::{Error, Result};
use zeroize::Zeroizing;

use crate::uri::{PinSpec, Pkcs11Uri};

/// Longest PIN file we read: PINs are short, and a large file is a mistake.
const MAX_PIN_FILE: u64 = 1024;

/// Where `module-name=` is looked up, in order, as `lib{name}.so` and
/// `{name}.so`: Debian's multiarch p11-kit directory first, then the
/// places distributions and vendors install modules.
fn module_dirs() -> Vec<PathBuf> {
    let multiarch = format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH);
    [
        format!("{multiarch}/pkcs11"),
        "/usr/lib/pkcs11".to_owned(),
        "/usr/lib64/pkcs11".to_owned(),
        "/usr/local/lib/pkcs11".to_owned(),
        "/usr/lib/softhsm".to_owned(),
        multiarch,
        "/usr/lib".to_owned(),
        "/usr/lib64".to_owned(),
        "/usr/local/lib".to_owned(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The PIN as configured: given, or read from a file at open time (so a
/// rotated PIN file takes effect on the next open).
#[derive(Clone)]
pub(crate) enum Pin {
    Value(Zeroizing<Vec<u8>>),
    File(PathBuf),
}

/// How to open a [`crate::Pkcs11KeyStore`]: the module to load, the
/// attributes that select exactly one token, and the user PIN.
///
/// Built from a `pkcs11:` URI ([`Pkcs11Config::from_uri`]) or in code
/// ([`Pkcs11Config::new`]). `Debug` shows the module and the selector,
/// never the PIN.
#[derive(Clone)]
pub struct Pkcs11Config {
    pub(crate) module: PathBuf,
    pub(crate) selector: Pkcs11Uri,
    pub(crate) pin: Option<Pin>,
}

impl Pkcs11Config {
    /// The token labelled `token_label` in the module at `module_path`,
    /// without a PIN yet (see [`Self::with_pin`], [`Self::with_pin_file`]).
    pub fn new(module_path: impl Into<PathBuf>, token_label: impl Into<String>) -> Self {
        Self {
            module: module_path.into(),
            selector: Pkcs11Uri {
                token: Some(token_label.into()),
                ..Pkcs11Uri::default()
            },
            pin: None,
        }
    }

    /// Reads a token URI such as
    /// `pkcs11:token=bulwark?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/bulwark/pin`.
    ///
    /// The path attributes select the token (`token`, `manufacturer`,
    /// `serial`, `model`, `slot-*`, `library-*`); `module-path` (or
    /// `module-name`, looked up in the usual module directories) names the
    /// module; `pin-value` or `pin-source` (`file:` URI or absolute path)
    /// gives the user PIN. A URI naming an object (`object`, `id`, `type`)
    /// is refused: a keystore is a whole token.
    pub fn from_uri(uri: &str) -> Result<Self> {
        let parsed = Pkcs11Uri::parse(uri)?;
        if parsed.names_object() {
            return Err(Error::InvalidInput {
                what: "PKCS#11 URI",
                reason: "it names an object (object=, id= or type=); a keystore is opened on a \
                         whole token, so give only token attributes"
                    .into(),
            });
        }
        let module = match (parsed.module_path(), parsed.module_name()) {
            // RFC 7512 section 2.4: the path is the more specific of the two.
            (Some(path), _) => path.to_path_buf(),
            (None, Some(name)) => find_module(name)?,
            (None, None) => {
                return Err(Error::InvalidInput {
                    what: "PKCS#11 URI",
                    reason:
                        "it names no module: add ?module-path=/path/to/module.so (or module-name=)"
                            .into(),
                });
            }
        };
        let pin = match parsed.pin() {
            None => None,
            Some(PinSpec::Value(value)) => Some(Pin::Value(value.clone())),
            Some(PinSpec::Source(source)) => Some(Pin::File(pin_source_path(source)?)),
        };
        Ok(Self {
            module,
            selector: parsed.path_only(),
            pin,
        })
    }

    /// Uses `pin` as the user PIN (copied into memory that is zeroized on
    /// drop).
    pub fn with_pin(mut self, pin: impl AsRef<[u8]>) -> Self {
        self.pin = Some(Pin::Value(Zeroizing::new(pin.as_ref().to_vec())));
        self
    }

    /// Reads the user PIN from `path` when the store is opened (one
    /// trailing newline is ignored).
    pub fn with_pin_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pin = Some(Pin::File(path.into()));
        self
    }

    /// The PKCS#11 module (shared library) to load.
    pub fn module_path(&self) -> &Path {
        &self.module
    }

    /// The attributes a token must match (a `pkcs11:` URI without query).
    pub fn token_selector(&self) -> &Pkcs11Uri {
        &self.selector
    }

    /// The PIN, reading the PIN file if one is configured.
    pub(crate) fn resolve_pin(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match &self.pin {
            None => Ok(None),
            Some(Pin::Value(value)) => Ok(Some(value.clone())),
            Some(Pin::File(path)) => read_pin_file(path).map(Some),
        }
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pin = match &self.pin {
            None => "none".to_owned(),
            Some(Pin::Value(_)) => "<redacted>".to_owned(),
            Some(Pin::File(path)) => format!("from {}", path.display()),
        };
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token", &self.selector.to_string())
            .field("pin", &pin)
            .finish()
    }
}

/// Resolves `module-name=` to a file in the usual module directories.
fn find_module(name: &str) -> Result<PathBuf> {
    let dirs = module_dirs();
    for dir in &dirs {
        for file in [format!("lib{name}.so"), format!("{name}.so")] {
            let candidate = dir.join(file);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::Unavailable {
        backend: "pkcs11",
        detail: format!(
            "no PKCS#11 module named {name:?} (looked for lib{name}.so and {name}.so in {})",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// `pin-source`: a `file:` URI or an absolute path. Commands (`|prog`)
/// are refused: running a program to get a PIN is not this crate's job.
fn pin_source_path(source: &str) -> Result<PathBuf> {
    let invalid = |reason: &str| Error::InvalidInput {
        what: "PKCS#11 URI",
        reason: reason.to_owned(),
    };
    if source.starts_with('|') {
        return Err(invalid(
            "pin-source commands (|program) are not supported; use a file",
        ));
    }
    let path = if let Some(rest) = source.strip_prefix("file://") {
        // Only the empty authority (file:///path) names a local file.
        if !rest.starts_with('/') {
            return Err(invalid(
                "pin-source file: URI names a host; use file:/path or file:///path",
            ));
        }
        rest
    } else if let Some(rest) = source.strip_prefix("file:") {
        rest
    } else if source.contains(':') && !source.starts_with('/') {
        return Err(invalid(
            "pin-source must be a file: URI or an absolute path",
        ));
    } else {
        source
    };
    if !path.starts_with('/') {
        return Err(invalid("pin-source must name an absolute path"));
    }
    Ok(PathBuf::from(path))
}

fn read_pin_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading PIN file", path, e))?;
    let mut pin = Zeroizing::new(Vec::with_capacity(64));
    file.take(MAX_PIN_FILE + 1)
        .read_to_end(&mut pin)
        .map_err(|e| Error::io("reading PIN file", path, e))?;
    if pin.len() as u64 > MAX_PIN_FILE {
        return Err(Error::InvalidInput {
            what: "PIN file",
            reason: format!("{} is longer than {MAX_PIN_FILE} bytes", path.display()),
        });
    }
    if pin.last() == Some(&b'\n') {
        pin.pop();
        if pin.last() == Some(&b'\r') {
            pin.pop();
        }
    }
    if pin.is_empty() {
        return Err(Error::InvalidInput {
            what: "PIN file",
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_module_path_and_pin_value() {
        let c = Pkcs11Config::from_uri(
            "pkcs11:token=bulwark?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
        )
        .unwrap();
        assert_eq!(
            c.module_path(),
            Path::new("/usr/lib/softhsm/libsofthsm2.so")
        );
        assert_eq!(c.token_selector().token(), Some("bulwark"));
        assert_eq!(
            c.resolve_pin().unwrap().as_deref().map(|p| &p[..]),
            Some(&b"1234"[..])
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("1234"), "{debug}");
        assert!(debug.contains("libsofthsm2.so"), "{debug}");
    }

    #[test]
    fn pin_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "4321\r\n").unwrap();
        for source in [
            format!("file:{}", file.display()),
            format!("file://{}", file.display()),
            file.display().to_string(),
        ] {
            let c = Pkcs11Config::from_uri(&format!(
                "pkcs11:token=t?module-path=/m.so&pin-source={source}"
            ))
            .unwrap();
            assert_eq!(&c.resolve_pin().unwrap().unwrap()[..], b"4321", "{source}");
            assert!(format!("{c:?}").contains("from /"));
        }
        for (source, expected) in [
            ("|/bin/echo", "not supported"),
            ("file://host/etc/pin", "names a host"),
            ("file:pin", "absolute"),
            ("https:/x", "file: URI"),
        ] {
            let err = Pkcs11Config::from_uri(&format!(
                "pkcs11:token=t?module-path=/m.so&pin-source={source}"
            ))
            .unwrap_err();
            assert!(err.to_string().contains(expected), "{source}: {err}");
        }
        let missing = Pkcs11Config::new("/m.so", "t").with_pin_file(dir.path().join("none"));
        assert!(matches!(missing.resolve_pin(), Err(Error::Io { .. })));
        std::fs::write(&file, "\n").unwrap();
        let empty = Pkcs11Config::new("/m.so", "t").with_pin_file(&file);
        assert!(
            empty
                .resolve_pin()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&file, vec![b'1'; 2000]).unwrap();
        let long = Pkcs11Config::new("/m.so", "t").with_pin_file(&file);
        assert!(
            long.resolve_pin()
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn object_uris_and_moduleless_uris_are_refused() {
        let err = Pkcs11Config::from_uri("pkcs11:token=t;object=k?module-path=/m.so").unwrap_err();
        assert!(err.to_string().contains("names an object"), "{err}");
        let err = Pkcs11Config::from_uri("pkcs11:token=t").unwrap_err();
        assert!(err.to_string().contains("names no module"), "{err}");
        let err =
            Pkcs11Config::from_uri("pkcs11:token=t?module-name=no-such-module-here").unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { detail, .. } if detail.contains("no-such-module-here")),
            "{err}"
        );
    }

    #[test]
    fn module_name_finds_softhsm() {
        // Debian installs SoftHSM2's module outside the p11-kit directory.
        testkit::require_tool("/usr/lib/softhsm/libsofthsm2.so", "softhsm2");
        let c = Pkcs11Config::from_uri("pkcs11:token=t?module-name=softhsm2").unwrap();
        assert_eq!(
            c.module_path(),
            Path::new("/usr/lib/softhsm/libsofthsm2.so")
        );
    }
}
