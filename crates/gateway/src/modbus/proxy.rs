//! The inline Modbus TCP proxy: plain TCP on both legs (Modbus TCP has no
//! TLS), devices identified by source address, every request framed and
//! checked before it is forwarded, every response matched to a request.
//!
//! One task per connection, owning both sockets: a `select!` over the two
//! reads, so the gateway's own exception answers and the server's
//! responses are written whole, one after the other, never interleaved.
//! Reading from a `TcpStream` is cancel-safe, so losing a `select!` race
//! loses no bytes.
//!
//! Limits, per device (source address block): connection attempts per
//! minute and open connections ([`ConnectionLimits`]), a first complete
//! request within `first_request_timeout` (slowloris) and no silence
//! longer than `idle_timeout`, and a request and byte rate. A device over
//! its rate is not read for a while (back-pressure: its own requests
//! wait, the server's responses still flow) and gets a strike; strikes
//! lead to quarantine, and a quarantined device's connections are closed
//! and new ones refused at accept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use super::codec::{self, Frame};
use super::inspect::{Refused, ResponseMatcher, check_request};
use crate::Quarantine;
use crate::anomaly::{self, Detector, DeviceDetector, What};
use crate::audit::{Audit, GatewayEvent, action};
use crate::connections::ConnectionLimits;
use crate::limit::{DeviceLimiter, RateLimits};
use crate::metrics::{DeviceCounters, Metrics, Protocol};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::modbus::Refusal;
use crate::policy::{Policy, PolicyHandle};

/// What the Modbus proxy needs.
#[derive(Debug, Clone)]
pub struct ModbusProxyConfig {
    /// The Modbus server (PLC, RTU gateway).
    pub upstream: SocketAddr,
    /// The policy in force (its `[modbus]` part).
    pub policy: Arc<PolicyHandle>,
    /// Where events go.
    pub audit: Arc<dyn Audit>,
    /// Per-device counters, shared with the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Quarantine state, shared with the other proxies and the admin
    /// endpoint; [`Quarantine::open`] gives one that survives a restart.
    pub quarantine: Arc<Quarantine>,
}

/// Longest single pause of a connection over its rate; the debt left is
/// paid on later requests (and keeps adding strikes).
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The Modbus TCP gateway.
#[derive(Debug)]
pub struct ModbusProxy {
    config: ModbusProxyConfig,
    limits: RateLimits,
    quarantine: Arc<Quarantine>,
    connections: ConnectionLimits,
    anomaly: Detector,
}

/// The device side of a relay: its bytes not yet handled, the requests
/// awaiting a response, and when the last complete request came (`None`
/// before the first: the deadline is then `first_request_timeout` from
/// accept).
struct Requests {
    buf: Buffer,
    matcher: ResponseMatcher,
    last: Option<Instant>,
}

/// The sockets and accounting of one relay.
struct Leg<'a> {
    client: &'a mut TcpStream,
    server: &'a mut TcpStream,
    peer: SocketAddr,
    name: &'a str,
    counters: &'a DeviceCounters,
    limiter: &'a Mutex<DeviceLimiter>,
    anomaly: &'a DeviceDetector,
}

/// What the relay does after handling requests.
enum Flow {
    /// Keep reading.
    Go,
    /// Over the rate: strike, and do not read for this long.
    Pause(Duration),
    /// A refusal closed the connection quietly.
    Close,
}

/// How a relay ended without a refusal.
enum Ended {
    /// Either side closed.
    Left,
    /// The device was silent this long.
    Idle(Duration),
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
        Arc::new(Self {
            quarantine: config.quarantine.clone(),
            config,
            limits: RateLimits::default(),
            connections: ConnectionLimits::default(),
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
    fn observe(&self, leg: &Leg<'_>, policy: &Policy, what: What<'_>, size: usize, at: Instant) {
        let found = leg.anomaly.observe_at(&policy.anomaly, what, size, at);
        if !found.is_empty() {
            anomaly::report(
                &*self.config.audit,
                &self.quarantine,
                policy.quarantine.duration,
                leg.peer,
                found,
            );
        }
    }

    /// Quarantine state of Modbus devices: query, release, or quarantine
    /// by hand.
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
        if let (action::MODBUS_REFUSED, Some(kind)) = (action, reason) {
            self.config
                .metrics
                .device(Protocol::Modbus, device.unwrap_or(""))
                .refused(kind);
        }
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
        let counters = self.config.metrics.device(Protocol::Modbus, &name);
        let now = Instant::now();
        if let Some(left) = self.quarantine.remaining(&name, now) {
            let v = Violation::new(
                ViolationKind::Quarantined,
                format!("device {name} is quarantined for {left:?} more"),
            );
            self.event(
                action::MODBUS_REFUSED,
                Some(&name),
                peer,
                Some(v),
                String::new(),
            );
            return;
        }
        // Before the server connection: a flapping device costs no
        // upstream connection.
        let _slot = match self.connections.admit(&name, policy.limits.per_device, now) {
            Ok(slot) => slot,
            Err(refusal) => {
                let v = Violation::new(
                    ViolationKind::RateExceeded,
                    format!("device {name}: {refusal}"),
                );
                self.event(
                    action::MODBUS_REFUSED,
                    Some(&name),
                    peer,
                    Some(v),
                    String::new(),
                );
                self.strike(&name, peer, ViolationKind::RateExceeded);
                return;
            }
        };
        let limiter = self.limits.limiter(&name, device.rate);
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
        let _open = counters.connection();
        match self
            .relay(&mut client, &mut server, peer, &name, &counters, &limiter)
            .await
        {
            Ok(Ended::Left) => {}
            Ok(Ended::Idle(after)) => self.event(
                action::IDLE_TIMEOUT,
                Some(&name),
                peer,
                None,
                format!("no request for {after:?}"),
            ),
            Err(v) => self.event(
                action::MODBUS_REFUSED,
                Some(&name),
                peer,
                Some(v),
                String::new(),
            ),
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
        counters: &DeviceCounters,
        limiter: &Mutex<DeviceLimiter>,
    ) -> Result<Ended, Violation> {
        let started = Instant::now();
        let watch = self.anomaly.device(name);
        let mut requests = Requests {
            buf: Buffer::new(),
            matcher: ResponseMatcher::default(),
            last: None,
        };
        // Back-pressure: the device is not read until then.
        let mut paused_until: Option<Instant> = None;
        let mut from_server = Buffer::new();
        let mut chunk_c = [0u8; codec::MAX_FRAME];
        let mut chunk_s = [0u8; codec::MAX_FRAME];
        let closed = |_| Violation::new(ViolationKind::Protocol, "write failed");
        loop {
            let (deadline, silence) = {
                let m = &self.config.policy.load().modbus;
                match requests.last {
                    None => (started + m.first_request_timeout, m.first_request_timeout),
                    Some(t) => (t + m.idle_timeout, m.idle_timeout),
                }
            };
            let mut leg = Leg {
                client: &mut *client,
                server: &mut *server,
                peer,
                name,
                counters,
                limiter,
                anomaly: &watch,
            };
            let pause = tokio::select! {
                () = sleep_until(deadline), if paused_until.is_none() => {
                    if requests.last.is_some() {
                        return Ok(Ended::Idle(silence));
                    }
                    self.strike(name, peer, ViolationKind::Protocol);
                    return Err(Violation::new(
                        ViolationKind::Protocol,
                        format!("no complete request within {silence:?}"),
                    ));
                }
                () = sleep_until(paused_until.unwrap_or(deadline)), if paused_until.is_some() => {
                    // Requests that waited in the buffer go first.
                    self.forward_requests(&mut leg, &mut requests).await?
                }
                read = leg.client.read(&mut chunk_c), if paused_until.is_none() => {
                    let n = match read { Ok(n) if n > 0 => n, _ => return Ok(Ended::Left) };
                    requests.buf.buf.extend_from_slice(chunk_c.get(..n).unwrap_or_default());
                    self.forward_requests(&mut leg, &mut requests).await?
                }
                read = leg.server.read(&mut chunk_s) => {
                    let n = match read { Ok(n) if n > 0 => n, _ => return Ok(Ended::Left) };
                    from_server.buf.extend_from_slice(chunk_s.get(..n).unwrap_or_default());
                    let mut used = 0;
                    while let Some(frame) = Frame::split(from_server.buf.get(used..).unwrap_or_default())
                        .map_err(|e| Violation::new(ViolationKind::Protocol, format!("server: {e}")))?
                    {
                        requests.matcher.check_response(&frame)?;
                        used += frame.mbap.frame_len();
                    }
                    if let Some(done) = from_server.buf.get(..used)
                        && !done.is_empty()
                    {
                        leg.client.write_all(done).await.map_err(closed)?;
                        counters.sent(done.len());
                    }
                    from_server.buf.drain(..used);
                    // Responses do not change whether the device is paused.
                    Flow::Go
                }
            };
            match pause {
                Flow::Go if paused_until.is_some_and(|t| t > Instant::now()) => {}
                Flow::Go => paused_until = None,
                Flow::Pause(d) => {
                    if self.strike(name, peer, ViolationKind::RateExceeded) {
                        return Err(Violation::new(
                            ViolationKind::RateExceeded,
                            format!("over the rate limit; paused {d:?}"),
                        ));
                    }
                    paused_until = Some(Instant::now() + d.min(MAX_PAUSE));
                }
                Flow::Close => return Ok(Ended::Left),
            }
        }
    }

    /// Checks and forwards the complete requests buffered from the device,
    /// stopping after the first one over its rate: the rest wait in the
    /// buffer for the pause to end.
    async fn forward_requests(
        &self,
        leg: &mut Leg<'_>,
        requests: &mut Requests,
    ) -> Result<Flow, Violation> {
        let closed = |_| Violation::new(ViolationKind::Protocol, "write failed");
        let (peer, name) = (leg.peer, leg.name);
        if let Some(left) = self.quarantine.remaining(name, Instant::now()) {
            return Err(Violation::new(
                ViolationKind::Quarantined,
                format!("device {name} quarantined for {left:?}"),
            ));
        }
        // Policy per batch of frames: a reload applies to open
        // connections; a device no longer in it is closed.
        let policy = self.config.policy.load();
        let device = policy
            .modbus
            .device_for(peer.ip())
            .filter(|d| d.name == name)
            .ok_or_else(|| {
                Violation::new(
                    ViolationKind::UnknownDevice,
                    "device no longer in the policy",
                )
            })?;
        let mut out = Vec::new();
        let mut used = 0;
        let mut flow = Flow::Go;
        while let Some(frame) = Frame::split(requests.buf.buf.get(used..).unwrap_or_default())
            .map_err(|e| Violation::new(ViolationKind::Malformed, e.to_string()))?
        {
            let len = frame.mbap.frame_len();
            let now = Instant::now();
            requests.last = Some(now);
            // Every request costs, refused ones too: they take the
            // gateway's work all the same.
            let pause = leg
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .publish(len, now);
            match check_request(device, &frame) {
                Ok(request) => {
                    let what = What::Modbus {
                        unit: frame.mbap.unit,
                        request,
                    };
                    self.observe(leg, &policy, what, frame.pdu.len(), now);
                    leg.counters.accepted(len);
                    requests
                        .matcher
                        .expect(frame.mbap.transaction, frame.mbap.unit, request)?;
                    out.extend_from_slice(
                        requests.buf.buf.get(used..used + len).unwrap_or_default(),
                    );
                }
                Err(refused @ Refused::Malformed(_)) => return Err(refused.violation()),
                Err(refused @ Refused::Denied { code, .. }) => {
                    self.event(
                        action::MODBUS_REFUSED,
                        Some(name),
                        peer,
                        Some(refused.violation()),
                        String::new(),
                    );
                    // A refusal is a strike like any violation: a device
                    // probing functions or addresses ends up quarantined.
                    let quarantined = self.strike(name, peer, ViolationKind::NotAuthorized);
                    if device.refusal == Refusal::Drop || quarantined {
                        leg.server.write_all(&out).await.map_err(closed)?;
                        return Ok(Flow::Close);
                    }
                    leg.client
                        .write_all(&codec::exception_frame(&frame.mbap, frame.function(), code))
                        .await
                        .map_err(closed)?;
                }
            }
            used += len;
            if !pause.is_zero() {
                flow = Flow::Pause(pause);
                break;
            }
        }
        requests.buf.buf.drain(..used);
        if !out.is_empty() {
            leg.server.write_all(&out).await.map_err(closed)?;
        }
        Ok(flow)
    }
}
