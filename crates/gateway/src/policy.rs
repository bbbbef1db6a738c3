//! The gateway policy: a TOML file naming each device, how it proves who
//! it is, and what it may do. Anything not allowed is denied.
//!
//! ```toml
//! [limits]
//! max_packet_size = 65536      # largest remaining length accepted
//! max_topic_levels = 16
//! connect_timeout_secs = 10
//! max_connections = 1024       # all devices together
//! connection_attempts_per_minute = 30   # per device; more is flapping
//! max_connections_per_device = 4
//! idle_timeout_secs = 600      # MQTT keep-alive 0; else 1.5x keep-alive
//!
//! [quarantine]
//! strikes = 3                  # violations or rate-limit hits ...
//! window_secs = 60             # ... within this window ...
//! duration_secs = 300          # ... refuse the device for this long
//!
//! [groups.sensors]
//! publish = ["sensors/%c/#"]   # %c: MQTT client id, %u: certificate identity
//! subscribe = ["commands/%c/+"]
//! max_qos = 1
//! retain = false
//! max_payload = 4096
//! payload_format = "json"      # "any" (default), "utf8" or "json"
//! messages_per_second = 20
//! bytes_per_second = 20000
//!
//! [groups.sensors.recovery]    # all a quarantined device may still do
//! publish = ["updates/%c/status"]
//! subscribe = ["updates/%c/#"]
//!
//! [[devices]]
//! name = "unit-7"
//! identity = "urn:uuid:2f0c…"  # certificate CN or URI SAN
//! client_id = "unit-7"         # optional; default: must equal the identity
//! group = "sensors"
//! rules = { publish = ["status/%c"] }   # added to the group's rules
//! ```
//!
//! Modbus TCP and CoAP devices are named by source address in separate
//! `[modbus]` and `[coap]` parts, see [`modbus`] and [`coap`].
//! The `[anomaly]` part sets how behaviour baselines are learned and
//! what an anomaly does, see [`anomaly`].
//!
//! A device's rules are its group's rules with its own on top: topic lists
//! are joined, single values are overridden. Unset values take the most
//! restrictive default (no topics, QoS 0, no retain).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::topic::Pattern;
use crate::{Error, Result};

pub mod anomaly;
pub mod coap;
pub mod modbus;

const DEFAULT_MAX_PACKET: usize = 65_536;
const DEFAULT_LEVELS: usize = 16;
const DEFAULT_MPS: u32 = 100;
const DEFAULT_BPS: u32 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    quarantine: QuarantineFile,
    #[serde(default)]
    groups: HashMap<String, RulesFile>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
    #[serde(default)]
    modbus: modbus::ModbusFile,
    #[serde(default)]
    coap: coap::CoapFile,
    #[serde(default)]
    anomaly: anomaly::AnomalyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_packet_size: Option<u64>,
    max_topic_levels: Option<u64>,
    connect_timeout_secs: Option<u64>,
    max_connections: Option<u64>,
    connection_attempts_per_minute: Option<u64>,
    max_connections_per_device: Option<u64>,
    idle_timeout_secs: Option<u64>,
    messages_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineFile {
    strikes: Option<u64>,
    window_secs: Option<u64>,
    duration_secs: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    max_qos: Option<u64>,
    retain: Option<bool>,
    max_payload: Option<u64>,
    payload_format: Option<PayloadFormat>,
    messages_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
    #[serde(default)]
    recovery: RecoveryFile,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoveryFile {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    name: String,
    identity: Option<String>,
    client_id: Option<String>,
    group: Option<String>,
    #[serde(default)]
    rules: RulesFile,
}

/// What a PUBLISH payload must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// Any bytes.
    #[default]
    Any,
    /// Valid UTF-8.
    Utf8,
    /// A JSON document.
    Json,
}

impl PayloadFormat {
    /// Whether `payload` has this format.
    pub fn accepts(self, payload: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Utf8 => std::str::from_utf8(payload).is_ok(),
            Self::Json => serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok(),
        }
    }
}

/// Limits that hold for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest remaining length accepted (bytes).
    pub max_packet_size: usize,
    /// Most levels in a topic or filter.
    pub max_topic_levels: usize,
    /// Time allowed from TCP accept to a complete CONNECT.
    pub connect_timeout: Duration,
    /// Concurrent device connections.
    pub max_connections: usize,
    /// Per-device admission of TCP connections (MQTT and Modbus).
    pub per_device: ConnectionRule,
    /// How long an MQTT connection that announced keep-alive 0 may stay
    /// silent (a non-zero keep-alive gets 1.5 times itself, MQTT §3.1.2.10).
    pub idle_timeout: Duration,
}

/// How often, and how many times at once, one device may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRule {
    /// Connection attempts in any 60 s; more is flapping: refused, and
    /// each refusal is a strike.
    pub attempts_per_minute: u32,
    /// Connections the device may hold open at once.
    pub max_open: u32,
}

/// When a device is quarantined, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineRule {
    /// Violations (refused packets or rate-limit hits) that trigger it.
    pub strikes: u32,
    /// The window they are counted in.
    pub window: Duration,
    /// How long the device is refused.
    pub duration: Duration,
}

/// A device's allowed rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// PUBLISH packets per second (the burst is one second's worth).
    pub messages_per_second: u32,
    /// PUBLISH payload bytes per second.
    pub bytes_per_second: u32,
}

impl Rate {
    /// A rate from optional `<prefix>.<messages_key>` and
    /// `<prefix>.bytes_per_second` values, falling back to `default`; each
    /// in 1..=2^32-1, bytes at least `min_bytes` (one largest frame or
    /// datagram, which could otherwise never pass).
    pub(crate) fn checked(
        prefix: &str,
        messages_key: &str,
        (messages, bytes): (Option<u64>, Option<u64>),
        default: Rate,
        min_bytes: u64,
    ) -> Result<Self> {
        let max = u64::from(u32::MAX);
        Ok(Self {
            messages_per_second: to_u32(ranged(
                &format!("{prefix}.{messages_key}"),
                messages,
                u64::from(default.messages_per_second),
                1,
                max,
            )?),
            bytes_per_second: to_u32(ranged(
                &format!("{prefix}.bytes_per_second"),
                bytes,
                u64::from(default.bytes_per_second),
                min_bytes,
                max,
            )?),
        })
    }
}

/// The rules that apply to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Topics it may publish to (and use as will topic).
    pub publish: Vec<Pattern>,
    /// Filters it may subscribe to (a request must be covered by one).
    pub subscribe: Vec<Pattern>,
    /// Highest QoS for PUBLISH and SUBSCRIBE.
    pub max_qos: u8,
    /// Whether retained messages are allowed.
    pub retain: bool,
    /// Largest PUBLISH payload.
    pub max_payload: usize,
    /// Required payload format.
    pub payload_format: PayloadFormat,
    /// Rate limit.
    pub rate: Rate,
    /// What it may still do while quarantined.
    pub recovery: Recovery,
}

/// A device's recovery path: the only topics it may use while
/// quarantined (e.g. the update service's), instead of its normal rules.
/// Empty (the default): a quarantined device cannot connect at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Topics it may publish to while quarantined.
    pub publish: Vec<Pattern>,
    /// Filters it may subscribe to while quarantined.
    pub subscribe: Vec<Pattern>,
}

impl Recovery {
    /// Whether there is any recovery path.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
    }
}

/// A device the gateway knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Policy name (used in events and quarantine).
    pub name: String,
    /// Certificate identity (CN or URI SAN) it must present.
    pub identity: Option<String>,
    /// Client id it must use; `None`: the certificate identity.
    pub client_id: Option<String>,
    /// Its rules.
    pub rules: Rules,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Global limits.
    pub limits: Limits,
    /// Quarantine rule.
    pub quarantine: QuarantineRule,
    /// The `[modbus]` part: devices by source address.
    pub modbus: modbus::ModbusPolicy,
    /// The `[coap]` part: devices by source address.
    pub coap: coap::CoapPolicy,
    /// The `[anomaly]` part: behaviour baselines and alerts.
    pub anomaly: anomaly::AnomalyPolicy,
    devices: Vec<Device>,
    by_identity: HashMap<String, usize>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::PolicyInvalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A device's name: 1-128 printable characters, unique in its section.
fn check_device_name(field: &str, name: &str, names: &mut HashSet<String>) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.contains(char::is_control) {
        return Err(invalid(
            format!("{field}.name"),
            "must be 1-128 printable characters",
        ));
    }
    if !names.insert(name.to_owned()) {
        return Err(invalid(
            format!("{field}.name"),
            format!("`{name}` is used twice"),
        ));
    }
    Ok(())
}

fn ranged(field: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(field, format!("{v} is outside {min}..={max}")))
    }
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl Policy {
    /// Parses and validates policy text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| Error::PolicySyntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::validate(file)
    }

    /// Reads, parses and validates a policy file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::PolicyRead {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    fn validate(file: File) -> Result<Self> {
        let l = &file.limits;
        let max_packet = ranged(
            "limits.max_packet_size",
            l.max_packet_size,
            DEFAULT_MAX_PACKET as u64,
            64,
            crate::mqtt::codec::MAX_REMAINING_LENGTH as u64,
        )?;
        let levels = ranged(
            "limits.max_topic_levels",
            l.max_topic_levels,
            DEFAULT_LEVELS as u64,
            1,
            1024,
        )?;
        let limits = Limits {
            max_packet_size: to_usize(max_packet),
            max_topic_levels: to_usize(levels),
            connect_timeout: Duration::from_secs(ranged(
                "limits.connect_timeout_secs",
                l.connect_timeout_secs,
                10,
                1,
                300,
            )?),
            max_connections: to_usize(ranged(
                "limits.max_connections",
                l.max_connections,
                1024,
                1,
                1_000_000,
            )?),
            per_device: ConnectionRule {
                attempts_per_minute: to_u32(ranged(
                    "limits.connection_attempts_per_minute",
                    l.connection_attempts_per_minute,
                    30,
                    1,
                    100_000,
                )?),
                max_open: to_u32(ranged(
                    "limits.max_connections_per_device",
                    l.max_connections_per_device,
                    4,
                    1,
                    100_000,
                )?),
            },
            idle_timeout: Duration::from_secs(ranged(
                "limits.idle_timeout_secs",
                l.idle_timeout_secs,
                600,
                1,
                86_400,
            )?),
        };
        let default_rate = Rate {
            messages_per_second: to_u32(ranged(
                "limits.messages_per_second",
                l.messages_per_second,
                u64::from(DEFAULT_MPS),
                1,
                10_000_000,
            )?),
            bytes_per_second: to_u32(ranged(
                "limits.bytes_per_second",
                l.bytes_per_second,
                u64::from(DEFAULT_BPS),
                1,
                u64::from(u32::MAX),
            )?),
        };
        let q = &file.quarantine;
        let quarantine = QuarantineRule {
            strikes: to_u32(ranged("quarantine.strikes", q.strikes, 5, 1, 1_000_000)?),
            window: Duration::from_secs(ranged(
                "quarantine.window_secs",
                q.window_secs,
                60,
                1,
                86_400,
            )?),
            duration: Duration::from_secs(ranged(
                "quarantine.duration_secs",
                q.duration_secs,
                300,
                1,
                30 * 86_400,
            )?),
        };

        for (name, rules) in &file.groups {
            check_rules(&format!("groups.{name}"), rules, &limits)?;
        }
        let mut devices = Vec::with_capacity(file.devices.len());
        let mut by_identity = HashMap::new();
        let mut names = HashSet::new();
        for (i, d) in file.devices.iter().enumerate() {
            let field = format!("devices[{i}]");
            check_device_name(&field, &d.name, &mut names)?;
            if d.identity.is_none() && d.client_id.is_none() {
                return Err(invalid(
                    field,
                    "needs an `identity` (certificate CN or URI SAN) or a `client_id`",
                ));
            }
            for (what, v) in [("identity", &d.identity), ("client_id", &d.client_id)] {
                if let Some(v) = v
                    && (v.is_empty() || v.len() > 256 || v.contains('\0'))
                {
                    return Err(invalid(
                        format!("{field}.{what}"),
                        "must be 1-256 bytes without NUL",
                    ));
                }
            }
            let group =
                match &d.group {
                    Some(g) => file.groups.get(g).cloned().ok_or_else(|| {
                        invalid(format!("{field}.group"), format!("no group `{g}`"))
                    })?,
                    None => RulesFile::default(),
                };
            check_rules(&format!("{field}.rules"), &d.rules, &limits)?;
            let rules = merge(&group, &d.rules, &limits, default_rate)?;
            if let Some(id) = &d.identity
                && by_identity.insert(id.clone(), devices.len()).is_some()
            {
                return Err(invalid(
                    format!("{field}.identity"),
                    format!("`{id}` is bound to two devices"),
                ));
            }
            devices.push(Device {
                name: d.name.clone(),
                identity: d.identity.clone(),
                client_id: d.client_id.clone(),
                rules,
            });
        }
        let modbus = modbus::ModbusPolicy::validate(file.modbus)?;
        let coap = coap::CoapPolicy::validate(file.coap)?;
        let anomaly = anomaly::AnomalyPolicy::validate(file.anomaly)?;
        Ok(Self {
            limits,
            quarantine,
            modbus,
            coap,
            anomaly,
            devices,
            by_identity,
        })
    }

    /// The device bound to any of the certificate's names (CN, URI SANs).
    pub fn device_for_identity<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Option<(&Device, &'a str)> {
        names.into_iter().find_map(|n| {
            self.by_identity
                .get(n)
                .and_then(|&i| self.devices.get(i))
                .map(|d| (d, n))
        })
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Every device.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
}

fn check_rules(field: &str, r: &RulesFile, limits: &Limits) -> Result<()> {
    for (what, list) in [
        ("publish", &r.publish),
        ("subscribe", &r.subscribe),
        ("recovery.publish", &r.recovery.publish),
        ("recovery.subscribe", &r.recovery.subscribe),
    ] {
        for (i, f) in list.iter().enumerate() {
            Pattern::parse(f, limits.max_topic_levels)
                .map_err(|e| invalid(format!("{field}.{what}[{i}]"), format!("`{f}`: {e}")))?;
        }
    }
    if let Some(q) = r.max_qos
        && q > 2
    {
        return Err(invalid(
            format!("{field}.max_qos"),
            format!("{q} is not 0, 1 or 2"),
        ));
    }
    if let Some(p) = r.max_payload
        && p > limits.max_packet_size as u64
    {
        return Err(invalid(
            format!("{field}.max_payload"),
            format!("{p} is over limits.max_packet_size"),
        ));
    }
    for (what, v) in [
        ("messages_per_second", r.messages_per_second),
        ("bytes_per_second", r.bytes_per_second),
    ] {
        if let Some(v) = v
            && !(1..=u64::from(u32::MAX)).contains(&v)
        {
            return Err(invalid(
                format!("{field}.{what}"),
                format!("{v} is outside 1..=2^32-1"),
            ));
        }
    }
    Ok(())
}

fn merge(group: &RulesFile, own: &RulesFile, limits: &Limits, rate: Rate) -> Result<Rules> {
    let patterns = |a: &[String], b: &[String]| -> Result<Vec<Pattern>> {
        a.iter()
            .chain(b)
            .map(|f| Pattern::parse(f, limits.max_topic_levels).map_err(|e| invalid("rules", e)))
            .collect()
    };
    Ok(Rules {
        publish: patterns(&group.publish, &own.publish)?,
        subscribe: patterns(&group.subscribe, &own.subscribe)?,
        recovery: Recovery {
            publish: patterns(&group.recovery.publish, &own.recovery.publish)?,
            subscribe: patterns(&group.recovery.subscribe, &own.recovery.subscribe)?,
        },
        max_qos: own.max_qos.or(group.max_qos).map_or(0, |q| q.min(2) as u8),
        retain: own.retain.or(group.retain).unwrap_or(false),
        max_payload: own
            .max_payload
            .or(group.max_payload)
            .map_or(limits.max_packet_size, to_usize),
        payload_format: own
            .payload_format
            .or(group.payload_format)
            .unwrap_or_default(),
        rate: Rate {
            messages_per_second: own
                .messages_per_second
                .or(group.messages_per_second)
                .map_or(rate.messages_per_second, to_u32),
            bytes_per_second: own
                .bytes_per_second
                .or(group.bytes_per_second)
                .map_or(rate.bytes_per_second, to_u32),
        },
    })
}

/// The policy in force, swapped whole on reload. Sessions load it per
/// packet, so a reload applies to established connections without
/// dropping them.
#[derive(Debug)]
pub struct PolicyHandle {
    current: ArcSwap<Policy>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The policy in force now.
    pub fn load(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Replaces the policy.
    pub fn replace(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }

    /// Re-reads `path`; on any error the policy in force stays.
    pub fn reload(&self, path: &Path) -> Result<()> {
        let policy = Policy::load(path)?;
        self.replace(policy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [limits]
        max_packet_size = 4096
        [quarantine]
        strikes = 2
        [groups.sensors]
        publish = ["sensors/%c/#"]
        max_qos = 1
        payload_format = "json"
        [[devices]]
        name = "a"
        identity = "urn:uuid:1"
        group = "sensors"
        rules = { publish = ["status/%c"], max_qos = 2, retain = true }
    "#;

    fn err(text: &str) -> String {
        Policy::from_toml(text, "test").unwrap_err().to_string()
    }

    #[test]
    fn group_and_device_rules_merge() {
        let p = Policy::from_toml(GOOD, "test").unwrap();
        let (d, name) = p.device_for_identity(["CN", "urn:uuid:1"]).unwrap();
        assert_eq!(name, "urn:uuid:1");
        let pubs: Vec<_> = d.rules.publish.iter().map(Pattern::as_str).collect();
        assert_eq!(pubs, ["sensors/%c/#", "status/%c"]);
        assert_eq!((d.rules.max_qos, d.rules.retain), (2, true));
        assert_eq!(d.rules.payload_format, PayloadFormat::Json);
        assert_eq!(d.rules.max_payload, 4096);
        assert_eq!(p.quarantine.strikes, 2);
        assert!(p.device_for_identity(["other"]).is_none());
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[limits]\nmax_packet_size = 1").contains("limits.max_packet_size"));
        assert!(err("bogus = 1").contains("bogus"));
        assert!(err("[groups.g]\npublish = [\"a/#/b\"]").contains("groups.g.publish[0]"));
        assert!(err("[groups.g]\nmax_qos = 3").contains("groups.g.max_qos"));
        assert!(
            err("[[devices]]\nname = \"a\"\nidentity = \"x\"\ngroup = \"nope\"")
                .contains("devices[0].group")
        );
        assert!(err("[[devices]]\nname = \"a\"").contains("devices[0]"));
        assert!(
            err("[[devices]]\nname = \"a\"\nidentity = \"x\"\n[[devices]]\nname = \"b\"\nidentity = \"x\"")
                .contains("devices[1].identity")
        );
        assert!(
            err("[[devices]]\nname = \"a\"\nidentity = \"x\"\nrules = { subscribe = [\"a/x%c\"] }")
                .contains("devices[0].rules.subscribe[0]")
        );
        assert!(err("[[devices]]\nname = \"a\"\nidentity = \"x\"\ncolour = 1").contains("colour"));
        for field in [
            "connection_attempts_per_minute",
            "max_connections_per_device",
            "idle_timeout_secs",
        ] {
            assert!(err(&format!("[limits]\n{field} = 0")).contains(&format!("limits.{field}")));
        }
    }

    #[test]
    fn connection_limits_default_and_parse() {
        let p = Policy::from_toml("", "t").unwrap();
        assert_eq!(
            p.limits.per_device,
            ConnectionRule {
                attempts_per_minute: 30,
                max_open: 4
            }
        );
        assert_eq!(p.limits.idle_timeout, Duration::from_secs(600));
        let p = Policy::from_toml(
            "[limits]\nconnection_attempts_per_minute = 2\nmax_connections_per_device = 1",
            "t",
        )
        .unwrap();
        assert_eq!(p.limits.per_device.attempts_per_minute, 2);
        assert_eq!(p.limits.per_device.max_open, 1);
    }

    #[test]
    fn defaults_deny() {
        let p = Policy::from_toml("[[devices]]\nname = \"a\"\nidentity = \"x\"", "t").unwrap();
        let d = p.device("a").unwrap();
        assert!(d.rules.publish.is_empty() && d.rules.subscribe.is_empty());
        assert_eq!((d.rules.max_qos, d.rules.retain), (0, false));
    }

    #[test]
    fn reload_keeps_the_old_policy_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, GOOD).unwrap();
        let handle = PolicyHandle::new(Policy::load(&path).unwrap());
        let before = handle.load();
        std::fs::write(&path, "[limits]\nmax_packet_size = 0").unwrap();
        assert!(handle.reload(&path).is_err());
        assert!(Arc::ptr_eq(&before, &handle.load()));
        std::fs::write(&path, GOOD.replace("strikes = 2", "strikes = 9")).unwrap();
        handle.reload(&path).unwrap();
        assert_eq!(handle.load().quarantine.strikes, 9);
        assert_eq!(before.quarantine.strikes, 2);
    }

    #[test]
    fn payload_formats() {
        assert!(PayloadFormat::Json.accepts(br#"{"t": 1}"#));
        assert!(!PayloadFormat::Json.accepts(b"{"));
        assert!(PayloadFormat::Utf8.accepts("é".as_bytes()));
        assert!(!PayloadFormat::Utf8.accepts(&[0xff]));
        assert!(!PayloadFormat::Json.accepts(&b"[".repeat(10_000)));
    }
}
