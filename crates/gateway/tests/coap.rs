//! The CoAP gateway against a real libcoap server (`coap-server-notls`
//! with its default resources), with the real libcoap client
//! (`coap-client-notls`) as the device. Devices are told apart by source
//! address (`coap-client -a`): 127.0.0.1 and .3 are both loopback.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::audit::action;
use gateway::coap::codec::{self, Code, MessageType, Method, option};
use gateway::{CoapProxy, CoapProxyConfig, MemoryAudit, Policy, PolicyHandle, ViolationKind};
use tokio::time::timeout;

// Rate limits and block-wise transfer caps.
mod limits;
// Behaviour baselines: anomaly events.
mod anomaly;

const WAIT: Duration = Duration::from_secs(10);
/// How long a client waits for an answer that should not come.
const SILENCE_SECS: &str = "2";

const POLICY: &str = r#"
[coap]
exchange_lifetime_secs = 30

[[coap.devices]]
name = "reader"
source = "127.0.0.1"
methods = ["GET"]
paths = [["time"], [".well-known", "core"]]
"#;

/// libcoap's example server (testkit); the tests' client is libcoap's too.
fn libcoap_server() -> testkit::libcoap::CoapServer {
    testkit::require_tool("coap-client-notls", "libcoap3-bin");
    testkit::libcoap::CoapServer::start()
}

/// A CoAP gateway in front of `server`, stopped on drop.
struct CoapGateway {
    addr: SocketAddr,
    audit: Arc<MemoryAudit>,
    metrics: Arc<gateway::Metrics>,
    proxy: Arc<CoapProxy>,
    task: tokio::task::JoinHandle<()>,
}

impl CoapGateway {
    async fn start(server: &testkit::libcoap::CoapServer) -> Self {
        Self::start_with(server, POLICY).await
    }

    async fn start_with(server: &testkit::libcoap::CoapServer, policy: &str) -> Self {
        let audit = Arc::new(MemoryAudit::default());
        let metrics = Arc::new(gateway::Metrics::default());
        let proxy = CoapProxy::new(CoapProxyConfig {
            upstream: server.addr(),
            policy: Arc::new(PolicyHandle::new(
                Policy::from_toml(policy, "coap test policy").unwrap(),
            )),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: Arc::default(),
        });
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(proxy.clone().serve(socket));
        Self {
            addr,
            audit,
            metrics,
            proxy,
            task,
        }
    }

    fn events(&self, which: &str) -> Vec<ViolationKind> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e.action == which)
            .filter_map(|e| e.reason)
            .collect()
    }
}

impl Drop for CoapGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `coap-client-notls` printed: the payload on stdout, a non-2.xx
/// code on stderr.
struct Reply {
    stdout: String,
    stderr: String,
}

/// Runs `coap-client-notls` from source address `from` with `args`
/// before the URI `coap://gateway/path`; bounded by `-B` and `WAIT`.
async fn client(gw: &CoapGateway, from: &str, args: &[&str], path: &str) -> Reply {
    let mut cmd = Command::new("coap-client-notls");
    cmd.args(["-B", SILENCE_SECS, "-a", from])
        .args(args)
        .arg(format!("coap://{}/{path}", gw.addr))
        .stdin(Stdio::null());
    let out = timeout(WAIT, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("coap-client-notls did not finish")
        .unwrap()
        .expect("run coap-client-notls");
    Reply {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn setup() -> (testkit::libcoap::CoapServer, CoapGateway) {
    let server = libcoap_server();
    let gw = CoapGateway::start(&server).await;
    (server, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_get_returns_the_servers_resource() {
    let (_server, gw) = setup().await;
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "time").await;
    // The server's clock resource: "Mon DD HH:MM:SS".
    let t = r.stdout.trim();
    assert!(
        t.len() >= 15 && t.matches(':').count() == 2,
        "stdout {:?}, stderr {:?}",
        r.stdout,
        r.stderr
    );
    assert!(
        gw.events(action::COAP_REFUSED).is_empty(),
        "{:?}",
        gw.audit.events()
    );
    assert!(gw.events(action::COAP_RESPONSE_DROPPED).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disallowed_path_gets_403() {
    let (_server, gw) = setup().await;
    // /example_data exists on the server, but is not in the policy.
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "example_data").await;
    assert!(r.stderr.contains("4.03"), "{:?} {:?}", r.stdout, r.stderr);
    assert!(r.stdout.trim().is_empty());
    assert_eq!(
        gw.events(action::COAP_REFUSED),
        [ViolationKind::NotAuthorized]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_when_only_get_is_allowed_gets_403() {
    let (_server, gw) = setup().await;
    let r = client(&gw, "127.0.0.1", &["-m", "put", "-e", "1"], "time").await;
    assert!(r.stderr.contains("4.03"), "{:?} {:?}", r.stdout, r.stderr);
    assert_eq!(
        gw.events(action::COAP_REFUSED),
        [ViolationKind::NotAuthorized]
    );
    // The same device still gets its allowed GET.
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "time").await;
    assert_eq!(r.stdout.trim().matches(':').count(), 2, "{:?}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_gets_nothing() {
    let (_server, gw) = setup().await;
    let r = client(&gw, "127.0.0.3", &["-m", "get"], "time").await;
    assert!(r.stdout.trim().is_empty(), "{:?}", r.stdout);
    assert!(!r.stderr.contains("4.03"), "{:?}", r.stderr);
    let refused = gw.events(action::COAP_REFUSED);
    assert!(
        !refused.is_empty() && refused.iter().all(|k| *k == ViolationKind::UnknownDevice),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_needs_echo() {
    let (_server, gw) = setup().await;
    // /.well-known/core is far over 3x a ~25-byte request: dropped.
    let r = client(&gw, "127.0.0.1", &["-m", "get"], ".well-known/core").await;
    assert!(r.stdout.trim().is_empty(), "{:?}", r.stdout);
    let dropped = gw.events(action::COAP_RESPONSE_DROPPED);
    assert!(
        dropped.contains(&ViolationKind::PacketTooLarge),
        "{:?}",
        gw.audit.events()
    );
    // With an Echo option (RFC 9175, number 252) it is relayed.
    let r = client(
        &gw,
        "127.0.0.1",
        &["-m", "get", "-O", "252,0123abcd"],
        ".well-known/core",
    )
    .await;
    assert!(
        r.stdout.contains("</time>"),
        "{:?} {:?}",
        r.stdout,
        r.stderr
    );
}

/// Datagrams no real client sends, over a plain socket: malformed ones
/// are dropped with an event and never answered, and a replayed message
/// id is not forwarded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_replayed_datagrams_are_dropped() {
    let (_server, gw) = setup().await;
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut token9 = vec![0x49, 1, 0, 1];
    token9.extend_from_slice(&[0; 9]);
    for bad in [
        token9,
        vec![0x40, 1, 0, 2, 0xf0],
        vec![0x40, 1, 0, 3, 0xb1, b'a', 0xff],
        vec![0x40, 1, 0, 4, 0x0e, 0xff, 0xff, 1],
    ] {
        s.send_to(&bad, gw.addr).await.unwrap();
    }
    let mut buf = [0u8; 1500];
    let got = timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await;
    assert!(got.is_err(), "the gateway answered a malformed datagram");
    // A valid GET, then the same message id again.
    let get = codec::encode(
        MessageType::Confirmable,
        Method::Get.code(),
        77,
        b"r",
        &[(option::URI_PATH, b"time")],
        &[],
    );
    s.send_to(&get, gw.addr).await.unwrap();
    let (n, _) = timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("no answer to a valid GET")
        .unwrap();
    let answer = codec::parse(buf.get(..n).unwrap()).unwrap();
    assert_eq!((answer.message_id, answer.code), (77, Code::new(2, 5)));
    s.send_to(&get, gw.addr).await.unwrap();
    let again = timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await;
    assert!(again.is_err(), "a replayed message id was forwarded");
    assert_eq!(
        gw.events(action::COAP_REFUSED),
        [
            ViolationKind::Malformed,
            ViolationKind::Malformed,
            ViolationKind::Malformed,
            ViolationKind::Malformed,
            ViolationKind::Protocol,
        ]
    );
}

/// Per-device counters (metrics module) after real libcoap exchanges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_real_traffic() {
    use gateway::metrics::Protocol;
    let (_server, gw) = setup().await;
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "time").await;
    assert!(!r.stdout.trim().is_empty(), "{:?}", r.stderr);
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "example_data").await;
    assert!(r.stderr.contains("4.03"), "{:?}", r.stderr);
    let reader = gw.metrics.device(Protocol::Coap, "reader");
    assert_eq!(reader.accepted_total(), 1);
    assert_eq!(reader.refused_total(ViolationKind::NotAuthorized), 1);
    let text = gw.metrics.render(&[]);
    let l = "protocol=\"coap\",device=\"reader\"";
    let value = |dir: &str| -> u64 {
        let prefix = format!("bulwark_gateway_bytes_total{{{l},direction=\"{dir}\"}} ");
        text.lines()
            .find_map(|t| t.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}:\n{text}"))
            .parse()
            .unwrap()
    };
    // A GET for "time" is a few bytes of header and options; the answer
    // carries "Mon DD HH:MM:SS" at least.
    assert!((8..64).contains(&value("in")), "{text}");
    assert!(value("out") >= 15 + 4, "{text}");
    assert!(
        text.contains(&format!(
            "bulwark_gateway_refused_total{{{l},reason=\"not-authorized\"}} 1"
        )),
        "{text}"
    );
}

/// A quarantined CoAP device reaches only its `recovery_paths` (here
/// /time, standing in for an update resource); everything else is dropped
/// before it reaches the server, until an operator releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_device_reaches_only_its_recovery_path() {
    use gateway::metrics::Protocol;
    let server = libcoap_server();
    let policy = POLICY.replace(
        "paths = [[\"time\"], [\".well-known\", \"core\"]]",
        "paths = [[\"time\"], [\".well-known\", \"core\"]]\nrecovery_paths = [[\"time\"]]",
    );
    assert_ne!(policy, POLICY);
    let gw = CoapGateway::start_with(&server, &policy).await;
    let forwarded = gw.metrics.device(Protocol::Coap, "reader");
    let quarantine = gw.proxy.quarantine();
    let now = tokio::time::Instant::now;
    quarantine
        .quarantine_manual("reader", None, "test", now())
        .unwrap();
    let r = client(&gw, "127.0.0.1", &["-m", "get"], "time").await;
    let time = r.stdout.trim();
    assert_eq!(time.matches(':').count(), 2, "{time:?} {:?}", r.stderr);
    assert_eq!(forwarded.accepted_total(), 1);
    let r = client(&gw, "127.0.0.1", &["-m", "get"], ".well-known/core").await;
    assert!(r.stdout.trim().is_empty(), "{:?}", r.stdout);
    assert_eq!(forwarded.accepted_total(), 1, "forwarded in quarantine");
    assert!(quarantine.release("reader", now()).unwrap());
    client(&gw, "127.0.0.1", &["-m", "get"], ".well-known/core").await;
    // At least once: the large answer is held back (amplification limit),
    // so coap-client may retransmit its Confirmable request.
    assert!(
        forwarded.accepted_total() >= 2,
        "not forwarded after release"
    );
}
