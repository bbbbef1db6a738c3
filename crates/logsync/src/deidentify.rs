//! De-identification before events leave the device (clause 5.2.5.2.2:
//! personal data in a central repository should be de-identified).

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use store::eventlog::Event;
use store::{Category, Store};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// What to do with the fields that identify a person (the actor of a user
/// event and its source address). System actors and their sources are
/// never touched: they identify no one.
#[derive(Debug, Clone, Default)]
pub enum Deidentify {
    /// Send them as they are.
    #[default]
    Keep,
    /// Drop them: the collector learns that a person acted, not who.
    Strip,
    /// Replace them with keyed pseudonyms: the same person gets the same
    /// pseudonym at this collector (so patterns stay visible), and only
    /// the key holder can link a pseudonym to a name.
    Pseudonymize {
        /// The per-collector key.
        key: PseudonymKey,
    },
}

/// A 256-bit HMAC key for pseudonyms. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct PseudonymKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymKey").finish_non_exhaustive()
    }
}

impl PseudonymKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(|_| Error::Random)?;
        Ok(Self(bytes))
    }

    /// The key for `collector` kept (sealed) in the store's sensitive
    /// security parameters, created on first use. One key per collector:
    /// two collectors cannot join their pseudonyms.
    pub fn load_or_create(store: &Store, collector: &str) -> Result<Self> {
        let name = format!("logsync.pseudonym-key/{collector}");
        if let Some(bytes) = store.get(Category::SecurityParameters, &name)? {
            let bytes: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::CorruptState {
                    what: "pseudonym key",
                    reason: format!("{} bytes instead of 32", bytes.len()),
                })?;
            return Ok(Self::from_bytes(bytes));
        }
        let key = Self::generate()?;
        store.put(Category::SecurityParameters, &name, key.0.as_ref())?;
        Ok(key)
    }

    /// `kind:` followed by 128 bits of HMAC-SHA256(key, domain | value)
    /// in hex; the domain keeps user and address pseudonyms apart.
    fn pseudonym(&self, kind: &str, value: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"bulwark-logsync pseudonym v1\0");
        ctx.update(kind.as_bytes());
        ctx.update(b"\0");
        ctx.update(value.as_bytes());
        let tag = ctx.sign();
        let short = tag.as_ref().get(..16).unwrap_or_default();
        format!("{kind}:{}", hex::encode(short))
    }
}

/// How an event was de-identified (sent in its structured data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    None,
    Stripped,
    Pseudonymized,
}

impl Applied {
    pub(crate) fn as_param(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Stripped => Some("stripped"),
            Self::Pseudonymized => Some("pseudonymized"),
        }
    }
}

impl Deidentify {
    /// De-identifies a user event's actor and source in place.
    pub(crate) fn apply(&self, event: &mut Event) -> Applied {
        if !event.actor_is_user {
            return Applied::None;
        }
        match self {
            Self::Keep => Applied::None,
            Self::Strip => {
                event.actor = None;
                event.source = None;
                Applied::Stripped
            }
            Self::Pseudonymize { key } => {
                event.actor = event.actor.as_deref().map(|u| key.pseudonym("user", u));
                event.source = event.source.as_deref().map(|s| key.pseudonym("addr", s));
                Applied::Pseudonymized
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use store::eventlog::{Outcome, Severity};

    use super::*;

    fn user_event() -> Event {
        Event::by_user(
            "alice",
            Some("192.0.2.7"),
            Severity::Warning,
            "login",
            Outcome::Failure,
            "bad password",
        )
    }

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_between_keys() {
        let k1 = PseudonymKey::from_bytes([1; 32]);
        let k2 = PseudonymKey::from_bytes([2; 32]);
        let d1 = Deidentify::Pseudonymize { key: k1.clone() };
        let (mut a, mut b) = (user_event(), user_event());
        assert_eq!(d1.apply(&mut a), Applied::Pseudonymized);
        Deidentify::Pseudonymize { key: k1 }.apply(&mut b);
        assert_eq!(a.actor, b.actor);
        let actor = a.actor.clone().unwrap();
        assert!(
            actor.starts_with("user:") && actor.len() == 5 + 32,
            "{actor}"
        );
        assert!(!actor.contains("alice"));
        assert!(a.source.unwrap().starts_with("addr:"));
        let mut c = user_event();
        Deidentify::Pseudonymize { key: k2 }.apply(&mut c);
        assert_ne!(a.actor, c.actor);
    }

    #[test]
    fn strip_drops_user_fields_and_system_actors_are_kept() {
        let mut e = user_event();
        assert_eq!(Deidentify::Strip.apply(&mut e), Applied::Stripped);
        assert_eq!((e.actor, e.source), (None, None));
        let mut s = Event::system(Severity::Info, "boot", Outcome::Success, "");
        s.source = Some("eth0".into());
        assert_eq!(Deidentify::Strip.apply(&mut s), Applied::None);
        assert_eq!(s.actor.as_deref(), Some("system"));
        assert_eq!(s.source.as_deref(), Some("eth0"));
    }

    #[test]
    fn debug_shows_no_key() {
        let k = PseudonymKey::from_bytes([0xab; 32]);
        assert!(!format!("{k:?}").contains("171"));
        assert!(!format!("{k:?}").to_lowercase().contains("ab"));
    }
}
