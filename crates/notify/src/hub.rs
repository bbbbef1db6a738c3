//! Hubs, their queues and the forwarding task.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::mqtt::MqttLink;
use crate::webhook::WebhookLink;
use crate::{Error, Notification, Notifier};

/// The largest notification, as JSON, a hub is sent. A bigger one is
/// dropped (and counted) instead of blocking the queue forever.
pub(crate) const MAX_PAYLOAD: usize = 128 * 1024;

/// How long one delivery attempt (connect, handshake, send, confirm) may
/// take before it counts as failed.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest retry delay, whatever the policy says.
const MIN_DELAY: Duration = Duration::from_millis(10);

/// The longest a `shutdown` flush is allowed (keeps the deadline
/// arithmetic from overflowing).
const MAX_FLUSH: Duration = Duration::from_secs(24 * 3600);

/// Where notifications are forwarded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Hub {
    /// An MQTT broker, over mutual TLS.
    Mqtt(MqttHub),
    /// An HTTPS endpoint that takes a POST per notification.
    Webhook(Webhook),
}

/// An MQTT broker (the user's home hub). Each notification is published as
/// JSON to `topic` with QoS 1, not retained.
#[derive(Clone)]
pub struct MqttHub {
    /// Broker host name or IP address; the broker certificate must name it.
    pub host: String,
    /// Broker TLS port (usually 8883).
    pub port: u16,
    /// Topic to publish to; no wildcards.
    pub topic: String,
    /// MQTT client identifier.
    pub client_id: String,
    /// TLS client configuration with the device identity for mutual TLS
    /// and the trust anchors for the broker, built by the caller.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MqttHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttHub")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An HTTPS endpoint. Each notification is POSTed as
/// `application/json`; any 2xx answer confirms it.
#[derive(Clone)]
pub struct Webhook {
    /// `https://host[:port][/path]`. Treated as a secret (it often holds a
    /// token): never logged, never in an error.
    pub url: String,
    /// TLS client configuration: the trust anchors for the server and,
    /// if the server wants one, a client identity.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

impl Hub {
    /// Checks that the configuration can work (an `https` URL with a valid
    /// host, a topic without wildcards), without connecting. For the
    /// agent's configuration loader: a hub that fails this gets no delivery
    /// attempts once attached.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Hub::Mqtt(hub) => MqttLink::new(hub).map(drop),
            Hub::Webhook(hub) => WebhookLink::new(hub).map(drop),
        }
    }
}

/// Backoff between delivery attempts: `initial`, doubling after every
/// failure up to `max`, each delay randomly shortened by up to half
/// (jitter) so devices that lost the same hub do not retry in step.
/// Delays below 10 ms are raised to 10 ms, so a zero policy cannot spin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 500 ms up to 30 s.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failures` consecutive failures (1 for the first),
    /// before jitter.
    fn ceiling(&self, failures: u32) -> Duration {
        let initial = self.initial.max(MIN_DELAY);
        let doublings = failures.saturating_sub(1).min(31);
        initial
            .saturating_mul(1u32 << doublings)
            .min(self.max.max(initial))
    }

    /// The delay after `failures` consecutive failures, with jitter: in
    /// `[ceiling / 2, ceiling]`.
    fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        // Jitter needs no cryptographic randomness: the randomly keyed
        // SipHash of the standard library is enough to spread retries.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(failures);
        let fraction = (hasher.finish() % 1_000_001) as f64 / 1_000_000.0;
        half + half.mul_f64(fraction)
    }
}

/// The state of one hub's forwarding, for the status endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HubStatus {
    /// Notifications the hub confirmed.
    pub delivered: u64,
    /// Notifications waiting, including the one being delivered.
    pub pending: usize,
    /// Notifications dropped: evicted from a full queue (the oldest go
    /// first) or too large to send. One evicted while being sent may still
    /// have arrived.
    pub dropped: u64,
    /// The latest delivery error, cleared by the next success. Names the
    /// hub by `host:port` only.
    pub last_error: Option<String>,
    /// `seq` of the latest notification the hub confirmed.
    pub last_delivered_seq: Option<u64>,
}

/// One hub's queue, shared by the notifier (which pushes) and the
/// forwarding task (which delivers the head and pops it).
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Signalled on every push: wakes the forwarding task.
    wake: Notify,
    /// Signalled on every delivery outcome: wakes a flushing `shutdown`.
    progress: Notify,
}

struct QueueState {
    items: VecDeque<Notification>,
    capacity: usize,
    status: HubStatus,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Queue {
        let capacity = capacity.max(1);
        Queue {
            state: Mutex::new(QueueState {
                items: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                status: HubStatus::default(),
            }),
            wake: Notify::new(),
            progress: Notify::new(),
        }
    }

    /// The lock; every update keeps the state consistent, so a poisoned
    /// lock is used as is.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a notification, evicting the oldest if full. Never blocks
    /// beyond the short lock.
    pub(crate) fn push(&self, notification: Notification) {
        let mut state = self.lock();
        while state.items.len() >= state.capacity {
            state.items.pop_front();
            state.status.dropped += 1;
        }
        state.items.push_back(notification);
        drop(state);
        self.wake.notify_one();
    }

    fn head(&self) -> Option<Notification> {
        self.lock().items.front().cloned()
    }

    /// Removes `seq` from the head if it is still there (it may have been
    /// evicted while in flight).
    fn remove_head(&self, seq: u64) -> MutexGuard<'_, QueueState> {
        let mut state = self.lock();
        if state.items.front().map(|n| n.seq) == Some(seq) {
            state.items.pop_front();
        }
        state
    }

    fn delivered(&self, seq: u64) {
        let mut state = self.remove_head(seq);
        state.status.delivered += 1;
        state.status.last_delivered_seq = Some(seq);
        state.status.last_error = None;
        drop(state);
        self.progress.notify_waiters();
    }

    fn give_up(&self, seq: u64, error: &Error) {
        let mut state = self.remove_head(seq);
        state.status.dropped += 1;
        state.status.last_error = Some(error.to_string());
        drop(state);
        self.progress.notify_waiters();
    }

    fn failed(&self, error: &Error) {
        self.lock().status.last_error = Some(error.to_string());
        self.progress.notify_waiters();
    }

    fn status(&self) -> HubStatus {
        let state = self.lock();
        HubStatus {
            pending: state.items.len(),
            ..state.status.clone()
        }
    }
}

/// The connection to a hub, kept between deliveries where that helps.
enum Link {
    // Boxed: the event loop is large, and there is one `Link` per task.
    Mqtt(Box<MqttLink>),
    Webhook(WebhookLink),
}

impl Link {
    fn new(hub: &Hub) -> Result<Link, Error> {
        Ok(match hub {
            Hub::Mqtt(hub) => Link::Mqtt(Box::new(MqttLink::new(hub)?)),
            Hub::Webhook(hub) => Link::Webhook(WebhookLink::new(hub)?),
        })
    }

    fn name(&self) -> &str {
        match self {
            Link::Mqtt(link) => link.name(),
            Link::Webhook(link) => link.name(),
        }
    }

    /// Delivers one payload; returns once the hub confirmed it.
    async fn deliver(&mut self, payload: &[u8]) -> Result<(), Error> {
        let attempt = async {
            match self {
                Link::Mqtt(link) => link.deliver(payload).await,
                Link::Webhook(link) => link.deliver(payload).await,
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => {
                if let Link::Mqtt(link) = self {
                    link.disconnect();
                }
                Err(Error::Timeout {
                    hub: self.name().to_owned(),
                    seconds: ATTEMPT_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Keeps an idle connection alive (MQTT pings); returns when there is
    /// nothing (more) to do.
    async fn idle(&mut self) {
        match self {
            Link::Mqtt(link) => link.idle().await,
            Link::Webhook(_) => {}
        }
    }
}

/// The forwarding task: delivers the head of the queue until it is
/// confirmed, then the next; backs off after failures. Runs until aborted.
pub(crate) async fn forward(hub: Hub, queue: Arc<Queue>, retry: RetryPolicy) {
    let mut link = match Link::new(&hub) {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%error, "notification hub not usable; nothing will be forwarded to it");
            queue.failed(&error);
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        let next = loop {
            let woken = queue.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(next) = queue.head() {
                break next;
            }
            let idle_ended = tokio::select! {
                () = &mut woken => false,
                () = link.idle() => true,
            };
            if idle_ended {
                woken.await;
            }
        };
        let payload = match serde_json::to_vec(&next) {
            Ok(payload) if payload.len() <= MAX_PAYLOAD => payload,
            Ok(payload) => {
                let error = Error::NotificationTooLarge {
                    seq: next.seq,
                    size: payload.len(),
                    max: MAX_PAYLOAD,
                };
                tracing::warn!(hub = link.name(), %error, "notification dropped");
                queue.give_up(next.seq, &error);
                continue;
            }
            // Cannot happen (a `Notification` is plain data), but if it
            // did, retrying would not help.
            Err(error) => {
                let error = Error::NotificationEncoding {
                    seq: next.seq,
                    reason: error.to_string(),
                };
                tracing::warn!(hub = link.name(), %error, "notification dropped");
                queue.give_up(next.seq, &error);
                continue;
            }
        };
        match link.deliver(&payload).await {
            Ok(()) => {
                tracing::debug!(hub = link.name(), seq = next.seq, "notification delivered");
                failures = 0;
                queue.delivered(next.seq);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = retry.delay(failures);
                tracing::warn!(
                    hub = link.name(),
                    seq = next.seq,
                    %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "notification delivery failed"
                );
                queue.failed(&error);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Controls one attached hub. Dropping it stops forwarding (queued
/// notifications are abandoned); [`shutdown`](Self::shutdown) first tries
/// to flush them.
pub struct HubHandle {
    notifier: Notifier,
    id: u64,
    queue: Arc<Queue>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubHandle")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl HubHandle {
    pub(crate) fn new(
        notifier: Notifier,
        id: u64,
        queue: Arc<Queue>,
        task: JoinHandle<()>,
    ) -> HubHandle {
        HubHandle {
            notifier,
            id,
            queue,
            task,
        }
    }

    /// What has been delivered, what waits, what was dropped.
    pub fn status(&self) -> HubStatus {
        self.queue.status()
    }

    /// Stops taking new notifications, lets the task deliver what is
    /// queued for at most `flush_for`, then stops it. Returns the final
    /// status (`pending` > 0 if the flush did not finish).
    pub async fn shutdown(self, flush_for: Duration) -> HubStatus {
        self.notifier.detach(self.id);
        let deadline = tokio::time::Instant::now() + flush_for.min(MAX_FLUSH);
        loop {
            let progressed = self.queue.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if self.queue.status().pending == 0 || self.task.is_finished() {
                break;
            }
            if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                break;
            }
        }
        self.task.abort();
        self.queue.status()
    }
}

impl Drop for HubHandle {
    fn drop(&mut self) {
        self.notifier.detach(self.id);
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(500));
        assert_eq!(policy.ceiling(2), Duration::from_secs(1));
        assert_eq!(policy.ceiling(7), Duration::from_secs(30));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(30));
        let zero = RetryPolicy {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.ceiling(1), MIN_DELAY, "a zero policy must not spin");
        let huge = RetryPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
        };
        assert!(huge.delay(40) >= Duration::MAX / 2);
        for failures in 1..40 {
            let delay = policy.delay(failures);
            let ceiling = policy.ceiling(failures);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    #[test]
    fn a_full_queue_evicts_the_oldest_and_counts_it() {
        let queue = Queue::new(2);
        for seq in 1..=5 {
            queue.push(Notification {
                seq,
                time_unix: 0,
                kind: crate::Kind::Warning,
                severity: crate::Severity::Info,
                title: String::new(),
                detail: serde_json::Value::Null,
            });
        }
        let status = queue.status();
        assert_eq!((status.pending, status.dropped), (2, 3));
        assert_eq!(queue.head().map(|n| n.seq), Some(4));
    }
}
