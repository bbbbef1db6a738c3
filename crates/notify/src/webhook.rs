//! Delivery to an HTTPS webhook: one POST per notification on a fresh TLS
//! connection, confirmed by a 2xx answer.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::Error;
use crate::hub::Webhook;

/// A webhook URL, parsed once when the hub is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// Host as written, without brackets for IPv6 (what we connect to).
    host: String,
    port: u16,
    /// The `Host` header value (`host` or `host:port`, IPv6 bracketed).
    authority: String,
    /// Origin-form request target: path and query.
    path: Uri,
    server_name: ServerName<'static>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidWebhookUrl {
        reason: reason.into(),
    }
}

impl Target {
    /// Parses `https://host[:port][/path][?query]`. Refuses anything else
    /// (other schemes, user info, fragments) rather than guessing.
    fn parse(url: &str) -> Result<Target, Error> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| invalid("it must start with https://"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.contains('@') {
            return Err(invalid("user info (user:password@) is not supported"));
        }
        if path.contains('#') {
            return Err(invalid("it must not have a fragment (#)"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("an IPv6 address lacks its closing ]"))?;
            match after {
                "" => (host, None),
                port => (
                    host,
                    Some(
                        port.strip_prefix(':')
                            .ok_or_else(|| invalid("unexpected text after the IPv6 address"))?,
                    ),
                ),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("the host is empty"));
        }
        let port = match port {
            None => 443,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(invalid("the port is not a number from 1 to 65535")),
            },
        };
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|_| invalid("the host is not a valid DNS name or IP address"))?;
        let path = path
            .parse::<Uri>()
            .map_err(|_| invalid("the path has characters that are not allowed in a URL"))?;
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
            server_name,
        })
    }
}

/// A webhook ready to take POSTs.
pub(crate) struct WebhookLink {
    target: Target,
    tls: TlsConnector,
    name: String,
}

impl WebhookLink {
    pub(crate) fn new(hub: &Webhook) -> Result<WebhookLink, Error> {
        let target = Target::parse(&hub.url)?;
        // Errors name the endpoint without its path: the path may be a
        // token.
        let name = match target.authority.rsplit_once(':') {
            Some(_) if target.authority.ends_with(']') => {
                format!("{}:{}", target.authority, target.port)
            }
            Some(_) => target.authority.clone(),
            None => format!("{}:{}", target.authority, target.port),
        };
        Ok(WebhookLink {
            target,
            tls: TlsConnector::from(Arc::clone(&hub.tls)),
            name,
        })
    }

    /// `host:port`, for logs and errors.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// POSTs `payload` and checks the answer's status.
    pub(crate) async fn deliver(&mut self, payload: &[u8]) -> Result<(), Error> {
        let hub = || self.name.clone();
        let tcp = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| Error::Unreachable { hub: hub(), source })?;
        // Nagle would hold back the body behind the headers.
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.target.server_name.clone(), tcp)
            .await
            .map_err(|source| Error::TlsHandshake { hub: hub(), source })?;
        let http = |e: hyper::Error| Error::WebhookHttp {
            hub: hub(),
            reason: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.target.path.clone())
            .header(HOST, self.target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("bulwark-notify/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::copy_from_slice(payload)))
            .map_err(|e| Error::WebhookHttp {
                hub: hub(),
                reason: e.to_string(),
            })?;
        // The connection future does the I/O; it runs here, beside the
        // request, instead of in a task of its own that could outlive a
        // timed-out delivery. Only the status matters: the body is left
        // unread and the connection dropped.
        tokio::pin!(connection);
        let response = tokio::select! {
            response = sender.send_request(request) => response.map_err(http)?,
            closed = &mut connection => {
                return Err(Error::WebhookHttp {
                    hub: hub(),
                    reason: match closed {
                        Ok(()) => "the server closed the connection before answering".into(),
                        Err(e) => e.to_string(),
                    },
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Error::WebhookStatus {
                hub: hub(),
                status: status.as_u16(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path_and_query() {
        let t = Target::parse("https://hub.local:8443/hooks/abc?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("hub.local", 8443));
        assert_eq!(t.authority, "hub.local:8443");
        assert_eq!(t.path, "/hooks/abc?x=1");

        let t = Target::parse("https://127.0.0.1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.to_string().as_str()),
            ("127.0.0.1", 443, "/")
        );

        let t = Target::parse("https://[::1]:9000/n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.authority, "[::1]:9000");

        let t = Target::parse("https://hub?token=s").unwrap();
        assert_eq!(t.path, "/?token=s");
    }

    #[test]
    fn refuses_what_it_cannot_use_without_echoing_the_url() {
        for url in [
            "http://hub.local/x",
            "hub.local/x",
            "https:///x",
            "https://user:secret@hub.local/x",
            "https://hub.local:0/x",
            "https://hub.local:99999/x",
            "https://hub.local:port/x",
            "https://[::1/x",
            "https://[::1]x/x",
            "https://hub.local/x#frag",
            "https://hub.local/a b",
            "https://bad_host!/x",
        ] {
            let error = Target::parse(url).expect_err(url).to_string();
            assert!(
                !error.contains("secret") && !error.contains("/x"),
                "{url}: {error}"
            );
        }
    }
}
