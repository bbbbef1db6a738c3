//! One batch over one TLS session, confirmed by a clean close.
//!
//! RFC 5425 has no acknowledgement, so a batch counts as delivered only
//! when the collector's side of the closing handshake arrives: we send the
//! batch and our `close_notify`, then read until the collector closes. The
//! collector answers with its own `close_notify`, or with a TCP FIN after
//! its TLS stack consumed our `close_notify`. A collector that goes away
//! without reading everything resets the connection instead (a socket
//! closed with unread data sends RST), a dead one times out; both leave
//! the batch unconfirmed, to be sent again.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::{Error, Result};

/// Bytes of application data a collector may send before we give up on
/// it (syslog collectors send none).
const MAX_UNEXPECTED: usize = 64 * 1024;

/// Where and how to connect.
#[derive(Debug)]
pub(crate) struct Link<'a> {
    pub(crate) collector: &'a str,
    pub(crate) server_name: &'a ServerName<'static>,
    pub(crate) tls: &'a Arc<rustls::ClientConfig>,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
}

impl Link<'_> {
    fn io(&self, operation: &'static str) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| match tls_cause(&source) {
            Some(tls) => Error::Tls {
                collector: self.collector.to_owned(),
                source: tls,
            },
            None => Error::Io {
                collector: self.collector.to_owned(),
                operation,
                source,
            },
        }
    }

    fn connect(&self) -> Result<TcpStream> {
        let addrs: Vec<SocketAddr> = self
            .collector
            .to_socket_addrs()
            .map_err(self.io("resolving"))?
            .take(8)
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(sock) => return Ok(sock),
                Err(e) => last = Some(e),
            }
        }
        Err(self.io("connecting to")(last.unwrap_or_else(|| {
            std::io::Error::new(ErrorKind::NotFound, "the name resolved to no address")
        })))
    }

    /// Sends the framed batch `payload` and waits for the collector to
    /// close cleanly. Returns once delivery is confirmed.
    pub(crate) fn deliver(&self, payload: &[u8]) -> Result<()> {
        let sock = self.connect()?;
        sock.set_nodelay(true).map_err(self.io("configuring"))?;
        sock.set_read_timeout(Some(self.io_timeout))
            .map_err(self.io("configuring"))?;
        sock.set_write_timeout(Some(self.io_timeout))
            .map_err(self.io("configuring"))?;
        let conn = ClientConnection::new(self.tls.clone(), self.server_name.clone()).map_err(
            |source| Error::Tls {
                collector: self.collector.to_owned(),
                source,
            },
        )?;
        let mut tls = StreamOwned::new(conn, sock);
        // complete_io drives the whole handshake; each socket operation in
        // it is bounded by the timeouts above.
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(self.io("handshaking with"))?;
        tls.write_all(payload).map_err(self.io("sending to"))?;
        tls.conn.send_close_notify();
        tls.flush().map_err(self.io("sending to"))?;
        self.await_close(&mut tls)
    }

    fn await_close(&self, tls: &mut StreamOwned<ClientConnection, TcpStream>) -> Result<()> {
        let deadline = Instant::now() + self.io_timeout;
        let mut buf = [0u8; 4096];
        let mut unexpected = 0usize;
        // Bounded by the deadline and by MAX_UNEXPECTED.
        loop {
            if Instant::now() > deadline || unexpected > MAX_UNEXPECTED {
                return Err(Error::Unconfirmed {
                    collector: self.collector.to_owned(),
                    reason: "the collector did not close the session in time".into(),
                });
            }
            match tls.read(&mut buf) {
                // Its close_notify.
                Ok(0) => {
                    tracing::debug!(
                        collector = self.collector,
                        "batch confirmed by close_notify"
                    );
                    return Ok(());
                }
                Ok(n) => unexpected += n,
                // A FIN after it consumed our close_notify (see above).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    // Linux reports EOF even when a reset followed the FIN
                    // (a collector that closed before our batch arrived
                    // and then reset on it); the reset is left in
                    // SO_ERROR, so look there before believing the FIN.
                    if let Ok(Some(e)) | Err(e) = tls.sock.take_error() {
                        return Err(Error::Unconfirmed {
                            collector: self.collector.to_owned(),
                            reason: format!("the collector reset the session: {e}"),
                        });
                    }
                    tracing::debug!(collector = self.collector, "batch confirmed by FIN");
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Unconfirmed {
                        collector: self.collector.to_owned(),
                        reason: format!("while closing: {e}"),
                    });
                }
            }
        }
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn tls_cause(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}
