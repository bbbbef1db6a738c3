//! Central log sync: forwards the device's tamper-evident event log to a
//! remote collector as RFC 5424 syslog messages over mutual TLS (RFC 5425
//! octet-counting frames), for clause 5.2.5.2.2 of ISO/IEC 27402.
//!
//! Main types:
//! - [`Forwarder`]: reads the records after its durable cursor from the
//!   event log, formats them, sends them in batches and moves the cursor.
//!   [`Forwarder::forward_pending`] makes one bounded pass;
//!   [`Forwarder::run_until`] loops with polling and backoff until a
//!   [`Shutdown`] is triggered.
//! - [`Config`]: collector address and certificate name, header fields,
//!   [`Facility`], [`Deidentify`], batch size and every time bound.
//! - [`Deidentify`] / [`PseudonymKey`]: strip or pseudonymize the fields
//!   that identify a person before they leave the device.
//!
//! ```no_run
//! # use std::{path::Path, sync::Arc};
//! # fn demo(store: Arc<store::Store>, identity: identity::tls::TlsIdentity,
//! #         anchors: Vec<rustls_pki_types::CertificateDer<'static>>) -> logsync::Result<()> {
//! let mut config = logsync::Config::new("logs.example.net:6514", "logs.example.net", "unit-0042");
//! config.deidentify = logsync::Deidentify::Pseudonymize {
//!     key: logsync::PseudonymKey::load_or_create(&store, &config.collector)?,
//! };
//! let forwarder = logsync::Forwarder::new(config, store, Path::new("/var/lib/bulwark/store"), &identity, &anchors)?;
//! let shutdown = logsync::Shutdown::new();
//! std::thread::scope(|s| {
//!     s.spawn(|| forwarder.run_until(&shutdown));
//!     // ... on SIGTERM:
//!     shutdown.trigger();
//! });
//! # Ok(()) }
//! ```
//!
//! Design decisions:
//! - **The queue is the event log.** Events are durable once appended, so
//!   the forwarder keeps only a cursor: the next sequence number to send
//!   (and a byte offset, as a hint, so a pass reads only new frames), in
//!   the store's identifiers table under `logsync.cursor/<collector>`,
//!   committed with fsync. Nothing is copied; nothing in clear touches the
//!   disk. A collector seen for the first time receives the whole log.
//! - **Delivery is confirmed by a clean TLS close.** RFC 5425 has no
//!   acknowledgement, so every batch travels in its own TLS session: the
//!   records, our `close_notify`, then a wait for the collector to close
//!   (its `close_notify`, or a FIN with no reset behind it: a socket
//!   closed with unread data resets, and rsyslog closes only after
//!   reading our `close_notify`). Only then does the cursor move. The result is at-least-once, in order: a failure at any
//!   point resends at most the batch in flight, and on the happy path
//!   nothing is sent twice. A handshake per batch costs a few
//!   milliseconds and one keystore signature; batches of 256 keep that
//!   small. (RELP would give real acknowledgements but is not RFC 5425;
//!   a collector that dies after its TLS library read a batch but before
//!   queueing it loses that batch: the collector's queue must be durable.)
//! - **Facility authpriv by default**, configurable: these are security
//!   events, and authpriv is the facility syslog daemons route to
//!   restricted files. Severity comes from the event (alert 1, error 3,
//!   warning 4, notice 5, info 6).
//! - **Message shape:** `<PRI>1 TIMESTAMP HOSTNAME bulwark - MSGID
//!   [bulwark@32473 seq= action= outcome= actor-type= actor= source=
//!   identity-removed= deidentified=] MSG` with TIMESTAMP the event's time
//!   in UTC (microseconds), HOSTNAME the device identifier, MSGID the
//!   action, MSG the detail (with a BOM when not ASCII). Header fields are
//!   checked once (printable US-ASCII, RFC lengths); event values are cut
//!   to 64 bytes and escaped (§6.3.3), and MSG is cut to the configured
//!   maximum, so formatting never fails and never stalls the queue.
//! - **Nothing is skipped silently.** A record that fails authentication
//!   is sent as an `event-log.unreadable` alert in its place; a log found
//!   behind the cursor (truncated or replaced by an older copy) is
//!   reported as `event-log.rolled-back` and the cursor follows it.
//! - **Blocking I/O on a thread**, not async: one socket at a time, a
//!   blocking keystore signature in every handshake, and tests that need
//!   no runtime. Every wait has a bound (connect, read, write and close
//!   timeouts; batches per pass; backoff up to a maximum).

mod deidentify;
mod error;
mod forwarder;
mod syslog;
mod transport;

pub use deidentify::{Deidentify, PseudonymKey};
pub use error::{Error, Result};
pub use forwarder::{Config, ForwardReport, Forwarder, RunSummary, Shutdown, Status};
pub use syslog::{DEFAULT_MESSAGE_LEN, Facility, MIN_MESSAGE_LEN, severity_code};
