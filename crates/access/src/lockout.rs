//! Brute-force defence: failed logins slow down, then lock, both the
//! account that was tried and the network source that tried it.
//!
//! Clause 5.2.2 asks that authentication resist brute force. Two counters
//! see two attacks: the account counter (across all sources) stops many
//! guesses at one account from a botnet; the source counter (across all
//! accounts) stops one source spraying a common password over many
//! accounts. After [`LockoutPolicy::slow_after`] consecutive failures the
//! next attempt must wait an exponentially growing delay; after
//! [`LockoutPolicy::lock_after`] the key is locked for
//! [`LockoutPolicy::lock_for`], during which even the right password is
//! refused, because [`Lockout::check`] runs before the password is looked
//! at.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, Instant};
//! use access::lockout::{Lockout, LockoutPolicy, Refusal};
//! let lockout = Lockout::new(LockoutPolicy::default());
//! let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
//! let t0 = Instant::now();
//! for _ in 0..3 {
//!     lockout.check("alice", ip, t0).unwrap();
//!     lockout.record_failure("alice", ip, t0);
//! }
//! assert_eq!(
//!     lockout.check("alice", ip, t0),
//!     Err(Refusal::Throttled { retry_after: Duration::from_secs(1) })
//! );
//! assert!(lockout.check("alice", ip, t0 + Duration::from_secs(1)).is_ok());
//! ```
//!
//! Design decisions:
//! - Memory is bounded: at most [`MAX_TRACKED`] accounts and as many
//!   sources; when full, faded entries go first, then the unlocked entries
//!   with the oldest failures (a sixteenth of the table at once, so a
//!   flood costs one scan per batch), and only if every entry is locked
//!   the oldest locked one. A flood of fresh addresses therefore cannot
//!   unlock a locked account or exhaust memory.
//! - IPv6 sources count per /64 (one host's usual allocation), and
//!   IPv4-mapped IPv6 addresses as IPv4, so rotating through one's own
//!   addresses does not reset the source counter.
//! - Counters fade: a key with no failure for `lock_for` starts afresh.
//! - Time is an [`Instant`] passed in, never read here, so tests use
//!   synthetic instants.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Most accounts, and most sources, tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// How many unlocked entries one eviction drops when a table is full.
const EVICT_BATCH: usize = MAX_TRACKED / 16;

/// Longest account key kept (longer names are truncated): bounds memory
/// when an attacker tries megabyte-long account names.
const MAX_ACCOUNT_KEY: usize = 64;

/// When to slow down and when to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Consecutive failures before attempts are delayed. Default 3.
    pub slow_after: u32,
    /// Consecutive failures before the key is locked. Default 10.
    pub lock_after: u32,
    /// First delay; doubles with each further failure. Default 1 s.
    pub base_delay: Duration,
    /// Longest delay. Default 30 s.
    pub max_delay: Duration,
    /// How long a lock lasts. Default 15 min.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            slow_after: 3,
            lock_after: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            lock_for: Duration::from_secs(15 * 60),
        }
    }
}

impl LockoutPolicy {
    /// The wait after `failures` consecutive failures (zero below
    /// `slow_after`): `base_delay * 2^(failures - slow_after)`, capped.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures < self.slow_after || failures == 0 {
            return Duration::ZERO;
        }
        let doublings = failures - self.slow_after;
        let factor = 2u32.checked_pow(doublings).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why an attempt is refused before its password is checked.
///
/// Deliberately not `#[non_exhaustive]`: the two answers are the whole
/// model (slow down, or locked), and callers map each to a response
/// (HTTP 429 with `Retry-After`), so a new kind should break their match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Too many recent failures: wait before the next attempt.
    #[error("too many failed attempts; retry in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until an attempt is accepted.
        retry_after: Duration,
    },
    /// Locked after `lock_after` failures.
    #[error("locked after too many failed attempts; retry in {} s", retry_after.as_secs().max(1))]
    Locked {
        /// How long until the lock lifts.
        retry_after: Duration,
    },
}

impl Refusal {
    /// How long until an attempt is accepted.
    pub fn retry_after(&self) -> Duration {
        match self {
            Self::Throttled { retry_after } | Self::Locked { retry_after } => *retry_after,
        }
    }

    /// Locks win over throttles; the longer wait wins within a kind.
    fn worse(self, other: Self) -> Self {
        match (self, other) {
            (Self::Locked { .. }, Self::Throttled { .. }) => self,
            (Self::Throttled { .. }, Self::Locked { .. }) => other,
            _ if other.retry_after() > self.retry_after() => other,
            _ => self,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    failures: u32,
    last_failure: Instant,
    locked_at: Option<Instant>,
}

/// What a counter says at `now`.
enum Verdict {
    /// No longer relevant (lock lifted, or failures faded): drop it.
    Expired,
    Allowed,
    Refused(Refusal),
}

impl Counter {
    fn verdict(&self, policy: &LockoutPolicy, now: Instant) -> Verdict {
        if let Some(at) = self.locked_at {
            let elapsed = now.saturating_duration_since(at);
            return match policy.lock_for.checked_sub(elapsed) {
                Some(left) if !left.is_zero() => {
                    Verdict::Refused(Refusal::Locked { retry_after: left })
                }
                _ => Verdict::Expired,
            };
        }
        let since = now.saturating_duration_since(self.last_failure);
        if since >= policy.lock_for {
            return Verdict::Expired;
        }
        match policy.delay_after(self.failures).checked_sub(since) {
            Some(left) if !left.is_zero() => {
                Verdict::Refused(Refusal::Throttled { retry_after: left })
            }
            _ => Verdict::Allowed,
        }
    }

    fn is_locked(&self, policy: &LockoutPolicy, now: Instant) -> bool {
        matches!(
            self.verdict(policy, now),
            Verdict::Refused(Refusal::Locked { .. })
        )
    }
}

/// One table of counters (accounts or sources).
#[derive(Debug)]
struct Table<K> {
    counters: HashMap<K, Counter>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new() -> Self {
        Self {
            counters: HashMap::new(),
        }
    }

    fn check(&mut self, key: &K, policy: &LockoutPolicy, now: Instant) -> Option<Refusal> {
        match self.counters.get(key)?.verdict(policy, now) {
            Verdict::Expired => {
                self.counters.remove(key);
                None
            }
            Verdict::Allowed => None,
            Verdict::Refused(refusal) => Some(refusal),
        }
    }

    fn fail(&mut self, key: K, policy: &LockoutPolicy, now: Instant) {
        if let Some(c) = self.counters.get(&key)
            && matches!(c.verdict(policy, now), Verdict::Expired)
        {
            self.counters.remove(&key);
        }
        if !self.counters.contains_key(&key) && self.counters.len() >= MAX_TRACKED {
            self.evict(policy, now);
        }
        let counter = self.counters.entry(key).or_insert(Counter {
            failures: 0,
            last_failure: now,
            locked_at: None,
        });
        counter.failures = counter.failures.saturating_add(1);
        counter.last_failure = now;
        if counter.failures >= policy.lock_after && counter.locked_at.is_none() {
            counter.locked_at = Some(now);
        }
    }

    /// Makes room: drops faded entries, else the oldest unlocked ones (a
    /// batch of [`EVICT_BATCH`], so a flood of new keys costs one scan per
    /// batch rather than per key), else the single oldest locked one.
    fn evict(&mut self, policy: &LockoutPolicy, now: Instant) {
        self.counters
            .retain(|_, c| !matches!(c.verdict(policy, now), Verdict::Expired));
        if self.counters.len() < MAX_TRACKED {
            return;
        }
        let mut unlocked: Vec<(Instant, K)> = self
            .counters
            .iter()
            .filter(|(_, c)| !c.is_locked(policy, now))
            .map(|(k, c)| (c.last_failure, k.clone()))
            .collect();
        if unlocked.is_empty() {
            let oldest = self
                .counters
                .iter()
                .min_by_key(|(_, c)| c.last_failure)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                self.counters.remove(&key);
            }
            return;
        }
        let n = EVICT_BATCH.min(unlocked.len());
        if n < unlocked.len() {
            unlocked.select_nth_unstable_by_key(n, |(t, _)| *t);
        }
        for (_, key) in unlocked.iter().take(n) {
            self.counters.remove(key);
        }
    }
}

struct Inner {
    accounts: Table<String>,
    sources: Table<IpAddr>,
}

/// Failure counters per account and per source. All methods take `&self`
/// (a mutex inside), so one `Lockout` is shared by every request.
pub struct Lockout {
    policy: LockoutPolicy,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Lockout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Lockout")
            .field("policy", &self.policy)
            .field("accounts", &inner.accounts.counters.len())
            .field("sources", &inner.sources.counters.len())
            .finish()
    }
}

impl Lockout {
    /// Empty counters under `policy`.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(Inner {
                accounts: Table::new(),
                sources: Table::new(),
            }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Whether an attempt on `account` from `source` may proceed now.
    /// Call it before looking at the password.
    pub fn check(&self, account: &str, source: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let by_account = inner
            .accounts
            .check(&account_key(account), &self.policy, now);
        let by_source = inner.sources.check(&source_key(source), &self.policy, now);
        match (by_account, by_source) {
            (None, None) => Ok(()),
            (Some(r), None) | (None, Some(r)) => Err(r),
            (Some(a), Some(b)) => Err(a.worse(b)),
        }
    }

    /// Counts a failed attempt against both the account and the source.
    pub fn record_failure(&self, account: &str, source: IpAddr, now: Instant) {
        let mut inner = self.lock();
        inner.accounts.fail(account_key(account), &self.policy, now);
        inner.sources.fail(source_key(source), &self.policy, now);
    }

    /// Clears the account's counter after a success. The source's counter
    /// is left to fade after `lock_for`: an attacker who holds one valid
    /// account must not be able to reset it between rounds of password
    /// spraying across the others.
    pub fn record_success(&self, account: &str, _source: IpAddr) {
        let mut inner = self.lock();
        inner.accounts.counters.remove(&account_key(account));
    }

    /// How many accounts and sources are tracked (for metrics and tests).
    pub fn tracked(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.accounts.counters.len(), inner.sources.counters.len())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters stay consistent even if a holder panicked: every update
        // is a single field write.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn account_key(account: &str) -> String {
    let mut end = account.len().min(MAX_ACCOUNT_KEY);
    while !account.is_char_boundary(end) {
        end -= 1;
    }
    account.get(..end).unwrap_or_default().to_owned()
}

fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn lockout_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lockout>();
    }

    #[test]
    fn throttling_delays_grow_and_cap() {
        let policy = LockoutPolicy::default();
        let lockout = Lockout::new(policy);
        let mut now = Instant::now();
        // A different source each time: this is the account counter.
        let mut seen = Vec::new();
        for n in 1..=9u32 {
            lockout.check("alice", ip(n), now).unwrap();
            lockout.record_failure("alice", ip(n), now);
            let expected = policy.delay_after(n);
            match lockout.check("alice", ip(100), now) {
                Ok(()) => assert!(n < 3, "failure {n} not throttled"),
                Err(Refusal::Throttled { retry_after }) => {
                    assert_eq!(retry_after, expected, "after {n} failures");
                    seen.push(retry_after.as_secs());
                }
                Err(other) => panic!("after {n} failures: {other:?}"),
            }
            // Half-way through the wait it is still refused, with the rest.
            if !expected.is_zero() {
                let half = now + expected / 2;
                assert_eq!(
                    lockout
                        .check("alice", ip(100), half)
                        .map_err(|r| r.retry_after()),
                    Err(expected - expected / 2)
                );
            }
            now += expected;
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 30, 30]);
        // The tenth failure locks.
        lockout.record_failure("alice", ip(10), now);
        assert_eq!(
            lockout.check("alice", ip(100), now),
            Err(Refusal::Locked {
                retry_after: 15 * MIN
            })
        );
    }

    #[test]
    fn lock_holds_for_lock_for_then_lifts_by_itself() {
        let lockout = Lockout::new(LockoutPolicy {
            slow_after: 100,
            ..LockoutPolicy::default()
        });
        let t0 = Instant::now();
        for n in 0..10 {
            lockout.record_failure("bob", ip(n), t0);
        }
        let locked = |t| matches!(lockout.check("bob", ip(99), t), Err(Refusal::Locked { .. }));
        assert!(locked(t0));
        assert!(locked(t0 + 15 * MIN - secs(1)));
        assert!(lockout.check("bob", ip(99), t0 + 15 * MIN).is_ok());
        // The counter started afresh: one failure neither throttles nor locks.
        lockout.record_failure("bob", ip(99), t0 + 15 * MIN);
        assert!(lockout.check("bob", ip(99), t0 + 15 * MIN).is_ok());
    }

    #[test]
    fn spraying_one_source_over_many_accounts_locks_the_source() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let attacker = ip(1);
        let t0 = Instant::now();
        for n in 0..10 {
            let account = format!("user{n}");
            lockout.record_failure(&account, attacker, t0 + secs(40) * n);
        }
        let later = t0 + secs(400);
        assert!(matches!(
            lockout.check("someone-else", attacker, later),
            Err(Refusal::Locked { .. })
        ));
        // The accounts themselves saw one failure each: others may log in.
        assert!(lockout.check("user0", ip(2), later).is_ok());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let t0 = Instant::now();
        for n in 0..10u128 {
            let addr = Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000 + n);
            lockout.record_failure(&format!("u{n}"), IpAddr::V6(addr), t0);
        }
        let sibling = Ipv6Addr::from(0x2001_0db8_0000_0001_ffff_0000_0000_0001u128);
        assert!(lockout.check("x", IpAddr::V6(sibling), t0).is_err());
        let other = Ipv6Addr::from(0x2001_0db8_0000_0002_0000_0000_0000_0001u128);
        assert!(lockout.check("x", IpAddr::V6(other), t0).is_ok());
        let mapped = Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped();
        lockout.record_failure("y", IpAddr::V6(mapped), t0);
        assert_eq!(lockout.tracked().1, 2);
    }

    #[test]
    fn success_clears_the_account_but_not_a_spraying_source() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let t0 = Instant::now();
        // Spraying: one failure on each of many accounts from one source.
        for n in 0..5 {
            lockout.record_failure(&format!("victim{n}"), ip(1), t0);
        }
        lockout.record_failure("carol", ip(2), t0);
        // The attacker logs in to an account they hold.
        lockout.record_success("mallory", ip(1));
        lockout.record_success("carol", ip(2));
        assert!(
            lockout.check("victim9", ip(1), t0).is_err(),
            "a success must not reset the spraying source"
        );
        assert!(lockout.check("carol", ip(3), t0).is_ok());
        assert_eq!(lockout.tracked().0, 5, "only the victims' counters remain");
    }

    #[test]
    fn failures_fade_after_lock_for() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let t0 = Instant::now();
        for n in 0..3 {
            lockout.record_failure("dave", ip(n), t0);
        }
        assert!(lockout.check("dave", ip(9), t0).is_err());
        let later = t0 + 15 * MIN;
        lockout.record_failure("dave", ip(9), later);
        // One failure since the old ones faded: not throttled.
        assert!(lockout.check("dave", ip(10), later).is_ok());
    }

    #[test]
    fn memory_stays_bounded_and_locks_survive_a_flood() {
        let lockout = Lockout::new(LockoutPolicy::default());
        let t0 = Instant::now();
        let victim = ip(0);
        for _ in 0..10 {
            lockout.record_failure("victim", victim, t0);
        }
        for n in 1..=20_000u32 {
            let t = t0 + Duration::from_millis(u64::from(n));
            lockout.record_failure(&format!("acct{n}"), ip(n), t);
        }
        let (accounts, sources) = lockout.tracked();
        for tracked in [accounts, sources] {
            assert!(tracked <= MAX_TRACKED, "{tracked}");
            assert!(tracked > MAX_TRACKED - EVICT_BATCH, "{tracked}");
        }
        let t = t0 + secs(30);
        assert!(matches!(
            lockout.check("victim", ip(50_000), t),
            Err(Refusal::Locked { .. })
        ));
        assert!(matches!(
            lockout.check("nobody", victim, t),
            Err(Refusal::Locked { .. })
        ));
        // The oldest unlocked entries went first; the newest are kept.
        let newest = ip(20_000);
        lockout.record_failure("acct20000", newest, t);
        lockout.record_failure("acct20000", newest, t);
        assert!(lockout.check("acct20000", ip(60_000), t).is_err());
    }

    #[test]
    fn when_every_entry_is_locked_the_oldest_goes() {
        let mut table = Table::new();
        let policy = LockoutPolicy::default();
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED as u32 {
            for _ in 0..10 {
                table.fail(n, &policy, t0 + Duration::from_millis(u64::from(n)));
            }
        }
        table.fail(u32::MAX, &policy, t0 + secs(60));
        assert_eq!(table.counters.len(), MAX_TRACKED);
        assert!(!table.counters.contains_key(&0));
        assert!(table.counters.contains_key(&1));
    }

    #[test]
    fn long_account_names_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let key = account_key(&long);
        assert!(key.len() <= MAX_ACCOUNT_KEY);
        assert!(long.starts_with(&key));
    }
}
