use assess::Verdict;

use crate::support::{self, CHECKS, Device, FAKE_TOKEN, Fake, OWNER_PASSWORD};

/// A claimed device (owner account `admin` with a strong password) that
/// publishes its disclosure documents passes every check, and the report
/// carries no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correctly_configured_device_passes_every_check() {
    testkit::require_tool("openssl", "openssl");
    let device = Device::provision();
    let mut file = device.file();
    file.disclosure_dir = Some(device.write_disclosure("2099-06-30T00:00:00Z", "2099-03-31"));
    let (agent, addr) = device.start_with(file).await;
    device.claim(addr).await;

    let report = support::assess(&device.target(addr)).await;
    agent.shutdown().await;

    let checks: Vec<&str> = report.findings.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(checks, CHECKS);
    for f in &report.findings {
        assert_eq!(f.verdict, Verdict::Pass, "{f:#?}");
        assert!(!f.evidence.is_empty(), "{} has no evidence", f.check);
    }
    assert!(!report.has_failures());
    // The evidence is specific: the public set, the probes, the identity.
    let routes = support::finding(&report, "guarded-routes");
    assert!(
        routes
            .evidence
            .iter()
            .any(|e| e.starts_with("public (empty security requirement): ")
                && e.contains("POST /api/v1/session")
                && e.contains("GET /api/v1/openapi.json")
                && !e.contains("/api/v1/status")),
        "{routes:#?}"
    );
    assert!(
        routes
            .evidence
            .iter()
            .any(|e| e.starts_with("DELETE /api/v1/accounts/assess-probe") && e.contains("→ 401")),
        "{routes:#?}"
    );
    let cert = support::finding(&report, "device-certificate");
    assert!(
        cert.evidence
            .iter()
            .any(|e| e.contains(&format!("urn:uuid:{}", device.device_id))),
        "{cert:#?}"
    );
    let creds = support::finding(&report, "default-credentials");
    assert_eq!(creds.evidence.len(), 5, "{creds:#?}");
    assert!(
        creds.evidence[0].contains("admin / admin → 401"),
        "{creds:#?}"
    );
    let json = report.to_json();
    for secret in [OWNER_PASSWORD, device.setup_secret.as_str()] {
        assert!(!json.contains(secret), "a secret reached the report");
    }
    crate::report::assert_renders(&report);
}

/// A device without a disclosure directory answers 404 for its
/// disclosure documents: not applicable, with the 404 as evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_disclosure_documents_are_not_applicable() {
    let device = Device::provision();
    let (agent, addr) = device.start_with(device.file()).await;
    let report = support::assess(&device.target(addr)).await;
    agent.shutdown().await;
    for check in ["security-txt", "disclosure-summary"] {
        let f = support::finding(&report, check);
        assert_eq!(f.verdict, Verdict::NotApplicable, "{f:#?}");
        assert!(f.evidence[0].contains("→ 404 not-found"), "{f:#?}");
    }
    // An unclaimed device has no account at all: nothing logs in.
    assert_eq!(
        support::finding(&report, "default-credentials").verdict,
        Verdict::Pass
    );
}

/// The fake device accepts admin/admin, serves status to anyone although
/// its document protects it, answers a broken body with a 500, and
/// publishes an expired security.txt and an ended support period: each of
/// those checks fails, and the token it handed out is not in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_default_credentials_and_an_open_status_fails() {
    testkit::require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let ca = support::create_ca(dir.path(), "Acme Devices");
    let fake = Fake::start(&ca, dir.path()).await;

    let report = support::assess(&fake.target(&ca)).await;

    for check in [
        "default-credentials",
        "anonymous-status",
        "guarded-routes",
        "malformed-input",
        "security-txt",
        "disclosure-summary",
    ] {
        assert_eq!(
            support::finding(&report, check).verdict,
            Verdict::Fail,
            "{:#?}",
            support::finding(&report, check)
        );
    }
    assert!(report.has_failures());
    let creds = support::finding(&report, "default-credentials");
    assert!(
        creds.evidence[0].contains("admin / admin → 200: LOGGED IN"),
        "{creds:#?}"
    );
    let status = support::finding(&report, "anonymous-status");
    assert!(status.evidence[0].contains("→ 200"), "{status:#?}");
    let routes = support::finding(&report, "guarded-routes");
    assert!(
        routes
            .evidence
            .iter()
            .any(|e| e.starts_with("GET /api/v1/status") && e.contains("NOT REFUSED")),
        "{routes:#?}"
    );
    let input = support::finding(&report, "malformed-input");
    assert!(
        input.evidence[0].contains("broken JSON") && input.evidence[0].contains("SERVER ERROR"),
        "{input:#?}"
    );
    assert!(
        support::finding(&report, "security-txt")
            .evidence
            .iter()
            .any(|e| e.contains("EXPIRED"))
    );
    // The certificate is a genuine IDevID from the same CA, and the fake
    // speaks TLS 1.2 with rustls's AEAD/ECDHE suites only: that part holds,
    // and the weak-suite probes were refused by a server that does offer
    // TLS 1.2 (the agent's default offers only 1.3).
    for check in [
        "device-certificate",
        "tls-legacy-versions",
        "tls12-weak-suites",
    ] {
        assert_eq!(
            support::finding(&report, check).verdict,
            Verdict::Pass,
            "{:#?}",
            support::finding(&report, check)
        );
    }
    assert!(
        support::finding(&report, "tls12-weak-suites")
            .evidence
            .iter()
            .all(|e| !e.contains("protocol version")),
        "{:#?}",
        support::finding(&report, "tls12-weak-suites")
    );
    assert!(!report.to_json().contains(FAKE_TOKEN));
    assert!(!report.to_markdown().contains(FAKE_TOKEN));
    crate::report::assert_renders(&report);
}

/// A certificate that does not chain to the given root, or names another
/// device, fails the certificate check, and no HTTP check passes over a
/// connection that was not verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_maker_or_for_another_unit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::create_ca(&dir.path().join("acme"), "Acme Devices");
    let other = support::create_ca(&dir.path().join("other"), "Other Devices");
    let fake = Fake::start(&ca, dir.path()).await;

    let mut wrong_root = fake.target(&ca);
    wrong_root.manufacturer_root = vec![other.root().clone()];
    let mut wrong_unit = fake.target(&ca);
    wrong_unit.device_id = Some("00000000-0000-4000-8000-000000000000".into());

    for target in [wrong_root, wrong_unit] {
        let report = support::assess(&target).await;
        let cert = support::finding(&report, "device-certificate");
        assert_eq!(cert.verdict, Verdict::Fail, "{cert:#?}");
        assert!(
            cert.evidence
                .iter()
                .any(|e| e.contains("TLS handshake failed")),
            "{cert:#?}"
        );
        for check in [
            "guarded-routes",
            "anonymous-status",
            "security-txt",
            "disclosure-summary",
            "malformed-input",
            "default-credentials",
        ] {
            let f = support::finding(&report, check);
            assert_eq!(f.verdict, Verdict::Error, "{f:#?}");
        }
    }
}
