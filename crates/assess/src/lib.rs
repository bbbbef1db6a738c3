//! Black-box conformance assessor: tests a device's management API over
//! the network, clause by clause of ISO/IEC 27402, and reports evidence.
//!
//! [`run`] takes a [`Target`] (the device's `https://host:port` and the
//! manufacturer root its certificate must chain to) and [`Options`], runs
//! every check and returns a [`Report`] of [`Finding`]s, each with its
//! clause, a [`Verdict`] and the evidence (what was sent, what came back).
//! [`Report::to_json`] and [`Report::to_markdown`] render it.
//!
//! ```no_run
//! # async fn assess(root: rustls_pki_types::CertificateDer<'static>) -> Result<(), assess::Error> {
//! let target = assess::Target {
//!     url: "https://192.0.2.10:8443".into(),
//!     manufacturer_root: vec![root],
//!     device_id: None,
//! };
//! let report = assess::run(&target, &assess::Options::default()).await?;
//! println!("{}", report.to_markdown());
//! assert!(!report.has_failures());
//! # Ok(()) }
//! ```
//!
//! The checks and their clauses:
//!
//! | check | clause | what |
//! |---|---|---|
//! | `device-certificate` | 5.2.5.1.1 | the certificate chains to the root and names a `urn:uuid:` |
//! | `tls-legacy-versions` | 5.2.5.1.1 | TLS 1.0 and 1.1 refused (openssl) |
//! | `tls12-weak-suites` | 5.2.5.1.1 | CBC, RSA key exchange, 3DES, RC4, NULL refused (openssl) |
//! | `tls13-accepted` | 5.2.5.1.1 | TLS 1.3 accepted (openssl) |
//! | `guarded-routes` | 5.2.6.1.1 | every non-public operation of the OpenAPI document refuses strangers |
//! | `anonymous-status` | 5.2.6.1.4 | status refused without credentials |
//! | `security-txt` | 5.1.3.1.1 | public, with `Contact:` and a future `Expires:` |
//! | `disclosure-summary` | 5.1.2.1.2 | public, `security_updates_until` in the future |
//! | `malformed-input` | 5.2.6.2 | broken JSON, unknown field, wrong type, 1 MiB: 4xx with an error body |
//! | `default-credentials` | 5.2.6.1.4 | five well-known pairs refused |
//!
//! Design decisions:
//! - Black box: the assessor knows only the URL, the manufacturer root
//!   and (optionally) the device identifier; the protected routes come from
//!   the device's own OpenAPI document, so a new route is assessed without
//!   a change here.
//! - A check never aborts the assessment: a probe that got no answer is an
//!   [`Verdict::Error`] finding with the reason; only an unusable target
//!   (bad URL, no trust anchor, nothing listening) is an [`Error`].
//! - Nothing is weakened to reach the device: every connection verifies
//!   the device certificate; old protocols and weak suites are offered only
//!   through `openssl s_client`, whose refusal must come from the device.
//! - The device's brute-force protection is respected: at most five login
//!   attempts, made last, so the slow-down they cause touches no other
//!   check; a 429 counts as a refusal there, elsewhere it is waited out.
//! - Evidence quotes the device's status and error code, never a token or
//!   a response body that could carry one; device text is sanitised.

mod checks;
mod client;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use report::{AssessedTarget, Finding, Report, Verdict};

/// The device to assess.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port` of the management API.
    pub url: String,
    /// Trust anchors for the device certificate (the manufacturer root).
    pub manufacturer_root: Vec<CertificateDer<'static>>,
    /// When given, the certificate must name `urn:uuid:<device_id>`.
    pub device_id: Option<String>,
}

/// How to assess.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Longest wait for one request, connection and handshake included.
    pub request_timeout: Duration,
    /// The `openssl` program for the TLS protocol and suite probes.
    pub openssl: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            openssl: PathBuf::from("openssl"),
        }
    }
}

impl Options {
    /// Uses `program` as `openssl` (a path, or a name looked up in `PATH`).
    pub fn with_openssl(mut self, program: impl Into<PathBuf>) -> Self {
        self.openssl = program.into();
        self
    }

    /// Sets the per-request time limit.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// Why a device could not be assessed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not `https://host:port`.
    #[error("target URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No usable trust anchor for the device certificate.
    #[error("manufacturer root: {0}")]
    TrustAnchor(String),
    /// Nothing answered at the address.
    #[error("cannot reach {authority}")]
    Unreachable {
        /// `host:port`.
        authority: String,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
}

/// `https://host:port[/]` → (`host:port`, host).
fn parse_url(url: &str) -> Result<(String, String), Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("the scheme must be https"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid("give only https://host:port, without a path"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("no user information in the URL"));
    }
    let port = authority
        .port_u16()
        .ok_or_else(|| invalid("the port is required (e.g. https://device:8443)"))?;
    let host = authority.host();
    Ok((format!("{host}:{port}"), host.to_owned()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Assesses `target`: every check once, in a fixed order, the default
/// credentials last.
///
/// # Errors
/// Only when the target cannot be assessed at all: an invalid URL, no
/// usable manufacturer root, or nothing accepting TCP connections at the
/// address. Everything else is a finding.
pub async fn run(target: &Target, options: &Options) -> Result<Report, Error> {
    let (authority, host) = parse_url(&target.url)?;
    let config = identity::tls::device_client_config(
        &target.manufacturer_root,
        target.device_id.as_deref(),
        None,
    )
    .map_err(|e| Error::TrustAnchor(e.to_string()))?;
    let http = client::Http::new(authority.clone(), &host, config, options.request_timeout)
        .map_err(|reason| Error::InvalidUrl {
            url: target.url.clone(),
            reason,
        })?;
    // Reachable at all? Otherwise every finding would be an error.
    match tokio::time::timeout(
        options.request_timeout,
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(source)) => return Err(Error::Unreachable { authority, source }),
        Err(_) => {
            return Err(Error::Unreachable {
                authority,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TCP connection within {:?}", options.request_timeout),
                ),
            });
        }
    }
    let started = OffsetDateTime::now_utc();
    let cx = checks::Context {
        target,
        options,
        http,
        now: started,
    };
    let mut findings = vec![
        checks::tls::device_certificate(&cx).await,
        checks::tls::legacy_versions(&cx).await,
        checks::tls::weak_tls12_suites(&cx).await,
        checks::tls::tls13(&cx).await,
        checks::routes::guarded_routes(&cx).await,
        checks::credentials::anonymous_status(&cx).await,
        checks::disclosure::security_txt(&cx).await,
        checks::disclosure::disclosure_summary(&cx).await,
        checks::input::malformed_input(&cx).await,
    ];
    // Last: the failed logins slow this source down for a while.
    findings.push(checks::credentials::default_credentials(&cx).await);
    Ok(Report {
        target: AssessedTarget {
            url: target.url.clone(),
            device_id: target.device_id.clone(),
            manufacturer_roots_sha256: target
                .manufacturer_root
                .iter()
                .map(|c| identity::x509::fingerprint(c.as_ref()))
                .collect(),
        },
        started: rfc3339(started),
        finished: rfc3339(OffsetDateTime::now_utc()),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_host_port_urls_are_accepted() {
        assert_eq!(
            parse_url("https://127.0.0.1:8443").unwrap(),
            ("127.0.0.1:8443".to_owned(), "127.0.0.1".to_owned())
        );
        assert_eq!(
            parse_url("https://[::1]:8443/").unwrap(),
            ("[::1]:8443".to_owned(), "[::1]".to_owned())
        );
        for bad in [
            "http://127.0.0.1:8443",
            "https://127.0.0.1",
            "https://127.0.0.1:8443/api",
            "https://u:p@127.0.0.1:8443",
            "127.0.0.1:8443",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
