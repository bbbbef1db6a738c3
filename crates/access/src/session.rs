//! Sessions: after a password login, a random token stands in for the
//! password, bound to the TLS connection it was issued on.
//!
//! Tokens are 32 bytes from the operating system's random source, encoded
//! base64url without padding. Only the SHA-256 of each token is stored,
//! so a memory dump of the session table yields nothing to present, and
//! lookup is by hash (no byte-by-byte comparison of secrets whose timing
//! could leak). Each session is bound to a [`ChannelBinding`], the TLS
//! exporter value of the connection that logged in (RFC 9266 style): a
//! token stolen from that connection is refused on any other, and the
//! attempt revokes it. A session ends after [`SessionPolicy::idle`]
//! without use or [`SessionPolicy::absolute`] after issue, whichever comes
//! first; at most [`SessionPolicy::max_sessions`] live at once (the oldest
//! is evicted).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use access::session::{ChannelBinding, SessionError, SessionPolicy, Sessions};
//! # use access::authn::{ServiceDirectory, ServiceGrant};
//! # let dir = ServiceDirectory::new(vec![ServiceGrant { identity: "alice".into(), grants: vec![] }]);
//! # let principal = dir.principal_for("alice").unwrap();
//! let sessions = Sessions::new(SessionPolicy::default());
//! let tls = ChannelBinding([7; 32]);
//! let now = Instant::now();
//! let token = sessions.issue(&principal, tls, now);
//! assert_eq!(sessions.validate(token.as_str(), &tls, now).unwrap().id(), "alice");
//! let other_connection = ChannelBinding([8; 32]);
//! assert_eq!(
//!     sessions.validate(token.as_str(), &other_connection, now),
//!     Err(SessionError::WrongChannel)
//! );
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Principal;

/// Length of a token in characters (32 bytes, base64url without padding).
const TOKEN_CHARS: usize = 43;

/// A session token as handed to the client. Zeroized on drop; `Debug`
/// prints no token.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// The token, to send to the client (once).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

/// The TLS exporter value (RFC 9266, label `EXPORTER-Channel-Binding`,
/// 32 bytes) of the connection a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding(pub [u8; 32]);

/// How long sessions live and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPolicy {
    /// Ends a session unused for this long. Default 15 min.
    pub idle: Duration,
    /// Ends a session this long after issue, used or not. Default 8 h.
    pub absolute: Duration,
    /// Most live sessions; issuing one more evicts the oldest. Default 1024.
    pub max_sessions: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(15 * 60),
            absolute: Duration::from_secs(8 * 60 * 60),
            max_sessions: 1024,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No live session has this token (never issued, revoked or evicted).
    #[error("unknown session")]
    Unknown,
    /// The session ran past its idle or absolute lifetime (now removed).
    #[error("session expired")]
    Expired,
    /// The token came over a different TLS connection than the one it was
    /// issued on; the session has been revoked.
    #[error("session presented over another connection")]
    WrongChannel,
}

struct Session {
    principal: Principal,
    binding: ChannelBinding,
    issued: Instant,
    last_used: Instant,
}

impl Session {
    fn expired(&self, policy: &SessionPolicy, now: Instant) -> bool {
        now.saturating_duration_since(self.issued) >= policy.absolute
            || now.saturating_duration_since(self.last_used) >= policy.idle
    }
}

type TokenHash = [u8; 32];

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The live sessions. All methods take `&self` (a mutex inside).
pub struct Sessions {
    policy: SessionPolicy,
    inner: Mutex<HashMap<TokenHash, Session>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("policy", &self.policy)
            .field("live", &self.len())
            .finish()
    }
}

impl Sessions {
    /// No sessions yet.
    pub fn new(policy: SessionPolicy) -> Self {
        Self {
            policy,
            inner: Mutex::new(HashMap::new()),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// Starts a session for `principal` on the connection `binding`.
    /// Expired sessions are dropped first; if the table is still full, the
    /// oldest session is evicted.
    ///
    /// # Panics
    ///
    /// If the operating system's random source fails, which it does not
    /// once the kernel's pool is seeded; issuing a guessable token instead
    /// would be worse.
    pub fn issue(
        &self,
        principal: &Principal,
        binding: ChannelBinding,
        now: Instant,
    ) -> SessionToken {
        let mut raw = Zeroizing::new([0u8; 32]);
        #[allow(clippy::expect_used)] // Documented above: no safe fallback.
        getrandom::fill(&mut *raw).expect("the OS random source failed");
        let token = SessionToken(Zeroizing::new(data_encoding::BASE64URL_NOPAD.encode(&*raw)));
        let mut table = self.lock();
        table.retain(|_, s| !s.expired(&self.policy, now));
        while table.len() >= self.policy.max_sessions.max(1) {
            let oldest = table.iter().min_by_key(|(_, s)| s.issued).map(|(h, _)| *h);
            match oldest {
                Some(h) => table.remove(&h),
                None => break,
            };
        }
        table.insert(
            hash(token.as_str()),
            Session {
                principal: principal.clone(),
                binding,
                issued: now,
                last_used: now,
            },
        );
        token
    }

    /// The principal of a live session, if `token` was issued on the
    /// connection `binding`; refreshes the idle timer.
    pub fn validate(
        &self,
        token: &str,
        binding: &ChannelBinding,
        now: Instant,
    ) -> Result<Principal, SessionError> {
        if token.len() != TOKEN_CHARS {
            return Err(SessionError::Unknown);
        }
        let key = hash(token);
        let mut table = self.lock();
        let session = table.get_mut(&key).ok_or(SessionError::Unknown)?;
        if session.expired(&self.policy, now) {
            table.remove(&key);
            return Err(SessionError::Expired);
        }
        if !same_binding(&session.binding, binding) {
            // Presented elsewhere: treat the token as stolen.
            table.remove(&key);
            return Err(SessionError::WrongChannel);
        }
        session.last_used = session.last_used.max(now);
        Ok(session.principal.clone())
    }

    /// Ends the session of `token` (logout). Whether there was one.
    pub fn revoke(&self, token: &str) -> bool {
        self.lock().remove(&hash(token)).is_some()
    }

    /// Ends every session of the principal `id` (after a password change,
    /// role change or account deletion). How many there were.
    pub fn revoke_principal(&self, id: &str) -> usize {
        let mut table = self.lock();
        let before = table.len();
        table.retain(|_, s| s.principal.id() != id);
        before - table.len()
    }

    /// Ends every session (factory reset, key rotation).
    pub fn revoke_all(&self) {
        self.lock().clear();
    }

    /// How many sessions are stored (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TokenHash, Session>> {
        // Each update is a single map operation, so a panicked holder
        // leaves the table consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Constant-time comparison: the binding is not a secret to the client,
/// but there is no reason to leak how much of it matched.
fn same_binding(a: &ChannelBinding, b: &ChannelBinding) -> bool {
    a.0.iter()
        .zip(b.0.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    const TLS: ChannelBinding = ChannelBinding([1; 32]);
    const MIN: Duration = Duration::from_secs(60);

    fn alice() -> Principal {
        Principal::for_tests("alice", Role::Owner)
    }

    #[test]
    fn sessions_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Sessions>();
    }

    #[test]
    fn tokens_are_random_base64url_and_redacted() {
        let sessions = Sessions::new(SessionPolicy::default());
        let now = Instant::now();
        let a = sessions.issue(&alice(), TLS, now);
        let b = sessions.issue(&alice(), TLS, now);
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), TOKEN_CHARS);
        let decoded = data_encoding::BASE64URL_NOPAD
            .decode(a.as_str().as_bytes())
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_eq!(format!("{a:?}"), "SessionToken(..)");
        assert!(!format!("{sessions:?}").contains(a.as_str()));
    }

    #[test]
    fn idle_expiry_and_refresh() {
        let sessions = Sessions::new(SessionPolicy::default());
        let t0 = Instant::now();
        let token = sessions.issue(&alice(), TLS, t0);
        // Used every 14 minutes it stays alive past the idle limit.
        let mut t = t0;
        for _ in 0..4 {
            t += 14 * MIN;
            sessions.validate(token.as_str(), &TLS, t).unwrap();
        }
        assert_eq!(
            sessions.validate(token.as_str(), &TLS, t + 15 * MIN),
            Err(SessionError::Expired)
        );
        // Expired sessions are removed, not just refused.
        assert_eq!(
            sessions.validate(token.as_str(), &TLS, t),
            Err(SessionError::Unknown)
        );
    }

    #[test]
    fn absolute_expiry_despite_activity() {
        let sessions = Sessions::new(SessionPolicy::default());
        let t0 = Instant::now();
        let token = sessions.issue(&alice(), TLS, t0);
        let mut t = t0;
        while t + 10 * MIN < t0 + 8 * 60 * MIN {
            t += 10 * MIN;
            sessions.validate(token.as_str(), &TLS, t).unwrap();
        }
        assert_eq!(
            sessions.validate(token.as_str(), &TLS, t0 + 8 * 60 * MIN),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn wrong_channel_is_refused_and_revokes() {
        let sessions = Sessions::new(SessionPolicy::default());
        let now = Instant::now();
        let token = sessions.issue(&alice(), TLS, now);
        let mut other = TLS;
        other.0[31] ^= 1;
        assert_eq!(
            sessions.validate(token.as_str(), &other, now),
            Err(SessionError::WrongChannel)
        );
        assert_eq!(
            sessions.validate(token.as_str(), &TLS, now),
            Err(SessionError::Unknown)
        );
    }

    #[test]
    fn unknown_and_malformed_tokens() {
        let sessions = Sessions::new(SessionPolicy::default());
        let now = Instant::now();
        let token = sessions.issue(&alice(), TLS, now);
        let mut forged = token.as_str().to_owned();
        forged.replace_range(0..1, if forged.starts_with('A') { "B" } else { "A" });
        let huge = "A".repeat(10_000);
        for bad in ["", "x", forged.as_str(), huge.as_str()] {
            assert_eq!(
                sessions.validate(bad, &TLS, now),
                Err(SessionError::Unknown)
            );
        }
        assert!(sessions.validate(token.as_str(), &TLS, now).is_ok());
    }

    #[test]
    fn revoke_one_principal_or_all() {
        let sessions = Sessions::new(SessionPolicy::default());
        let now = Instant::now();
        let a1 = sessions.issue(&alice(), TLS, now);
        let _a2 = sessions.issue(&alice(), TLS, now);
        let bob = sessions.issue(&Principal::for_tests("bob", Role::Viewer), TLS, now);
        assert_eq!(sessions.len(), 3);
        assert!(sessions.revoke(a1.as_str()));
        assert!(!sessions.revoke(a1.as_str()));
        assert_eq!(
            sessions.validate(a1.as_str(), &TLS, now),
            Err(SessionError::Unknown)
        );
        assert_eq!(sessions.revoke_principal("alice"), 1);
        assert_eq!(sessions.revoke_principal("alice"), 0);
        assert_eq!(
            sessions.validate(bob.as_str(), &TLS, now).unwrap().id(),
            "bob"
        );
        sessions.revoke_all();
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_full_table_evicts_the_oldest() {
        let sessions = Sessions::new(SessionPolicy {
            max_sessions: 3,
            ..SessionPolicy::default()
        });
        let t0 = Instant::now();
        let tokens: Vec<SessionToken> = (0..4u64)
            .map(|n| sessions.issue(&alice(), TLS, t0 + Duration::from_secs(n)))
            .collect();
        let now = t0 + Duration::from_secs(5);
        assert_eq!(sessions.len(), 3);
        assert_eq!(
            sessions.validate(tokens[0].as_str(), &TLS, now),
            Err(SessionError::Unknown)
        );
        for t in &tokens[1..] {
            sessions.validate(t.as_str(), &TLS, now).unwrap();
        }
    }

    #[test]
    fn expired_sessions_make_room_before_live_ones_are_evicted() {
        let sessions = Sessions::new(SessionPolicy {
            max_sessions: 2,
            ..SessionPolicy::default()
        });
        let t0 = Instant::now();
        let _stale = sessions.issue(&alice(), TLS, t0);
        let live = sessions.issue(&alice(), TLS, t0 + 10 * MIN);
        let _new = sessions.issue(&alice(), TLS, t0 + 20 * MIN);
        assert!(
            sessions
                .validate(live.as_str(), &TLS, t0 + 20 * MIN)
                .is_ok()
        );
    }
}
