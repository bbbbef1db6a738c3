//! The Modbus TCP gateway against a real pymodbus server, with a real
//! Modbus client (tokio-modbus) as the device. Frames no real client
//! sends (protocol id 1, a smuggled second PDU) go over a raw socket.
//! Devices are told apart by source address: 127.0.0.1, .2 and .3 are
//! all loopback on Linux.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::audit::action;
use gateway::modbus::codec;
use gateway::{MemoryAudit, ModbusProxy, ModbusProxyConfig, Policy, PolicyHandle, ViolationKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

// Rate limits, connection limits and deadlines.
mod limits;
// Behaviour baselines: anomaly events and quarantine on anomaly.
mod anomaly;

const WAIT: Duration = Duration::from_secs(10);

/// Holding register i holds 1000 + i, input register i 2000 + i, coil i
/// is on when i % 3 == 0 (addresses 0..200, unit 1).
const SERVER_PY: &str = r#"
import sys, logging
logging.disable(logging.CRITICAL)
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusDeviceContext, ModbusServerContext
from pymodbus.server import StartTcpServer
port = int(sys.argv[1])
# pymodbus 3.x: block start 1 is protocol address 0.
hr = ModbusSequentialDataBlock(1, [1000 + i for i in range(200)])
ir = ModbusSequentialDataBlock(1, [2000 + i for i in range(200)])
co = ModbusSequentialDataBlock(1, [i % 3 == 0 for i in range(200)])
di = ModbusSequentialDataBlock(1, [i % 2 == 0 for i in range(200)])
dev = ModbusDeviceContext(di=di, co=co, ir=ir, hr=hr)
StartTcpServer(ModbusServerContext(devices={1: dev}), address=("127.0.0.1", port))
"#;

const POLICY: &str = r#"
[[modbus.devices]]
name = "reader"
source = "127.0.0.1"
unit_ids = [1]
ranges = { 1 = [[0, 15]], 3 = [[0, 9], [10, 19]], 4 = [[0, 4]] }

[[modbus.devices]]
name = "writer"
source = "127.0.0.2"
unit_ids = [1]
functions = [3, 6]
refusal = "drop"
ranges = { 3 = [[0, 19]], 6 = [[5, 5]] }
"#;

/// A pymodbus TCP server on a free loopback port, killed on drop.
struct PyModbus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PyModbus {
    fn start() -> Self {
        let import = Command::new("python3")
            .args(["-c", "import pymodbus"])
            .output();
        assert!(
            import.as_ref().is_ok_and(|o| o.status.success()),
            "this test needs python3 with pymodbus 3.x, which is missing ({}): \
             bash scripts/test.sh installs it (python3 -m pip install pymodbus==3.16.1)",
            match &import {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER_PY).unwrap();
        let log = dir.path().join("server.log");
        for _ in 0..5 {
            let port = testkit::free_port();
            let mut child = Command::new("python3")
                .arg(&script)
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn python3");
            let up = testkit::wait_until(WAIT, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "pymodbus server did not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Modbus gateway in front of `server`, stopped on drop.
struct ModbusGateway {
    addr: SocketAddr,
    audit: Arc<MemoryAudit>,
    metrics: Arc<gateway::Metrics>,
    proxy: Arc<ModbusProxy>,
    task: tokio::task::JoinHandle<()>,
}

impl ModbusGateway {
    async fn start(server: &PyModbus) -> Self {
        Self::start_with(server, POLICY).await
    }

    async fn start_with(server: &PyModbus, policy: &str) -> Self {
        let audit = Arc::new(MemoryAudit::default());
        let metrics = Arc::new(gateway::Metrics::default());
        let proxy = ModbusProxy::new(ModbusProxyConfig {
            upstream: server.addr(),
            policy: Arc::new(PolicyHandle::new(
                Policy::from_toml(policy, "modbus test policy").unwrap(),
            )),
            audit: audit.clone(),
            metrics: metrics.clone(),
            quarantine: Arc::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(proxy.clone().serve(listener));
        Self {
            addr,
            audit,
            metrics,
            proxy,
            task,
        }
    }

    fn refusals(&self) -> Vec<ViolationKind> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e.action == action::MODBUS_REFUSED)
            .filter_map(|e| e.reason)
            .collect()
    }
}

impl Drop for ModbusGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP connection to the gateway from source address `from`.
async fn tcp_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A tokio-modbus client (unit 1) connected from `from`.
async fn device(from: [u8; 4], gw: &ModbusGateway) -> Context {
    tokio_modbus::client::tcp::attach_slave(tcp_from(from, gw.addr).await, Slave(1))
}

/// Reads until the gateway closes; panics if it does not within `WAIT`.
async fn closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("the gateway did not close the connection")
        .ok();
    got
}

async fn setup() -> (PyModbus, ModbusGateway) {
    let server = PyModbus::start();
    let gw = ModbusGateway::start(&server).await;
    (server, gw)
}

#[tokio::test]
async fn allowed_reads_pass_with_the_servers_values() {
    let (_server, gw) = setup().await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    let regs = ctx.read_holding_registers(0, 10).await.unwrap().unwrap();
    assert_eq!(regs, (1000..1010).collect::<Vec<u16>>());
    let regs = ctx.read_holding_registers(10, 10).await.unwrap().unwrap();
    assert_eq!(regs, (1010..1020).collect::<Vec<u16>>());
    let input = ctx.read_input_registers(2, 3).await.unwrap().unwrap();
    assert_eq!(input, [2002, 2003, 2004]);
    let coils = ctx.read_coils(0, 7).await.unwrap().unwrap();
    assert_eq!(coils, [true, false, false, true, false, false, true]);
    assert!(gw.refusals().is_empty(), "{:?}", gw.audit.events());
}

#[tokio::test]
async fn policy_refusals_get_modbus_exceptions_and_the_connection_stays() {
    let server = PyModbus::start();
    // Room for the five refusals below before a quarantine.
    let gw =
        ModbusGateway::start_with(&server, &format!("[quarantine]\nstrikes = 10\n{POLICY}")).await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    // Write on a read-only device: illegal function.
    assert_eq!(
        ctx.write_single_register(5, 7).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Outside every allowed range: illegal data address.
    assert_eq!(
        ctx.read_holding_registers(50, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Inside the server's data but straddling two allowed ranges.
    assert_eq!(
        ctx.read_holding_registers(8, 4).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Straddling the end of the only range.
    assert_eq!(
        ctx.read_input_registers(4, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Allowed function with no range at all (discrete inputs).
    assert_eq!(
        ctx.read_discrete_inputs(0, 1).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // Still connected, and the refused write never reached the server.
    let regs = ctx.read_holding_registers(5, 1).await.unwrap().unwrap();
    assert_eq!(regs, [1005]);
    assert_eq!(gw.refusals(), [ViolationKind::NotAuthorized; 5]);
}

/// Policy refusals are strikes: a device that keeps asking for what it
/// may not have is quarantined, its connection closed and new ones
/// refused, while another device is still served.
#[tokio::test]
async fn repeated_policy_refusals_quarantine_the_device() {
    let server = PyModbus::start();
    let gw =
        ModbusGateway::start_with(&server, &format!("[quarantine]\nstrikes = 3\n{POLICY}")).await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    for _ in 0..2 {
        assert_eq!(
            ctx.write_single_register(5, 7).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
    }
    // The third refusal starts the quarantine: no answer, connection closed.
    assert!(ctx.write_single_register(5, 7).await.is_err());
    assert_eq!(gw.refusals(), [ViolationKind::NotAuthorized; 3]);
    assert!(
        gw.audit
            .events()
            .iter()
            .any(|e| e.action == action::QUARANTINE_START && e.device.as_deref() == Some("reader")),
        "{:?}",
        gw.audit.events()
    );
    let mut again = tcp_from([127, 0, 0, 1], gw.addr).await;
    assert!(closed(&mut again).await.is_empty());
    let mut other = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        other.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );
}

#[tokio::test]
async fn drop_policy_closes_and_allowed_write_reaches_the_server() {
    let (_server, gw) = setup().await;
    let mut ctx = device([127, 0, 0, 2], &gw).await;
    ctx.write_single_register(5, 4242).await.unwrap().unwrap();
    assert_eq!(
        ctx.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [4242]
    );
    // Register 6 is not writable: `refusal = "drop"` closes instead of
    // answering.
    assert!(ctx.write_single_register(6, 1).await.is_err());
    let mut ctx = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        ctx.read_holding_registers(6, 1).await.unwrap().unwrap(),
        [1006]
    );
}

#[tokio::test]
async fn unknown_source_address_is_refused() {
    let (_server, gw) = setup().await;
    let mut s = tcp_from([127, 0, 0, 3], gw.addr).await;
    let _ = s.write_all(&codec::encode(1, 1, &[3, 0, 0, 0, 1])).await;
    assert!(closed(&mut s).await.is_empty());
    assert_eq!(gw.refusals(), [ViolationKind::UnknownDevice]);
}

#[tokio::test]
async fn malformed_mbap_closes_the_connection() {
    let (_server, gw) = setup().await;
    // Protocol id 1.
    let mut s = tcp_from([127, 0, 0, 1], gw.addr).await;
    s.write_all(&[0, 1, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1])
        .await
        .unwrap();
    assert!(closed(&mut s).await.is_empty());
    // A read whose MBAP length also covers a write (request smuggling),
    // from the device that may write register 5: closed, and the server
    // never sees the write.
    let mut s = tcp_from([127, 0, 0, 2], gw.addr).await;
    let mut pdu = vec![3, 0, 0, 0, 1];
    pdu.extend_from_slice(&[6, 0, 5, 0x0b, 0xad]);
    s.write_all(&codec::encode(1, 1, &pdu)).await.unwrap();
    assert!(closed(&mut s).await.is_empty());
    // Quantity 0.
    let mut s = tcp_from([127, 0, 0, 1], gw.addr).await;
    s.write_all(&codec::encode(1, 1, &[3, 0, 0, 0, 0]))
        .await
        .unwrap();
    assert!(closed(&mut s).await.is_empty());
    assert_eq!(gw.refusals(), [ViolationKind::Malformed; 3]);
    let mut ctx = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        ctx.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );
}

/// Per-device counters (metrics module): what was forwarded, refused and
/// relayed back, and the open connection while it is open.
#[tokio::test]
async fn counters_follow_real_traffic() {
    use gateway::metrics::Protocol;
    let (_server, gw) = setup().await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    ctx.read_holding_registers(0, 10).await.unwrap().unwrap();
    ctx.read_input_registers(2, 3).await.unwrap().unwrap();
    assert_eq!(
        ctx.read_holding_registers(50, 2).await.unwrap(),
        Err(ExceptionCode::IllegalDataAddress)
    );
    let reader = gw.metrics.device(Protocol::Modbus, "reader");
    assert_eq!(reader.accepted_total(), 2);
    assert_eq!(reader.refused_total(ViolationKind::NotAuthorized), 1);
    let text = gw.metrics.render(&[]);
    let l = "protocol=\"modbus\",device=\"reader\"";
    for line in [
        format!("bulwark_gateway_accepted_total{{{l}}} 2"),
        // Two read requests of 12 bytes each (MBAP 7 + PDU 5).
        format!("bulwark_gateway_bytes_total{{{l},direction=\"in\"}} 24"),
        // Responses: 7 + 2 + 20 and 7 + 2 + 6 bytes; the gateway's own
        // exception answer is not server traffic.
        format!("bulwark_gateway_bytes_total{{{l},direction=\"out\"}} 44"),
        format!("bulwark_gateway_connections{{{l}}} 1"),
        format!("bulwark_gateway_refused_total{{{l},reason=\"not-authorized\"}} 1"),
    ] {
        assert!(text.lines().any(|t| t == line), "missing {line}:\n{text}");
    }
    drop(ctx);
    let gone = format!("bulwark_gateway_connections{{{l}}} 0");
    let mut closed = false;
    for _ in 0..100 {
        if gw.metrics.render(&[]).contains(&gone) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "{}", gw.metrics.render(&[]));
}
