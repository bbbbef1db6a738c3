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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::codec::{self, MAX_DATAGRAM, MessageType};
use super::inspect::{DEFAULT_DEDUP_CAPACITY, Dedup, Exchanges, Forward, Refused, check_request};
use crate::audit::{Audit, GatewayEvent, action};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::PolicyHandle;
use crate::policy::coap::Refusal;

/// What the CoAP proxy needs.
#[derive(Debug, Clone)]
pub struct CoapProxyConfig {
    /// The CoAP server.
    pub upstream: SocketAddr,
    /// The policy in force (its `[coap]` part).
    pub policy: Arc<PolicyHandle>,
    /// Where events go.
    pub audit: Arc<dyn Audit>,
}

/// The CoAP gateway.
#[derive(Debug)]
pub struct CoapProxy {
    config: CoapProxyConfig,
}

/// One device source address's upstream leg.
struct Peer {
    device: String,
    upstream: Arc<UdpSocket>,
    exchanges: Exchanges,
    reader: JoinHandle<()>,
    last_seen: Instant,
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
}

impl CoapProxy {
    /// A proxy.
    pub fn new(config: CoapProxyConfig) -> Arc<Self> {
        Arc::new(Self { config })
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
        };
        // One byte more than the cap, so an oversized datagram is seen
        // as oversized rather than silently cut.
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            tokio::select! {
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
        let msg = match codec::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                let v = Refused::Malformed(e).violation();
                self.event(action::COAP_REFUSED, Some(name), peer, v);
                return;
            }
        };
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
        let now = Instant::now();
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
        if matches!(forward, Forward::Request(_))
            && let Err(refused) = leg.exchanges.expect(&msg, bytes.len(), lifetime, now)
        {
            self.event(action::COAP_REFUSED, Some(name), peer, refused.violation());
            return;
        }
        leg.last_seen = now;
        if leg.upstream.send(bytes).await.is_err() {
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
                    reader,
                    last_seen: now,
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
                    .check_response(&msg, bytes.len(), Instant::now())
            });
        match checked {
            Ok(()) => {
                let _ = state.device_socket.send_to(bytes, peer).await;
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
