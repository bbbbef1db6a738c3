#![allow(clippy::unwrap_used, unreachable_pub)]

use hyper::{Method, StatusCode};

use crate::support::{self, Client, Device};

#[tokio::test]
async fn disclosure_documents_are_served_to_anyone_and_nothing_else_is() {
    let device = Device::provision();
    let public = device.path().join("disclosure");
    std::fs::create_dir_all(public.join(".well-known")).unwrap();
    std::fs::create_dir_all(public.join("public")).unwrap();
    std::fs::create_dir_all(public.join("docs")).unwrap();
    std::fs::write(
        public.join(".well-known/security.txt"),
        "Contact: mailto:security@example.test\nExpires: 2027-06-30T00:00:00Z\n",
    )
    .unwrap();
    std::fs::write(
        public.join("public/disclosure.json"),
        r#"{"security_updates_until":"2031-03-31"}"#,
    )
    .unwrap();
    std::fs::write(public.join("docs/support-policy.md"), "# Support\n").unwrap();
    // Not public: must never be served even though it sits beside them.
    std::fs::write(public.join("docs/risk-assessment.md"), "# Risks\n").unwrap();
    let mut file = device.file();
    file.disclosure_dir = Some(public);
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let mut anyone = Client::connect(addr, &device.root()).await;

    let txt = anyone
        .call(Method::GET, "/.well-known/security.txt", None)
        .await;
    assert_eq!(txt.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&txt.raw).contains("Contact: mailto:security@example.test"));
    let summary = anyone.call(Method::GET, "/api/v1/disclosure", None).await;
    assert_eq!(summary.status, StatusCode::OK);
    assert_eq!(summary.body["security_updates_until"], "2031-03-31");
    let policy = anyone
        .call(Method::GET, "/api/v1/disclosure/support-policy", None)
        .await;
    assert_eq!(policy.status, StatusCode::OK);
    assert_eq!(&policy.raw[..], b"# Support\n");

    for refused in [
        "/api/v1/disclosure/risk-assessment",
        "/api/v1/disclosure/..%2F..%2Fidentity%2Fdevice",
        "/api/v1/disclosure/vulnerability-disclosure",
    ] {
        let reply = anyone.call(Method::GET, refused, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{refused}");
        support::assert_error_body(&reply);
    }
    let status = anyone.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::UNAUTHORIZED);
    agent.shutdown().await;
}
