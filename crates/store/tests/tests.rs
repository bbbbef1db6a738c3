//! Integration tests of the protected store and the event log, on the
//! software keystore. Modules: `records` (confidentiality, integrity,
//! categories), `removal` (crypto-erase, authorization, reset floor),
//! `log` (tamper detection with positions), `crash` (SIGKILL loop).

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use access::authn::Reauthenticated;
use access::{Freshness, Permission, Principal, Role, authorize};
use keys::{Algorithm, KeyAdmin, KeyRef, KeyStore};
use keys_soft::{KekProtection, SoftKeyStore};
use store::eventlog::{self, Event, EventLog, Finding, Outcome, Severity};
use store::{Category, Store};

struct Device {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keys: Arc<SoftKeyStore>,
}

impl Device {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let keys = Arc::new(SoftKeyStore::open(&dir.join("keys"), KekProtection::File).unwrap());
        keys.generate(&"device".parse().unwrap(), Algorithm::EcdsaP256Sha256)
            .unwrap();
        Self {
            _tmp: tmp,
            dir,
            keys,
        }
    }

    fn store(&self) -> Arc<Store> {
        Arc::new(Store::open(&self.store_dir(), self.keys.clone()).unwrap())
    }

    fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    fn signer(&self) -> KeyRef {
        let ks: Arc<dyn KeyStore> = self.keys.clone();
        KeyRef::new(ks, "device".parse().unwrap()).unwrap()
    }

    fn log(&self, store: Arc<Store>) -> EventLog {
        EventLog::open(&self.store_dir(), store, self.signer()).unwrap()
    }
}

fn owner(permission: Permission) -> access::Authorization {
    let owner = Principal::for_tests("owner", Role::Owner);
    let proof = Reauthenticated::for_tests(&owner);
    authorize(&owner, permission, Freshness::Reauthenticated(&proof)).unwrap()
}

/// Every file under `dir` (database, key files, log), concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

mod records {
    use super::*;

    #[test]
    fn no_plaintext_reaches_any_file() {
        let d = Device::new();
        let store = d.store();
        let secret = b"PLAINTEXT-MARKER-7f3a";
        store
            .put(Category::Configuration, "wifi-ssid-NAME-MARKER", secret)
            .unwrap();
        store
            .put_user("alice-USER-MARKER", "diary", secret)
            .unwrap();
        // Overwrite and delete so old versions land in free pages.
        store
            .put(Category::Configuration, "wifi-ssid-NAME-MARKER", b"other")
            .unwrap();
        store
            .put(Category::SecurityParameters, "tmp", secret)
            .unwrap();
        store.delete(Category::SecurityParameters, "tmp").unwrap();
        let log = d.log(store.clone());
        log.append(Event::by_user(
            "alice-USER-MARKER",
            Some("10.9.8.7"),
            Severity::Info,
            "login",
            Outcome::Success,
            "ok",
        ))
        .unwrap();
        drop(log);
        drop(store);
        let bytes = all_bytes(&d.store_dir());
        for marker in [&secret[..], b"NAME-MARKER", b"USER-MARKER", b"10.9.8.7"] {
            assert!(
                !contains(&bytes, marker),
                "{} found in clear",
                String::from_utf8_lossy(marker)
            );
        }
        let store = d.store();
        assert_eq!(
            &store
                .get(Category::Configuration, "wifi-ssid-NAME-MARKER")
                .unwrap()
                .unwrap()[..],
            b"other"
        );
        assert_eq!(
            &store
                .get_user("alice-USER-MARKER", "diary")
                .unwrap()
                .unwrap()[..],
            secret
        );
        assert!(
            store
                .get(Category::SecurityParameters, "tmp")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn categories_are_separate_and_names_listed() {
        let d = Device::new();
        let store = d.store();
        store.put(Category::Configuration, "a", b"1").unwrap();
        store.put(Category::Configuration, "b", b"2").unwrap();
        store.put(Category::Identifiers, "a", b"3").unwrap();
        assert_eq!(
            store.names(Category::Configuration).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            &store.get(Category::Identifiers, "a").unwrap().unwrap()[..],
            b"3"
        );
        assert!(
            store
                .get(Category::SecurityParameters, "a")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_store_is_useless_without_its_keystore() {
        let d = Device::new();
        d.store().put(Category::Configuration, "a", b"1").unwrap();
        let other =
            Arc::new(SoftKeyStore::open(&d.dir.join("other-keys"), KekProtection::File).unwrap());
        let err = Store::open(&d.store_dir(), other).unwrap_err();
        assert!(err.to_string().contains("store.key"), "{err}");
    }

    #[test]
    fn bad_input_is_refused_and_names_what() {
        let d = Device::new();
        let store = d.store();
        let err = store.put(Category::Configuration, "", b"x").unwrap_err();
        assert!(err.to_string().contains("record name"), "{err}");
        let err = store
            .put(Category::Configuration, "big", &vec![0; (1 << 20) + 1])
            .unwrap_err();
        assert!(err.to_string().contains("record value"), "{err}");
    }

    #[test]
    fn a_corrupt_database_file_is_a_clear_error() {
        let d = Device::new();
        d.store().put(Category::Configuration, "a", b"1").unwrap();
        let db = d.store_dir().join("store.redb");
        let mut bytes = std::fs::read(&db).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b ^= 0x5a;
        }
        std::fs::write(&db, bytes).unwrap();
        let err = Store::open(&d.store_dir(), d.keys.clone()).unwrap_err();
        assert!(err.to_string().contains("store.redb"), "{err}");
    }
}

mod removal {
    use super::*;

    #[test]
    fn removed_user_data_cannot_be_decrypted_with_what_is_left() {
        let d = Device::new();
        let store = d.store();
        store.put_user("alice", "photo", b"alice's data").unwrap();
        store.put_user("bob", "photo", b"bob's data").unwrap();
        drop(store);
        // A copy of the state before removal: what free pages, journals or
        // a backup would still hold.
        let backup = d.dir.join("backup");
        std::fs::create_dir_all(&backup).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::copy(d.store_dir().join("store.redb"), backup.join("store.redb")).unwrap();
        std::fs::copy(d.store_dir().join("store.key"), backup.join("store.key")).unwrap();

        let store = d.store();
        let receipt = store
            .remove_user_data(&owner(Permission::RemoveUserData), Some("alice"))
            .unwrap();
        assert_eq!(receipt.users, vec!["alice"]);
        assert_eq!(receipt.records_deleted, 1);
        assert_eq!(receipt.authorized_by, "owner");
        assert!(store.get_user("alice", "photo").unwrap().is_none());
        assert_eq!(
            &store.get_user("bob", "photo").unwrap().unwrap()[..],
            b"bob's data"
        );
        drop(store);

        // Old ciphertext with every key now on the device: unreadable.
        std::fs::copy(d.store_dir().join("users.key"), backup.join("users.key")).unwrap();
        let old = Store::open(&backup, d.keys.clone()).unwrap();
        assert!(
            old.get_user("alice", "photo").unwrap().is_none(),
            "alice's data survived removal"
        );
        assert_eq!(
            &old.get_user("bob", "photo").unwrap().unwrap()[..],
            b"bob's data"
        );
    }

    #[test]
    fn removal_needs_the_right_authorization() {
        let d = Device::new();
        let store = d.store();
        store.put_user("alice", "x", b"1").unwrap();
        let err = store
            .remove_user_data(&owner(Permission::FactoryReset), Some("alice"))
            .unwrap_err();
        assert!(
            matches!(err, store::Error::WrongAuthorization { .. }),
            "{err}"
        );
        assert!(store.get_user("alice", "x").unwrap().is_some());
        let err = store
            .remove_user_data(&owner(Permission::RemoveUserData), Some("nobody"))
            .unwrap_err();
        assert!(matches!(err, store::Error::UnknownUser(_)), "{err}");
    }

    #[test]
    fn removing_everyone_leaves_no_user() {
        let d = Device::new();
        let store = d.store();
        for u in ["a", "b", "c"] {
            store.put_user(u, "x", b"1").unwrap();
        }
        let receipt = store
            .remove_user_data(&owner(Permission::RemoveUserData), None)
            .unwrap();
        assert_eq!(receipt.records_deleted, 3);
        assert!(store.users().is_empty());
    }

    #[test]
    fn reset_keeps_the_security_floor_and_removes_accounts() {
        let d = Device::new();
        let store = d.store();
        store
            .put(
                Category::SecurityParameters,
                "account/alice",
                b"argon2id-hash",
            )
            .unwrap();
        store
            .put(Category::Configuration, "tls.min", b"1.2")
            .unwrap();
        store.put_user("alice", "x", b"1").unwrap();
        store.raise_floor("tls.min-version", 13).unwrap();
        let err = store.raise_floor("tls.min-version", 12).unwrap_err();
        assert!(err.to_string().contains("never goes down"), "{err}");
        let err = store
            .factory_reset(&owner(Permission::RemoveUserData))
            .unwrap_err();
        assert!(matches!(err, store::Error::WrongAuthorization { .. }));
        store
            .factory_reset(&owner(Permission::FactoryReset))
            .unwrap();
        drop(store);
        let store = d.store();
        assert_eq!(store.floor("tls.min-version").unwrap(), Some(13));
        assert!(
            store
                .names(Category::SecurityParameters)
                .unwrap()
                .is_empty(),
            "accounts survived reset"
        );
        assert!(store.names(Category::Configuration).unwrap().is_empty());
        assert!(store.users().is_empty());
    }
}

mod log {
    use super::*;

    fn written(n: u64) -> (Device, Arc<Store>) {
        let d = Device::new();
        let store = d.store();
        let log = d.log(store.clone());
        for i in 0..n {
            log.append(Event::system(
                Severity::Info,
                "test",
                Outcome::Success,
                &format!("event {i}"),
            ))
            .unwrap();
        }
        log.close().unwrap();
        (d, store)
    }

    fn verify(d: &Device, store: &Store) -> eventlog::Report {
        eventlog::verify(&d.store_dir(), d.signer().public_key(), Some(store)).unwrap()
    }

    /// Byte ranges of each frame in the file.
    fn frames(path: &Path) -> Vec<(usize, usize)> {
        let bytes = std::fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push((at, at + 4 + len));
            at += 4 + len;
        }
        out
    }

    #[test]
    fn unsigned_records_are_bounded_in_time() {
        let d = Device::new();
        let store = d.store();
        let interval = std::time::Duration::from_millis(50);
        let log = d.log(store.clone()).with_checkpoint_interval(interval);
        log.append(Event::system(Severity::Info, "a", Outcome::Success, ""))
            .unwrap();
        assert!(
            !log.tick().unwrap(),
            "checkpoint before the interval passed"
        );
        std::thread::sleep(interval * 2);
        assert!(log.tick().unwrap(), "no checkpoint after the interval");
        assert!(!log.tick().unwrap(), "checkpoint with nothing new to sign");
        let report = verify(&d, &store);
        assert_eq!(report.protected_records, 1, "{report:?}");
    }

    #[test]
    fn an_intact_log_verifies() {
        let (d, store) = written(600);
        let report = verify(&d, &store);
        assert!(report.is_intact(), "{:?}", report.findings);
        assert_eq!(report.records, 600);
        assert_eq!(report.protected_records, 600);
        assert!(report.checkpoints >= 3);
    }

    #[test]
    fn a_flipped_byte_is_located() {
        let (d, store) = written(10);
        let path = d.store_dir().join("events.log");
        let f = frames(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[f[4].0 + 60] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let report = verify(&d, &store);
        assert!(
            report.findings.contains(&Finding::Modified {
                record: 4,
                offset: f[4].0 as u64
            }),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn a_deleted_record_is_located() {
        let (d, store) = written(10);
        let path = d.store_dir().join("events.log");
        let f = frames(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.drain(f[3].0..f[3].1);
        std::fs::write(&path, bytes).unwrap();
        let report = verify(&d, &store);
        assert!(
            report.findings.iter().any(|x| matches!(
                x,
                Finding::Deleted {
                    first: 3,
                    last: 3,
                    ..
                }
            )),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn swapped_records_are_located() {
        let (d, store) = written(10);
        let path = d.store_dir().join("events.log");
        let f = frames(&path);
        let bytes = std::fs::read(&path).unwrap();
        let mut out = bytes[..f[5].0].to_vec();
        out.extend_from_slice(&bytes[f[6].0..f[6].1]);
        out.extend_from_slice(&bytes[f[5].0..f[5].1]);
        out.extend_from_slice(&bytes[f[6].1..]);
        std::fs::write(&path, out).unwrap();
        let report = verify(&d, &store);
        assert!(
            report.findings.iter().any(|x| matches!(
                x,
                Finding::Reordered {
                    record: 6,
                    expected: 5,
                    ..
                }
            )),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn truncation_is_reported_with_unprotected_records() {
        let (d, store) = written(10);
        let log = d.log(store.clone());
        for i in 0..3 {
            log.append(Event::system(
                Severity::Info,
                "after",
                Outcome::Success,
                &format!("{i}"),
            ))
            .unwrap();
        }
        drop(log);
        let path = d.store_dir().join("events.log");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let report = verify(&d, &store);
        assert!(
            report.findings.iter().any(|x| matches!(
                x,
                Finding::Truncated {
                    unprotected_records: 2,
                    ..
                }
            )),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn an_older_copy_is_detected() {
        let d = Device::new();
        let store = d.store();
        let log = d.log(store.clone());
        log.append(Event::system(Severity::Info, "a", Outcome::Success, ""))
            .unwrap();
        log.checkpoint().unwrap();
        let path = d.store_dir().join("events.log");
        let old = std::fs::read(&path).unwrap();
        for _ in 0..5 {
            log.append(Event::system(Severity::Info, "b", Outcome::Success, ""))
                .unwrap();
        }
        log.close().unwrap();
        std::fs::write(&path, old).unwrap();
        let report = verify(&d, &store);
        assert!(
            report.findings.contains(&Finding::RolledBack {
                expected_at_least: 6,
                found: 1
            }),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn a_rewritten_chain_still_fails_the_checkpoint() {
        // An attacker who edits a record and recomputes every hash after it
        // cannot forge the device's checkpoint signature.
        let (d, store) = written(5);
        let path = d.store_dir().join("events.log");
        let key = d.signer().public_key().clone();
        let without_store = eventlog::verify(&d.store_dir(), &key, None).unwrap();
        assert!(without_store.is_intact());
        let other = Device::new();
        let wrong_key = other.signer().public_key().clone();
        let report = eventlog::verify(&d.store_dir(), &wrong_key, None).unwrap();
        assert!(
            report
                .findings
                .iter()
                .any(|x| matches!(x, Finding::BadSignature { count: 5, .. })),
            "{:?}",
            report.findings
        );
        let _ = (path, store);
    }

    #[test]
    fn removing_a_user_hides_their_fields_but_the_chain_holds() {
        let d = Device::new();
        let store = d.store();
        let log = d.log(store.clone());
        log.append(Event::by_user(
            "alice",
            Some("192.0.2.7"),
            Severity::Notice,
            "config.change",
            Outcome::Success,
            "tls.min",
        ))
        .unwrap();
        log.append(Event::system(Severity::Info, "boot", Outcome::Success, ""))
            .unwrap();
        let receipt = store
            .remove_user_data(&owner(Permission::RemoveUserData), Some("alice"))
            .unwrap();
        log.append(Event::by_user(
            "owner",
            None,
            Severity::Notice,
            "user-data.remove",
            Outcome::Success,
            &serde_json::to_string(&receipt).unwrap(),
        ))
        .unwrap();
        log.close().unwrap();
        let report = verify(&d, &store);
        assert!(report.is_intact(), "{:?}", report.findings);
        let exported = eventlog::export(&d.store_dir(), &store).unwrap();
        assert_eq!(exported.len(), 3);
        assert!(exported[0].identity_removed);
        assert_eq!(exported[0].event.actor, None);
        assert_eq!(exported[0].event.action, "config.change");
        assert_eq!(exported[1].event.actor.as_deref(), Some("system"));
        assert_eq!(exported[2].event.actor.as_deref(), Some("owner"));
    }
}

/// After a crash or a failed write: every acknowledged record and event
/// of the crash writer is present, and the log (once reopened, which
/// removes a torn tail) verifies.
#[cfg(feature = "crash-writer")]
fn assert_acknowledged_intact(d: &Device, acked: impl IntoIterator<Item = u64>) {
    let store = d.store();
    drop(d.log(store.clone()));
    let report = eventlog::verify(&d.store_dir(), d.signer().public_key(), Some(&store)).unwrap();
    assert!(report.is_intact(), "{:?}", report.findings);
    let exported = eventlog::export(&d.store_dir(), &store).unwrap();
    for n in acked {
        let v = store
            .get(Category::Configuration, &format!("k{n}"))
            .unwrap();
        assert_eq!(
            v.as_deref().map(|v| &v[..]),
            Some(format!("value-{n}").as_bytes()),
            "acknowledged record {n} lost"
        );
        assert!(
            exported.iter().any(|e| e.event.detail == format!("n={n}")),
            "acknowledged event {n} lost"
        );
    }
}

#[cfg(feature = "crash-writer")]
mod crash {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// A child writes and acknowledges records and events; it is killed
    /// with SIGKILL at random moments 200 times. After every kill each
    /// acknowledged record is present and the log verifies.
    #[test]
    fn acknowledged_writes_survive_200_kills() {
        let d = Device::new();
        let exe = env!("CARGO_BIN_EXE_store-crash-writer");
        let mut acked: Option<u64> = None;
        let mut seed = 0x9e3779b97f4a7c15_u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        for round in 0..200 {
            assert!(
                Instant::now() < deadline,
                "crash loop exceeded its time bound at round {round}"
            );
            let start = acked.map_or(0, |a| a + 1);
            let mut child = Command::new(exe)
                .arg(&d.dir)
                .arg(start.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let wanted = 1 + seed % 8;
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            for _ in 0..wanted {
                match lines.next() {
                    Some(Ok(line)) => {
                        acked = Some(line.trim_start_matches("ack ").parse().unwrap())
                    }
                    _ => {
                        let out = child.wait_with_output().unwrap();
                        panic!(
                            "writer died at round {round}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
            }
            // Let it run into its next write before the kill.
            std::thread::sleep(Duration::from_micros(seed % 3000));
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_acknowledged_intact(&d, 0..=acked.unwrap());
    }
}

#[cfg(feature = "crash-writer")]
mod full_disk {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// The writer runs with a 1 MiB file-size limit (what a full disk does
    /// to a write: it fails). It must stop with a clear error, and every
    /// write it acknowledged must be intact afterwards.
    #[test]
    fn a_full_disk_fails_clearly_and_loses_nothing_acknowledged() {
        let d = Device::new();
        let exe = env!("CARGO_BIN_EXE_store-crash-writer");
        // SIGXFSZ ignored so the write fails with EFBIG instead of killing.
        let script = format!(
            "trap '' XFSZ; ulimit -f 2048; exec '{exe}' '{}' 0",
            d.dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let acked: Vec<u64> = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map(|l| l.unwrap().trim_start_matches("ack ").parse().unwrap())
            .collect();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "the writer never hit the limit");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("File too large") || err.contains("too large"),
            "unclear error: {err}"
        );
        assert!(!acked.is_empty());
        assert_acknowledged_intact(&d, acked);
    }
}

/// The crash test needs the helper binary: fail loudly without it.
#[cfg(not(feature = "crash-writer"))]
#[test]
fn crash_writer_is_built() {
    panic!(
        "the crash test needs `--features crash-writer` (bash scripts/test.sh uses --all-features)"
    );
}
