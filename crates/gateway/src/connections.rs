//! Per-device admission of TCP connections (MQTT and Modbus): how often a
//! device may connect (a device that reconnects in a loop is flapping:
//! each attempt costs a handshake and an upstream connection) and how
//! many connections it may hold open at once.
//!
//! Every attempt counts, admitted or not, so a device that keeps
//! hammering stays refused until it slows down. An admitted connection
//! holds a [`Slot`] and frees it on drop, also when its task is aborted.
//! Time is [`tokio::time::Instant`], as in [`crate::limit`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::ConnectionRule;

/// The window `attempts_per_minute` is counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Devices remembered before idle entries are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Default)]
struct Entry {
    /// Attempts within the window, oldest first; at most the limit + 1.
    attempts: VecDeque<Instant>,
    open: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More attempts in the last minute than the rule allows.
    Flapping {
        /// The rule's limit.
        per_minute: u32,
    },
    /// The device already holds its maximum of open connections.
    TooManyOpen {
        /// The rule's limit.
        max: u32,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flapping { per_minute } => {
                write!(f, "more than {per_minute} connection attempts in a minute")
            }
            Self::TooManyOpen { max } => write!(f, "already {max} connections open"),
        }
    }
}

/// Attempt and open-connection counts of every device.
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    devices: Arc<Mutex<HashMap<String, Entry>>>,
}

/// An admitted connection; dropping it frees the device's slot.
#[derive(Debug)]
pub struct Slot {
    devices: Arc<Mutex<HashMap<String, Entry>>>,
    device: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get_mut(&self.device) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

impl ConnectionLimits {
    /// Counts an attempt by `device` and admits it if `rule` allows.
    pub fn admit(&self, device: &str, rule: ConnectionRule, now: Instant) -> Result<Slot, Refusal> {
        let mut map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= SWEEP_AT {
            map.retain(|_, e| {
                e.open > 0
                    || e.attempts
                        .back()
                        .is_some_and(|&t| now.saturating_duration_since(t) < WINDOW)
            });
        }
        let e = map.entry(device.to_owned()).or_default();
        while e
            .attempts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
        {
            e.attempts.pop_front();
        }
        e.attempts.push_back(now);
        // Only whether the limit is passed matters: keep one more.
        while e.attempts.len() > rule.attempts_per_minute as usize + 1 {
            e.attempts.pop_front();
        }
        if e.attempts.len() > rule.attempts_per_minute as usize {
            return Err(Refusal::Flapping {
                per_minute: rule.attempts_per_minute,
            });
        }
        if e.open >= rule.max_open {
            return Err(Refusal::TooManyOpen { max: rule.max_open });
        }
        e.open += 1;
        Ok(Slot {
            devices: self.devices.clone(),
            device: device.to_owned(),
        })
    }

    /// Connections `device` holds open now.
    pub fn open(&self, device: &str) -> u32 {
        let map = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(device).map_or(0, |e| e.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: ConnectionRule = ConnectionRule {
        attempts_per_minute: 3,
        max_open: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn open_connections_are_capped_and_freed_on_drop() {
        let limits = ConnectionLimits::default();
        let now = Instant::now();
        let a = limits.admit("d", RULE, now).unwrap();
        let _b = limits.admit("d", RULE, now).unwrap();
        assert_eq!(
            limits.admit("d", RULE, now).unwrap_err(),
            Refusal::TooManyOpen { max: 2 }
        );
        // Another device is not affected.
        let _other = limits.admit("e", RULE, now).unwrap();
        drop(a);
        assert_eq!(limits.open("d"), 1);
        tokio::time::advance(WINDOW).await;
        assert!(limits.admit("d", RULE, Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_is_refused_until_the_window_passes() {
        let limits = ConnectionLimits::default();
        let t0 = Instant::now();
        for i in 0..3 {
            drop(
                limits
                    .admit("d", RULE, t0 + Duration::from_secs(i))
                    .unwrap(),
            );
        }
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            limits.admit("d", RULE, at).unwrap_err(),
            Refusal::Flapping { per_minute: 3 }
        );
        assert!(
            limits
                .admit("d", RULE, t0 + Duration::from_secs(30))
                .is_err()
        );
        // Refused attempts count too: at 61 s only one admitted attempt
        // (at 2 s) is in the window, but the refused ones keep it refused.
        let at = t0 + Duration::from_secs(61);
        assert!(limits.admit("d", RULE, at).is_err());
        // A minute of quiet admits it again.
        let at = t0 + Duration::from_secs(125);
        let _slot = limits.admit("d", RULE, at).unwrap();
        assert_eq!(limits.open("d"), 1);
    }
}
