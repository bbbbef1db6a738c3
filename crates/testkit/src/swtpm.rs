//! A private software TPM 2.0 for one test process.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port_pair, require_tool, wait_until};

/// A running `swtpm` with fresh state; killed and wiped on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
    state: TempDir,
}

impl Swtpm {
    /// Starts a swtpm on a free loopback port and waits until it accepts
    /// connections. Panics (test failure) if swtpm is missing or never
    /// comes up.
    pub fn start() -> Self {
        require_tool("swtpm", "swtpm");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let state = tempfile::tempdir().expect("temporary directory for swtpm state");
            let port = free_port_pair();
            let mut child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn swtpm");
            let up = wait_until(Duration::from_secs(10), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Self { child, port, state };
            }
            let _ = child.kill();
            if let Ok(out) = child.wait_with_output() {
                last_error = String::from_utf8_lossy(&out.stderr).into_owned();
            }
        }
        panic!("swtpm did not start after 5 attempts: {last_error}");
    }

    /// The TCTI string that reaches this TPM (the `mssim:` form fails
    /// against swtpm).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The command port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the TPM's persistent state.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Whether the swtpm process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the TPM now, e.g. to test an unreachable TPM.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
