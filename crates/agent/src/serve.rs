//! Listening: TCP accept, TLS handshake, per-connection facts for the
//! guard, HTTP/1.1 serving, and graceful stop.
//!
//! Each enabled listener interface runs one accept loop. Stopping a
//! listener drops its socket at once (the port refuses connections) and
//! lets in-flight requests finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::guard::Connection;
use crate::state::Shared;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send request headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections across all listeners; more are closed at accept.
const MAX_CONNECTIONS: usize = 512;

/// What every listener serves.
pub(crate) struct ServeContext {
    pub(crate) app: Router,
    pub(crate) tls: TlsAcceptor,
    pub(crate) shared: Arc<Shared>,
    pub(crate) connections: Arc<Semaphore>,
}

impl ServeContext {
    pub(crate) fn new(app: Router, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) -> Self {
        Self {
            app,
            tls: TlsAcceptor::from(tls),
            shared,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// A running listener.
#[derive(Debug)]
pub(crate) struct RunningListener {
    pub(crate) addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningListener {
    /// Closes the socket now; waits (bounded) for in-flight requests.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Binds `addr` and serves `context` on it as interface `name`.
pub(crate) async fn spawn_listener(
    context: Arc<ServeContext>,
    name: &'static str,
    addr: SocketAddr,
) -> std::io::Result<RunningListener> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(context, name, listener, stopped));
    tracing::info!(interface = name, %addr, "listening");
    Ok(RunningListener { addr, stop, task })
}

async fn accept_loop(
    context: Arc<ServeContext>,
    name: &'static str,
    listener: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(interface = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = context.connections.clone().try_acquire_owned() else {
                    tracing::warn!(interface = name, %peer, "connection limit reached; closing");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let context = context.clone();
                let stopped = stopped.clone();
                connections.spawn(async move {
                    serve_connection(context, name, tcp, peer, stopped).await;
                    drop(permit);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // The socket closes here; in-flight connections were told to stop.
    drop(listener);
    while connections.join_next().await.is_some() {}
    tracing::info!(interface = name, "stopped listening");
}

async fn serve_connection(
    context: Arc<ServeContext>,
    name: &'static str,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, context.tls.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            handshake_refused(&context.shared, name, peer, &e);
            return;
        }
        Err(_) => {
            tracing::debug!(interface = name, %peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let mut binding = [0u8; 32];
    if session
        .export_keying_material(&mut binding, b"EXPORTER-Channel-Binding", None)
        .is_err()
    {
        tracing::warn!(interface = name, %peer, "no TLS exporter; closing");
        return;
    }
    let client_identity = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| common_name(cert.as_ref()));
    let info = Connection {
        peer,
        binding: access::ChannelBinding(binding),
        client_identity,
        interface: name,
    };
    let app = context.app.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(info.clone());
        let app = app.clone();
        async move {
            let (back, returned) = tokio::sync::oneshot::channel();
            let request = request.map(|inner| {
                axum::body::Body::new(ReturningBody {
                    inner: Some(inner),
                    back: Some(back),
                })
            });
            let response = app.oneshot(request).await;
            if let Ok(rest) = returned.await {
                drain(rest).await;
            }
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(interface = name, %peer, error = %e, "connection ended with an error");
            }
        }
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        }
    }
}

/// Most unread request body the server reads and discards after an early
/// answer (a refusal, a 413) before the connection closes.
const DRAIN_LIMIT: usize = 1 << 20;
/// How long it may take.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A request body that hands itself back when dropped unread, so the
/// connection can read and discard the rest. Without this, a client still
/// sending the body of a refused request sees the connection torn down
/// under it (a TLS error instead of the 401 or 413 it was sent).
struct ReturningBody {
    inner: Option<hyper::body::Incoming>,
    back: Option<tokio::sync::oneshot::Sender<hyper::body::Incoming>>,
}

impl hyper::body::Body for ReturningBody {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => std::pin::Pin::new(inner).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

impl Drop for ReturningBody {
    fn drop(&mut self) {
        use hyper::body::Body as _;
        if let (Some(inner), Some(back)) = (self.inner.take(), self.back.take())
            && !inner.is_end_stream()
        {
            let _ = back.send(inner);
        }
    }
}

/// Reads and discards what is left of a body, bounded in size and time.
async fn drain(mut rest: hyper::body::Incoming) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while read <= DRAIN_LIMIT {
        match tokio::time::timeout_at(deadline, rest.frame()).await {
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len());
            }
            _ => break,
        }
    }
}

/// A refused handshake: certificate problems are security events
/// (5.2.6.2 c: unknown devices are refused and logged); other failures
/// (scanners, old TLS versions) only reach the debug log.
fn handshake_refused(shared: &Shared, interface: &str, peer: SocketAddr, error: &std::io::Error) {
    let certificate_problem = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if certificate_problem {
        tracing::warn!(interface, %peer, %error, "client certificate refused");
        shared.record_quietly(store::eventlog::Event {
            source: Some(peer.to_string()),
            ..store::eventlog::Event::system(
                store::eventlog::Severity::Warning,
                "client.certificate-refused",
                store::eventlog::Outcome::Denied,
                &format!("TLS client certificate refused on {interface}: {error}"),
            )
        });
    } else {
        tracing::debug!(interface, %peer, %error, "TLS handshake failed");
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}
