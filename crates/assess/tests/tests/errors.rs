use assess::Verdict;

use crate::support::{self, Fake};

/// Nothing listening, a plain-HTTP URL, a missing port or no trust anchor:
/// the assessment does not start (the command exits 2).
#[tokio::test]
async fn unusable_targets_are_errors_not_reports() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::create_ca(dir.path(), "Acme Devices");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let target = |url: String, roots: Vec<_>| assess::Target {
        url,
        manufacturer_root: roots,
        device_id: None,
    };
    let root = vec![ca.root().clone()];
    let options = assess::Options::default();

    let err = assess::run(&target(format!("https://{closed}"), root.clone()), &options)
        .await
        .unwrap_err();
    assert!(matches!(err, assess::Error::Unreachable { .. }), "{err}");
    for url in [format!("http://{closed}"), "https://127.0.0.1".to_owned()] {
        let err = assess::run(&target(url, root.clone()), &options)
            .await
            .unwrap_err();
        assert!(matches!(err, assess::Error::InvalidUrl { .. }), "{err}");
    }
    let err = assess::run(&target(format!("https://{closed}"), Vec::new()), &options)
        .await
        .unwrap_err();
    assert!(matches!(err, assess::Error::TrustAnchor(_)), "{err}");
}

/// Without openssl the protocol and suite probes cannot run: each is an
/// error naming the package to install, never a pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_openssl_is_an_error_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::create_ca(dir.path(), "Acme Devices");
    let fake = Fake::start(&ca, dir.path()).await;
    let options = assess::Options::default().with_openssl(dir.path().join("no-such-openssl"));

    let report = assess::run(&fake.target(&ca), &options).await.unwrap();

    for check in ["tls-legacy-versions", "tls12-weak-suites", "tls13-accepted"] {
        let f = support::finding(&report, check);
        assert_eq!(f.verdict, Verdict::Error, "{f:#?}");
        assert!(
            f.evidence[0].contains("install the `openssl` package"),
            "{f:#?}"
        );
    }
    // The Rust-side certificate check does not need openssl.
    assert_eq!(
        support::finding(&report, "device-certificate").verdict,
        Verdict::Pass
    );
}
