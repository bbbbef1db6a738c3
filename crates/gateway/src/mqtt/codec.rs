//! MQTT 3.1.1 and 5 framing and parsing, without sockets.
//!
//! [`frame_header`] reads the fixed header of the next frame in a buffer
//! and checks its remaining length against a maximum *before* anything is
//! allocated for the body; [`parse`] turns one complete frame into a
//! [`Packet`] that borrows from it. Neither panics on any input: every
//! read goes through [`Reader`], which returns an error at the end of the
//! data.

use std::fmt;

/// The largest remaining length MQTT can express (four varint bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The protocol level a client asked for in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// The control packet types (high nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// 1, client to server.
    Connect,
    /// 2, server to client.
    Connack,
    /// 3, both directions.
    Publish,
    /// 4, both directions.
    Puback,
    /// 5, both directions.
    Pubrec,
    /// 6, both directions.
    Pubrel,
    /// 7, both directions.
    Pubcomp,
    /// 8, client to server.
    Subscribe,
    /// 9, server to client.
    Suback,
    /// 10, client to server.
    Unsubscribe,
    /// 11, server to client.
    Unsuback,
    /// 12, client to server.
    Pingreq,
    /// 13, server to client.
    Pingresp,
    /// 14, both directions.
    Disconnect,
    /// 15, both directions, MQTT 5 only.
    Auth,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            1 => Self::Connect,
            2 => Self::Connack,
            3 => Self::Publish,
            4 => Self::Puback,
            5 => Self::Pubrec,
            6 => Self::Pubrel,
            7 => Self::Pubcomp,
            8 => Self::Subscribe,
            9 => Self::Suback,
            10 => Self::Unsubscribe,
            11 => Self::Unsuback,
            12 => Self::Pingreq,
            13 => Self::Pingresp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// Packets only a server may send.
    pub fn server_only(self) -> bool {
        matches!(
            self,
            Self::Connack | Self::Suback | Self::Unsuback | Self::Pingresp
        )
    }
}

/// Why bytes are not an acceptable MQTT frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length uses more than four bytes.
    LengthTooLong,
    /// The remaining length exceeds the configured maximum.
    TooLarge {
        /// Length announced.
        length: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// Packet type 0 (reserved).
    ReservedType,
    /// Not well-formed (with a short reason).
    Malformed(&'static str),
    /// Well-formed but breaking a protocol rule.
    Protocol(&'static str),
    /// A protocol name or level other than MQTT 3.1.1 or 5.
    UnsupportedVersion,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthTooLong => f.write_str("remaining length longer than 4 bytes"),
            Self::TooLarge { length, max } => {
                write!(f, "remaining length {length} over the maximum {max}")
            }
            Self::ReservedType => f.write_str("reserved packet type 0"),
            Self::Malformed(why) => write!(f, "malformed: {why}"),
            Self::Protocol(why) => write!(f, "protocol error: {why}"),
            Self::UnsupportedVersion => f.write_str("unsupported protocol name or level"),
        }
    }
}

/// The fixed header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type.
    pub kind: PacketType,
    /// Low nibble of the first byte.
    pub flags: u8,
    /// Bytes of fixed header (2 to 5).
    pub header_len: usize,
    /// Bytes after the fixed header.
    pub remaining: usize,
}

impl FixedHeader {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads the fixed header at the start of `buf`. `Ok(None)` means more
/// bytes are needed; a remaining length over `max_remaining` is refused
/// as soon as its varint is complete, before the body is buffered.
pub fn frame_header(buf: &[u8], max_remaining: usize) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = PacketType::from_nibble(first >> 4).ok_or(DecodeError::ReservedType)?;
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let max = max_remaining.min(MAX_REMAINING_LENGTH);
            if remaining > max {
                return Err(DecodeError::TooLarge {
                    length: remaining,
                    max,
                });
            }
            return Ok(Some(FixedHeader {
                kind,
                flags: first & 0x0f,
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(DecodeError::LengthTooLong)
}

/// A cursor over untrusted bytes; every read is checked.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Malformed(
                "field runs past the end of the packet",
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.bytes(1)?;
        b.first()
            .copied()
            .ok_or(DecodeError::Malformed("missing byte"))
    }

    /// A big-endian two-byte integer.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        let arr: [u8; 2] = b
            .try_into()
            .map_err(|_| DecodeError::Malformed("short integer"))?;
        Ok(u16::from_be_bytes(arr))
    }

    /// A big-endian four-byte integer.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        let arr: [u8; 4] = b
            .try_into()
            .map_err(|_| DecodeError::Malformed("short integer"))?;
        Ok(u32::from_be_bytes(arr))
    }

    /// A variable byte integer (at most four bytes).
    pub fn varint(&mut self) -> Result<usize, DecodeError> {
        let mut value = 0usize;
        for i in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Two-byte length then that many bytes.
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A UTF-8 string: valid UTF-8 (so no surrogates) and no U+0000.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
        if s.contains('\0') {
            return Err(DecodeError::Malformed("U+0000 in a string"));
        }
        Ok(s)
    }
}

/// MQTT 5 properties the gateway acts on; the rest are checked for form
/// and skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Properties<'a> {
    /// Topic Alias (0x23).
    pub topic_alias: Option<u16>,
    /// Response Topic (0x08): a topic the receiver is asked to publish to.
    pub response_topic: Option<&'a str>,
    /// Authentication Method (0x15).
    pub auth_method: Option<&'a str>,
}

fn properties<'a>(r: &mut Reader<'a>) -> Result<Properties<'a>, DecodeError> {
    let len = r.varint()?;
    let mut p = Reader::new(r.bytes(len)?);
    let mut out = Properties::default();
    while p.remaining() > 0 {
        match p.varint()? {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                p.u8()?;
            }
            0x13 | 0x21 | 0x22 => {
                p.u16()?;
            }
            0x23 => {
                let alias = p.u16()?;
                if alias == 0 {
                    return Err(DecodeError::Protocol("topic alias 0"));
                }
                out.topic_alias = Some(alias);
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                p.u32()?;
            }
            0x0b => {
                if p.varint()? == 0 {
                    return Err(DecodeError::Protocol("subscription identifier 0"));
                }
            }
            0x08 => out.response_topic = Some(p.string()?),
            0x15 => out.auth_method = Some(p.string()?),
            0x03 | 0x12 | 0x1a | 0x1c | 0x1f => {
                p.string()?;
            }
            0x09 | 0x16 => {
                p.binary()?;
            }
            0x26 => {
                p.string()?;
                p.string()?;
            }
            _ => return Err(DecodeError::Malformed("unknown property")),
        }
    }
    Ok(out)
}

/// A will message from CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// Topic it will be published to.
    pub topic: &'a str,
    /// QoS.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Payload.
    pub payload: &'a [u8],
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Protocol version.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: &'a str,
    /// Clean session / clean start.
    pub clean_start: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// Will message, if any.
    pub will: Option<Will<'a>>,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Whether a password is present (its bytes are never kept).
    pub has_password: bool,
    /// MQTT 5 authentication method (enhanced authentication).
    pub auth_method: Option<&'a str>,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS 0–2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty only with a topic alias, MQTT 5).
    pub topic: &'a str,
    /// Packet identifier (QoS 1 and 2).
    pub packet_id: Option<u16>,
    /// MQTT 5 properties.
    pub properties: Properties<'a>,
    /// Application payload.
    pub payload: &'a [u8],
}

/// A topic filter with its subscription options byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// The filter.
    pub filter: &'a str,
    /// Maximum QoS requested.
    pub qos: u8,
}

/// One decoded client packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT.
    Connect(Connect<'a>),
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack {
        /// Which of the four.
        kind: PacketType,
        /// Packet identifier (non-zero).
        packet_id: u16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Packet identifier (non-zero).
        packet_id: u16,
        /// At least one subscription.
        subscriptions: Vec<Subscription<'a>>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet identifier (non-zero).
        packet_id: u16,
        /// At least one filter.
        filters: Vec<&'a str>,
    },
    /// PINGREQ.
    Pingreq,
    /// DISCONNECT.
    Disconnect,
    /// AUTH (MQTT 5).
    Auth,
    /// A packet only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP);
    /// its body is not parsed.
    ServerOnly(PacketType),
}

fn required_flags(kind: PacketType) -> Option<u8> {
    match kind {
        PacketType::Publish => None,
        PacketType::Pubrel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
        _ => Some(0),
    }
}

fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// Parses one complete frame (`frame` starts with the fixed header
/// `header` describes). `version` is the session's version, `None` before
/// CONNECT (only CONNECT and server-only types are parsed then).
pub fn parse<'a>(
    header: &FixedHeader,
    frame: &'a [u8],
    version: Option<Version>,
) -> Result<Packet<'a>, DecodeError> {
    let body = frame
        .get(header.header_len..header.frame_len())
        .ok_or(DecodeError::Malformed("frame shorter than its header says"))?;
    if header.kind.server_only() {
        return Ok(Packet::ServerOnly(header.kind));
    }
    if let Some(flags) = required_flags(header.kind)
        && header.flags != flags
    {
        return Err(DecodeError::Malformed("reserved fixed header flags"));
    }
    let mut r = Reader::new(body);
    let v5 = version == Some(Version::V5);
    let packet = match header.kind {
        PacketType::Connect => Packet::Connect(connect(&mut r)?),
        PacketType::Publish => Packet::Publish(publish(header.flags, &mut r, v5)?),
        kind @ (PacketType::Puback
        | PacketType::Pubrec
        | PacketType::Pubrel
        | PacketType::Pubcomp) => {
            let packet_id = packet_id(&mut r)?;
            if v5 && r.remaining() > 0 {
                r.u8()?;
                if r.remaining() > 0 {
                    properties(&mut r)?;
                }
            }
            Packet::Ack { kind, packet_id }
        }
        PacketType::Subscribe => {
            let packet_id = packet_id(&mut r)?;
            if v5 {
                properties(&mut r)?;
            }
            let mut subscriptions = Vec::new();
            while r.remaining() > 0 {
                let filter = r.string()?;
                let options = r.u8()?;
                let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
                if options & reserved != 0 || options & 0b11 == 3 || (options >> 4) & 0b11 == 3 {
                    return Err(DecodeError::Malformed("subscription options"));
                }
                subscriptions.push(Subscription {
                    filter,
                    qos: options & 0b11,
                });
            }
            if subscriptions.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
            }
            Packet::Subscribe {
                packet_id,
                subscriptions,
            }
        }
        PacketType::Unsubscribe => {
            let packet_id = packet_id(&mut r)?;
            if v5 {
                properties(&mut r)?;
            }
            let mut filters = Vec::new();
            while r.remaining() > 0 {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
            }
            Packet::Unsubscribe { packet_id, filters }
        }
        PacketType::Pingreq => Packet::Pingreq,
        PacketType::Disconnect => {
            if v5 && r.remaining() > 0 {
                r.u8()?;
                if r.remaining() > 0 {
                    properties(&mut r)?;
                }
            }
            Packet::Disconnect
        }
        PacketType::Auth => {
            if !v5 {
                return Err(DecodeError::Protocol("AUTH is an MQTT 5 packet"));
            }
            if r.remaining() > 0 {
                r.u8()?;
                if r.remaining() > 0 {
                    properties(&mut r)?;
                }
            }
            Packet::Auth
        }
        PacketType::Connack | PacketType::Suback | PacketType::Unsuback | PacketType::Pingresp => {
            Packet::ServerOnly(header.kind)
        }
    };
    if r.remaining() > 0 {
        return Err(DecodeError::Malformed("bytes after the end of the packet"));
    }
    Ok(packet)
}

fn connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, DecodeError> {
    if r.string()? != "MQTT" {
        return Err(DecodeError::UnsupportedVersion);
    }
    let version = match r.u8()? {
        4 => Version::V311,
        5 => Version::V5,
        _ => return Err(DecodeError::UnsupportedVersion),
    };
    let v5 = version == Version::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if will_qos == 3 {
        return Err(DecodeError::Malformed("will QoS 3"));
    }
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain without a will"));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let auth_method = if v5 { properties(r)?.auth_method } else { None };
    let client_id = r.string()?;
    let will = if will_flag {
        if v5 {
            properties(r)?;
        }
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            qos: will_qos,
            retain: will_retain,
            payload,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    if has_password {
        r.binary()?;
    }
    Ok(Connect {
        version,
        client_id,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        will,
        username,
        has_password,
        auth_method,
    })
}

fn publish<'a>(flags: u8, r: &mut Reader<'a>, v5: bool) -> Result<Publish<'a>, DecodeError> {
    let qos = (flags >> 1) & 0b11;
    let dup = flags & 0x08 != 0;
    if qos == 3 {
        return Err(DecodeError::Malformed("QoS 3"));
    }
    if qos == 0 && dup {
        return Err(DecodeError::Malformed("DUP set on QoS 0"));
    }
    let topic = r.string()?;
    let packet_id = if qos > 0 { Some(packet_id(r)?) } else { None };
    let properties = if v5 {
        properties(r)?
    } else {
        Properties::default()
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// Encodes a remaining length (for building frames in tests and replies).
pub fn encode_remaining(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        encode_remaining(body.len(), &mut f);
        f.extend_from_slice(body);
        f
    }

    fn decode(f: &[u8], v: Option<Version>) -> Result<Packet<'_>, DecodeError> {
        let h = frame_header(f, MAX_REMAINING_LENGTH)?.expect("complete header");
        parse(&h, f, v)
    }

    fn s(x: &str) -> Vec<u8> {
        let mut v = (x.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(x.as_bytes());
        v
    }

    #[test]
    fn remaining_length_limits() {
        assert_eq!(frame_header(&[0x30], 10), Ok(None));
        assert_eq!(frame_header(&[0x30, 0x80], 10), Ok(None));
        assert_eq!(
            frame_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(DecodeError::LengthTooLong)
        );
        assert_eq!(
            frame_header(&[0x30, 0xff, 0xff, 0xff, 0x7f], 1024),
            Err(DecodeError::TooLarge {
                length: MAX_REMAINING_LENGTH,
                max: 1024
            })
        );
        assert_eq!(
            frame_header(&[0x00, 0x00], 10),
            Err(DecodeError::ReservedType)
        );
        let h = frame_header(&[0x30, 0x80, 0x01], 1000).unwrap().unwrap();
        assert_eq!((h.header_len, h.remaining), (3, 128));
    }

    #[test]
    fn connect_v5_with_will_and_user() {
        let mut body = s("MQTT");
        body.extend([5, 0b1100_1110, 0, 60, 0]);
        body.extend(s("client-1"));
        body.push(0); // will properties
        body.extend(s("will/topic"));
        body.extend(s("bye"));
        body.extend(s("user"));
        body.extend(s("pw"));
        let f = frame(0x10, &body);
        let Packet::Connect(c) = decode(&f, None).unwrap() else {
            panic!("not connect")
        };
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.client_id, "client-1");
        let will = c.will.unwrap();
        assert_eq!(
            (will.topic, will.qos, will.retain),
            ("will/topic", 1, false)
        );
        assert_eq!(c.username, Some("user"));
        assert!(c.has_password);
    }

    #[test]
    fn connect_refusals() {
        let mut body = s("MQIsdp");
        body.extend([3, 2, 0, 60]);
        body.extend(s("c"));
        assert_eq!(
            decode(&frame(0x10, &body), None),
            Err(DecodeError::UnsupportedVersion)
        );
        let mut body = s("MQTT");
        body.extend([4, 0b0000_0011, 0, 60]);
        body.extend(s("c"));
        assert!(matches!(
            decode(&frame(0x10, &body), None),
            Err(DecodeError::Malformed(_))
        ));
        let mut body = s("MQTT");
        body.extend([4, 2, 0, 60]);
        body.extend(s("c\0d"));
        assert!(decode(&frame(0x10, &body), None).is_err());
    }

    #[test]
    fn publish_rules() {
        let mut body = s("a/b");
        body.extend([0, 7]);
        body.extend(b"hi");
        let f = frame(0x32, &body);
        let Packet::Publish(p) = decode(&f, Some(Version::V311)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.topic, p.qos, p.packet_id, p.payload),
            ("a/b", 1, Some(7), &b"hi"[..])
        );
        // QoS 3, packet id 0, DUP on QoS 0.
        assert!(decode(&frame(0x36, &body), Some(Version::V311)).is_err());
        let mut zero = s("a/b");
        zero.extend([0, 0]);
        assert_eq!(
            decode(&frame(0x32, &zero), Some(Version::V311)),
            Err(DecodeError::Protocol("packet identifier 0"))
        );
        assert!(decode(&frame(0x38, &s("a")), Some(Version::V311)).is_err());
        // v5: alias property.
        let mut v5 = s("");
        v5.extend([3, 0x23, 0, 4]);
        let f = frame(0x30, &v5);
        let Packet::Publish(p) = decode(&f, Some(Version::V5)).unwrap() else {
            panic!()
        };
        assert_eq!(p.properties.topic_alias, Some(4));
    }

    #[test]
    fn subscribe_and_flags() {
        let mut body = vec![0, 1];
        body.extend(s("a/#"));
        body.push(1);
        let f = frame(0x82, &body);
        let Packet::Subscribe { subscriptions, .. } = decode(&f, Some(Version::V311)).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            subscriptions,
            vec![Subscription {
                filter: "a/#",
                qos: 1
            }]
        );
        assert!(decode(&frame(0x80, &body), Some(Version::V311)).is_err());
        // Truncated: filter length says more than there is.
        let truncated = [0, 1, 0, 9, b'a'];
        assert!(decode(&frame(0x82, &truncated), Some(Version::V311)).is_err());
        // No filters.
        assert!(decode(&frame(0x82, &[0, 1]), Some(Version::V311)).is_err());
        // AUTH on 3.1.1.
        assert!(decode(&frame(0xf0, &[]), Some(Version::V311)).is_err());
        assert_eq!(
            decode(&frame(0xf0, &[]), Some(Version::V5)),
            Ok(Packet::Auth)
        );
        assert_eq!(
            decode(&frame(0x20, &[0, 0]), Some(Version::V311)),
            Ok(Packet::ServerOnly(PacketType::Connack))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for v in [None, Some(Version::V311), Some(Version::V5)] {
                if let Ok(Some(h)) = frame_header(&bytes, 1 << 20)
                    && bytes.len() >= h.frame_len() {
                    let _ = parse(&h, &bytes, v);
                }
            }
        }

        #[test]
        fn never_panics_on_mutated_frames(
            first in proptest::prelude::any::<u8>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let f = frame(first, &body);
            for v in [None, Some(Version::V311), Some(Version::V5)] {
                if let Ok(Some(h)) = frame_header(&f, 1 << 20) {
                    let _ = parse(&h, &f, v);
                }
            }
        }
    }
}
