//! Where the gateway reports what it refused and why.
//!
//! The gateway only knows the small [`Audit`] trait; the binary plugs in
//! the store's tamper-evident event log (clause 5.2.5.2.2) by mapping a
//! [`GatewayEvent`] to a log event. [`TracingAudit`] logs through
//! `tracing`; [`MemoryAudit`] keeps events for tests and dry runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::mqtt::inspect::ViolationKind;

/// Event actions, stable strings for the event log.
pub mod action {
    /// A TLS handshake failed (no certificate, unknown CA, bad version).
    pub const TLS_REFUSED: &str = "gateway.tls.refused";
    /// A packet was refused and the connection closed.
    pub const MQTT_REFUSED: &str = "gateway.mqtt.refused";
    /// A device connected and its CONNECT was forwarded.
    pub const MQTT_CONNECTED: &str = "gateway.mqtt.connected";
    /// A Modbus request (or server response) was refused.
    pub const MODBUS_REFUSED: &str = "gateway.modbus.refused";
    /// A Modbus device connected and was bound to a policy device.
    pub const MODBUS_CONNECTED: &str = "gateway.modbus.connected";
    /// A CoAP datagram from a device was refused (malformed, unknown
    /// source, not allowed, duplicate).
    pub const COAP_REFUSED: &str = "gateway.coap.refused";
    /// A CoAP server response was not relayed (malformed, unmatched, or
    /// over the amplification limit).
    pub const COAP_RESPONSE_DROPPED: &str = "gateway.coap.response.dropped";
    /// A device's behaviour deviated from its learned baseline (the
    /// detail names the kind, the score and the evidence).
    pub const ANOMALY: &str = "gateway.anomaly";
    /// A device was put in quarantine.
    pub const QUARANTINE_START: &str = "gateway.quarantine.start";
    /// An operator put a device in quarantine.
    pub const QUARANTINE_MANUAL: &str = "gateway.quarantine.manual";
    /// An operator released a device from quarantine.
    pub const QUARANTINE_RELEASE: &str = "gateway.quarantine.release";
    /// A connection was closed for silence: no first packet before the
    /// deadline is a refusal, silence past the keep-alive or idle timeout
    /// is this.
    pub const IDLE_TIMEOUT: &str = "gateway.idle.closed";
    /// An incomplete CoAP block-wise transfer expired.
    pub const COAP_BLOCK_EXPIRED: &str = "gateway.coap.block.expired";
    /// The upstream broker could not be reached.
    pub const UPSTREAM_UNAVAILABLE: &str = "gateway.upstream.unavailable";
}

/// One thing the gateway did about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEvent {
    /// One of the [`action`] strings.
    pub action: &'static str,
    /// The device's policy name, when known.
    pub device: Option<String>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The rule broken, for refusals.
    pub reason: Option<ViolationKind>,
    /// Detail for the operator (never sent to the device).
    pub detail: String,
}

/// A sink for gateway events. Called inline on the connection's task:
/// implementations should be quick (hand off to a writer thread if they
/// do I/O).
pub trait Audit: std::fmt::Debug + Send + Sync {
    /// Records one event.
    fn record(&self, event: GatewayEvent);
}

/// Logs events with `tracing`: refusals and anomalies at `warn`, the rest
/// at `info`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAudit;

impl Audit for TracingAudit {
    fn record(&self, e: GatewayEvent) {
        let reason = e.reason.map(ViolationKind::as_str).unwrap_or("-");
        let device = e.device.as_deref().unwrap_or("-");
        if e.reason.is_some() || e.action == action::TLS_REFUSED || e.action == action::ANOMALY {
            tracing::warn!(action = e.action, device, peer = %e.peer, reason, detail = %e.detail, "gateway");
        } else {
            tracing::info!(action = e.action, device, peer = %e.peer, detail = %e.detail, "gateway");
        }
    }
}

/// Keeps every event in memory.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    events: Mutex<Vec<GatewayEvent>>,
}

impl MemoryAudit {
    /// The events so far.
    pub fn events(&self) -> Vec<GatewayEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Audit for MemoryAudit {
    fn record(&self, event: GatewayEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

/// Hands every event to two sinks, e.g. the event log and `tracing`.
#[derive(Debug, Clone)]
pub struct Tee(pub Arc<dyn Audit>, pub Arc<dyn Audit>);

impl Audit for Tee {
    fn record(&self, event: GatewayEvent) {
        self.0.record(event.clone());
        self.1.record(event);
    }
}
