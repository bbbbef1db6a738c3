//! Bulwark's gateway: protocol-aware, inline protection of the devices
//! behind it (issue 6; clause 5.2.6.2 of ISO/IEC 27402 applied to device
//! traffic). This slice covers MQTT 3.1.1 and 5, Modbus TCP and CoAP.
//!
//! Main types, outermost first:
//! - [`MqttProxy`]: accepts devices over mutual TLS, connects each to the
//!   broker over TCP, and forwards a client packet only after inspection.
//! - [`Session`]: the inspection layer for one connection: protocol state
//!   (CONNECT first and once, no server-only packets, AUTH only on MQTT 5)
//!   and the device's policy (topics, QoS, retain, payload size and
//!   format, client id bound to the certificate).
//! - [`mqtt::codec`]: framing and parsing, limits enforced before
//!   allocation.
//! - [`Policy`] / [`PolicyHandle`]: the TOML policy, validated, swapped
//!   whole on reload.
//! - [`limit`]: per-device token buckets and [`Quarantine`].
//! - [`Audit`]: where refusals and quarantines are reported.
//! - [`ModbusProxy`] over [`modbus::codec`] (MBAP framing, exact PDU
//!   lengths) and [`modbus::inspect`] (per-device unit ids, function codes
//!   and address ranges from the policy's `[modbus]` part; responses
//!   matched to outstanding requests). Plain TCP: devices are known by
//!   source address.
//! - [`CoapProxy`] over [`coap::codec`] (strict RFC 7252 datagram parser
//!   with caps before allocation) and [`coap::inspect`] (per-device
//!   methods, Uri-Path prefixes and payload size from the policy's
//!   `[coap]` part; duplicate message ids; responses matched to requests
//!   and held to 3x the request size unless it carried Echo). Plain UDP:
//!   devices are known by source address.
//!
//! ```no_run
//! # async fn run(tls: std::sync::Arc<rustls::ServerConfig>) -> gateway::Result<()> {
//! use std::sync::Arc;
//! use gateway::{MqttProxy, Policy, PolicyHandle, ProxyConfig, TracingAudit};
//!
//! let policy = Policy::load("/etc/bulwark/gateway.toml".as_ref())?;
//! let proxy = MqttProxy::new(ProxyConfig {
//!     tls, // identity::tls::server_config(&gateway_identity, &[device_ca])
//!     upstream: "127.0.0.1:1883".parse().expect("address"),
//!     policy: Arc::new(PolicyHandle::new(policy)),
//!     audit: Arc::new(TracingAudit),
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8883")
//!     .await
//!     .map_err(|source| gateway::Error::Io { what: "binding 8883", source })?;
//! proxy.serve(listener).await;
//! # Ok(()) }
//! ```
//!
//! Design decisions:
//! - Codec and policy know no sockets (the style guide's "frame codecs
//!   without sockets, policy as layers over frames"): the same `Session`
//!   serves the proxy, the benchmark and the property tests, and the
//!   decoder is checked for panics on arbitrary bytes.
//! - Limits before allocation: the remaining length is checked against
//!   the policy maximum as soon as its varint is complete; the read buffer
//!   grows only by bytes that arrived.
//! - Default deny: a certificate no device is bound to, a topic no rule
//!   names, an unset QoS/retain rule: all refused. `%c`/`%u` substitution
//!   never widens a filter (a client id with `/`, `+` or `#` matches
//!   nothing).
//! - Refusal closes the connection; MQTT 5 clients learn why through the
//!   reason code only (CONNACK before the session, DISCONNECT after),
//!   detail goes to the [`Audit`] sink, never to the client.
//! - The broker is trusted: broker→device bytes are copied, not parsed.
//!   SUBSCRIBE checks bound what it can deliver.
//! - Policy reload swaps an `Arc` (arc-swap); sessions notice the new
//!   pointer on their next packet and re-resolve their rules, so
//!   still-allowed connections stay up and newly forbidden ones close.
//! - Own token buckets rather than `governor`: the buckets run on
//!   `tokio::time::Instant`, so rate and quarantine tests use
//!   `tokio::time::pause` instead of sleeping.
//! - TCP_NODELAY on both legs (design.md: Nagle plus delayed ACKs cost
//!   20–40 ms at QoS 0).

pub mod audit;
pub mod coap;
mod error;
pub mod limit;
pub mod modbus;
pub mod mqtt;
pub mod policy;
pub mod proxy;
pub mod topic;

pub use audit::{Audit, GatewayEvent, MemoryAudit, TracingAudit};
pub use coap::proxy::{CoapProxy, CoapProxyConfig};
pub use error::{Error, Result};
pub use limit::{Quarantine, Quarantined};
pub use modbus::proxy::{ModbusProxy, ModbusProxyConfig};
pub use mqtt::inspect::{Inspected, PeerIdentity, Session, Violation, ViolationKind};
pub use policy::{Policy, PolicyHandle};
pub use proxy::{MqttProxy, ProxyConfig};
