//! The crate's one error type.
//!
//! Delivery errors end up as text in [`crate::HubStatus::last_error`],
//! which the agent shows on its status endpoint: a variant names the hub
//! by `host:port` only, never by its full URL (a webhook path often holds
//! a token).

/// What went wrong while checking a hub or delivering to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The webhook URL is not `https://host[:port][/path]`. The URL itself
    /// is left out of the message: it may carry a secret token.
    #[error("invalid webhook URL: {reason}")]
    InvalidWebhookUrl {
        /// Which part is wrong.
        reason: String,
    },

    /// The MQTT hub configuration cannot work (topic, client id or host).
    #[error("invalid MQTT hub {what}: {reason}")]
    InvalidMqttHub {
        /// Which setting (`topic`, `client id`, `host`).
        what: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A notification serializes to more than a hub accepts; it is dropped
    /// rather than blocking every later one.
    #[error("notification {seq} is {size} bytes as JSON, more than the {max}-byte limit")]
    NotificationTooLarge {
        /// The notification's sequence number.
        seq: u64,
        /// Its size as JSON.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// A notification could not be encoded as JSON.
    #[error("notification {seq} cannot be encoded as JSON: {reason}")]
    NotificationEncoding {
        /// The notification's sequence number.
        seq: u64,
        /// The encoder's description.
        reason: String,
    },

    /// No TCP connection to the hub.
    #[error("cannot connect to {hub}: {source}")]
    Unreachable {
        /// `host:port`.
        hub: String,
        /// The socket error.
        source: std::io::Error,
    },

    /// The TLS handshake failed (an untrusted or wrong certificate, a
    /// refused client certificate, a protocol mismatch).
    #[error("TLS handshake with {hub} failed: {source}")]
    TlsHandshake {
        /// `host:port`.
        hub: String,
        /// The handshake error (rustls's, inside an I/O error).
        source: std::io::Error,
    },

    /// The MQTT connection failed or was lost before the broker
    /// acknowledged the notification.
    #[error("MQTT broker {broker}: {reason}")]
    MqttConnection {
        /// `host:port`.
        broker: String,
        /// The client library's description.
        reason: String,
    },

    /// The webhook answered with a status other than 2xx.
    #[error("webhook {hub} answered HTTP {status}")]
    WebhookStatus {
        /// `host:port`.
        hub: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The HTTP exchange with the webhook failed after the TLS handshake.
    #[error("HTTP exchange with webhook {hub} failed: {reason}")]
    WebhookHttp {
        /// `host:port`.
        hub: String,
        /// The HTTP library's description.
        reason: String,
    },

    /// The hub did not complete a delivery in time.
    #[error("{hub} did not complete the delivery within {seconds} s")]
    Timeout {
        /// `host:port`.
        hub: String,
        /// The limit.
        seconds: u64,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
