//! CoAP rate limits and block-wise caps against the real libcoap server:
//! a flood over the rate is dropped, then quarantined, while another
//! device is served; real block-wise transfers (coap-client `-b`) pass and
//! release their state; a Block1 upload that never completes expires with
//! an event and its next block is refused.

use std::time::Instant;

use super::*;

const LIMITS_POLICY: &str = r#"
[quarantine]
strikes = 3
window_secs = 30
duration_secs = 60

[coap]
exchange_lifetime_secs = 30
datagrams_per_second = 5
block_timeout_secs = 1

[[coap.devices]]
name = "reader"
source = "127.0.0.1"
methods = ["GET", "PUT"]
paths = [["time"], ["example_data"]]
max_payload = 64

[[coap.devices]]
name = "other"
source = "127.0.0.3"
paths = [["time"]]
"#;

fn details(gw: &CoapGateway, which: &str) -> Vec<String> {
    gw.audit
        .events()
        .into_iter()
        .filter(|e| e.action == which)
        .map(|e| e.detail)
        .collect()
}

fn get_time(mid: u16) -> Vec<u8> {
    codec::encode(
        MessageType::Confirmable,
        Method::Get.code(),
        mid,
        &mid.to_be_bytes(),
        &[(option::URI_PATH, b"time")],
        &[],
    )
}

/// A Block1 PUT to /example_data of block `num` (16-byte blocks).
fn put_block(mid: u16, num: u8, more: bool) -> Vec<u8> {
    let block = [num << 4 | u8::from(more) << 3];
    codec::encode(
        MessageType::Confirmable,
        Method::Put.code(),
        mid,
        b"up",
        &[
            (option::URI_PATH, b"example_data"),
            (option::BLOCK1, &block),
        ],
        &[b'u'; 16],
    )
}

/// Answers arriving on `s` within `within`.
async fn answers(s: &tokio::net::UdpSocket, within: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    let end = tokio::time::Instant::now() + within;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(end, s.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_over_the_rate_is_dropped_then_quarantined() {
    let server = libcoap_server();
    let gw = CoapGateway::start_with(&server, LIMITS_POLICY).await;
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for mid in 0..50 {
        s.send_to(&get_time(mid), gw.addr).await.unwrap();
    }
    let got = answers(&s, Duration::from_secs(1)).await;
    // The burst is one second's worth: 5 (6 if the loop was slow).
    assert!((5..=6).contains(&got.len()), "{} answered", got.len());
    // Three drops are three strikes: quarantined, and the rest of the
    // flood is dropped without an event each.
    let refused = gw.events(action::COAP_REFUSED);
    assert_eq!(refused, [ViolationKind::RateExceeded; 3], "{refused:?}");
    let started = gw.audit.events();
    let started: Vec<_> = started
        .iter()
        .filter(|e| e.action == action::QUARANTINE_START)
        .collect();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].device.as_deref(), Some("reader"));
    // A second later the rate would allow it, the quarantine does not.
    s.send_to(&get_time(100), gw.addr).await.unwrap();
    assert!(answers(&s, Duration::from_millis(500)).await.is_empty());
    let now = tokio::time::Instant::now();
    assert!(gw.proxy.quarantine().remaining("reader", now).is_some());
    // Another device on the same gateway is served.
    let r = client(&gw, "127.0.0.3", &["-m", "get"], "time").await;
    assert_eq!(r.stdout.trim().matches(':').count(), 2, "{:?}", r.stderr);
    assert!(gw.proxy.quarantine().remaining("other", now).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_block_wise_transfers_pass_and_release_their_state() {
    let server = libcoap_server();
    let gw = CoapGateway::start_with(
        &server,
        &LIMITS_POLICY.replace("datagrams_per_second = 5", "datagrams_per_second = 100"),
    )
    .await;
    let body: String = (0..200)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    // 200 bytes up in four Block1 blocks of 64 ...
    let r = client(
        &gw,
        "127.0.0.1",
        &["-m", "put", "-b", "64", "-e", &body],
        "example_data",
    )
    .await;
    assert!(!r.stderr.contains("4."), "{:?} {:?}", r.stdout, r.stderr);
    // ... and back in thirteen Block2 blocks of 16 (small enough for the
    // amplification limit without Echo).
    let r = client(&gw, "127.0.0.1", &["-m", "get", "-b", "16"], "example_data").await;
    assert_eq!(r.stdout.trim(), body, "{:?}", r.stderr);
    assert!(
        gw.events(action::COAP_REFUSED).is_empty(),
        "{:?}",
        gw.audit.events()
    );
    // Completed transfers hold no state: nothing expires after the 1 s
    // block timeout (the sweep runs every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        details(&gw, action::COAP_BLOCK_EXPIRED).is_empty(),
        "{:?}",
        gw.audit.events()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block1_transfer_that_never_completes_expires() {
    let server = libcoap_server();
    let gw = CoapGateway::start_with(&server, LIMITS_POLICY).await;
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&put_block(1, 0, true), gw.addr).await.unwrap();
    let got = answers(&s, Duration::from_secs(2)).await;
    let first = codec::parse(got.first().expect("no answer to block 0")).unwrap();
    assert_eq!(first.code, Code::new(2, 31), "Continue");
    let t0 = Instant::now();
    let mut expired = Vec::new();
    for _ in 0..50 {
        expired = details(&gw, action::COAP_BLOCK_EXPIRED);
        if !expired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(expired.len(), 1, "{:?}", gw.audit.events());
    assert!(
        expired[0].contains("Block1") && expired[0].contains("/example_data"),
        "{expired:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // The next block finds no transfer: refused, not forwarded.
    s.send_to(&put_block(2, 1, true), gw.addr).await.unwrap();
    assert!(answers(&s, Duration::from_millis(500)).await.is_empty());
    let refused = details(&gw, action::COAP_REFUSED);
    assert!(
        refused.len() == 1 && refused[0].contains("no transfer in progress"),
        "{refused:?}"
    );
}
