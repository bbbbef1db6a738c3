//! Integration tests of notifications: the ring and live stream in
//! process, and forwarding to real hubs on loopback (a Mosquitto broker
//! with a mutual-TLS listener, an HTTPS server written with hyper).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use notify::{Hub, Kind, MqttHub, Notification, Notifier, RetryPolicy, Route, Severity, Webhook};
use serde_json::json;
use support::wait_for;

/// Fast retries, so outages in tests last milliseconds.
const FAST: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(200),
};

/// The longest any test waits for something to happen.
const WAIT: Duration = Duration::from_secs(15);

/// Runs a test body with a time bound.
async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("test did not finish within 60 s");
}

fn alert(notifier: &Notifier, n: u64) -> Notification {
    notifier.notify(
        Kind::SecurityAlert,
        Severity::Critical,
        format!("alert {n}"),
        json!({ "n": n }),
    )
}

/// The ring, sequence numbers, `recent` paging and live subscribers.
mod in_process {
    use super::*;

    #[test]
    fn notifier_is_cheap_to_share_across_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Notifier>();
        shareable::<Notification>();
    }

    #[test]
    fn ring_keeps_the_newest_and_recent_pages_forward() {
        let notifier = Notifier::new(5);
        let sent: Vec<_> = (1..=8).map(|n| alert(&notifier, n)).collect();
        let seqs: Vec<u64> = sent.iter().map(|n| n.seq).collect();
        assert_eq!(
            seqs,
            (1..=8).collect::<Vec<_>>(),
            "seq starts at 1, no gaps"
        );
        assert_eq!(sent[2].title, "alert 3");
        assert_eq!(sent[2].detail, json!({ "n": 3 }));
        assert!(sent[0].time_unix > 1_700_000_000);

        let seqs = |list: Vec<Notification>| list.iter().map(|n| n.seq).collect::<Vec<_>>();
        assert_eq!(seqs(notifier.recent(None, 10)), [4, 5, 6, 7, 8], "newest 5");
        assert_eq!(seqs(notifier.recent(None, 2)), [7, 8], "newest 2");
        assert_eq!(seqs(notifier.recent(Some(5), 10)), [6, 7, 8]);
        assert_eq!(
            seqs(notifier.recent(Some(0), 2)),
            [4, 5],
            "pages from the oldest kept"
        );
        assert_eq!(seqs(notifier.recent(Some(5), 1)), [6]);
        assert!(notifier.recent(Some(8), 10).is_empty());
        assert!(notifier.recent(None, 0).is_empty());

        // A clone shares the sequence and the ring.
        let clone = notifier.clone();
        assert_eq!(alert(&clone, 9).seq, 9);
        assert_eq!(seqs(notifier.recent(None, 1)), [9]);
    }

    #[tokio::test]
    async fn subscribers_receive_every_notification_in_order() {
        bounded(async {
            let notifier = Notifier::new(10);
            let mut first = notifier.subscribe();
            let mut second = notifier.subscribe();
            let sent: Vec<_> = (1..=3).map(|n| alert(&notifier, n)).collect();
            for receiver in [&mut first, &mut second] {
                for expected in &sent {
                    assert_eq!(&receiver.recv().await.unwrap(), expected);
                }
            }
        })
        .await;
    }

    #[test]
    fn a_lagging_subscriber_does_not_block_notify() {
        let notifier = Notifier::new(16);
        let mut sleeper = notifier.subscribe();
        let (done, finished) = std::sync::mpsc::channel();
        let producer = notifier.clone();
        std::thread::spawn(move || {
            for n in 1..=1000 {
                alert(&producer, n);
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("notify blocked on a subscriber that never reads");
        // The sleeper learns how many it missed, then reads on from the
        // oldest still buffered (buffer of 16).
        match sleeper.try_recv() {
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                assert_eq!(missed, 1000 - 16);
            }
            other => panic!("expected a lag report, got {other:?}"),
        }
        assert_eq!(sleeper.try_recv().unwrap().seq, 1000 - 16 + 1);
        assert_eq!(notifier.recent(None, 1)[0].seq, 1000);
    }
}

/// Forwarding to a real Mosquitto over mutual TLS.
mod mqtt {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use support::Pki;
    use testkit::mosquitto::Mosquitto;

    fn hub(pki: &Pki, port: u16) -> Hub {
        Hub::Mqtt(MqttHub {
            host: "127.0.0.1".into(),
            port,
            topic: "home/bulwark/device-1/notifications".into(),
            client_id: "device-1-notify".into(),
            tls: pki.device_tls(),
        })
    }

    /// Lines `mosquitto_sub -d` prints, read by a thread.
    fn subscribe(
        pki: &Pki,
        port: u16,
        count: usize,
    ) -> (std::process::Child, mpsc::Receiver<String>) {
        testkit::require_tool("mosquitto_sub", "mosquitto-clients");
        testkit::require_tool("stdbuf", "coreutils");
        // Line-buffered: a pipe would hold the SUBACK line back until exit.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["--cafile", &pki.path("ca.pem")])
            .args([
                "--cert",
                &pki.path("device.pem"),
                "--key",
                &pki.path("device.key"),
            ])
            .args(["-i", "test-listener", "-q", "1", "-d"])
            .args(["-t", "home/bulwark/device-1/notifications"])
            .args(["-C", &count.to_string(), "-W", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        (child, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_notifications_arrive_in_order_over_mutual_tls() {
        bounded(async {
            let pki = Pki::new();
            let broker = Mosquitto::start_with(&pki.broker_conf());
            let (mut listener, lines) = subscribe(&pki, broker.port, 3);
            let mut seen = Vec::new();
            let subscribed = wait_for(WAIT, || {
                seen.extend(lines.try_iter());
                seen.iter().any(|line| line.contains("SUBACK"))
            })
            .await;
            assert!(
                subscribed,
                "mosquitto_sub did not subscribe: {seen:?}; broker log:\n{}",
                broker.log()
            );

            let notifier = Notifier::new(10);
            let handle = notifier.attach_hub_with(hub(&pki, broker.port), 16, FAST);
            let sent: Vec<_> = (1..=3).map(|n| alert(&notifier, n)).collect();

            let mut received = Vec::new();
            let deadline = std::time::Instant::now() + WAIT;
            while received.len() < 3 && std::time::Instant::now() < deadline {
                match lines.recv_timeout(Duration::from_millis(100)) {
                    Ok(line) if line.starts_with('{') => {
                        received.push(serde_json::from_str::<Notification>(&line).unwrap());
                    }
                    _ => {}
                }
            }
            assert_eq!(received, sent, "broker log:\n{}", broker.log());
            assert!(
                wait_for(WAIT, || handle.status().delivered == 3).await,
                "{:?}",
                handle.status()
            );
            let status = handle.shutdown(Duration::from_secs(1)).await;
            assert_eq!(status.pending, 0);
            assert_eq!(status.dropped, 0);
            assert_eq!(status.last_delivered_seq, Some(3));
            assert_eq!(status.last_error, None);
            let exit = listener.wait().unwrap();
            assert!(exit.success(), "mosquitto_sub: {exit}");
        })
        .await;
    }

    /// A routed hub gets only the kinds and severities its route names;
    /// the ring keeps everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_routed_hub_receives_only_what_its_route_accepts() {
        bounded(async {
            let pki = Pki::new();
            let broker = Mosquitto::start_with(&pki.broker_conf());
            let (mut listener, lines) = subscribe(&pki, broker.port, 1);
            let mut seen = Vec::new();
            assert!(
                wait_for(WAIT, || {
                    seen.extend(lines.try_iter());
                    seen.iter().any(|line| line.contains("SUBACK"))
                })
                .await,
                "mosquitto_sub did not subscribe: {seen:?}"
            );
            let notifier = Notifier::new(10);
            let route = Route {
                kinds: vec![Kind::UpdateAvailable, Kind::RestartPending],
                min_severity: Severity::Warning,
            };
            let handle = notifier.attach_routed_hub(hub(&pki, broker.port), 16, FAST, route);
            alert(&notifier, 1); // Critical, but not a routed kind.
            notifier.notify(
                Kind::UpdateAvailable,
                Severity::Info,
                "available",
                json!({}),
            );
            let wanted = notifier.notify(
                Kind::RestartPending,
                Severity::Warning,
                "restarts in 300 s",
                json!({}),
            );
            let received = loop {
                match lines.recv_timeout(WAIT) {
                    Ok(line) if line.starts_with('{') => {
                        break serde_json::from_str::<Notification>(&line).unwrap();
                    }
                    Ok(_) => {}
                    Err(e) => panic!("nothing delivered ({e}); broker log:\n{}", broker.log()),
                }
            };
            assert_eq!(received, wanted);
            assert!(wait_for(WAIT, || handle.status().delivered == 1).await);
            let status = handle.shutdown(Duration::from_secs(1)).await;
            assert_eq!((status.delivered, status.pending), (1, 0), "{status:?}");
            assert_eq!(notifier.recent(None, 10).len(), 3);
            assert!(listener.wait().unwrap().success());
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notifications_wait_while_the_broker_is_down_and_go_out_when_it_is_up() {
        bounded(async {
            let pki = Pki::new();
            let port = testkit::free_port();
            let notifier = Notifier::new(10);
            let handle = notifier.attach_hub_with(hub(&pki, port), 16, FAST);
            alert(&notifier, 1);
            alert(&notifier, 2);
            assert!(
                wait_for(WAIT, || handle.status().last_error.is_some()).await,
                "no error while the broker is down"
            );
            let status = handle.status();
            assert_eq!((status.pending, status.delivered), (2, 0), "{status:?}");
            assert!(
                status
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains(&format!("127.0.0.1:{port}")),
                "{status:?}"
            );

            let broker = Mosquitto::start_on(port, &pki.broker_conf());
            assert!(
                wait_for(WAIT, || handle.status().delivered == 2).await,
                "{:?}; broker log:\n{}",
                handle.status(),
                broker.log()
            );
            let status = handle.status();
            assert_eq!(status.pending, 0);
            assert_eq!(status.last_delivered_seq, Some(2));
            assert_eq!(status.last_error, None, "a success clears the error");
        })
        .await;
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest_and_counts_them() {
        bounded(async {
            let pki = Pki::new();
            // Nothing listens on this port.
            let port = testkit::free_port();
            let notifier = Notifier::new(100);
            let handle = notifier.attach_hub_with(hub(&pki, port), 4, FAST);
            for n in 1..=10 {
                alert(&notifier, n);
            }
            let status = handle.status();
            assert_eq!(status.dropped, 6, "{status:?}");
            assert_eq!(status.pending, 4, "{status:?}");
            assert_eq!(status.delivered, 0);
            // The status endpoint's copy is complete regardless.
            assert_eq!(notifier.recent(None, 100).len(), 10);
            // A bounded shutdown gives up on what it cannot deliver.
            let started = std::time::Instant::now();
            let status = handle.shutdown(Duration::from_millis(300)).await;
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(status.pending, 4);
        })
        .await;
    }

    #[tokio::test]
    async fn a_topic_with_wildcards_is_refused_without_connecting() {
        bounded(async {
            let pki = Pki::new();
            let bad = Hub::Mqtt(MqttHub {
                host: "127.0.0.1".into(),
                port: 1,
                topic: "home/#".into(),
                client_id: "d".into(),
                tls: pki.device_tls(),
            });
            let error = bad.check().unwrap_err().to_string();
            assert!(error.contains("topic"), "{error}");
            let notifier = Notifier::new(10);
            let handle = notifier.attach_hub_with(bad, 4, FAST);
            alert(&notifier, 1);
            assert!(wait_for(WAIT, || handle.status().last_error.is_some()).await);
            assert!(handle.status().last_error.unwrap().contains("topic"));
            assert_eq!(handle.status().pending, 1);
        })
        .await;
    }
}

/// Forwarding to an HTTPS webhook (a hyper server over tokio-rustls).
mod webhook {
    use super::*;
    use support::{Ca, HttpsServer};

    fn hub(port: u16, trusted: &Ca, client: &support::Leaf) -> Hub {
        Hub::Webhook(Webhook {
            url: format!("https://127.0.0.1:{port}/hooks/s3cr3t-token"),
            tls: trusted.client_config(client, trusted),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_after_503_until_the_server_accepts() {
        bounded(async {
            let ca = Ca::new("Web");
            let server = ca.issue("hub", &["127.0.0.1"]);
            let client = ca.issue("device-1", &[]);
            let https = HttpsServer::start(ca.server_config(&server), vec![503, 503]).await;
            let notifier = Notifier::new(10);
            let handle = notifier.attach_hub_with(hub(https.port, &ca, &client), 8, FAST);
            let sent = alert(&notifier, 1);

            assert!(
                wait_for(WAIT, || handle.status().delivered == 1).await,
                "{:?}",
                handle.status()
            );
            let received = https.received();
            let answers: Vec<u16> = received.iter().map(|r| r.answered).collect();
            assert_eq!(answers, [503, 503, 200], "exactly one accepted delivery");
            for request in &received {
                assert_eq!(request.method, "POST");
                assert_eq!(request.path, "/hooks/s3cr3t-token");
                assert_eq!(request.content_type.as_deref(), Some("application/json"));
                let body: Notification = serde_json::from_slice(&request.body).unwrap();
                assert_eq!(body, sent);
            }
            let json: serde_json::Value = serde_json::from_slice(&received[2].body).unwrap();
            assert_eq!(json["kind"], "security_alert");
            assert_eq!(json["severity"], "critical");
            let status = handle.status();
            assert_eq!((status.delivered, status.pending), (1, 0), "{status:?}");
            assert_eq!(status.last_error, None);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_certificate_from_another_ca_gets_nothing() {
        bounded(async {
            let ours = Ca::new("Ours");
            let stranger = Ca::new("Stranger");
            let server = stranger.issue("impostor", &["127.0.0.1"]);
            let client = ours.issue("device-1", &[]);
            let https = HttpsServer::start(stranger.server_config(&server), vec![]).await;
            let notifier = Notifier::new(10);
            let handle = notifier.attach_hub_with(hub(https.port, &ours, &client), 8, FAST);
            alert(&notifier, 1);

            assert!(
                wait_for(WAIT, || handle.status().last_error.is_some()).await,
                "{:?}",
                handle.status()
            );
            // Several attempts, none of them getting through.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let status = handle.status();
            let error = status.last_error.clone().unwrap();
            assert!(error.contains("certificate"), "{error}");
            assert!(
                !error.contains("s3cr3t"),
                "the URL path must not leak: {error}"
            );
            assert_eq!((status.delivered, status.pending), (0, 1), "{status:?}");
            assert!(
                https.received().is_empty(),
                "no request may reach an untrusted server"
            );
        })
        .await;
    }
}
