//! Fixtures for tests that need real components: a software TPM (swtpm),
//! a PKCS#11 token (SoftHSM2, tpm2-pkcs11), an MQTT broker (Mosquitto) and
//! a CoAP server (libcoap).
//!
//! Every fixture starts its component with fresh state in a temporary
//! directory and stops it on drop. A missing tool is a test *failure* with
//! the Debian package to install, never a silent skip: `scripts/test.sh`
//! installs them all.

pub mod libcoap;
pub mod mosquitto;
pub mod pkcs11;
pub mod softhsm;
pub mod swtpm;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Panics with an actionable message unless `tool` is on `PATH` (or is an
/// existing absolute path).
pub fn require_tool(tool: &str, debian_package: &str) {
    let found = if Path::new(tool).is_absolute() {
        Path::new(tool).exists()
    } else {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        found,
        "this test needs `{tool}`, which is missing: install the Debian package \
         `{debian_package}` (bash scripts/test.sh installs every test dependency)"
    );
}

/// Polls `ready` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// A TCP port on 127.0.0.1 that was free a moment ago, with the next one
/// free too (swtpm needs a pair).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(a) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = a.local_addr().map(|addr| addr.port()) else {
            continue;
        };
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of TCP ports on 127.0.0.1");
}
