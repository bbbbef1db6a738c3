//! The inline CoAP proxy: UDP on both legs (no DTLS in this slice),
//! devices identified by source address, every datagram parsed and
//! checked before it is forwarded, every response matched to a request
//! and held to the amplification limit.
//!
//! One task owns all state (the device socket, the duplicate window and
//! each device's outstanding requests), so nothing is locked. Each device
//! gets its own upstream socket, connected to the server: the kernel then
//! drops datagrams from anyone but the server, and a response's socket
//! names the device it is for without rewriting message ids or tokens. A
//! small task per upstream socket hands responses to the owner task over
//! a bounded channel.
//!
//! Limits, per device: a datagram and byte rate, checked before parsing
//! (UDP allows no back-pressure, so a datagram over the rate is dropped
//! and is a strike); strikes lead to quarantine, during which the
//! device's datagrams are dropped unlogged (the quarantine event says
//! why; logging each dropped datagram would let a flood fill the log),
//! except requests on its `recovery_paths`. Block-wise transfers are capped and expire ([`Transfers`]):
//! a sweep every second logs and strikes each transfer that stalled.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::blockwise::Transfers;
use super::codec::{self, MAX_DATAGRAM, Message, MessageType};
use super::inspect::{DEFAULT_DEDUP_CAPACITY, Dedup, Exchanges, Forward, Refused, check_request};
use crate::Quarantine;
use crate::anomaly::{self, Detector, DeviceDetector, What};
use crate::audit::{Audit, GatewayEvent, action};
use crate::limit::{DeviceLimiter, RateLimits};
use crate::metrics::{DeviceCounters, Metrics, Protocol};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::coap::Refusal;
use crate::policy::{Policy, PolicyHandle};

/// What the CoAP proxy needs.
#[derive(Debug, Clone)]
pub struct CoapProxyConfig {
    /// The CoAP server.
    pub upstream: SocketAddr,
    /// The policy in force (its `[coap]` part).
    pub policy: Arc<PolicyHandle>,
    /// Where events go.
    pub audit: Arc<dyn Audit>,
    /// Per-device counters, shared with the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Quarantine state, shared with the other proxies and the admin
    /// endpoint; [`Quarantine::open`] gives one that survives a restart.
    pub quarantine: Arc<Quarantine>,
}

/// The CoAP gateway.
#[derive(Debug)]
pub struct CoapProxy {
    config: CoapProxyConfig,
    limits: RateLimits,
    quarantine: Arc<Quarantine>,
    anomaly: Detector,
}

/// How often stalled block-wise transfers are looked for.
const BLOCK_SWEEP: Duration = Duration::from_secs(1);

/// One device source address's upstream leg.
struct Peer {
    device: String,
    upstream: Arc<UdpSocket>,
    exchanges: Exchanges,
    /// Its block-wise transfers in progress.
    blocks: Transfers,
    /// The device's counters, resolved when the leg is made.
    counters: Arc<DeviceCounters>,
    reader: JoinHandle<()>,
    last_seen: Instant,
    /// The device's behaviour baseline, resolved when the leg is made.
    anomaly: DeviceDetector,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The owner task's state.
struct State {
    device_socket: UdpSocket,
    peers: HashMap<SocketAddr, Peer>,
    dedup: Dedup,
    responses: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    /// Every device's limiter, held so [`RateLimits`] never sweeps it as
    /// unused (it keeps only limiters someone holds). Bounded by the
    /// policy's device names.
    limiters: HashMap<String, Arc<Mutex<DeviceLimiter>>>,
}

impl CoapProxy {
    /// A proxy.
    pub fn new(config: CoapProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            quarantine: config.quarantine.clone(),
            config,
            limits: RateLimits::default(),
            anomaly: Detector::default(),
        })
    }

    /// Behaviour baselines of the devices seen (reset one after a
    /// legitimate change).
    pub fn anomaly(&self) -> &Detector {
        &self.anomaly
    }

    /// Feeds a request about to be forwarded to the device's baseline and
    /// reports what deviated ([`crate::anomaly`]).
    fn observe(
        &self,
        watch: &DeviceDetector,
        policy: &Policy,
        peer: SocketAddr,
        msg: &Message<'_>,
        at: Instant,
    ) {
        let found = watch.observe_at(&policy.anomaly, What::Coap(msg), msg.payload.len(), at);
        if !found.is_empty() {
            anomaly::report(
                &*self.config.audit,
                &self.quarantine,
                policy.quarantine.duration,
                peer,
                found,
            );
        }
    }

    /// Quarantine state of CoAP devices: query, release, or quarantine by
    /// hand.
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// Records a strike against `device`; true if it started a quarantine
    /// (recorded as an event).
    fn strike(&self, device: &str, peer: SocketAddr, kind: ViolationKind) -> bool {
        let rule = self.config.policy.load().quarantine;
        self.quarantine
            .strike_reported(&*self.config.audit, &rule, device, peer, kind)
    }

    /// Drops `leg`'s block-wise transfers that stalled, each with an
    /// event and a strike.
    fn expire_blocks(&self, peer: SocketAddr, leg: &mut Peer, now: Instant) {
        for gone in leg.blocks.expire(now) {
            let timeout = self.config.policy.load().coap.blocks.timeout;
            self.event(
                action::COAP_BLOCK_EXPIRED,
                Some(&leg.device),
                peer,
                Violation::new(
                    ViolationKind::Protocol,
                    format!(
                        "{} incomplete after {timeout:?} ({} bytes received): state dropped",
                        gone.what, gone.received
                    ),
                ),
            );
            self.strike(&leg.device, peer, ViolationKind::Protocol);
        }
    }

    /// Serves devices on `socket` until the returned future is dropped;
    /// dropping it also closes every upstream socket.
    pub async fn serve(self: Arc<Self>, socket: UdpSocket) {
        let (tx, mut rx) = mpsc::channel(256);
        let lifetime = self.config.policy.load().coap.exchange_lifetime;
        let mut state = State {
            device_socket: socket,
            peers: HashMap::new(),
            dedup: Dedup::new(lifetime, DEFAULT_DEDUP_CAPACITY),
            responses: tx,
            limiters: HashMap::new(),
        };
        // One byte more than the cap, so an oversized datagram is seen
        // as oversized rather than silently cut.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut sweep = tokio::time::interval(BLOCK_SWEEP);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    let now = Instant::now();
                    for (peer, leg) in &mut state.peers {
                        self.expire_blocks(*peer, leg, now);
                    }
                }
                got = state.device_socket.recv_from(&mut buf) => match got {
                    Ok((n, peer)) => {
                        let bytes = buf.get(..n).unwrap_or_default();
                        self.handle_device_datagram(&mut state, peer, bytes).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "coap recv failed"),
                },
                Some((peer, bytes)) = rx.recv() => self.handle_server_datagram(&mut state, peer, &bytes).await,
            }
        }
    }

    fn event(&self, action: &'static str, device: Option<&str>, peer: SocketAddr, v: Violation) {
        if action == action::COAP_REFUSED {
            self.config
                .metrics
                .device(Protocol::Coap, device.unwrap_or(""))
                .refused(v.kind);
        }
        self.config.audit.record(GatewayEvent {
            action,
            device: device.map(str::to_owned),
            peer,
            reason: Some(v.kind),
            detail: v.detail,
        });
    }

    async fn handle_device_datagram(&self, state: &mut State, peer: SocketAddr, bytes: &[u8]) {
        let policy = self.config.policy.load();
        let Some(device) = policy.coap.device_for(peer.ip()) else {
            self.event(
                action::COAP_REFUSED,
                None,
                peer,
                Violation::new(
                    ViolationKind::UnknownDevice,
                    format!("no coap device for source {}", peer.ip()),
                ),
            );
            return;
        };
        let name = device.name.as_str();
        let now = Instant::now();
        let quarantined = self.quarantine.remaining(name, now).is_some();
        if quarantined && device.recovery_paths.is_empty() {
            return;
        }
        // Before parsing: a flood of garbage costs the flooder its rate.
        let limiter = self.limits.limiter(name, device.rate);
        let pause = limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .publish(bytes.len(), now);
        if !state.limiters.contains_key(name) {
            state.limiters.insert(name.to_owned(), limiter);
        }
        if !pause.is_zero() {
            self.event(
                action::COAP_REFUSED,
                Some(name),
                peer,
                Violation::new(
                    ViolationKind::RateExceeded,
                    format!(
                        "over {} datagrams/s or {} bytes/s: dropped",
                        device.rate.messages_per_second, device.rate.bytes_per_second
                    ),
                ),
            );
            self.strike(name, peer, ViolationKind::RateExceeded);
            return;
        }
        let msg = match codec::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                let v = Refused::Malformed(e).violation();
                self.event(action::COAP_REFUSED, Some(name), peer, v);
                return;
            }
        };
        // In quarantine only requests on the recovery path pass; the rest
        // is dropped unlogged, like the whole traffic of a device without
        // one (a flood must not fill the event log).
        if quarantined && !(msg.code.method().is_some() && device.allows_recovery(msg.path())) {
            return;
        }
        let forward = match check_request(device, &msg) {
            Ok(f) => f,
            Err(refused) => {
                self.event(action::COAP_REFUSED, Some(name), peer, refused.violation());
                if matches!(refused, Refused::Denied(_))
                    && msg.mtype == MessageType::Confirmable
                    && device.refusal == Refusal::Forbidden
                {
                    let _ = state
                        .device_socket
                        .send_to(&codec::forbidden(&msg), peer)
                        .await;
                }
                return;
            }
        };
        let lifetime = policy.coap.exchange_lifetime;
        if matches!(forward, Forward::Request(_)) {
            state.dedup.set_lifetime(lifetime);
            if let Err(refused) = state.dedup.check(peer, msg.message_id, now) {
                self.event(action::COAP_REFUSED, Some(name), peer, refused.violation());
                return;
            }
        }
        let Some(leg) = self
            .peer(state, peer, name, policy.limits.max_connections, now)
            .await
        else {
            return;
        };
        if matches!(forward, Forward::Request(_)) {
            self.expire_blocks(peer, leg, now);
            if let Err(refused) = leg.blocks.request(&msg, &policy.coap.blocks, now) {
                self.event(action::COAP_REFUSED, Some(name), peer, refused.violation());
                return;
            }
        }
        if matches!(forward, Forward::Request(_))
            && let Err(refused) = leg.exchanges.expect(&msg, bytes.len(), lifetime, now)
        {
            self.event(action::COAP_REFUSED, Some(name), peer, refused.violation());
            return;
        }
        if matches!(forward, Forward::Request(_)) {
            self.observe(&leg.anomaly, &policy, peer, &msg, now);
        }
        leg.last_seen = now;
        if leg.upstream.send(bytes).await.is_ok() {
            leg.counters.accepted(bytes.len());
        } else {
            self.config.audit.record(GatewayEvent {
                action: action::UPSTREAM_UNAVAILABLE,
                device: Some(name.to_owned()),
                peer,
                reason: None,
                detail: format!("coap server {} unreachable", self.config.upstream),
            });
        }
    }

    /// The upstream leg for `peer`, made on first use. A leg made for a
    /// device the policy no longer names for `peer` is replaced. Legs are
    /// bounded by `limits.max_connections`; when full, legs idle for an
    /// exchange lifetime are closed first.
    async fn peer<'s>(
        &self,
        state: &'s mut State,
        peer: SocketAddr,
        device: &str,
        max: usize,
        now: Instant,
    ) -> Option<&'s mut Peer> {
        if state.peers.get(&peer).is_some_and(|p| p.device != device) {
            state.peers.remove(&peer);
        }
        if !state.peers.contains_key(&peer) {
            if state.peers.len() >= max {
                let lifetime = self.config.policy.load().coap.exchange_lifetime;
                state
                    .peers
                    .retain(|_, p| now.duration_since(p.last_seen) < lifetime);
            }
            if state.peers.len() >= max {
                self.event(
                    action::COAP_REFUSED,
                    Some(device),
                    peer,
                    Violation::new(
                        ViolationKind::RateExceeded,
                        format!("{max} coap peers active"),
                    ),
                );
                return None;
            }
            let upstream = self.config.upstream;
            let local = match upstream.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let socket = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
                Ok(s) if s.connect(upstream).await.is_ok() => Arc::new(s),
                _ => {
                    self.config.audit.record(GatewayEvent {
                        action: action::UPSTREAM_UNAVAILABLE,
                        device: Some(device.to_owned()),
                        peer,
                        reason: None,
                        detail: format!("no socket to coap server {upstream}"),
                    });
                    return None;
                }
            };
            let reader = tokio::spawn(read_upstream(socket.clone(), peer, state.responses.clone()));
            state.peers.insert(
                peer,
                Peer {
                    device: device.to_owned(),
                    upstream: socket,
                    exchanges: Exchanges::default(),
                    blocks: Transfers::default(),
                    counters: self.config.metrics.device(Protocol::Coap, device),
                    reader,
                    last_seen: now,
                    anomaly: self.anomaly.device(device),
                },
            );
        }
        state.peers.get_mut(&peer)
    }

    async fn handle_server_datagram(&self, state: &mut State, peer: SocketAddr, bytes: &[u8]) {
        let Some(leg) = state.peers.get_mut(&peer) else {
            return;
        };
        let name = leg.device.clone();
        let checked = codec::parse(bytes)
            .map_err(|e| Violation::new(ViolationKind::Malformed, format!("server: {e}")))
            .and_then(|msg| {
                leg.exchanges
                    .check_response(&msg, bytes.len(), Instant::now())?;
                leg.blocks.response(&msg);
                Ok(())
            });
        match checked {
            Ok(()) => {
                if state.device_socket.send_to(bytes, peer).await.is_ok() {
                    leg.counters.sent(bytes.len());
                }
            }
            Err(v) => self.event(action::COAP_RESPONSE_DROPPED, Some(&name), peer, v),
        }
    }
}

/// Hands every datagram from the server on `socket` to the owner task.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    to_owner: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                if to_owner.send((peer, bytes)).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable from a down server shows up here;
            // keep reading.
            Err(e) => tracing::debug!(error = %e, "coap upstream recv failed"),
        }
    }
}
