//! Publish latency and throughput through the gateway against the same
//! client straight to Mosquitto, in one run, with the ratio; plus the
//! inspection layer alone (framing + policy per packet, in process).
//!
//! `cargo bench -p gateway --bench gateway` (`-- inspect`: the in-process
//! inspection rate only). Latency is end to end,
//! publisher→broker→subscriber, one message in flight at a time, so it
//! includes acknowledgement-free delivery but no client-side queueing.
//! The gateway path adds mutual TLS on the device leg; the direct path is
//! plain TCP (the software keystore cannot hand Mosquitto a key file).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::mqtt::codec::{self, MAX_REMAINING_LENGTH};
use gateway::{PeerIdentity, Policy, Session};
use rumqttc::TlsConfiguration;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::{Gateway, Mosquitto, Pki};
use tokio::sync::mpsc;

const PAYLOAD: usize = 100;
const LATENCY_MSGS: usize = 2_000;
const THROUGHPUT_MSGS: usize = 20_000;
const INSPECT_PACKETS: usize = 2_000_000;

const POLICY: &str = r#"
[limits]
messages_per_second = 10000000
bytes_per_second = 4000000000
[groups.sensors]
publish = ["sensors/%c/#"]
max_qos = 1
[[devices]]
name = "sensor-1"
identity = "sensor-1"
group = "sensors"
"#;

/// Starts an event loop; returns the client and a receiver of the
/// arrival time of each incoming PUBLISH. Waits for CONNACK.
async fn client(opts: MqttOptions) -> (AsyncClient, mpsc::UnboundedReceiver<Instant>) {
    let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    if tx.send(Instant::now()).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("event loop ended: {e}");
                    return;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("CONNACK in time")
        .expect("connected");
    (client, rx)
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_max_packet_size(Some(1 << 20));
    o
}

/// A publisher and the arrival times at a subscriber on the broker.
struct Path {
    publ: AsyncClient,
    arrivals: mpsc::UnboundedReceiver<Instant>,
    lat: Vec<Duration>,
}

async fn path(publisher: MqttOptions, broker: &Mosquitto, tag: &str) -> Path {
    let (sub, mut arrivals) = client(options(&format!("sub-{tag}"), broker.port)).await;
    sub.subscribe(format!("sensors/{tag}/#"), QoS::AtLeastOnce)
        .await
        .unwrap();
    std::mem::forget(sub); // keep the subscription for the whole run
    let (publ, _) = client(publisher).await;
    // Until the SUBACK has landed, messages are lost: retry (bounded).
    for _ in 0..50 {
        publ.publish(
            format!("sensors/{tag}/t"),
            QoS::AtMostOnce,
            false,
            vec![b'x'; PAYLOAD],
        )
        .await
        .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), arrivals.recv())
            .await
            .is_ok()
        {
            break;
        }
    }
    while arrivals.try_recv().is_ok() {}
    Path {
        publ,
        arrivals,
        lat: Vec::with_capacity(LATENCY_MSGS),
    }
}

impl Path {
    async fn latency(&mut self, n: usize, topic: &str) {
        for _ in 0..n {
            let t0 = Instant::now();
            self.publ
                .publish(topic, QoS::AtMostOnce, false, vec![b'x'; PAYLOAD])
                .await
                .unwrap();
            let t1 = tokio::time::timeout(Duration::from_secs(5), self.arrivals.recv())
                .await
                .expect("message lost")
                .unwrap();
            self.lat.push(t1 - t0);
        }
    }

    async fn throughput(&mut self, topic: &str) -> f64 {
        let start = Instant::now();
        for _ in 0..THROUGHPUT_MSGS {
            self.publ
                .publish(topic, QoS::AtLeastOnce, false, vec![b'x'; PAYLOAD])
                .await
                .unwrap();
        }
        for _ in 0..THROUGHPUT_MSGS {
            tokio::time::timeout(Duration::from_secs(30), self.arrivals.recv())
                .await
                .expect("message lost")
                .unwrap();
        }
        THROUGHPUT_MSGS as f64 / start.elapsed().as_secs_f64()
    }

    fn percentile(&mut self, p: usize) -> Duration {
        self.lat.sort();
        self.lat[self.lat.len() * p / 100]
    }
}

/// Packets per second of wall time and per second of this thread's CPU.
fn inspection_rate() -> (f64, f64) {
    let policy = Arc::new(Policy::from_toml(POLICY, "bench").unwrap());
    let mut session = Session::new(PeerIdentity {
        names: vec!["sensor-1".into()],
    });
    let mut connect = vec![0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 8];
    connect.extend_from_slice(b"sensor-1");
    let h = codec::frame_header(&connect, MAX_REMAINING_LENGTH)
        .unwrap()
        .unwrap();
    session.inspect(&policy, &h, &connect).unwrap();
    let topic = b"sensors/sensor-1/temperature";
    let mut publish = vec![0x30];
    codec::encode_remaining(2 + topic.len() + PAYLOAD, &mut publish);
    publish.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    publish.extend_from_slice(topic);
    publish.extend_from_slice(&[b'x'; PAYLOAD]);
    let start = Instant::now();
    let cpu = thread_cpu_ns();
    for _ in 0..INSPECT_PACKETS {
        let h = codec::frame_header(std::hint::black_box(&publish), 65_536)
            .unwrap()
            .unwrap();
        std::hint::black_box(session.inspect(&policy, &h, &publish).unwrap());
    }
    let wall = start.elapsed().as_secs_f64();
    let n = INSPECT_PACKETS as f64;
    (
        n / wall,
        thread_cpu_ns().map_or(n / wall, |c1| n / ((c1 - cpu.unwrap_or(0)) as f64 / 1e9)),
    )
}

/// CPU time of the calling thread (ns, first field of
/// `/proc/thread-self/schedstat`): the rate per core on a shared machine,
/// where wall time includes waiting for a CPU.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU nanoseconds per `DeviceDetector::observe_at` on a learned
/// baseline with known activities (the per-packet cost in the proxies: a
/// clock read, the device's lock, one hash lookup, the running
/// statistics): MQTT topic, Modbus read, and MQTT with the time given
/// (the detector alone).
fn anomaly_observe_ns() -> (f64, f64, f64) {
    use gateway::anomaly::{DeviceDetector, Observation, What};
    use gateway::modbus::codec::{Request, Span};
    let n = INSPECT_PACKETS;
    // This thread's CPU time per packet (wall time if unavailable).
    let per_packet = |run: &mut dyn FnMut()| {
        let (wall, cpu) = (Instant::now(), thread_cpu_ns());
        run();
        let wall = wall.elapsed().as_nanos() as f64;
        thread_cpu_ns().map_or(wall, |c1| (c1 - cpu.unwrap_or(0)) as f64) / n as f64
    };
    let mut rule = Policy::from_toml("", "bench").unwrap().anomaly;
    rule.learning = Duration::ZERO;
    let topics: Vec<String> = (0..8).map(|i| format!("sensors/sensor-1/t{i}")).collect();
    let d = DeviceDetector::detached("sensor-1");
    for t in &topics {
        d.observe_at(&rule, What::Topic(t), PAYLOAD, tokio::time::Instant::now());
    }
    let mqtt = per_packet(&mut || {
        for i in 0..n {
            let what = What::Topic(std::hint::black_box(&topics[i % topics.len()]));
            let now = tokio::time::Instant::now();
            std::hint::black_box(d.observe_at(&rule, what, PAYLOAD, now));
        }
    });
    let m = DeviceDetector::detached("plc");
    let request = Request::ReadHoldingRegisters(Span {
        start: 0,
        quantity: 10,
    });
    let modbus = per_packet(&mut || {
        for _ in 0..n {
            let what = What::Modbus { unit: 1, request };
            let now = tokio::time::Instant::now();
            std::hint::black_box(m.observe_at(&rule, std::hint::black_box(what), 5, now));
        }
    });
    let mut obs = Observation {
        what: What::Topic(&topics[0]),
        size: PAYLOAD,
        at: tokio::time::Instant::now(),
        hour: 10,
    };
    let alone = per_packet(&mut || {
        for i in 0..n {
            obs.what = What::Topic(std::hint::black_box(&topics[i % topics.len()]));
            obs.at += Duration::from_micros(10);
            std::hint::black_box(d.observe(&rule, &obs));
        }
    });
    (mqtt, modbus, alone)
}

fn main() {
    // `-- inspect`: the inspection line alone, median of 3 (bench/gateway.sh).
    if std::env::args().any(|a| a == "inspect") {
        let mut r: Vec<(f64, f64)> = (0..3).map(|_| inspection_rate()).collect();
        r.sort_by(|a, b| a.1.total_cmp(&b.1));
        println!(
            "inspection in process (frame + policy per {PAYLOAD}-byte QoS 0 PUBLISH, 1 thread, median of 3): \
             {:.2} M packets per CPU-second (aim 10 M per core: ratio {:.2}); {:.2} M per wall second",
            r[1].1 / 1e6,
            r[1].1 / 1e7,
            r[1].0 / 1e6
        );
        return;
    }
    // `-- anomaly`: the behaviour-baseline cost per packet alone.
    if std::env::args().any(|a| a == "anomaly") {
        let (mqtt, modbus, alone) = anomaly_observe_ns();
        println!(
            "anomaly observe per packet (learned baseline, known activity, CPU time of 1 thread): \
             MQTT topic {mqtt:.0} ns, Modbus read {modbus:.0} ns with a clock read; \
             {alone:.0} ns with the time given"
        );
        return;
    }
    let (rate, _) = inspection_rate();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = Pki::new();
        let broker = Mosquitto::start();
        let gw = Gateway::start(&pki, broker.addr(), POLICY).await;

        // Both paths set up at once and measured in alternating rounds,
        // so the shared machine's noise falls on both alike.
        let mut direct = path(options("direct", broker.port), &broker, "direct").await;
        let mut via = options("sensor-1", gw.port);
        via.set_transport(rumqttc::Transport::tls_with_config(
            TlsConfiguration::Rustls(pki.device_tls(&pki.ca, "sensor-1")),
        ));
        let mut gateway = path(via, &broker, "sensor-1").await;
        const ROUNDS: usize = 4;
        let (mut direct_tput, mut gateway_tput) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            direct.latency(LATENCY_MSGS / ROUNDS, "sensors/direct/t").await;
            gateway.latency(LATENCY_MSGS / ROUNDS, "sensors/sensor-1/t").await;
        }
        for _ in 0..3 {
            direct_tput.push(direct.throughput("sensors/direct/t").await);
            gateway_tput.push(gateway.throughput("sensors/sensor-1/t").await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (dt, gt) = (median(&mut direct_tput), median(&mut gateway_tput));
        let (d50, d99, g50, g99) = (
            direct.percentile(50),
            direct.percentile(99),
            gateway.percentile(50),
            gateway.percentile(99),
        );
        println!(
            "MQTT publish, {PAYLOAD}-byte payload, rumqttc 0.25 → Mosquitto 2.0 (TCP_NODELAY)"
        );
        println!(
            "latency QoS 0, {LATENCY_MSGS} msgs one at a time: direct p50 {:>7.1} µs p99 {:>7.1} µs",
            micros(d50),
            micros(d99)
        );
        println!(
            "                                     gateway p50 {:>7.1} µs p99 {:>7.1} µs  (+{:.1} µs at p50)",
            micros(g50),
            micros(g99),
            micros(g50) - micros(d50)
        );
        println!(
            "throughput QoS 1, {THROUGHPUT_MSGS} msgs closed loop (median of 3): direct {:>9.0} msg/s, gateway {:>9.0} msg/s, ratio {:.2}",
            dt,
            gt,
            gt / dt
        );
        println!(
            "inspection in process (frame + policy, 1 core): {:.2} M packets/s (aim 10 M: ratio {:.2})",
            rate / 1e6,
            rate / 1e7
        );
        if gw.audit.events().iter().any(|e| e.reason.is_some()) {
            println!("warning: refusals during the run: {:?}", gw.audit.events());
        }
    });
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
