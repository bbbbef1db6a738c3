//! Per-device rate limits and quarantine.
//!
//! Each device has two token buckets (messages and payload bytes), shared
//! by all its connections. A PUBLISH always takes its tokens; when that
//! leaves a bucket in debt, the connection pauses reading until the debt
//! is paid (back-pressure) and the device gets a *strike*. Refused packets
//! are strikes too. [`Quarantine`] counts strikes in a sliding window; at
//! the policy's threshold the device is refused for the policy's period.
//!
//! Time is [`tokio::time::Instant`], so tests drive it with
//! `tokio::time::pause`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{QuarantineRule, Rate};

/// A token bucket whose capacity is one second of its rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `per_second`.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` tokens and returns how long the caller must wait before
    /// going on: zero within the rate, otherwise the time to pay the debt.
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens / self.rate).min(3600.0))
        }
    }
}

/// The message and byte buckets of one device.
#[derive(Debug)]
pub struct DeviceLimiter {
    rate: Rate,
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl DeviceLimiter {
    fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            messages: TokenBucket::new(rate.messages_per_second, now),
            bytes: TokenBucket::new(rate.bytes_per_second, now),
        }
    }

    /// Accounts one PUBLISH of `payload` bytes; returns the pause owed.
    pub fn publish(&mut self, payload: usize, now: Instant) -> Duration {
        let m = self.messages.take(1.0, now);
        let b = self.bytes.take(payload as f64, now);
        m.max(b)
    }
}

/// The limiters of every connected device.
#[derive(Debug, Default)]
pub struct RateLimits {
    devices: Mutex<HashMap<String, Arc<Mutex<DeviceLimiter>>>>,
}

impl RateLimits {
    /// The limiter for `device`, shared by its connections; a changed rate
    /// (policy reload) starts fresh buckets.
    pub fn limiter(&self, device: &str, rate: Rate) -> Arc<Mutex<DeviceLimiter>> {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Drop limiters no connection holds any more, so the map stays
        // as large as the set of connected devices.
        if map.len() > 1024 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        let entry = map
            .entry(device.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(DeviceLimiter::new(rate, now))));
        {
            let mut l = entry.lock().unwrap_or_else(PoisonError::into_inner);
            if l.rate != rate {
                *l = DeviceLimiter::new(rate, now);
            }
        }
        entry.clone()
    }
}

#[derive(Debug, Default)]
struct Record {
    strikes: VecDeque<Instant>,
    until: Option<Instant>,
}

/// A device under quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Policy name of the device.
    pub device: String,
    /// Time left.
    pub remaining: Duration,
}

/// Strike counting and quarantine state, queryable and releasable.
#[derive(Debug, Default)]
pub struct Quarantine {
    records: Mutex<HashMap<String, Record>>,
}

impl Quarantine {
    /// Records a strike for `device`; returns true if this put it in
    /// quarantine.
    pub fn strike(&self, device: &str, rule: &QuarantineRule, now: Instant) -> bool {
        let mut map = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 4096 {
            map.retain(|_, r| {
                r.until.is_some_and(|u| u > now)
                    || r.strikes
                        .back()
                        .is_some_and(|&t| now.saturating_duration_since(t) < rule.window)
            });
        }
        let r = map.entry(device.to_owned()).or_default();
        if r.until.is_some_and(|u| u > now) {
            return false;
        }
        while r
            .strikes
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= rule.window)
        {
            r.strikes.pop_front();
        }
        r.strikes.push_back(now);
        if r.strikes.len() >= rule.strikes as usize {
            r.strikes.clear();
            r.until = Some(now + rule.duration);
            true
        } else {
            false
        }
    }

    /// Time left if `device` is quarantined at `now`.
    pub fn remaining(&self, device: &str, now: Instant) -> Option<Duration> {
        let map = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(device)
            .and_then(|r| r.until)
            .filter(|&u| u > now)
            .map(|u| u - now)
    }

    /// Quarantines `device` by hand for `duration`.
    pub fn quarantine(&self, device: &str, duration: Duration, now: Instant) {
        let mut map = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(device.to_owned()).or_default().until = Some(now + duration);
    }

    /// Releases `device`; returns whether it was quarantined.
    pub fn release(&self, device: &str, now: Instant) -> bool {
        let mut map = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(device)
            .and_then(|r| r.until)
            .is_some_and(|u| u > now)
    }

    /// Every device quarantined at `now`.
    pub fn list(&self, now: Instant) -> Vec<Quarantined> {
        let map = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(d, r)| {
                r.until.filter(|&u| u > now).map(|u| Quarantined {
                    device: d.clone(),
                    remaining: u - now,
                })
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: QuarantineRule = QuarantineRule {
        strikes: 3,
        window: Duration::from_secs(10),
        duration: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_second_of_burst_then_paces() {
        let now = Instant::now();
        let mut b = TokenBucket::new(10, now);
        for _ in 0..10 {
            assert_eq!(b.take(1.0, now), Duration::ZERO);
        }
        assert_eq!(b.take(1.0, now), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(b.take(1.0, Instant::now()), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn strikes_in_the_window_quarantine_and_it_lifts() {
        let q = Quarantine::default();
        let t0 = Instant::now();
        assert!(!q.strike("d", &RULE, t0));
        assert!(!q.strike("d", &RULE, t0 + Duration::from_secs(5)));
        // The first strike has left the window: still two.
        assert!(!q.strike("d", &RULE, t0 + Duration::from_secs(11)));
        assert!(q.strike("d", &RULE, t0 + Duration::from_secs(12)));
        let at = t0 + Duration::from_secs(13);
        assert_eq!(q.remaining("d", at), Some(Duration::from_secs(59)));
        assert_eq!(q.list(at).len(), 1);
        assert_eq!(q.remaining("other", at), None);
        tokio::time::advance(Duration::from_secs(73)).await;
        assert_eq!(q.remaining("d", Instant::now()), None);
        assert!(q.list(Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn manual_quarantine_and_release() {
        let q = Quarantine::default();
        let now = Instant::now();
        q.quarantine("d", Duration::from_secs(5), now);
        assert!(q.remaining("d", now).is_some());
        assert!(q.release("d", now));
        assert!(!q.release("d", now));
        assert_eq!(q.remaining("d", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_is_shared_and_reset_on_rate_change() {
        let limits = RateLimits::default();
        let rate = Rate {
            messages_per_second: 2,
            bytes_per_second: 100,
        };
        let a = limits.limiter("d", rate);
        let b = limits.limiter("d", rate);
        let now = Instant::now();
        assert_eq!(a.lock().unwrap().publish(10, now), Duration::ZERO);
        assert_eq!(b.lock().unwrap().publish(10, now), Duration::ZERO);
        assert!(a.lock().unwrap().publish(10, now) > Duration::ZERO);
        assert!(b.lock().unwrap().publish(200, now) >= Duration::from_secs(1));
        let c = limits.limiter(
            "d",
            Rate {
                messages_per_second: 5,
                bytes_per_second: 100,
            },
        );
        assert_eq!(c.lock().unwrap().publish(10, now), Duration::ZERO);
    }
}
