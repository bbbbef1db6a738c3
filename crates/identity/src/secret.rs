//! The per-unit setup secret: the only way to claim a new or reset device
//! (no default passwords, clause 5.2.6.1.4).
//!
//! 160 random bits, shown once in Crockford base32 groups for the label
//! (`7KQ2-M9XD-...`), which survive being read aloud or typed: no I, L, O
//! or U, and those letters are read as 1, 1, 0 when entered. Only an
//! Argon2id hash is stored.

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{Error, Result};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Entropy of a setup secret in bytes (160 bits).
pub const SECRET_BYTES: usize = 20;

/// A setup secret in clear: exists only between generation and printing
/// the label, and while a claim is checked. Zeroized on drop.
pub struct SetupSecret(Zeroizing<String>);

impl SetupSecret {
    /// A fresh random secret.
    pub fn generate() -> Result<Self> {
        let mut raw = Zeroizing::new([0u8; SECRET_BYTES]);
        SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| Error::InvalidInput {
                what: "random source",
                reason: "the system random generator failed".into(),
            })?;
        Ok(Self(encode(raw.as_ref())))
    }

    /// Parses what a person typed: case, spaces and dashes do not matter,
    /// and the look-alike letters I, L, O are read as 1, 1, 0.
    pub fn parse(typed: &str) -> Result<Self> {
        let mut normal = Zeroizing::new(String::with_capacity(32));
        for c in typed.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'I' | 'L' => '1',
                'O' => '0',
                c => c,
            };
            if !ALPHABET.contains(&(c as u8)) || !c.is_ascii() {
                return Err(Error::InvalidInput {
                    what: "setup secret",
                    reason: "it contains a character that is not on the label".into(),
                });
            }
            normal.push(c);
        }
        if normal.len() != 32 {
            return Err(Error::InvalidInput {
                what: "setup secret",
                reason: format!("expected 32 characters, got {}", normal.len()),
            });
        }
        Ok(Self(group(&normal)))
    }

    /// The secret as printed on the label: eight groups of four.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// An Argon2id hash (PHC string) to store instead of the secret.
    pub fn hash(&self) -> Result<String> {
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::InvalidInput {
                what: "random source",
                reason: "the system random generator failed".into(),
            })?;
        let hash: PasswordHash = hasher()
            .hash_password_with_salt(self.0.as_bytes(), &salt)
            .map_err(|e| Error::cert("setup secret hash", e))?;
        Ok(hash.to_string())
    }

    /// Whether this secret matches a stored hash (constant time).
    pub fn matches(&self, stored_hash: &str) -> bool {
        PasswordHash::new(stored_hash)
            .map(|h| hasher().verify_password(self.0.as_bytes(), &h).is_ok())
            .unwrap_or(false)
    }
}

impl fmt::Debug for SetupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetupSecret(<redacted>)")
    }
}

/// OWASP's Argon2id baseline (19 MiB, 2 passes): a setup secret has 160
/// bits of entropy, so the cost only guards against a weak RNG.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn encode(raw: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(32));
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in raw {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    group(&out)
}

fn group(chars: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(40));
    for (i, c) in chars.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_grouped() {
        let a = SetupSecret::generate().unwrap();
        let b = SetupSecret::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 39);
        assert_eq!(a.expose().split('-').count(), 8);
    }

    #[test]
    fn typed_forms_are_normalised() {
        let s = SetupSecret::generate().unwrap();
        let typed = s.expose().to_lowercase().replace('-', " ");
        assert_eq!(SetupSecret::parse(&typed).unwrap().expose(), s.expose());
        let hash = s.hash().unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(SetupSecret::parse(&typed).unwrap().matches(&hash));
        assert!(!SetupSecret::generate().unwrap().matches(&hash));
        assert!(!s.matches("not a hash"));
    }

    #[test]
    fn malformed_secrets_are_refused_without_echo() {
        let err = SetupSecret::parse("ABCD-EFGH-!").unwrap_err().to_string();
        assert!(!err.contains("ABCD"), "{err}");
        assert!(SetupSecret::parse("ABCD").is_err());
        assert_eq!(
            format!("{:?}", SetupSecret::generate().unwrap()),
            "SetupSecret(<redacted>)"
        );
    }
}
