//! The gateway's boot file: where each protocol listens, where its
//! upstream is, which CAs issue device certificates and where the policy
//! lives. The policy itself ([`crate::Policy`]) is a separate file so that
//! it can be reloaded (SIGHUP) without touching listeners.
//!
//! ```toml
//! policy = "/etc/bulwark/gateway-policy.toml"
//!
//! [mqtt]
//! listen = "0.0.0.0:8883"
//! upstream = "127.0.0.1:1883"
//! device_anchors = ["/etc/bulwark/device-ca.pem"]
//!
//! [modbus]
//! listen = "0.0.0.0:5020"
//! upstream = "192.0.2.10:502"
//!
//! [coap]
//! listen = "0.0.0.0:5683"
//! upstream = "192.0.2.20:5683"
//!
//! [admin]
//! listen = "127.0.0.1:9883"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The validated boot file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// The policy file (relative paths are taken from the boot file's
    /// directory).
    pub policy: PathBuf,
    /// The MQTT proxy (TLS toward devices).
    pub mqtt: Option<MqttSection>,
    /// The Modbus TCP proxy.
    pub modbus: Option<PlainSection>,
    /// The CoAP (UDP) proxy.
    pub coap: Option<PlainSection>,
    /// Metrics and quarantine administration.
    pub admin: Option<AdminSection>,
}

/// Where the MQTT proxy listens and forwards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Device-side TLS listener.
    pub listen: SocketAddr,
    /// The broker (plain TCP: keep it on loopback or a private segment).
    pub upstream: SocketAddr,
    /// PEM files of the CAs whose certificates devices may present.
    pub device_anchors: Vec<PathBuf>,
}

/// Where a plain (non-TLS) protocol proxy listens and forwards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainSection {
    /// Device-side listener.
    pub listen: SocketAddr,
    /// The server behind the gateway.
    pub upstream: SocketAddr,
}

/// The operator's endpoint (Prometheus metrics, quarantine).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Listener; loopback unless `allow_remote` is set, since it has no
    /// authentication of its own.
    pub listen: SocketAddr,
    /// Accept a non-loopback `listen` (behind a firewall or a management
    /// segment only).
    #[serde(default)]
    pub allow_remote: bool,
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl GatewayFile {
    /// Parses and validates boot-file text; `origin` names it in errors
    /// and relative paths are resolved against `base`.
    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self> {
        let mut file: Self = toml::from_str(text).map_err(|e| Error::ConfigSyntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        file.policy = base.join(&file.policy);
        if let Some(mqtt) = &mut file.mqtt {
            if mqtt.device_anchors.is_empty() {
                return Err(invalid(
                    "mqtt.device_anchors",
                    "name at least one CA file: devices are authenticated by certificate",
                ));
            }
            for anchor in &mut mqtt.device_anchors {
                *anchor = base.join(&*anchor);
            }
        }
        if file.mqtt.is_none() && file.modbus.is_none() && file.coap.is_none() {
            return Err(invalid(
                "mqtt",
                "no protocol is configured: add [mqtt], [modbus] or [coap]",
            ));
        }
        let listeners = [
            ("mqtt.listen", file.mqtt.as_ref().map(|s| s.listen), "tcp"),
            (
                "modbus.listen",
                file.modbus.as_ref().map(|s| s.listen),
                "tcp",
            ),
            ("admin.listen", file.admin.as_ref().map(|s| s.listen), "tcp"),
            ("coap.listen", file.coap.as_ref().map(|s| s.listen), "udp"),
        ];
        for (i, (field, addr, transport)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            let clash = listeners[..i]
                .iter()
                .find(|(_, other, t)| t == transport && *other == Some(*addr) && addr.port() != 0);
            if let Some((other, _, _)) = clash {
                return Err(invalid(field, format!("{addr} is also {other}")));
            }
        }
        if let Some(admin) = &file.admin
            && !admin.listen.ip().is_loopback()
            && !admin.allow_remote
        {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{} is not a loopback address; the admin endpoint has no authentication of its own (set allow_remote = true only behind a firewall)",
                    admin.listen
                ),
            ));
        }
        Ok(file)
    }

    /// Reads and validates a boot file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, &path.display().to_string(), base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayFile> {
        GatewayFile::from_toml(text, "test", Path::new("/etc/bulwark"))
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let f = parse(
            r#"policy = "policy.toml"
[mqtt]
listen = "127.0.0.1:8883"
upstream = "127.0.0.1:1883"
device_anchors = ["ca.pem", "/abs/ca2.pem"]
"#,
        )
        .unwrap();
        assert_eq!(f.policy, Path::new("/etc/bulwark/policy.toml"));
        let anchors = &f.mqtt.unwrap().device_anchors;
        assert_eq!(anchors[0], Path::new("/etc/bulwark/ca.pem"));
        assert_eq!(anchors[1], Path::new("/abs/ca2.pem"));
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("policy = \"p\"\n", "no protocol"),
            (
                "policy = \"p\"\n[mqtt]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\ndevice_anchors = []\n",
                "mqtt.device_anchors",
            ),
            (
                "policy = \"p\"\n[modbus]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[admin]\nlisten = \"127.0.0.1:1\"\n",
                "also modbus.listen",
            ),
            (
                "policy = \"p\"\n[coap]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[admin]\nlisten = \"0.0.0.0:9\"\n",
                "not a loopback",
            ),
            (
                "policy = \"p\"\n[coap]\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nsecret = 1\n",
                "unknown field `secret`",
            ),
            (
                "policy = \"p\"\n[coap]\nlisten = \"localhost\"\nupstream = \"127.0.0.1:2\"\n",
                "invalid socket address",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn same_port_on_tcp_and_udp_is_fine() {
        parse(
            "policy = \"p\"\n[modbus]\nlisten = \"127.0.0.1:5000\"\nupstream = \"127.0.0.1:2\"\n[coap]\nlisten = \"127.0.0.1:5000\"\nupstream = \"127.0.0.1:3\"\n",
        )
        .unwrap();
    }
}
