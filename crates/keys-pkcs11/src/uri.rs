//! RFC 7512 `pkcs11:` URIs, parsed strictly.
//!
//! A [`Pkcs11Uri`] is the typed form of a URI such as
//! `pkcs11:token=bulwark;manufacturer=SoftHSM%20project?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/bulwark/pin`.
//! Parsing follows the ABNF of RFC 7512 section 2.3 and is fail-closed:
//!
//! - path attributes: `token`, `manufacturer`, `serial`, `model`,
//!   `library-manufacturer`, `library-description`, `library-version`,
//!   `slot-id`, `slot-description`, `slot-manufacturer`, `object`, `id`,
//!   `type`; query attributes: `module-path`, `module-name`, `pin-value`,
//!   `pin-source`. Attribute names are matched case-insensitively (RFC 5234
//!   makes ABNF literals case-insensitive).
//! - Vendor attributes must carry the `x-` prefix; they are checked for
//!   syntax and ignored. Any other unknown attribute is an error naming it:
//!   the RFC would let a consumer ignore `tokne=bulwark`, which would turn a
//!   typo into a URI that matches every token.
//! - An attribute given twice is an error (the RFC allows repeated vendor
//!   attributes in the query only, and so do we).
//! - Characters outside a component's set must be percent-encoded; an
//!   escape must be two hex digits; text values must be UTF-8 once decoded.
//! - `slot-id`, `library-version` and `type` are read as written (digits and
//!   literals), never through an escape.
//! - `pin-value` together with `pin-source`, and a relative `module-path`,
//!   are refused (RFC 7512 section 2.4).
//!
//! Errors are [`keys::Error::InvalidInput`] with `what: "PKCS#11 URI"` and
//! never quote a `pin-value`. [`Pkcs11Uri`]'s `Debug` and `Display` leave
//! the PIN out too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use keys::{Error, Result};
use zeroize::Zeroizing;

const SCHEME: &str = "pkcs11:";

/// The object classes `type=` can name (RFC 7512 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `type=public`: a public key.
    Public,
    /// `type=private`: a private key.
    Private,
    /// `type=cert`: a certificate.
    Cert,
    /// `type=secret-key`: a secret (symmetric) key.
    SecretKey,
    /// `type=data`: a data object.
    Data,
}

impl ObjectType {
    /// The literal used in URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Cert => "cert",
            Self::SecretKey => "secret-key",
            Self::Data => "data",
        }
    }
}

/// `library-version=M[.m]`: both numbers one byte, as in `CK_VERSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LibraryVersion {
    /// Major version.
    pub major: u8,
    /// Minor version (0 when the URI gives the major only).
    pub minor: u8,
}

/// Where the PIN comes from, as the URI's query says.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSpec {
    /// `pin-value=`: the PIN itself (bytes, percent-decoded).
    Value(Zeroizing<Vec<u8>>),
    /// `pin-source=`: where to read it, e.g. `file:/etc/bulwark/pin`.
    Source(String),
}

impl fmt::Debug for PinSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<redacted>)"),
            Self::Source(source) => f.debug_tuple("Source").field(source).finish(),
        }
    }
}

/// A parsed `pkcs11:` URI. Every attribute is optional; an absent one
/// matches anything.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub(crate) token: Option<String>,
    pub(crate) manufacturer: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) library_manufacturer: Option<String>,
    pub(crate) library_description: Option<String>,
    pub(crate) library_version: Option<LibraryVersion>,
    pub(crate) slot_id: Option<u64>,
    pub(crate) slot_description: Option<String>,
    pub(crate) slot_manufacturer: Option<String>,
    pub(crate) object: Option<String>,
    pub(crate) id: Option<Vec<u8>>,
    pub(crate) object_type: Option<ObjectType>,
    pub(crate) module_path: Option<PathBuf>,
    pub(crate) module_name: Option<String>,
    pub(crate) pin: Option<PinSpec>,
}

impl Pkcs11Uri {
    /// Parses a `pkcs11:` URI; see the module documentation for the rules.
    pub fn parse(uri: &str) -> Result<Self> {
        parse(uri)
    }

    /// `token=`: the token label.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
    /// `manufacturer=`: the token manufacturer.
    pub fn manufacturer(&self) -> Option<&str> {
        self.manufacturer.as_deref()
    }
    /// `serial=`: the token serial number.
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }
    /// `model=`: the token model.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// `library-manufacturer=`.
    pub fn library_manufacturer(&self) -> Option<&str> {
        self.library_manufacturer.as_deref()
    }
    /// `library-description=`.
    pub fn library_description(&self) -> Option<&str> {
        self.library_description.as_deref()
    }
    /// `library-version=`.
    pub fn library_version(&self) -> Option<LibraryVersion> {
        self.library_version
    }
    /// `slot-id=`.
    pub fn slot_id(&self) -> Option<u64> {
        self.slot_id
    }
    /// `slot-description=`.
    pub fn slot_description(&self) -> Option<&str> {
        self.slot_description.as_deref()
    }
    /// `slot-manufacturer=`.
    pub fn slot_manufacturer(&self) -> Option<&str> {
        self.slot_manufacturer.as_deref()
    }
    /// `object=`: the object label (`CKA_LABEL`).
    pub fn object(&self) -> Option<&str> {
        self.object.as_deref()
    }
    /// `id=`: the object id (`CKA_ID`), as bytes.
    pub fn id(&self) -> Option<&[u8]> {
        self.id.as_deref()
    }
    /// `type=`: the object class.
    pub fn object_type(&self) -> Option<ObjectType> {
        self.object_type
    }
    /// `module-path=`: an absolute path to the PKCS#11 module.
    pub fn module_path(&self) -> Option<&Path> {
        self.module_path.as_deref()
    }
    /// `module-name=`: a module name such as `softhsm2`.
    pub fn module_name(&self) -> Option<&str> {
        self.module_name.as_deref()
    }
    /// `pin-value=` or `pin-source=`, if either is given.
    pub fn pin(&self) -> Option<&PinSpec> {
        self.pin.as_ref()
    }

    /// Whether the URI names an object rather than (only) a token.
    pub fn names_object(&self) -> bool {
        self.object.is_some() || self.id.is_some() || self.object_type.is_some()
    }

    /// Whether a module's `CK_INFO` satisfies the `library-*` attributes.
    pub fn matches_library(
        &self,
        manufacturer: &str,
        description: &str,
        version: (u8, u8),
    ) -> bool {
        opt_eq(&self.library_manufacturer, manufacturer)
            && opt_eq(&self.library_description, description)
            && self
                .library_version
                .is_none_or(|v| (v.major, v.minor) == version)
    }

    /// Whether a slot satisfies the `slot-*` attributes.
    pub fn matches_slot(&self, id: u64, description: &str, manufacturer: &str) -> bool {
        self.slot_id.is_none_or(|want| want == id)
            && opt_eq(&self.slot_description, description)
            && opt_eq(&self.slot_manufacturer, manufacturer)
    }

    /// Whether a token's `CK_TOKEN_INFO` satisfies the token attributes.
    pub fn matches_token(
        &self,
        label: &str,
        manufacturer: &str,
        model: &str,
        serial: &str,
    ) -> bool {
        opt_eq(&self.token, label)
            && opt_eq(&self.manufacturer, manufacturer)
            && opt_eq(&self.model, model)
            && opt_eq(&self.serial, serial)
    }

    /// The URI without its query: the attributes that select a token (and
    /// object). Safe to log: it never carries a PIN.
    pub fn path_only(&self) -> Self {
        Self {
            module_path: None,
            module_name: None,
            pin: None,
            ..self.clone()
        }
    }
}

fn opt_eq(want: &Option<String>, have: &str) -> bool {
    want.as_deref().is_none_or(|w| w == have)
}

impl FromStr for Pkcs11Uri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse(s)
    }
}

impl fmt::Debug for Pkcs11Uri {
    /// The URI as [`fmt::Display`] writes it: never with a `pin-value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pkcs11Uri({self})")
    }
}

impl fmt::Display for Pkcs11Uri {
    /// The canonical form (RFC order, percent-encoded). A `pin-value` is
    /// left out entirely, so the output is safe for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path: Vec<String> = Vec::new();
        let mut text = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                path.push(format!("{name}={}", encode(v.as_bytes(), Component::Path)));
            }
        };
        text("token", &self.token);
        text("manufacturer", &self.manufacturer);
        text("serial", &self.serial);
        text("model", &self.model);
        text("library-manufacturer", &self.library_manufacturer);
        text("library-description", &self.library_description);
        if let Some(v) = self.library_version {
            path.push(format!("library-version={}.{}", v.major, v.minor));
        }
        if let Some(id) = self.slot_id {
            path.push(format!("slot-id={id}"));
        }
        let mut text = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                path.push(format!("{name}={}", encode(v.as_bytes(), Component::Path)));
            }
        };
        text("slot-description", &self.slot_description);
        text("slot-manufacturer", &self.slot_manufacturer);
        text("object", &self.object);
        if let Some(id) = &self.id {
            // Ids are bytes: always escaped, as RFC 7512 recommends.
            path.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02X}")).collect::<String>()
            ));
        }
        if let Some(t) = self.object_type {
            path.push(format!("type={}", t.as_str()));
        }
        let mut query: Vec<String> = Vec::new();
        if let Some(p) = &self.module_path {
            let p = p.to_string_lossy();
            query.push(format!(
                "module-path={}",
                encode(p.as_bytes(), Component::Query)
            ));
        }
        if let Some(n) = &self.module_name {
            query.push(format!(
                "module-name={}",
                encode(n.as_bytes(), Component::Query)
            ));
        }
        if let Some(PinSpec::Source(s)) = &self.pin {
            query.push(format!(
                "pin-source={}",
                encode(s.as_bytes(), Component::Query)
            ));
        }
        write!(f, "{SCHEME}{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Component {
    Path,
    Query,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Query => "query",
        }
    }

    /// Characters a value may carry unencoded: `pk11-pchar` / `pk11-qchar`
    /// without `pct-encoded`.
    fn allows(self, c: u8) -> bool {
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        let res_avail = matches!(
            c,
            b':' | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
        );
        unreserved
            || res_avail
            || match self {
                Self::Path => c == b'&',
                Self::Query => matches!(c, b'/' | b'?' | b'|'),
            }
    }
}

fn encode(bytes: &[u8], component: Component) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        // '&' and '=' are legal in a path value but would confuse readers
        // (and other parsers); escape them on output.
        if component.allows(b) && !matches!(b, b'&' | b'=' | b'?' | b'|') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: "PKCS#11 URI",
        reason: reason.into(),
    }
}

const PATH_ATTRIBUTES: &[&str] = &[
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-id",
    "slot-description",
    "slot-manufacturer",
    "object",
    "id",
    "type",
];

const QUERY_ATTRIBUTES: &[&str] = &["module-path", "module-name", "pin-value", "pin-source"];

fn parse(uri: &str) -> Result<Pkcs11Uri> {
    let rest = match uri.get(..SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => &uri[SCHEME.len()..],
        _ => return Err(invalid("it does not start with \"pkcs11:\"")),
    };
    // '?' is not a path character, so the first one ends the path.
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let mut out = Pkcs11Uri::default();
    let mut vendor_path: Vec<String> = Vec::new();
    if !path.is_empty() {
        for attribute in path.split(';') {
            parse_path_attribute(attribute, &mut out, &mut vendor_path)?;
        }
    }
    if let Some(query) = query {
        if query.is_empty() {
            return Err(invalid("the query after '?' is empty"));
        }
        for attribute in query.split('&') {
            parse_query_attribute(attribute, &mut out)?;
        }
    }
    Ok(out)
}

/// Splits `name=value`, checking the name's syntax and lower-casing it.
fn split_attribute(attribute: &str, component: Component) -> Result<(String, &str)> {
    if attribute.is_empty() {
        return Err(invalid(format!(
            "the {} has an empty attribute (two delimiters in a row, or one at the end)",
            component.name()
        )));
    }
    let Some((name, value)) = attribute.split_once('=') else {
        // The text may be a PIN typed in the wrong place: do not quote it.
        return Err(invalid(format!(
            "a {} attribute has no '=' (attributes are name=value)",
            component.name()
        )));
    };
    if name.is_empty() {
        return Err(invalid(format!(
            "a {} attribute has an empty name",
            component.name()
        )));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
    {
        return Err(invalid(format!(
            "a {} attribute name contains a character outside A-Z a-z 0-9 - _",
            component.name()
        )));
    }
    Ok((name.to_ascii_lowercase(), value))
}

fn parse_path_attribute(
    attribute: &str,
    out: &mut Pkcs11Uri,
    vendor: &mut Vec<String>,
) -> Result<()> {
    let (name, raw) = split_attribute(attribute, Component::Path)?;
    let name = name.as_str();
    if QUERY_ATTRIBUTES.contains(&name) {
        return Err(invalid(format!(
            "{name} is a query attribute: put it after '?'"
        )));
    }
    if let Some(vendor_name) = name.strip_prefix("x-") {
        if vendor_name.is_empty() {
            return Err(invalid(
                "vendor attribute \"x-\" has no name after the prefix",
            ));
        }
        decode(raw, Component::Path, name)?;
        if vendor.iter().any(|v| v == name) {
            return Err(duplicate(name));
        }
        vendor.push(name.to_owned());
        return Ok(());
    }
    match name {
        "token" => set(&mut out.token, name, text(raw, name)?),
        "manufacturer" => set(&mut out.manufacturer, name, text(raw, name)?),
        "serial" => set(&mut out.serial, name, text(raw, name)?),
        "model" => set(&mut out.model, name, text(raw, name)?),
        "library-manufacturer" => set(&mut out.library_manufacturer, name, text(raw, name)?),
        "library-description" => set(&mut out.library_description, name, text(raw, name)?),
        "library-version" => set(&mut out.library_version, name, library_version(raw)?),
        "slot-id" => set(&mut out.slot_id, name, slot_id(raw)?),
        "slot-description" => set(&mut out.slot_description, name, text(raw, name)?),
        "slot-manufacturer" => set(&mut out.slot_manufacturer, name, text(raw, name)?),
        "object" => set(&mut out.object, name, text(raw, name)?),
        "id" => set(
            &mut out.id,
            name,
            decode(raw, Component::Path, name)?.to_vec(),
        ),
        "type" => set(&mut out.object_type, name, object_type(raw)?),
        other => {
            debug_assert!(!PATH_ATTRIBUTES.contains(&other));
            Err(invalid(format!(
                "unknown path attribute {other:?} (known: {}; vendor attributes start with \"x-\")",
                PATH_ATTRIBUTES.join(", ")
            )))
        }
    }
}

fn parse_query_attribute(attribute: &str, out: &mut Pkcs11Uri) -> Result<()> {
    let (name, raw) = split_attribute(attribute, Component::Query)?;
    let name = name.as_str();
    if PATH_ATTRIBUTES.contains(&name) {
        return Err(invalid(format!(
            "{name} is a path attribute: put it before '?'"
        )));
    }
    if let Some(vendor_name) = name.strip_prefix("x-") {
        if vendor_name.is_empty() {
            return Err(invalid(
                "vendor attribute \"x-\" has no name after the prefix",
            ));
        }
        // RFC 7512 section 2.4 lets vendor query attributes repeat.
        decode(raw, Component::Query, name)?;
        return Ok(());
    }
    match name {
        "module-path" => {
            let path = text_in(raw, Component::Query, name)?;
            if !path.starts_with('/') {
                return Err(invalid(
                    "module-path must be an absolute path (RFC 7512 section 2.4)",
                ));
            }
            set(&mut out.module_path, name, PathBuf::from(path))
        }
        "module-name" => {
            let module = text_in(raw, Component::Query, name)?;
            if module.is_empty() || module.contains('/') {
                return Err(invalid(
                    "module-name must be a bare module name such as \"softhsm2\" (use module-path for a path)",
                ));
            }
            set(&mut out.module_name, name, module)
        }
        "pin-value" => {
            if out.pin.is_some() {
                return Err(pin_conflict_or_duplicate(out, name));
            }
            out.pin = Some(PinSpec::Value(decode(raw, Component::Query, name)?));
            Ok(())
        }
        "pin-source" => {
            if out.pin.is_some() {
                return Err(pin_conflict_or_duplicate(out, name));
            }
            let source = text_in(raw, Component::Query, name)?;
            if source.is_empty() {
                return Err(invalid("pin-source is empty"));
            }
            out.pin = Some(PinSpec::Source(source));
            Ok(())
        }
        other => Err(invalid(format!(
            "unknown query attribute {other:?} (known: {}; vendor attributes start with \"x-\")",
            QUERY_ATTRIBUTES.join(", ")
        ))),
    }
}

fn pin_conflict_or_duplicate(out: &Pkcs11Uri, name: &str) -> Error {
    match (&out.pin, name) {
        (Some(PinSpec::Value(_)), "pin-value") | (Some(PinSpec::Source(_)), "pin-source") => {
            duplicate(name)
        }
        _ => invalid("pin-value and pin-source are both given; use one (RFC 7512 section 2.4)"),
    }
}

fn duplicate(name: &str) -> Error {
    invalid(format!("attribute {name} is given more than once"))
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Percent-decodes `raw`, checking every unescaped character against the
/// component's set. The buffer is zeroized on drop because it may hold a
/// PIN; a `pin-value`'s characters are never quoted in errors.
fn decode(raw: &str, component: Component, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    let secret = name == "pin-value";
    let bytes = raw.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                let h = std::str::from_utf8(h).ok()?;
                u8::from_str_radix(h, 16)
                    .ok()
                    .filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit()))
            });
            match hex {
                Some(b) => out.push(b),
                None => {
                    return Err(invalid(format!(
                        "{name} has a '%' not followed by two hex digits (byte {} of the value)",
                        i + 1
                    )));
                }
            }
            i += 3;
            continue;
        }
        if !component.allows(c) {
            return Err(if secret || !c.is_ascii_graphic() && c != b' ' {
                invalid(format!(
                    "{name} contains a character that must be percent-encoded (byte {} of the value)",
                    i + 1
                ))
            } else {
                invalid(format!(
                    "{name} contains {:?}, which must be percent-encoded in the {}",
                    char::from(c),
                    component.name()
                ))
            });
        }
        out.push(c);
        i += 1;
    }
    Ok(out)
}

fn text_in(raw: &str, component: Component, name: &str) -> Result<String> {
    let bytes = decode(raw, component, name)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| invalid(format!("{name} is not valid UTF-8 once percent-decoded")))
}

fn text(raw: &str, name: &str) -> Result<String> {
    text_in(raw, Component::Path, name)
}

fn digits(raw: &str, name: &str) -> Result<()> {
    if raw.is_empty() || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid(format!(
            "{name} must be a decimal number written in digits"
        )));
    }
    Ok(())
}

fn slot_id(raw: &str) -> Result<u64> {
    digits(raw, "slot-id")?;
    raw.parse()
        .map_err(|_| invalid("slot-id is too large for a slot number"))
}

fn library_version(raw: &str) -> Result<LibraryVersion> {
    let (major, minor) = match raw.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (raw, None),
    };
    let part = |s: &str| -> Result<u8> {
        digits(s, "library-version")?;
        s.parse()
            .map_err(|_| invalid("library-version numbers are 0 to 255 (one byte each)"))
    };
    Ok(LibraryVersion {
        major: part(major)?,
        minor: minor.map(part).transpose()?.unwrap_or(0),
    })
}

fn object_type(raw: &str) -> Result<ObjectType> {
    match raw.to_ascii_lowercase().as_str() {
        "public" => Ok(ObjectType::Public),
        "private" => Ok(ObjectType::Private),
        "cert" => Ok(ObjectType::Cert),
        "secret-key" => Ok(ObjectType::SecretKey),
        "data" => Ok(ObjectType::Data),
        _ => Err(invalid(format!(
            "type={raw:?} is not one of public, private, cert, secret-key, data"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(uri: &str) -> String {
        match Pkcs11Uri::parse(uri) {
            Err(Error::InvalidInput { what, reason }) => {
                assert_eq!(what, "PKCS#11 URI");
                reason
            }
            other => panic!("{uri} should be rejected, got {other:?}"),
        }
    }

    // The examples of RFC 7512 section 3, except the one with a vendor
    // attribute lacking the "x-" prefix (see `vendor_attributes_need_the_x_prefix`).
    #[test]
    fn rfc_7512_examples_parse() {
        let empty = Pkcs11Uri::parse("pkcs11:").unwrap();
        assert_eq!(empty, Pkcs11Uri::default());

        let u = Pkcs11Uri::parse("pkcs11:object=my-pubkey;type=public").unwrap();
        assert_eq!(u.object(), Some("my-pubkey"));
        assert_eq!(u.object_type(), Some(ObjectType::Public));

        let u = Pkcs11Uri::parse("pkcs11:object=my-key;type=private?pin-source=file:/etc/token")
            .unwrap();
        assert_eq!(u.pin(), Some(&PinSpec::Source("file:/etc/token".into())));

        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;\
             manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;\
             id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin",
        )
        .unwrap();
        assert_eq!(u.token(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer(), Some("Snake Oil, Inc."));
        assert_eq!(u.model(), Some("1.0"));
        assert_eq!(u.object(), Some("my-certificate"));
        assert_eq!(u.object_type(), Some(ObjectType::Cert));
        assert_eq!(
            u.id(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(
            u.serial(),
            Some(""),
            "an empty value is present, not absent"
        );

        let u = Pkcs11Uri::parse("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11")
            .unwrap();
        assert_eq!(u.module_name(), Some("mypkcs11"));

        let u = Pkcs11Uri::parse(
            "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
        )
        .unwrap();
        assert_eq!(u.module_path(), Some(Path::new("/mnt/libmypkcs11.so.1")));

        let u = Pkcs11Uri::parse(
            "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
        )
        .unwrap();
        assert_eq!(u.token(), Some("Software PKCS#11 softtoken"));
        assert!(matches!(u.pin(), Some(PinSpec::Value(v)) if &v[..] == b"the-pin"));

        let u = Pkcs11Uri::parse("pkcs11:slot-description=Sun%20Metaslot").unwrap();
        assert_eq!(u.slot_description(), Some("Sun Metaslot"));

        let u = Pkcs11Uri::parse(
            "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;library-version=1.23",
        )
        .unwrap();
        assert_eq!(u.library_manufacturer(), Some("Snake Oil, Inc."));
        assert_eq!(u.library_description(), Some("Soft Token Library"));
        assert_eq!(
            u.library_version(),
            Some(LibraryVersion {
                major: 1,
                minor: 23
            })
        );

        let u = Pkcs11Uri::parse(
            "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
        )
        .unwrap();
        assert_eq!(u.token(), Some("My token% created by Joe"));
        assert_eq!(
            u.library_version(),
            Some(LibraryVersion { major: 3, minor: 0 })
        );
        assert_eq!(
            u.id(),
            Some(&[1, 2, 3, 0xba, 0xdd, 0xca, 0xfe, 4, 5, 6][..])
        );

        let u = Pkcs11Uri::parse(
            "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
        )
        .unwrap();
        assert_eq!(u.token(), Some("A name with a substring %;"));

        let u = Pkcs11Uri::parse(
            "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
        )
        .unwrap();
        assert_eq!(u.token(), Some("Name with a small A with acute: \u{e1}"));
    }

    #[test]
    fn vendor_attributes_need_the_x_prefix() {
        // RFC 7512's own example names vendor attributes without a prefix;
        // we refuse those so that a misspelt attribute is never ignored.
        let r = reason(
            "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
        );
        assert!(r.contains("\"vendor-aaa\""), "{r}");
        let u = Pkcs11Uri::parse(
            "pkcs11:token=my-token;object=my-certificate;type=cert;x-vendor-aaa=value-a?pin-source=file:/etc/token_pin&x-vendor-bbb=value-b&x-vendor-bbb=again",
        )
        .unwrap();
        assert_eq!(u.token(), Some("my-token"));
        assert!(reason("pkcs11:x-a=1;x-a=2").contains("more than once"));
    }

    #[test]
    fn slot_and_remaining_attributes_parse() {
        let u = Pkcs11Uri::parse(
            "pkcs11:slot-id=1462182117;slot-manufacturer=SoftHSM%20project;TOKEN=bulwark;Type=PRIVATE",
        )
        .unwrap();
        assert_eq!(u.slot_id(), Some(1_462_182_117));
        assert_eq!(u.slot_manufacturer(), Some("SoftHSM project"));
        assert_eq!(u.token(), Some("bulwark"));
        assert_eq!(u.object_type(), Some(ObjectType::Private));
        assert!(u.matches_slot(1_462_182_117, "anything", "SoftHSM project"));
        assert!(!u.matches_slot(1, "anything", "SoftHSM project"));
        assert!(u.matches_token("bulwark", "x", "y", "z"));
        assert!(!u.matches_token("other", "x", "y", "z"));
        assert!(Pkcs11Uri::default().matches_library("a", "b", (1, 2)));
    }

    #[test]
    fn malformed_uris_are_named() {
        let cases: &[(&str, &str)] = &[
            ("pkcs12:token=a", "does not start with"),
            ("token=a", "does not start with"),
            ("pkcs11:tokne=bulwark", "unknown path attribute \"tokne\""),
            (
                "pkcs11:token=a?modul-path=/x.so",
                "unknown query attribute \"modul-path\"",
            ),
            ("pkcs11:token=a;token=b", "token is given more than once"),
            (
                "pkcs11:token=a?module-path=/a.so&module-path=/b.so",
                "more than once",
            ),
            ("pkcs11:token=a;;object=b", "empty attribute"),
            ("pkcs11:token=a;", "empty attribute"),
            ("pkcs11:token", "no '='"),
            ("pkcs11:=a", "empty name"),
            ("pkcs11:tok%65n=a", "name contains a character"),
            ("pkcs11:token=a%2", "not followed by two hex digits"),
            ("pkcs11:token=a%zz", "not followed by two hex digits"),
            ("pkcs11:token=a%+1", "not followed by two hex digits"),
            ("pkcs11:token=a b", "must be percent-encoded"),
            ("pkcs11:token=a/b", "'/'"),
            ("pkcs11:token=a#frag", "'#'"),
            ("pkcs11:token=caf\u{e9}", "must be percent-encoded"),
            ("pkcs11:token=%C3%28", "not valid UTF-8"),
            ("pkcs11:slot-id=", "decimal number"),
            ("pkcs11:slot-id=-1", "decimal number"),
            ("pkcs11:slot-id=%31", "decimal number"),
            ("pkcs11:slot-id=99999999999999999999999", "too large"),
            ("pkcs11:library-version=1.256", "0 to 255"),
            ("pkcs11:library-version=1.", "decimal number"),
            ("pkcs11:library-version=a", "decimal number"),
            ("pkcs11:type=key", "not one of"),
            ("pkcs11:token=a?", "query after '?' is empty"),
            ("pkcs11:token=a?module-path=lib.so", "absolute"),
            (
                "pkcs11:token=a?module-name=/usr/lib/x.so",
                "bare module name",
            ),
            ("pkcs11:pin-value=1234", "query attribute: put it after '?'"),
            ("pkcs11:?token=a", "path attribute: put it before '?'"),
            (
                "pkcs11:token=a?pin-value=1&pin-source=file:/p",
                "both given",
            ),
            (
                "pkcs11:token=a?pin-source=file:/p&pin-value=1",
                "both given",
            ),
            ("pkcs11:token=a?pin-value=1&pin-value=2", "more than once"),
            ("pkcs11:token=a?pin-source=", "pin-source is empty"),
            ("pkcs11:x-=1", "no name after the prefix"),
        ];
        for (uri, expected) in cases {
            let r = reason(uri);
            assert!(r.contains(expected), "{uri}: {r:?} lacks {expected:?}");
        }
    }

    #[test]
    fn pin_values_never_appear_in_errors_or_output() {
        let pin = "s3cr3t-PIN";
        for uri in [
            format!("pkcs11:token=a?pin-value={pin}&pin-value={pin}"),
            format!("pkcs11:token=a?pin-value={pin}%zz"),
            format!("pkcs11:token=a?pin-value={pin}#"),
            format!("pkcs11:token=a?pin-value={pin} "),
            format!("pkcs11:token=a?pin-value={pin}&pin-source=file:/x"),
            format!("pkcs11:token=a;{pin}"),
            format!("pkcs11:token=a?{pin}"),
            format!("pkcs11:token=a?pin={pin}"),
            format!("pkcs11:pin-value={pin}"),
        ] {
            let r = reason(&uri);
            assert!(!r.contains(pin), "{uri}: {r}");
        }
        let u = Pkcs11Uri::parse(&format!(
            "pkcs11:token=a?pin-value={pin}&module-name=softhsm2"
        ))
        .unwrap();
        assert!(!format!("{u} {u:?} {:?}", u.pin()).contains(pin));
        assert_eq!(u.to_string(), "pkcs11:token=a?module-name=softhsm2");
    }

    #[test]
    fn display_round_trips() {
        for uri in [
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;serial=;model=1.0;object=my-certificate;id=%69%95%3E%5C%F4%BD%EC%91;type=cert?pin-source=file:/etc/token_pin",
            "pkcs11:token=a%26b%3Dc;library-version=1.23;slot-id=7?module-path=/usr/lib/softhsm/libsofthsm2.so",
            "pkcs11:",
        ] {
            let parsed = Pkcs11Uri::parse(uri).unwrap();
            let again = Pkcs11Uri::parse(&parsed.to_string()).unwrap();
            assert_eq!(parsed, again, "{uri} -> {parsed}");
        }
        let u = Pkcs11Uri::parse("pkcs11:token=a%26b").unwrap();
        assert_eq!(u.token(), Some("a&b"));
        assert_eq!(u.to_string(), "pkcs11:token=a%26b");
        // '&' is a legal path character in RFC 7512.
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=a&b").unwrap().token(),
            Some("a&b")
        );
    }
}
