//! Behaviour baselines through the Modbus gateway against the real
//! pymodbus server: a device that learned reads of one register block
//! and then reads another is reported, and with `action = "quarantine"`
//! quarantined.

use super::*;

/// `POLICY` with a short learning phase (six reads) and 10-register
/// blocks, so reads of 0..=9 and 10..=19 are different activities.
fn policy(action: &str) -> String {
    format!(
        "[anomaly]\nlearning_secs = 0\nlearning_observations = 5\nregister_block = 10\n\
         action = \"{action}\"\nquarantine_anomalies = 1\n\
         [quarantine]\nduration_secs = 60\n{POLICY}"
    )
}

fn events(gw: &ModbusGateway, which: &str) -> Vec<gateway::GatewayEvent> {
    gw.audit
        .events()
        .into_iter()
        .filter(|e| e.action == which)
        .collect()
}

/// Six reads of holding registers 0..=9: the baseline.
async fn learn(ctx: &mut Context) {
    for _ in 0..6 {
        let regs = ctx.read_holding_registers(0, 10).await.unwrap().unwrap();
        assert_eq!(regs, (1000..1010).collect::<Vec<u16>>());
    }
}

#[tokio::test]
async fn a_new_register_block_after_learning_is_reported_with_evidence() {
    let server = PyModbus::start();
    let gw = ModbusGateway::start_with(&server, &policy("alert")).await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    learn(&mut ctx).await;
    assert!(
        events(&gw, action::ANOMALY).is_empty(),
        "{:?}",
        gw.audit.events()
    );

    // Allowed by the policy, new to the baseline: forwarded and reported.
    let regs = ctx.read_holding_registers(10, 10).await.unwrap().unwrap();
    assert_eq!(regs, (1010..1020).collect::<Vec<u16>>());
    let found = events(&gw, action::ANOMALY);
    assert_eq!(found.len(), 1, "{found:?}");
    let e = &found[0];
    assert_eq!(e.device.as_deref(), Some("reader"));
    assert!(
        e.detail.starts_with("first-seen")
            && e.detail
                .contains("unit 1 function 3 addresses 10..=19 (block 10..=19) after 6 messages"),
        "{}",
        e.detail
    );

    // Learned: the same block again is quiet, and alert-only does not
    // quarantine.
    ctx.read_holding_registers(12, 3).await.unwrap().unwrap();
    assert_eq!(events(&gw, action::ANOMALY).len(), 1);
    assert!(events(&gw, action::QUARANTINE_START).is_empty());
    assert_eq!(
        gw.proxy
            .quarantine()
            .remaining("reader", tokio::time::Instant::now()),
        None
    );
}

#[tokio::test]
async fn with_quarantine_policy_the_anomalous_device_is_quarantined() {
    let server = PyModbus::start();
    let gw = ModbusGateway::start_with(&server, &policy("quarantine")).await;
    let mut ctx = device([127, 0, 0, 1], &gw).await;
    learn(&mut ctx).await;

    // The anomalous request itself is allowed by the policy and goes
    // through; the quarantine holds from the next one on.
    ctx.read_holding_registers(10, 10).await.unwrap().unwrap();
    let started = events(&gw, action::QUARANTINE_START);
    assert_eq!(started.len(), 1, "{:?}", gw.audit.events());
    assert_eq!(started[0].device.as_deref(), Some("reader"));
    assert!(
        started[0].detail.starts_with("anomaly: 1 anomalies within"),
        "{}",
        started[0].detail
    );
    assert!(
        gw.proxy
            .quarantine()
            .remaining("reader", tokio::time::Instant::now())
            .is_some()
    );

    // The open connection is closed at its next request ...
    let next = timeout(WAIT, ctx.read_holding_registers(0, 10))
        .await
        .expect("the quarantined connection was neither answered nor closed");
    assert!(
        !matches!(next, Ok(Ok(_))),
        "a quarantined device was served: {next:?}"
    );
    // ... and a new one is refused.
    let mut s = tcp_from([127, 0, 0, 1], gw.addr).await;
    s.write_all(&codec::encode(1, 1, &[3, 0, 0, 0, 1]))
        .await
        .ok();
    assert!(closed(&mut s).await.is_empty());
    assert!(gw.refusals().contains(&ViolationKind::Quarantined));
    // Another device is not affected.
    let mut other = device([127, 0, 0, 2], &gw).await;
    assert_eq!(
        other.read_holding_registers(5, 1).await.unwrap().unwrap(),
        [1005]
    );
}
