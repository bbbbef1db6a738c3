//! The operator's HTTP endpoint: Prometheus metrics and quarantine.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /metrics` | [`Metrics::render`], `text/plain; version=0.0.4` |
//! | `GET /quarantine` | the quarantined devices, JSON |
//! | `POST /quarantine/<device>?secs=N` | quarantine by hand (no `secs`: until released) |
//! | `POST /quarantine/<device>/release` | release; 404 if it was not quarantined |
//!
//! A manual quarantine takes any device name: the policy is not
//! consulted, so a device can be held before it is added to the policy.
//!
//! It has no authentication of its own: it must listen on loopback or a
//! management interface only (the boot file refuses anything else
//! without `allow_remote`). Manual quarantines and releases are audited
//! with the admin client's address as the source.
//!
//! Plain hyper, HTTP/1.1 only, one route table in [`Admin::route`]: four
//! routes do not need a router, and the request body is never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::audit::{Audit, GatewayEvent, action};
use crate::limit::Quarantine;
use crate::metrics::{self, Metrics};

/// Longest a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may live.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// What the admin endpoint serves.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Counters of every proxy.
    pub metrics: Arc<Metrics>,
    /// The quarantine state the proxies enforce.
    pub quarantine: Arc<Quarantine>,
    /// Where manual quarantines and releases are recorded.
    pub audit: Arc<dyn Audit>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string())
}

/// `%XX` decoding of one path segment; `None` if malformed or not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Admin {
    /// Serves until the returned future is dropped (which also ends every
    /// connection it started).
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept(), if tasks.len() < MAX_CONNECTIONS => match accepted {
                    Ok((tcp, peer)) => {
                        let this = self.clone();
                        tasks.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let this = this.clone();
                                async move { Ok::<_, Infallible>(this.route(&req, peer)) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_TIMEOUT)
                                .serve_connection(TokioIo::new(tcp), service);
                            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    /// Answers one request.
    pub fn route(&self, req: &Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = req.uri().path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let now = Instant::now();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["metrics"]) => reply(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                self.metrics.render(&self.quarantine.list(now)),
            ),
            (&Method::GET, ["quarantine"]) => json(
                StatusCode::OK,
                &serde_json::json!(self.quarantine.list(now)),
            ),
            (&Method::POST, ["quarantine", device]) => {
                let Some(device) = percent_decode(device).filter(|d| !d.is_empty()) else {
                    return text(StatusCode::BAD_REQUEST, "bad device name");
                };
                let secs = req
                    .uri()
                    .query()
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|kv| kv.strip_prefix("secs="));
                let duration = match secs.map(str::parse::<u64>) {
                    None => None,
                    Some(Ok(s)) if (1..=365 * 86_400).contains(&s) => Some(Duration::from_secs(s)),
                    Some(_) => return text(StatusCode::BAD_REQUEST, "secs must be 1..=31536000"),
                };
                let reason = format!("operator at {peer}");
                if let Err(e) = self
                    .quarantine
                    .quarantine_manual(&device, duration, &reason, now)
                {
                    tracing::error!(error = %e, "manual quarantine not saved");
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "quarantine not saved");
                }
                self.audit.record(GatewayEvent {
                    action: action::QUARANTINE_MANUAL,
                    device: Some(device.clone()),
                    peer,
                    reason: None,
                    detail: duration.map_or("until released".into(), |d| format!("for {d:?}")),
                });
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "quarantined": device }),
                )
            }
            (&Method::POST, ["quarantine", device, "release"]) => {
                let Some(device) = percent_decode(device) else {
                    return text(StatusCode::BAD_REQUEST, "bad device name");
                };
                match self.quarantine.release(&device, now) {
                    Ok(true) => {
                        self.audit.record(GatewayEvent {
                            action: action::QUARANTINE_RELEASE,
                            device: Some(device.clone()),
                            peer,
                            reason: None,
                            detail: "released by the operator".into(),
                        });
                        json(StatusCode::OK, &serde_json::json!({ "released": device }))
                    }
                    Ok(false) => text(StatusCode::NOT_FOUND, "not quarantined"),
                    Err(e) => {
                        tracing::error!(error = %e, "release not saved");
                        text(StatusCode::INTERNAL_SERVER_ERROR, "release not saved")
                    }
                }
            }
            (_, ["metrics"] | ["quarantine", ..]) => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("unit%207").as_deref(), Some("unit 7"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
