//! MQTT connection limits and deadlines over real sockets (issue 6 item
//! 5): connection attempts per minute and open connections per device,
//! the CONNECT deadline, the keep-alive deadline, and a flood next to a
//! well-behaved device on the same gateway.
//!
//! Keep-alive tests use a silent TCP "broker" that reads and never
//! answers: Mosquitto enforces 1.5x keep-alive itself, and the test must
//! see the gateway's deadline, not the broker's.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn policy(limits: &str) -> String {
    POLICY.replace(
        "max_packet_size = 4096",
        &format!("max_packet_size = 4096\n{limits}"),
    )
}

/// An MQTT 5 CONNECT with `keep_alive` seconds.
fn connect_with_keep_alive(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut b = vec![0, 4];
    b.extend_from_slice(b"MQTT");
    b.extend([5, 0x02]);
    b.extend(keep_alive.to_be_bytes());
    b.push(0);
    b.extend((client_id.len() as u16).to_be_bytes());
    b.extend_from_slice(client_id.as_bytes());
    raw::frame(0x10, &b)
}

/// A TCP listener that reads whatever it gets and never writes.
async fn silent_broker() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 4096];
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, task)
}

fn events(gw: &Gateway, which: &str) -> Vec<gateway::GatewayEvent> {
    gw.audit
        .events()
        .into_iter()
        .filter(|e| e.action == which)
        .collect()
}

/// The reason code of the CONNACK the gateway answers `client_id` with.
async fn connack_code(gw: &Gateway, pki: &Pki, client_id: &str) -> (u8, raw::Stream) {
    let mut s = raw::connect(gw, pki.device_tls(&pki.ca, client_id)).await;
    s.write_all(&raw::connect_v5(client_id)).await.unwrap();
    let mut head = [0u8; 4];
    timeout(WAIT, s.read_exact(&mut head))
        .await
        .expect("no CONNACK")
        .unwrap();
    assert_eq!(head[0], 0x20, "CONNACK expected, got {head:?}");
    (head[3], s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_that_never_completes_is_closed_at_the_deadline() {
    let pki = Pki::new();
    let (broker, _b) = silent_broker().await;
    let gw = Gateway::start(&pki, broker, &policy("connect_timeout_secs = 1")).await;
    let mut s = raw::connect(&gw, pki.device_tls(&pki.ca, "sensor-1")).await;
    let t0 = Instant::now();
    // Slowloris: the start of a CONNECT, then nothing.
    s.write_all(&raw::connect_v5("sensor-1")[..5])
        .await
        .unwrap();
    assert!(raw::frames_until_closed(&mut s).await.is_empty());
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    let refused = events(&gw, action::MQTT_REFUSED);
    assert!(
        refused.len() == 1 && refused[0].detail.contains("deadline"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_past_one_and_a_half_keep_alives_closes() {
    let pki = Pki::new();
    let (broker, _b) = silent_broker().await;
    let gw = Gateway::start(&pki, broker, POLICY).await;
    let mut s = raw::connect(&gw, pki.device_tls(&pki.ca, "sensor-1")).await;
    s.write_all(&connect_with_keep_alive("sensor-1", 1))
        .await
        .unwrap();
    // PINGREQs every 0.5 s keep it open past 1.5 s ...
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(&[0xc0, 0x00]).await.unwrap();
    }
    let mut b = [0u8; 16];
    assert!(
        timeout(Duration::from_millis(100), s.read(&mut b))
            .await
            .is_err(),
        "closed although the device kept pinging"
    );
    assert!(events(&gw, action::IDLE_TIMEOUT).is_empty());
    // ... then silence: closed after 1.5 s with Keep Alive timeout.
    let t0 = Instant::now();
    let frames = raw::frames_until_closed(&mut s).await;
    let after = t0.elapsed();
    assert_eq!(
        frames.last().map(Vec::as_slice),
        Some(&[0xe0, 0x01, 0x8d][..]),
        "{frames:?}"
    );
    assert!(
        after >= Duration::from_millis(1300) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    let idle = events(&gw, action::IDLE_TIMEOUT);
    assert_eq!(idle.len(), 1, "{:?}", gw.audit.events());
    assert_eq!(idle[0].device.as_deref(), Some("sensor-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_gets_the_idle_timeout() {
    let pki = Pki::new();
    let (broker, _b) = silent_broker().await;
    let gw = Gateway::start(&pki, broker, &policy("idle_timeout_secs = 1")).await;
    let mut s = raw::connect(&gw, pki.device_tls(&pki.ca, "sensor-1")).await;
    let t0 = Instant::now();
    s.write_all(&connect_with_keep_alive("sensor-1", 0))
        .await
        .unwrap();
    let frames = raw::frames_until_closed(&mut s).await;
    let after = t0.elapsed();
    assert_eq!(frames.last().map(|f| f[0]), Some(0xe0), "{frames:?}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    assert_eq!(events(&gw, action::IDLE_TIMEOUT).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_device_is_refused_and_struck() {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let gw = Gateway::start(
        &pki,
        broker.addr(),
        &policy("connection_attempts_per_minute = 3"),
    )
    .await;
    for _ in 0..3 {
        let (code, s) = connack_code(&gw, &pki, "sensor-1").await;
        assert_eq!(code, 0, "accepted");
        drop(s);
    }
    // The fourth attempt within the minute: Connection rate exceeded.
    let (code, _s) = connack_code(&gw, &pki, "sensor-1").await;
    assert_eq!(code, 0x9f);
    let refused = events(&gw, action::MQTT_REFUSED);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].reason, Some(ViolationKind::RateExceeded));
    assert!(refused[0].detail.contains("attempts"), "{refused:?}");
    // Another device is not affected.
    let (code, _other) = connack_code(&gw, &pki, "flooder").await;
    assert_eq!(code, 0);
    // Refusals are strikes: two more and the device is quarantined
    // (the test policy's rule is 3).
    for _ in 0..2 {
        let (code, _s) = connack_code(&gw, &pki, "sensor-1").await;
        assert_eq!(code, 0x9f);
    }
    assert!(
        gw.proxy
            .quarantine()
            .remaining("sensor-1", tokio::time::Instant::now())
            .is_some()
    );
    assert_eq!(events(&gw, action::QUARANTINE_START).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_per_device_are_capped() {
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let gw = Gateway::start(
        &pki,
        broker.addr(),
        &policy("max_connections_per_device = 1"),
    )
    .await;
    let (code, first) = connack_code(&gw, &pki, "sensor-1").await;
    assert_eq!(code, 0);
    let (code, _second) = connack_code(&gw, &pki, "sensor-1").await;
    assert_eq!(code, 0x9f, "a second connection while the first is open");
    let refused = events(&gw, action::MQTT_REFUSED);
    assert!(refused[0].detail.contains("open"), "{refused:?}");
    // Closing the first frees the slot (bounded poll: the gateway sees
    // the close asynchronously).
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        let (code, _s) = connack_code(&gw, &pki, "sensor-1").await;
        if code == 0 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "slot not freed: {:?}", gw.audit.events());
}

/// Issue 6: "a flooding device is throttled and then quarantined while a
/// well-behaved device on the same gateway keeps its latency (test both
/// at once)". The flooder writes PUBLISHes as fast as TLS takes them and,
/// once quarantined, keeps reconnecting, for 3 s; meanwhile sensor-1
/// publishes 300 timestamped QoS 1 messages at 100/s to a subscriber on
/// Mosquitto. The flooder runs on its own thread and runtime, as a device
/// would on its own machine, so it does not compete for the gateway's
/// workers (it still competes for the CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_is_quarantined_while_a_well_behaved_device_keeps_its_latency() {
    const GOOD: usize = 300;
    let pki = Pki::new();
    let broker = Mosquitto::start();
    let gw = Gateway::start(
        &pki,
        broker.addr(),
        &POLICY.replace("duration_secs = 2", "duration_secs = 60"),
    )
    .await;
    let mut sub = Client::direct(&broker, "watcher");
    sub.connected().await.unwrap();
    sub.subscribed("sensors/#").await;
    let mut good = Client::via_gateway(&gw, pki.device_tls(&pki.ca, "sensor-1"), "sensor-1");
    good.connected().await.unwrap();

    let epoch = Instant::now();
    let flood_tls = pki.device_tls(&pki.ca, "flooder");
    let flood_gw_port = gw.port;
    let flooder = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(flood(epoch, flood_tls, flood_gw_port))
    });

    // Timestamps are taken as messages arrive, in their own task.
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut seen = [false; GOOD];
        let mut from_flooder = 0usize;
        for _ in 0..100_000 {
            if latencies.len() == GOOD {
                break;
            }
            if let Event::Incoming(Packet::Publish(p)) = sub.next().await.unwrap() {
                let now = epoch.elapsed().as_micros();
                if p.topic.as_ref() == b"sensors/flooder/x" {
                    from_flooder += 1;
                    continue;
                }
                let text = String::from_utf8(p.payload.to_vec()).unwrap();
                let (i, t) = text.split_once(' ').unwrap();
                let i: usize = i.parse().unwrap();
                if !seen[i] {
                    seen[i] = true;
                    let sent: u128 = t.parse().unwrap();
                    latencies.push(Duration::from_micros((now - sent) as u64));
                }
            }
        }
        (latencies, from_flooder, sub)
    });
    for i in 0..GOOD {
        let payload = format!("{i} {}", epoch.elapsed().as_micros());
        good.client
            .publish("sensors/sensor-1/t", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut latencies, mut from_flooder, mut sub) = collector.await.unwrap();
    let (sent, connections) = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    // Whatever else of the flood got through (drain briefly).
    while let Ok(Some(e)) = timeout(Duration::from_millis(300), sub.events.recv()).await {
        if let Ok(Event::Incoming(Packet::Publish(p))) = e
            && p.topic.as_ref() == b"sensors/flooder/x"
        {
            from_flooder += 1;
        }
    }

    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "flood: {sent} PUBLISHes written over {connections} connections, {from_flooder} \
         reached the broker; well-behaved: {} of {GOOD} received, p50 {p50:?}, p99 {p99:?}, \
         max {max:?}",
        latencies.len()
    );
    assert_eq!(
        latencies.len(),
        GOOD,
        "the well-behaved device lost messages"
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    // Throttled: the rule is 5/s with a 5-message burst, and the 60 s
    // quarantine starts at the third strike.
    assert!(
        sent > 1000,
        "the flood was too small to mean anything: {sent}"
    );
    assert!(
        from_flooder <= 20,
        "{from_flooder} flood messages got through"
    );
    let quarantined = events(&gw, action::QUARANTINE_START);
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].device.as_deref(), Some("flooder"));
    assert!(
        gw.proxy
            .quarantine()
            .remaining("flooder", tokio::time::Instant::now())
            .is_some()
    );
    assert!(
        gw.proxy
            .quarantine()
            .remaining("sensor-1", tokio::time::Instant::now())
            .is_none()
    );
}

/// Floods the gateway as "flooder" until 3 s after `epoch` (or 200
/// connections): PUBLISHes in bursts of 50, reconnecting whenever the
/// gateway closes. Returns (PUBLISHes written, connections made).
async fn flood(epoch: Instant, tls: Arc<rustls::ClientConfig>, port: u16) -> (u64, u32) {
    let gw_addr = ("127.0.0.1", port);
    let mut sent = 0u64;
    let mut connections = 0u32;
    let publish = raw::publish_v5("sensors/flooder/x", &[b'f'; 200]);
    let burst: Vec<u8> = publish.repeat(50);
    // Bounded: 3 s or 200 connections, whichever first.
    while epoch.elapsed() < Duration::from_secs(3) && connections < 200 {
        let tcp = tokio::net::TcpStream::connect(gw_addr).await.unwrap();
        let Ok(mut s) = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(
                rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            )
            .await
        else {
            continue;
        };
        connections += 1;
        if s.write_all(&raw::connect_v5("flooder")).await.is_err() {
            continue;
        }
        while epoch.elapsed() < Duration::from_secs(3) {
            match timeout(Duration::from_millis(500), s.write_all(&burst)).await {
                Ok(Ok(())) => sent += 50,
                Ok(Err(_)) => break,
                // Back-pressure: the gateway stopped reading.
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (sent, connections)
}
