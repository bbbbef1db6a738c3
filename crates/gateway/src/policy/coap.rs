//! The `[coap]` part of the policy: which source addresses may send CoAP
//! requests through the gateway, with which methods, to which paths.
//! Anything not named is refused.
//!
//! ```toml
//! [coap]
//! exchange_lifetime_secs = 247  # duplicate window (RFC 7252 §4.8.2)
//! datagrams_per_second = 20     # per device; over it: dropped, a strike
//! bytes_per_second = 16384
//! block_timeout_secs = 60       # an incomplete block-wise transfer expires
//! max_block_transfers = 4       # incomplete transfers per device
//! max_block_bytes = 65536       # Block1 bytes held per device
//!
//! [[coap.devices]]
//! name = "thermo-1"
//! source = "10.0.5.0/24"        # an address or a CIDR block
//! methods = ["GET", "PUT"]      # default: ["GET"]
//! paths = [["sensors", "temp"], ["time"]]   # segment-wise prefixes
//! max_payload = 256             # default 0: no request payload
//! refusal = "forbidden"         # or "drop"
//! datagrams_per_second = 5      # optional: overrides [coap]
//! ```
//!
//! A path prefix matches whole segments: `["sensors", "temp"]` allows
//! `/sensors/temp` and `/sensors/temp/1`, not `/sensors/temperature`.
//! An empty prefix `[]` allows every path and must be written out. When
//! several devices' sources contain a peer, the longest prefix wins; two
//! devices with the same source are an error.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::modbus::{Cidr, check_device_source};
use super::{Rate, invalid, ranged, to_usize};
use crate::Result;
use crate::coap::codec::{MAX_DATAGRAM, MAX_PATH_SEGMENTS, MAX_SEGMENT, Method};

/// RFC 7252 §4.8.2 EXCHANGE_LIFETIME with the default transmission
/// parameters.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CoapFile {
    exchange_lifetime_secs: Option<u64>,
    datagrams_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
    block_timeout_secs: Option<u64>,
    max_block_transfers: Option<u64>,
    max_block_bytes: Option<u64>,
    #[serde(default)]
    devices: Vec<DeviceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    name: String,
    source: String,
    methods: Option<Vec<String>>,
    #[serde(default)]
    paths: Vec<Vec<String>>,
    #[serde(default)]
    recovery_paths: Vec<Vec<String>>,
    max_payload: Option<u64>,
    #[serde(default)]
    refusal: Refusal,
    datagrams_per_second: Option<u64>,
    bytes_per_second: Option<u64>,
}

/// What a refused Confirmable request gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Refusal {
    /// A piggybacked 4.03 Forbidden (same message id and token).
    #[default]
    Forbidden,
    /// Nothing: the request is dropped.
    Drop,
}

/// One CoAP device (or block of them) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapDevice {
    /// Policy name, for events.
    pub name: String,
    /// Where its datagrams come from.
    pub source: Cidr,
    /// Methods it may use.
    pub methods: Vec<Method>,
    /// Uri-Path prefixes it may reach, segment by segment.
    pub paths: Vec<Vec<Vec<u8>>>,
    /// The prefixes (each within `paths`) it may still reach while
    /// quarantined, e.g. its firmware update resource; empty: none.
    pub recovery_paths: Vec<Vec<Vec<u8>>>,
    /// Largest request payload.
    pub max_payload: usize,
    /// What a refused Confirmable request gets.
    pub refusal: Refusal,
    /// Datagrams (`messages_per_second`) and datagram bytes per second.
    pub rate: Rate,
}

impl CoapDevice {
    /// Whether the path made of `segments` starts with an allowed prefix.
    pub fn allows_path<'a>(&self, segments: impl IntoIterator<Item = &'a [u8]> + Clone) -> bool {
        starts_with_any(&self.paths, segments)
    }

    /// Whether the path made of `segments` is on the recovery path.
    pub fn allows_recovery<'a>(
        &self,
        segments: impl IntoIterator<Item = &'a [u8]> + Clone,
    ) -> bool {
        starts_with_any(&self.recovery_paths, segments)
    }
}

/// Whether `segments` starts with one of `prefixes`, segment by segment.
fn starts_with_any<'a>(
    prefixes: &[Vec<Vec<u8>>],
    segments: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> bool {
    prefixes.iter().any(|prefix| {
        let mut segs = segments.clone().into_iter();
        prefix.iter().all(|p| segs.next() == Some(p.as_slice()))
    })
}

/// The validated `[coap]` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapPolicy {
    /// How long a (source, message id) pair counts as a duplicate.
    pub exchange_lifetime: Duration,
    /// Caps on block-wise transfers (RFC 7959).
    pub blocks: BlockLimits,
    devices: Vec<CoapDevice>,
}

/// Caps on one device's block-wise transfers (RFC 7959): the gateway
/// tracks each Block1 upload and Block2 download until it completes, so
/// a transfer that never completes costs a bounded amount, for a bounded
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLimits {
    /// An incomplete transfer with no block for this long expires.
    pub timeout: Duration,
    /// Incomplete transfers per device.
    pub max_transfers: usize,
    /// Block1 payload bytes per device across its incomplete uploads.
    pub max_bytes: usize,
}

impl Default for BlockLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_transfers: 4,
            max_bytes: 65_536,
        }
    }
}

impl Default for CoapPolicy {
    fn default() -> Self {
        Self {
            exchange_lifetime: EXCHANGE_LIFETIME,
            blocks: BlockLimits::default(),
            devices: Vec::new(),
        }
    }
}

impl CoapPolicy {
    /// The device whose source contains `ip`, longest prefix first;
    /// `None`: unknown, refused.
    pub fn device_for(&self, ip: IpAddr) -> Option<&CoapDevice> {
        self.devices
            .iter()
            .filter(|d| d.source.contains(ip))
            .max_by_key(|d| d.source.prefix())
    }

    /// Every device.
    pub fn devices(&self) -> &[CoapDevice] {
        &self.devices
    }

    pub(super) fn validate(file: CoapFile) -> Result<Self> {
        let lifetime = file
            .exchange_lifetime_secs
            .unwrap_or(EXCHANGE_LIFETIME.as_secs());
        if !(1..=3600).contains(&lifetime) {
            return Err(invalid(
                "coap.exchange_lifetime_secs",
                format!("{lifetime} is outside 1..=3600"),
            ));
        }
        let defaults = BlockLimits::default();
        let blocks = BlockLimits {
            timeout: Duration::from_secs(ranged(
                "coap.block_timeout_secs",
                file.block_timeout_secs,
                defaults.timeout.as_secs(),
                1,
                3600,
            )?),
            max_transfers: to_usize(ranged(
                "coap.max_block_transfers",
                file.max_block_transfers,
                defaults.max_transfers as u64,
                1,
                1024,
            )?),
            max_bytes: to_usize(ranged(
                "coap.max_block_bytes",
                file.max_block_bytes,
                defaults.max_bytes as u64,
                1024,
                16 << 20,
            )?),
        };
        let section = Rate::checked(
            "coap",
            "datagrams_per_second",
            (file.datagrams_per_second, file.bytes_per_second),
            Rate {
                messages_per_second: 20,
                bytes_per_second: 16_384,
            },
            MAX_DATAGRAM as u64,
        )?;
        let mut devices = Vec::with_capacity(file.devices.len());
        let mut names = HashSet::new();
        let mut sources = HashSet::new();
        for (i, d) in file.devices.into_iter().enumerate() {
            let field = format!("coap.devices[{i}]");
            super::check_device_name(&field, &d.name, &mut names)?;
            let source = check_device_source(&field, &d.source, &mut sources)?;
            let methods = match d.methods {
                None => vec![Method::Get],
                Some(list) => {
                    let mut out = Vec::with_capacity(list.len());
                    for (j, m) in list.iter().enumerate() {
                        let method = Method::ALL
                            .into_iter()
                            .find(|k| k.as_str().eq_ignore_ascii_case(m))
                            .ok_or_else(|| {
                                invalid(
                                    format!("{field}.methods[{j}]"),
                                    format!("`{m}` is not a CoAP method"),
                                )
                            })?;
                        out.push(method);
                    }
                    out
                }
            };
            let paths = check_paths(&format!("{field}.paths"), d.paths)?;
            let recovery_paths = check_paths(&format!("{field}.recovery_paths"), d.recovery_paths)?;
            for (j, r) in recovery_paths.iter().enumerate() {
                if !starts_with_any(&paths, r.iter().map(Vec::as_slice)) {
                    return Err(invalid(
                        format!("{field}.recovery_paths[{j}]"),
                        "must lie within one of `paths` (recovery narrows, never widens)",
                    ));
                }
            }
            let max_payload = d.max_payload.unwrap_or(0);
            let max_payload = usize::try_from(max_payload)
                .ok()
                .filter(|&p| p <= crate::coap::codec::MAX_DATAGRAM)
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.max_payload"),
                        format!(
                            "{max_payload} is over the datagram limit {}",
                            crate::coap::codec::MAX_DATAGRAM
                        ),
                    )
                })?;
            let rate = Rate::checked(
                &field,
                "datagrams_per_second",
                (d.datagrams_per_second, d.bytes_per_second),
                section,
                MAX_DATAGRAM as u64,
            )?;
            devices.push(CoapDevice {
                name: d.name,
                source,
                methods,
                paths,
                recovery_paths,
                max_payload,
                refusal: d.refusal,
                rate,
            });
        }
        Ok(Self {
            exchange_lifetime: Duration::from_secs(lifetime),
            blocks,
            devices,
        })
    }
}

/// Uri-Path prefixes: at most `MAX_PATH_SEGMENTS` segments of at most
/// `MAX_SEGMENT` bytes, no `/` inside a segment.
fn check_paths(field: &str, list: Vec<Vec<String>>) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut out = Vec::with_capacity(list.len());
    for (j, p) in list.into_iter().enumerate() {
        if p.len() > MAX_PATH_SEGMENTS || p.iter().any(|s| s.len() > MAX_SEGMENT) {
            return Err(invalid(
                format!("{field}[{j}]"),
                format!("at most {MAX_PATH_SEGMENTS} segments of at most {MAX_SEGMENT} bytes"),
            ));
        }
        if p.iter().any(|s| s.contains('/')) {
            return Err(invalid(
                format!("{field}[{j}]"),
                "a segment contains `/`: write each segment as its own string",
            ));
        }
        out.push(p.into_iter().map(String::into_bytes).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const GOOD: &str = r#"
        [coap]
        exchange_lifetime_secs = 5
        [[coap.devices]]
        name = "net"
        source = "10.0.0.0/8"
        paths = [["time"]]
        [[coap.devices]]
        name = "one"
        source = "10.1.2.3"
        methods = ["GET", "put"]
        paths = [["sensors", "temp"], []]
        max_payload = 64
        refusal = "drop"
    "#;

    fn err(text: &str) -> String {
        Policy::from_toml(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn devices_by_source_with_defaults() {
        let p = Policy::from_toml(GOOD, "t").unwrap();
        let c = &p.coap;
        assert_eq!(c.exchange_lifetime, Duration::from_secs(5));
        let one = c.device_for("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(one.name, "one");
        assert_eq!(one.methods, [Method::Get, Method::Put]);
        assert_eq!((one.max_payload, one.refusal), (64, Refusal::Drop));
        let net = c.device_for("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(net.methods, [Method::Get]);
        assert_eq!((net.max_payload, net.refusal), (0, Refusal::Forbidden));
        assert!(c.device_for("192.168.1.1".parse().unwrap()).is_none());
        assert_eq!(
            Policy::from_toml("", "t").unwrap().coap.exchange_lifetime,
            EXCHANGE_LIFETIME
        );
    }

    #[test]
    fn recovery_paths_must_lie_within_the_allowed_paths() {
        let policy = |recovery: &str| {
            Policy::from_toml(
                &format!(
                    "[[coap.devices]]\nname = \"d\"\nsource = \"127.0.0.1\"\npaths = [[\"fw\"], [\"data\"]]\nrecovery_paths = {recovery}\n"
                ),
                "t",
            )
        };
        let ok = policy("[[\"fw\", \"image\"]]").unwrap();
        let d = &ok.coap.devices()[0];
        assert!(d.allows_recovery([b"fw".as_slice(), b"image", b"1"]));
        assert!(!d.allows_recovery([b"data".as_slice()]));
        let e = policy("[[\"admin\"]]").unwrap_err().to_string();
        assert!(e.contains("coap.devices[0].recovery_paths[0]"), "{e}");
    }

    #[test]
    fn paths_match_whole_segments() {
        let p = Policy::from_toml(GOOD, "t").unwrap();
        let net = p.coap.device_for("10.9.9.9".parse().unwrap()).unwrap();
        let path = |s: &'static [&'static str]| s.iter().map(|s| s.as_bytes());
        assert!(net.allows_path(path(&["time"])));
        assert!(net.allows_path(path(&["time", "x"])));
        assert!(!net.allows_path(path(&["timex"])));
        assert!(!net.allows_path(path(&[])));
        assert!(!net.allows_path(path(&["sensors", "time"])));
        let one = p.coap.device_for("10.1.2.3".parse().unwrap()).unwrap();
        // The empty prefix allows everything, root included.
        assert!(one.allows_path(path(&[])));
        assert!(one.allows_path(path(&["anything"])));
    }

    #[test]
    fn errors_name_the_field() {
        let dev = |extra: &str| {
            format!("[[coap.devices]]\nname = \"a\"\nsource = \"127.0.0.1\"\n{extra}")
        };
        assert!(err(&dev("methods = [\"BREW\"]")).contains("coap.devices[0].methods[0]"));
        assert!(err(&dev("paths = [[\"a/b\"]]")).contains("coap.devices[0].paths[0]"));
        let long = format!("paths = [[\"{}\"]]", "x".repeat(256));
        assert!(err(&dev(&long)).contains("paths[0]"));
        assert!(err(&dev("max_payload = 5000")).contains("max_payload"));
        assert!(err(&dev("refusal = \"reset\"")).contains("refusal"));
        assert!(err(&dev("colour = 1")).contains("colour"));
        assert!(err(&dev("").replace("127.0.0.1", "nope")).contains("source"));
        let twice = format!("{}\n{}", dev(""), dev("").replace("\"a\"", "\"b\""));
        assert!(err(&twice).contains("coap.devices[1].source"));
        assert!(err("[coap]\nexchange_lifetime_secs = 0").contains("exchange_lifetime_secs"));
        assert!(err("[coap]\nbogus = 1").contains("bogus"));
        assert!(err("[coap]\ndatagrams_per_second = 0").contains("coap.datagrams_per_second"));
        assert!(err("[coap]\nbytes_per_second = 100").contains("coap.bytes_per_second"));
        assert!(err("[coap]\nblock_timeout_secs = 0").contains("coap.block_timeout_secs"));
        assert!(err("[coap]\nmax_block_transfers = 0").contains("coap.max_block_transfers"));
        assert!(err("[coap]\nmax_block_bytes = 10").contains("coap.max_block_bytes"));
        assert!(
            err(&dev("datagrams_per_second = 0")).contains("coap.devices[0].datagrams_per_second")
        );
    }

    #[test]
    fn rates_and_block_caps() {
        let p = Policy::from_toml(
            &GOOD
                .replace(
                    "exchange_lifetime_secs = 5",
                    "exchange_lifetime_secs = 5\ndatagrams_per_second = 7\nmax_block_transfers = 2",
                )
                .replace(
                    "refusal = \"drop\"",
                    "refusal = \"drop\"\ndatagrams_per_second = 3",
                ),
            "t",
        )
        .unwrap();
        let c = &p.coap;
        assert_eq!(c.blocks.max_transfers, 2);
        assert_eq!(c.blocks.timeout, BlockLimits::default().timeout);
        let net = c.device_for("10.9.9.9".parse().unwrap()).unwrap();
        assert_eq!(
            (net.rate.messages_per_second, net.rate.bytes_per_second),
            (7, 16_384)
        );
        let one = c.device_for("10.1.2.3".parse().unwrap()).unwrap();
        assert_eq!(one.rate.messages_per_second, 3);
    }
}
