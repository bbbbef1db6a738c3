//! The inline Modbus TCP proxy: plain TCP on both legs (Modbus TCP has no
//! TLS), devices identified by source address, every request framed and
//! checked before it is forwarded, every response matched to a request.
//!
//! One task per connection, owning both sockets: a `select!` over the two
//! reads, so the gateway's own exception answers and the server's
//! responses are written whole, one after the other, never interleaved.
//! Reading from a `TcpStream` is cancel-safe, so losing a `select!` race
//! loses no bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::codec::{self, Frame};
use super::inspect::{Refused, ResponseMatcher, check_request};
use crate::audit::{Audit, GatewayEvent, action};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::PolicyHandle;
use crate::policy::modbus::Refusal;

/// What the Modbus proxy needs.
#[derive(Debug, Clone)]
pub struct ModbusProxyConfig {
    /// The Modbus server (PLC, RTU gateway).
    pub upstream: SocketAddr,
    /// The policy in force (its `[modbus]` part).
    pub policy: Arc<PolicyHandle>,
    /// Where events go.
    pub audit: Arc<dyn Audit>,
}

/// The Modbus TCP gateway.
#[derive(Debug)]
pub struct ModbusProxy {
    config: ModbusProxyConfig,
}

/// Bytes read and not yet handled; never more than one frame plus one read.
struct Buffer {
    buf: Vec<u8>,
}

impl Buffer {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(2 * codec::MAX_FRAME),
        }
    }
}

impl ModbusProxy {
    /// A proxy.
    pub fn new(config: ModbusProxyConfig) -> Arc<Self> {
        Arc::new(Self { config })
    }

    /// Accepts connections until the returned future is dropped; dropping
    /// it also ends every connection it started.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let max = self.config.policy.load().limits.max_connections;
                        if tasks.len() >= max {
                            tracing::warn!(%peer, max, "modbus connection limit reached; refusing");
                            continue;
                        }
                        let this = self.clone();
                        tasks.spawn(async move { this.connection(tcp, peer).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    fn event(
        &self,
        action: &'static str,
        device: Option<&str>,
        peer: SocketAddr,
        violation: Option<Violation>,
        detail: String,
    ) {
        let (reason, detail) = match violation {
            Some(v) => (Some(v.kind), v.detail),
            None => (None, detail),
        };
        self.config.audit.record(GatewayEvent {
            action,
            device: device.map(str::to_owned),
            peer,
            reason,
            detail,
        });
    }

    async fn connection(self: Arc<Self>, mut client: TcpStream, peer: SocketAddr) {
        let policy = self.config.policy.load();
        let Some(device) = policy.modbus.device_for(peer.ip()) else {
            self.event(
                action::MODBUS_REFUSED,
                None,
                peer,
                Some(Violation::new(
                    ViolationKind::UnknownDevice,
                    format!("no modbus device for source {}", peer.ip()),
                )),
                String::new(),
            );
            return;
        };
        let name = device.name.clone();
        let _ = client.set_nodelay(true);
        let mut server = match timeout(
            policy.limits.connect_timeout,
            TcpStream::connect(self.config.upstream),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                self.event(
                    action::UPSTREAM_UNAVAILABLE,
                    Some(&name),
                    peer,
                    None,
                    format!("modbus server {} unreachable", self.config.upstream),
                );
                return;
            }
        };
        let _ = server.set_nodelay(true);
        drop(policy);
        self.event(
            action::MODBUS_CONNECTED,
            Some(&name),
            peer,
            None,
            String::new(),
        );
        if let Err(v) = self.relay(&mut client, &mut server, peer, &name).await {
            self.event(
                action::MODBUS_REFUSED,
                Some(&name),
                peer,
                Some(v),
                String::new(),
            );
        }
        let _ = timeout(Duration::from_secs(2), client.shutdown()).await;
        let _ = timeout(Duration::from_secs(2), server.shutdown()).await;
    }

    /// Relays until either side leaves (`Ok`) or the connection must close
    /// (`Err`, with why).
    async fn relay(
        &self,
        client: &mut TcpStream,
        server: &mut TcpStream,
        peer: SocketAddr,
        name: &str,
    ) -> Result<(), Violation> {
        let mut from_client = Buffer::new();
        let mut from_server = Buffer::new();
        let mut chunk_c = [0u8; codec::MAX_FRAME];
        let mut chunk_s = [0u8; codec::MAX_FRAME];
        let mut matcher = ResponseMatcher::default();
        let closed = |_| Violation::new(ViolationKind::Protocol, "write failed");
        loop {
            tokio::select! {
                read = client.read(&mut chunk_c) => {
                    let n = match read { Ok(n) if n > 0 => n, _ => return Ok(()) };
                    from_client.buf.extend_from_slice(chunk_c.get(..n).unwrap_or_default());
                    // Policy per batch of frames: a reload applies to open
                    // connections; a device no longer in it is closed.
                    let policy = self.config.policy.load();
                    let device = policy
                        .modbus
                        .device_for(peer.ip())
                        .filter(|d| d.name == name)
                        .ok_or_else(|| Violation::new(
                            ViolationKind::UnknownDevice,
                            "device no longer in the policy",
                        ))?;
                    let mut out = Vec::new();
                    let mut used = 0;
                    while let Some(frame) = Frame::split(from_client.buf.get(used..).unwrap_or_default())
                        .map_err(|e| Violation::new(ViolationKind::Malformed, e.to_string()))?
                    {
                        let len = frame.mbap.frame_len();
                        match check_request(device, &frame) {
                            Ok(request) => {
                                matcher.expect(frame.mbap.transaction, frame.mbap.unit, request)?;
                                out.extend_from_slice(from_client.buf.get(used..used + len).unwrap_or_default());
                            }
                            Err(refused @ Refused::Malformed(_)) => return Err(refused.violation()),
                            Err(refused @ Refused::Denied { code, .. }) => {
                                self.event(action::MODBUS_REFUSED, Some(name), peer, Some(refused.violation()), String::new());
                                if device.refusal == Refusal::Drop {
                                    server.write_all(&out).await.map_err(closed)?;
                                    return Ok(());
                                }
                                client
                                    .write_all(&codec::exception_frame(&frame.mbap, frame.function(), code))
                                    .await
                                    .map_err(closed)?;
                            }
                        }
                        used += len;
                    }
                    from_client.buf.drain(..used);
                    if !out.is_empty() {
                        server.write_all(&out).await.map_err(closed)?;
                    }
                }
                read = server.read(&mut chunk_s) => {
                    let n = match read { Ok(n) if n > 0 => n, _ => return Ok(()) };
                    from_server.buf.extend_from_slice(chunk_s.get(..n).unwrap_or_default());
                    let mut used = 0;
                    while let Some(frame) = Frame::split(from_server.buf.get(used..).unwrap_or_default())
                        .map_err(|e| Violation::new(ViolationKind::Protocol, format!("server: {e}")))?
                    {
                        matcher.check_response(&frame)?;
                        used += frame.mbap.frame_len();
                    }
                    if let Some(done) = from_server.buf.get(..used)
                        && !done.is_empty()
                    {
                        client.write_all(done).await.map_err(closed)?;
                    }
                    from_server.buf.drain(..used);
                }
            }
        }
    }
}
