//! Field checks shared by the boot file, the device settings and bundles.
//! Each returns the crate's [`Error`] naming the field and what it accepts.

use std::fmt::Display;
use std::net::IpAddr;
use std::path::Path;

use crate::error::{Error, Result};

/// `min <= value <= max`, else [`Error::OutOfRange`].
pub(crate) fn range<T: PartialOrd + Display>(field: &str, value: T, min: T, max: T) -> Result<()> {
    if value < min || value > max {
        return Err(Error::OutOfRange {
            field: field.to_owned(),
            value: value.to_string(),
            allowed: format!("{min}..={max}"),
        });
    }
    Ok(())
}

pub(crate) fn invalid(field: &str, expected: &str) -> Error {
    Error::InvalidFormat {
        field: field.to_owned(),
        expected: expected.to_owned(),
    }
}

/// At most `max` entries, else [`Error::TooManyEntries`].
pub(crate) fn count<T>(field: &str, list: &[T], max: usize) -> Result<()> {
    if list.len() > max {
        return Err(Error::TooManyEntries {
            field: field.to_owned(),
            count: list.len(),
            max,
        });
    }
    Ok(())
}

/// A non-empty path without NUL bytes (which no file system accepts).
pub(crate) fn path(field: &str, path: &Path) -> Result<()> {
    let text = path.as_os_str().as_encoded_bytes();
    if text.is_empty() || text.len() > 4096 || text.contains(&0) {
        return Err(invalid(field, "a file path (1 to 4096 bytes, no NUL)"));
    }
    Ok(())
}

/// RFC 1123 host name: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, no label starting or ending with a hyphen, 253 bytes at most.
pub(crate) fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A host name or an IP address (IPv6 without brackets).
pub(crate) fn is_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || is_hostname(host)
}

/// `host:port` or `[ipv6]:port`, port 1 to 65535.
pub(crate) fn is_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => is_hostname(host) || host.parse::<std::net::Ipv4Addr>().is_ok(),
    };
    host_ok && is_port(port)
}

/// Decimal 1 to 65535, digits only (no sign, no spaces).
pub(crate) fn is_port(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok_and(|p| p != 0)
}

/// 1 to `max` characters from the set `allowed` accepts.
pub(crate) fn chars(
    field: &str,
    text: &str,
    min: usize,
    max: usize,
    allowed: fn(char) -> bool,
    expected: &str,
) -> Result<()> {
    let len = text.chars().count();
    if len < min || len > max || !text.chars().all(allowed) {
        return Err(invalid(field, expected));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_rfc_1123() {
        for good in [
            "a",
            "pool.ntp.org",
            "0.pool.ntp.org",
            "x-1.example",
            "192.0.2.1",
        ] {
            assert!(is_hostname(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
        ]
        .join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a b",
            "a.",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
        assert!(is_hostname(&"a".repeat(63)));
    }

    #[test]
    fn host_port_forms() {
        for good in [
            "log.example:514",
            "192.0.2.1:6514",
            "[2001:db8::1]:514",
            "h:65535",
            "h:1",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "log.example",
            "log.example:0",
            "h:65536",
            "h:+1",
            "2001:db8::1:514",
            "[h]:1",
            ":514",
            "h:",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
