//! RFC 5424 messages and RFC 5425 octet-counting frames, without sockets.
//!
//! Header fields are validated once, when a [`Header`] is built from the
//! configuration; event fields are made safe per message (an event can
//! hold anything, and formatting must never fail or stall the queue).

use std::fmt::Write as _;

use store::eventlog::Severity;

use crate::{Error, Result};

/// The RFC 5424 NILVALUE.
const NIL: &str = "-";
/// RFC 5425 §4.3.1: every receiver must accept messages this long.
pub const MIN_MESSAGE_LEN: usize = 2048;
/// RFC 5425 §4.3.1: receivers should accept messages this long.
pub const DEFAULT_MESSAGE_LEN: usize = 8192;
/// Bytes of a structured-data value kept before escaping. With at most
/// eight parameters this keeps header + structured data under
/// [`MIN_MESSAGE_LEN`], so only MSG is ever cut to fit.
const MAX_PARAM_VALUE: usize = 64;
const BOM: &str = "\u{feff}";

/// A syslog facility (RFC 5424 §6.2.1, codes 0 to 23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

impl Facility {
    /// 4: security/authorization messages.
    pub const AUTH: Self = Self(4);
    /// 10: security/authorization messages meant for restricted files
    /// (the default: see the crate documentation).
    pub const AUTHPRIV: Self = Self(10);
    /// 13: log audit.
    pub const LOG_AUDIT: Self = Self(13);
    /// 16: local use 0.
    pub const LOCAL0: Self = Self(16);

    /// The facility with numerical code `code` (0 to 23).
    pub fn new(code: u8) -> Result<Self> {
        if code > 23 {
            return Err(Error::Config {
                what: "facility",
                reason: format!("{code} is not an RFC 5424 facility code (0 to 23)"),
            });
        }
        Ok(Self(code))
    }

    /// Local use facility `n` (0 to 7).
    pub fn local(n: u8) -> Result<Self> {
        if n > 7 {
            return Err(Error::Config {
                what: "facility",
                reason: format!("local{n} does not exist (local0 to local7)"),
            });
        }
        Ok(Self(16 + n))
    }

    /// The numerical code.
    pub fn code(self) -> u8 {
        self.0
    }
}

/// RFC 5424 §6.2.1 severity code of an event severity.
pub fn severity_code(severity: Severity) -> u8 {
    match severity {
        Severity::Alert => 1,
        Severity::Error => 3,
        Severity::Warning => 4,
        Severity::Notice => 5,
        Severity::Info => 6,
    }
}

/// The validated, per-device parts of every message.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    facility: Facility,
    hostname: String,
    app_name: String,
    sd_id: String,
    max_len: usize,
}

/// PRINTUSASCII (RFC 5424 §6): `%d33-126`.
fn is_print_us_ascii(c: char) -> bool {
    ('!'..='~').contains(&c)
}

fn check_token(what: &'static str, value: &str, max: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.len() > max {
        Some(format!("it is longer than {max} characters"))
    } else if value == NIL {
        Some("\"-\" is the NILVALUE".to_owned())
    } else {
        value
            .chars()
            .find(|c| !is_print_us_ascii(*c))
            .map(|c| format!("character {c:?} is not printable US-ASCII"))
    };
    match reason {
        Some(reason) => Err(Error::Config { what, reason }),
        None => Ok(()),
    }
}

impl Header {
    pub(crate) fn new(
        facility: Facility,
        hostname: &str,
        app_name: &str,
        sd_id: &str,
        max_len: usize,
    ) -> Result<Self> {
        check_token("hostname", hostname, 255)?;
        check_token("app name", app_name, 48)?;
        check_token("structured-data id", sd_id, 32)?;
        if let Some(c) = sd_id.chars().find(|c| matches!(c, '=' | ']' | '"')) {
            return Err(Error::Config {
                what: "structured-data id",
                reason: format!("character {c:?} is not allowed in an SD-NAME"),
            });
        }
        // RFC 5424 §7.2.2: names without '@' are reserved for IANA.
        if !sd_id.contains('@') {
            return Err(Error::Config {
                what: "structured-data id",
                reason: "a private SD-ID has the form name@enterprise-number".into(),
            });
        }
        if max_len < MIN_MESSAGE_LEN {
            return Err(Error::Config {
                what: "maximum message length",
                reason: format!(
                    "{max_len} is below the {MIN_MESSAGE_LEN} octets RFC 5425 requires"
                ),
            });
        }
        Ok(Self {
            facility,
            hostname: hostname.to_owned(),
            app_name: app_name.to_owned(),
            sd_id: sd_id.to_owned(),
            max_len,
        })
    }

    /// One message. `params` are structured-data parameters (names are
    /// constants of this crate; values are cut and escaped here).
    pub(crate) fn format(
        &self,
        severity: Severity,
        time: &str,
        msg_id: &str,
        params: &[(&str, &str)],
        msg: &str,
    ) -> Vec<u8> {
        let pri = u16::from(self.facility.code()) * 8 + u16::from(severity_code(severity));
        let mut out = format!(
            "<{pri}>1 {} {} {} {NIL} {} ",
            timestamp(time),
            self.hostname,
            self.app_name,
            msg_id_of(msg_id),
        );
        out.push('[');
        out.push_str(&self.sd_id);
        for (name, value) in params {
            let _ = write!(out, " {name}=\"");
            escape_param(&mut out, truncate(value, MAX_PARAM_VALUE));
            out.push('"');
        }
        out.push(']');
        // Invariant: header and structured data fit in MIN_MESSAGE_LEN (see
        // MAX_PARAM_VALUE), so the budget for MSG is never negative.
        if !msg.is_empty() {
            let bom = if msg.is_ascii() { "" } else { BOM };
            let budget = self.max_len.saturating_sub(out.len() + 1 + bom.len());
            let msg = truncate(msg, budget);
            if !msg.is_empty() {
                out.push(' ');
                out.push_str(bom);
                out.push_str(msg);
            }
        }
        out.into_bytes()
    }
}

/// `value` cut to at most `max` bytes on a character boundary.
fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default()
}

/// RFC 5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash.
fn escape_param(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// MSGID: 1 to 32 PRINTUSASCII; anything else is replaced by `_` and cut
/// (the full action also travels in the structured data).
fn msg_id_of(action: &str) -> String {
    let id: String = action
        .chars()
        .map(|c| if is_print_us_ascii(c) { c } else { '_' })
        .take(32)
        .collect();
    if id.is_empty() { NIL.to_owned() } else { id }
}

/// RFC 5424 TIMESTAMP (§6.2.3): UTC, at most six fractional digits. An
/// unparsable time becomes the NILVALUE rather than a made-up time.
fn timestamp(time: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(time, &Rfc3339) else {
        return NIL.to_owned();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        return NIL.to_owned();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// RFC 5425 §4.3: `MSG-LEN SP SYSLOG-MSG`.
pub(crate) fn frame(out: &mut Vec<u8>, message: &[u8]) {
    out.extend_from_slice(message.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header::new(
            Facility::AUTHPRIV,
            "dev-1",
            "bulwark",
            "bulwark@32473",
            2048,
        )
        .unwrap()
    }

    #[test]
    fn formats_a_complete_message() {
        let m = header().format(
            Severity::Warning,
            "2024-05-01T12:34:56.123456789+02:00",
            "login",
            &[("seq", "7"), ("actor", "a\"b\\c]d")],
            "refused",
        );
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<84>1 2024-05-01T10:34:56.123456Z dev-1 bulwark - login \
             [bulwark@32473 seq=\"7\" actor=\"a\\\"b\\\\c\\]d\"] refused"
        );
    }

    #[test]
    fn empty_detail_has_no_msg_and_bad_time_is_nil() {
        let m = header().format(Severity::Info, "yesterday", "x y", &[], "");
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "<86>1 - dev-1 bulwark - x_y [bulwark@32473]"
        );
    }

    #[test]
    fn non_ascii_msg_gets_a_bom_and_long_msg_is_cut_on_a_char_boundary() {
        let detail = "é".repeat(3000);
        let m = header().format(Severity::Info, "", "a", &[], &detail);
        assert!((2047..=2048).contains(&m.len()), "{}", m.len());
        let s = String::from_utf8(m).expect("cut on a character boundary");
        assert!(s.contains("] \u{feff}é"));
    }

    #[test]
    fn long_params_still_fit_the_minimum() {
        let long = "]".repeat(1000);
        let params: Vec<(&str, &str)> = (0..8)
            .map(|_| ("identity-removed", long.as_str()))
            .collect();
        let h = Header::new(
            Facility::LOCAL0,
            &"h".repeat(255),
            &"a".repeat(48),
            &format!("{}@1", "s".repeat(30)),
            2048,
        )
        .unwrap();
        let m = h.format(
            Severity::Alert,
            "2024-05-01T12:34:56Z",
            &"m".repeat(99),
            &params,
            "x",
        );
        assert!(m.len() <= 2048, "{}", m.len());
        assert!(String::from_utf8(m).unwrap().ends_with("] x"));
    }

    #[test]
    fn header_fields_are_validated() {
        for (host, app, sd, len) in [
            ("", "bulwark", "a@1", 2048),
            ("has space", "bulwark", "a@1", 2048),
            ("-", "bulwark", "a@1", 2048),
            ("dev", "bulwärk", "a@1", 2048),
            ("dev", "bulwark", "noat", 2048),
            ("dev", "bulwark", "a=b@1", 2048),
            ("dev", "bulwark", "a@1", 1024),
        ] {
            assert!(
                Header::new(Facility::AUTH, host, app, sd, len).is_err(),
                "{host:?} {app:?} {sd:?} {len}"
            );
        }
        assert!(Facility::new(24).is_err());
        assert_eq!(Facility::local(7).unwrap().code(), 23);
    }

    #[test]
    fn frames_count_octets() {
        let mut out = Vec::new();
        frame(&mut out, "é".as_bytes());
        assert_eq!(out, b"2 \xc3\xa9");
    }
}
