//! A small HTTPS client for probing the device: one TLS connection per
//! request (so no probe depends on another's session or connection
//! state), every request bounded in time, response bodies bounded in size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// The most of a response body the assessor reads.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The most an answer from the device is quoted in evidence.
const MAX_QUOTE: usize = 160;

/// Retries of a request the device rate-limited (429), and the longest
/// `Retry-After` honoured.
const RATE_LIMIT_RETRIES: usize = 3;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    /// `host:port`, as given in the target URL.
    pub(crate) authority: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

/// A response, its body read (up to [`MAX_RESPONSE_BYTES`]).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a probe got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("TCP connection to {authority} failed: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the TLS handshake established.
#[derive(Debug)]
pub(crate) struct Handshake {
    pub(crate) protocol: Option<String>,
    pub(crate) cipher_suite: Option<String>,
    pub(crate) peer_certificates: Vec<CertificateDer<'static>>,
}

impl Reply {
    /// The body as JSON, if it is JSON.
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The device's error body (`{"error": .., "message": ..}`), if that is
    /// what came back: its `error` code.
    pub(crate) fn error_code(&self) -> Option<String> {
        let body = self.json()?;
        let code = body.get("error")?.as_str()?;
        body.get("message")?.as_str()?;
        Some(quote(code))
    }

    /// The status and, for an error body, its code: `401 invalid-credentials`.
    pub(crate) fn summary(&self) -> String {
        match self.error_code() {
            Some(code) => format!("{} {code}", self.status.as_u16()),
            None => format!(
                "{} ({} bytes{})",
                self.status.as_u16(),
                self.body.len(),
                self.headers
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|t| format!(", {}", quote(t)))
                    .unwrap_or_default()
            ),
        }
    }
}

/// Device-supplied text made safe to quote: printable, single-line, short.
pub(crate) fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_QUOTE)
        .collect();
    if text.chars().count() > MAX_QUOTE {
        out.push('…');
    }
    out
}

impl Http {
    pub(crate) fn new(
        authority: String,
        host: &str,
        config: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, String> {
        // Device certificates name the unit, not a host: the name given
        // here only selects SNI; the verifier checks the device identity.
        let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| format!("{host:?} is not a host name or address: {e}"))?;
        Ok(Self {
            authority,
            server_name,
            config: Arc::new(config),
            timeout,
        })
    }

    async fn connect(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ProbeError> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| ProbeError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(ProbeError::Handshake)
    }

    /// A TLS handshake only, reporting what was negotiated.
    pub(crate) async fn handshake(&self) -> Result<Handshake, ProbeError> {
        let tls = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| ProbeError::Timeout(self.timeout))??;
        let (_, connection) = tls.get_ref();
        Ok(Handshake {
            protocol: connection.protocol_version().map(|v| format!("{v:?}")),
            cipher_suite: connection
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
            peer_certificates: connection
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        })
    }

    /// One request on a new connection, without credentials.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ProbeError> {
        tokio::time::timeout(self.timeout, self.exchange(method, path, headers, body))
            .await
            .map_err(|_| ProbeError::Timeout(self.timeout))?
    }

    /// Like [`Self::send`], but waits out the device's rate limit (429 with
    /// `Retry-After`) a few times, so a probe's answer is about the probe.
    pub(crate) async fn send_patiently(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ProbeError> {
        let mut attempt = 0;
        loop {
            let reply = self
                .send(method.clone(), path, headers, body.clone())
                .await?;
            if reply.status != StatusCode::TOO_MANY_REQUESTS || attempt == RATE_LIMIT_RETRIES {
                return Ok(reply);
            }
            attempt += 1;
            let wait = reply
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs)
                .min(MAX_RETRY_AFTER);
            tracing::debug!(%path, ?wait, "rate limited; waiting");
            tokio::time::sleep(wait).await;
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, ProbeError> {
        let tls = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ProbeError::Http(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ProbeError::Http(format!("building the request: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ProbeError::Http(e.to_string()))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ProbeError::Http(format!("reading the response body: {e}")))?
                .to_bytes();
            Ok(Reply {
                status,
                headers,
                body,
            })
        }
        .await;
        driver.abort();
        result
    }
}
