//! The inline MQTT proxy: mutual TLS toward devices, plain TCP toward the
//! broker, every client packet framed and inspected before it is
//! forwarded.
//!
//! One task per connection. The client→broker direction runs in that task
//! and is the only one inspected; broker→client bytes are copied by a
//! helper task that also writes the MQTT 5 DISCONNECT when the inspector
//! refuses a packet (so the two directions never interleave a frame).
//! Checked frames from one read are forwarded with one write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::anomaly::{self, Detector, DeviceDetector, What};
use crate::audit::{Audit, GatewayEvent, action};
use crate::connections::{ConnectionLimits, Slot};
use crate::limit::{DeviceLimiter, Quarantine, RateLimits};
use crate::metrics::{ConnectionGuard, DeviceCounters, Metrics, Protocol};
use crate::mqtt::codec::{self, Version};
use crate::mqtt::inspect::{
    Inspected, PeerIdentity, Session, Violation, ViolationKind, connack_refusal, disconnect,
};
use crate::policy::{Policy, PolicyHandle};

const READ_CHUNK: usize = 16 * 1024;
/// Longest single pause of a connection over its rate; the debt left is
/// paid on later packets (and keeps adding strikes).
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Bound on writing a refusal and closing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the proxy needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Device-side TLS, e.g. [`identity::tls::server_config`] (mutual TLS).
    pub tls: Arc<rustls::ServerConfig>,
    /// The broker.
    pub upstream: SocketAddr,
    /// The policy in force.
    pub policy: Arc<PolicyHandle>,
    /// Where events go.
    pub audit: Arc<dyn Audit>,
    /// Per-device counters, shared with the metrics endpoint.
    pub metrics: Arc<Metrics>,
    /// Quarantine state, shared with the admin endpoint;
    /// [`Quarantine::open`] gives one that survives a restart.
    pub quarantine: Arc<Quarantine>,
}

/// Counts a connection while it lives (also when its task is aborted).
struct ActiveGuard(Arc<MqttProxy>);

impl ActiveGuard {
    fn new(proxy: Arc<MqttProxy>) -> Self {
        proxy.active.fetch_add(1, Ordering::Relaxed);
        Self(proxy)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The MQTT gateway.
pub struct MqttProxy {
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    policy: Arc<PolicyHandle>,
    audit: Arc<dyn Audit>,
    limits: RateLimits,
    quarantine: Arc<Quarantine>,
    metrics: Arc<Metrics>,
    connections: ConnectionLimits,
    active: AtomicUsize,
    anomaly: Detector,
}

impl std::fmt::Debug for MqttProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttProxy")
            .field("upstream", &self.upstream)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

type ClientRead = ReadHalf<TlsStream<TcpStream>>;
type ClientWrite = WriteHalf<TlsStream<TcpStream>>;

enum End {
    Closed,
    Refused(Violation),
    /// Silent past the keep-alive deadline.
    Idle(Duration),
}

/// Bytes read from the client and not yet forwarded.
struct Pending {
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

impl Pending {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(READ_CHUNK),
            chunk: vec![0; READ_CHUNK],
        }
    }

    /// Reads once; `Ok(false)` at end of stream. The buffer only grows by
    /// what arrived: a frame's announced length is never reserved.
    async fn fill(&mut self, rd: &mut (impl AsyncRead + Unpin)) -> std::io::Result<bool> {
        let n = rd.read(&mut self.chunk).await?;
        if let Some(data) = self.chunk.get(..n) {
            self.buf.extend_from_slice(data);
        }
        Ok(n > 0)
    }

    async fn forward(
        &mut self,
        upto: usize,
        up: &mut (impl AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        if let Some(data) = self.buf.get(..upto)
            && !data.is_empty()
        {
            up.write_all(data).await?;
        }
        self.buf.drain(..upto.min(self.buf.len()));
        Ok(())
    }
}

struct Conn {
    peer: SocketAddr,
    session: Session,
    device: Option<String>,
    limiter: Option<Arc<std::sync::Mutex<DeviceLimiter>>>,
    /// The device's counters, resolved once at CONNECT.
    counters: Option<Arc<DeviceCounters>>,
    /// Holds the device's open-connections gauge while forwarding.
    open: Option<ConnectionGuard>,
    /// The CONNECT's keep-alive in seconds (0: none).
    keep_alive: u16,
    /// The device's connection slot, freed when the connection ends.
    _slot: Option<Slot>,
    /// The device's behaviour baseline, resolved once at CONNECT.
    anomaly: Option<DeviceDetector>,
}

impl MqttProxy {
    /// A proxy with empty rate-limit state.
    pub fn new(config: ProxyConfig) -> Arc<Self> {
        Arc::new(Self {
            acceptor: TlsAcceptor::from(config.tls),
            upstream: config.upstream,
            policy: config.policy,
            audit: config.audit,
            limits: RateLimits::default(),
            quarantine: config.quarantine,
            metrics: config.metrics,
            connections: ConnectionLimits::default(),
            active: AtomicUsize::new(0),
            anomaly: Detector::default(),
        })
    }

    /// Behaviour baselines of the devices seen (reset one after a
    /// legitimate change).
    pub fn anomaly(&self) -> &Detector {
        &self.anomaly
    }

    /// The policy handle (reload through it).
    pub fn policy(&self) -> &Arc<PolicyHandle> {
        &self.policy
    }

    /// Quarantine state: query, release, or quarantine by hand.
    pub fn quarantine(&self) -> &Arc<Quarantine> {
        &self.quarantine
    }

    /// Per-device counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Connections open now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Accepts connections until the returned future is dropped; dropping
    /// it also ends every connection it started.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let max = self.policy.load().limits.max_connections;
                        if self.active.load(Ordering::Relaxed) >= max {
                            tracing::warn!(%peer, max, "connection limit reached; refusing");
                            continue;
                        }
                        let guard = ActiveGuard::new(self.clone());
                        tasks.spawn(async move {
                            guard.0.clone().connection(tcp, peer).await;
                        });
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, go on.
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
        conn: &Conn,
        reason: Option<ViolationKind>,
        detail: String,
    ) {
        self.audit.record(GatewayEvent {
            action,
            device: conn.device.clone(),
            peer: conn.peer,
            reason,
            detail,
        });
    }

    /// Records a refusal and counts it as a strike against the device.
    fn refuse(&self, conn: &Conn, v: &Violation) {
        self.event(action::MQTT_REFUSED, conn, Some(v.kind), v.detail.clone());
        match &conn.counters {
            Some(c) => c.refused(v.kind),
            None => self
                .metrics
                .device(Protocol::Mqtt, conn.device.as_deref().unwrap_or(""))
                .refused(v.kind),
        }
        if v.kind != ViolationKind::Quarantined {
            self.strike(conn, v.kind);
        }
    }

    fn strike(&self, conn: &Conn, kind: ViolationKind) -> bool {
        let Some(device) = &conn.device else {
            return false;
        };
        let rule = self.policy.load().quarantine;
        self.quarantine
            .strike_reported(&*self.audit, &rule, device, conn.peer, kind)
    }

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        let policy = self.policy.load();
        let deadline = Instant::now() + policy.limits.connect_timeout;
        let mut conn = Conn {
            peer,
            session: Session::new(PeerIdentity::default()),
            device: None,
            limiter: None,
            counters: None,
            open: None,
            keep_alive: 0,
            _slot: None,
            anomaly: None,
        };
        let tls = match tokio::time::timeout_at(deadline, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.event(action::TLS_REFUSED, &conn, None, e.to_string());
                return;
            }
            Err(_) => {
                self.event(
                    action::TLS_REFUSED,
                    &conn,
                    None,
                    "handshake timed out".into(),
                );
                return;
            }
        };
        conn.session = Session::new(peer_identity(tls.get_ref().1.peer_certificates()));
        let (mut rd, mut wr) = tokio::io::split(tls);
        let mut pending = Pending::new();

        // The CONNECT, whole, before the deadline.
        let first = tokio::time::timeout_at(
            deadline,
            self.first_packet(&mut conn, &mut rd, &mut pending),
        )
        .await;
        let connect_len = match first {
            Ok(Ok(len)) => len,
            Ok(Err(None)) => return,
            Ok(Err(Some(v))) => {
                self.refuse(&conn, &v);
                if let Some(version) = conn.session.version() {
                    let _ = timeout(CLOSE_TIMEOUT, async {
                        wr.write_all(&connack_refusal(version, v.kind)).await?;
                        wr.flush().await?;
                        wr.shutdown().await
                    })
                    .await;
                }
                return;
            }
            Err(_) => {
                let v = Violation::new(ViolationKind::Protocol, "no CONNECT before the deadline");
                self.refuse(&conn, &v);
                return;
            }
        };
        let version = conn.session.version().unwrap_or(Version::V311);

        let upstream = match timeout(
            policy.limits.connect_timeout,
            TcpStream::connect(self.upstream),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                self.event(
                    action::UPSTREAM_UNAVAILABLE,
                    &conn,
                    None,
                    format!("broker {} unreachable", self.upstream),
                );
                let code = match version {
                    Version::V311 => vec![0x20, 0x02, 0x00, 0x03],
                    Version::V5 => vec![0x20, 0x03, 0x00, 0x88, 0x00],
                };
                let _ = timeout(CLOSE_TIMEOUT, async {
                    wr.write_all(&code).await?;
                    wr.shutdown().await
                })
                .await;
                return;
            }
        };
        if let Err(e) = upstream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY upstream");
        }
        let (up_rd, mut up_wr) = upstream.into_split();
        if pending.forward(connect_len, &mut up_wr).await.is_err() {
            return;
        }
        if let Some(c) = &conn.counters {
            c.accepted(connect_len);
            conn.open = Some(c.connection());
        }
        let detail = if conn.session.is_quarantined() {
            format!("{version:?}, quarantined: recovery path only")
        } else {
            format!("{version:?}")
        };
        self.event(action::MQTT_CONNECTED, &conn, None, detail);

        let (kill_tx, kill_rx) = oneshot::channel();
        let mut down = tokio::spawn(downstream(up_rd, wr, kill_rx, conn.counters.clone()));
        let end = tokio::select! {
            end = self.upstream_loop(&mut conn, &mut rd, &mut up_wr, &mut pending) => end,
            _ = &mut down => return,
        };
        let farewell = match end {
            End::Closed => None,
            End::Refused(v) => {
                self.refuse(&conn, &v);
                (version == Version::V5).then(|| disconnect(v.kind))
            }
            End::Idle(after) => {
                self.event(
                    action::IDLE_TIMEOUT,
                    &conn,
                    None,
                    format!("no packet for {after:?} (keep-alive {} s)", conn.keep_alive),
                );
                // MQTT 5 reason 0x8D: Keep Alive timeout.
                (version == Version::V5).then(|| vec![0xe0, 0x01, 0x8d])
            }
        };
        // The farewell first: closing the broker leg first could let the
        // copy task see the broker's close and end without it.
        let _ = kill_tx.send(farewell);
        if timeout(CLOSE_TIMEOUT, &mut down).await.is_err() {
            down.abort();
        }
        let _ = up_wr.shutdown().await;
    }

    /// Reads until the first frame is complete and inspects it; returns
    /// its length. `Err(None)`: the client left.
    async fn first_packet(
        &self,
        conn: &mut Conn,
        rd: &mut ClientRead,
        pending: &mut Pending,
    ) -> Result<usize, Option<Violation>> {
        loop {
            if !pending.fill(rd).await.map_err(|_| None)? {
                return Err(None);
            }
            let policy = self.policy.load();
            let header = match codec::frame_header(&pending.buf, policy.limits.max_packet_size) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => return Err(Some(e.into())),
            };
            if header.kind != codec::PacketType::Connect {
                return Err(Some(Violation::new(
                    ViolationKind::Protocol,
                    format!("{:?} before CONNECT", header.kind),
                )));
            }
            let Some(frame) = pending.buf.get(..header.frame_len()) else {
                continue;
            };
            let Inspected::Connected { device, rate } = conn
                .session
                .inspect(&policy, &header, frame)
                .map_err(Some)?
            else {
                return Err(Some(Violation::new(
                    ViolationKind::Protocol,
                    "expected CONNECT",
                )));
            };
            conn.device = Some(device.clone());
            // A quarantined device goes on only on its recovery path.
            if let Some(left) = self.quarantine.remaining(&device, Instant::now()) {
                conn.session.enter_quarantine().map_err(|v| {
                    Some(Violation::new(
                        v.kind,
                        format!("{} ({})", v.detail, left_text(left)),
                    ))
                })?;
            }
            match self
                .connections
                .admit(&device, policy.limits.per_device, Instant::now())
            {
                Ok(slot) => conn._slot = Some(slot),
                Err(refusal) => {
                    return Err(Some(Violation::new(
                        ViolationKind::RateExceeded,
                        format!("device {device}: {refusal}"),
                    )));
                }
            }
            if let Ok(codec::Packet::Connect(c)) = codec::parse(&header, frame, None) {
                conn.keep_alive = c.keep_alive;
            }
            conn.limiter = Some(self.limits.limiter(&device, rate));
            conn.anomaly = Some(self.anomaly.device(&device));
            conn.counters = Some(self.metrics.device(Protocol::Mqtt, &device));
            return Ok(header.frame_len());
        }
    }

    /// Feeds a PUBLISH about to be forwarded to the device's baseline and
    /// reports what deviated ([`crate::anomaly`]).
    fn observe_publish(
        &self,
        conn: &Conn,
        policy: &Policy,
        header: &codec::FixedHeader,
        frame: &[u8],
        payload: usize,
    ) {
        let Some(watch) = conn.anomaly.as_ref().filter(|_| policy.anomaly.enabled) else {
            return;
        };
        // Parsed again (no allocation): the session checked it but hands
        // back only the payload length.
        let Ok(codec::Packet::Publish(p)) = codec::parse(header, frame, conn.session.version())
        else {
            return;
        };
        let topic = match p.properties.topic_alias {
            Some(alias) if p.topic.is_empty() => {
                conn.session.topic_alias(alias).unwrap_or_default()
            }
            _ => p.topic,
        };
        let found = watch.observe_at(&policy.anomaly, What::Topic(topic), payload, Instant::now());
        if !found.is_empty() {
            anomaly::report(
                &*self.audit,
                &self.quarantine,
                policy.quarantine.duration,
                conn.peer,
                found,
            );
        }
    }

    /// Client→broker: frame, inspect, forward; until the client leaves or
    /// a packet is refused.
    async fn upstream_loop(
        &self,
        conn: &mut Conn,
        rd: &mut ClientRead,
        up: &mut OwnedWriteHalf,
        pending: &mut Pending,
    ) -> End {
        let mut last_packet = Instant::now();
        loop {
            let policy = self.policy.load();
            // MQTT §3.1.2.10: one and a half keep-alives without a packet
            // and the server closes; keep-alive 0 gets the policy's idle
            // timeout instead of forever.
            let idle = match conn.keep_alive {
                0 => policy.limits.idle_timeout,
                k => Duration::from_millis(u64::from(k) * 1500),
            };
            let mut checked = 0;
            loop {
                let rest = pending.buf.get(checked..).unwrap_or_default();
                let header = match codec::frame_header(rest, policy.limits.max_packet_size) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = pending.forward(checked, up).await;
                        return End::Refused(e.into());
                    }
                };
                let len = header.frame_len();
                let Some(frame) = rest.get(..len) else {
                    break;
                };
                let inspected = conn.session.inspect(&policy, &header, frame);
                if inspected.is_ok()
                    && let Some(c) = &conn.counters
                {
                    c.accepted(len);
                }
                // Only whole packets count as activity: a trickle of bytes
                // that never completes one does not keep a connection up.
                last_packet = Instant::now();
                match inspected {
                    Err(v) => {
                        let _ = pending.forward(checked, up).await;
                        return End::Refused(v);
                    }
                    Ok(Inspected::Disconnect) => {
                        let _ = pending.forward(checked + len, up).await;
                        return End::Closed;
                    }
                    Ok(Inspected::Publish { payload }) => {
                        self.observe_publish(conn, &policy, &header, frame, payload);
                        checked += len;
                        let pause = conn.limiter.as_ref().map_or(Duration::ZERO, |l| {
                            l.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .publish(payload, Instant::now())
                        });
                        if !pause.is_zero() {
                            if let Some(c) = &conn.counters {
                                c.rate_limited();
                            }
                            if self.strike(conn, ViolationKind::RateExceeded) {
                                return End::Refused(Violation::new(
                                    ViolationKind::RateExceeded,
                                    format!("over the rate limit; paused {pause:?}"),
                                ));
                            }
                            // Back-pressure: what is checked goes on, then
                            // this connection is not read for a while.
                            if pending.forward(checked, up).await.is_err() {
                                return End::Closed;
                            }
                            checked = 0;
                            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
                        }
                    }
                    Ok(_) => checked += len,
                }
            }
            if pending.forward(checked, up).await.is_err() {
                return End::Closed;
            }
            match tokio::time::timeout_at(last_packet + idle, pending.fill(rd)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false) | Err(_)) => return End::Closed,
                Err(_) => return End::Idle(idle),
            }
            if let Some(device) = &conn.device {
                // Quarantined mid-session: closed, even with a recovery
                // path (it must reconnect with a clean session). Released:
                // the normal rules apply again.
                match self.quarantine.remaining(device, Instant::now()) {
                    Some(left) if !conn.session.is_quarantined() => {
                        return End::Refused(Violation::new(
                            ViolationKind::Quarantined,
                            format!("device {device} quarantined ({})", left_text(left)),
                        ));
                    }
                    None if conn.session.is_quarantined() => conn.session.leave_quarantine(),
                    _ => {}
                }
            }
        }
    }
}

/// "for 2s more" or "until released".
fn left_text(left: Duration) -> String {
    if left == Duration::MAX {
        "until released".into()
    } else {
        format!("for {left:?} more")
    }
}

/// Broker→client copy; on a message from the inspector, writes the
/// farewell (if any) and closes.
async fn downstream(
    mut up: OwnedReadHalf,
    mut client: ClientWrite,
    mut kill: oneshot::Receiver<Option<Vec<u8>>>,
    counters: Option<Arc<DeviceCounters>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        tokio::select! {
            biased;
            farewell = &mut kill => {
                let _ = timeout(CLOSE_TIMEOUT, async {
                    if let Ok(Some(bytes)) = farewell {
                        client.write_all(&bytes).await?;
                        client.flush().await?;
                    }
                    client.shutdown().await
                })
                .await;
                return;
            }
            read = up.read(&mut buf) => {
                let data = match read {
                    Ok(n) if n > 0 => buf.get(..n).unwrap_or_default(),
                    _ => {
                        let _ = timeout(CLOSE_TIMEOUT, client.shutdown()).await;
                        return;
                    }
                };
                if client.write_all(data).await.is_err() || client.flush().await.is_err() {
                    return;
                }
                if let Some(c) = &counters {
                    c.sent(data.len());
                }
            }
        }
    }
}

/// The subject CNs and URI SANs of the peer's end-entity certificate
/// (already verified by rustls against the trust anchors).
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> PeerIdentity {
    let Some(der) = certs.and_then(<[_]>::first) else {
        return PeerIdentity::default();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return PeerIdentity::default();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        }));
    }
    PeerIdentity { names }
}
