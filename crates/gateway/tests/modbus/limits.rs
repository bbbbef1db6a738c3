//! Modbus rate limits, connection limits and deadlines against the real
//! pymodbus server: a flooding device is paced, then quarantined, while
//! another device on the same gateway is served at its usual latency.

use std::time::Instant;

use gateway::metrics::Protocol;

use super::*;

/// `POLICY` with `tables` in front (TOML: a table must come before the
/// arrays of tables under it) and `reader` held to 5 requests/s.
fn policy(tables: &str) -> String {
    format!("{tables}\n{POLICY}").replace(
        "ranges = { 1 = [[0, 15]], 3 = [[0, 9], [10, 19]], 4 = [[0, 4]] }",
        "ranges = { 1 = [[0, 15]], 3 = [[0, 9], [10, 19]], 4 = [[0, 4]] }\nrequests_per_second = 5",
    )
}

fn events(gw: &ModbusGateway, which: &str) -> Vec<gateway::GatewayEvent> {
    gw.audit
        .events()
        .into_iter()
        .filter(|e| e.action == which)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_is_paced_then_quarantined_while_another_device_is_served() {
    let server = PyModbus::start();
    let gw = ModbusGateway::start_with(
        &server,
        &policy("[quarantine]\nstrikes = 3\nwindow_secs = 30\nduration_secs = 60"),
    )
    .await;
    // The well-behaved device, connected before the flood starts.
    let mut good = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        good.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );

    // 200 pipelined reads of one register in one write.
    let mut flood = Vec::new();
    for tid in 1..=200u16 {
        flood.extend(codec::encode(tid, 1, &[3, 0, 0, 0, 1]));
    }
    let mut s = tcp_from([127, 0, 0, 1], gw.addr).await;
    let t0 = Instant::now();
    s.write_all(&flood).await.unwrap();
    let flooder = tokio::spawn(async move {
        let got = closed(&mut s).await;
        (got, t0.elapsed())
    });

    let mut latencies = Vec::new();
    for _ in 0..25 {
        let t = Instant::now();
        let regs = good.read_holding_registers(5, 1).await.unwrap().unwrap();
        latencies.push(t.elapsed());
        assert_eq!(regs, [1005]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (got, after) = flooder.await.unwrap();
    latencies.sort();
    // What the gateway forwarded (pymodbus answers only the first request
    // of a TCP segment, so the answers undercount it).
    let forwarded = gw
        .metrics
        .device(Protocol::Modbus, "reader")
        .accepted_total();
    eprintln!(
        "modbus flood: {forwarded} of 200 forwarded, {} bytes answered, closed after \
         {after:?}; other device p50 {:?} max {:?}",
        got.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // Paced: a 5-request burst, then one per 200 ms pause until the
    // third strike.
    assert!((5..=10).contains(&forwarded), "{forwarded} forwarded");
    assert!(!got.is_empty(), "no answer at all");
    assert!(after >= Duration::from_millis(300), "not paced: {after:?}");
    let started = events(&gw, action::QUARANTINE_START);
    assert_eq!(started.len(), 1, "{:?}", gw.audit.events());
    assert_eq!(started[0].device.as_deref(), Some("reader"));
    assert!(gw.refusals().contains(&ViolationKind::RateExceeded));
    assert!(
        latencies[latencies.len() - 1] < Duration::from_millis(50),
        "{latencies:?}"
    );

    // Quarantined: refused at accept, nothing forwarded.
    let mut again = tcp_from([127, 0, 0, 1], gw.addr).await;
    let _ = again
        .write_all(&codec::encode(1, 1, &[3, 0, 0, 0, 1]))
        .await;
    assert!(closed(&mut again).await.is_empty());
    assert_eq!(gw.refusals().last(), Some(&ViolationKind::Quarantined));
    let now = tokio::time::Instant::now();
    assert!(gw.proxy.quarantine().remaining("reader", now).is_some());
    assert!(gw.proxy.quarantine().remaining("writer", now).is_none());
    // The other device goes on.
    assert_eq!(
        good.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_deadline_and_idle_timeout() {
    let server = PyModbus::start();
    let gw = ModbusGateway::start_with(
        &server,
        &policy("[modbus]\nfirst_request_timeout_secs = 1\nidle_timeout_secs = 1"),
    )
    .await;
    // Slowloris: part of a request, then nothing.
    let mut s = tcp_from([127, 0, 0, 2], gw.addr).await;
    let t0 = Instant::now();
    s.write_all(&codec::encode(1, 1, &[3, 0, 0, 0, 1])[..5])
        .await
        .unwrap();
    assert!(closed(&mut s).await.is_empty());
    let after = t0.elapsed();
    assert!(
        after >= Duration::from_millis(800) && after < Duration::from_secs(4),
        "closed after {after:?}"
    );
    let refused = events(&gw, action::MODBUS_REFUSED);
    assert!(
        refused.len() == 1 && refused[0].detail.contains("no complete request"),
        "{refused:?}"
    );

    // A request, its answer, then silence: closed as idle, not refused.
    let mut ctx = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        ctx.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );
    let mut idle = false;
    for _ in 0..40 {
        if !events(&gw, action::IDLE_TIMEOUT).is_empty() {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle, "no idle close: {:?}", gw.audit.events());
    assert!(ctx.read_holding_registers(5, 1).await.is_err());
    assert_eq!(events(&gw, action::MODBUS_REFUSED).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_and_open_connections_per_device() {
    let server = PyModbus::start();
    let gw =
        ModbusGateway::start_with(&server, &policy("[limits]\nmax_connections_per_device = 1"))
            .await;
    // One open connection per device: a second is closed at once.
    let mut first = device([127, 0, 0, 1], &gw).await;
    assert_eq!(
        first.read_holding_registers(0, 1).await.unwrap().unwrap(),
        [1000]
    );
    let mut second = tcp_from([127, 0, 0, 1], gw.addr).await;
    assert!(closed(&mut second).await.is_empty());
    let refused = events(&gw, action::MODBUS_REFUSED);
    assert!(
        refused.len() == 1 && refused[0].detail.contains("open"),
        "{refused:?}"
    );
    // The first still works.
    assert_eq!(
        first.read_holding_registers(1, 1).await.unwrap().unwrap(),
        [1001]
    );

    // Three connections a minute: the fourth is refused. (Another
    // gateway: with one connection per device, a reconnect could race the
    // gateway noticing the last close.)
    let gw = ModbusGateway::start_with(
        &server,
        &policy("[limits]\nconnection_attempts_per_minute = 3"),
    )
    .await;
    for _ in 0..3 {
        let mut ctx = device([127, 0, 0, 2], &gw).await;
        assert_eq!(
            ctx.read_holding_registers(5, 1).await.unwrap().unwrap(),
            [1005]
        );
    }
    let mut fourth = tcp_from([127, 0, 0, 2], gw.addr).await;
    assert!(closed(&mut fourth).await.is_empty());
    let refused = events(&gw, action::MODBUS_REFUSED);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].device.as_deref(), Some("writer"));
    assert_eq!(refused[0].reason, Some(ViolationKind::RateExceeded));
    assert!(refused[0].detail.contains("attempts"), "{refused:?}");
}
