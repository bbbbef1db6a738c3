//! Behaviour baselines through the CoAP gateway against the real libcoap
//! server and client: a device that learned GET /time and then asks for
//! another allowed resource (/example_data) is reported with the method
//! and path.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_path_after_learning_is_reported() {
    let server = libcoap_server();
    let policy = format!(
        "[anomaly]\nlearning_secs = 0\nlearning_observations = 5\n{}",
        POLICY.replace(r#"[".well-known", "core"]"#, r#"["example_data"]"#)
    );
    let gw = CoapGateway::start_with(&server, &policy).await;
    for _ in 0..6 {
        let r = client(&gw, "127.0.0.1", &["-m", "get"], "time").await;
        assert!(r.stdout.trim().len() >= 15, "{:?} {:?}", r.stdout, r.stderr);
    }
    let anomalies = || -> Vec<gateway::GatewayEvent> {
        gw.audit
            .events()
            .into_iter()
            .filter(|e| e.action == action::ANOMALY)
            .collect()
    };
    assert!(anomalies().is_empty(), "{:?}", gw.audit.events());

    // Allowed, answered, and new to the baseline.
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "example_data").await;
    assert!(r.stderr.is_empty(), "{:?} {:?}", r.stdout, r.stderr);
    let found = anomalies();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].device.as_deref(), Some("reader"));
    assert!(
        found[0]
            .detail
            .contains("first request `GET /example_data` after 6 messages"),
        "{}",
        found[0].detail
    );
}
