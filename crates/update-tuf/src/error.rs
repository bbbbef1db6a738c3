//! The crate's error type and the mapping from tough's errors to it.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while publishing or fetching.
///
/// The variants a device sees after an attack are named after the attack's
/// symptom ([`Error::Untrusted`], [`Error::Expired`], [`Error::Rollback`],
/// [`Error::Inconsistent`], [`Error::EndlessData`],
/// [`Error::SlowRetrieval`], [`Error::DeadlineExceeded`],
/// [`Error::ClockSteppedBack`]) so that callers and logs can tell them apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key's algorithm has no TUF key type here.
    #[error("key {label} uses {algorithm}, which this crate cannot put in TUF metadata")]
    UnsupportedKey {
        /// The key's label in its store.
        label: String,
        /// Its algorithm.
        algorithm: String,
    },
    /// The repository specification is unusable (empty role, threshold 0 or
    /// above the number of keys, ...).
    #[error("invalid repository specification: {reason}")]
    InvalidSpec {
        /// What is wrong.
        reason: String,
    },
    /// A target name is not a plain file name.
    #[error("invalid target name {name:?}: {reason}")]
    InvalidTargetName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A base URL could not be parsed.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// tough's editor refused to build or sign the metadata.
    #[error("publishing {what} failed: {detail}")]
    Publish {
        /// Which step.
        what: &'static str,
        /// tough's message.
        detail: String,
    },
    /// Metadata is not signed by a threshold of the keys the trusted root
    /// names: an untrusted key, too few valid signatures, or another
    /// repository's metadata.
    #[error("{role} metadata is not signed by a threshold of trusted keys: {detail}")]
    Untrusted {
        /// The role whose metadata was refused.
        role: String,
        /// tough's message.
        detail: String,
    },
    /// Metadata has expired: a freeze attack, or a repository that stopped
    /// being maintained.
    #[error("{role} metadata has expired (possible freeze attack)")]
    Expired {
        /// The role whose metadata expired.
        role: String,
    },
    /// Metadata is older than what this device already trusts: a rollback,
    /// or the after-effect of a fast-forward attack (recover by rotating
    /// the affected keys through a new root).
    #[error("{role} metadata is older than what this device already trusts: {detail}")]
    Rollback {
        /// The role whose metadata was refused.
        role: String,
        /// tough's message.
        detail: String,
    },
    /// Metadata does not match the version or hash that the metadata above
    /// it declares: a mix-and-match of files from different releases.
    #[error("{role} metadata does not match what the repository declared for it: {detail}")]
    Inconsistent {
        /// The role (or file) that did not match.
        role: String,
        /// tough's message.
        detail: String,
    },
    /// A server sent more bytes than the metadata declares, or than the
    /// configured limit where nothing is declared.
    #[error("{url}: more than the {limit} bytes allowed (endless data)")]
    EndlessData {
        /// What was being fetched.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A target's download ended before its signed length, or without
    /// its verification completing.
    #[error("target {name:?} ended before its signed length was verified")]
    TargetTruncated {
        /// The target.
        name: String,
    },
    /// A server sent data slower than the configured minimum rate.
    #[error(
        "{url}: {bytes} bytes in {window:?}, below the minimum of {min_bytes_per_sec} B/s (slow retrieval)"
    )]
    SlowRetrieval {
        /// What was being fetched.
        url: String,
        /// Bytes received in the window that fell short.
        bytes: u64,
        /// The window's length.
        window: Duration,
        /// The configured minimum.
        min_bytes_per_sec: u64,
    },
    /// A fetch did not complete within the configured deadline.
    #[error("{url}: not complete within the {deadline:?} deadline")]
    DeadlineExceeded {
        /// What was being fetched.
        url: String,
        /// The configured deadline.
        deadline: Duration,
    },
    /// The system clock is earlier than a signed time this device has
    /// already seen: the clock was set back, and expiry checks against it
    /// would accept stale metadata.
    #[error("system clock {now} is earlier than signed metadata time {seen} (clock stepped back)")]
    ClockSteppedBack {
        /// The clock's current time (RFC 3339).
        now: String,
        /// The newest signed time seen (RFC 3339).
        seen: String,
    },
    /// The signed targets do not list this name.
    #[error("no target named {name:?} in the signed targets")]
    TargetNotFound {
        /// The name asked for.
        name: String,
    },
    /// A target's bytes do not match its signed hash.
    #[error("target {name:?} does not match its signed hash: {detail}")]
    TargetHashMismatch {
        /// The target.
        name: String,
        /// tough's message.
        detail: String,
    },
    /// `fetch_target` was asked for a target above its in-memory limit.
    #[error(
        "target {name:?} is {length} bytes, above the {limit} bytes fetch_target keeps in memory; use open_target"
    )]
    TargetTooLarge {
        /// The target.
        name: String,
        /// Its signed length.
        length: u64,
        /// The limit.
        limit: u64,
    },
    /// The transport failed for another reason (connection refused, HTTP
    /// error status, I/O error).
    #[error("fetching {url} failed: {detail}")]
    Transport {
        /// What was being fetched.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The TLS connection to an `https://` mirror failed: the server's
    /// certificate did not chain to the configured CA (or the platform
    /// roots), named another host, or the handshake failed.
    #[error("TLS to {url} failed: {detail}")]
    Tls {
        /// What was being fetched.
        url: String,
        /// rustls's reason (for example `UnknownIssuer`).
        detail: String,
    },
    /// The TLS trust anchors could not be loaded.
    #[error("TLS trust anchors: {0}")]
    TlsConfig(String),
    /// Metadata was malformed or otherwise refused.
    #[error("repository metadata refused: {detail}")]
    Metadata {
        /// tough's message.
        detail: String,
    },
    /// The async runtime that drives tough could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// Recovers the [`Error`] carried by an I/O error from a
    /// [`TargetReader`](crate::TargetReader); other I/O errors become
    /// [`Error::Transport`].
    pub fn from_io(e: std::io::Error) -> Self {
        let detail = e.to_string();
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(ours)) => *ours,
            _ => Error::Transport {
                url: String::new(),
                detail,
            },
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why our HTTP transport gave up: carried as the source of a
/// `tough::TransportError` and recovered by [`classify`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchFailure {
    #[error("{bytes} bytes in {window:?}, below {min_bytes_per_sec} B/s")]
    Slow {
        bytes: u64,
        window: Duration,
        min_bytes_per_sec: u64,
    },
    #[error("deadline of {deadline:?} exceeded")]
    Deadline { deadline: Duration },
    #[error("TLS: {0}")]
    Tls(String),
}

impl FetchFailure {
    /// Our error for this verdict on `url`.
    fn to_error(&self, url: String) -> Error {
        match self {
            FetchFailure::Slow {
                bytes,
                window,
                min_bytes_per_sec,
            } => Error::SlowRetrieval {
                url,
                bytes: *bytes,
                window: *window,
                min_bytes_per_sec: *min_bytes_per_sec,
            },
            FetchFailure::Deadline { deadline } => Error::DeadlineExceeded {
                url,
                deadline: *deadline,
            },
            FetchFailure::Tls(detail) => Error::Tls {
                url,
                detail: detail.clone(),
            },
        }
    }
}

/// A transport failure outside tough's reader (ranged downloads): our own
/// rate, deadline and TLS verdicts keep their variants.
pub(crate) fn classify_transport(err: &tough::TransportError) -> Error {
    let url = err.url().to_owned();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(f) = e.downcast_ref::<FetchFailure>() {
            return f.to_error(url);
        }
        cause = e.source();
    }
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        detail.push_str(&format!(": {e}"));
        source = e.source();
    }
    Error::Transport { url, detail }
}

/// Turns one of tough's errors into ours, looking through its source chain
/// for the causes that name an attack.
pub(crate) fn classify(err: &tough::error::Error) -> Error {
    use tough::error::Error as T;
    // Causes found anywhere in the chain win over the outer description:
    // a size limit or our own rate/deadline verdict is the real reason.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let url = match err {
        T::Transport { url, .. } => url.to_string(),
        _ => String::new(),
    };
    while let Some(e) = cause {
        if let Some(f) = e.downcast_ref::<FetchFailure>() {
            return f.to_error(url);
        }
        if let Some(t) = e.downcast_ref::<T>() {
            match t {
                T::MaxSizeExceeded { max_size, .. } => {
                    return Error::EndlessData {
                        url,
                        limit: *max_size,
                    };
                }
                T::HashMismatch { context, .. } => {
                    return Error::Inconsistent {
                        role: context.clone(),
                        detail: t.to_string(),
                    };
                }
                _ => {}
            }
        }
        cause = e.source();
    }
    let detail = err.to_string();
    match err {
        T::ExpiredMetadata { role, .. } => Error::Expired {
            role: role.to_string(),
        },
        T::VerifyMetadata { role, .. } => Error::Untrusted {
            role: role.to_string(),
            detail,
        },
        T::VerifyTrustedMetadata { .. } => Error::Untrusted {
            role: "trusted root".into(),
            detail,
        },
        T::OlderMetadata { role, .. } => Error::Rollback {
            role: role.to_string(),
            detail,
        },
        T::OlderSnapshotInTimestamp { .. } => Error::Rollback {
            role: "timestamp".into(),
            detail,
        },
        T::SnapshotRoleRollback { role, .. } | T::SnapshotRoleMissing { role, .. } => {
            Error::Rollback {
                role: role.clone(),
                detail,
            }
        }
        T::VersionMismatch { role, .. } => Error::Inconsistent {
            role: role.to_string(),
            detail,
        },
        T::MetaMissing { file, .. } => Error::Inconsistent {
            role: (*file).to_owned(),
            detail,
        },
        T::SystemTimeSteppedBackward {
            sys_time,
            latest_known_time,
            ..
        } => Error::ClockSteppedBack {
            now: sys_time.to_string(),
            seen: latest_known_time.to_string(),
        },
        T::Transport { url, .. } => Error::Transport {
            url: url.to_string(),
            detail,
        },
        _ => Error::Metadata { detail },
    }
}
