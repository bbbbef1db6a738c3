//! Schemathesis (an independent OpenAPI fuzzer, from PyPI; installed by
//! `scripts/test.sh`) against a real agent on loopback: every operation of
//! the served document, with valid and invalid inputs, must answer without
//! a server error and as the document says.
//!
//! Sessions are bound to the TLS connection that logged in, and
//! schemathesis opens its own connections, so it authenticates as a
//! machine client: a service certificate from the manufacturer's issuing
//! CA, the manufacturer root as service anchor, and a `[[services]]`
//! entry granting every permission.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agent_config::{PERMISSIONS, ServiceEntry};
use identity::x509::to_pem;
use keys::{Algorithm, PublicKey};
use support::Device;

/// The pinned version `scripts/test.sh` installs.
const PINNED: &str = "4.32.5";
/// The machine client's certificate common name.
const SERVICE: &str = "schemathesis-fuzzer";
/// Hard ceiling on the whole schemathesis run.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The `schemathesis` command: on `PATH`, or next to the `python3` that
/// has the package (pip's scripts directory is not always on `PATH`).
fn schemathesis() -> Option<PathBuf> {
    let works = |cmd: &Path| {
        std::process::Command::new(cmd)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = PathBuf::from("schemathesis");
    if works(&on_path) {
        return Some(on_path);
    }
    let scripts = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let candidate =
        PathBuf::from(String::from_utf8(scripts.stdout).ok()?.trim()).join("schemathesis");
    works(&candidate).then_some(candidate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(command) = schemathesis() else {
        panic!(
            "schemathesis is not installed: run scripts/test.sh, or \
             `python3 -m pip install schemathesis=={PINNED}`"
        );
    };
    let version = std::process::Command::new(&command)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    eprintln!("using {version} ({})", command.display());

    let device = Device::provision();
    let dir = device.path().join("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();

    // The machine client: a P-256 key as a PEM file schemathesis can load,
    // certified by the manufacturer's issuing CA.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = PublicKey::from_spki_der(
        Algorithm::EcdsaP256Sha256,
        rcgen::PublicKeyData::subject_public_key_info(&key),
    );
    let cert = device.ca.issue_service(SERVICE, &[], &public, 1).unwrap();
    let cert_file = dir.join("client.pem");
    let key_file = dir.join("client.key");
    std::fs::write(&cert_file, to_pem(&cert) + &to_pem(device.ca.issuing())).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let anchor_file = dir.join("service-anchor.pem");
    std::fs::write(&anchor_file, to_pem(&device.root())).unwrap();

    let mut file = device.file();
    file.tls.service_anchors = vec![anchor_file];
    file.services = vec![ServiceEntry {
        identity: SERVICE.to_owned(),
        grants: PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
    }];
    // One client sends every request: the per-client limit would
    // otherwise answer 429 after the burst.
    file.api.per_client_rps = 10_000;
    file.api.per_client_burst = 10_000;
    file.validate().unwrap();
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();

    std::fs::write(dir.join("schemathesis.toml"), CONFIG).unwrap();

    // As the machine client: every operation reachable, all checks but
    // `ignored_auth` (schemathesis can only take away the bearer header,
    // not the client certificate, so every answer would look like
    // ignored authentication).
    let client = (cert_file.as_path(), key_file.as_path());
    let authenticated = run(&command, &dir, addr, Some(client), &["ignored_auth"]).await;
    // Anonymously: the guard must refuse every protected operation, with
    // no credentials and with generated ones; all checks.
    let anonymous = run(&command, &dir, addr, None, &[]).await;
    agent.shutdown().await;

    for (what, output) in [("machine client", authenticated), ("anonymous", anonymous)] {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "schemathesis ({what}) found problems ({}):\n{stdout}\n{stderr}",
            output.status
        );
        assert!(
            every_selected_operation_tested(&stdout),
            "schemathesis ({what}) did not test every selected operation:\n{stdout}"
        );
        eprintln!("== schemathesis, {what}:\n{stdout}");
    }
}

/// Whether the summary's `Selected: N/M` operations were all `Tested: N`.
fn every_selected_operation_tested(stdout: &str) -> bool {
    let after = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|rest| rest.trim().to_owned())
    };
    let selected = after("Selected:").and_then(|s| s.split('/').next().map(str::to_owned));
    let tested = after("Tested:");
    selected.is_some_and(|n| n != "0" && Some(n) == tested)
}

/// Business rules a JSON schema cannot state: a schema-valid request may
/// still be refused with a documented 4xx (password strength beyond its
/// length, a bundle's signature, a stale or made-up ETag). Everywhere else
/// schemathesis's defaults apply.
const CONFIG: &str = r#"
[[operations]]
include-path-regex = "^/api/v1/(setup/claim|accounts|account/password|config/bundle)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-path = "/api/v1/config"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "412", "428", "429"]
# A missing If-Match is 428 Precondition Required (RFC 6585), as documented.
checks.missing_required_header.expected-statuses = ["400", "401", "403", "406", "415", "422", "428"]
"#;

/// One schemathesis run, bounded by [`RUN_LIMIT`]; killed if it overruns.
async fn run(
    command: &Path,
    dir: &Path,
    addr: std::net::SocketAddr,
    client: Option<(&Path, &Path)>,
    exclude_checks: &[&str],
) -> std::process::Output {
    let mut run = tokio::process::Command::new(command);
    run.current_dir(dir)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("https://{addr}/api/v1/openapi.json"))
        .args(["--url", &format!("https://{addr}")])
        .args(["--checks", "all"])
        .args(["--exclude-path", "/api/v1/notifications/stream"])
        .args(["--max-examples", "50"])
        .args(["--workers", "1"])
        .args(["--seed", "27402"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        // Device certificates name the unit (urn:uuid), not a host.
        .args(["--tls-verify", "false"])
        .args(["--no-color", "--output-truncate", "false"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !exclude_checks.is_empty() {
        run.args(["--exclude-checks", &exclude_checks.join(",")]);
    }
    if let Some((cert, key)) = client {
        run.arg("--request-cert")
            .arg(cert)
            .arg("--request-cert-key")
            .arg(key);
    }
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, run.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_LIMIT:?}"))
        .unwrap();
    eprintln!(
        "schemathesis ({}) finished in {:.1} s with {}",
        if client.is_some() {
            "machine client"
        } else {
            "anonymous"
        },
        started.elapsed().as_secs_f64(),
        output.status
    );
    output
}
