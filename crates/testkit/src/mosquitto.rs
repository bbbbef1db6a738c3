//! A private Mosquitto broker for one test.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, require_tool, wait_until};

/// A running `mosquitto` with its own configuration on a loopback port;
/// killed on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    /// The listener's TCP port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts a plain-TCP broker (anonymous clients allowed) on a free
    /// port. Panics (test failure) if mosquitto is missing or never comes
    /// up.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a broker on a free port with `listener_conf` (configuration
    /// lines, e.g. `cafile`, `certfile`, `keyfile`, `require_certificate
    /// true` for mutual TLS) right after the `listener` line. Retries on
    /// another port if the chosen one was taken meanwhile.
    pub fn start_with(listener_conf: &str) -> Self {
        let mut last_error = String::new();
        for _attempt in 0..5 {
            match Self::try_start(free_port(), listener_conf) {
                Ok(broker) => return broker,
                Err(log) => last_error = log,
            }
        }
        panic!("mosquitto did not start after 5 attempts; its last log:\n{last_error}");
    }

    /// Starts a broker on `port` (for tests where a client was told the
    /// port before the broker existed). Panics if it does not come up.
    pub fn start_on(port: u16, listener_conf: &str) -> Self {
        Self::try_start(port, listener_conf)
            .unwrap_or_else(|log| panic!("mosquitto did not start on port {port}; its log:\n{log}"))
    }

    fn try_start(port: u16, listener_conf: &str) -> Result<Self, String> {
        require_tool("mosquitto", "mosquitto");
        let dir = tempfile::tempdir().expect("temporary directory for mosquitto");
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut text = format!("listener {port} 127.0.0.1\n");
        for line in listener_conf.lines() {
            let _ = writeln!(text, "{}", line.trim());
        }
        // `user root`: started as root (in CI containers), mosquitto would
        // otherwise switch to the `mosquitto` user, which cannot read the
        // 0700 temporary directory with the certificates and the log. As
        // any other user the option has no effect.
        text.push_str(
            "user root\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n\
             max_queued_messages 100000\nmax_inflight_messages 0\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n",
        );
        std::fs::write(&conf, text).expect("writing mosquitto.conf");
        // The log goes to stderr, which is unbuffered, into a file: a
        // `log_dest file` is flushed too late for failure messages.
        let log_file = std::fs::File::create(&log).expect("creating mosquitto.log");
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn mosquitto");
        let up = wait_until(Duration::from_secs(5), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                || matches!(child.try_wait(), Ok(Some(_)))
        });
        if up && matches!(child.try_wait(), Ok(None)) {
            return Ok(Self { child, port, dir });
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(std::fs::read_to_string(&log).unwrap_or_else(|e| format!("(no log: {e})")))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The broker's private directory (configuration and log); a test may
    /// put certificate files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the broker logged so far (errors, warnings, notices), for
    /// failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
