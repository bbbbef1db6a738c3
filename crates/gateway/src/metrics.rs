//! Per-device counters, rendered in the Prometheus text exposition
//! format (version 0.0.4).
//!
//! A proxy resolves a device's [`DeviceCounters`] once (per connection
//! for MQTT and Modbus, per source for CoAP) and then only touches its
//! atomics: the registry's lock is taken when a device is first seen and
//! when the endpoint is scraped, never per packet. Refusals go to a small
//! locked map per device: they are the cold path and end the connection
//! or the datagram anyway.
//!
//! Label values are device names from the policy (bounded by it, never
//! taken from the wire), the protocol and the [`ViolationKind`] name.
//! Traffic from a peer no device is bound to is counted under the empty
//! device name.
//!
//! Written by hand rather than with `prometheus-client`: the whole format
//! is six metric families and an escaping rule, and owning it keeps the
//! counters plain atomics in the proxies' own structs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::limit::Quarantined;
use crate::mqtt::inspect::ViolationKind;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which proxy counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// The MQTT proxy.
    Mqtt,
    /// The Modbus TCP proxy.
    Modbus,
    /// The CoAP proxy.
    Coap,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::Modbus => "modbus",
            Self::Coap => "coap",
        }
    }
}

/// The counters of one device on one protocol.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    accepted: AtomicU64,
    rate_limited: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicI64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl DeviceCounters {
    /// A packet, request or datagram of `bytes` bytes was forwarded
    /// upstream.
    pub fn accepted(&self, bytes: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `bytes` went from upstream to the device.
    pub fn sent(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A packet was refused for `kind`.
    pub fn refused(&self, kind: ViolationKind) {
        *self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind.as_str())
            .or_default() += 1;
    }

    /// The device went over its rate and was paused (or its request
    /// answered "busy").
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Packets forwarded so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Refusals for `kind` so far.
    pub fn refused_total(&self, kind: ViolationKind) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind.as_str())
            .copied()
            .unwrap_or(0)
    }
}

/// Holds one count in a device's open-connections gauge.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<DeviceCounters>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every device's counters, shared by the proxies and the endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    devices: Mutex<HashMap<(Protocol, String), Arc<DeviceCounters>>>,
    audit_dropped: AtomicU64,
}

impl Metrics {
    /// The counters of `device` on `protocol` (`""`: not identified).
    pub fn device(&self, protocol: Protocol, device: &str) -> Arc<DeviceCounters> {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(&(protocol, device.to_owned())) {
            return c.clone();
        }
        map.entry((protocol, device.to_owned()))
            .or_default()
            .clone()
    }

    /// An audit event was dropped because the writer was behind.
    pub fn audit_dropped(&self) {
        self.audit_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Audit events dropped so far.
    pub fn audit_dropped_total(&self) -> u64 {
        self.audit_dropped.load(Ordering::Relaxed)
    }

    /// The exposition text; `quarantined` is the quarantine list now (a
    /// gauge of 1 per device in it, 0 for other known devices).
    pub fn render(&self, quarantined: &[Quarantined]) -> String {
        let mut devices: Vec<_> = {
            let map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        devices.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(256 + devices.len() * 512);
        let labels =
            |p: Protocol, d: &str| format!("protocol=\"{}\",device=\"{}\"", p.as_str(), escape(d));

        family(
            &mut out,
            "bulwark_gateway_accepted_total",
            "counter",
            "Packets, requests or datagrams forwarded upstream after inspection.",
        );
        for ((p, d), c) in &devices {
            let v = c.accepted.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "bulwark_gateway_accepted_total{{{}}} {v}",
                labels(*p, d)
            );
        }
        family(
            &mut out,
            "bulwark_gateway_refused_total",
            "counter",
            "Packets, requests or datagrams refused, by the rule broken.",
        );
        for ((p, d), c) in &devices {
            let refused = c.refused.lock().unwrap_or_else(PoisonError::into_inner);
            for (reason, v) in refused.iter() {
                let _ = writeln!(
                    out,
                    "bulwark_gateway_refused_total{{{},reason=\"{}\"}} {v}",
                    labels(*p, d),
                    escape(reason)
                );
            }
        }
        family(
            &mut out,
            "bulwark_gateway_rate_limited_total",
            "counter",
            "Times a device went over its rate and was paused.",
        );
        for ((p, d), c) in &devices {
            let v = c.rate_limited.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "bulwark_gateway_rate_limited_total{{{}}} {v}",
                labels(*p, d)
            );
        }
        family(
            &mut out,
            "bulwark_gateway_bytes_total",
            "counter",
            "Bytes relayed: in = device to upstream, out = upstream to device.",
        );
        for ((p, d), c) in &devices {
            for (dir, v) in [("in", &c.bytes_in), ("out", &c.bytes_out)] {
                let _ = writeln!(
                    out,
                    "bulwark_gateway_bytes_total{{{},direction=\"{dir}\"}} {}",
                    labels(*p, d),
                    v.load(Ordering::Relaxed)
                );
            }
        }
        family(
            &mut out,
            "bulwark_gateway_connections",
            "gauge",
            "Connections open now (MQTT, Modbus).",
        );
        for ((p, d), c) in &devices {
            if *p != Protocol::Coap {
                let v = c.connections.load(Ordering::Relaxed).max(0);
                let _ = writeln!(out, "bulwark_gateway_connections{{{}}} {v}", labels(*p, d));
            }
        }
        family(
            &mut out,
            "bulwark_gateway_quarantined",
            "gauge",
            "1 while the device is quarantined.",
        );
        let mut names: BTreeMap<&str, u8> = devices
            .iter()
            .filter(|((_, d), _)| !d.is_empty())
            .map(|((_, d), _)| (d.as_str(), 0))
            .collect();
        for q in quarantined {
            names.insert(&q.device, 1);
        }
        for (d, v) in names {
            let _ = writeln!(
                out,
                "bulwark_gateway_quarantined{{device=\"{}\"}} {v}",
                escape(d)
            );
        }
        family(
            &mut out,
            "bulwark_gateway_audit_dropped_total",
            "counter",
            "Audit events dropped because the event log writer was behind.",
        );
        let _ = writeln!(
            out,
            "bulwark_gateway_audit_dropped_total {}",
            self.audit_dropped_total()
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the exposition format wants it: backslash, double
/// quote and line feed escaped.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut s = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_render_per_device_and_reason() {
        let m = Metrics::default();
        let a = m.device(Protocol::Mqtt, "unit \"7\"");
        a.accepted(10);
        a.accepted(5);
        a.sent(3);
        a.refused(ViolationKind::NotAuthorized);
        a.refused(ViolationKind::NotAuthorized);
        a.rate_limited();
        let guard = a.connection();
        assert!(Arc::ptr_eq(&a, &m.device(Protocol::Mqtt, "unit \"7\"")));
        m.device(Protocol::Coap, "plc")
            .refused(ViolationKind::Malformed);
        let text = m.render(&[Quarantined {
            device: "plc".into(),
            remaining: None,
            since: 0,
            until: None,
            reason: "test".into(),
            manual: true,
        }]);
        let l = "protocol=\"mqtt\",device=\"unit \\\"7\\\"\"";
        for line in [
            format!("bulwark_gateway_accepted_total{{{l}}} 2"),
            format!("bulwark_gateway_refused_total{{{l},reason=\"not-authorized\"}} 2"),
            format!("bulwark_gateway_rate_limited_total{{{l}}} 1"),
            format!("bulwark_gateway_bytes_total{{{l},direction=\"in\"}} 15"),
            format!("bulwark_gateway_bytes_total{{{l},direction=\"out\"}} 3"),
            format!("bulwark_gateway_connections{{{l}}} 1"),
            "bulwark_gateway_refused_total{protocol=\"coap\",device=\"plc\",reason=\"malformed\"} 1".into(),
            "bulwark_gateway_quarantined{device=\"plc\"} 1".into(),
            "bulwark_gateway_quarantined{device=\"unit \\\"7\\\"\"} 0".into(),
            "# TYPE bulwark_gateway_connections gauge".into(),
        ] {
            assert!(text.lines().any(|t| t == line), "missing {line}:\n{text}");
        }
        drop(guard);
        assert!(
            m.render(&[])
                .contains(&format!("bulwark_gateway_connections{{{l}}} 0"))
        );
    }
}
