//! Time sources: the system clock, replaceable in tests.

use std::fmt::Debug;
use std::time::SystemTime;

/// Where "now" comes from. [`SystemClock`] in production; tests pass a
/// clock set back or forward to exercise clock step-back and expiry
/// checks without touching the machine's clock.
pub trait Clock: Debug + Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Converts to the timestamp type tough's metadata uses. Times before 1970
/// or past jiff's range (year 9999) are clamped: they only arise from a
/// broken clock, which the step-back check then reports.
pub(crate) fn to_jiff(t: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(t).unwrap_or(match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(_) => jiff::Timestamp::MAX,
        Err(_) => jiff::Timestamp::UNIX_EPOCH,
    })
}

/// `t + d`, saturating at jiff's maximum.
pub(crate) fn add(t: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// `t - d`, saturating at jiff's minimum.
pub(crate) fn sub(t: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(jiff::Timestamp::MIN)
}
