//! 5.2.5.1.1: data in transit is protected. Protocol versions and cipher
//! suites are probed with `openssl s_client`, which (unlike rustls) can
//! still offer what a device must refuse; the device certificate is
//! checked with the same verifier a Bulwark client uses.

use std::process::Stdio;
use std::time::Duration;

use super::{Context, describe_failure};
use crate::report::{Finding, Verdict};

/// How long one `openssl s_client` run may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The client offers everything it has, so that a refusal is the device's.
const ANY_SUITE: &str = "ALL:@SECLEVEL=0";

/// TLS 1.2 suites a device must not accept, each with why.
const WEAK_TLS12: [(&str, &str); 5] = [
    (
        "AES128-SHA:AES256-SHA:@SECLEVEL=0",
        "CBC with RSA key exchange",
    ),
    (
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:@SECLEVEL=0",
        "CBC with ECDHE",
    ),
    (
        "AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0",
        "RSA key exchange (no forward secrecy)",
    ),
    (
        "ECDHE-RSA-DES-CBC3-SHA:DES-CBC3-SHA:RC4-SHA:RC4-MD5:@SECLEVEL=0",
        "3DES or RC4",
    ),
    (
        "NULL-SHA:NULL-SHA256:ECDHE-ECDSA-NULL-SHA:eNULL:@SECLEVEL=0",
        "NULL encryption",
    ),
];

/// What one `openssl s_client` run saw.
#[derive(Debug)]
struct Probe {
    command: String,
    exit_ok: bool,
    output: String,
}

impl Probe {
    /// The TCP connection was made (a failure after it is the device's).
    fn connected(&self) -> bool {
        self.output.contains("CONNECTED(")
    }

    /// This openssl build has none of the suites asked for (3DES and RC4
    /// are gone from OpenSSL 3 builds): nothing was offered to the device.
    fn unavailable(&self) -> bool {
        !self.connected() && self.output.contains("no cipher match")
    }

    /// A cipher was negotiated.
    fn negotiated(&self) -> bool {
        self.exit_ok
            && self.output.contains("Cipher is ")
            && !self.output.contains("Cipher is (NONE)")
    }

    /// What was negotiated or why not, in one line.
    fn outcome(&self) -> String {
        if self.negotiated() {
            let line = self
                .output
                .lines()
                .find(|l| l.contains("Cipher is "))
                .unwrap_or("a cipher");
            return format!("ACCEPTED: {}", crate::client::quote(line.trim()));
        }
        if !self.connected() {
            return "no TCP connection".into();
        }
        let reason = self
            .output
            .lines()
            .find(|l| l.contains("alert") || l.contains("no protocols") || l.contains("no cipher"))
            .or_else(|| self.output.lines().find(|l| l.contains("error")))
            .map(|l| {
                // `4007...:error:0A00042E:SSL routines:...:tlsv1 alert protocol version:...`
                // keep the reason, drop the process-specific prefix.
                l.split(':')
                    .filter(|p| !p.is_empty())
                    .nth(5)
                    .map_or_else(|| l.trim().to_owned(), |r| r.trim().to_owned())
            })
            .unwrap_or_else(|| "no cipher negotiated".into());
        format!("refused ({})", crate::client::quote(&reason))
    }
}

/// Why the TLS probes could not run.
#[derive(Debug)]
enum ProbeFailure {
    /// openssl is not installed (or not at the configured path).
    NotInstalled(String),
    /// It ran but did not finish or could not be started.
    Failed(String),
}

impl ProbeFailure {
    fn finding(&self, check: &str, title: &str) -> Finding {
        let line = match self {
            Self::NotInstalled(program) => format!(
                "{program} not found: install the `openssl` package (Debian: apt-get install openssl) to run the TLS probes"
            ),
            Self::Failed(why) => why.clone(),
        };
        tls_finding(check, title, Verdict::Error, vec![line])
    }
}

fn tls_finding(check: &str, title: &str, verdict: Verdict, evidence: Vec<String>) -> Finding {
    Finding::new("5.2.5.1.1", &["5.2.5.1.4"], check, title, verdict, evidence)
}

async fn s_client(cx: &Context<'_>, args: &[&str]) -> Result<Probe, ProbeFailure> {
    let program = cx.options.openssl.display().to_string();
    let mut command = tokio::process::Command::new(&cx.options.openssl);
    command
        .args(["s_client", "-connect", &cx.http.authority])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("openssl s_client {}", args.join(" "));
    let output = match tokio::time::timeout(PROBE_TIMEOUT, command.output()).await {
        Err(_) => {
            return Err(ProbeFailure::Failed(format!(
                "{shown}: did not finish in {} s",
                PROBE_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProbeFailure::NotInstalled(program));
        }
        Ok(Err(e)) => return Err(ProbeFailure::Failed(format!("{shown}: {e}"))),
        Ok(Ok(output)) => output,
    };
    Ok(Probe {
        command: shown,
        exit_ok: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Runs `probes`, each of which must be refused (`want_refused`) or
/// accepted; a probe that never reached the device is an error.
async fn expect(
    cx: &Context<'_>,
    check: &str,
    title: &str,
    want_refused: bool,
    probes: &[Vec<&str>],
) -> Finding {
    let mut evidence = Vec::new();
    let (mut wrong, mut unreached, mut probed) = (false, false, 0usize);
    for args in probes {
        let probe = match s_client(cx, args).await {
            Ok(p) => p,
            Err(failure) => return failure.finding(check, title),
        };
        if probe.unavailable() {
            evidence.push(format!(
                "{} → not probed: this openssl offers none of these suites",
                probe.command
            ));
            continue;
        }
        probed += 1;
        if !probe.connected() {
            unreached = true;
        } else if probe.negotiated() == want_refused {
            wrong = true;
        }
        evidence.push(format!("{} → {}", probe.command, probe.outcome()));
    }
    let verdict = if wrong {
        Verdict::Fail
    } else if unreached || probed == 0 {
        Verdict::Error
    } else {
        Verdict::Pass
    };
    tls_finding(check, title, verdict, evidence)
}

/// TLS 1.0 and 1.1 are refused, even with every suite offered.
pub(crate) async fn legacy_versions(cx: &Context<'_>) -> Finding {
    expect(
        cx,
        "tls-legacy-versions",
        "TLS 1.0 and 1.1 are refused",
        true,
        &[
            vec!["-tls1", "-cipher", ANY_SUITE],
            vec!["-tls1_1", "-cipher", ANY_SUITE],
        ],
    )
    .await
}

/// TLS 1.2 with CBC, RSA key exchange, 3DES, RC4 or NULL is refused (a
/// device that offers only TLS 1.3 refuses them all).
pub(crate) async fn weak_tls12_suites(cx: &Context<'_>) -> Finding {
    let probes: Vec<Vec<&str>> = WEAK_TLS12
        .iter()
        .map(|(suites, _)| vec!["-tls1_2", "-cipher", *suites])
        .collect();
    let mut finding = expect(
        cx,
        "tls12-weak-suites",
        "TLS 1.2 with CBC, RSA key exchange, 3DES, RC4 or NULL suites is refused",
        true,
        &probes,
    )
    .await;
    // Say what each probe stood for, in the same order.
    if finding.evidence.len() == WEAK_TLS12.len() {
        for (line, (_, why)) in finding.evidence.iter_mut().zip(WEAK_TLS12) {
            *line = format!("{why}: {line}");
        }
    }
    finding
}

/// TLS 1.3 is accepted.
pub(crate) async fn tls13(cx: &Context<'_>) -> Finding {
    expect(
        cx,
        "tls13-accepted",
        "TLS 1.3 is accepted",
        false,
        &[vec!["-tls1_3"]],
    )
    .await
}

/// The device certificate chains to the manufacturer root (and names the
/// expected device, when one is given) and carries a `urn:uuid:` identity.
pub(crate) async fn device_certificate(cx: &Context<'_>) -> Finding {
    let title =
        "The device certificate chains to the manufacturer root and carries a urn:uuid: identity";
    let mut evidence = vec![match &cx.target.device_id {
        Some(id) => format!(
            "TLS handshake verifying the chain to the manufacturer root and the name urn:uuid:{}",
            crate::client::quote(id)
        ),
        None => "TLS handshake verifying the chain to the manufacturer root".to_owned(),
    }];
    let handshake = match cx.http.handshake().await {
        Ok(h) => h,
        Err(e) => {
            let verdict = match &e {
                // The device answered with a certificate the root does not
                // vouch for (or not for this device).
                crate::client::ProbeError::Handshake(_) => Verdict::Fail,
                _ => Verdict::Error,
            };
            evidence.push(format!("→ {}", describe_failure(&e)));
            return tls_finding("device-certificate", title, verdict, evidence);
        }
    };
    evidence.push(format!(
        "→ verified; {} with {}",
        handshake.protocol.as_deref().unwrap_or("unknown protocol"),
        handshake.cipher_suite.as_deref().unwrap_or("unknown suite")
    ));
    let Some(leaf) = handshake.peer_certificates.first() else {
        evidence.push("the device presented no certificate".into());
        return tls_finding("device-certificate", title, Verdict::Fail, evidence);
    };
    match identity::x509::summarize(leaf.as_ref()) {
        Ok(summary) => {
            evidence.push(format!(
                "subject: {}",
                crate::client::quote(&summary.subject)
            ));
            evidence.push(format!("issuer: {}", crate::client::quote(&summary.issuer)));
            evidence.push(format!("SHA-256: {}", summary.sha256));
            evidence.push(format!(
                "valid {} to {}",
                summary.not_before, summary.not_after
            ));
            let uris: Vec<String> = summary
                .uris
                .iter()
                .map(|u| crate::client::quote(u))
                .collect();
            evidence.push(format!("URI names: {}", uris.join(", ")));
            let identity = summary
                .uris
                .iter()
                .any(|u| u.strip_prefix("urn:uuid:").is_some_and(|id| !id.is_empty()));
            if identity {
                tls_finding("device-certificate", title, Verdict::Pass, evidence)
            } else {
                evidence.push("no urn:uuid: URI name: the unit is not identified".into());
                tls_finding("device-certificate", title, Verdict::Fail, evidence)
            }
        }
        Err(e) => {
            evidence.push(format!(
                "the certificate does not parse: {}",
                crate::client::quote(&e.to_string())
            ));
            tls_finding("device-certificate", title, Verdict::Fail, evidence)
        }
    }
}
