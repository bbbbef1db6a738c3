//! A client of a device agent's management API, for the device-side
//! commands (`bulwark update ...`). They go through the API rather than
//! the state directory so that the agent stays the one writer of slots
//! and settings, and its access control and audit log apply to the
//! command line as to any other client (5.2.7.1.2).
//!
//! One TLS connection carries the login and every later request: the
//! agent binds a session token to the connection that logged in. The
//! device certificate is checked against the manufacturer root and the
//! device's identifier (both read from the local state directory by
//! default), not against a host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use zeroize::Zeroizing;

/// Largest answer read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How long one request may take (an install itself is polled, not
/// awaited).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the agent is and who is asking.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// The agent's management API.
    #[arg(long, env = "BULWARK_URL", default_value = "https://127.0.0.1:8443")]
    url: String,
    /// PEM file of the manufacturer root the device certificate chains to
    /// (default: the root in the state directory's identity).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The device identifier its certificate must name (default: the
    /// state directory's identity; with --ca and no --device-id, any
    /// device of that manufacturer is accepted).
    #[arg(long)]
    device_id: Option<String>,
    /// Account to log in as.
    #[arg(long, short = 'u', env = "BULWARK_USER", default_value = "owner")]
    user: String,
    /// File holding the account's password (first line); without it the
    /// password is asked for on the terminal.
    #[arg(long, env = "BULWARK_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The password: from the file, else typed at the terminal (not
    /// echoed).
    pub(crate) fn password(&self) -> Result<Zeroizing<String>> {
        if let Some(path) = &self.password_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the password file {}", path.display()))?,
            );
            let line = text.lines().next().unwrap_or_default();
            if line.is_empty() {
                bail!("the password file {} is empty", path.display());
            }
            return Ok(Zeroizing::new(line.to_owned()));
        }
        let typed = rpassword::prompt_password(format!("password for {}: ", self.user))
            .context("reading the password from the terminal (or give --password-file)")?;
        Ok(Zeroizing::new(typed))
    }
}

/// An answer from the agent.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Reply {
    /// The body, if the status is the expected one; else the agent's
    /// error message as the error.
    pub(crate) fn expect(self, what: &str, expected: &[StatusCode]) -> Result<Value> {
        if expected.contains(&self.status) {
            return Ok(self.body);
        }
        let message = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| self.body.to_string(), str::to_owned);
        Err(anyhow!(
            "{what}: the agent answered {}: {message}",
            self.status
        ))
    }
}

/// A logged-in connection to the agent.
pub(crate) struct ApiClient {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    token: Option<Zeroizing<String>>,
}

impl ApiClient {
    /// Connects and logs in, asking for the password.
    pub(crate) async fn login(state_dir: &Path, args: &ConnectArgs) -> Result<Self> {
        let password = args.password()?;
        Self::login_with(state_dir, args, &password).await
    }

    /// Connects and logs in with `password` (which the caller also needs,
    /// to re-enter it for an action that interrupts the device).
    pub(crate) async fn login_with(
        state_dir: &Path,
        args: &ConnectArgs,
        password: &str,
    ) -> Result<Self> {
        let mut client = Self::connect(state_dir, args).await?;
        #[derive(serde::Serialize)]
        struct Login<'a> {
            account: &'a str,
            password: &'a str,
        }
        let body = Zeroizing::new(serde_json::to_vec(&Login {
            account: &args.user,
            password,
        })?);
        let reply = client
            .send(Method::POST, "/api/v1/session", &[], Some(&body))
            .await?;
        let session = reply.expect(&format!("logging in as {}", args.user), &[StatusCode::OK])?;
        let token = session
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the agent's login answer has no token"))?;
        client.token = Some(Zeroizing::new(token.to_owned()));
        Ok(client)
    }

    async fn connect(state_dir: &Path, args: &ConnectArgs) -> Result<Self> {
        let authority = authority(&args.url)?;
        let (anchors, device_id) = trust(state_dir, args)?;
        let config = identity::tls::device_client_config(&anchors, device_id.as_deref(), None)
            .context("TLS client configuration")?;
        let tcp = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio::net::TcpStream::connect(authority.as_str()),
        )
        .await
        .map_err(|_| anyhow!("connecting to {authority}: no answer"))?
        .with_context(|| format!("connecting to {authority} (is the agent running?)"))?;
        // Device certificates name the unit, not a host: the name sent
        // only fills SNI; the verifier checks the device identifier.
        let server_name = ServerName::try_from("device")
            .map_err(|e| anyhow!("server name: {e}"))?
            .to_owned();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {authority}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection to the agent ended");
            }
        });
        Ok(Self {
            sender,
            host: authority,
            token: None,
        })
    }

    /// Sends a request with an optional JSON body.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&[u8]>,
    ) -> Result<Reply> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", self.host.as_str());
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {}", token.as_str()));
        }
        if json.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = Full::new(Bytes::copy_from_slice(json.unwrap_or_default()));
        let request = builder.body(body).context("building the request")?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the answer: {e}"))?
                .to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path}"))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{method} {path}: the answer is not JSON"))?
        };
        Ok(Reply { status, body })
    }
}

/// `host:port` of an `https://` URL.
fn authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("--url {url}: the management API is https://host:port"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("--url {url}: give only https://host:port");
    }
    Ok(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:443")
        },
    )
}

/// The roots to trust and the device identifier to expect.
fn trust(
    state_dir: &Path,
    args: &ConnectArgs,
) -> Result<(Vec<CertificateDer<'static>>, Option<String>)> {
    if let Some(path) = &args.ca {
        let pem =
            std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
        let roots = identity::x509::certs_from_pem(&path.display().to_string(), &pem)
            .with_context(|| format!("--ca {}", path.display()))?;
        if roots.is_empty() {
            bail!("--ca {}: no certificate in it", path.display());
        }
        return Ok((roots, args.device_id.clone()));
    }
    let unit = identity::provision::load(state_dir).with_context(|| {
        format!(
            "reading this device's identity in {} to trust its agent (or give --ca and --device-id)",
            state_dir.display()
        )
    })?;
    let root = unit
        .chain
        .last()
        .cloned()
        .ok_or_else(|| anyhow!("the identity in {} has no root", state_dir.display()))?;
    let device_id = args
        .device_id
        .clone()
        .unwrap_or_else(|| unit.record.device_id.clone());
    Ok((vec![root], Some(device_id)))
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn authority_takes_host_and_port_of_https_urls_only() {
        assert_eq!(
            authority("https://127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443"
        );
        assert_eq!(authority("https://[::1]:8443/").unwrap(), "[::1]:8443");
        assert_eq!(
            authority("https://device.local").unwrap(),
            "device.local:443"
        );
        assert!(authority("http://127.0.0.1:8443").is_err());
        assert!(authority("https://127.0.0.1:8443/api").is_err());
        assert!(authority("https://").is_err());
    }
}
