//! The policy layer over CoAP messages: which requests a device may send,
//! which of them are duplicates, and which server responses may reach it.
//! No sockets; time is [`tokio::time::Instant`] passed in, so tests drive
//! it without sleeping.
//!
//! Requests are checked in this order: well-formed (else dropped with an
//! event, never answered: a peer that breaks the format cannot be
//! answered safely), a request code (Empty ACK/RST are relayed, responses
//! from a device are refused), no Proxy-Uri/Proxy-Scheme (they would name
//! a resource the Uri-Path check never saw), method allowed, Uri-Path
//! under an allowed prefix, payload within the device's maximum, and not
//! a duplicate of a (source, message id) seen within EXCHANGE_LIFETIME.
//!
//! Responses must answer an outstanding request (by message id for
//! piggybacked ACKs and RSTs, by token for separate responses) and may be
//! at most [`AMPLIFICATION_FACTOR`] times the request's size unless the
//! request carried an Echo option (RFC 9175 §2.4: the source has shown it
//! receives at its address). Anything else is dropped.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::{CodecError, Message, MessageType, Method, option};
use crate::mqtt::inspect::{Violation, ViolationKind};
use crate::policy::coap::CoapDevice;

/// How much larger than its request a response to an unverified source
/// may be (RFC 9175 §2.4 suggests 3).
pub const AMPLIFICATION_FACTOR: usize = 3;
/// Most requests awaiting a response per device.
pub const MAX_PENDING: usize = 64;
/// Most (source, message id) pairs remembered at once, across devices.
pub const DEFAULT_DEDUP_CAPACITY: usize = 65_536;

/// Why a datagram from a device is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a well-formed CoAP message: dropped, never answered.
    Malformed(CodecError),
    /// Well-formed but not a request the gateway relays (a response from
    /// a device, an Empty CON): dropped.
    Protocol(String),
    /// A request the policy does not allow: 4.03 or dropped, per policy.
    Denied(String),
    /// A (source, message id) already seen within the exchange lifetime,
    /// or too many remembered: dropped.
    Duplicate(u16),
}

impl Refused {
    /// As a violation, for events.
    pub fn violation(&self) -> Violation {
        match self {
            Self::Malformed(e) => Violation::new(ViolationKind::Malformed, e.to_string()),
            Self::Protocol(d) => Violation::new(ViolationKind::Protocol, d.clone()),
            Self::Denied(d) => Violation::new(ViolationKind::NotAuthorized, d.clone()),
            Self::Duplicate(id) => Violation::new(
                ViolationKind::Protocol,
                format!("duplicate message id {id} within the exchange lifetime"),
            ),
        }
    }
}

/// What a device's datagram is, once it passed [`check_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// A request, allowed.
    Request(Method),
    /// An Empty ACK or RST (answering a server's Confirmable separate
    /// response): relayed as is.
    EmptyReply,
}

/// Checks a parsed message from `device` against its rules. Duplicate
/// detection is separate ([`Dedup`]) because it keeps state.
pub fn check_request(device: &CoapDevice, msg: &Message<'_>) -> Result<Forward, Refused> {
    if msg.code.class() == 0 && msg.code.detail() == 0 {
        return match msg.mtype {
            MessageType::Acknowledgement | MessageType::Reset => Ok(Forward::EmptyReply),
            _ => Err(Refused::Protocol(
                "Empty CON/NON (ping) from a device".into(),
            )),
        };
    }
    let Some(method) = msg.code.method() else {
        return Err(Refused::Protocol(format!(
            "code {} is not a request",
            msg.code
        )));
    };
    if msg.mtype == MessageType::Acknowledgement || msg.mtype == MessageType::Reset {
        return Err(Refused::Protocol("request in an ACK or RST".into()));
    }
    if msg.has_option(option::PROXY_URI) || msg.has_option(option::PROXY_SCHEME) {
        return Err(Refused::Denied("Proxy-Uri/Proxy-Scheme not allowed".into()));
    }
    if !device.methods.contains(&method) {
        return Err(Refused::Denied(format!(
            "method {} not allowed",
            method.as_str()
        )));
    }
    if !device.allows_path(msg.path()) {
        let path: Vec<String> = msg
            .path()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        return Err(Refused::Denied(format!(
            "path /{} not allowed",
            path.join("/")
        )));
    }
    if msg.payload.len() > device.max_payload {
        return Err(Refused::Denied(format!(
            "payload of {} bytes is over {}",
            msg.payload.len(),
            device.max_payload
        )));
    }
    Ok(Forward::Request(method))
}

/// Remembers (source, message id) pairs for the exchange lifetime, in a
/// map bounded by `capacity`. When full, new pairs are refused (fail
/// closed) until old ones expire: forgetting early would let a flood
/// make room for a replay.
#[derive(Debug)]
pub struct Dedup {
    lifetime: Duration,
    capacity: usize,
    seen: HashMap<(SocketAddr, u16), Instant>,
    order: VecDeque<(Instant, (SocketAddr, u16))>,
}

impl Dedup {
    /// An empty window.
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            lifetime,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Changes the lifetime (policy reload); applies to pairs seen next.
    pub fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    /// Records `(source, id)`; `Err` if it was seen within the lifetime
    /// or the window is full.
    pub fn check(&mut self, source: SocketAddr, id: u16, now: Instant) -> Result<(), Refused> {
        while let Some(&(expires, key)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&key) == Some(&expires) {
                self.seen.remove(&key);
            }
        }
        if self.seen.contains_key(&(source, id)) || self.seen.len() >= self.capacity {
            return Err(Refused::Duplicate(id));
        }
        let expires = now + self.lifetime;
        self.seen.insert((source, id), expires);
        self.order.push_back((expires, (source, id)));
        Ok(())
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Pending {
    message_id: u16,
    token: Vec<u8>,
    size: usize,
    echo: bool,
    expires: Instant,
}

/// One device's requests awaiting a response, for matching and the
/// amplification limit.
#[derive(Debug, Default)]
pub struct Exchanges {
    pending: VecDeque<Pending>,
}

impl Exchanges {
    /// Records a forwarded request of `size` bytes; `Err` when
    /// [`MAX_PENDING`] are outstanding.
    pub fn expect(
        &mut self,
        msg: &Message<'_>,
        size: usize,
        lifetime: Duration,
        now: Instant,
    ) -> Result<(), Refused> {
        self.pending.retain(|p| p.expires > now);
        if self.pending.len() >= MAX_PENDING {
            return Err(Refused::Protocol(format!(
                "more than {MAX_PENDING} requests outstanding"
            )));
        }
        self.pending.push_back(Pending {
            message_id: msg.message_id,
            token: msg.token.to_vec(),
            size,
            echo: msg.has_option(option::ECHO),
            expires: now + lifetime,
        });
        Ok(())
    }

    /// Requests outstanding.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Whether the server's `msg` (`size` bytes) may be relayed: it must
    /// answer an outstanding request, within the amplification limit.
    pub fn check_response(
        &mut self,
        msg: &Message<'_>,
        size: usize,
        now: Instant,
    ) -> Result<(), Violation> {
        self.pending.retain(|p| p.expires > now);
        let empty = msg.code.class() == 0 && msg.code.detail() == 0;
        if msg.code.class() == 0 && !empty {
            return Err(Violation::new(
                ViolationKind::Protocol,
                format!("server sent request code {}", msg.code),
            ));
        }
        let by_id = matches!(msg.mtype, MessageType::Acknowledgement | MessageType::Reset);
        let found = self.pending.iter().position(|p| {
            if by_id {
                p.message_id == msg.message_id && (empty || p.token == msg.token)
            } else {
                !empty && p.token == msg.token
            }
        });
        let Some(i) = found else {
            return Err(Violation::new(
                ViolationKind::Protocol,
                format!(
                    "response (mid {}, code {}) matches no outstanding request",
                    msg.message_id, msg.code
                ),
            ));
        };
        let Some(p) = self.pending.get(i) else {
            return Err(Violation::new(ViolationKind::Protocol, "lost request"));
        };
        let limit = p.size.saturating_mul(AMPLIFICATION_FACTOR);
        if !p.echo && size > limit {
            return Err(Violation::new(
                ViolationKind::PacketTooLarge,
                format!(
                    "response of {size} bytes is over {AMPLIFICATION_FACTOR}x the {}-byte request \
                     (no Echo option)",
                    p.size
                ),
            ));
        }
        // An Empty ACK announces a separate response: keep waiting for it.
        if !(empty && msg.mtype == MessageType::Acknowledgement) {
            self.pending.remove(i);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::coap::codec::{Code, encode, parse};

    fn device() -> CoapDevice {
        let p = Policy::from_toml(
            r#"
            [[coap.devices]]
            name = "d"
            source = "127.0.0.1"
            methods = ["GET", "POST"]
            paths = [["sensors", "temp"], ["time"]]
            max_payload = 4
            "#,
            "t",
        )
        .unwrap();
        p.coap.devices()[0].clone()
    }

    fn req(method: Method, path: &[&str], extra: &[(u16, &[u8])], payload: &[u8]) -> Vec<u8> {
        let mut opts: Vec<(u16, &[u8])> = path
            .iter()
            .map(|s| (option::URI_PATH, s.as_bytes()))
            .collect();
        opts.extend_from_slice(extra);
        encode(
            MessageType::Confirmable,
            method.code(),
            10,
            b"tk",
            &opts,
            payload,
        )
    }

    fn check(bytes: &[u8]) -> Result<Forward, Refused> {
        check_request(&device(), &parse(bytes).unwrap())
    }

    #[test]
    fn requests_are_checked_against_the_device() {
        assert_eq!(
            check(&req(Method::Get, &["sensors", "temp"], &[], &[])),
            Ok(Forward::Request(Method::Get))
        );
        assert!(check(&req(Method::Get, &["sensors", "temp", "1"], &[], &[])).is_ok());
        assert!(check(&req(Method::Post, &["time"], &[], b"1234")).is_ok());
        for denied in [
            req(Method::Put, &["time"], &[], &[]),
            req(Method::Get, &["sensors"], &[], &[]),
            req(Method::Get, &["sensors", "temperature"], &[], &[]),
            req(Method::Get, &[], &[], &[]),
            req(Method::Post, &["time"], &[], b"12345"),
            req(
                Method::Get,
                &["time"],
                &[(option::PROXY_URI, b"coap://x/admin")],
                &[],
            ),
        ] {
            assert!(
                matches!(check(&denied), Err(Refused::Denied(_))),
                "{denied:?}"
            );
        }
        // A response code, or an Empty CON, from a device.
        let resp = encode(MessageType::Confirmable, Code::new(2, 5), 1, &[], &[], &[]);
        assert!(matches!(check(&resp), Err(Refused::Protocol(_))));
        assert!(matches!(check(&[0x40, 0, 0, 1]), Err(Refused::Protocol(_))));
        assert_eq!(check(&[0x60, 0, 0, 1]), Ok(Forward::EmptyReply));
        assert_eq!(check(&[0x70, 0, 0, 1]), Ok(Forward::EmptyReply));
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_within_the_lifetime_are_refused() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let mut d = Dedup::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        d.check(a, 1, t0).unwrap();
        assert_eq!(d.check(a, 1, t0), Err(Refused::Duplicate(1)));
        // Same id from another source is another exchange.
        d.check(b, 1, t0).unwrap();
        // Just inside the lifetime: still a duplicate; at it: expired.
        let almost = t0 + Duration::from_secs(10) - Duration::from_millis(1);
        assert_eq!(d.check(a, 1, almost), Err(Refused::Duplicate(1)));
        tokio::time::advance(Duration::from_secs(10)).await;
        d.check(a, 1, Instant::now()).unwrap();
        assert_eq!(d.len(), 1);
        // Bounded: full means refused, not forgetting early.
        d.check(a, 2, Instant::now()).unwrap();
        d.check(a, 3, Instant::now()).unwrap();
        assert_eq!(d.check(a, 4, Instant::now()), Err(Refused::Duplicate(4)));
        assert_eq!(d.len(), 3);
    }

    fn response(mtype: MessageType, mid: u16, token: &[u8], payload_len: usize) -> Vec<u8> {
        encode(
            mtype,
            Code::new(2, 5),
            mid,
            token,
            &[],
            &vec![b'x'; payload_len],
        )
    }

    #[test]
    fn amplification_is_limited_without_echo() {
        let now = Instant::now();
        let life = Duration::from_secs(10);
        let request = req(Method::Get, &["time"], &[], &[]);
        let size = request.len();
        let limit = AMPLIFICATION_FACTOR * size;
        let mut ex = Exchanges::default();
        ex.expect(&parse(&request).unwrap(), size, life, now)
            .unwrap();
        // Header 4 + token 2 + marker 1 = 7 bytes around the payload.
        let over = response(MessageType::Acknowledgement, 10, b"tk", limit - 6);
        assert_eq!(over.len(), limit + 1);
        let v = ex.check_response(&parse(&over).unwrap(), over.len(), now);
        assert_eq!(v.unwrap_err().kind, ViolationKind::PacketTooLarge);
        let at = response(MessageType::Acknowledgement, 10, b"tk", limit - 7);
        assert_eq!(at.len(), limit);
        ex.check_response(&parse(&at).unwrap(), at.len(), now)
            .unwrap();
        assert_eq!(ex.outstanding(), 0);
        // With Echo, the size is not limited.
        let echo = req(Method::Get, &["time"], &[(option::ECHO, b"abc")], &[]);
        ex.expect(&parse(&echo).unwrap(), echo.len(), life, now)
            .unwrap();
        let big = response(MessageType::Acknowledgement, 10, b"tk", 1000);
        ex.check_response(&parse(&big).unwrap(), big.len(), now)
            .unwrap();
    }

    #[test]
    fn responses_must_match_a_request() {
        let now = Instant::now();
        let life = Duration::from_secs(10);
        let request = req(Method::Get, &["time"], &[], &[]);
        let mut ex = Exchanges::default();
        let check =
            |ex: &mut Exchanges, b: &[u8]| ex.check_response(&parse(b).unwrap(), b.len(), now);
        // Nothing outstanding.
        assert!(
            check(
                &mut ex,
                &response(MessageType::Acknowledgement, 10, b"tk", 1)
            )
            .is_err()
        );
        ex.expect(&parse(&request).unwrap(), request.len(), life, now)
            .unwrap();
        // Wrong message id, wrong token.
        assert!(
            check(
                &mut ex,
                &response(MessageType::Acknowledgement, 11, b"tk", 1)
            )
            .is_err()
        );
        assert!(
            check(
                &mut ex,
                &response(MessageType::Acknowledgement, 10, b"xx", 1)
            )
            .is_err()
        );
        // Empty ACK, then the separate CON response by token.
        check(&mut ex, &[0x60, 0, 0, 10]).unwrap();
        assert_eq!(ex.outstanding(), 1);
        check(&mut ex, &response(MessageType::Confirmable, 99, b"tk", 1)).unwrap();
        assert_eq!(ex.outstanding(), 0);
        // Expired requests match nothing.
        ex.expect(&parse(&request).unwrap(), request.len(), life, now)
            .unwrap();
        let later = now + life;
        let r = response(MessageType::Acknowledgement, 10, b"tk", 1);
        assert!(
            ex.check_response(&parse(&r).unwrap(), r.len(), later)
                .is_err()
        );
        // Bounded.
        for _ in 0..MAX_PENDING {
            ex.expect(&parse(&request).unwrap(), request.len(), life, now)
                .unwrap();
        }
        assert!(
            ex.expect(&parse(&request).unwrap(), request.len(), life, now)
                .is_err()
        );
    }
}
