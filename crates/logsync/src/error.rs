/// Result of a log forwarding operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while forwarding. Messages name the collector and the
/// step, never an event's content or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is unusable.
    #[error("invalid {what}: {reason}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The store or the event log failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The TLS identity or trust anchors are unusable.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// TLS failed: an untrusted or misnamed collector certificate, a
    /// refused client certificate, a protocol error.
    #[error("TLS with collector {collector}: {source}")]
    Tls {
        /// The collector address.
        collector: String,
        /// rustls's description.
        #[source]
        source: rustls::Error,
    },
    /// The network failed (refused, unreachable, timed out, reset).
    #[error("{operation} collector {collector}: {source}")]
    Io {
        /// The collector address.
        collector: String,
        /// What we were doing.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A batch was sent but the collector did not close the session
    /// cleanly, so delivery is not confirmed; it will be sent again.
    #[error("delivery to collector {collector} not confirmed: {reason}")]
    Unconfirmed {
        /// The collector address.
        collector: String,
        /// What happened instead.
        reason: String,
    },
    /// Forwarding state kept in the store is damaged.
    #[error("stored {what} is damaged: {reason}")]
    CorruptState {
        /// Which record.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}
