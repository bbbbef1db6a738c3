//! The `[modbus]` part of the policy: which source addresses may talk
//! Modbus TCP through the gateway, to which unit ids, with which function
//! codes, on which addresses. Anything not named is refused.
//!
//! ```toml
//! [modbus]
//! requests_per_second = 50      # per device, shared by its connections
//! bytes_per_second = 16384      # request frame bytes (MBAP included)
//! first_request_timeout_secs = 10   # accept to first complete request
//! idle_timeout_secs = 300       # longest silence between requests
//!
//! [[modbus.devices]]
//! name = "hmi-1"
//! source = "10.0.4.0/24"        # an address or a CIDR block
//! unit_ids = [1, 2]
//! functions = [3, 6]            # default: read-only [1, 2, 3, 4]
//! refusal = "exception"         # or "drop" (close the connection)
//! ranges = { 3 = [[0, 99]], 6 = [[10, 19], [40, 40]] }   # inclusive
//! requests_per_second = 10      # optional: overrides [modbus]
//! ```
//!
//! A function listed without ranges may touch no address (every request
//! gets "illegal data address"): default deny. When several devices'
//! sources contain a peer, the longest prefix wins; two devices with the
//! same source are an error.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Rate, invalid, ranged};
use crate::Result;
use crate::modbus::codec::MAX_FRAME;

/// Function codes the gateway parses and can allow.
pub const SUPPORTED_FUNCTIONS: [u8; 9] = [1, 2, 3, 4, 5, 6, 15, 16, 23];
/// The default: reads only.
pub const READ_ONLY: [u8; 4] = [1, 2, 3, 4];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModbusFile {
    requests_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
    first_request_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    name: String,
    source: String,
    unit_ids: Vec<u64>,
    functions: Option<Vec<u64>>,
    #[serde(default)]
    refusal: Refusal,
    #[serde(default)]
    ranges: BTreeMap<String, Vec<[u64; 2]>>,
    requests_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
}

/// What the gateway does with a request the policy refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refusal {
    /// Answer with a Modbus exception (01 or 02), keep the connection.
    #[default]
    Exception,
    /// Close the connection.
    Drop,
}

/// A source address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 peer counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        a.checked_shr(host_bits).unwrap_or(0) == b.checked_shr(host_bits).unwrap_or(0)
    }
}

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// First address.
    pub first: u16,
    /// Last address.
    pub last: u16,
}

/// One Modbus device (or block of them) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusDevice {
    /// Policy name, for events.
    pub name: String,
    /// Where its connections come from.
    pub source: Cidr,
    /// Unit ids it may address.
    pub unit_ids: Vec<u8>,
    /// Function codes it may use.
    pub functions: Vec<u8>,
    /// What a refused request gets.
    pub refusal: Refusal,
    /// Requests (`messages_per_second`) and request bytes per second.
    pub rate: Rate,
    ranges: BTreeMap<u8, Vec<AddressRange>>,
}

impl ModbusDevice {
    /// Whether `first..=last` lies inside one allowed range of `function`.
    /// A span across the boundary of two ranges is refused even when they
    /// touch: each range is its own grant.
    pub fn allows_range(&self, function: u8, first: u16, last: u16) -> bool {
        self.ranges
            .get(&function)
            .is_some_and(|rs| rs.iter().any(|r| r.first <= first && last <= r.last))
    }
}

/// The validated `[modbus]` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModbusPolicy {
    /// Time from accept to the first complete request (slowloris).
    pub first_request_timeout: Duration,
    /// Longest silence from the device between requests.
    pub idle_timeout: Duration,
    devices: Vec<ModbusDevice>,
}

impl Default for ModbusPolicy {
    fn default() -> Self {
        Self {
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            devices: Vec::new(),
        }
    }
}

impl ModbusPolicy {
    /// The device whose source contains `ip`, longest prefix first;
    /// `None`: unknown, refused.
    pub fn device_for(&self, ip: IpAddr) -> Option<&ModbusDevice> {
        self.devices
            .iter()
            .filter(|d| d.source.contains(ip))
            .max_by_key(|d| d.source.prefix)
    }

    /// Every device.
    pub fn devices(&self) -> &[ModbusDevice] {
        &self.devices
    }

    pub(super) fn validate(file: ModbusFile) -> Result<Self> {
        let section = Rate::checked(
            "modbus",
            "requests_per_second",
            (file.requests_per_second, file.bytes_per_second),
            Rate {
                messages_per_second: 50,
                bytes_per_second: 16_384,
            },
            MAX_FRAME as u64,
        )?;
        let first_request_timeout = Duration::from_secs(ranged(
            "modbus.first_request_timeout_secs",
            file.first_request_timeout_secs,
            10,
            1,
            300,
        )?);
        let idle_timeout = Duration::from_secs(ranged(
            "modbus.idle_timeout_secs",
            file.idle_timeout_secs,
            300,
            1,
            86_400,
        )?);
        let mut devices = Vec::with_capacity(file.devices.len());
        let mut names = HashSet::new();
        let mut sources = HashSet::new();
        for (i, d) in file.devices.into_iter().enumerate() {
            let field = format!("modbus.devices[{i}]");
            super::check_device_name(&field, &d.name, &mut names)?;
            let source = check_device_source(&field, &d.source, &mut sources)?;
            let mut unit_ids = Vec::with_capacity(d.unit_ids.len());
            for (j, u) in d.unit_ids.iter().enumerate() {
                let u = u8::try_from(*u)
                    .map_err(|_| invalid(format!("{field}.unit_ids[{j}]"), "not 0..=255"))?;
                unit_ids.push(u);
            }
            if unit_ids.is_empty() {
                return Err(invalid(format!("{field}.unit_ids"), "names no unit id"));
            }
            let functions = match &d.functions {
                None => READ_ONLY.to_vec(),
                Some(list) => {
                    let mut out = Vec::with_capacity(list.len());
                    for (j, f) in list.iter().enumerate() {
                        match u8::try_from(*f) {
                            Ok(f) if SUPPORTED_FUNCTIONS.contains(&f) => out.push(f),
                            _ => {
                                return Err(invalid(
                                    format!("{field}.functions[{j}]"),
                                    format!("{f} is not one of {SUPPORTED_FUNCTIONS:?}"),
                                ));
                            }
                        }
                    }
                    out
                }
            };
            let mut ranges = BTreeMap::new();
            for (key, list) in d.ranges {
                let f = key
                    .parse::<u8>()
                    .ok()
                    .filter(|f| functions.contains(f))
                    .ok_or_else(|| {
                        invalid(
                            format!("{field}.ranges.{key}"),
                            "is not one of the device's allowed functions",
                        )
                    })?;
                let mut rs = Vec::with_capacity(list.len());
                for (j, [first, last]) in list.into_iter().enumerate() {
                    match (u16::try_from(first), u16::try_from(last)) {
                        (Ok(first), Ok(last)) if first <= last => {
                            rs.push(AddressRange { first, last });
                        }
                        _ => {
                            return Err(invalid(
                                format!("{field}.ranges.{key}[{j}]"),
                                format!("[{first}, {last}] is not first <= last <= 65535"),
                            ));
                        }
                    }
                }
                ranges.insert(f, rs);
            }
            let rate = Rate::checked(
                &field,
                "requests_per_second",
                (d.requests_per_second, d.bytes_per_second),
                section,
                MAX_FRAME as u64,
            )?;
            devices.push(ModbusDevice {
                name: d.name,
                source,
                unit_ids,
                functions,
                refusal: d.refusal,
                rate,
                ranges,
            });
        }
        Ok(Self {
            first_request_timeout,
            idle_timeout,
            devices,
        })
    }
}

/// A device's source address or CIDR block, bound to one device only.
pub(super) fn check_device_source(
    field: &str,
    source: &str,
    sources: &mut HashSet<Cidr>,
) -> Result<Cidr> {
    let cidr = Cidr::parse(source).ok_or_else(|| {
        invalid(
            format!("{field}.source"),
            format!("`{source}` is not an address or CIDR block"),
        )
    })?;
    if !sources.insert(cidr) {
        return Err(invalid(
            format!("{field}.source"),
            format!("`{source}` is bound to two devices"),
        ));
    }
    Ok(cidr)
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    const GOOD: &str = r#"
        [[modbus.devices]]
        name = "net"
        source = "10.0.0.0/8"
        unit_ids = [1]
        ranges = { 3 = [[0, 9]] }
        [[modbus.devices]]
        name = "one"
        source = "10.1.2.3"
        unit_ids = [1, 2]
        functions = [3, 16]
        refusal = "drop"
        ranges = { 3 = [[0, 99], [100, 199]], 16 = [[10, 19]] }
    "#;

    fn err(text: &str) -> String {
        Policy::from_toml(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn longest_prefix_wins_and_unknown_is_none() {
        let p = Policy::from_toml(GOOD, "t").unwrap();
        let m = &p.modbus;
        assert_eq!(
            m.device_for("10.1.2.3".parse().unwrap()).unwrap().name,
            "one"
        );
        assert_eq!(
            m.device_for("10.9.9.9".parse().unwrap()).unwrap().name,
            "net"
        );
        assert_eq!(
            m.device_for("::ffff:10.9.9.9".parse().unwrap())
                .unwrap()
                .name,
            "net"
        );
        assert!(m.device_for("192.168.0.1".parse().unwrap()).is_none());
        assert!(m.device_for("::1".parse().unwrap()).is_none());
        let net = m.device_for("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(net.functions, super::READ_ONLY);
        assert_eq!(net.refusal, super::Refusal::Exception);
    }

    #[test]
    fn ranges_do_not_join_across_boundaries() {
        let p = Policy::from_toml(GOOD, "t").unwrap();
        let d = p.modbus.device_for("10.1.2.3".parse().unwrap()).unwrap();
        assert!(d.allows_range(3, 0, 99));
        assert!(d.allows_range(3, 100, 199));
        assert!(!d.allows_range(3, 99, 100));
        assert!(!d.allows_range(16, 9, 10));
        assert!(!d.allows_range(4, 0, 0));
    }

    #[test]
    fn errors_name_the_field() {
        let dev = |extra: &str| {
            format!(
                "[[modbus.devices]]\nname = \"a\"\nsource = \"127.0.0.1\"\nunit_ids = [1]\n{extra}"
            )
        };
        assert!(err(&dev("functions = [8]")).contains("modbus.devices[0].functions[0]"));
        assert!(err(&dev("ranges = { 6 = [[0, 1]] }")).contains("modbus.devices[0].ranges.6"));
        assert!(err(&dev("ranges = { 3 = [[5, 1]] }")).contains("modbus.devices[0].ranges.3[0]"));
        assert!(err(&dev("ranges = { 3 = [[0, 65536]] }")).contains("ranges.3[0]"));
        assert!(err(&dev("refusal = \"ignore\"")).contains("refusal"));
        assert!(err(&dev("colour = 1")).contains("colour"));
        assert!(err(&dev("").replace("[1]", "[256]")).contains("unit_ids[0]"));
        assert!(err(&dev("").replace("[1]", "[]")).contains("unit_ids"));
        assert!(err(&dev("").replace("127.0.0.1", "127.0.0.1/33")).contains("source"));
        let twice = format!("{}\n{}", dev(""), dev("").replace("\"a\"", "\"b\""));
        assert!(err(&twice).contains("modbus.devices[1].source"));
        assert!(err("[modbus]\nbogus = 1").contains("bogus"));
        assert!(err("[modbus]\nrequests_per_second = 0").contains("modbus.requests_per_second"));
        assert!(err("[modbus]\nbytes_per_second = 100").contains("modbus.bytes_per_second"));
        assert!(
            err("[modbus]\nfirst_request_timeout_secs = 0")
                .contains("modbus.first_request_timeout_secs")
        );
        assert!(err("[modbus]\nidle_timeout_secs = 0").contains("modbus.idle_timeout_secs"));
        assert!(
            err(&dev("requests_per_second = 0")).contains("modbus.devices[0].requests_per_second")
        );
    }

    #[test]
    fn rates_default_from_the_section() {
        let p = Policy::from_toml(
            &format!("[modbus]\nrequests_per_second = 7\nidle_timeout_secs = 9\n{GOOD}").replace(
                "refusal = \"drop\"",
                "refusal = \"drop\"\nbytes_per_second = 999",
            ),
            "t",
        )
        .unwrap();
        let m = &p.modbus;
        assert_eq!(m.idle_timeout, std::time::Duration::from_secs(9));
        let net = m.device_for("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(
            (net.rate.messages_per_second, net.rate.bytes_per_second),
            (7, 16_384)
        );
        let one = m.device_for("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(
            (one.rate.messages_per_second, one.rate.bytes_per_second),
            (7, 999)
        );
    }
}
