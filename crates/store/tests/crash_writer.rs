//! Test helper, not shipped: writes records and events forever, printing
//! `ack N` only after record N and event N are durable, until killed.

use std::io::Write;
use std::sync::Arc;

use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use store::eventlog::{Event, EventLog, Outcome, Severity};
use store::{Category, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: crash-writer DIR START")?,
    );
    let start: u64 = std::env::args()
        .nth(2)
        .ok_or("usage: crash-writer DIR START")?
        .parse()?;
    let keys = Arc::new(SoftKeyStore::open(&dir.join("keys"), KekProtection::File)?);
    let label = "device".parse()?;
    if keys.public_key(&label).is_err() {
        keys.generate(&label, Algorithm::EcdsaP256Sha256)?;
    }
    let ks: Arc<dyn KeyStore> = keys;
    let store = Arc::new(Store::open(&dir.join("store"), ks.clone())?);
    let log = EventLog::open(&dir.join("store"), store.clone(), KeyRef::new(ks, label)?)?;
    let mut out = std::io::stdout().lock();
    for n in start.. {
        store.put(
            Category::Configuration,
            &format!("k{n}"),
            format!("value-{n}").as_bytes(),
        )?;
        let user = format!("user{}", n % 3);
        log.append(Event::by_user(
            &user,
            Some("127.0.0.1"),
            Severity::Info,
            "write",
            Outcome::Success,
            &format!("n={n}"),
        ))?;
        writeln!(out, "ack {n}")?;
        out.flush()?;
    }
    Ok(())
}
