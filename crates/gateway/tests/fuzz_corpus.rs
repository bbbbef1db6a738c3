//! Replays every seed in `fuzz/corpus/{mqtt,modbus,coap}_session/` through
//! the fuzz targets' own code (`fuzz/src/gateway.rs`, compiled in here),
//! so CI checks on stable Rust that no seed panics or breaks an invariant
//! the harness asserts, that the named seeds are the ones the seed
//! functions make, and that each bad-case seed of issue 6 is refused by
//! the inspection layer for the reason it was written for.
//!
//! The named seeds are generated here too: with
//! `BULWARK_WRITE_FUZZ_SEEDS=1` the `*_seeds_reach_their_outcomes` tests
//! write them into `fuzz/corpus/` before checking them.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unreachable_pub, dead_code, missing_docs)]
#[path = "../../../fuzz/src/gateway.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::Seed;

/// Set to 1 to (re)write the named seeds instead of checking them, as
/// expect-test's `UPDATE_EXPECT` does.
const REGENERATE_ENV: &str = "BULWARK_WRITE_FUZZ_SEEDS";
const REGENERATE: &str =
    "BULWARK_WRITE_FUZZ_SEEDS=1 cargo test -p gateway --test fuzz_corpus seeds_reach";

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file in the target's corpus, named seeds and any checked-in
/// findings alike.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}; regenerate with {REGENERATE}",
                dir.display()
            )
        })
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay<T>(target: &str, run: fn(&[u8]) -> T) {
    let files = corpus(target);
    // An empty corpus would make this test pass vacuously.
    assert!(files.len() >= 5, "{target}: too few seeds");
    for path in files {
        let data = std::fs::read(&path).expect("seed is readable");
        // A panic names the seed through this line in the output.
        eprintln!("replaying {}", path.display());
        run(&data);
    }
}

/// The named seeds on disk are exactly what the seed functions make, and
/// each reaches its expected outcome: refused with the listed reasons, or
/// (for valid sessions) nothing refused and something forwarded.
fn check_named<T>(
    target: &str,
    seeds: Vec<Seed>,
    run: fn(&[u8]) -> T,
    outcome: fn(&T) -> (&[String], usize),
) {
    let dir = corpus_dir(target);
    let bad = seeds.iter().filter(|s| !s.refusals.is_empty()).count();
    assert!(bad >= 6, "{target}: only {bad} bad-case seeds");
    for seed in seeds {
        let path = dir.join(seed.name);
        if std::env::var_os(REGENERATE_ENV).is_some_and(|v| v == "1") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &seed.data).unwrap();
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with {REGENERATE}", path.display()));
        assert!(
            on_disk == seed.data,
            "{} differs from its seed function; regenerate with {REGENERATE}",
            path.display()
        );
        let result = run(&seed.data);
        let (refusals, forwarded) = outcome(&result);
        assert_eq!(refusals, seed.refusals.as_slice(), "{target}/{}", seed.name);
        if seed.refusals.is_empty() {
            assert!(forwarded > 0, "{target}/{}: nothing forwarded", seed.name);
        }
    }
}

#[test]
fn mqtt_corpus_replays() {
    replay("mqtt_session", harness::mqtt_session);
}

#[test]
fn modbus_corpus_replays() {
    replay("modbus_session", harness::modbus_session);
}

#[test]
fn coap_corpus_replays() {
    replay("coap_session", harness::coap_session);
}

#[test]
fn mqtt_seeds_reach_their_outcomes() {
    check_named(
        "mqtt_session",
        harness::mqtt_seeds(),
        harness::mqtt_session,
        |o| (&o.refusals, o.forwarded.len()),
    );
    // A valid session ends with the client's DISCONNECT, forwarded.
    let valid = harness::mqtt_seeds().into_iter().next().unwrap();
    assert!(harness::mqtt_session(&valid.data).disconnected);
}

#[test]
fn modbus_seeds_reach_their_outcomes() {
    check_named(
        "modbus_session",
        harness::modbus_seeds(),
        harness::modbus_session,
        |o| (&o.refusals, o.forwarded.len()),
    );
    // Every bad case after the first (valid) read: that read went on, the
    // bad frame did not.
    for seed in harness::modbus_seeds() {
        let o = harness::modbus_session(&seed.data);
        if !seed.refusals.is_empty() {
            assert_eq!(o.forwarded.len(), 1, "{}", seed.name);
        }
    }
}

#[test]
fn coap_seeds_reach_their_outcomes() {
    check_named(
        "coap_session",
        harness::coap_seeds(),
        harness::coap_session,
        |o| (&o.refusals, o.forwarded.len()),
    );
    let seeds = harness::coap_seeds();
    let named = |name: &str| {
        let seed = seeds.iter().find(|s| s.name == name).unwrap();
        harness::coap_session(&seed.data)
    };
    // Responses that answer a forwarded request reach the device.
    assert_eq!(named("valid-exchanges").relayed.len(), 3);
    // The never-completing Block1 transfer holds at most MAX_PENDING
    // exchanges; the block after that is refused.
    assert_eq!(
        named("block1-never-completes").forwarded.len(),
        gateway::coap::inspect::MAX_PENDING
    );
    // The replay is refused, the original went on.
    assert_eq!(named("replayed-message-id").forwarded.len(), 1);
}

/// The harness itself notices a forwarded frame the policy forbids, so a
/// green replay means something.
#[test]
#[should_panic(expected = "publish to `dev/other/t` forwarded")]
fn harness_invariants_can_fail() {
    // A forged outcome: what `Session` would never forward.
    let mut stream = Vec::new();
    for seed in harness::mqtt_seeds() {
        if seed.name == "publish-outside-prefix" {
            stream = seed.data;
        }
    }
    let connect_len = 2 + usize::from(stream[2]);
    let mut publish = vec![0x30, 14, 0, 11];
    publish.extend(b"dev/other/t");
    publish.push(b'x');
    let mut forged = stream[1..1 + connect_len].to_vec();
    forged.extend(&publish);
    let outcome = harness::MqttOutcome {
        forwarded: vec![stream[1..1 + connect_len].to_vec(), publish],
        refusals: Vec::new(),
        disconnected: false,
    };
    harness::check_mqtt_outcome(&forged, &outcome);
}
