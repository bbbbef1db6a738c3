#![allow(clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::support::{self, Device};

/// What one `openssl s_client` run saw.
#[derive(Debug)]
struct Probe {
    args: Vec<String>,
    exit_ok: bool,
    output: String,
}

impl Probe {
    /// The TCP connection was made and a cipher negotiated.
    fn negotiated(&self) -> bool {
        self.exit_ok
            && self.output.contains("Cipher is ")
            && !self.output.contains("Cipher is (NONE)")
    }

    /// The client reached the agent (so a failure is the agent's refusal,
    /// not the client declining to try).
    fn connected(&self) -> bool {
        self.output.contains("CONNECTED(")
    }

    fn assert_refused(&self) {
        assert!(self.connected(), "probe never reached the agent: {self:#?}");
        assert!(
            !self.negotiated(),
            "the agent accepted {:?}: {}",
            self.args,
            self.output
        );
    }

    fn assert_accepted(&self) {
        assert!(
            self.negotiated(),
            "the agent refused {:?}: {}",
            self.args,
            self.output
        );
    }
}

/// Runs `openssl s_client` against `addr` with `args`, bounded in time.
async fn s_client(addr: SocketAddr, args: &[&str]) -> Probe {
    let connect = addr.to_string();
    let mut command = tokio::process::Command::new("openssl");
    command
        .args(["s_client", "-connect", &connect, "-servername", "x"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .unwrap_or_else(|_| panic!("openssl s_client {args:?} did not finish in 15 s"))
        .unwrap();
    Probe {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        exit_ok: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The client must be willing to offer old protocols and weak suites, so
/// that a refusal is the agent's.
const ANY_CLIENT_SUITE: &str = "ALL:@SECLEVEL=0";

/// TLS 1.3 only by default; with TLS 1.2 acknowledged, only AEAD suites
/// with ECDHE: no CBC, no RSA key exchange, no 3DES, RC4 or NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls13_by_default_and_only_strong_tls12_suites_when_enabled() {
    testkit::require_tool("openssl", "openssl");
    let device = Device::provision();
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();

    for version in ["-tls1", "-tls1_1", "-tls1_2"] {
        s_client(addr, &[version, "-cipher", ANY_CLIENT_SUITE])
            .await
            .assert_refused();
    }
    let tls13 = s_client(addr, &["-tls1_3"]).await;
    tls13.assert_accepted();
    assert!(tls13.output.contains("TLSv1.3"), "{}", tls13.output);

    // Allow TLS 1.2 (a weakening, acknowledged); it applies at restart.
    let mut owner = support::claimed(addr, &device).await;
    let changed = support::put_settings(
        &mut owner,
        json!({"tls": {"min_version": "1.2"}, "danger_acknowledged": ["tls.min_version"]}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(changed.body["weakened"], json!(["tls.min_version"]));
    agent.shutdown().await;
    let agent = device.start().await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();

    for version in ["-tls1", "-tls1_1"] {
        s_client(addr, &[version, "-cipher", ANY_CLIENT_SUITE])
            .await
            .assert_refused();
    }
    for weak in [
        // CBC with RSA key exchange (no forward secrecy).
        "AES128-SHA:@SECLEVEL=0",
        // CBC even with ECDHE.
        "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0",
        // 3DES, RC4, NULL (whichever this openssl still offers).
        "ECDHE-RSA-DES-CBC3-SHA:DES-CBC3-SHA:RC4-SHA:NULL-SHA:@SECLEVEL=0",
        // Static RSA with GCM: AEAD but not forward secret.
        "AES128-GCM-SHA256:AES256-GCM-SHA384:@SECLEVEL=0",
    ] {
        s_client(addr, &["-tls1_2", "-cipher", weak])
            .await
            .assert_refused();
    }
    let strong = s_client(
        addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    )
    .await;
    strong.assert_accepted();
    assert!(
        strong.output.contains("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{}",
        strong.output
    );
    s_client(addr, &["-tls1_3"]).await.assert_accepted();
    agent.shutdown().await;
}
