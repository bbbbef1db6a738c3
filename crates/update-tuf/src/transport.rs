//! Our HTTP transport for tough: hyper over plain TCP, with a deadline per
//! file and a minimum transfer rate (TUF's slow-retrieval defence). tough
//! bounds each file's length itself (endless-data defence).

use std::pin::Pin;
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

/// tough [`Transport`] for `http://` (with rate and deadline limits) and
/// `file://` (a local mirror, such as removable media).
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    limits: RateLimits,
}

impl HttpTransport {
    pub(crate) fn new(limits: RateLimits) -> Self {
        Self { limits }
    }
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

#[tough::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "file" => return FilesystemTransport.fetch(url).await,
            "http" => {}
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
        let (mut sender, conn) = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)),
        )
        .await
        .map_err(|_| late(&url))?
        .map_err(|e| other(&url, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "update repository connection ended");
            }
        });

        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, "bulwark-update")
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

        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(pump(response.into_body(), tx, url, limits, deadline));
        Ok(Box::pin(ChannelStream(rx)))
    }
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
