//! `bulwark gateway` end to end: the boot-file check, and a running
//! gateway in front of a real libcoap server whose policy is reloaded on
//! SIGHUP (a good policy takes effect at once; a broken one is refused and
//! the previous one stays in force), stopped by SIGTERM; its admin
//! endpoint (metrics, quarantine that survives a restart) and its events
//! in the device's tamper-evident log.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{fails, ok};

const WAIT: Duration = Duration::from_secs(15);

fn policy(paths: &str) -> String {
    format!(
        "[[coap.devices]]\nname = \"reader\"\nsource = \"127.0.0.1\"\nmethods = [\"GET\"]\npaths = {paths}\n"
    )
}

fn boot_file(dir: &Path, upstream: std::net::SocketAddr) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "policy = \"policy.toml\"\n[coap]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    path
}

/// The running gateway; killed on drop if the test failed before SIGTERM.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(state: &Path, config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
            .args(["gateway", "run", "-c"])
            .arg(config)
            .env("BULWARK_STATE_DIR", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        Self { child, lines }
    }

    /// The next line (stdout or stderr) containing `needle`.
    fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the gateway never printed {needle:?}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address printed on the banner line that starts with `prefix`.
fn banner_addr(gw: &Running, prefix: &str) -> String {
    let line = gw.line_with(prefix);
    line.split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:") || w.starts_with("http://127.0.0.1:"))
        .map(|w| {
            w.trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(',')
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A plain HTTP/1.1 request to the admin endpoint: (status, body).
fn admin(addr: &str, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends each line of `out` (the child's stdout or stderr) to `tx`.
fn forward(out: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
}

/// `coap-client-notls` GET of `path` through `gateway`: (stdout, stderr).
fn get(gateway: &str, path: &str) -> (String, String) {
    testkit::require_tool("coap-client-notls", "libcoap3-bin");
    let out = Command::new("coap-client-notls")
        .args(["-B", "2", "-a", "127.0.0.1", "-m", "get"])
        .arg(format!("coap://{gateway}/{path}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_validates_the_boot_file_and_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let config = boot_file(dir.path(), "127.0.0.1:5683".parse().unwrap());
    let config = config.to_str().unwrap();
    let missing = fails(dir.path(), &["gateway", "check", "-c", config]);
    assert!(missing.contains("policy.toml"), "{missing}");
    std::fs::write(dir.path().join("policy.toml"), policy("[[\"time\"]]")).unwrap();
    let out = ok(dir.path(), &["gateway", "check", "-c", config]);
    assert!(out.contains("1 CoAP devices"), "{out}");
    std::fs::write(
        dir.path().join("policy.toml"),
        policy("[[\"time\"]]") + "colour = \"red\"\n",
    )
    .unwrap();
    let err = fails(dir.path(), &["gateway", "check", "-c", config]);
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn sighup_reloads_the_policy_and_a_broken_one_is_refused() {
    let server = testkit::libcoap::CoapServer::start();
    let state = tempfile::tempdir().unwrap();
    ok(state.path(), &["dev"]);
    let config = boot_file(state.path(), server.addr());
    let policy_file = state.path().join("policy.toml");
    std::fs::write(&policy_file, policy("[[\"time\"]]")).unwrap();
    let gw = Running::start(state.path(), &config);
    let addr = banner_addr(&gw, "CoAP");
    gw.line_with("stop with");

    let (time, _) = get(&addr, "time");
    assert_eq!(time.trim().matches(':').count(), 2, "{time:?}");
    let (_, refused) = get(&addr, "example_data");
    assert!(refused.contains("4.03"), "{refused:?}");

    // A new policy that allows /example_data and no longer /time.
    std::fs::write(&policy_file, policy("[[\"example_data\"]]")).unwrap();
    gw.signal("HUP");
    gw.line_with("reloaded");
    let (_, refused) = get(&addr, "time");
    assert!(refused.contains("4.03"), "{refused:?}");
    let (data, err) = get(&addr, "example_data");
    assert!(!err.contains("4.03"), "{data:?} {err:?}");

    // A broken policy: refused, and the previous one stays in force.
    std::fs::write(&policy_file, "[[coap.devices]]\nname = \"\"\n").unwrap();
    gw.signal("HUP");
    let refusal = gw.line_with("reload refused");
    assert!(refusal.contains("previous policy stays"), "{refusal}");
    let (_, err) = get(&addr, "example_data");
    assert!(!err.contains("4.03"), "{err:?}");

    gw.signal("TERM");
    gw.line_with("gateway stopped");
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

fn stop(mut gw: Running) {
    gw.signal("TERM");
    gw.line_with("gateway stopped");
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// The admin endpoint counts what passed; a device quarantined there
/// gets nothing through, stays quarantined across a restart of the
/// gateway, and is let through again once released; the refusals and the
/// quarantine are in the device's event log, which verifies.
#[test]
fn admin_metrics_and_a_quarantine_that_survives_a_restart() {
    let server = testkit::libcoap::CoapServer::start();
    let state = tempfile::tempdir().unwrap();
    ok(state.path(), &["dev"]);
    let config = boot_file(state.path(), server.addr());
    std::fs::write(state.path().join("policy.toml"), policy("[[\"time\"]]")).unwrap();

    let gw = Running::start(state.path(), &config);
    let coap = banner_addr(&gw, "CoAP");
    let admin_addr = banner_addr(&gw, "admin");
    gw.line_with("stop with");
    let (time, _) = get(&coap, "time");
    assert_eq!(time.trim().matches(':').count(), 2, "{time:?}");
    let (_, refused) = get(&coap, "example_data");
    assert!(refused.contains("4.03"), "{refused:?}");
    let (code, metrics) = admin(&admin_addr, "GET", "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("bulwark_gateway_accepted_total{protocol=\"coap\",device=\"reader\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("bulwark_gateway_refused_total{protocol=\"coap\",device=\"reader\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );

    let (code, body) = admin(&admin_addr, "POST", "/quarantine/reader");
    assert!((200..300).contains(&code), "{code} {body}");
    let (time, _) = get(&coap, "time");
    assert!(time.trim().is_empty(), "a quarantined device got {time:?}");
    stop(gw);

    let gw = Running::start(state.path(), &config);
    let coap = banner_addr(&gw, "CoAP");
    let admin_addr = banner_addr(&gw, "admin");
    gw.line_with("stop with");
    let (_, listed) = admin(&admin_addr, "GET", "/quarantine");
    assert!(listed.contains("reader"), "{listed}");
    let (time, _) = get(&coap, "time");
    assert!(
        time.trim().is_empty(),
        "quarantine lost on restart: {time:?}"
    );
    let (code, body) = admin(&admin_addr, "POST", "/quarantine/reader/release");
    assert!((200..300).contains(&code), "{code} {body}");
    let (time, _) = get(&coap, "time");
    assert_eq!(time.trim().matches(':').count(), 2, "{time:?}");
    stop(gw);

    let verified = ok(state.path(), &["log", "verify"]);
    assert!(verified.to_lowercase().contains("intact"), "{verified}");
    let exported = ok(state.path(), &["log", "export"]);
    assert!(exported.contains("gateway.coap.refused"), "{exported}");
    assert!(exported.contains("gateway.quarantine"), "{exported}");
}

/// docs/gateway.md shows a boot file and a policy: both must stay valid
/// (and the boot file must name a policy at the path it says).
#[test]
fn the_examples_in_docs_gateway_md_are_valid() {
    let doc = std::fs::read_to_string(crate::common::repo_root().join("docs/gateway.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2, "a boot file and a policy");
    let boot =
        gateway::GatewayFile::from_toml(blocks[0], "docs/gateway.md", Path::new("/etc/bulwark"))
            .unwrap_or_else(|e| panic!("boot file example: {e}"));
    assert_eq!(boot.policy, Path::new("/etc/bulwark/gateway-policy.toml"));
    let policy = gateway::Policy::from_toml(blocks[1], "docs/gateway.md")
        .unwrap_or_else(|e| panic!("policy example: {e}"));
    assert_eq!(policy.devices().len(), 2);
    assert_eq!(policy.modbus.devices().len(), 2);
    assert_eq!(policy.coap.devices().len(), 1);
}
