//! Load generator for the device agent (`bench/agent.sh` runs it).
//!
//! Default mode: provisions a development unit (software keystore) in a
//! temporary directory, starts the agent on its own 2-thread runtime on
//! loopback and drives it from a second 2-thread runtime in the same
//! process (client and server share the machine):
//! - authenticated `GET /api/v1/status` with 1, 16 and 128 concurrent
//!   clients, each one keep-alive TLS connection authenticated as a
//!   machine client (a service certificate), for a fixed duration per
//!   level; prints requests per second and p50/p99 latency;
//! - full TLS handshakes per second (a new connection each time, no
//!   resumption), with and without a client certificate.
//!
//! The per-client rate limit is keyed on the peer address, so each client
//! connects from its own loopback address (127.0.0.2, 127.0.0.3, ...) and
//! the limits are raised to their maxima (10000 requests per second and
//! burst per client, 4096 requests in flight); any non-200 answer is
//! counted and printed.
//!
//! `drive` mode: claims a running `bulwark agent` started on embedded
//! defaults, logs in and sends paced status requests on one connection
//! (for the resident-memory measurement):
//! `status drive --state DIR [--addr 127.0.0.1:8443] [--requests 1000] [--rate 19]`.
//!
//! Options of the default mode: `--secs N` (per level, default 5),
//! `--levels 1,16,128`, `--handshake-clients N` (default 4).

// Bench code: a panic is the failure report.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_config::{PERMISSIONS, ServiceEntry};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use identity::tls::TlsIdentity;
use identity::x509::to_pem;
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const SERVICE: &str = "bench-client";

fn main() {
    // `cargo bench` passes `--bench`; ignore it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("drive") {
        drive(&args[1..]);
    } else {
        load(&args);
    }
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The source address of client `i`: its own loopback address.
fn source(i: usize) -> SocketAddr {
    let n = i + 2;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250) as u8)),
        0,
    )
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect_tls(
    from: SocketAddr,
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<Tls> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(from)?;
    let tcp = socket.connect(to).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("device").unwrap(), tcp)
        .await
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    not_ok: u64,
    failed: u64,
}

async fn status_client(
    from: SocketAddr,
    to: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    token: Option<String>,
    start: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let tls = connect_tls(from, to, &config).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let mut tally = Tally::default();
    start.wait().await;
    while !stop.load(Ordering::Relaxed) {
        let mut builder = Request::get("/api/v1/status").header("host", "device");
        if let Some(token) = &token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let request = builder.body(Empty::<Bytes>::new()).unwrap();
        let began = Instant::now();
        let outcome = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        }
        .await;
        let took = began.elapsed();
        match outcome {
            Ok(StatusCode::OK) => tally
                .latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX)),
            Ok(_) => tally.not_ok += 1,
            Err(_) => {
                tally.failed += 1;
                break;
            }
        }
    }
    driver.abort();
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

async fn status_level(
    clients: usize,
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    window: Duration,
) {
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(status_client(
                source(i),
                to,
                config.clone(),
                None,
                start.clone(),
                stop.clone(),
            ))
        })
        .collect();
    start.wait().await;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.unwrap();
        all.latencies_us.extend(t.latencies_us);
        all.not_ok += t.not_ok;
        all.failed += t.failed;
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len() as f64;
    println!(
        "GET /api/v1/status, {clients:>3} keep-alive clients: {:>7.0} ok/s  p50 {:>6.3} ms  p99 {:>6.3} ms  ({} ok; {} non-200 = {:.0} answers/s in all; {} failed; {elapsed:.1} s)",
        ok / elapsed,
        percentile(&all.latencies_us, 50.0),
        percentile(&all.latencies_us, 99.0),
        all.latencies_us.len(),
        all.not_ok,
        (ok + all.not_ok as f64) / elapsed,
        all.failed,
    );
}

/// One full handshake, then a clean close; waits for the server's close
/// so the server side of the handshake is finished too.
async fn handshake_once(
    from: SocketAddr,
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<()> {
    let mut tls = connect_tls(from, to, config).await?;
    tls.shutdown().await?;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn handshakes(
    what: &str,
    clients: usize,
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    window: Duration,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let config = config.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match handshake_once(source(i), to, &config).await {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed += f;
    }
    let elapsed = began.elapsed().as_secs_f64();
    println!(
        "full TLS handshakes, {what}, {clients} clients: {:>7.0} /s  ({ok} ok, {failed} failed, {elapsed:.1} s)",
        ok as f64 / elapsed
    );
}

fn load(args: &[String]) {
    let secs: u64 = option(args, "--secs").map_or(5, |s| s.parse().unwrap());
    let window = Duration::from_secs(secs);
    let levels: Vec<usize> = option(args, "--levels")
        .unwrap_or("1,16,128")
        .split(',')
        .map(|l| l.parse().unwrap())
        .collect();
    let handshake_clients: usize =
        option(args, "--handshake-clients").map_or(4, |s| s.parse().unwrap());

    let device = support::Device::provision();
    // The machine client's key lives in a software keystore too.
    let label: keys::KeyLabel = "bench-client".parse().unwrap();
    device
        .ca_keys
        .generate(&label, Algorithm::EcdsaP256Sha256)
        .unwrap();
    let store: Arc<dyn KeyStore> = device.ca_keys.clone();
    let client_key = KeyRef::new(store, label).unwrap();
    let cert = device
        .ca
        .issue_service(SERVICE, &[], client_key.public_key(), 1)
        .unwrap();
    let client_identity = TlsIdentity {
        chain: vec![cert, device.ca.issuing().clone()],
        key: client_key,
    };
    let anchor_file = device.path().join("service-anchor.pem");
    std::fs::write(&anchor_file, to_pem(&device.root())).unwrap();

    let mut file = device.file();
    file.tls.service_anchors = vec![anchor_file];
    file.services = vec![ServiceEntry {
        identity: SERVICE.to_owned(),
        grants: PERMISSIONS.iter().map(|p| (*p).to_owned()).collect(),
    }];
    file.api.per_client_rps = 10_000;
    file.api.per_client_burst = 10_000;
    file.api.max_concurrent_requests = 4096;
    file.validate().unwrap();

    let server = runtime();
    let agent = server.block_on(device.start_with(file));
    let addr = server
        .block_on(agent.local_addr(agent::MANAGEMENT_API))
        .unwrap();

    let root = device.root();
    let mut mtls = support::client_config(&root, Some(&client_identity));
    mtls.resumption = rustls::client::Resumption::disabled();
    let mtls = Arc::new(mtls);
    let mut anonymous = support::client_config(&root, None);
    anonymous.resumption = rustls::client::Resumption::disabled();
    let anonymous = Arc::new(anonymous);

    println!(
        "agent on {addr}; {} CPUs; client and server in one process on 2 + 2 runtime threads; {secs} s per level",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let client = runtime();
    client.block_on(async {
        // Warm-up: connections, allocator, caches.
        status_level(4, addr, &mtls, Duration::from_secs(1)).await;
        for clients in levels {
            status_level(clients, addr, &mtls, window).await;
        }
        handshakes(
            "client certificate (mutual TLS)",
            handshake_clients,
            addr,
            &mtls,
            window,
        )
        .await;
        handshakes(
            "server certificate only",
            handshake_clients,
            addr,
            &anonymous,
            window,
        )
        .await;
    });
    drop(client);
    server.block_on(agent.shutdown());
}

/// Claims and logs in to a running `bulwark agent` on embedded defaults,
/// then sends paced status requests on the logged-in connection.
fn drive(args: &[String]) {
    let state = std::path::PathBuf::from(option(args, "--state").expect("--state DIR"));
    let addr: SocketAddr = option(args, "--addr")
        .unwrap_or("127.0.0.1:8443")
        .parse()
        .unwrap();
    let requests: u64 = option(args, "--requests").map_or(1000, |s| s.parse().unwrap());
    let rate: u64 = option(args, "--rate").map_or(19, |s| s.parse().unwrap());
    let identity = identity::provision::load(&state).unwrap();
    let root: CertificateDer<'static> = identity.chain.last().unwrap().clone();
    let label = std::fs::read_to_string(state.join("label.txt")).unwrap();
    let secret = label
        .lines()
        .find_map(|l| l.strip_prefix("setup-secret: "))
        .unwrap()
        .trim()
        .to_owned();
    runtime().block_on(async {
        let mut client =
            support::Client::connect_with(addr, support::client_config(&root, None)).await;
        let claimed = client.claim(&secret).await;
        assert!(
            matches!(claimed.status, StatusCode::CREATED | StatusCode::CONFLICT),
            "claim: {:?}",
            claimed.body
        );
        let login = client.login("owner", support::OWNER_PASSWORD).await;
        assert_eq!(login.status, StatusCode::OK, "login: {:?}", login.body);
        let pace = Duration::from_micros(1_000_000 / rate.max(1));
        let mut ticker = tokio::time::interval(pace);
        let (mut ok, mut other) = (0u64, 0u64);
        for _ in 0..requests {
            ticker.tick().await;
            let reply = client
                .raw(hyper::Method::GET, "/api/v1/status", &[], Vec::new())
                .await;
            if reply.status == StatusCode::OK {
                ok += 1;
            } else {
                other += 1;
            }
        }
        println!("{ok} status requests answered 200, {other} otherwise");
    });
}
