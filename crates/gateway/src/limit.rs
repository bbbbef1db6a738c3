//! Per-device rate limits and quarantine.
//!
//! Each device has two token buckets (messages and payload bytes), shared
//! by all its connections. A PUBLISH always takes its tokens; when that
//! leaves a bucket in debt, the connection pauses reading until the debt
//! is paid (back-pressure) and the device gets a *strike*. Refused packets
//! are strikes too. [`Quarantine`] (in [`crate::quarantine`]) counts
//! strikes in a sliding window; at the policy's threshold the device is
//! refused for the policy's period.
//!
//! Time is [`tokio::time::Instant`], so tests drive it with
//! `tokio::time::pause`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::Rate;
// Quarantine lives in its own module (it has a state file); re-exported
// here where the proxies have always found it.
pub use crate::quarantine::{Quarantine, Quarantined};

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

#[cfg(test)]
mod tests {
    use super::*;

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
