//! Block-wise transfers (RFC 7959) one device has in progress: Block1
//! uploads (the device sends a body in blocks) and Block2 downloads (the
//! device asks for a response block by block). No sockets; time is passed
//! in.
//!
//! A transfer is known by its direction, method and Uri-Path (RFC 7959
//! §2.4: blocks of one body need not share a token). Each device may have
//! [`BlockLimits::max_transfers`] incomplete at once and hold
//! [`BlockLimits::max_bytes`] of Block1 payload across them; a transfer
//! with no block for [`BlockLimits::timeout`] expires ([`Transfers::expire`])
//! so one that never completes holds its state for a bounded time. A
//! Block1 block must continue its transfer at the next byte offset (a
//! repeat of the last block is let through); anything else is refused.
//!
//! The gateway does not reassemble: blocks are forwarded as they come,
//! the server keeps the body. The accounting is what a server that
//! reassembles would hold, so the gateway refuses before the server pays.

use std::collections::HashMap;

use tokio::time::Instant;

use super::codec::{Message, MessageType, option};
use super::inspect::Refused;
use crate::policy::coap::BlockLimits;

/// A Block1 or Block2 option value (RFC 7959 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number.
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent: the block holds `16 << szx` bytes.
    pub szx: u8,
}

impl Block {
    /// Parses an option value: a 0–3 byte uint `NUM << 4 | M << 3 | SZX`.
    /// SZX 7 is reserved (BERT exists only over reliable transports).
    pub fn parse(value: &[u8]) -> Result<Self, Refused> {
        if value.len() > 3 {
            return Err(Refused::Protocol(format!(
                "block option of {} bytes (at most 3)",
                value.len()
            )));
        }
        let v = value.iter().fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        let szx = (v & 7) as u8;
        if szx == 7 {
            return Err(Refused::Protocol(
                "block size exponent 7 is reserved".into(),
            ));
        }
        Ok(Self {
            num: v >> 4,
            more: v & 8 != 0,
            szx,
        })
    }

    /// Block size in bytes.
    pub fn size(self) -> usize {
        16 << self.szx
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    upload: bool,
    method: u8,
    path: Vec<Vec<u8>>,
}

impl Key {
    fn describe(&self) -> String {
        let path: Vec<String> = self
            .path
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        format!(
            "{} {} /{}",
            if self.upload { "Block1" } else { "Block2" },
            super::codec::Code(self.method),
            path.join("/")
        )
    }
}

#[derive(Debug)]
struct Transfer {
    /// Block1: payload bytes received so far (the next block's offset).
    received: usize,
    /// Block1: offset of the last block, so its repeat passes.
    last_offset: usize,
    expires: Instant,
    /// Of the latest request, to match the server's answer.
    token: Vec<u8>,
    message_id: u16,
}

/// An incomplete transfer that expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Direction, method and path, for the event.
    pub what: String,
    /// Block1 payload bytes received before it stalled.
    pub received: usize,
}

/// One device's block-wise transfers in progress.
#[derive(Debug, Default)]
pub struct Transfers {
    map: HashMap<Key, Transfer>,
    /// Block1 bytes held across `map`.
    bytes: usize,
}

fn single(msg: &Message<'_>, number: u16) -> Result<Option<Block>, Refused> {
    let mut values = msg.option_values(number);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refused::Protocol(format!("option {number} repeated")));
    }
    Block::parse(first).map(Some)
}

impl Transfers {
    /// Incomplete transfers.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Block1 payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: &Key) {
        if let Some(t) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(t.received);
        }
    }

    fn start(&mut self, key: Key, limits: &BlockLimits) -> Result<(), Refused> {
        self.remove(&key);
        if self.map.len() >= limits.max_transfers {
            return Err(Refused::Protocol(format!(
                "more than {} incomplete block-wise transfers",
                limits.max_transfers
            )));
        }
        self.map.insert(
            key,
            Transfer {
                received: 0,
                last_offset: 0,
                expires: Instant::now(),
                token: Vec::new(),
                message_id: 0,
            },
        );
        Ok(())
    }

    /// Accounts a request from the device; `Err` when it must not be
    /// forwarded. Call [`Self::expire`] first so stale transfers do not
    /// count against the caps.
    pub fn request(
        &mut self,
        msg: &Message<'_>,
        limits: &BlockLimits,
        now: Instant,
    ) -> Result<(), Refused> {
        let block1 = single(msg, option::BLOCK1)?;
        let block2 = single(msg, option::BLOCK2)?;
        if block1.is_none() && block2.is_none() {
            return Ok(());
        }
        let path: Vec<Vec<u8>> = msg.path().map(<[u8]>::to_vec).collect();
        if let Some(b) = block1 {
            let key = Key {
                upload: true,
                method: msg.code.0,
                path: path.clone(),
            };
            self.upload(key, b, msg, limits, now)?;
        }
        if let Some(b) = block2 {
            let key = Key {
                upload: false,
                method: msg.code.0,
                path,
            };
            // Block 0 (re)starts a download; a later block without one
            // in progress continues a download the server began unasked.
            if b.num == 0 || !self.map.contains_key(&key) {
                self.start(key.clone(), limits)?;
            }
            self.touch(&key, msg, limits, now);
        }
        Ok(())
    }

    fn upload(
        &mut self,
        key: Key,
        b: Block,
        msg: &Message<'_>,
        limits: &BlockLimits,
        now: Instant,
    ) -> Result<(), Refused> {
        let size = b.size();
        let len = msg.payload.len();
        if (b.more && len != size) || len > size {
            self.remove(&key);
            return Err(Refused::Protocol(format!(
                "{}: block {} of {len} bytes, block size {size}",
                key.describe(),
                b.num
            )));
        }
        let offset = usize::try_from(b.num)
            .ok()
            .and_then(|n| n.checked_mul(size))
            .unwrap_or(usize::MAX);
        if b.num == 0 {
            if !b.more {
                // The whole body in one block: nothing to track.
                self.remove(&key);
                return Ok(());
            }
            self.start(key.clone(), limits)?;
        }
        let Some(t) = self.map.get(&key) else {
            return Err(Refused::Protocol(format!(
                "{}: block {} with no transfer in progress (expired or never started)",
                key.describe(),
                b.num
            )));
        };
        if b.num != 0 && offset == t.last_offset && offset + len <= t.received {
            // A repeat of the last block (its answer was lost).
            self.touch(&key, msg, limits, now);
            return Ok(());
        }
        if offset != t.received {
            let expected = t.received;
            self.remove(&key);
            return Err(Refused::Protocol(format!(
                "{}: block {} at offset {offset}, expected offset {expected}",
                key.describe(),
                b.num
            )));
        }
        if self.bytes.saturating_add(len) > limits.max_bytes {
            self.remove(&key);
            return Err(Refused::Protocol(format!(
                "{}: over {} bytes held in incomplete block-wise uploads",
                key.describe(),
                limits.max_bytes
            )));
        }
        if !b.more {
            self.remove(&key);
            return Ok(());
        }
        self.bytes += len;
        if let Some(t) = self.map.get_mut(&key) {
            t.received += len;
            t.last_offset = offset;
        }
        self.touch(&key, msg, limits, now);
        Ok(())
    }

    fn touch(&mut self, key: &Key, msg: &Message<'_>, limits: &BlockLimits, now: Instant) {
        if let Some(t) = self.map.get_mut(key) {
            t.expires = now + limits.timeout;
            t.token = msg.token.to_vec();
            t.message_id = msg.message_id;
        }
    }

    /// Accounts a server response relayed to the device: an error ends
    /// the transfer it answers, and so does a Block2 response that is the
    /// last block (or not block-wise at all).
    pub fn response(&mut self, msg: &Message<'_>) {
        let ack = msg.mtype == MessageType::Acknowledgement;
        let answered: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, t)| t.token == msg.token && (!ack || t.message_id == msg.message_id))
            .map(|(k, _)| k.clone())
            .collect();
        // An Empty ACK (code 0.00) only announces a separate response.
        if msg.code.0 == 0 {
            return;
        }
        let last_block2 = match single(msg, option::BLOCK2) {
            Ok(Some(b)) => !b.more,
            Ok(None) => true,
            Err(_) => true,
        };
        for key in answered {
            if msg.code.class() != 2 || (!key.upload && last_block2) {
                self.remove(&key);
            }
        }
    }

    /// Removes the transfers with no block since their timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let stale: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .map(|key| {
                let received = self.map.get(&key).map_or(0, |t| t.received);
                self.remove(&key);
                Expired {
                    what: key.describe(),
                    received,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::coap::codec::{Code, Method, encode, parse};

    const LIMITS: BlockLimits = BlockLimits {
        timeout: Duration::from_secs(5),
        max_transfers: 2,
        max_bytes: 64,
    };

    fn block(num: u32, more: bool, szx: u8) -> Vec<u8> {
        let v = num << 4 | u32::from(more) << 3 | u32::from(szx);
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        bytes[skip..].to_vec()
    }

    fn put(path: &[u8], num: u32, more: bool, payload: &[u8]) -> Vec<u8> {
        let b = block(num, more, 0);
        encode(
            MessageType::Confirmable,
            Method::Put.code(),
            num as u16,
            b"t",
            &[(option::URI_PATH, path), (option::BLOCK1, b.as_slice())],
            payload,
        )
    }

    #[test]
    fn option_values_parse() {
        assert_eq!(
            Block::parse(&[]).unwrap(),
            Block {
                num: 0,
                more: false,
                szx: 0
            }
        );
        let b = Block::parse(&[0x01, 0x2e]).unwrap();
        assert_eq!((b.num, b.more, b.szx, b.size()), (0x12, true, 6, 1024));
        assert!(Block::parse(&[0x07]).is_err());
        assert!(Block::parse(&[1, 2, 3, 4]).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn upload_in_sequence_completes_and_frees_state() {
        let mut t = Transfers::default();
        let now = Instant::now();
        let block0 = put(b"a", 0, true, &[1; 16]);
        t.request(&parse(&block0).unwrap(), &LIMITS, now).unwrap();
        assert_eq!((t.len(), t.bytes()), (1, 16));
        // Its repeat passes and counts nothing.
        let block1 = put(b"a", 1, true, &[1; 16]);
        t.request(&parse(&block1).unwrap(), &LIMITS, now).unwrap();
        t.request(&parse(&block1).unwrap(), &LIMITS, now).unwrap();
        assert_eq!(t.bytes(), 32);
        let last = put(b"a", 2, false, &[1; 3]);
        t.request(&parse(&last).unwrap(), &LIMITS, now).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_sequence_short_and_orphan_blocks_are_refused() {
        let mut t = Transfers::default();
        let now = Instant::now();
        let orphan = put(b"a", 3, true, &[1; 16]);
        assert!(t.request(&parse(&orphan).unwrap(), &LIMITS, now).is_err());
        t.request(&parse(&put(b"a", 0, true, &[1; 16])).unwrap(), &LIMITS, now)
            .unwrap();
        let skip = put(b"a", 2, true, &[1; 16]);
        assert!(t.request(&parse(&skip).unwrap(), &LIMITS, now).is_err());
        assert!(t.is_empty(), "a refused transfer is forgotten");
        let short = put(b"b", 0, true, &[1; 15]);
        assert!(t.request(&parse(&short).unwrap(), &LIMITS, now).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn caps_on_transfers_and_bytes() {
        let mut t = Transfers::default();
        let now = Instant::now();
        for p in [b"a", b"b"] {
            t.request(&parse(&put(p, 0, true, &[1; 16])).unwrap(), &LIMITS, now)
                .unwrap();
        }
        let third = put(b"c", 0, true, &[1; 16]);
        let e = t.request(&parse(&third).unwrap(), &LIMITS, now);
        assert!(format!("{e:?}").contains("incomplete"), "{e:?}");
        // 32 held; 16 more each for a: 48, b: 64, a again: over 64.
        for (p, n) in [(b"a", 1), (b"b", 1)] {
            t.request(&parse(&put(p, n, true, &[1; 16])).unwrap(), &LIMITS, now)
                .unwrap();
        }
        let over = put(b"a", 2, true, &[1; 16]);
        let e = t.request(&parse(&over).unwrap(), &LIMITS, now);
        assert!(format!("{e:?}").contains("64 bytes"), "{e:?}");
        assert_eq!((t.len(), t.bytes()), (1, 32));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_transfers_expire() {
        let mut t = Transfers::default();
        let t0 = Instant::now();
        t.request(&parse(&put(b"a", 0, true, &[1; 16])).unwrap(), &LIMITS, t0)
            .unwrap();
        assert!(t.expire(t0 + Duration::from_secs(4)).is_empty());
        let gone = t.expire(t0 + Duration::from_secs(5));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].received, 16);
        assert!(gone[0].what.contains("Block1"), "{}", gone[0].what);
        assert!((t.len(), t.bytes()) == (0, 0));
        // Its next block is refused.
        let next = put(b"a", 1, true, &[1; 16]);
        assert!(t.request(&parse(&next).unwrap(), &LIMITS, t0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn download_ends_with_the_last_block_or_an_error() {
        let mut t = Transfers::default();
        let now = Instant::now();
        let get = |mid: u16, num: u32| {
            let b = block(num, false, 0);
            encode(
                MessageType::Confirmable,
                Method::Get.code(),
                mid,
                b"g",
                &[(option::URI_PATH, b"big"), (option::BLOCK2, b.as_slice())],
                &[],
            )
        };
        let answer = |mid: u16, code: Code, more: bool| {
            let b = block(0, more, 0);
            encode(
                MessageType::Acknowledgement,
                code,
                mid,
                b"g",
                &[(option::BLOCK2, b.as_slice())],
                &[1; 16],
            )
        };
        t.request(&parse(&get(1, 1)).unwrap(), &LIMITS, now)
            .unwrap();
        assert_eq!(t.len(), 1);
        t.response(&parse(&answer(1, Code::new(2, 5), true)).unwrap());
        assert_eq!(t.len(), 1);
        // A response to another message id is not this transfer's.
        t.request(&parse(&get(2, 2)).unwrap(), &LIMITS, now)
            .unwrap();
        t.response(&parse(&answer(9, Code::new(2, 5), false)).unwrap());
        assert_eq!(t.len(), 1);
        t.response(&parse(&answer(2, Code::new(2, 5), false)).unwrap());
        assert!(t.is_empty());
        t.request(&parse(&get(3, 0)).unwrap(), &LIMITS, now)
            .unwrap();
        t.response(&parse(&answer(3, Code::new(4, 4), false)).unwrap());
        assert!(t.is_empty());
    }
}
