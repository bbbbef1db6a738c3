//! Encrypted store and event log against plain redb with the same
//! durability (one fsync'd transaction per write), side by side in one
//! run; prints the ratios. Run: `cargo bench -p store --bench store`.

// Bench code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use redb::{Database, ReadableDatabase, TableDefinition};
use store::eventlog::{Event, EventLog, Outcome, Severity};
use store::{Category, Store};

const N: usize = 2000;
const VALUE: usize = 256;
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("plain");

fn per_second(n: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let value = vec![0x42u8; VALUE];
    let names: Vec<String> = (0..N).map(|i| format!("record-{i:06}")).collect();

    let plain = Database::create(dir.path().join("plain.redb")).unwrap();
    let plain_put = per_second(N, || {
        for name in &names {
            let txn = plain.begin_write().unwrap();
            txn.open_table(TABLE)
                .unwrap()
                .insert(name.as_str(), &value[..])
                .unwrap();
            txn.commit().unwrap();
        }
    });
    let keys = Arc::new(SoftKeyStore::open(&dir.path().join("keys"), KekProtection::File).unwrap());
    keys.generate(&"device".parse().unwrap(), Algorithm::EcdsaP256Sha256)
        .unwrap();
    let ks: Arc<dyn KeyStore> = keys;
    let store = Arc::new(Store::open(&dir.path().join("store"), ks.clone()).unwrap());
    let enc_put = per_second(N, || {
        for name in &names {
            store.put(Category::Configuration, name, &value).unwrap();
        }
    });
    // Reads alternate in rounds so both sides see the same machine state.
    let (mut plain_time, mut enc_time) = (0.0f64, 0.0f64);
    let rounds = 20;
    for _ in 0..rounds {
        let start = Instant::now();
        for name in &names {
            let txn = plain.begin_read().unwrap();
            let t = txn.open_table(TABLE).unwrap();
            // Copy the value out, as any caller using it after the read must.
            let value = t.get(name.as_str()).unwrap().map(|v| v.value().to_vec());
            assert!(std::hint::black_box(value).is_some());
        }
        plain_time += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for name in &names {
            assert!(
                std::hint::black_box(store.get(Category::Configuration, name).unwrap()).is_some()
            );
        }
        enc_time += start.elapsed().as_secs_f64();
    }
    let plain_get = (N * rounds) as f64 / plain_time;
    let enc_get = (N * rounds) as f64 / enc_time;

    let log = EventLog::open(
        &dir.path().join("store"),
        store.clone(),
        KeyRef::new(ks, "device".parse().unwrap()).unwrap(),
    )
    .unwrap();
    let detail = "x".repeat(VALUE);
    let log_append = per_second(N, || {
        for _ in 0..N {
            log.append(Event::system(
                Severity::Info,
                "bench",
                Outcome::Success,
                &detail,
            ))
            .unwrap();
        }
    });

    println!(
        "{:<46} {:>10}",
        "operation (durable, one write per commit)", "per second"
    );
    println!("{:<46} {:>10.0}", "plain redb insert (256 B)", plain_put);
    println!("{:<46} {:>10.0}", "encrypted store put (256 B)", enc_put);
    println!("{:<46} {:>10.0}", "plain redb get", plain_get);
    println!("{:<46} {:>10.0}", "encrypted store get", enc_get);
    println!(
        "{:<46} {:>10.0}",
        "event log append (fsync each, 256 B detail)", log_append
    );
    println!(
        "ratio put  encrypted / plain redb: {:.2}",
        enc_put / plain_put
    );
    println!(
        "ratio get  encrypted / plain redb: {:.2}",
        enc_get / plain_get
    );
    println!(
        "ratio log append / plain redb insert: {:.2}",
        log_append / plain_put
    );
}
