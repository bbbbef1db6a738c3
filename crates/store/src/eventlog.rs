//! The tamper-evident event log (clause 5.2.5.2.2, and 5.2.5.1.2 for its
//! protection).
//!
//! One append-only file, `events.log`, of frames:
//!
//! ```text
//! length u32 | kind u8 | body | chain hash [32]
//! chain hash = SHA-256("bulwark-log v1" | previous chain hash | kind | body)
//! ```
//!
//! A *record* body is `sequence u64 | user tag [32] | sealed common fields
//! | sealed identifying fields`. The common fields (time, severity,
//! action, outcome, detail) are sealed under the store key; the fields
//! that identify a person (actor, source address) are sealed under that
//! user's key, so removing the user makes them unreadable while the chain,
//! which covers ciphertext, still verifies.
//!
//! A *checkpoint* body is `count u64 | head [32] | unix time u64 |
//! signature`, signed by the device key. Checkpoints are written every
//! [`CHECKPOINT_EVERY`] records, on the first append more than
//! [`CHECKPOINT_INTERVAL`] after the last checkpoint, whenever
//! [`EventLog::tick`] finds unsigned records that old, and on
//! [`EventLog::close`]; the newest is
//! also kept in the store, so a log replaced by an older copy is caught.
//!
//! [`verify`] reads a log and reports every place it was modified, had
//! records deleted, reordered or truncated, with record number and byte
//! offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest::{Context, SHA256};
use keys::{KeyRef, PublicKey};
use serde::{Deserialize, Serialize};

use crate::crypto::aad;
use crate::records::{Category, Store, now};
use crate::{Error, Result};

/// Records between two checkpoints.
pub const CHECKPOINT_EVERY: u64 = 256;
/// Longest time records stay unsigned once the log is ticked or appended to.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
const KIND_RECORD: u8 = 1;
const KIND_CHECKPOINT: u8 = 2;
const MAX_FRAME: usize = 1 << 20;
const LOG_TABLE: &str = "event-log";
const STATE_NAME: &str = "event-log.checkpoint";

/// How serious an event is (RFC 5424 severities that matter here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Immediate action needed (e.g. integrity failure).
    Alert,
    /// A security control failed or was attacked.
    Error,
    /// Something unusual: a refused login, a weakened setting.
    Warning,
    /// Normal but significant: a configuration change, a removal.
    Notice,
    /// Routine.
    Info,
}

/// What came of the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was attempted and failed.
    Failure,
    /// It was refused by access control.
    Denied,
}

/// One event: who, what, when, from where, outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339), set by [`EventLog::append`].
    pub time: String,
    /// Severity.
    pub severity: Severity,
    /// What happened, e.g. `config.change`, `login`, `user-data.remove`.
    pub action: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Free detail (no personal data: that goes in `actor`/`source`).
    pub detail: String,
    /// Who: an account name (personal data), a machine identity, or
    /// `system`.
    pub actor: Option<String>,
    /// Whether `actor` is a person (its fields are then sealed under that
    /// person's key).
    pub actor_is_user: bool,
    /// From where: an address or interface.
    pub source: Option<String>,
}

impl Event {
    /// An event by the device itself.
    pub fn system(severity: Severity, action: &str, outcome: Outcome, detail: &str) -> Self {
        Self {
            time: String::new(),
            severity,
            action: action.to_owned(),
            outcome,
            detail: detail.to_owned(),
            actor: Some("system".into()),
            actor_is_user: false,
            source: None,
        }
    }

    /// An event caused by a person: actor and source are sealed under
    /// that person's key.
    pub fn by_user(
        user: &str,
        source: Option<&str>,
        severity: Severity,
        action: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Self {
        Self {
            actor: Some(user.to_owned()),
            actor_is_user: true,
            source: source.map(str::to_owned),
            ..Self::system(severity, action, outcome, detail)
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Common {
    time: String,
    severity: Severity,
    action: String,
    outcome: Outcome,
    detail: String,
    actor_is_user: bool,
}

#[derive(Serialize, Deserialize)]
struct Identifying {
    actor: Option<String>,
    source: Option<String>,
}

/// A checkpoint: the log held `count` records ending in `head` at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Records covered.
    pub count: u64,
    /// Chain hash of the last record covered (hex).
    pub head: String,
    /// Unix time of signing.
    pub time: u64,
}

fn chain(prev: &[u8; 32], kind: u8, body: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"bulwark-log v1");
    ctx.update(prev);
    ctx.update(&[kind]);
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn checkpoint_message(count: u64, head: &[u8; 32], time: u64) -> Vec<u8> {
    let mut m = b"bulwark-log-checkpoint v1".to_vec();
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time.to_be_bytes());
    m
}

/// One frame read from the file.
#[derive(Debug, Clone)]
struct Frame {
    offset: u64,
    kind: u8,
    body: Vec<u8>,
    stored_hash: [u8; 32],
}

/// Reads complete frames; returns them and the offset where the first
/// incomplete or malformed frame starts (the file length if none).
fn read_frames(bytes: &[u8]) -> (Vec<Frame>, u64) {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(len_bytes) = bytes.get(at..at + 4) else {
            break;
        };
        let len =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if !(33..=MAX_FRAME).contains(&len) {
            break;
        }
        let Some(frame) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        let (kind_body, hash) = frame.split_at(len - 32);
        let mut stored_hash = [0u8; 32];
        stored_hash.copy_from_slice(hash);
        frames.push(Frame {
            offset: at as u64,
            kind: kind_body[0],
            body: kind_body[1..].to_vec(),
            stored_hash,
        });
        at += 4 + len;
    }
    (frames, at as u64)
}

fn encode_frame(kind: u8, body: &[u8], hash: &[u8; 32]) -> Vec<u8> {
    let len = 1 + body.len() + 32;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(hash);
    out
}

struct Tail {
    file: File,
    count: u64,
    head: [u8; 32],
    since_checkpoint: u64,
    last_checkpoint: std::time::Instant,
}

/// An open event log. Appends are durable when [`EventLog::append`]
/// returns.
pub struct EventLog {
    path: PathBuf,
    store: Arc<Store>,
    signer: KeyRef,
    interval: std::time::Duration,
    tail: Mutex<Tail>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (creating if needed) `events.log` in `dir`. A frame cut short
    /// by a crash (never acknowledged) is removed, and that repair is
    /// itself logged.
    pub fn open(dir: &Path, store: Arc<Store>, signer: KeyRef) -> Result<Self> {
        let path = dir.join("events.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading", &path, e))?;
        let (frames, end) = read_frames(&bytes);
        let torn = end < bytes.len() as u64;
        if torn {
            file.set_len(end)
                .map_err(|e| Error::io("truncating a torn frame in", &path, e))?;
            file.sync_all()
                .map_err(|e| Error::io("flushing", &path, e))?;
        }
        let mut count = 0;
        let mut head = [0u8; 32];
        let mut since = 0;
        for f in &frames {
            head = f.stored_hash;
            if f.kind == KIND_RECORD {
                count += 1;
                since += 1;
            } else {
                since = 0;
            }
        }
        let log = Self {
            path,
            store,
            signer,
            interval: CHECKPOINT_INTERVAL,
            tail: Mutex::new(Tail {
                file,
                count,
                head,
                since_checkpoint: since,
                last_checkpoint: std::time::Instant::now(),
            }),
        };
        if torn {
            log.append(Event::system(
                Severity::Warning,
                "event-log.recovered",
                Outcome::Success,
                &format!("removed an incomplete frame at offset {end} left by a crash"),
            ))?;
        }
        Ok(log)
    }

    /// Appends an event (time set now) and returns its sequence number
    /// once it is on disk.
    pub fn append(&self, mut event: Event) -> Result<u64> {
        event.time = now();
        let keyring = self.store.keyring();
        let user_tag = match (&event.actor, event.actor_is_user) {
            (Some(user), true) => keyring.store_key.name(&[b"log-user", user.as_bytes()]),
            _ => [0u8; 32],
        };
        let identifying = serde_json::to_vec(&Identifying {
            actor: event.actor.clone(),
            source: event.source.clone(),
        })
        .map_err(|e| Error::InvalidInput {
            what: "event",
            reason: e.to_string(),
        })?;
        let common = serde_json::to_vec(&Common {
            time: event.time.clone(),
            severity: event.severity,
            action: event.action.clone(),
            outcome: event.outcome,
            detail: event.detail.clone(),
            actor_is_user: event.actor_is_user,
        })
        .map_err(|e| Error::InvalidInput {
            what: "event",
            reason: e.to_string(),
        })?;

        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = tail.count;
        let seq_bytes = seq.to_be_bytes();
        let sealed_common = keyring
            .store_key
            .seal(&aad(LOG_TABLE, &seq_bytes), &common)?;
        let sealed_ident = match (&event.actor, event.actor_is_user) {
            (Some(user), true) => keyring
                .user_key_or_create(user)?
                .seal(&aad(LOG_TABLE, &seq_bytes), &identifying)?,
            _ => keyring
                .store_key
                .seal(&aad(LOG_TABLE, &seq_bytes), &identifying)?,
        };
        let mut body = Vec::with_capacity(8 + 32 + 8 + sealed_common.len() + sealed_ident.len());
        body.extend_from_slice(&seq_bytes);
        body.extend_from_slice(&user_tag);
        body.extend_from_slice(&(sealed_common.len() as u32).to_be_bytes());
        body.extend_from_slice(&sealed_common);
        body.extend_from_slice(&sealed_ident);
        let hash = chain(&tail.head, KIND_RECORD, &body);
        self.write_frame(&mut tail, &encode_frame(KIND_RECORD, &body, &hash))?;
        tail.head = hash;
        tail.count += 1;
        tail.since_checkpoint += 1;
        if tail.since_checkpoint >= CHECKPOINT_EVERY
            || tail.last_checkpoint.elapsed() >= self.interval
        {
            self.checkpoint_locked(&mut tail)?;
        }
        Ok(seq)
    }

    fn write_frame(&self, tail: &mut Tail, frame: &[u8]) -> Result<()> {
        tail.file
            .write_all(frame)
            .and_then(|()| tail.file.sync_data())
            .map_err(|e| Error::io("appending to", &self.path, e))
    }

    /// Signs a checkpoint over everything appended so far.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        self.checkpoint_locked(&mut tail)
    }

    fn checkpoint_locked(&self, tail: &mut Tail) -> Result<Checkpoint> {
        let time = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
        let signature = self
            .signer
            .sign(&checkpoint_message(tail.count, &tail.head, time))?;
        let mut body = Vec::with_capacity(8 + 32 + 8 + signature.0.len());
        body.extend_from_slice(&tail.count.to_be_bytes());
        body.extend_from_slice(&tail.head);
        body.extend_from_slice(&time.to_be_bytes());
        body.extend_from_slice(&signature.0);
        let hash = chain(&tail.head, KIND_CHECKPOINT, &body);
        self.write_frame(tail, &encode_frame(KIND_CHECKPOINT, &body, &hash))?;
        let checkpoint = Checkpoint {
            count: tail.count,
            head: hex::encode(tail.head),
            time,
        };
        let state = serde_json::to_vec(&checkpoint).map_err(|e| Error::InvalidInput {
            what: "checkpoint",
            reason: e.to_string(),
        })?;
        self.store.put(Category::Identifiers, STATE_NAME, &state)?;
        tail.head = hash;
        tail.since_checkpoint = 0;
        tail.last_checkpoint = std::time::Instant::now();
        Ok(checkpoint)
    }

    /// Sets how long records may stay unsigned (default
    /// [`CHECKPOINT_INTERVAL`]).
    pub fn with_checkpoint_interval(mut self, interval: std::time::Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Signs a checkpoint if records have waited unsigned for the
    /// checkpoint interval; the agent calls this from its timer so the
    /// unprotected tail stays bounded in time, not only in count. Returns
    /// whether a checkpoint was written.
    pub fn tick(&self) -> Result<bool> {
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.since_checkpoint > 0 && tail.last_checkpoint.elapsed() >= self.interval {
            self.checkpoint_locked(&mut tail)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes a final checkpoint (on shutdown).
    pub fn close(self) -> Result<Checkpoint> {
        self.checkpoint()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records appended.
    pub fn len(&self) -> u64 {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One thing wrong with a log, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// A record's bytes differ from what was chained.
    Modified {
        /// Record number.
        record: u64,
        /// Byte offset of its frame.
        offset: u64,
    },
    /// Records are missing.
    Deleted {
        /// First missing record.
        first: u64,
        /// Last missing record.
        last: u64,
        /// Offset where they should have been.
        offset: u64,
    },
    /// Records appear out of order.
    Reordered {
        /// The record found.
        record: u64,
        /// The record expected there.
        expected: u64,
        /// Offset.
        offset: u64,
    },
    /// The file ends inside a frame or with garbage.
    Truncated {
        /// Where the damage starts.
        offset: u64,
        /// Records after the last valid checkpoint (not protected by a
        /// signature, so their truncation cannot be told from a crash).
        unprotected_records: u64,
    },
    /// A checkpoint's signature does not verify with the device key.
    BadSignature {
        /// Records the checkpoint claims.
        count: u64,
        /// Offset.
        offset: u64,
    },
    /// A checkpoint does not match the records before it.
    CheckpointMismatch {
        /// Records the checkpoint claims.
        count: u64,
        /// Records actually before it.
        found: u64,
        /// Offset.
        offset: u64,
    },
    /// The log is older than the newest checkpoint the store remembers:
    /// replaced by an older copy, or truncated.
    RolledBack {
        /// Records the store's checkpoint covers.
        expected_at_least: u64,
        /// Records in the log.
        found: u64,
    },
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// Records covered by the last valid checkpoint.
    pub protected_records: u64,
    /// Everything wrong, in file order; empty when the log is intact.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the log verified.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies the log in `dir` against the device public key and the newest
/// checkpoint remembered by `store` (if given).
pub fn verify(dir: &Path, device_key: &PublicKey, store: Option<&Store>) -> Result<Report> {
    let path = dir.join("events.log");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    let (frames, end) = read_frames(&bytes);
    let mut findings = Vec::new();
    let mut prev = [0u8; 32];
    let mut expected_seq = 0u64;
    let mut records = 0u64;
    let mut checkpoints = 0u64;
    let mut protected = 0u64;
    let mut last_record_hash = [0u8; 32];
    let mut i = 0;
    while i < frames.len() {
        let f = &frames[i];
        let recomputed = chain(&prev, f.kind, &f.body);
        match f.kind {
            KIND_RECORD => {
                let seq = f
                    .body
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                if seq != expected_seq {
                    let next_seq = frames
                        .get(i + 1)
                        .and_then(|n| n.body.get(..8))
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes);
                    if seq == expected_seq + 1 && next_seq == Some(expected_seq) {
                        findings.push(Finding::Reordered {
                            record: seq,
                            expected: expected_seq,
                            offset: f.offset,
                        });
                        // Skip the swapped pair; resume the chain after it.
                        prev = frames[i + 1].stored_hash;
                        last_record_hash = prev;
                        records += 2;
                        expected_seq += 2;
                        i += 2;
                        continue;
                    } else if seq > expected_seq && seq != u64::MAX {
                        findings.push(Finding::Deleted {
                            first: expected_seq,
                            last: seq - 1,
                            offset: f.offset,
                        });
                        expected_seq = seq;
                    } else {
                        findings.push(Finding::Reordered {
                            record: seq,
                            expected: expected_seq,
                            offset: f.offset,
                        });
                    }
                } else if recomputed != f.stored_hash || !record_opens(store, f, seq) {
                    findings.push(Finding::Modified {
                        record: seq,
                        offset: f.offset,
                    });
                }
                records += 1;
                expected_seq = expected_seq.max(seq.saturating_add(1));
                last_record_hash = f.stored_hash;
            }
            KIND_CHECKPOINT => {
                let ok_chain = recomputed == f.stored_hash;
                match parse_checkpoint(&f.body) {
                    Some((count, head, time, sig)) => {
                        let msg = checkpoint_message(count, &head, time);
                        if !keys_verify(device_key, &msg, sig) || !ok_chain {
                            findings.push(Finding::BadSignature {
                                count,
                                offset: f.offset,
                            });
                        } else if count != records || head != last_record_hash {
                            findings.push(Finding::CheckpointMismatch {
                                count,
                                found: records,
                                offset: f.offset,
                            });
                        } else {
                            checkpoints += 1;
                            protected = count;
                        }
                    }
                    None => findings.push(Finding::BadSignature {
                        count: 0,
                        offset: f.offset,
                    }),
                }
            }
            _ => findings.push(Finding::Modified {
                record: expected_seq,
                offset: f.offset,
            }),
        }
        prev = f.stored_hash;
        i += 1;
    }
    if end < bytes.len() as u64 {
        findings.push(Finding::Truncated {
            offset: end,
            unprotected_records: records - protected,
        });
    }
    if let Some(store) = store
        && let Some(state) = store.get(Category::Identifiers, STATE_NAME)?
        && let Ok(remembered) = serde_json::from_slice::<Checkpoint>(&state)
        && remembered.count > records
    {
        findings.push(Finding::RolledBack {
            expected_at_least: remembered.count,
            found: records,
        });
    }
    Ok(Report {
        records,
        checkpoints,
        protected_records: protected,
        findings,
    })
}

fn parse_checkpoint(body: &[u8]) -> Option<(u64, [u8; 32], u64, &[u8])> {
    let count = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let head: [u8; 32] = body.get(8..40)?.try_into().ok()?;
    let time = u64::from_be_bytes(body.get(40..48)?.try_into().ok()?);
    Some((count, head, time, body.get(48..)?))
}

fn keys_verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
    match key.algorithm() {
        keys::Algorithm::Ed25519 => UnparsedPublicKey::new(&ED25519, key.raw())
            .verify(message, signature)
            .is_ok(),
        _ => UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.raw())
            .verify(message, signature)
            .is_ok(),
    }
}

/// Whether the record's common fields authenticate under the store key
/// (catches a modification whose chain hashes were recomputed).
fn record_opens(store: Option<&Store>, f: &Frame, seq: u64) -> bool {
    let Some(store) = store else { return true };
    split_record(&f.body)
        .map(|(_, common, _)| {
            store
                .keyring()
                .store_key
                .open(&aad(LOG_TABLE, &seq.to_be_bytes()), common)
                .is_ok()
        })
        .unwrap_or(false)
}

fn split_record(body: &[u8]) -> Option<([u8; 32], &[u8], &[u8])> {
    let tag: [u8; 32] = body.get(8..40)?.try_into().ok()?;
    let len = u32::from_be_bytes(body.get(40..44)?.try_into().ok()?) as usize;
    let common = body.get(44..44 + len)?;
    let ident = body.get(44 + len..)?;
    Some((tag, common, ident))
}

/// One exported event; identifying fields read `null` with
/// `identity_removed` once the user's key is gone.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// Sequence number.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The user's key was destroyed: actor and source are unreadable.
    pub identity_removed: bool,
}

/// Decrypts every readable record, in order.
pub fn export(dir: &Path, store: &Store) -> Result<Vec<Exported>> {
    let path = dir.join("events.log");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    let (frames, _) = read_frames(&bytes);
    let keyring = store.keyring();
    let users: Vec<(String, [u8; 32])> = keyring
        .user_ids()
        .into_iter()
        .map(|u| {
            let tag = keyring.store_key.name(&[b"log-user", u.as_bytes()]);
            (u, tag)
        })
        .collect();
    let mut out = Vec::new();
    for f in frames.iter().filter(|f| f.kind == KIND_RECORD) {
        let tampered = |reason: String| Error::Tampered {
            table: LOG_TABLE,
            reason,
        };
        let seq = u64::from_be_bytes(
            f.body
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| tampered("short record".into()))?,
        );
        out.push(decode_record(store, &users, seq, &f.body).map_err(tampered)?);
    }
    Ok(out)
}

/// One entry of an [`ExportPage`]: a readable record, or the number of a
/// record whose common fields failed authentication (reported rather than
/// skipped silently, so a reader such as the log forwarder never stalls on
/// it and never hides it).
#[derive(Debug, Clone)]
pub enum PageEntry {
    /// A record that decrypted.
    Record(Exported),
    /// A record that did not authenticate or parse.
    Unreadable {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
}

/// Records read by [`export_since`].
#[derive(Debug, Clone)]
pub struct ExportPage {
    /// Records with sequence number `>= first_seq`, in log order, at most
    /// `limit` of them.
    pub entries: Vec<PageEntry>,
    /// Byte offset just after the last frame read: pass it as
    /// `start_offset` to continue (it is only a hint; a stale one costs a
    /// rescan, never a wrong answer).
    pub resume_offset: u64,
    /// The highest sequence number seen while scanning, if any record was.
    pub highest_seq: Option<u64>,
}

/// Reads at most `limit` records with sequence number `>= first_seq`,
/// starting the scan at byte `start_offset` (0, or a `resume_offset` from
/// an earlier page). Frames before `first_seq` are skipped by their length
/// header without being decrypted, so a reader that keeps its offset reads
/// only what is new. An offset that is not a frame boundary at or before
/// `first_seq` (the log was replaced or truncated) falls back to a scan
/// from the start. Only complete frames are read: a frame being appended
/// is left for the next call.
pub fn export_since(
    dir: &Path,
    store: &Store,
    first_seq: u64,
    start_offset: u64,
    limit: usize,
) -> Result<ExportPage> {
    use std::io::{BufReader, Seek, SeekFrom};

    let path = dir.join("events.log");
    let file = File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading the size of", &path, e))?
        .len();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut offset = if start_offset <= len { start_offset } else { 0 };
    let mut restarted = offset == 0;
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seeking in", &path, e))?;
    let keyring = store.keyring();
    let mut users: Option<Vec<(String, [u8; 32])>> = None;
    let mut entries = Vec::new();
    let mut highest_seq = None;
    // Invariant: `offset` is the start of the next frame to read. While
    // `!restarted` the frames come from the caller's hint, and anything
    // odd there means the hint is stale: scan again from the start.
    while entries.len() < limit {
        let mut len_bytes = [0u8; 4];
        if offset + 4 > len || reader.read_exact(&mut len_bytes).is_err() {
            break;
        }
        let frame_len = u32::from_be_bytes(len_bytes) as usize;
        let fits = (33..=MAX_FRAME).contains(&frame_len) && offset + 4 + frame_len as u64 <= len;
        let mut head = [0u8; 9];
        let head_ok = fits && reader.read_exact(&mut head).is_ok();
        let [kind, s @ ..] = head;
        let seq = u64::from_be_bytes(s);
        let stale = !head_ok
            || !(kind == KIND_RECORD || kind == KIND_CHECKPOINT)
            || (kind == KIND_RECORD && seq > first_seq && highest_seq.is_none());
        if stale && !restarted {
            restarted = true;
            offset = 0;
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("seeking in", &path, e))?;
            continue;
        }
        if !head_ok {
            // A frame still being appended, or a torn tail: stop before it.
            break;
        }
        let next = offset + 4 + frame_len as u64;
        if kind != KIND_RECORD || seq < first_seq {
            if kind == KIND_RECORD {
                highest_seq = Some(highest_seq.map_or(seq, |h: u64| h.max(seq)));
            }
            reader
                .seek(SeekFrom::Start(next))
                .map_err(|e| Error::io("seeking in", &path, e))?;
            offset = next;
            continue;
        }
        let mut rest = vec![0u8; frame_len - 9];
        reader
            .read_exact(&mut rest)
            .map_err(|e| Error::io("reading", &path, e))?;
        let mut body = Vec::with_capacity(8 + rest.len());
        body.extend_from_slice(&head[1..]);
        body.extend_from_slice(
            rest.get(..rest.len().saturating_sub(32))
                .unwrap_or_default(),
        );
        let users = users.get_or_insert_with(|| {
            keyring
                .user_ids()
                .into_iter()
                .map(|u| {
                    let tag = keyring.store_key.name(&[b"log-user", u.as_bytes()]);
                    (u, tag)
                })
                .collect()
        });
        entries.push(match decode_record(store, users, seq, &body) {
            Ok(exported) => PageEntry::Record(exported),
            Err(reason) => PageEntry::Unreadable { seq, reason },
        });
        highest_seq = Some(highest_seq.map_or(seq, |h: u64| h.max(seq)));
        offset = next;
    }
    Ok(ExportPage {
        entries,
        resume_offset: offset,
        highest_seq,
    })
}

/// Decrypts one record body (the same rules as [`export`]).
fn decode_record(
    store: &Store,
    users: &[(String, [u8; 32])],
    seq: u64,
    body: &[u8],
) -> std::result::Result<Exported, String> {
    let keyring = store.keyring();
    let (tag, common, ident) =
        split_record(body).ok_or_else(|| format!("record {seq} is malformed"))?;
    let aad = aad(LOG_TABLE, &seq.to_be_bytes());
    let common: Common = serde_json::from_slice(
        &keyring
            .store_key
            .open(&aad, common)
            .map_err(|r| format!("record {seq}: {r}"))?,
    )
    .map_err(|e| format!("record {seq}: {e}"))?;
    let identifying: Option<Identifying> = if tag == [0u8; 32] {
        keyring
            .store_key
            .open(&aad, ident)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
    } else {
        users
            .iter()
            .find(|(_, t)| *t == tag)
            .and_then(|(u, _)| keyring.user_key(u).ok().flatten())
            .and_then(|k| k.open(&aad, ident).ok())
            .and_then(|p| serde_json::from_slice(&p).ok())
    };
    let identity_removed = identifying.is_none();
    let identifying = identifying.unwrap_or(Identifying {
        actor: None,
        source: None,
    });
    Ok(Exported {
        seq,
        event: Event {
            time: common.time,
            severity: common.severity,
            action: common.action,
            outcome: common.outcome,
            detail: common.detail,
            actor: identifying.actor,
            actor_is_user: common.actor_is_user,
            source: identifying.source,
        },
        identity_removed,
    })
}

#[cfg(test)]
mod export_since_tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
    use keys_soft::{KekProtection, SoftKeyStore};

    use super::*;

    fn seqs(page: &ExportPage) -> Vec<u64> {
        page.entries
            .iter()
            .map(|e| match e {
                PageEntry::Record(r) => r.seq,
                PageEntry::Unreadable { seq, .. } => *seq,
            })
            .collect()
    }

    #[test]
    fn pages_resume_and_survive_stale_hints_and_torn_tails() {
        let tmp = tempfile::tempdir().unwrap();
        let keys =
            Arc::new(SoftKeyStore::open(&tmp.path().join("k"), KekProtection::File).unwrap());
        keys.generate(&"d".parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
        let ks: Arc<dyn KeyStore> = keys.clone();
        let dir = tmp.path().join("s");
        let store = Arc::new(Store::open(&dir, keys).unwrap());
        let log = EventLog::open(
            &dir,
            store.clone(),
            KeyRef::new(ks, "d".parse().unwrap()).unwrap(),
        )
        .unwrap();
        for i in 0..10 {
            log.append(Event::by_user(
                "u",
                None,
                Severity::Info,
                "a",
                Outcome::Success,
                &i.to_string(),
            ))
            .unwrap();
        }
        log.checkpoint().unwrap();
        for _ in 0..5 {
            log.append(Event::system(Severity::Info, "b", Outcome::Success, ""))
                .unwrap();
        }
        let p1 = export_since(&dir, &store, 0, 0, 4).unwrap();
        assert_eq!(seqs(&p1), vec![0, 1, 2, 3]);
        let p2 = export_since(&dir, &store, 4, p1.resume_offset, 100).unwrap();
        assert_eq!(seqs(&p2), (4..15).collect::<Vec<_>>());
        assert_eq!(p2.highest_seq, Some(14));
        let PageEntry::Record(r) = &p2.entries[0] else {
            panic!()
        };
        assert_eq!(r.event.actor.as_deref(), Some("u"));
        // At the end: nothing, and the offset stays put.
        let p3 = export_since(&dir, &store, 15, p2.resume_offset, 100).unwrap();
        assert!(p3.entries.is_empty());
        assert_eq!(p3.resume_offset, p2.resume_offset);
        // A hint in the middle of a frame, or past the end: rescanned.
        for hint in [p1.resume_offset + 3, 1 << 40] {
            assert_eq!(
                seqs(&export_since(&dir, &store, 12, hint, 100).unwrap()),
                vec![12, 13, 14]
            );
        }
        // A half-written frame at the end is left for later.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("events.log"))
            .unwrap()
            .write_all(&[0, 0, 1, 0, KIND_RECORD, 0, 0])
            .unwrap();
        let p4 = export_since(&dir, &store, 13, 0, 100).unwrap();
        assert_eq!(seqs(&p4), vec![13, 14]);
        assert_eq!(p4.resume_offset, p2.resume_offset);
    }
}
