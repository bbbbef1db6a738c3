//! Our HTTP transport for tough: hyper over TCP or TLS (rustls), with a
//! deadline per file and a minimum transfer rate (TUF's slow-retrieval
//! defence). tough bounds each file's length itself (endless-data
//! defence).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tough::{FilesystemTransport, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::error::FetchFailure;

/// How fast and how long one file's transfer may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimits {
    pub(crate) min_bytes_per_sec: u64,
    pub(crate) rate_window: Duration,
    pub(crate) deadline: Duration,
}

/// tough [`Transport`] for `http://` and `https://` (with rate and
/// deadline limits) and `file://` (a local mirror, such as removable
/// media).
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    limits: RateLimits,
    /// `None`: `https://` URLs are refused (no trust anchors configured).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpTransport {
    pub(crate) fn new(limits: RateLimits, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Self { limits, tls }
    }
}

/// Where the server certificates of `https://` mirrors must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRoots {
    /// The operating system's trust store (via `rustls-native-certs`).
    Platform,
    /// Only the CA certificates in this PEM text (a private mirror).
    CaPem(Vec<u8>),
}

/// A rustls client configuration trusting `roots`, with the workspace's
/// one crypto provider (aws-lc-rs), TLS 1.2 and 1.3.
pub(crate) fn client_config(roots: &TlsRoots) -> crate::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = match roots {
        TlsRoots::CaPem(pem) => CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::TlsConfig(format!("CA PEM does not parse: {e}")))?,
        TlsRoots::Platform => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(crate::Error::TlsConfig(match roots {
            TlsRoots::CaPem(_) => "no usable CA certificate in the CA PEM".into(),
            TlsRoots::Platform => {
                "no platform trust anchors found; configure a CA file for https://".into()
            }
        }));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| crate::Error::TlsConfig(e.to_string()))?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A stream fed by the task that reads the HTTP body. The channel makes
/// the stream `Send + Sync` whatever hyper's body type is.
struct ChannelStream(mpsc::Receiver<Result<Bytes, TransportError>>);

impl futures_util::Stream for ChannelStream {
    type Item = Result<Bytes, TransportError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn other(url: &Url, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TransportError {
    TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), cause)
}

/// What a server did with a `Range` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeReply {
    /// `206` with `Content-Range: bytes <from>-<last>/<total>`, exactly
    /// the range asked for: the stream starts at `from`.
    Partial,
    /// `200` (Range ignored, or a `file://` mirror): the stream starts at 0.
    Full,
}

#[tough::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() == "file" {
            return FilesystemTransport.fetch(url).await;
        }
        let (response, deadline) = self.get(&url, None).await?;
        Ok(self.stream(response, url, deadline))
    }
}

impl HttpTransport {
    /// Fetches `url` from byte `from` on, up to `end` (exclusive) if given
    /// (`Range: bytes=<from>-<end-1>`), else to the end (`bytes=<from>-`,
    /// a download that resumes). A `206` must carry exactly
    /// `Content-Range: bytes <from>-<last>/<total>` with `total` the
    /// signed length, or the reply is refused.
    pub(crate) async fn fetch_range(
        &self,
        url: Url,
        from: u64,
        end: Option<u64>,
        total: u64,
    ) -> Result<(RangeReply, TransportStream), TransportError> {
        if url.scheme() == "file" {
            return Ok((RangeReply::Full, FilesystemTransport.fetch(url).await?));
        }
        let (response, deadline) = self.get(&url, Some((from, end))).await?;
        let reply = if response.status() == hyper::StatusCode::PARTIAL_CONTENT {
            let last = end.unwrap_or(total).saturating_sub(1);
            let expected = format!("bytes {from}-{last}/{total}");
            let got = response
                .headers()
                .get(hyper::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if got != expected {
                return Err(other(
                    &url,
                    format!("206 with Content-Range {got:?}, expected {expected:?}"),
                ));
            }
            RangeReply::Partial
        } else {
            RangeReply::Full
        };
        Ok((reply, self.stream(response, url, deadline)))
    }

    fn stream(
        &self,
        response: hyper::Response<Incoming>,
        url: Url,
        deadline: Instant,
    ) -> TransportStream {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(pump(response.into_body(), tx, url, self.limits, deadline));
        Box::pin(ChannelStream(rx))
    }

    /// Sends the GET (with `Range: bytes=<from>-[<end-1>]` if asked) and
    /// returns a successful response's head and the transfer's deadline.
    async fn get(
        &self,
        url: &Url,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<(hyper::Response<Incoming>, Instant), TransportError> {
        let url = url.clone();
        match url.scheme() {
            "http" | "https" => {}
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url.as_str(),
                ));
            }
        }
        let limits = self.limits;
        let deadline = Instant::now() + limits.deadline;
        let late = |url: &Url| {
            other(
                url,
                FetchFailure::Deadline {
                    deadline: limits.deadline,
                },
            )
        };
        let host = url
            .host_str()
            .ok_or_else(|| other(&url, "URL has no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| other(&url, "URL has no port"))?;

        let tcp = tokio::time::timeout_at(
            deadline,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| late(&url))?
        .map_err(|e| other(&url, e))?;
        // Metadata files are small and requests few: Nagle only adds delay.
        tcp.set_nodelay(true).map_err(|e| other(&url, e))?;
        let mut sender = if url.scheme() == "https" {
            let Some(config) = self.tls.clone() else {
                return Err(other(
                    &url,
                    FetchFailure::Tls("https:// needs TLS trust anchors (a CA file)".into()),
                ));
            };
            let server_name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| other(&url, FetchFailure::Tls(format!("server name: {e}"))))?;
            let tls = tokio::time::timeout_at(
                deadline,
                tokio_rustls::TlsConnector::from(config).connect(server_name, tcp),
            )
            .await
            .map_err(|_| late(&url))?
            .map_err(|e| other(&url, FetchFailure::Tls(e.to_string())))?;
            handshake(tls, deadline, &url, late).await?
        } else {
            handshake(tcp, deadline, &url, late).await?
        };

        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, "bulwark-update");
        match range {
            Some((from, Some(end))) => {
                let last = end.saturating_sub(1);
                request = request.header(hyper::header::RANGE, format!("bytes={from}-{last}"));
            }
            Some((from, None)) => {
                request = request.header(hyper::header::RANGE, format!("bytes={from}-"));
            }
            None => {}
        }
        let request = request
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| other(&url, e))?;
        let response = tokio::time::timeout_at(deadline, sender.send_request(request))
            .await
            .map_err(|_| late(&url))?
            .map_err(|e| other(&url, e))?;
        let status = response.status();
        if status == hyper::StatusCode::NOT_FOUND || status == hyper::StatusCode::GONE {
            return Err(TransportError::new(
                TransportErrorKind::FileNotFound,
                url.as_str(),
            ));
        }
        if !status.is_success() {
            return Err(other(&url, format!("HTTP status {status}")));
        }
        Ok((response, deadline))
    }
}

/// HTTP/1.1 over `io`, the connection driven by its own task.
async fn handshake<IO>(
    io: IO,
    deadline: Instant,
    url: &Url,
    late: impl Fn(&Url) -> TransportError,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>, TransportError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| late(url))?
    .map_err(|e| other(url, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "update repository connection ended");
        }
    });
    Ok(sender)
}

/// Reads the body into the channel, refusing a transfer that misses the
/// deadline or moves fewer than `min_bytes_per_sec * rate_window` bytes in
/// any window. Time spent waiting for the consumer does not count against
/// the server.
async fn pump(
    mut body: Incoming,
    tx: mpsc::Sender<Result<Bytes, TransportError>>,
    url: Url,
    limits: RateLimits,
    deadline: Instant,
) {
    let window = limits.rate_window.max(Duration::from_millis(10));
    let needed = u64::try_from(
        u128::from(limits.min_bytes_per_sec).saturating_mul(window.as_millis()) / 1000,
    )
    .unwrap_or(u64::MAX);
    let mut window_start = Instant::now();
    let mut window_bytes: u64 = 0;
    loop {
        let window_end = window_start + window;
        let wake = window_end.min(deadline);
        match tokio::time::timeout_at(wake, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    window_bytes = window_bytes.saturating_add(data.len() as u64);
                    let before_send = Instant::now();
                    if tx.send(Ok(data)).await.is_err() {
                        return; // the consumer gave up
                    }
                    window_start += before_send.elapsed();
                }
            }
            Ok(Some(Err(e))) => {
                let _ = tx.send(Err(other(&url, e))).await;
                return;
            }
            Ok(None) => return,
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let failure = FetchFailure::Deadline {
                deadline: limits.deadline,
            };
            let _ = tx.send(Err(other(&url, failure))).await;
            return;
        }
        if now >= window_start + window {
            if window_bytes < needed {
                let failure = FetchFailure::Slow {
                    bytes: window_bytes,
                    window,
                    min_bytes_per_sec: limits.min_bytes_per_sec,
                };
                let _ = tx.send(Err(other(&url, failure))).await;
                return;
            }
            window_start = now;
            window_bytes = 0;
        }
    }
}
