//! The crate's one error type.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with a configuration file, a settings
/// document or a configuration bundle.
///
/// Errors about one field carry its dotted path (`auth.lockout_secs`,
/// `services[2].identity`) and what the field accepts, so the message can
/// be shown to the operator as it is. Values from untrusted input are not
/// echoed back except numbers and short, truncated names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document is larger than this crate accepts for its kind.
    #[error("{document} is {len} bytes; at most {max} bytes are accepted")]
    TooLarge {
        /// Which document (`agent.toml`, `device settings`, ...).
        document: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The document is not UTF-8 text.
    #[error("{document} is not valid UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Which document.
        document: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },

    /// The document is not well-formed TOML / JSON / base64.
    #[error("{document} is malformed{}: {reason}", location(*line, *column))]
    Malformed {
        /// Which document.
        document: &'static str,
        /// 1-based line of the problem, when the parser reports one.
        line: Option<usize>,
        /// 1-based column (in characters), when the parser reports one.
        column: Option<usize>,
        /// The parser's description.
        reason: String,
    },

    /// The document has a field this version does not know. Unknown fields
    /// are refused rather than ignored so that a misspelt security setting
    /// never silently falls back to its default.
    #[error("{document}: unknown field `{field}`{}", location(*line, None))]
    UnknownField {
        /// Which document.
        document: &'static str,
        /// Dotted path of the unknown field.
        field: String,
        /// 1-based line, when known.
        line: Option<usize>,
    },

    /// A field has the wrong type or a value its type cannot hold (a string
    /// where a number belongs, an unknown enum value, a missing field).
    #[error("{document}: field `{field}`{}: {reason}", location(*line, *column))]
    InvalidField {
        /// Which document.
        document: &'static str,
        /// Dotted path of the field (`.` for the document itself).
        field: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What the decoder expected.
        reason: String,
    },

    /// A number is outside the range the field accepts.
    #[error("`{field}` is {value}; allowed: {allowed}")]
    OutOfRange {
        /// Dotted path of the field.
        field: String,
        /// The value given.
        value: String,
        /// The accepted range, e.g. `1024..=1048576`.
        allowed: String,
    },

    /// A text field does not have the required form.
    #[error("`{field}` is not {expected}")]
    InvalidFormat {
        /// Dotted path of the field.
        field: String,
        /// The accepted form, in words.
        expected: String,
    },

    /// A list has more entries than allowed.
    #[error("`{field}` has {count} entries; at most {max} are allowed")]
    TooManyEntries {
        /// Dotted path of the list.
        field: String,
        /// Entries given.
        count: usize,
        /// The limit.
        max: usize,
    },

    /// A list entry repeats an earlier one where entries must be unique.
    #[error("`{field}` repeats an earlier entry")]
    Duplicate {
        /// Dotted path of the repeated entry.
        field: String,
    },

    /// A security-relevant setting goes past its floor: no acknowledgement
    /// can make this value acceptable (ISO/IEC 27402 5.2.5.2.1).
    #[error("`{field}` is past its security floor of {floor}")]
    BelowSecurityFloor {
        /// Dotted path of the setting.
        field: String,
        /// The weakest value accepted.
        floor: String,
    },

    /// A security-relevant setting is weaker than its secure default, and
    /// the settings do not say that this is intended.
    #[error(
        "`{field}` is weaker than its secure default; list \"{field}\" in `danger_acknowledged` to accept that"
    )]
    WeakeningNotAcknowledged {
        /// Dotted path of the setting.
        field: String,
    },

    /// `danger_acknowledged` names something that is not a weakenable
    /// setting (probably a typo, which must not pass silently).
    #[error("`danger_acknowledged` names `{name}`, which is not one of: {allowed}")]
    UnknownAcknowledgement {
        /// The name given (truncated).
        name: String,
        /// The names accepted, comma-separated.
        allowed: String,
    },

    /// A file named in the configuration could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A configured public key is not a PEM `SubjectPublicKeyInfo` of a
    /// supported algorithm (ECDSA P-256, Ed25519).
    #[error("public key of signer `{signer}` is unusable: {reason}")]
    InvalidPublicKey {
        /// The signer's configured name.
        signer: String,
        /// Why.
        reason: String,
    },

    /// Two trusted signers share a name or a key.
    #[error("configuration signer `{signer}` is listed twice (same name or same key)")]
    DuplicateSigner {
        /// The signer's configured name.
        signer: String,
    },

    /// The keystore refused to sign a bundle.
    #[error("signing the configuration bundle failed: {0}")]
    Signing(#[source] keys::Error),

    /// No signature on the bundle is by a trusted configuration signer
    /// (ISO/IEC 27402 5.2.2.2: changes only from authorised entities).
    #[error("no signature on the bundle is from a trusted signer (key ids: {})", key_ids.join(", "))]
    UnknownSigner {
        /// The key ids the bundle carries (truncated).
        key_ids: Vec<String>,
    },

    /// A signature by a trusted signer does not verify over the payload:
    /// the payload or the signature was altered.
    #[error("the signature by `{signer}` does not verify over the bundle payload")]
    BadSignature {
        /// The trusted signer's configured name.
        signer: String,
    },

    /// The bundle is for another device.
    #[error("bundle is for {field} {found:?}, but this device has {expected:?}")]
    WrongTarget {
        /// `target.serial` or `target.model`.
        field: &'static str,
        /// This device's value.
        expected: String,
        /// The bundle's value (truncated).
        found: String,
    },

    /// The bundle's sequence number is not newer than the last one applied:
    /// an old bundle is being replayed.
    #[error("bundle sequence {sequence} is not after the last applied sequence {last}")]
    Replayed {
        /// The bundle's sequence.
        sequence: u64,
        /// The last sequence this device applied.
        last: u64,
    },

    /// The bundle's validity ended.
    #[error("bundle expired at {not_after_unix} (now {now_unix}, Unix seconds)")]
    Expired {
        /// The bundle's `not_after_unix`.
        not_after_unix: i64,
        /// The time it was checked at.
        now_unix: i64,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

/// Shortens untrusted text before it goes into an error message, and
/// escapes control characters so it cannot forge log lines.
pub(crate) fn truncate(text: &str) -> String {
    truncate_to(text, 64)
}

/// Like [`truncate`], with a chosen length: for parser messages, which may
/// quote the offending input.
pub(crate) fn truncate_to(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}
