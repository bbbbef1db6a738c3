//! The per-connection inspection layer: protocol state and device policy
//! over decoded frames, without sockets.
//!
//! A [`Session`] starts knowing only the peer's certificate names. The
//! first packet must be a CONNECT from a device the policy binds to one of
//! those names, with the client id the policy expects; after that every
//! packet is checked against that device's rules, re-resolved whenever a
//! new policy is in force.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::mqtt::codec::{self, Connect, DecodeError, FixedHeader, Packet, Publish, Version};
use crate::policy::{Device, PayloadFormat, Policy, Rate};
use crate::topic::{self, TopicError};

/// Topic aliases a client may define (MQTT 5). Bounds the memory a
/// session holds for them: at most this many topics of at most
/// `max_packet_size` bytes.
pub const MAX_TOPIC_ALIASES: u16 = 64;

/// What kind of rule a refused packet broke; decides the reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// Bytes that are not a well-formed packet.
    Malformed,
    /// A well-formed packet out of protocol order or rule.
    Protocol,
    /// Not MQTT 3.1.1 or 5.
    UnsupportedVersion,
    /// Remaining length or payload over the limit.
    PacketTooLarge,
    /// The policy does not allow this topic or action.
    NotAuthorized,
    /// No device in the policy is bound to the certificate.
    UnknownDevice,
    /// The client id is not the one bound to the certificate.
    ClientIdMismatch,
    /// A topic name that is not well-formed (empty, wildcard, NUL).
    TopicNameInvalid,
    /// A topic filter that is not well-formed.
    TopicFilterInvalid,
    /// QoS over the device's maximum.
    QosNotSupported,
    /// A retained message from a device that may not retain.
    RetainNotSupported,
    /// A payload that is not the required format.
    PayloadFormatInvalid,
    /// An unknown or out-of-range topic alias.
    TopicAliasInvalid,
    /// Over the device's message or byte rate.
    RateExceeded,
    /// The device is quarantined.
    Quarantined,
}

impl ViolationKind {
    /// A short stable name, for events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Protocol => "protocol",
            Self::UnsupportedVersion => "unsupported-version",
            Self::PacketTooLarge => "packet-too-large",
            Self::NotAuthorized => "not-authorized",
            Self::UnknownDevice => "unknown-device",
            Self::ClientIdMismatch => "client-id-mismatch",
            Self::TopicNameInvalid => "topic-name-invalid",
            Self::TopicFilterInvalid => "topic-filter-invalid",
            Self::QosNotSupported => "qos-not-supported",
            Self::RetainNotSupported => "retain-not-supported",
            Self::PayloadFormatInvalid => "payload-format-invalid",
            Self::TopicAliasInvalid => "topic-alias-invalid",
            Self::RateExceeded => "rate-exceeded",
            Self::Quarantined => "quarantined",
        }
    }

    /// The MQTT 5 DISCONNECT reason code (MQTT 5 §3.14.2.1).
    pub fn disconnect_code(self) -> u8 {
        match self {
            Self::Malformed => 0x81,
            Self::Protocol | Self::UnsupportedVersion => 0x82,
            Self::PacketTooLarge => 0x95,
            Self::NotAuthorized
            | Self::UnknownDevice
            | Self::ClientIdMismatch
            | Self::Quarantined => 0x87,
            Self::TopicNameInvalid => 0x90,
            Self::TopicFilterInvalid => 0x8f,
            Self::QosNotSupported => 0x9b,
            Self::RetainNotSupported => 0x9a,
            Self::PayloadFormatInvalid => 0x99,
            Self::TopicAliasInvalid => 0x94,
            Self::RateExceeded => 0x96,
        }
    }

    /// The CONNACK code refusing a CONNECT: MQTT 5 reason codes
    /// (§3.2.2.2) or MQTT 3.1.1 return codes (§3.2.2.3).
    pub fn connack_code(self, version: Version) -> u8 {
        match version {
            Version::V311 => match self {
                Self::UnsupportedVersion => 0x01,
                Self::ClientIdMismatch => 0x02,
                _ => 0x05,
            },
            Version::V5 => match self {
                Self::Malformed => 0x81,
                Self::Protocol | Self::TopicAliasInvalid | Self::TopicFilterInvalid => 0x82,
                Self::UnsupportedVersion => 0x84,
                Self::ClientIdMismatch => 0x85,
                Self::NotAuthorized | Self::UnknownDevice => 0x87,
                Self::Quarantined => 0x8a,
                Self::TopicNameInvalid => 0x90,
                Self::PacketTooLarge => 0x95,
                Self::PayloadFormatInvalid => 0x99,
                Self::RetainNotSupported => 0x9a,
                Self::QosNotSupported => 0x9b,
                Self::RateExceeded => 0x9f,
            },
        }
    }
}

/// A refused packet: what rule, and detail for the event log (never sent
/// to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// What exactly, for the operator.
    pub detail: String,
}

impl Violation {
    /// A violation of `kind`.
    pub fn new(kind: ViolationKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Self {
        let kind = match e {
            DecodeError::TooLarge { .. } => ViolationKind::PacketTooLarge,
            DecodeError::Protocol(_) => ViolationKind::Protocol,
            DecodeError::UnsupportedVersion => ViolationKind::UnsupportedVersion,
            DecodeError::LengthTooLong | DecodeError::ReservedType | DecodeError::Malformed(_) => {
                ViolationKind::Malformed
            }
        };
        Self::new(kind, e.to_string())
    }
}

fn topic_violation(kind: ViolationKind, what: &str, t: &str, e: TopicError) -> Violation {
    Violation::new(kind, format!("{what} `{}`: {e}", shorten(t)))
}

/// Topics in event details are cut to keep events small.
fn shorten(t: &str) -> String {
    const MAX: usize = 128;
    if t.len() <= MAX {
        return t.to_owned();
    }
    let mut end = MAX;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", t.get(..end).unwrap_or_default())
}

/// The names a client certificate carries: subject CN and URI SANs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Every name, CN first.
    pub names: Vec<String>,
}

/// What an accepted packet means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// The CONNECT was accepted for `device`.
    Connected {
        /// Policy name of the device.
        device: String,
        /// Its rate limit.
        rate: Rate,
    },
    /// A PUBLISH with this many payload bytes (for rate accounting).
    Publish {
        /// Payload length.
        payload: usize,
    },
    /// The client is disconnecting.
    Disconnect,
    /// Any other allowed packet.
    Other,
}

#[derive(Debug)]
struct Open {
    version: Version,
    client_id: String,
    identity: String,
    device: String,
    policy: Arc<Policy>,
    publish: Vec<String>,
    subscribe: Vec<String>,
    /// The recovery path, resolved like the rules above.
    recovery_publish: Vec<String>,
    recovery_subscribe: Vec<String>,
    /// Quarantined: only the recovery path is allowed.
    quarantined: bool,
    /// What the CONNECT asked for, to decide whether a quarantined
    /// session may go on (see [`Session::enter_quarantine`]).
    clean_start: bool,
    has_will: bool,
    max_qos: u8,
    retain: bool,
    max_payload: usize,
    payload_format: PayloadFormat,
    max_levels: usize,
    aliases: HashMap<u16, String>,
}

impl Open {
    fn resolve(
        policy: &Arc<Policy>,
        device: &Device,
        version: Version,
        client_id: &str,
        identity: &str,
    ) -> Self {
        let resolve_all = |list: &[crate::topic::Pattern]| {
            list.iter()
                .filter_map(|p| p.resolve(client_id, identity))
                .collect()
        };
        Self {
            version,
            client_id: client_id.to_owned(),
            identity: identity.to_owned(),
            device: device.name.clone(),
            policy: policy.clone(),
            publish: resolve_all(&device.rules.publish),
            subscribe: resolve_all(&device.rules.subscribe),
            recovery_publish: resolve_all(&device.rules.recovery.publish),
            recovery_subscribe: resolve_all(&device.rules.recovery.subscribe),
            quarantined: false,
            clean_start: false,
            has_will: false,
            max_qos: device.rules.max_qos,
            retain: device.rules.retain,
            max_payload: device.rules.max_payload,
            payload_format: device.rules.payload_format,
            max_levels: policy.limits.max_topic_levels,
            aliases: HashMap::new(),
        }
    }

    fn may_publish(&self, topic: &str) -> bool {
        let allowed = if self.quarantined {
            &self.recovery_publish
        } else {
            &self.publish
        };
        allowed.iter().any(|f| topic::matches(f, topic))
    }

    fn may_subscribe(&self, filter: &str) -> bool {
        let allowed = if self.quarantined {
            &self.recovery_subscribe
        } else {
            &self.subscribe
        };
        allowed.iter().any(|a| topic::covers(a, filter))
    }

    /// "not allowed" or, in quarantine, "not on the recovery path".
    fn refusal(&self) -> &'static str {
        if self.quarantined {
            "is not on the recovery path (quarantined)"
        } else {
            "is not allowed"
        }
    }

    fn check_message(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: &[u8],
    ) -> Result<(), Violation> {
        topic::check_name(topic, self.max_levels)
            .map_err(|e| topic_violation(ViolationKind::TopicNameInvalid, "topic", topic, e))?;
        if !self.may_publish(topic) {
            return Err(Violation::new(
                ViolationKind::NotAuthorized,
                format!("publish to `{}` {}", shorten(topic), self.refusal()),
            ));
        }
        if qos > self.max_qos {
            return Err(Violation::new(
                ViolationKind::QosNotSupported,
                format!("QoS {qos} over the maximum {}", self.max_qos),
            ));
        }
        if retain && !self.retain {
            return Err(Violation::new(
                ViolationKind::RetainNotSupported,
                "retained messages are not allowed",
            ));
        }
        if payload.len() > self.max_payload {
            return Err(Violation::new(
                ViolationKind::PacketTooLarge,
                format!(
                    "payload of {} bytes over the maximum {}",
                    payload.len(),
                    self.max_payload
                ),
            ));
        }
        if !self.payload_format.accepts(payload) {
            return Err(Violation::new(
                ViolationKind::PayloadFormatInvalid,
                format!("payload is not {:?}", self.payload_format),
            ));
        }
        Ok(())
    }

    fn publish(&mut self, p: &Publish<'_>) -> Result<Inspected, Violation> {
        // Borrowed unless an alias names the topic: no allocation per
        // packet on the common path.
        let topic: Cow<'_, str> = match (p.topic, p.properties.topic_alias) {
            (t, None) => Cow::Borrowed(t),
            (t, Some(alias)) => {
                if self.version != Version::V5 || alias > MAX_TOPIC_ALIASES {
                    return Err(Violation::new(
                        ViolationKind::TopicAliasInvalid,
                        format!("topic alias {alias} (at most {MAX_TOPIC_ALIASES})"),
                    ));
                }
                if t.is_empty() {
                    Cow::Owned(self.aliases.get(&alias).cloned().ok_or_else(|| {
                        Violation::new(
                            ViolationKind::TopicAliasInvalid,
                            format!("topic alias {alias} was never set"),
                        )
                    })?)
                } else {
                    Cow::Borrowed(t)
                }
            }
        };
        self.check_message(&topic, p.qos, p.retain, p.payload)?;
        if let Some(rt) = p.properties.response_topic {
            topic::check_name(rt, self.max_levels).map_err(|e| {
                topic_violation(ViolationKind::TopicNameInvalid, "response topic", rt, e)
            })?;
        }
        if let Some(alias) = p.properties.topic_alias
            && !p.topic.is_empty()
        {
            self.aliases.insert(alias, topic.into_owned());
        }
        Ok(Inspected::Publish {
            payload: p.payload.len(),
        })
    }
}

#[derive(Debug)]
enum State {
    AwaitConnect,
    Open(Box<Open>),
}

/// Protocol state and policy for one client connection.
#[derive(Debug)]
pub struct Session {
    peer: PeerIdentity,
    state: State,
    version: Option<Version>,
}

impl Session {
    /// A session for a peer that authenticated with these names.
    pub fn new(peer: PeerIdentity) -> Self {
        Self {
            peer,
            state: State::AwaitConnect,
            version: None,
        }
    }

    /// The protocol version, once a CONNECT has been parsed (even one
    /// that was refused).
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Whether a CONNECT has been accepted.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The device's policy name, once connected.
    pub fn device(&self) -> Option<&str> {
        match &self.state {
            State::Open(o) => Some(&o.device),
            State::AwaitConnect => None,
        }
    }

    /// The topic an MQTT 5 topic alias stands for on this connection.
    pub fn topic_alias(&self, alias: u16) -> Option<&str> {
        match &self.state {
            State::Open(o) => o.aliases.get(&alias).map(String::as_str),
            State::AwaitConnect => None,
        }
    }

    /// Decodes and checks one complete frame against `policy` (the one in
    /// force now).
    pub fn inspect(
        &mut self,
        policy: &Arc<Policy>,
        header: &FixedHeader,
        frame: &[u8],
    ) -> Result<Inspected, Violation> {
        let open = match &mut self.state {
            State::AwaitConnect => {
                if header.kind != codec::PacketType::Connect {
                    return Err(Violation::new(
                        ViolationKind::Protocol,
                        format!("{:?} before CONNECT", header.kind),
                    ));
                }
                let Packet::Connect(c) = codec::parse(header, frame, None)? else {
                    return Err(Violation::new(ViolationKind::Protocol, "expected CONNECT"));
                };
                self.version = Some(c.version);
                let open = Self::connect(&self.peer, policy, &c)?;
                let inspected = Inspected::Connected {
                    device: open.device.clone(),
                    rate: policy
                        .device(&open.device)
                        .map(|d| d.rules.rate)
                        .unwrap_or(Rate {
                            messages_per_second: 1,
                            bytes_per_second: 1,
                        }),
                };
                self.state = State::Open(Box::new(open));
                return Ok(inspected);
            }
            State::Open(open) => open,
        };
        if !Arc::ptr_eq(&open.policy, policy) {
            Self::refresh(&self.peer, open, policy)?;
        }
        match codec::parse(header, frame, Some(open.version))? {
            Packet::Connect(_) => Err(Violation::new(ViolationKind::Protocol, "second CONNECT")),
            Packet::ServerOnly(kind) => Err(Violation::new(
                ViolationKind::Protocol,
                format!("{kind:?} is a server-only packet"),
            )),
            Packet::Publish(p) => open.publish(&p),
            Packet::Subscribe { subscriptions, .. } => {
                for s in subscriptions {
                    topic::check_filter(s.filter, open.max_levels).map_err(|e| {
                        topic_violation(ViolationKind::TopicFilterInvalid, "filter", s.filter, e)
                    })?;
                    if s.qos > open.max_qos {
                        return Err(Violation::new(
                            ViolationKind::QosNotSupported,
                            format!(
                                "subscription QoS {} over the maximum {}",
                                s.qos, open.max_qos
                            ),
                        ));
                    }
                    if !open.may_subscribe(s.filter) {
                        return Err(Violation::new(
                            ViolationKind::NotAuthorized,
                            format!("subscription to `{}` {}", shorten(s.filter), open.refusal()),
                        ));
                    }
                }
                Ok(Inspected::Other)
            }
            Packet::Unsubscribe { filters, .. } => {
                for f in filters {
                    topic::check_filter(f, open.max_levels).map_err(|e| {
                        topic_violation(ViolationKind::TopicFilterInvalid, "filter", f, e)
                    })?;
                }
                Ok(Inspected::Other)
            }
            Packet::Disconnect => Ok(Inspected::Disconnect),
            Packet::Ack { .. } | Packet::Pingreq | Packet::Auth => Ok(Inspected::Other),
        }
    }

    fn connect(
        peer: &PeerIdentity,
        policy: &Arc<Policy>,
        c: &Connect<'_>,
    ) -> Result<Open, Violation> {
        let (device, identity) = policy
            .device_for_identity(peer.names.iter().map(String::as_str))
            .ok_or_else(|| {
                Violation::new(
                    ViolationKind::UnknownDevice,
                    format!(
                        "no device is bound to certificate names {:?}",
                        peer.names.iter().map(|n| shorten(n)).collect::<Vec<_>>()
                    ),
                )
            })?;
        let expected = device.client_id.as_deref().unwrap_or(identity);
        if c.client_id != expected {
            return Err(Violation::new(
                ViolationKind::ClientIdMismatch,
                format!(
                    "device {} connected as client id `{}`, expected `{expected}`",
                    device.name,
                    shorten(c.client_id)
                ),
            ));
        }
        let mut open = Open::resolve(policy, device, c.version, c.client_id, identity);
        open.clean_start = c.clean_start;
        open.has_will = c.will.is_some();
        if let Some(w) = &c.will {
            open.check_message(w.topic, w.qos, w.retain, w.payload)
                .map_err(|v| Violation::new(v.kind, format!("will message: {}", v.detail)))?;
        }
        Ok(open)
    }

    /// A new policy is in force: the device must still be bound to this
    /// certificate and client id; its rules are re-resolved.
    fn refresh(
        peer: &PeerIdentity,
        open: &mut Open,
        policy: &Arc<Policy>,
    ) -> Result<(), Violation> {
        let still = policy
            .device_for_identity(peer.names.iter().map(String::as_str))
            .filter(|(d, id)| {
                d.name == open.device
                    && *id == open.identity
                    && d.client_id.as_deref().unwrap_or(id) == open.client_id
            });
        let Some((device, _)) = still else {
            return Err(Violation::new(
                ViolationKind::NotAuthorized,
                format!("device {} is no longer allowed by the policy", open.device),
            ));
        };
        let aliases = std::mem::take(&mut open.aliases);
        let kept = (open.quarantined, open.clean_start, open.has_will);
        *open = Open::resolve(
            policy,
            device,
            open.version,
            &open.client_id,
            &open.identity,
        );
        open.aliases = aliases;
        (open.quarantined, open.clean_start, open.has_will) = kept;
        Ok(())
    }

    /// The connected device is quarantined: from now on only its
    /// recovery path is allowed. Refused (the caller closes the
    /// connection) when it has none, or when the CONNECT could bring back
    /// more than the path: a kept session (its subscriptions would still
    /// deliver) or a will message.
    pub fn enter_quarantine(&mut self) -> Result<(), Violation> {
        let State::Open(open) = &mut self.state else {
            return Err(Violation::new(
                ViolationKind::Quarantined,
                "quarantined before CONNECT",
            ));
        };
        let why = if open.recovery_publish.is_empty() && open.recovery_subscribe.is_empty() {
            "it has no recovery path"
        } else if !open.clean_start {
            "a quarantined device must connect with a clean session"
        } else if open.has_will {
            "a quarantined device may not set a will message"
        } else {
            open.quarantined = true;
            return Ok(());
        };
        Err(Violation::new(
            ViolationKind::Quarantined,
            format!("device {} is quarantined: {why}", open.device),
        ))
    }

    /// The quarantine was lifted: the device's normal rules apply again.
    pub fn leave_quarantine(&mut self) {
        if let State::Open(open) = &mut self.state {
            open.quarantined = false;
        }
    }

    /// Whether only the recovery path is allowed.
    pub fn is_quarantined(&self) -> bool {
        matches!(&self.state, State::Open(o) if o.quarantined)
    }
}

/// A CONNACK refusing a CONNECT with `kind`.
pub fn connack_refusal(version: Version, kind: ViolationKind) -> Vec<u8> {
    let code = kind.connack_code(version);
    match version {
        Version::V311 => vec![0x20, 0x02, 0x00, code],
        Version::V5 => vec![0x20, 0x03, 0x00, code, 0x00],
    }
}

/// An MQTT 5 DISCONNECT with the reason code for `kind` and an empty
/// property block (detail stays in the event log). The spec lets the
/// property length be omitted, but some clients (rumqttc 0.25) then wait
/// for it forever.
pub fn disconnect(kind: ViolationKind) -> Vec<u8> {
    vec![0xe0, 0x02, kind.disconnect_code(), 0x00]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::codec::{MAX_REMAINING_LENGTH, encode_remaining, frame_header};

    const POLICY: &str = r#"
        [groups.s]
        publish = ["dev/%c/#", "shared/+/x"]
        subscribe = ["cmd/%c/+"]
        max_qos = 1
        max_payload = 16
        payload_format = "utf8"
        [[devices]]
        name = "d1"
        identity = "urn:uuid:1"
        client_id = "c1"
        group = "s"
    "#;

    fn policy(text: &str) -> Arc<Policy> {
        Arc::new(Policy::from_toml(text, "t").unwrap())
    }

    fn s(x: &str) -> Vec<u8> {
        let mut v = (x.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(x.as_bytes());
        v
    }

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        encode_remaining(body.len(), &mut f);
        f.extend_from_slice(body);
        f
    }

    fn connect(version: u8, client: &str) -> Vec<u8> {
        let mut b = s("MQTT");
        b.extend([version, 2, 0, 30]);
        if version == 5 {
            b.push(0);
        }
        b.extend(s(client));
        frame(0x10, &b)
    }

    fn publish(first: u8, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = s(topic);
        if first & 0x06 != 0 {
            b.extend([0, 1]);
        }
        b.extend_from_slice(payload);
        frame(first, &b)
    }

    fn run(session: &mut Session, p: &Arc<Policy>, f: &[u8]) -> Result<Inspected, Violation> {
        let h = frame_header(f, MAX_REMAINING_LENGTH)?.unwrap();
        session.inspect(p, &h, f)
    }

    fn open(p: &Arc<Policy>) -> Session {
        let mut s = Session::new(PeerIdentity {
            names: vec!["cn".into(), "urn:uuid:1".into()],
        });
        assert!(matches!(
            run(&mut s, p, &connect(4, "c1")),
            Ok(Inspected::Connected { .. })
        ));
        s
    }

    fn kind(r: Result<Inspected, Violation>) -> ViolationKind {
        r.unwrap_err().kind
    }

    #[test]
    fn connect_first_once_and_bound() {
        let p = policy(POLICY);
        let peer = PeerIdentity {
            names: vec!["urn:uuid:1".into()],
        };
        let mut s = Session::new(peer.clone());
        assert_eq!(kind(run(&mut s, &p, &[0xc0, 0])), ViolationKind::Protocol);
        let mut s = Session::new(peer.clone());
        assert_eq!(
            kind(run(&mut s, &p, &connect(5, "other"))),
            ViolationKind::ClientIdMismatch
        );
        assert_eq!(s.version(), Some(Version::V5));
        let mut s = Session::new(PeerIdentity {
            names: vec!["stranger".into()],
        });
        assert_eq!(
            kind(run(&mut s, &p, &connect(4, "c1"))),
            ViolationKind::UnknownDevice
        );
        let mut s = open(&p);
        assert_eq!(
            kind(run(&mut s, &p, &connect(4, "c1"))),
            ViolationKind::Protocol
        );
        let mut s = open(&p);
        assert_eq!(
            kind(run(&mut s, &p, &[0x20, 2, 0, 0])),
            ViolationKind::Protocol
        );
        let mut s = open(&p);
        assert_eq!(
            kind(run(&mut s, &p, &[0x90, 3, 0, 1, 0])),
            ViolationKind::Protocol
        );
    }

    #[test]
    fn publish_rules() {
        let p = policy(POLICY);
        let mut s = open(&p);
        assert_eq!(
            run(&mut s, &p, &publish(0x30, "dev/c1/t", b"hi")),
            Ok(Inspected::Publish { payload: 2 })
        );
        assert_eq!(
            run(&mut s, &p, &publish(0x32, "shared/a/x", b"")),
            Ok(Inspected::Publish { payload: 0 })
        );
        let cases: &[(Vec<u8>, ViolationKind)] = &[
            (publish(0x30, "dev/c2/t", b""), ViolationKind::NotAuthorized),
            (
                publish(0x30, "dev/c1/#", b""),
                ViolationKind::TopicNameInvalid,
            ),
            (publish(0x30, "", b""), ViolationKind::TopicNameInvalid),
            (
                publish(0x34, "dev/c1/t", b""),
                ViolationKind::QosNotSupported,
            ),
            (
                publish(0x31, "dev/c1/t", b""),
                ViolationKind::RetainNotSupported,
            ),
            (
                publish(0x30, "dev/c1/t", &[b'a'; 17]),
                ViolationKind::PacketTooLarge,
            ),
            (
                publish(0x30, "dev/c1/t", &[0xff]),
                ViolationKind::PayloadFormatInvalid,
            ),
            (publish(0x36, "dev/c1/t", b""), ViolationKind::Malformed),
        ];
        for (f, k) in cases {
            let mut s = open(&p);
            assert_eq!(kind(run(&mut s, &p, f)), *k, "{f:?}");
        }
    }

    #[test]
    fn subscribe_rules() {
        let p = policy(POLICY);
        let sub = |filter: &str, qos: u8| {
            let mut b = vec![0, 1];
            b.extend(s(filter));
            b.push(qos);
            frame(0x82, &b)
        };
        let mut ses = open(&p);
        assert_eq!(run(&mut ses, &p, &sub("cmd/c1/+", 1)), Ok(Inspected::Other));
        assert_eq!(
            run(&mut ses, &p, &sub("cmd/c1/reboot", 0)),
            Ok(Inspected::Other)
        );
        for (f, q, k) in [
            ("#", 0, ViolationKind::NotAuthorized),
            ("$SYS/#", 0, ViolationKind::NotAuthorized),
            ("cmd/c1/#", 0, ViolationKind::NotAuthorized),
            ("cmd/c2/+", 0, ViolationKind::NotAuthorized),
            ("cmd/#/x", 0, ViolationKind::TopicFilterInvalid),
            ("cmd/c1/+", 2, ViolationKind::QosNotSupported),
        ] {
            let mut ses = open(&p);
            assert_eq!(kind(run(&mut ses, &p, &sub(f, q))), k, "{f}");
        }
        let mut ses = open(&p);
        assert_eq!(
            kind(run(&mut ses, &p, &sub(&"/".repeat(65_000), 0))),
            ViolationKind::TopicFilterInvalid
        );
    }

    #[test]
    fn will_is_checked_like_a_publish() {
        let p = policy(POLICY);
        let mut b = s("MQTT");
        b.extend([4, 0b0000_0110, 0, 30]);
        b.extend(s("c1"));
        b.extend(s("elsewhere/x"));
        b.extend(s("bye"));
        let mut ses = Session::new(PeerIdentity {
            names: vec!["urn:uuid:1".into()],
        });
        assert_eq!(
            kind(run(&mut ses, &p, &frame(0x10, &b))),
            ViolationKind::NotAuthorized
        );
    }

    #[test]
    fn topic_aliases_cannot_bypass_topic_rules() {
        let p = policy(POLICY);
        let mut ses = Session::new(PeerIdentity {
            names: vec!["urn:uuid:1".into()],
        });
        run(&mut ses, &p, &connect(5, "c1")).unwrap();
        let aliased = |topic: &str, alias: u16| {
            let mut b = s(topic);
            b.extend([3, 0x23]);
            b.extend(alias.to_be_bytes());
            b.extend(b"x");
            frame(0x30, &b)
        };
        assert_eq!(
            kind(run(&mut ses, &p, &aliased("", 3))),
            ViolationKind::TopicAliasInvalid
        );
        let mut ses = Session::new(PeerIdentity {
            names: vec!["urn:uuid:1".into()],
        });
        run(&mut ses, &p, &connect(5, "c1")).unwrap();
        assert!(run(&mut ses, &p, &aliased("dev/c1/a", 3)).is_ok());
        assert!(run(&mut ses, &p, &aliased("", 3)).is_ok());
        assert_eq!(
            kind(run(&mut ses, &p, &aliased("dev/c1/a", 65))),
            ViolationKind::TopicAliasInvalid
        );
    }

    #[test]
    fn reload_applies_to_open_sessions() {
        let p = policy(POLICY);
        let mut ses = open(&p);
        let narrower = policy(&POLICY.replace("\"dev/%c/#\", ", ""));
        assert_eq!(
            kind(run(&mut ses, &narrower, &publish(0x30, "dev/c1/t", b""))),
            ViolationKind::NotAuthorized
        );
        assert!(run(&mut ses, &narrower, &publish(0x30, "shared/a/x", b"")).is_ok());
        let gone = policy("");
        assert_eq!(
            kind(run(&mut ses, &gone, &[0xc0, 0])),
            ViolationKind::NotAuthorized
        );
    }
}
