//! libcoap's example server (`coap-server-notls`, Debian `libcoap3-bin`)
//! with its default resources (`/time`, `/example_data`, `/async`,
//! `/.well-known/core`), on a free loopback UDP port.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const START_LIMIT: Duration = Duration::from_secs(10);

/// A CON GET /time with token "p": the readiness probe.
const PING: [u8; 10] = [0x41, 0x01, 0x00, 0x01, b'p', 0xb4, b't', b'i', b'm', b'e'];

/// A running `coap-server-notls`, killed on drop.
#[derive(Debug)]
pub struct CoapServer {
    child: Child,
    port: u16,
}

/// Whether a server on `port` answers the probe within 200 ms.
fn answers(port: u16) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1500];
    s.send_to(&PING, ("127.0.0.1", port)).is_ok() && s.recv_from(&mut buf).is_ok()
}

impl CoapServer {
    /// Starts the server; panics (naming the package) if libcoap is not
    /// installed or it never answers.
    pub fn start() -> Self {
        crate::require_tool("coap-server-notls", "libcoap3-bin");
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map(|a| a.port())
                .expect("no free UDP port on 127.0.0.1");
            let mut child = Command::new("coap-server-notls")
                .args(["-A", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn coap-server-notls");
            let up = crate::wait_until(START_LIMIT, || {
                answers(port) || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Self { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("coap-server-notls did not start");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for CoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
