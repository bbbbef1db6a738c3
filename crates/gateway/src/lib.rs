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
//! - [`limit`]: per-device token buckets.
//! - [`quarantine`]: strike counting and the quarantined set
//!   ([`Quarantine`]), kept in a state file across restarts; a
//!   quarantined MQTT device may use only its policy's `recovery` topics.
//! - [`connections`]: per-device admission of TCP connections (attempts
//!   per minute against flapping, open connections per device), shared by
//!   the MQTT and Modbus proxies.
//! - [`Audit`]: where refusals and quarantines are reported;
//!   [`EventLogAudit`] appends them to the store's tamper-evident event
//!   log from a writer thread.
//! - [`metrics`]: per-device, per-protocol counters ([`Metrics`]) in the
//!   Prometheus text format; [`admin`]: the operator's HTTP endpoint
//!   (`GET /metrics`, `GET /quarantine`, manual quarantine and release),
//!   for loopback or a management interface only.
//! - [`anomaly`]: per-device behaviour baselines (activities, message
//!   size and rate, hours of the day) learned over the policy's
//!   `[anomaly]` window; deviations become `gateway.anomaly` events and,
//!   if the policy says so, quarantine. All three proxies feed it every
//!   message they forward.
//! - [`ModbusProxy`] over [`modbus::codec`] (MBAP framing, exact PDU
//!   lengths) and [`modbus::inspect`] (per-device unit ids, function codes
//!   and address ranges from the policy's `[modbus]` part; responses
//!   matched to outstanding requests). Plain TCP: devices are known by
//!   source address.
//! - [`CoapProxy`] over [`coap::codec`] (strict RFC 7252 datagram parser
//!   with caps before allocation) and [`coap::inspect`] (per-device
//!   methods, Uri-Path prefixes and payload size from the policy's
//!   `[coap]` part; duplicate message ids; responses matched to requests
//!   and held to 3x the request size unless it carried Echo) and
//!   [`coap::blockwise`] (Block1/Block2 transfers capped per device and
//!   expired when they stall). Plain UDP: devices are known by source
//!   address.
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
//!     metrics: Arc::new(gateway::Metrics::default()),
//!     quarantine: Arc::new(gateway::Quarantine::open("/var/lib/bulwark/gateway".as_ref())?),
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8883")
//!     .await
//!     .map_err(|source| gateway::Error::Io { what: "binding 8883", source })?;
//! proxy.serve(listener).await;
//! # Ok(()) }
//! ```
//!
//! Design decisions:
//! - Anomaly detection watches what the policy already allowed: it adds
//!   evidence (and optionally quarantine), never a per-packet refusal,
//!   because a learned baseline is a guess and the policy is the rule.
//!   Its default is alert only. The detector takes time as an argument
//!   (monotonic instant plus UTC hour), so its tests need no clock; each
//!   device's baseline has its own lock, resolved once per connection,
//!   and is bounded in size whatever the device sends.
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
//! - Over the rate: pause first, then strike. TCP connections stop being
//!   read for the time the debt takes to pay (back-pressure: the device's
//!   own socket buffers fill, nobody else waits) and each pause is a
//!   strike; UDP has no back-pressure, so a CoAP datagram over the rate is
//!   dropped and is a strike. Strikes lead to quarantine ([`Quarantine`]).
//! - Counters are atomics in a per-device struct that each connection
//!   (each CoAP source) resolves once; the registry's lock is taken on a
//!   device's first packet and on a scrape, never per packet. Labels are
//!   policy names, the protocol and the violation kind, so their number
//!   is bounded by the policy, not by what devices send. The exposition
//!   text is written by hand (six families and one escaping rule) rather
//!   than through `prometheus-client`, and checked by `promtool` in the
//!   tests.
//! - The event-log sink never blocks a connection: appends are fsynced,
//!   so they go to one writer thread over a bounded channel; when it is
//!   full the event is dropped and counted
//!   (`bulwark_gateway_audit_dropped_total`), and a warning is logged.
//! - Quarantine state is written (temporary file, fsync, rename, fsync
//!   of the directory) before a quarantine or release returns, as wall
//!   clock times; the logic stays on `tokio::time::Instant`. Entries that
//!   expired while the gateway was down are dropped on load; a file that
//!   does not parse stops the start with its path, since an empty set
//!   would release every quarantined device.
//! - Recovery path: a quarantined device is refused at CONNECT unless its
//!   rules name a `recovery` (topics it may still publish and subscribe
//!   to, e.g. the update service's), and then only with a clean session
//!   (a kept session would bring back subscriptions the gateway never
//!   sees again) and no will. A quarantine that starts mid-session still
//!   closes the connection; one that lifts gives the normal rules back
//!   at the next packet.
//! - Deadlines on every TCP connection: a complete first packet (CONNECT,
//!   first Modbus request) within the policy's time, then no silence past
//!   1.5x the MQTT keep-alive (MQTT §3.1.2.10; the policy's idle timeout
//!   for keep-alive 0) or Modbus's idle timeout. Only whole packets reset
//!   the clock, so a trickle of bytes does not hold a connection open.
//! - TCP_NODELAY on both legs (design.md: Nagle plus delayed ACKs cost
//!   20–40 ms at QoS 0).

pub mod admin;
pub mod anomaly;
pub mod audit;
pub mod coap;
pub mod config;
pub mod connections;
mod error;
pub mod event_log;
pub mod limit;
pub mod metrics;
pub mod modbus;
pub mod mqtt;
pub mod policy;
pub mod proxy;
pub mod quarantine;
pub mod topic;

pub use audit::{Audit, GatewayEvent, MemoryAudit, TracingAudit};
pub use coap::proxy::{CoapProxy, CoapProxyConfig};
pub use config::GatewayFile;
pub use error::{Error, Result};
pub use event_log::EventLogAudit;
pub use limit::{Quarantine, Quarantined};
pub use metrics::Metrics;
pub use modbus::proxy::{ModbusProxy, ModbusProxyConfig};
pub use mqtt::inspect::{Inspected, PeerIdentity, Session, Violation, ViolationKind};
pub use policy::{Policy, PolicyHandle};
pub use proxy::{MqttProxy, ProxyConfig};
