//! Fuzz harness for the gateway's three protocol inspectors: MQTT
//! (`mqtt::codec` + `Session`), Modbus TCP (`modbus::codec` +
//! `modbus::inspect`) and CoAP (`coap::codec` + `coap::inspect`), each
//! under one fixed policy ([`POLICY`]) so mutated inputs reach the policy
//! checks, not only the parsers.
//!
//! Each `*_session` function drives the inspection layer the way its
//! proxy does, without sockets, and returns what the gateway would have
//! done (forwarded frames, refusals). The same file is compiled into
//! `crates/gateway/tests/fuzz_corpus.rs`, which replays every seed in
//! `fuzz/corpus/<target>/` on stable Rust and checks that each named
//! bad-case seed (made by the `*_seeds` functions here) is refused for
//! the reason it was written for.
//!
//! A function returns normally for any input; a panic is a finding:
//! either the gateway panicked on untrusted input, or an invariant
//! asserted here does not hold:
//! - a forwarded frame re-parses to itself and is allowed by the policy,
//!   checked here independently of the gateway's own rule code where that
//!   is cheap (topic prefixes, unit ids, function codes, paths);
//! - nothing after a refusal that closes the connection is forwarded;
//! - MQTT and Modbus outcomes do not depend on how the byte stream was
//!   split into reads;
//! - a correct server answer to every forwarded Modbus request is
//!   accepted by the response matcher;
//! - no CoAP message id is forwarded twice within the exchange lifetime.
//!
//! Input layouts (the first byte picks how a stream is cut into reads:
//! 0 all at once, n > 0 pseudo-random reads of 1..=n bytes):
//! - `mqtt_session`: `[chunking] client-bytes...`
//! - `modbus_session`: `[chunking | 0x80 if the server answers] client-bytes...`
//! - `coap_session`: records `[tag] [len: u16 BE] datagram`, where bit 0
//!   of `tag` marks a server datagram and `tag >> 1` is the seconds the
//!   clock moves on before it; a short last record takes what is left.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gateway::coap::blockwise::Transfers;
use gateway::coap::codec::{self as coap_codec, Code, Message, MessageType, Method};
use gateway::coap::inspect::{self as coap_inspect, Dedup, Exchanges, Forward};
use gateway::modbus::codec::{self as modbus_codec, Frame, Mbap, Request};
use gateway::modbus::inspect::{self as modbus_inspect, ResponseMatcher};
use gateway::mqtt::codec::{self as mqtt_codec, Packet, Version};
use gateway::{Inspected, PeerIdentity, Policy, Session, Violation, ViolationKind};
use tokio::time::Instant;

/// The one policy every gateway target runs under: a representative MQTT
/// device, Modbus device and CoAP device. The seeds below are written
/// against it.
pub const POLICY: &str = r#"
[limits]
max_packet_size = 65536
max_topic_levels = 16

[groups.sensors]
publish = ["dev/%c/#"]
subscribe = ["cmd/%c/+"]
max_qos = 1
retain = false
max_payload = 256
payload_format = "utf8"

[[devices]]
name = "fuzz-device"
identity = "urn:dev:fuzz"
client_id = "fuzz-1"
group = "sensors"

[[modbus.devices]]
name = "plc"
source = "127.0.0.1"
unit_ids = [1, 2]
functions = [1, 2, 3, 4, 5, 6, 15, 16, 23]
refusal = "exception"
ranges = { 1 = [[0, 99]], 2 = [[0, 99]], 3 = [[0, 99], [100, 199]], 4 = [[0, 99]], 5 = [[0, 15]], 6 = [[100, 109]], 15 = [[0, 15]], 16 = [[100, 109], [110, 119]], 23 = [[0, 99]] }

[coap]
exchange_lifetime_secs = 60

[[coap.devices]]
name = "thermo"
source = "127.0.0.1"
methods = ["GET", "POST", "PUT"]
paths = [["sensors"], ["fw", "upload"]]
max_payload = 64
refusal = "forbidden"
"#;

/// The MQTT client id [`POLICY`] binds to the peer's certificate.
pub const MQTT_CLIENT_ID: &str = "fuzz-1";
/// The certificate names of the MQTT peer.
pub const MQTT_PEER_NAMES: [&str; 2] = ["fuzz-cn", "urn:dev:fuzz"];
/// Where the Modbus and CoAP devices' traffic comes from.
pub const DEVICE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

fn policy() -> &'static Arc<Policy> {
    static POLICY_CELL: OnceLock<Arc<Policy>> = OnceLock::new();
    POLICY_CELL.get_or_init(|| {
        Arc::new(Policy::from_toml(POLICY, "fuzz policy").expect("the fixed fuzz policy is valid"))
    })
}

/// The variant name of an error's `Debug` form (`PduLength { .. }` →
/// `PduLength`): a stable label for seeds' expected outcomes.
fn variant(e: &impl Debug) -> String {
    let text = format!("{e:?}");
    text.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Cuts a stream into reads of 1..=`max` bytes (`max` 0: one read),
/// pseudo-randomly but reproducibly from `max`.
struct Reads<'a> {
    rest: &'a [u8],
    max: usize,
    state: u32,
}

impl<'a> Reads<'a> {
    fn new(stream: &'a [u8], max: u8) -> Self {
        Self {
            rest: stream,
            max: usize::from(max),
            state: u32::from(max).wrapping_mul(0x9e37_79b9) | 1,
        }
    }
}

impl<'a> Iterator for Reads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let n = if self.max == 0 {
            self.rest.len()
        } else {
            // xorshift32
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            1 + (self.state as usize) % self.max
        };
        let (read, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        Some(read)
    }
}

// ---------------------------------------------------------------- MQTT

/// What the MQTT proxy would have done with a client's byte stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttOutcome {
    /// Frames forwarded to the broker, in order.
    pub forwarded: Vec<Vec<u8>>,
    /// Why the gateway closed the connection (the `ViolationKind` name,
    /// e.g. `Malformed`), if it did; at most one.
    pub refusals: Vec<String>,
    /// The client sent DISCONNECT (forwarded; the connection ends).
    pub disconnected: bool,
}

/// MQTT target: a client byte stream through `Session`, read in chunks.
pub fn mqtt_session(data: &[u8]) -> MqttOutcome {
    let Some((&chunking, stream)) = data.split_first() else {
        return MqttOutcome::default();
    };
    let outcome = drive_mqtt(Reads::new(stream, chunking));
    if chunking != 0 {
        assert_eq!(
            outcome,
            drive_mqtt(Reads::new(stream, 0)),
            "the outcome depends on how the stream was read"
        );
    }
    check_mqtt_outcome(stream, &outcome);
    outcome
}

/// The proxy's loop (`proxy.rs`: `first_packet`, `upstream_loop`)
/// without sockets or rate limits.
fn drive_mqtt<'a>(reads: impl Iterator<Item = &'a [u8]>) -> MqttOutcome {
    let policy = policy();
    let mut session = Session::new(PeerIdentity {
        names: MQTT_PEER_NAMES.iter().map(|n| (*n).to_owned()).collect(),
    });
    let mut out = MqttOutcome::default();
    let refuse = |out: &mut MqttOutcome, v: Violation| {
        out.refusals.push(format!("{:?}", v.kind));
    };
    let mut buf: Vec<u8> = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let header = match mqtt_codec::frame_header(&buf, policy.limits.max_packet_size) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    refuse(&mut out, e.into());
                    return out;
                }
            };
            // As `first_packet`: refused as soon as the header is known.
            if !session.is_open() && header.kind != mqtt_codec::PacketType::Connect {
                refuse(
                    &mut out,
                    Violation::new(ViolationKind::Protocol, "before CONNECT"),
                );
                return out;
            }
            let len = header.frame_len();
            let Some(frame) = buf.get(..len) else {
                break;
            };
            match session.inspect(policy, &header, frame) {
                Err(v) => {
                    refuse(&mut out, v);
                    return out;
                }
                Ok(inspected) => {
                    out.forwarded.push(frame.to_vec());
                    if inspected == Inspected::Disconnect {
                        out.disconnected = true;
                        return out;
                    }
                }
            }
            buf.drain(..len);
        }
    }
    out
}

/// Forwarded frames are the stream's own bytes, re-parse, and are
/// allowed by [`POLICY`] (checked here without the gateway's rule code).
pub fn check_mqtt_outcome(stream: &[u8], outcome: &MqttOutcome) {
    let sent: Vec<u8> = outcome.forwarded.concat();
    assert!(
        stream.starts_with(&sent),
        "forwarded bytes are not the client's"
    );
    let mut version = None;
    for (i, frame) in outcome.forwarded.iter().enumerate() {
        let header = mqtt_codec::frame_header(frame, mqtt_codec::MAX_REMAINING_LENGTH)
            .expect("a forwarded frame has a valid header")
            .expect("a forwarded frame is complete");
        assert_eq!(header.frame_len(), frame.len(), "one frame per forward");
        let packet =
            mqtt_codec::parse(&header, frame, version).expect("a forwarded frame re-parses");
        match packet {
            Packet::Connect(c) => {
                assert_eq!(i, 0, "CONNECT forwarded twice");
                assert_eq!(c.client_id, MQTT_CLIENT_ID);
                if let Some(w) = &c.will {
                    assert!(allowed_topic(w.topic) && w.qos <= 1 && !w.retain);
                }
                version = Some(c.version);
            }
            _ if i == 0 => panic!("forwarded {packet:?} before CONNECT"),
            Packet::ServerOnly(kind) => panic!("forwarded server-only {kind:?}"),
            Packet::Publish(p) => {
                assert!(p.qos <= 1, "QoS {} forwarded", p.qos);
                assert!(!p.retain, "retained message forwarded");
                assert!(p.payload.len() <= 256, "oversized payload forwarded");
                assert!(
                    std::str::from_utf8(p.payload).is_ok(),
                    "non-UTF-8 forwarded"
                );
                // Empty only with an MQTT 5 topic alias set earlier.
                assert!(
                    (p.topic.is_empty() && version == Some(Version::V5)) || allowed_topic(p.topic),
                    "publish to `{}` forwarded",
                    p.topic
                );
            }
            Packet::Subscribe { subscriptions, .. } => {
                for s in subscriptions {
                    let rest = s.filter.strip_prefix("cmd/fuzz-1/");
                    assert!(
                        rest.is_some_and(
                            |r| !r.contains(['/', '#']) && (r == "+" || !r.contains('+'))
                        ),
                        "subscription to `{}` forwarded",
                        s.filter
                    );
                    assert!(s.qos <= 1);
                }
            }
            Packet::Auth => assert_eq!(version, Some(Version::V5)),
            Packet::Ack { .. } | Packet::Unsubscribe { .. } | Packet::Pingreq => {}
            Packet::Disconnect => assert_eq!(i + 1, outcome.forwarded.len()),
        }
    }
    if !outcome.refusals.is_empty() || outcome.disconnected {
        assert!(outcome.refusals.len() + usize::from(outcome.disconnected) == 1);
    }
}

/// A topic name under the device's publish rule `dev/%c/#`.
fn allowed_topic(topic: &str) -> bool {
    topic == "dev/fuzz-1"
        || topic
            .strip_prefix("dev/fuzz-1/")
            .is_some_and(|r| !r.contains(['+', '#', '\0']))
}

// -------------------------------------------------------------- Modbus

/// What the Modbus proxy would have done with a client's byte stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModbusOutcome {
    /// Request frames forwarded to the server, in order.
    pub forwarded: Vec<Vec<u8>>,
    /// Refusals in order: `Denied/<ExceptionCode>` (answered, the
    /// connection stays), `Malformed/<FrameError>` or a `ViolationKind`
    /// name from the response matcher (the connection closes).
    pub refusals: Vec<String>,
    /// The gateway closed the connection.
    pub closed: bool,
}

/// Modbus target: a client byte stream through `check_request` and the
/// `ResponseMatcher`, read in chunks; with bit 7 of the first byte set, a
/// simulated server answers every forwarded request after each read.
pub fn modbus_session(data: &[u8]) -> ModbusOutcome {
    let Some((&first, stream)) = data.split_first() else {
        return ModbusOutcome::default();
    };
    let (chunking, answer) = (first & 0x7f, first & 0x80 != 0);
    let outcome = drive_modbus(Reads::new(stream, chunking), answer);
    if chunking != 0 && !answer {
        // (Answers depend on where reads end: more or fewer requests are
        // outstanding at once, so only unanswered runs must match.)
        assert_eq!(
            outcome,
            drive_modbus(Reads::new(stream, 0), answer),
            "the outcome depends on how the stream was read"
        );
    }
    check_modbus(&outcome);
    outcome
}

/// The proxy's client half (`modbus/proxy.rs`: `relay`) without sockets.
fn drive_modbus<'a>(reads: impl Iterator<Item = &'a [u8]>, answer: bool) -> ModbusOutcome {
    let device = policy()
        .modbus
        .device_for(DEVICE_ADDR.ip())
        .expect("the fuzz policy names the Modbus device");
    let mut matcher = ResponseMatcher::default();
    let mut unanswered: Vec<(Mbap, Request, Vec<u8>)> = Vec::new();
    let mut out = ModbusOutcome::default();
    let mut buf: Vec<u8> = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        let mut used = 0;
        loop {
            let frame = match Frame::split(buf.get(used..).unwrap_or_default()) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.refusals.push(format!("Malformed/{}", variant(&e)));
                    out.closed = true;
                    return out;
                }
            };
            let len = frame.mbap.frame_len();
            match modbus_inspect::check_request(device, &frame) {
                Ok(request) => {
                    if let Err(v) = matcher.expect(frame.mbap.transaction, frame.mbap.unit, request)
                    {
                        out.refusals.push(format!("{:?}", v.kind));
                        out.closed = true;
                        return out;
                    }
                    out.forwarded
                        .push(buf.get(used..used + len).unwrap_or_default().to_vec());
                    unanswered.push((frame.mbap, request, frame.pdu.to_vec()));
                }
                Err(modbus_inspect::Refused::Malformed(e)) => {
                    out.refusals.push(format!("Malformed/{}", variant(&e)));
                    out.closed = true;
                    return out;
                }
                Err(modbus_inspect::Refused::Denied { code, .. }) => {
                    let reply = modbus_codec::exception_frame(&frame.mbap, frame.function(), code);
                    let parsed = Frame::split(&reply)
                        .expect("an exception reply is a valid frame")
                        .expect("an exception reply is complete");
                    assert_eq!(parsed.mbap.transaction, frame.mbap.transaction);
                    assert_eq!(parsed.pdu.len(), 2);
                    out.refusals.push(format!("Denied/{code:?}"));
                }
            }
            used += len;
        }
        buf.drain(..used);
        if answer {
            for (mbap, request, pdu) in unanswered.drain(..) {
                let response =
                    modbus_codec::encode(mbap.transaction, mbap.unit, &answer_pdu(&request, &pdu));
                let frame = Frame::split(&response)
                    .expect("a simulated answer is a valid frame")
                    .expect("a simulated answer is complete");
                matcher
                    .check_response(&frame)
                    .expect("a correct answer to a forwarded request is accepted");
            }
        }
    }
    out
}

/// The normal response PDU a server sends to `request`.
fn answer_pdu(request: &Request, pdu: &[u8]) -> Vec<u8> {
    let function = request.function();
    let len = request
        .response_pdu_len()
        .expect("only requests with a fixed answer are forwarded");
    match request {
        Request::WriteSingleCoil { .. }
        | Request::WriteSingleRegister { .. }
        | Request::WriteMultipleCoils(_)
        | Request::WriteMultipleRegisters(_) => pdu.get(..5).unwrap_or_default().to_vec(),
        _ => {
            let mut out = vec![function, u8::try_from(len - 2).expect("count fits a byte")];
            out.resize(len, 0);
            out
        }
    }
}

/// Forwarded frames are one whole frame each, to an allowed unit with an
/// allowed function, within the address space.
fn check_modbus(outcome: &ModbusOutcome) {
    for bytes in &outcome.forwarded {
        let frame = Frame::split(bytes)
            .expect("a forwarded frame re-splits")
            .expect("a forwarded frame is complete");
        assert_eq!(frame.mbap.frame_len(), bytes.len(), "one frame per forward");
        assert!([1, 2].contains(&frame.mbap.unit), "unit id not allowed");
        let request = modbus_codec::parse_request(frame.pdu).expect("a forwarded PDU re-parses");
        assert!(
            [1, 2, 3, 4, 5, 6, 15, 16, 23].contains(&request.function()),
            "function {} forwarded",
            request.function()
        );
        for span in request.spans() {
            assert!(
                u32::from(span.start) + u32::from(span.quantity) <= 65_536,
                "span past 65535 forwarded"
            );
        }
    }
    let closing = outcome
        .refusals
        .iter()
        .filter(|r| !r.starts_with("Denied/"))
        .count();
    assert!(closing <= 1 && (closing == 1) == outcome.closed);
}

// ---------------------------------------------------------------- CoAP

/// What the CoAP proxy would have done with a sequence of datagrams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoapOutcome {
    /// Device datagrams forwarded to the server, in order.
    pub forwarded: Vec<Vec<u8>>,
    /// Server datagrams relayed to the device.
    pub relayed: Vec<Vec<u8>>,
    /// Device datagrams refused, in order: `Malformed/<CodecError>`,
    /// `Protocol`, `Denied` or `Duplicate`.
    pub refusals: Vec<String>,
    /// Server datagrams dropped.
    pub dropped_responses: usize,
}

/// CoAP target: device and server datagrams through the codec,
/// `check_request`, `Dedup`, block-wise `Transfers` and `Exchanges`, with
/// a simulated clock.
pub fn coap_session(data: &[u8]) -> CoapOutcome {
    let policy = policy();
    let device = policy
        .coap
        .device_for(DEVICE_ADDR.ip())
        .expect("the fuzz policy names the CoAP device");
    let lifetime = policy.coap.exchange_lifetime;
    let mut dedup = Dedup::new(lifetime, coap_inspect::DEFAULT_DEDUP_CAPACITY);
    let mut exchanges = Exchanges::default();
    let mut blocks = Transfers::default();
    let block_limits = policy.coap.blocks;
    let mut forwarded_at: HashMap<u16, Instant> = HashMap::new();
    let mut now = Instant::now();
    let mut out = CoapOutcome::default();
    let mut rest = data;
    while let Some((&tag, after)) = rest.split_first() {
        let len = match after {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        };
        let body = after.get(2..).unwrap_or_default();
        let (datagram, next) = body.split_at(len.min(body.len()));
        rest = next;
        now += Duration::from_secs(u64::from(tag >> 1));
        if tag & 1 == 1 {
            let checked = coap_codec::parse(datagram)
                .map_err(|e| Violation::new(ViolationKind::Malformed, e.to_string()))
                .and_then(|msg| exchanges.check_response(&msg, datagram.len(), now));
            match checked {
                Ok(()) => {
                    let msg = coap_codec::parse(datagram).expect("a relayed response re-parses");
                    blocks.response(&msg);
                    assert!(
                        msg.code.class() != 0 || msg.code == Code::EMPTY,
                        "request code relayed to the device"
                    );
                    out.relayed.push(datagram.to_vec());
                }
                Err(_) => out.dropped_responses += 1,
            }
            continue;
        }
        // The proxy's order (`coap/proxy.rs`: `handle_device_datagram`).
        let msg = match coap_codec::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                out.refusals.push(format!("Malformed/{}", variant(&e)));
                continue;
            }
        };
        let forward = match coap_inspect::check_request(device, &msg) {
            Ok(f) => f,
            Err(refused) => {
                if matches!(refused, coap_inspect::Refused::Denied(_))
                    && msg.mtype == MessageType::Confirmable
                {
                    let reply = coap_codec::forbidden(&msg);
                    let parsed = coap_codec::parse(&reply).expect("4.03 reply parses");
                    assert_eq!(
                        (parsed.message_id, parsed.token),
                        (msg.message_id, msg.token)
                    );
                }
                out.refusals.push(variant(&refused));
                continue;
            }
        };
        if matches!(forward, Forward::Request(_)) {
            if let Err(refused) = dedup.check(DEVICE_ADDR, msg.message_id, now) {
                out.refusals.push(variant(&refused));
                continue;
            }
            blocks.expire(now);
            if let Err(refused) = blocks.request(&msg, &block_limits, now) {
                out.refusals.push(variant(&refused));
                continue;
            }
            assert!(
                blocks.len() <= block_limits.max_transfers
                    && blocks.bytes() <= block_limits.max_bytes,
                "block-wise state over its caps"
            );
            if let Err(refused) = exchanges.expect(&msg, datagram.len(), lifetime, now) {
                out.refusals.push(variant(&refused));
                continue;
            }
            if let Some(at) = forwarded_at.insert(msg.message_id, now) {
                assert!(
                    now.duration_since(at) >= lifetime,
                    "message id {} forwarded twice within the exchange lifetime",
                    msg.message_id
                );
            }
            check_coap_request(&msg);
        }
        out.forwarded.push(datagram.to_vec());
    }
    out
}

/// A forwarded request is allowed by [`POLICY`], checked here without
/// the gateway's rule code.
fn check_coap_request(msg: &Message<'_>) {
    let method = msg.code.method().expect("only requests are forwarded");
    assert!(
        matches!(method, Method::Get | Method::Post | Method::Put),
        "{method:?} forwarded"
    );
    assert!(matches!(
        msg.mtype,
        MessageType::Confirmable | MessageType::NonConfirmable
    ));
    let path: Vec<&[u8]> = msg.path().collect();
    assert!(
        path.first() == Some(&&b"sensors"[..])
            || path.get(..2) == Some(&[&b"fw"[..], &b"upload"[..]][..]),
        "path {path:?} forwarded"
    );
    assert!(msg.payload.len() <= 64, "oversized payload forwarded");
    assert!(!msg.has_option(coap_codec::option::PROXY_URI));
    assert!(!msg.has_option(coap_codec::option::PROXY_SCHEME));
}

// --------------------------------------------------------------- seeds

/// One corpus seed: its file name, bytes, and the refusals the replay
/// test expects (empty for a valid session).
#[derive(Debug, Clone)]
pub struct Seed {
    /// File name under `fuzz/corpus/<target>/`.
    pub name: &'static str,
    /// The fuzz input.
    pub data: Vec<u8>,
    /// Expected `refusals`, exactly.
    pub refusals: Vec<&'static str>,
}

fn seed(name: &'static str, data: Vec<u8>, refusals: &[&'static str]) -> Seed {
    Seed {
        name,
        data,
        refusals: refusals.to_vec(),
    }
}

fn mqtt_str(s: &str) -> Vec<u8> {
    let mut v = u16::try_from(s.len())
        .expect("seed strings are short")
        .to_be_bytes()
        .to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn mqtt_frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    mqtt_codec::encode_remaining(body.len(), &mut f);
    f.extend_from_slice(body);
    f
}

fn mqtt_connect(level: u8) -> Vec<u8> {
    let mut b = mqtt_str("MQTT");
    b.extend([level, 0x02, 0, 30]);
    if level == 5 {
        b.push(0);
    }
    b.extend(mqtt_str(MQTT_CLIENT_ID));
    mqtt_frame(0x10, &b)
}

fn mqtt_publish(first: u8, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = mqtt_str(topic);
    if first & 0x06 != 0 {
        b.extend([0, 1]);
    }
    b.extend_from_slice(payload);
    mqtt_frame(first, &b)
}

fn mqtt_subscribe(filter: &str, qos: u8) -> Vec<u8> {
    let mut b = vec![0, 2];
    b.extend(mqtt_str(filter));
    b.push(qos);
    mqtt_frame(0x82, &b)
}

/// `[chunking]` then CONNECT (3.1.1) then `rest`.
fn mqtt_after_connect(rest: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend(mqtt_connect(4));
    for r in rest {
        v.extend_from_slice(r);
    }
    v
}

/// The MQTT seeds: valid sessions, and one per bad case of issue 6.
pub fn mqtt_seeds() -> Vec<Seed> {
    let ok311 = {
        let mut v = mqtt_after_connect(&[
            &mqtt_publish(0x30, "dev/fuzz-1/temp", b"21.5"),
            &mqtt_publish(0x32, "dev/fuzz-1/status", b"{\"ok\":true}"),
            &[0x40, 2, 0, 9],
            &mqtt_subscribe("cmd/fuzz-1/+", 1),
            &mqtt_frame(0xa2, &[vec![0, 3], mqtt_str("cmd/fuzz-1/+")].concat()),
            &[0xc0, 0],
            &[0xe0, 0],
        ]);
        v[0] = 0;
        v
    };
    let mut chunked = ok311.clone();
    chunked[0] = 7;
    let mut bytewise = ok311.clone();
    bytewise[0] = 1;
    let ok5 = {
        let mut v = vec![3];
        v.extend(mqtt_connect(5));
        // Topic alias 1 set, then used with an empty topic; a response
        // topic; a v5 DISCONNECT with a reason code.
        let mut b = mqtt_str("dev/fuzz-1/a");
        b.extend([3, 0x23, 0, 1]);
        b.extend(b"on");
        v.extend(mqtt_frame(0x30, &b));
        let mut b = mqtt_str("");
        b.extend([3, 0x23, 0, 1]);
        b.extend(b"off");
        v.extend(mqtt_frame(0x30, &b));
        // Response Topic and Payload Format Indicator properties.
        let mut props = vec![0x08];
        props.extend(mqtt_str("dev/fuzz-1/r"));
        props.extend([0x01, 1]);
        let mut b = mqtt_str("dev/fuzz-1/q");
        b.push(u8::try_from(props.len()).expect("short properties"));
        b.extend(props);
        b.extend(b"{}");
        v.extend(mqtt_frame(0x30, &b));
        v.extend([0xe0, 2, 0, 0]);
        v
    };
    let with_will = {
        let mut b = mqtt_str("MQTT");
        b.extend([4, 0b0000_1110, 0, 30]);
        b.extend(mqtt_str(MQTT_CLIENT_ID));
        b.extend(mqtt_str("dev/fuzz-1/will"));
        b.extend(mqtt_str("gone"));
        let mut v = vec![0];
        v.extend(mqtt_frame(0x10, &b));
        v.extend([0xe0, 0]);
        v
    };
    let truncated_subscribe = mqtt_frame(0x82, &[0, 2, 0, 9, b'c']);
    let packet_id_zero = {
        let mut b = mqtt_str("dev/fuzz-1/t");
        b.extend([0, 0]);
        b.extend(b"x");
        mqtt_frame(0x32, &b)
    };
    let traffic_before_connect = {
        let mut v = vec![0];
        v.extend(mqtt_publish(0x30, "dev/fuzz-1/t", b"early"));
        v
    };
    vec![
        seed("valid-v311-session", ok311, &[]),
        seed("valid-v311-chunked", chunked, &[]),
        seed("valid-v311-bytewise", bytewise, &[]),
        seed("valid-v5-alias-session", ok5, &[]),
        seed("valid-will", with_will, &[]),
        seed(
            "remaining-length-5-bytes",
            mqtt_after_connect(&[&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]]),
            &["Malformed"],
        ),
        seed(
            "remaining-length-over-policy-max",
            // 131 072 > max_packet_size 65 536; refused on the header.
            mqtt_after_connect(&[&[0x30, 0x80, 0x80, 0x08]]),
            &["PacketTooLarge"],
        ),
        seed(
            "publish-zero-length-topic",
            mqtt_after_connect(&[&mqtt_publish(0x30, "", b"x")]),
            &["TopicNameInvalid"],
        ),
        seed(
            "publish-wildcard-topic",
            mqtt_after_connect(&[&mqtt_publish(0x30, "dev/fuzz-1/+/x", b"x")]),
            &["TopicNameInvalid"],
        ),
        seed(
            "subscribe-65000-slashes",
            mqtt_after_connect(&[&mqtt_subscribe(&"/".repeat(65_000), 0)]),
            &["TopicFilterInvalid"],
        ),
        seed(
            "subscribe-truncated",
            mqtt_after_connect(&[&truncated_subscribe]),
            &["Malformed"],
        ),
        seed(
            "client-sends-connack",
            mqtt_after_connect(&[&[0x20, 2, 0, 0]]),
            &["Protocol"],
        ),
        seed(
            "client-sends-suback",
            mqtt_after_connect(&[&[0x90, 3, 0, 1, 0]]),
            &["Protocol"],
        ),
        seed(
            "client-sends-pingresp",
            mqtt_after_connect(&[&[0xd0, 0]]),
            &["Protocol"],
        ),
        seed(
            "second-connect",
            mqtt_after_connect(&[&mqtt_connect(4)]),
            &["Protocol"],
        ),
        seed(
            "traffic-before-connect",
            traffic_before_connect,
            &["Protocol"],
        ),
        seed(
            "publish-qos-3",
            mqtt_after_connect(&[&mqtt_publish(0x36, "dev/fuzz-1/t", b"x")]),
            &["Malformed"],
        ),
        seed(
            "publish-packet-id-0",
            mqtt_after_connect(&[&packet_id_zero]),
            &["Protocol"],
        ),
        seed(
            "subscribe-hash",
            mqtt_after_connect(&[&mqtt_subscribe("#", 0)]),
            &["NotAuthorized"],
        ),
        seed(
            "subscribe-sys-hash",
            mqtt_after_connect(&[&mqtt_subscribe("$SYS/#", 0)]),
            &["NotAuthorized"],
        ),
        seed(
            "publish-outside-prefix",
            mqtt_after_connect(&[&mqtt_publish(0x30, "dev/other-device/t", b"x")]),
            &["NotAuthorized"],
        ),
        seed(
            "publish-oversized-payload",
            mqtt_after_connect(&[&mqtt_publish(0x30, "dev/fuzz-1/t", &[b'a'; 257])]),
            &["PacketTooLarge"],
        ),
        seed(
            "publish-retained",
            mqtt_after_connect(&[&mqtt_publish(0x31, "dev/fuzz-1/t", b"x")]),
            &["RetainNotSupported"],
        ),
    ]
}

fn read_pdu(function: u8, address: u16, quantity: u16) -> Vec<u8> {
    let mut p = vec![function];
    p.extend(address.to_be_bytes());
    p.extend(quantity.to_be_bytes());
    p
}

fn write_pdu(function: u8, address: u16, quantity: u16, byte_count: u8, data: usize) -> Vec<u8> {
    let mut p = read_pdu(function, address, quantity);
    p.push(byte_count);
    p.resize(p.len() + data, 0);
    p
}

/// `[first]`, a valid FC3 read, then `frames`.
fn modbus_after_read(first: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![first];
    v.extend(modbus_codec::encode(1, 1, &read_pdu(3, 0, 10)));
    for f in frames {
        v.extend_from_slice(f);
    }
    v
}

/// The Modbus seeds: valid sessions, and one per bad case of issue 6.
pub fn modbus_seeds() -> Vec<Seed> {
    let enc = modbus_codec::encode;
    let valid_frames = vec![
        enc(2, 1, &read_pdu(1, 0, 99)),
        enc(3, 2, &read_pdu(2, 0, 1)),
        enc(4, 1, &read_pdu(3, 100, 100)),
        enc(5, 1, &read_pdu(4, 0, 100)),
        enc(6, 1, &[5, 0, 3, 0xff, 0]),
        enc(7, 1, &[6, 0, 100, 0x12, 0x34]),
        enc(8, 1, &write_pdu(15, 0, 16, 2, 2)),
        enc(9, 1, &write_pdu(16, 110, 10, 20, 20)),
        enc(10, 1, &{
            let mut p = vec![23, 0, 0, 0, 4, 0, 10, 0, 2, 4];
            p.extend([0, 1, 0, 2]);
            p
        }),
    ];
    let smuggled = {
        // An FC3 whose MBAP length also covers an FC16 write.
        let mut pdu = read_pdu(3, 0, 1);
        pdu.extend(write_pdu(16, 100, 1, 2, 2));
        enc(2, 1, &pdu)
    };
    let short_length = {
        // MBAP length 5 (unit id + 4 PDU bytes) for an FC3, which needs 5.
        let mut f = enc(2, 1, &read_pdu(3, 0, 1));
        f[5] = 5;
        f.truncate(6 + 5);
        f
    };
    let bad_protocol = {
        let mut f = enc(2, 1, &read_pdu(3, 0, 1));
        f[3] = 1;
        f
    };
    let length_out_of_range = {
        let mut f = enc(2, 1, &read_pdu(3, 0, 1));
        f[4] = 1;
        f[5] = 0;
        f
    };
    vec![
        seed(
            "valid-reads-and-writes",
            modbus_after_read(0, &valid_frames),
            &[],
        ),
        seed(
            "valid-answered-chunked",
            modbus_after_read(0x80 | 9, &valid_frames),
            &[],
        ),
        seed("valid-bytewise", modbus_after_read(1, &valid_frames), &[]),
        seed(
            "protocol-id-not-0",
            modbus_after_read(0, &[bad_protocol]),
            &["Malformed/ProtocolId"],
        ),
        seed(
            "mbap-length-out-of-range",
            modbus_after_read(0, &[length_out_of_range]),
            &["Malformed/Length"],
        ),
        seed(
            "mbap-length-short-of-pdu",
            modbus_after_read(0, &[short_length]),
            &["Malformed/PduLength"],
        ),
        seed(
            "mbap-length-covers-fc16-after-fc3",
            modbus_after_read(0, &[smuggled]),
            &["Malformed/PduLength"],
        ),
        seed(
            "function-8-diagnostics",
            modbus_after_read(0, &[enc(2, 1, &[8, 0, 0, 0xa5, 0x37])]),
            &["Denied/IllegalFunction"],
        ),
        seed(
            "function-43-device-identification",
            modbus_after_read(0, &[enc(2, 1, &[43, 14, 1, 0])]),
            &["Denied/IllegalFunction"],
        ),
        seed(
            "function-90-vendor",
            modbus_after_read(0, &[enc(2, 1, &[90, 0, 1, 2, 3])]),
            &["Denied/IllegalFunction"],
        ),
        seed(
            "function-reserved-codes",
            modbus_after_read(
                0,
                &[
                    enc(2, 1, &[0, 0, 0, 0, 1]),
                    enc(3, 1, &[9, 0, 0, 0, 1]),
                    enc(4, 1, &[127, 0, 0, 0, 1]),
                ],
            ),
            &[
                "Denied/IllegalFunction",
                "Denied/IllegalFunction",
                "Denied/IllegalFunction",
            ],
        ),
        seed(
            "function-with-exception-bit",
            modbus_after_read(0, &[enc(2, 1, &[0x83, 2])]),
            &["Malformed/ResponseCode"],
        ),
        seed(
            "write-straddling-allowed-ranges",
            // 109..=110 crosses from [100, 109] into [110, 119].
            modbus_after_read(0, &[enc(2, 1, &write_pdu(16, 109, 2, 4, 4))]),
            &["Denied/IllegalDataAddress"],
        ),
        seed(
            "start-plus-quantity-past-65535",
            modbus_after_read(0, &[enc(2, 1, &read_pdu(3, 65_535, 2))]),
            &["Malformed/AddressOverflow"],
        ),
        seed(
            "quantity-zero",
            modbus_after_read(0, &[enc(2, 1, &read_pdu(3, 0, 0))]),
            &["Malformed/Quantity"],
        ),
        seed(
            "quantity-over-maximum",
            modbus_after_read(0, &[enc(2, 1, &read_pdu(3, 0, 126))]),
            &["Malformed/Quantity"],
        ),
        seed(
            "byte-count-mismatch",
            modbus_after_read(0, &[enc(2, 1, &write_pdu(16, 100, 2, 3, 3))]),
            &["Malformed/ByteCount"],
        ),
        seed(
            "unknown-unit-id",
            modbus_after_read(0, &[enc(2, 9, &read_pdu(3, 0, 1))]),
            &["Denied/GatewayPathUnavailable"],
        ),
        seed(
            "transaction-id-reused-while-outstanding",
            modbus_after_read(0, &[enc(1, 1, &read_pdu(3, 0, 1))]),
            &["Protocol"],
        ),
    ]
}

fn coap_record(server: bool, advance_secs: u8, datagram: &[u8]) -> Vec<u8> {
    let mut v = vec![(advance_secs << 1) | u8::from(server)];
    v.extend(
        u16::try_from(datagram.len())
            .expect("seed datagrams are short")
            .to_be_bytes(),
    );
    v.extend_from_slice(datagram);
    v
}

fn coap_request(
    method: Method,
    mid: u16,
    path: &[&str],
    extra: &[(u16, &[u8])],
    payload: &[u8],
) -> Vec<u8> {
    let mut options: Vec<(u16, &[u8])> = path
        .iter()
        .map(|s| (coap_codec::option::URI_PATH, s.as_bytes()))
        .collect();
    options.extend_from_slice(extra);
    coap_codec::encode(
        MessageType::Confirmable,
        method.code(),
        mid,
        &mid.to_be_bytes(),
        &options,
        payload,
    )
}

fn coap_device(datagrams: &[Vec<u8>]) -> Vec<u8> {
    datagrams
        .iter()
        .flat_map(|d| coap_record(false, 0, d))
        .collect()
}

/// The CoAP seeds: valid exchanges, and one per bad case of issue 6.
pub fn coap_seeds() -> Vec<Seed> {
    let get = coap_request(Method::Get, 1, &["sensors", "temp"], &[], &[]);
    let ack = coap_codec::encode(
        MessageType::Acknowledgement,
        Code::new(2, 5),
        1,
        &1u16.to_be_bytes(),
        &[],
        b"21.5",
    );
    let put = coap_request(
        Method::Put,
        2,
        &["fw", "upload"],
        &[(coap_codec::option::CONTENT_FORMAT, &[42])],
        b"chunk",
    );
    let empty_ack_then_separate = [
        coap_codec::encode(MessageType::Acknowledgement, Code::EMPTY, 2, &[], &[], &[]),
        coap_codec::encode(
            MessageType::Confirmable,
            Code::new(2, 4),
            77,
            &2u16.to_be_bytes(),
            &[],
            &[],
        ),
    ];
    let device_ack =
        coap_codec::encode(MessageType::Acknowledgement, Code::EMPTY, 77, &[], &[], &[]);
    let mut valid = Vec::new();
    valid.extend(coap_record(false, 0, &get));
    valid.extend(coap_record(true, 0, &ack));
    valid.extend(coap_record(false, 1, &put));
    valid.extend(coap_record(true, 0, &empty_ack_then_separate[0]));
    valid.extend(coap_record(true, 2, &empty_ack_then_separate[1]));
    valid.extend(coap_record(false, 0, &device_ack));
    // The same message id again after the exchange lifetime is new.
    let mut reuse_after_lifetime = coap_record(false, 0, &get);
    reuse_after_lifetime.extend(coap_record(false, 61, &get));

    let token_lengths: Vec<Vec<u8>> = (9u8..=15)
        .map(|tkl| {
            let mut d = vec![0x40 | tkl, 0x01, 0, tkl];
            d.resize(4 + usize::from(tkl), 0xaa);
            d
        })
        .collect();
    let nibble_15 = vec![
        // Delta nibble 15 with length 1: not the 0xFF payload marker.
        vec![0x40, 0x01, 0, 1, 0xf1, b'x'],
        // Length nibble 15.
        vec![0x40, 0x01, 0, 2, 0xbf, b'x'],
    ];
    // Uri-Path (delta 11) announcing 10 bytes with 2 left.
    let option_past_end = vec![0x40, 0x01, 0, 1, 0xba, b's', b'e'];
    let many_segments = {
        let mut d = vec![0x40, 0x01, 0, 1, 0xb1, b'a'];
        for _ in 1..300 {
            d.extend([0x01, b'a']);
        }
        d
    };
    let block1 = {
        // POSTs of 16-byte blocks with "more" set, which the server never
        // answers: the transfer holds one exchange per block until the
        // per-device bound refuses more.
        let blocks: Vec<Vec<u8>> = (0..=coap_inspect::MAX_PENDING)
            .map(|num| {
                let mid = u16::try_from(100 + num).expect("few blocks");
                // NUM, M = 1, SZX = 0 (16 bytes): one byte while NUM < 16.
                let value = u16::try_from((num << 4) | 0x08).expect("few blocks");
                let block_value = match u8::try_from(value) {
                    Ok(b) => vec![b],
                    Err(_) => value.to_be_bytes().to_vec(),
                };
                coap_request(
                    Method::Post,
                    mid,
                    &["fw", "upload"],
                    &[(coap_codec::option::BLOCK1, &block_value)],
                    &[0x5a; 16],
                )
            })
            .collect();
        coap_device(&blocks)
    };
    vec![
        seed("valid-exchanges", valid, &[]),
        seed("valid-mid-reused-after-lifetime", reuse_after_lifetime, &[]),
        seed(
            "token-length-9-to-15",
            coap_device(&token_lengths),
            &["Malformed/TokenLength"; 7],
        ),
        seed(
            "option-nibble-15-not-payload-marker",
            coap_device(&nibble_15),
            &["Malformed/ReservedNibble", "Malformed/ReservedNibble"],
        ),
        seed(
            "option-length-past-datagram-end",
            coap_device(&[option_past_end]),
            &["Malformed/OptionTruncated"],
        ),
        seed(
            "uri-path-300-options",
            coap_device(&[many_segments]),
            &["Malformed/PathSegments"],
        ),
        seed("block1-never-completes", block1, &["Protocol"]),
        seed(
            "replayed-message-id",
            coap_device(&[get.clone(), get]),
            &["Duplicate"],
        ),
    ]
}
