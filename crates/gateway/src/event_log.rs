//! The gateway's audit sink into the store's tamper-evident event log
//! (clause 5.2.5.2.2).
//!
//! [`EventLog::append`] fsyncs every record, which a connection task
//! must not wait for. [`EventLogAudit::record`] only puts the event on a
//! bounded channel; one writer thread appends, and signs checkpoints on
//! the log's interval while idle. When the channel is full the event is
//! dropped, counted in [`Metrics`] (`bulwark_gateway_audit_dropped_total`)
//! and logged: a flood of refusals must slow neither the proxy nor the
//! devices that behave.
//!
//! Each event is a machine event: the actor is the device's policy name
//! (not a person, so nothing is sealed under a user key), the source is
//! the peer address.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use store::eventlog::{Event, EventLog, Outcome, Severity};

use crate::audit::{Audit, GatewayEvent, action};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Events that may wait for the writer before new ones are dropped:
/// about a second of appends at the ~4,700 fsynced appends per second
/// measured in docs/performance.md.
pub const DEFAULT_CAPACITY: usize = 4096;
/// How often an idle writer lets the log sign a checkpoint.
const TICK: Duration = Duration::from_secs(5);

/// An [`Audit`] that appends to an [`EventLog`] from a writer thread.
#[derive(Debug)]
pub struct EventLogAudit {
    tx: Option<SyncSender<GatewayEvent>>,
    metrics: Arc<Metrics>,
    writer: Option<JoinHandle<()>>,
}

impl EventLogAudit {
    /// Starts the writer thread over `log`, with room for `capacity`
    /// waiting events.
    pub fn start(log: Arc<EventLog>, capacity: usize, metrics: Arc<Metrics>) -> Result<Self> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let writer = std::thread::Builder::new()
            .name("gateway-audit".into())
            .spawn(move || write_loop(&log, &rx))
            .map_err(|source| Error::AuditWriter { source })?;
        Ok(Self {
            tx: Some(tx),
            metrics,
            writer: Some(writer),
        })
    }

    /// Stops taking events and waits until every queued one is written
    /// and a checkpoint signed (blocking: call it from a blocking context
    /// on shutdown). Dropping instead lets the writer finish on its own.
    pub fn close(mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("the audit writer thread panicked");
        }
    }
}

impl Audit for EventLogAudit {
    fn record(&self, event: GatewayEvent) {
        let Some(tx) = &self.tx else { return };
        let why = match tx.try_send(event) {
            Ok(()) => return,
            Err(TrySendError::Full(e)) => (e, "the event log writer is behind"),
            Err(TrySendError::Disconnected(e)) => (e, "the event log writer has stopped"),
        };
        self.metrics.audit_dropped();
        let dropped = self.metrics.audit_dropped_total();
        // One warning per power of two dropped: visible, not a second flood.
        if dropped.is_power_of_two() {
            tracing::warn!(
                dropped,
                action = why.0.action,
                device = why.0.device.as_deref().unwrap_or("-"),
                "audit event dropped: {}",
                why.1
            );
        }
    }
}

fn write_loop(log: &EventLog, rx: &Receiver<GatewayEvent>) {
    loop {
        match rx.recv_timeout(TICK) {
            Ok(e) => {
                if let Err(err) = log.append(to_log_event(&e)) {
                    tracing::error!(action = e.action, error = %err, "event log append failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Err(err) = log.checkpoint() {
                    tracing::error!(error = %err, "event log checkpoint failed");
                }
                return;
            }
        }
        if let Err(err) = log.tick() {
            tracing::error!(error = %err, "event log checkpoint failed");
        }
    }
}

/// The log event for a gateway event.
pub fn to_log_event(e: &GatewayEvent) -> Event {
    let (severity, outcome) = match e.action {
        action::UPSTREAM_UNAVAILABLE => (Severity::Error, Outcome::Failure),
        action::QUARANTINE_START | action::QUARANTINE_MANUAL => {
            (Severity::Warning, Outcome::Success)
        }
        action::QUARANTINE_RELEASE => (Severity::Notice, Outcome::Success),
        action::TLS_REFUSED => (Severity::Warning, Outcome::Denied),
        // Forwarded (the policy allowed it), but worth a look.
        action::ANOMALY => (Severity::Warning, Outcome::Success),
        _ if e.reason.is_some() => (Severity::Warning, Outcome::Denied),
        _ => (Severity::Info, Outcome::Success),
    };
    let detail = match e.reason {
        Some(r) => format!("{}: {}", r.as_str(), e.detail),
        None => e.detail.clone(),
    };
    Event {
        actor: Some(e.device.clone().unwrap_or_else(|| "unidentified".into())),
        source: Some(e.peer.to_string()),
        ..Event::system(severity, e.action, outcome, &detail)
    }
}
