//! MQTT load generator for `bench/gateway.sh`: N publishers, one
//! subscriber, end-to-end latency publisher → broker → subscriber and
//! loss, at a fixed aggregate rate or closed loop. One run per process;
//! prints one `key=value` line.
//!
//! A minimal MQTT 3.1.1 client of its own (CONNECT, PUBLISH QoS 0/1,
//! PUBACK, SUBSCRIBE) rather than rumqttc: no client-side queue between
//! the timestamp and the socket, one write per message on every path, and
//! little CPU taken from the broker and gateway on a shared machine.
//!
//! ```text
//! mqtt_load addr=127.0.0.1:PORT sub=127.0.0.1:PORT pubs=N qos=0|1
//!           (rate=MSGS_PER_S | window=W) secs=S [warmup=S]
//!           [tls=keystore:DIR | tls=pem:DIR] [gateway_pid=P] [broker_pid=P]
//!           [clk_tck=100] [label=TEXT]
//! ```
//!
//! - Payload: 100 bytes carrying run id, publisher, sequence number and
//!   the send time (taken right before the write), on one monotonic
//!   clock shared by publishers and subscriber (same process).
//! - `rate`: aggregate messages per second, spread evenly over the
//!   publishers (tokio's timer has 1 ms granularity, so a publisher
//!   above 1,000 msg/s sends small bursts each millisecond).
//! - `window`: closed loop; each publisher keeps at most W messages sent
//!   but not yet seen by the subscriber (the same rule for QoS 0 and 1).
//!   At QoS 1 the publisher also reads every PUBACK.
//! - Latency and throughput count messages sent after `warmup`; CPU of
//!   the gateway and broker processes (`/proc/<pid>/stat` utime+stime) is
//!   read at the end of the warm-up and after the last message arrived,
//!   and divided by the messages of that window.
//! - The subscriber always connects to `sub` over plain TCP: it stands
//!   for the back end, on the broker's side of the gateway.
//! - `tls=keystore:DIR`: device certificates `sensor-i` that
//!   `bench_gateway` made, keys from its software keystore;
//!   `tls=pem:DIR`: `ca.pem`, `client.pem`, `client.key` (openssl-made,
//!   for Mosquitto's own TLS listener).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway::mqtt::codec::{self, PacketType};
use hdrhistogram::Histogram;
use identity::tls::TlsIdentity;
use keys::{KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Notify};

const PAYLOAD: usize = 100;
const MAX_FRAME: usize = 1 << 20;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Clone)]
enum Tls {
    None,
    Keystore(PathBuf, Arc<SoftKeyStore>),
    Pem(Arc<rustls::ClientConfig>),
}

struct Args {
    addr: SocketAddr,
    sub: SocketAddr,
    pubs: usize,
    qos: u8,
    rate: Option<f64>,
    window: Option<u64>,
    secs: f64,
    warmup: f64,
    tls: Tls,
    gateway_pid: Option<u32>,
    broker_pid: Option<u32>,
    clk_tck: f64,
    label: String,
}

fn parse_args() -> Args {
    let mut kv: HashMap<String, String> = HashMap::new();
    for a in std::env::args().skip(1) {
        let (k, v) = a
            .split_once('=')
            .unwrap_or_else(|| panic!("argument {a:?} is not key=value"));
        kv.insert(k.into(), v.into());
    }
    let get = |k: &str| kv.get(k).map(String::as_str);
    let need = |k: &str| get(k).unwrap_or_else(|| panic!("missing argument {k}=..."));
    let tls = match get("tls") {
        None => Tls::None,
        Some(t) => match t.split_once(':') {
            Some(("keystore", dir)) => {
                let dir = PathBuf::from(dir);
                let keys = SoftKeyStore::open(&dir.join("keys"), KekProtection::File)
                    .expect("opening bench_gateway's keystore");
                Tls::Keystore(dir, Arc::new(keys))
            }
            Some(("pem", dir)) => Tls::Pem(pem_config(Path::new(dir))),
            _ => panic!("tls= must be keystore:DIR or pem:DIR"),
        },
    };
    let args = Args {
        addr: need("addr").parse().expect("addr=host:port"),
        sub: need("sub").parse().expect("sub=host:port"),
        pubs: need("pubs").parse().expect("pubs=N"),
        qos: need("qos").parse().expect("qos=0|1"),
        rate: get("rate").map(|r| r.parse().expect("rate=msgs/s")),
        window: get("window").map(|w| w.parse().expect("window=N")),
        secs: need("secs").parse().expect("secs=S"),
        warmup: get("warmup").map_or(1.0, |w| w.parse().expect("warmup=S")),
        tls,
        gateway_pid: get("gateway_pid").map(|p| p.parse().expect("gateway_pid")),
        broker_pid: get("broker_pid").map(|p| p.parse().expect("broker_pid")),
        clk_tck: get("clk_tck").map_or(100.0, |c| c.parse().expect("clk_tck")),
        label: get("label").unwrap_or("run").into(),
    };
    assert!(args.qos <= 1, "qos must be 0 or 1");
    assert!(
        args.rate.is_some() != args.window.is_some(),
        "give exactly one of rate= and window="
    );
    args
}

/// Client configuration for Mosquitto's TLS listener from openssl PEM
/// files, on the same rustls provider the gateway uses.
fn pem_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca.pem") {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.join("client.pem"))
        .expect("client.pem")
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).expect("client.key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(identity::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}

fn keystore_config(dir: &Path, keys: &Arc<SoftKeyStore>, id: &str) -> Arc<rustls::ClientConfig> {
    let der = |name: String| CertificateDer::from(std::fs::read(dir.join(&name)).expect(&name));
    let store: Arc<dyn KeyStore> = keys.clone();
    let key = KeyRef::new(store, format!("dev-{id}").parse().unwrap()).unwrap();
    let identity = TlsIdentity {
        chain: vec![der(format!("{id}.0.der")), der(format!("{id}.1.der"))],
        key,
    };
    Arc::new(identity::tls::client_config(&identity, &[der("root.der".into())]).unwrap())
}

async fn connect(addr: SocketAddr, tls: &Tls, client_id: &str) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    tcp.set_nodelay(true).unwrap();
    let config = match tls {
        Tls::None => None,
        Tls::Keystore(dir, keys) => Some(keystore_config(dir, keys, client_id)),
        Tls::Pem(c) => Some(c.clone()),
    };
    let mut s: Box<dyn Stream> = match config {
        None => Box::new(tcp),
        Some(c) => {
            let name = ServerName::IpAddress(addr.ip().into());
            Box::new(
                tokio_rustls::TlsConnector::from(c)
                    .connect(name, tcp)
                    .await
                    .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}")),
            )
        }
    };
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60 s.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    s.write_all(&frame(0x10, &body)).await.unwrap();
    let mut buf = Vec::new();
    let (kind, body) = read_frame(&mut s, &mut buf).await.expect("CONNACK");
    assert!(
        kind == PacketType::Connack && body.get(1) == Some(&0),
        "{client_id}: connection refused ({kind:?} {body:?})"
    );
    s
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    codec::encode_remaining(body.len(), &mut f);
    f.extend_from_slice(body);
    f
}

/// Reads one whole frame (for the handshake; the hot loops parse in bulk).
async fn read_frame(s: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> Option<(PacketType, Vec<u8>)> {
    loop {
        if let Some(h) = codec::frame_header(buf, MAX_FRAME).unwrap()
            && buf.len() >= h.frame_len()
        {
            let body = buf[h.header_len..h.frame_len()].to_vec();
            buf.drain(..h.frame_len());
            return Some((h.kind, body));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Shared between the publishers and the subscriber.
struct Shared {
    run: u32,
    epoch: Instant,
    /// Send times before this (ns since `epoch`) are warm-up.
    measure_from: u64,
    /// Per publisher: messages the subscriber has seen.
    received: Vec<AtomicU64>,
    /// Per publisher: woken when the subscriber sees one of its messages.
    wake: Vec<Notify>,
    hist: Mutex<Histogram<u64>>,
    duplicates: AtomicU64,
    stop: AtomicBool,
}

async fn subscriber(
    mut s: Box<dyn Stream>,
    qos: u8,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let filter = b"sensors/+/t";
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter);
    body.push(qos);
    s.write_all(&frame(0x82, &body)).await.unwrap();
    let mut buf = Vec::with_capacity(1 << 16);
    let (kind, _) = read_frame(&mut s, &mut buf).await.expect("SUBACK");
    assert_eq!(kind, PacketType::Suback, "expected SUBACK");
    let _ = ready.send(());
    let mut next_seq = vec![0u64; shared.received.len()];
    let mut lat = Vec::with_capacity(256);
    let mut acks = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = shared.epoch.elapsed().as_nanos() as u64;
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some(h) = codec::frame_header(&buf[at..], MAX_FRAME).unwrap() {
            if buf.len() - at < h.frame_len() {
                break;
            }
            let f = &buf[at + h.header_len..at + h.frame_len()];
            at += h.frame_len();
            if h.kind != PacketType::Publish {
                continue;
            }
            let tlen = usize::from(u16::from_be_bytes([f[0], f[1]]));
            let mut p = 2 + tlen;
            if (h.flags >> 1) & 3 > 0 {
                acks.extend_from_slice(&[0x40, 2, f[p], f[p + 1]]);
                p += 2;
            }
            let pl = &f[p..];
            if pl.len() != PAYLOAD || u32::from_be_bytes(pl[0..4].try_into().unwrap()) != shared.run
            {
                continue;
            }
            let publisher = u32::from_be_bytes(pl[4..8].try_into().unwrap()) as usize;
            let seq = u64::from_be_bytes(pl[8..16].try_into().unwrap());
            let sent = u64::from_be_bytes(pl[16..24].try_into().unwrap());
            if seq < next_seq[publisher] {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            next_seq[publisher] = seq + 1;
            shared.received[publisher].fetch_add(1, Ordering::Release);
            shared.wake[publisher].notify_one();
            if sent >= shared.measure_from {
                lat.push(now.saturating_sub(sent));
            }
        }
        buf.drain(..at);
        if !acks.is_empty() {
            s.write_all(&acks).await.unwrap();
            acks.clear();
        }
        if !lat.is_empty() {
            let mut h = shared.hist.lock().await;
            for l in lat.drain(..) {
                h.record(l.max(1)).unwrap();
            }
        }
    }
}

/// One publisher; returns (messages sent, sent after warm-up, PUBACKs).
async fn publisher(
    i: usize,
    s: Box<dyn Stream>,
    args: Arc<Args>,
    shared: Arc<Shared>,
    end: Instant,
) -> (u64, u64, u64) {
    let (mut rd, mut wr) = tokio::io::split(s);
    let acked = Arc::new(AtomicU64::new(0));
    let reader = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1 << 14);
            let mut chunk = vec![0u8; 1 << 14];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut at = 0;
                while let Some(h) = codec::frame_header(&buf[at..], MAX_FRAME).unwrap() {
                    if buf.len() - at < h.frame_len() {
                        break;
                    }
                    if h.kind == PacketType::Puback {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    at += h.frame_len();
                }
                buf.drain(..at);
            }
        })
    };
    let topic = format!("sensors/sensor-{}/t", i + 1);
    let per_pub = args.rate.map(|r| r / args.pubs as f64);
    let start = Instant::now();
    let (mut seq, mut measured) = (0u64, 0u64);
    let mut msg = Vec::with_capacity(200);
    let mut pid: u16 = 0;
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= end {
            break;
        }
        if let Some(r) = per_pub {
            let due = start + Duration::from_secs_f64(seq as f64 / r);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        } else if let Some(w) = args.window {
            while seq - shared.received[i].load(Ordering::Acquire) >= w {
                if tokio::time::timeout(Duration::from_secs(5), shared.wake[i].notified())
                    .await
                    .is_err()
                {
                    eprintln!("publisher {i}: no delivery for 5 s, stopping");
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        msg.clear();
        msg.push(0x30 | (args.qos << 1));
        let len = 2 + topic.len() + if args.qos > 0 { 2 } else { 0 } + PAYLOAD;
        codec::encode_remaining(len, &mut msg);
        msg.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        msg.extend_from_slice(topic.as_bytes());
        if args.qos > 0 {
            pid = pid.checked_add(1).unwrap_or(1);
            msg.extend_from_slice(&pid.to_be_bytes());
        }
        msg.extend_from_slice(&shared.run.to_be_bytes());
        msg.extend_from_slice(&(i as u32).to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        let now = shared.epoch.elapsed().as_nanos() as u64;
        msg.extend_from_slice(&now.to_be_bytes());
        msg.resize(msg.len() + PAYLOAD - 24, b'x');
        wr.write_all(&msg).await.unwrap();
        seq += 1;
        if now >= shared.measure_from {
            measured += 1;
        }
    }
    wr.flush().await.unwrap();
    // Wait (bounded) for the remaining PUBACKs.
    if args.qos > 0 {
        let deadline = Instant::now() + Duration::from_secs(5);
        while acked.load(Ordering::Relaxed) < seq && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    reader.abort();
    (seq, measured, acked.load(Ordering::Relaxed))
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32, clk_tck: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of proc(5); `after` starts at field 3.
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / clk_tck
}

fn main() {
    let args = Arc::new(parse_args());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(args));
}

async fn run(args: Arc<Args>) {
    let epoch = Instant::now();
    let run_id = std::process::id() ^ (epoch.elapsed().as_nanos() as u32);
    let sub = connect(args.sub, &Tls::None, &format!("bench-sub-{run_id}")).await;
    let mut streams = Vec::new();
    for i in 0..args.pubs {
        streams.push(connect(args.addr, &args.tls, &format!("sensor-{}", i + 1)).await);
    }
    let start = Instant::now() + Duration::from_millis(50);
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.secs);
    let shared = Arc::new(Shared {
        run: run_id,
        epoch,
        measure_from: (warm_end - epoch).as_nanos() as u64,
        received: (0..args.pubs).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..args.pubs).map(|_| Notify::new()).collect(),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()),
        duplicates: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let sub_task = tokio::spawn(subscriber(sub, args.qos, shared.clone(), ready_tx));
    ready_rx.await.expect("subscriber ready");
    tokio::time::sleep_until(start.into()).await;
    let mut tasks = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        tasks.push(tokio::spawn(publisher(
            i,
            s,
            args.clone(),
            shared.clone(),
            end,
        )));
    }
    tokio::time::sleep_until(warm_end.into()).await;
    let cpu = |pid: Option<u32>| pid.map(|p| cpu_secs(p, args.clk_tck));
    let (gw0, br0) = (cpu(args.gateway_pid), cpu(args.broker_pid));
    let mut sent = 0;
    let mut sent_measured = 0;
    let mut acked = 0;
    for t in tasks {
        let (s, m, a) = t.await.unwrap();
        sent += s;
        sent_measured += m;
        acked += a;
    }
    let stopped = Instant::now();
    // Drain: every message sent should arrive (bounded wait).
    let received = || {
        shared
            .received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .sum::<u64>()
    };
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while received() < sent && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let window = (stopped.min(end) - warm_end).as_secs_f64();
    let (gw1, br1) = (cpu(args.gateway_pid), cpu(args.broker_pid));
    sub_task.abort();
    let rcvd = received();
    let h = shared.hist.lock().await;
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let per_msg = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if sent_measured > 0 => {
            format!("{:.2}", (b - a) * 1e6 / sent_measured as f64)
        }
        _ => "-".into(),
    };
    println!(
        "label={} pubs={} qos={} mode={} sent={} received={} lost={} dup={} unacked={} \
         measured={} msgs_per_s={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} \
         gateway_cpu_us_per_msg={} broker_cpu_us_per_msg={}",
        args.label,
        args.pubs,
        args.qos,
        args.rate.map_or_else(
            || format!("window{}", args.window.unwrap_or(0)),
            |r| format!("rate{r}")
        ),
        sent,
        rcvd,
        sent.saturating_sub(rcvd),
        shared.duplicates.load(Ordering::Relaxed),
        if args.qos > 0 {
            sent - acked.min(sent)
        } else {
            0
        },
        h.len(),
        sent_measured as f64 / window,
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3,
        per_msg(gw0, gw1),
        per_msg(br0, br1),
    );
}
