//! User notifications for the device agent (ISO/IEC 27402 clause 5.2.8):
//! every security-relevant event the user must hear about becomes a
//! [`Notification`], kept for the status endpoint, streamed to live
//! listeners and forwarded to the user's hub.
//!
//! # Main types
//!
//! - [`Notifier`]: the one entry point. [`Notifier::notify`] numbers a
//!   notification, keeps the newest few in a ring ([`Notifier::recent`],
//!   polled by devices without a screen), broadcasts it to live
//!   subscribers ([`Notifier::subscribe`], behind the agent's server-sent
//!   events) and queues it for every attached hub.
//! - [`Hub`]: where notifications are forwarded: an MQTT broker over
//!   mutual TLS ([`MqttHub`], QoS 1) or an HTTPS webhook ([`Webhook`]).
//!   [`Notifier::attach_hub`] starts a forwarding task and returns a
//!   [`HubHandle`] whose [`HubStatus`] tells what was delivered, what is
//!   pending, what was dropped and the last error.
//!
//! # Example
//!
//! ```
//! use notify::{Kind, Notifier, Severity};
//!
//! let notifier = Notifier::new(100);
//! let mut live = notifier.subscribe();
//! let sent = notifier.notify(
//!     Kind::UpdateAvailable,
//!     Severity::Info,
//!     "Firmware 2.4.1 is available",
//!     serde_json::json!({ "version": "2.4.1" }),
//! );
//! assert_eq!(live.try_recv().ok().map(|n| n.seq), Some(sent.seq));
//! assert_eq!(notifier.recent(None, 10).len(), 1);
//! assert!(notifier.recent(Some(sent.seq), 10).is_empty());
//! ```
//!
//! # Design decisions
//!
//! - **`notify` never blocks and never fails.** It is called from the
//!   middle of security code (an integrity check, a reset); a hub that is
//!   down or a listener that is slow must not stall that code or lose the
//!   event. It takes one short lock, and every consumer has a bounded
//!   buffer of its own: the ring for the status endpoint, a broadcast
//!   channel whose slow receivers lag (they are told how many they
//!   missed), and one queue per hub that drops its *oldest* entry when
//!   full and counts it, so the newest news gets through.
//! - **At-least-once, in order, one at a time per hub.** A notification
//!   leaves a hub's queue only after the hub confirmed it (the MQTT PUBACK,
//!   a 2xx answer). Head-of-line delivery keeps the order the user sees;
//!   notifications are rare, so the lost throughput does not matter. After
//!   a failure the same notification is sent again on a fresh connection,
//!   so a hub may see a duplicate; `seq` lets it discard one.
//! - **Retries back off exponentially with jitter** ([`RetryPolicy`],
//!   500 ms to 30 s by default) so a fleet of devices does not hammer a hub
//!   that comes back.
//! - **TLS configuration comes from the caller.** The agent builds the
//!   `rustls::ClientConfig` with the device identity (keys stay in their
//!   keystore, see the `identity` crate); this crate never sees a key.
//! - **Errors are text in the status, not panics.** A forwarding task logs
//!   each failure with `tracing::warn!` and keeps it in
//!   [`HubStatus::last_error`]; messages name hubs by `host:port` only,
//!   because a webhook URL often carries a token.
//! - **One TLS connection per webhook delivery.** Notifications are rare;
//!   a fresh connection avoids stale keep-alive state and every delivery
//!   re-checks the server certificate. The MQTT connection is kept and
//!   pinged while idle.

mod error;
mod hub;
mod mqtt;
mod webhook;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use error::{Error, Result};
pub use hub::{Hub, HubHandle, HubStatus, MqttHub, RetryPolicy, Webhook};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A security event: an attack seen, a policy violation, a lockout.
    SecurityAlert,
    /// A software update can be installed.
    UpdateAvailable,
    /// An installed update takes effect at a restart: announced before
    /// the device restarts itself, or asking for the restart.
    RestartPending,
    /// Software or configuration failed an integrity check.
    IntegrityFailure,
    /// Confirmation that user data was removed.
    RemovalReceipt,
    /// The security configuration changed.
    ConfigurationChanged,
    /// Anything else the user should know.
    Warning,
    /// The device was reset.
    Reset,
}

impl Kind {
    /// Every kind, for configuration checks.
    pub const ALL: [Kind; 8] = [
        Kind::SecurityAlert,
        Kind::UpdateAvailable,
        Kind::RestartPending,
        Kind::IntegrityFailure,
        Kind::RemovalReceipt,
        Kind::ConfigurationChanged,
        Kind::Warning,
        Kind::Reset,
    ];
}

/// How urgent a notification is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    #[default]
    Info,
    /// The user should look at it.
    Warning,
    /// The user must act.
    Critical,
}

/// One notification, as every consumer sees it (and as JSON on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    /// Position in this notifier's sequence: starts at 1 and increases by
    /// one per notification, so a gap tells a consumer it missed some.
    pub seq: u64,
    /// When it was raised, in seconds since the Unix epoch (UTC).
    pub time_unix: i64,
    /// What it is about.
    pub kind: Kind,
    /// How urgent it is.
    pub severity: Severity,
    /// One line for the user.
    pub title: String,
    /// Structured detail (versions, file names, counts); an object or null.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Which notifications a hub receives ("whom to notify"): the user's
/// phone behind a webhook may want only what needs action, an operator's
/// back end everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The kinds it receives; empty: every kind.
    pub kinds: Vec<Kind>,
    /// The least severity it receives.
    pub min_severity: Severity,
}

impl Route {
    /// Whether `n` goes to a hub with this route.
    pub fn accepts(&self, n: &Notification) -> bool {
        n.severity >= self.min_severity && (self.kinds.is_empty() || self.kinds.contains(&n.kind))
    }
}

/// Raises notifications and hands them to every consumer. Cheap to clone:
/// clones share one sequence, ring and set of hubs.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    live: broadcast::Sender<Notification>,
    recent_capacity: usize,
}

struct State {
    next_seq: u64,
    next_hub_id: u64,
    recent: VecDeque<Notification>,
    hubs: Vec<(u64, Arc<hub::Queue>, Route)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("Notifier")
            .field("next_seq", &state.next_seq)
            .field("recent", &state.recent.len())
            .field("recent_capacity", &self.inner.recent_capacity)
            .field("hubs", &state.hubs.len())
            .field("subscribers", &self.inner.live.receiver_count())
            .finish()
    }
}

/// Lower and upper bound of the live channel's buffer per subscriber.
const LIVE_BUFFER: (usize, usize) = (16, 1024);

impl Inner {
    /// The state lock. A panic while holding it cannot leave the state
    /// inconsistent (every update is a push or pop), so a poisoned lock is
    /// used as is rather than making `notify` fail.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Notifier {
    /// A notifier that keeps the newest `recent_capacity` notifications for
    /// [`recent`](Self::recent). Live subscribers get a buffer of the same
    /// size, at least 16 and at most 1024.
    pub fn new(recent_capacity: usize) -> Notifier {
        let (live, _) = broadcast::channel(recent_capacity.clamp(LIVE_BUFFER.0, LIVE_BUFFER.1));
        Notifier {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    next_seq: 1,
                    next_hub_id: 0,
                    recent: VecDeque::with_capacity(recent_capacity.min(4096)),
                    hubs: Vec::new(),
                }),
                live,
                recent_capacity,
            }),
        }
    }

    /// Raises a notification: numbers and timestamps it, keeps it in the
    /// ring, sends it to live subscribers and queues it for every hub.
    /// Never blocks on a consumer and never fails; returns what was sent.
    pub fn notify(
        &self,
        kind: Kind,
        severity: Severity,
        title: impl Into<String>,
        detail: serde_json::Value,
    ) -> Notification {
        let time_unix = time::OffsetDateTime::now_utc().unix_timestamp();
        let title = title.into();
        // Invariant: one lock around numbering and handing out, so every
        // consumer sees notifications in `seq` order.
        let mut state = self.inner.lock();
        let notification = Notification {
            seq: state.next_seq,
            time_unix,
            kind,
            severity,
            title,
            detail,
        };
        state.next_seq += 1;
        if self.inner.recent_capacity > 0 {
            if state.recent.len() >= self.inner.recent_capacity {
                state.recent.pop_front();
            }
            state.recent.push_back(notification.clone());
        }
        for (_, queue, route) in &state.hubs {
            if route.accepts(&notification) {
                queue.push(notification.clone());
            }
        }
        // An error only means nobody is listening right now.
        let _ = self.inner.live.send(notification.clone());
        drop(state);
        tracing::debug!(
            seq = notification.seq,
            kind = ?notification.kind,
            severity = ?notification.severity,
            "notification raised"
        );
        notification
    }

    /// Notifications still in the ring, oldest first.
    ///
    /// With `after_seq = Some(s)`: the first `limit` notifications with a
    /// `seq` greater than `s` (a poller passes the last `seq` it saw and
    /// pages forward without skipping any the ring still holds). With
    /// `None`: the newest `limit`.
    pub fn recent(&self, after_seq: Option<u64>, limit: usize) -> Vec<Notification> {
        let state = self.inner.lock();
        match after_seq {
            Some(after) => state
                .recent
                .iter()
                .filter(|n| n.seq > after)
                .take(limit)
                .cloned()
                .collect(),
            None => {
                let skip = state.recent.len().saturating_sub(limit);
                state.recent.iter().skip(skip).cloned().collect()
            }
        }
    }

    /// A live feed of every notification raised from now on. A receiver
    /// that falls more than its buffer behind gets
    /// [`broadcast::error::RecvError::Lagged`] with the number it missed
    /// and continues with the oldest one still buffered; `notify` never
    /// waits for it.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.inner.live.subscribe()
    }

    /// Starts forwarding every notification raised from now on to `hub`,
    /// with the default [`RetryPolicy`]. See
    /// [`attach_hub_with`](Self::attach_hub_with).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the forwarding task is spawned on the
    /// current one).
    #[must_use = "dropping the HubHandle stops forwarding to the hub"]
    pub fn attach_hub(&self, hub: Hub, queue_capacity: usize) -> HubHandle {
        self.attach_hub_with(hub, queue_capacity, RetryPolicy::default())
    }

    /// Starts forwarding every notification raised from now on to `hub`:
    /// spawns a task on the current Tokio runtime that delivers them one at
    /// a time, in order, retrying failures with `retry`. At most
    /// `queue_capacity` (at least 1) wait; when the queue is full the
    /// oldest is dropped and counted in [`HubStatus::dropped`].
    ///
    /// A hub whose configuration cannot work (see [`Hub::check`]) gets no
    /// delivery attempts: the reason stays in [`HubStatus::last_error`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    #[must_use = "dropping the HubHandle stops forwarding to the hub"]
    pub fn attach_hub_with(
        &self,
        hub: Hub,
        queue_capacity: usize,
        retry: RetryPolicy,
    ) -> HubHandle {
        self.attach_routed_hub(hub, queue_capacity, retry, Route::default())
    }

    /// [`attach_hub_with`](Self::attach_hub_with) for only the
    /// notifications `route` accepts.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    #[must_use = "dropping the HubHandle stops forwarding to the hub"]
    pub fn attach_routed_hub(
        &self,
        hub: Hub,
        queue_capacity: usize,
        retry: RetryPolicy,
        route: Route,
    ) -> HubHandle {
        let queue = Arc::new(hub::Queue::new(queue_capacity));
        let id = {
            let mut state = self.inner.lock();
            let id = state.next_hub_id;
            state.next_hub_id += 1;
            state.hubs.push((id, queue.clone(), route));
            id
        };
        let task = tokio::spawn(hub::forward(hub, queue.clone(), retry));
        HubHandle::new(self.clone(), id, queue, task)
    }

    /// Stops queueing for the hub with this id.
    fn detach(&self, id: u64) {
        self.inner.lock().hubs.retain(|(hub, _, _)| *hub != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_severities_have_the_documented_json_names() {
        let n = Notification {
            seq: 7,
            time_unix: 1_700_000_000,
            kind: Kind::ConfigurationChanged,
            severity: Severity::Critical,
            title: "t".into(),
            detail: serde_json::Value::Null,
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["kind"], "configuration_changed");
        assert_eq!(json["severity"], "critical");
        let back: Notification = serde_json::from_value(json).unwrap();
        assert_eq!(back, n);
        assert_eq!(
            serde_json::to_value(Kind::SecurityAlert).unwrap(),
            "security_alert"
        );
        assert_eq!(serde_json::to_value(Kind::Reset).unwrap(), "reset");
    }

    #[test]
    fn recent_with_a_zero_capacity_ring_is_empty_but_seq_still_counts() {
        let notifier = Notifier::new(0);
        let a = notifier.notify(Kind::Warning, Severity::Info, "a", serde_json::json!({}));
        let b = notifier.notify(Kind::Warning, Severity::Info, "b", serde_json::json!({}));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert!(notifier.recent(None, 10).is_empty());
    }
}
