//! The forwarder: cursor, batches, the run loop.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use identity::tls::TlsIdentity;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use store::eventlog::{self, ExportPage, Outcome, PageEntry, Severity};
use store::{Category, Store};

use crate::deidentify::Deidentify;
use crate::syslog::{self, DEFAULT_MESSAGE_LEN, Facility, Header};
use crate::transport::Link;
use crate::{Error, Result};

/// Where and how to forward. Build with [`Config::new`], then adjust the
/// public fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The collector, `host:port` (RFC 5425's port is 6514).
    pub collector: String,
    /// The name the collector's certificate must carry: a DNS name or an
    /// IP address.
    pub server_name: String,
    /// HOSTNAME of every message: the device identifier.
    pub hostname: String,
    /// APP-NAME of every message.
    pub app_name: String,
    /// The facility (default [`Facility::AUTHPRIV`]).
    pub facility: Facility,
    /// The SD-ID of the event's structured data, `name@enterprise-number`.
    /// The default uses 32473, the enterprise number reserved for
    /// documentation (RFC 5612); a maker with its own number should use it.
    pub sd_id: String,
    /// What to do with the fields that identify a person.
    pub deidentify: Deidentify,
    /// Records per TLS session (the most that may be sent twice).
    pub batch_size: usize,
    /// Batches per [`Forwarder::forward_pending`] call.
    pub max_batches_per_call: usize,
    /// Largest message, in octets (at least 2048, RFC 5425 §4.3.1).
    pub max_message_len: usize,
    /// Bound on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Bound on each read or write, and on waiting for the collector to
    /// close the session.
    pub io_timeout: Duration,
    /// How often [`Forwarder::run_until`] looks for new events.
    pub poll_interval: Duration,
    /// First retry delay after a failure; doubled per failure.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
}

impl Config {
    /// Defaults: facility authpriv, no de-identification, batches of 256,
    /// 8192-octet messages, 10 s timeouts, 1 s polling, backoff 1 s to 5 min.
    pub fn new(collector: &str, server_name: &str, hostname: &str) -> Self {
        Self {
            collector: collector.to_owned(),
            server_name: server_name.to_owned(),
            hostname: hostname.to_owned(),
            app_name: "bulwark".into(),
            facility: Facility::AUTHPRIV,
            sd_id: "bulwark@32473".into(),
            deidentify: Deidentify::Keep,
            batch_size: 256,
            max_batches_per_call: 64,
            max_message_len: DEFAULT_MESSAGE_LEN,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// What one [`Forwarder::forward_pending`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardReport {
    /// Messages confirmed delivered.
    pub sent: u64,
    /// TLS sessions (one per batch).
    pub batches: u64,
    /// Records that failed authentication and were reported as such.
    pub unreadable: u64,
    /// The log was behind the cursor (replaced by an older copy or
    /// truncated); the collector was told and the cursor moved back.
    pub rolled_back: bool,
    /// The next record to send.
    pub next_seq: u64,
    /// The call stopped at `max_batches_per_call`; more may be waiting.
    pub more_pending: bool,
}

/// The forwarder's health, for a status page or a metric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The next record to send (everything before it was delivered).
    pub next_seq: u64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// What [`Forwarder::run_until`] did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Messages delivered.
    pub sent: u64,
    /// Failed attempts.
    pub failures: u64,
}

/// Tells [`Forwarder::run_until`] to stop; wakes it from any wait.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<(Mutex<bool>, Condvar)>);

impl Shutdown {
    /// A shutdown signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the signal.
    pub fn trigger(&self) {
        let (flag, cvar) = &*self.0;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cvar.notify_all();
    }

    /// Whether the signal was given.
    pub fn is_triggered(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `limit`; true if the signal was given.
    fn wait(&self, limit: Duration) -> bool {
        let (flag, cvar) = &*self.0;
        let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = cvar
            .wait_timeout_while(guard, limit, |stop| !*stop)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

/// The durable cursor: `next_seq` is the first record not yet confirmed
/// delivered; `offset` is a hint for where it starts in the log file.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Cursor {
    next_seq: u64,
    offset: u64,
}

/// Forwards the event log to one collector. See the crate documentation.
pub struct Forwarder {
    config: Config,
    header: Header,
    store: Arc<Store>,
    log_dir: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    cursor_name: String,
    // Held for a whole forwarding pass, so two passes never send the same
    // batch concurrently.
    cursor: Mutex<Cursor>,
    status: Mutex<Status>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("collector", &self.config.collector)
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder of the log in `log_dir` (the directory given to
    /// [`eventlog::EventLog::open`]) to `config.collector`, authenticating
    /// as `identity` and accepting a collector whose certificate chains to
    /// one of `anchors` and names `config.server_name`. Loads the cursor
    /// from `store`; a new collector starts at the first record.
    pub fn new(
        config: Config,
        store: Arc<Store>,
        log_dir: &Path,
        identity: &TlsIdentity,
        anchors: &[CertificateDer<'static>],
    ) -> Result<Self> {
        let header = Header::new(
            config.facility,
            &config.hostname,
            &config.app_name,
            &config.sd_id,
            config.max_message_len,
        )?;
        if config.batch_size == 0 || config.max_batches_per_call == 0 {
            return Err(Error::Config {
                what: "batch size",
                reason: "batches and batches per call must be at least 1".into(),
            });
        }
        if config.backoff_initial.is_zero() || config.backoff_max < config.backoff_initial {
            return Err(Error::Config {
                what: "backoff",
                reason: "the initial delay must be positive and at most the maximum".into(),
            });
        }
        let server_name =
            ServerName::try_from(config.server_name.clone()).map_err(|e| Error::Config {
                what: "server name",
                reason: e.to_string(),
            })?;
        let tls = Arc::new(identity::tls::client_config(identity, anchors)?);
        let cursor_name = format!("logsync.cursor/{}", config.collector);
        let cursor = match store.get(Category::Identifiers, &cursor_name)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                what: "forwarding cursor",
                reason: e.to_string(),
            })?,
            None => Cursor::default(),
        };
        Ok(Self {
            header,
            store,
            log_dir: log_dir.to_path_buf(),
            tls,
            server_name,
            cursor_name,
            status: Mutex::new(Status {
                next_seq: cursor.next_seq,
                ..Status::default()
            }),
            cursor: Mutex::new(cursor),
            config,
        })
    }

    /// The forwarder's health.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends every record after the cursor (at most
    /// `max_batches_per_call` batches), one TLS session per batch, moving
    /// the durable cursor after each confirmed batch.
    pub fn forward_pending(&self) -> Result<ForwardReport> {
        let result = self.forward_locked();
        // Not under the status lock: another pass may hold the cursor.
        let next_seq = match &result {
            Ok(report) => report.next_seq,
            Err(_) => {
                self.cursor
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next_seq
            }
        };
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.next_seq = next_seq;
        match &result {
            Ok(_) => {
                status.consecutive_failures = 0;
                status.last_error = None;
            }
            Err(e) => {
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                status.last_error = Some(e.to_string());
            }
        }
        result
    }

    fn forward_locked(&self) -> Result<ForwardReport> {
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = ForwardReport {
            next_seq: cursor.next_seq,
            ..ForwardReport::default()
        };
        for _ in 0..self.config.max_batches_per_call {
            let page = eventlog::export_since(
                &self.log_dir,
                &self.store,
                cursor.next_seq,
                cursor.offset,
                self.config.batch_size,
            )?;
            let Some(last) = page.entries.iter().map(entry_seq).max() else {
                if let Some(log_next) = rolled_back(&cursor, &page) {
                    let alert = self.rollback_message(cursor.next_seq, log_next);
                    self.deliver(&[alert])?;
                    *cursor = Cursor {
                        next_seq: log_next,
                        offset: 0,
                    };
                    self.save(&cursor)?;
                    report.sent += 1;
                    report.batches += 1;
                    report.rolled_back = true;
                    report.next_seq = cursor.next_seq;
                }
                return Ok(report);
            };
            let messages: Vec<Vec<u8>> = page.entries.iter().map(|e| self.message(e)).collect();
            self.deliver(&messages)?;
            *cursor = Cursor {
                next_seq: last.saturating_add(1),
                offset: page.resume_offset,
            };
            self.save(&cursor)?;
            report.sent += messages.len() as u64;
            report.batches += 1;
            report.unreadable += page
                .entries
                .iter()
                .filter(|e| matches!(e, PageEntry::Unreadable { .. }))
                .count() as u64;
            report.next_seq = cursor.next_seq;
            if page.entries.len() < self.config.batch_size {
                return Ok(report);
            }
        }
        report.more_pending = true;
        Ok(report)
    }

    /// Forwards until `shutdown` is triggered: new events are picked up
    /// every `poll_interval`; after a failure the next attempt waits a
    /// jittered, doubling delay from `backoff_initial` up to `backoff_max`.
    /// Blocking: run it on its own thread (or `spawn_blocking`).
    pub fn run_until(&self, shutdown: &Shutdown) -> RunSummary {
        let mut summary = RunSummary::default();
        let mut delay = self.config.backoff_initial;
        // Bounded by the shutdown signal, checked on every pass.
        while !shutdown.is_triggered() {
            match self.forward_pending() {
                Ok(report) => {
                    summary.sent += report.sent;
                    delay = self.config.backoff_initial;
                    if !report.more_pending && shutdown.wait(self.config.poll_interval) {
                        break;
                    }
                }
                Err(e) => {
                    summary.failures += 1;
                    let wait = jitter(delay);
                    tracing::warn!(
                        collector = %self.config.collector,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "log forwarding failed"
                    );
                    if shutdown.wait(wait) {
                        break;
                    }
                    delay = (delay * 2).min(self.config.backoff_max);
                }
            }
        }
        summary
    }

    fn deliver(&self, messages: &[Vec<u8>]) -> Result<()> {
        let mut payload = Vec::with_capacity(messages.iter().map(|m| m.len() + 6).sum());
        for m in messages {
            syslog::frame(&mut payload, m);
        }
        Link {
            collector: &self.config.collector,
            server_name: &self.server_name,
            tls: &self.tls,
            connect_timeout: self.config.connect_timeout,
            io_timeout: self.config.io_timeout,
        }
        .deliver(&payload)
    }

    fn save(&self, cursor: &Cursor) -> Result<()> {
        let bytes = serde_json::to_vec(cursor).map_err(|e| Error::CorruptState {
            what: "forwarding cursor",
            reason: e.to_string(),
        })?;
        // Durable when put returns (redb commits with fsync).
        self.store
            .put(Category::Identifiers, &self.cursor_name, &bytes)?;
        Ok(())
    }

    fn message(&self, entry: &PageEntry) -> Vec<u8> {
        match entry {
            PageEntry::Record(exported) => {
                let mut event = exported.event.clone();
                let applied = self.config.deidentify.apply(&mut event);
                let seq = exported.seq.to_string();
                let mut params: Vec<(&str, &str)> = vec![
                    ("seq", &seq),
                    ("action", &event.action),
                    ("outcome", outcome_name(event.outcome)),
                    (
                        "actor-type",
                        if event.actor_is_user {
                            "user"
                        } else {
                            "system"
                        },
                    ),
                ];
                if let Some(actor) = &event.actor {
                    params.push(("actor", actor));
                }
                if let Some(source) = &event.source {
                    params.push(("source", source));
                }
                if exported.identity_removed {
                    params.push(("identity-removed", "true"));
                }
                if let Some(how) = applied.as_param() {
                    params.push(("deidentified", how));
                }
                self.header.format(
                    event.severity,
                    &event.time,
                    &event.action,
                    &params,
                    &event.detail,
                )
            }
            PageEntry::Unreadable { seq, reason } => {
                let seq = seq.to_string();
                self.header.format(
                    Severity::Alert,
                    &now(),
                    "event-log.unreadable",
                    &[("seq", &seq), ("reason", reason)],
                    "an event log record failed authentication on the device",
                )
            }
        }
    }

    fn rollback_message(&self, cursor: u64, log_next: u64) -> Vec<u8> {
        let (cursor, log_next) = (cursor.to_string(), log_next.to_string());
        self.header.format(
            Severity::Alert,
            &now(),
            "event-log.rolled-back",
            &[("forwarded-up-to", &cursor), ("log-records", &log_next)],
            "the event log holds fewer records than were already forwarded: \
             it was truncated or replaced by an older copy",
        )
    }
}

fn entry_seq(entry: &PageEntry) -> u64 {
    match entry {
        PageEntry::Record(e) => e.seq,
        PageEntry::Unreadable { seq, .. } => *seq,
    }
}

/// When a page found nothing new: the log's record count if it is below
/// the cursor (the file shrank, or a rescan found only older records).
fn rolled_back(cursor: &Cursor, page: &ExportPage) -> Option<u64> {
    let log_next = page.highest_seq.map_or(0, |h| h.saturating_add(1));
    let shrank = page.resume_offset < cursor.offset;
    let behind = page.highest_seq.is_some() && log_next < cursor.next_seq;
    ((shrank || behind) && log_next < cursor.next_seq).then_some(log_next)
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Denied => "denied",
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A delay between half and all of `delay`, so that devices cut off
/// together do not all reconnect in the same instant.
fn jitter(delay: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let fraction = match SystemRandom::new().fill(&mut byte) {
        Ok(()) => f64::from(byte[0]) / 255.0,
        Err(_) => 1.0,
    };
    delay.mul_f64(0.5 + 0.5 * fraction)
}
