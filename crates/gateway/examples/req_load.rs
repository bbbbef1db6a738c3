//! Request/response latency straight to a Modbus TCP or CoAP server and
//! through the gateway, with the same client, side by side in one run
//! (for `bench/gateway.sh`).
//!
//! ```text
//! req_load modbus DIRECT_ADDR GATEWAY_ADDR REQUESTS
//! req_load coap   DIRECT_ADDR GATEWAY_ADDR REQUESTS
//! ```
//!
//! One request outstanding at a time on each path; the paths take turns
//! in rounds of 100 requests, so the shared machine's noise falls on
//! both alike. Modbus: Read Holding Registers 0..9 of unit 1 with
//! tokio-modbus over one TCP connection per path (TCP_NODELAY). CoAP: a
//! Confirmable GET /time from its own UDP socket per path, a fresh
//! message id and token each time; a request unanswered within 1 s
//! counts as lost. Prints one `key=value` line per path.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::coap::codec::{self, MessageType, Method, option};
use hdrhistogram::Histogram;
use tokio::net::{TcpStream, UdpSocket};
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader};

const ROUND: usize = 100;

enum Client {
    Modbus(Context),
    Coap { socket: UdpSocket, next_id: u16 },
}

impl Client {
    async fn new(kind: &str, addr: SocketAddr) -> Self {
        match kind {
            "modbus" => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
                tcp.set_nodelay(true).unwrap();
                Self::Modbus(tokio_modbus::client::tcp::attach_slave(tcp, Slave(1)))
            }
            "coap" => {
                let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                socket.connect(addr).await.unwrap();
                Self::Coap { socket, next_id: 1 }
            }
            _ => panic!("kind must be modbus or coap"),
        }
    }

    /// One request and its answer; false if it failed or timed out.
    async fn request(&mut self) -> bool {
        match self {
            Self::Modbus(ctx) => matches!(
                tokio::time::timeout(Duration::from_secs(1), ctx.read_holding_registers(0, 10)).await,
                Ok(Ok(Ok(regs))) if regs.len() == 10
            ),
            Self::Coap { socket, next_id } => {
                let id = *next_id;
                *next_id = next_id.wrapping_add(1);
                let token = u32::from(id).to_be_bytes();
                let req = codec::encode(
                    MessageType::Confirmable,
                    Method::Get.code(),
                    id,
                    &token,
                    &[(option::URI_PATH, b"time")],
                    &[],
                );
                socket.send(&req).await.unwrap();
                let mut buf = [0u8; 1500];
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let Ok(Ok(n)) = tokio::time::timeout(left, socket.recv(&mut buf)).await else {
                        return false;
                    };
                    if let Ok(m) = codec::parse(&buf[..n])
                        && m.message_id == id
                        && m.mtype == MessageType::Acknowledgement
                    {
                        return m.code.0 >> 5 == 2;
                    }
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, direct, via, n] = args.as_slice() else {
        eprintln!("usage: req_load modbus|coap DIRECT_ADDR GATEWAY_ADDR REQUESTS");
        std::process::exit(2);
    };
    let direct: SocketAddr = direct.parse().expect("DIRECT_ADDR");
    let via: SocketAddr = via.parse().expect("GATEWAY_ADDR");
    let n: usize = n.parse().expect("REQUESTS");
    // Message ids must not repeat within the exchange lifetime.
    assert!(
        kind != "coap" || n < 60_000,
        "at most 60,000 CoAP requests per run"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut paths = [
            ("direct", Client::new(kind, direct).await, hist(), 0u64),
            ("gateway", Client::new(kind, via).await, hist(), 0u64),
        ];
        // Warm-up: connections, caches, the server's first answers.
        for (name, c, _, _) in &mut paths {
            let mut failed = 0;
            for _ in 0..ROUND {
                if !c.request().await {
                    failed += 1;
                    assert!(failed < 5, "{name}: {kind} requests fail in the warm-up");
                }
            }
        }
        for _ in 0..n.div_ceil(ROUND) {
            for (name, c, h, failed) in &mut paths {
                for _ in 0..ROUND {
                    let t0 = Instant::now();
                    if c.request().await {
                        h.record(t0.elapsed().as_nanos() as u64).unwrap();
                    } else {
                        *failed += 1;
                        assert!(*failed < 20, "{name}: 20 {kind} requests failed, giving up");
                    }
                }
            }
        }
        for (name, _, h, failed) in &paths {
            println!(
                "proto={kind} path={name} requests={} failed={failed} p50_us={:.1} p99_us={:.1} max_us={:.1}",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3
            );
        }
    });
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}
