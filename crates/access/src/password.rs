//! Passwords: the zeroized [`Password`] secret, the [`PasswordPolicy`]
//! that refuses guessable ones, and Argon2id [`PasswordHash`]es.
//!
//! Clause 5.2.2 asks that passwords not be guessable. The policy follows
//! NIST SP 800-63B rather than composition rules: a length floor, a list
//! of known-common passwords, and no password built from the account name
//! or a keyboard run. Only the hash is ever stored; it is a PHC string, so
//! it carries its own parameters and old hashes still verify after
//! [`HashParams`] are raised.
//!
//! ```
//! use access::password::{HashParams, Password, PasswordHash, PasswordPolicy};
//! let policy = PasswordPolicy::default();
//! assert!(policy.check(&Password::new("Password2024!".into()), "alice").is_err());
//! let good = Password::new("correct horse battery staple".into());
//! policy.check(&good, "alice").unwrap();
//! // Small parameters keep the example fast; use `HashParams::default()`.
//! let params = HashParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
//! let hash = PasswordHash::new(&good, &params).unwrap();
//! assert!(hash.verify(&good));
//! assert!(!hash.verify(&Password::new("wrong".into())));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;

/// A password as typed by a person. Zeroized on drop; `Debug` prints
/// `Password(..)`. Deserializes from a plain string so request bodies can
/// hold it directly.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password (the `String` is moved, not copied).
    pub fn new(password: String) -> Self {
        Self(Zeroizing::new(password))
    }

    /// The password itself: only for hashing and strength checks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Which passwords are accepted for accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values, not bytes). Default 12.
    pub min_length: usize,
    /// Most characters; bounds the hashing work a request can cause.
    /// Default 128.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
        }
    }
}

/// The embedded list of common passwords, lowercased, built once.
fn common_passwords() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../assets/common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
}

impl PasswordPolicy {
    /// Refuses a password that is too short or long, common, built from
    /// `account`, one repeated character or one sequential run.
    ///
    /// The [`Error::WeakPassword`] reason is a sentence for the person
    /// choosing the password; it never contains the password.
    pub fn check(&self, password: &Password, account: &str) -> Result<(), Error> {
        let weak = |reason: &str| {
            Err(Error::WeakPassword {
                reason: reason.to_owned(),
            })
        };
        let chars = password.expose().chars().count();
        if chars < self.min_length {
            return Err(Error::WeakPassword {
                reason: format!(
                    "The password must have at least {} characters.",
                    self.min_length
                ),
            });
        }
        if chars > self.max_length {
            return Err(Error::WeakPassword {
                reason: format!(
                    "The password must have at most {} characters.",
                    self.max_length
                ),
            });
        }
        let lower = Zeroizing::new(password.expose().to_lowercase());
        let list = common_passwords();
        let stripped =
            lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
        if list.contains(lower.as_str()) || (!stripped.is_empty() && list.contains(stripped)) {
            return weak("The password is on the list of commonly used passwords.");
        }
        let account = account.trim().to_lowercase();
        if !account.is_empty() && lower.contains(&account) {
            return weak("The password must not contain the account name.");
        }
        let mut it = lower.chars();
        if let Some(first) = it.next()
            && it.all(|c| c == first)
        {
            return weak("The password must not be one character repeated.");
        }
        if is_sequential(&lower) {
            return weak("The password must not be a run of consecutive characters.");
        }
        Ok(())
    }
}

/// Whether every character follows the previous one by +1 throughout, or
/// by -1 throughout ("abcdef", "987654"); digits wrap ("7890123").
fn is_sequential(s: &str) -> bool {
    let next = |a: char, b: char| u32::from(b) == u32::from(a) + 1 || (a == '9' && b == '0');
    let chars: Vec<char> = s.chars().collect();
    let up = chars
        .windows(2)
        .all(|w| matches!(w, [a, b] if next(*a, *b)));
    let down = chars
        .windows(2)
        .all(|w| matches!(w, [a, b] if next(*b, *a)));
    chars.len() > 1 && (up || down)
}

/// Argon2id cost parameters for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashParams {
    /// Memory in KiB. Default 19456 (19 MiB).
    pub memory_kib: u32,
    /// Passes over memory. Default 2.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub parallelism: u32,
}

impl Default for HashParams {
    /// OWASP's Argon2id baseline: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn hasher(&self) -> Result<Argon2<'static>, Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::InvalidHashParams {
                reason: e.to_string(),
            })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// An Argon2id hash of a password as a PHC string
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). Serializes as that string;
/// deserializing checks that it is a well-formed Argon2id PHC string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with Argon2id under a fresh random salt.
    pub fn new(password: &Password, params: &HashParams) -> Result<Self, Error> {
        let hash = params
            .hasher()?
            .hash_password(password.expose().as_bytes())
            .map_err(|e| Error::HashingFailed {
                reason: e.to_string(),
            })?;
        Ok(Self(hash.to_string()))
    }

    /// Whether `password` matches, using the parameters stored in the hash.
    /// The final comparison is constant time.
    pub fn verify(&self, password: &Password) -> bool {
        let Ok(parsed) = phc::PasswordHash::new(&self.0) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok()
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        let parsed = phc::PasswordHash::new(&value).map_err(|e| Error::InvalidPasswordHash {
            reason: e.to_string(),
        })?;
        if parsed.algorithm.as_str() != "argon2id" || parsed.hash.is_none() {
            return Err(Error::InvalidPasswordHash {
                reason: format!("expected an argon2id hash, got {}", parsed.algorithm),
            });
        }
        Ok(Self(value))
    }
}

impl From<PasswordHash> for String {
    fn from(hash: PasswordHash) -> Self {
        hash.0
    }
}

impl fmt::Debug for PasswordHash {
    /// Only the algorithm: a hash is still something to crack offline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PasswordHash")
            .field(&"argon2id")
            .finish_non_exhaustive()
    }
}

/// Does the work of one [`PasswordHash::verify`] under `params` and throws
/// the result away, so that a login for an unknown account takes as long
/// as a wrong password for a known one (no account enumeration by timing).
///
/// Equal cost holds for hashes made with the same `params`; hashes made
/// before the parameters were raised verify faster until rehashed.
pub fn dummy_verify(password: &Password, params: &HashParams) {
    const SALT: &[u8; 16] = b"bulwark-dummy-sa";
    let mut out = Zeroizing::new([0u8; 32]);
    if let Ok(hasher) = params.hasher() {
        // The result is irrelevant; only the time spent matters.
        let _ = hasher.hash_password_into(password.expose().as_bytes(), SALT, &mut *out);
    }
    std::hint::black_box(&out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FAST_HASH as FAST;

    fn pw(s: &str) -> Password {
        Password::new(s.to_owned())
    }

    fn refused(password: &str, account: &str) -> String {
        match PasswordPolicy::default().check(&pw(password), account) {
            Err(Error::WeakPassword { reason }) => {
                assert!(
                    !reason.to_lowercase().contains(&password.to_lowercase()),
                    "reason {reason:?} leaks the password"
                );
                assert!(reason.ends_with('.'), "{reason:?} is not a sentence");
                reason
            }
            other => panic!("{password:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn each_strength_rule_refuses_with_a_reason_free_of_the_password() {
        assert!(refused("Sh0rt!pass", "alice").contains("at least 12"));
        assert!(refused(&"ab1!".repeat(40), "alice").contains("at most 128"));
        assert!(refused("123456789012", "alice").contains("commonly used"));
        assert!(refused("QwertyUiop", "alice").contains("at least"));
        assert!(refused("QWERTYUIOP!!", "alice").contains("commonly used"));
        assert!(refused("Password2024!", "alice").contains("commonly used"));
        assert!(refused("LetMeIn.....", "alice").contains("commonly used"));
        assert!(refused("xx-Alice-2024-xx", "alice").contains("account name"));
        assert!(refused("aaaaaaaaaaaaaa", "alice").contains("repeated"));
        assert!(refused("abcdefghijklm", "alice").contains("consecutive"));
        assert!(refused("9876543210987", "alice").contains("consecutive"));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let policy = PasswordPolicy::default();
        // Twelve characters, 24 bytes.
        let accented = "éçàùöñøåæßğł";
        assert_eq!(accented.chars().count(), 12);
        policy.check(&pw(accented), "alice").unwrap();
        // Eleven characters but 22 bytes: still too short.
        assert!(policy.check(&pw("éçàùöñøåæßğ"), "alice").is_err());
        let max = PasswordPolicy {
            min_length: 1,
            max_length: 4,
        };
        max.check(&pw("ñøåæ"), "x").unwrap();
    }

    #[test]
    fn good_passwords_pass() {
        let policy = PasswordPolicy::default();
        for ok in [
            "correct horse battery staple",
            "Tr0ub4dor&3-extended",
            "mañana-lloverá-seguro",
        ] {
            policy.check(&pw(ok), "alice").unwrap();
        }
    }

    #[test]
    fn common_list_is_lowercase_and_large() {
        let list = common_passwords();
        assert!(list.len() >= 300, "{}", list.len());
        assert!(list.iter().all(|p| *p == p.to_lowercase()));
        for known in ["password", "123456789012", "qwertyuiop", "letmein"] {
            assert!(list.contains(known), "{known}");
        }
    }

    #[test]
    fn hash_round_trip_and_wrong_password() {
        let good = pw("correct horse battery staple");
        let hash = PasswordHash::new(&good, &FAST).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(hash.verify(&good));
        assert!(!hash.verify(&pw("correct horse battery stapler")));
        // A fresh salt each time.
        assert_ne!(PasswordHash::new(&good, &FAST).unwrap(), hash);
        // Serde round trip through the PHC string.
        let json = serde_json::to_string(&hash).unwrap();
        let back: PasswordHash = serde_json::from_str(&json).unwrap();
        assert!(back.verify(&good));
    }

    #[test]
    fn malformed_or_foreign_hashes_are_refused_on_load() {
        for bad in [
            "\"not a hash\"",
            "\"$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\"",
        ] {
            assert!(serde_json::from_str::<PasswordHash>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_params_are_an_error_not_a_panic() {
        let bad = HashParams {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        };
        assert!(matches!(
            PasswordHash::new(&pw("x"), &bad),
            Err(Error::InvalidHashParams { .. })
        ));
        dummy_verify(&pw("x"), &bad);
    }

    #[test]
    fn debug_prints_no_secret() {
        let secret = pw("correct horse battery staple");
        assert_eq!(format!("{secret:?}"), "Password(..)");
        let hash = PasswordHash::new(&secret, &FAST).unwrap();
        let debug = format!("{hash:?}");
        assert!(!debug.contains('$'), "{debug}");
        let from_json: Password = serde_json::from_str("\"hunter2hunter2\"").unwrap();
        assert_eq!(from_json.expose(), "hunter2hunter2");
    }
}
