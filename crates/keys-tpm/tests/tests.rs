//! Integration tests of the TPM keystore. Every test function starts its
//! own swtpm with fresh state (testkit), so tests may run in parallel
//! while no two ever share a TPM. tpm2-tools, independent of tss-esapi,
//! inspect and manipulate the TPM from outside.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keys::{Algorithm, Error, KeyAdmin, KeyLabel, KeyStore, SealedSecret};
use keys_tpm::{INDEX_FILE, TpmConfig, TpmKeyStore, handles};
use sha2::{Digest, Sha256};
use testkit::swtpm::Swtpm;

fn label(s: &str) -> KeyLabel {
    s.parse().expect("valid test label")
}

/// One swtpm and one state directory.
struct Fixture {
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            tpm: Swtpm::start(),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("tpm")
    }

    fn config(&self) -> TpmConfig {
        TpmConfig::new(self.tpm.tcti(), self.state())
    }

    fn open(&self) -> TpmKeyStore {
        TpmKeyStore::open(self.config()).expect("open the TPM keystore")
    }

    /// Runs a tpm2-tools command against this fixture's TPM.
    fn tool(&self, tool: &str, args: &[&str]) -> String {
        testkit::require_tool(tool, "tpm2-tools");
        let out = Command::new(tool)
            .args(args)
            .env("TPM2TOOLS_TCTI", self.tpm.tcti())
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("tool output is UTF-8")
    }

    /// `tpm2_getcap handles-persistent`, parsed.
    fn persistent_handles(&self) -> Vec<u32> {
        self.tool("tpm2_getcap", &["handles-persistent"])
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- 0x"))
            .map(|hex| u32::from_str_radix(hex, 16).expect("hex handle"))
            .collect()
    }

    /// Persists some object that is not ours at `handle`.
    fn persist_foreign_object(&self, handle: u32) {
        let ctx = format!("foreign-{handle:x}.ctx");
        self.tool(
            "tpm2_createprimary",
            &["-C", "o", "-G", "ecc", "-g", "sha256", "-c", &ctx],
        );
        self.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", &ctx, &format!("{handle:#x}")],
        );
        self.flush_transients();
    }

    /// Without a resource manager, tpm2-tools leave their transient
    /// objects loaded; swtpm has only three object slots.
    fn flush_transients(&self) {
        self.tool("tpm2_flushcontext", &["-t"]);
    }

    fn evict(&self, handle: u32) {
        self.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", &format!("{handle:#x}")],
        );
    }
}

// The shared suite: the same checks the software and PKCS#11 stores pass.
mod conformance {
    use super::*;

    #[test]
    fn passes_against_swtpm() {
        let fx = Fixture::new();
        let open = || -> Arc<dyn KeyAdmin> { Arc::new(fx.open()) };
        keys_conformance::run_all(&keys_conformance::Suite {
            open: &open,
            algorithms: &[Algorithm::EcdsaP256Sha256],
            secrets: &[],
            label_prefix: "tpm",
        });
    }

    #[test]
    fn threads_share_one_store() {
        let fx = Fixture::new();
        let store = Arc::new(fx.open());
        let l = label("shared");
        let public = store.generate(&l, Algorithm::EcdsaP256Sha256).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..5)
                        .map(|i| {
                            let msg = format!("thread {t} message {i}").into_bytes();
                            let sig = store.sign(&l, &msg).unwrap();
                            (msg, sig)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            for (msg, sig) in thread.join().unwrap() {
                assert!(keys_conformance::verify(&public, &msg, &sig));
            }
        }
    }
}

// A TPM that cannot be reached is reported as such, quickly.
mod reachability {
    use super::*;

    fn assert_unavailable(err: &Error, tcti: &str) {
        assert!(matches!(err, Error::Unavailable { .. }), "got {err:?}");
        assert!(err.to_string().contains(tcti), "{err} does not name {tcti}");
    }

    #[test]
    fn stopped_tpm_is_unavailable_without_hanging() {
        let mut fx = Fixture::new();
        let tcti = fx.tpm.tcti();
        let store = fx.open();
        let l = label("before-stop");
        store.generate(&l, Algorithm::EcdsaP256Sha256).unwrap();
        fx.tpm.stop();

        let start = Instant::now();
        let err = TpmKeyStore::open(fx.config()).unwrap_err();
        assert_unavailable(&err, &tcti);
        let err = store.sign(&l, b"x").unwrap_err();
        assert_unavailable(&err, &tcti);
        let err = store.unseal(&SealedSecret(b"BWTS\x01\x00\x01x\x00\x01y".to_vec()));
        assert!(err.is_err());
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn closed_port_or_missing_device_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        for tcti in [
            format!("swtpm:host=127.0.0.1,port={}", testkit::free_port_pair()),
            "device:/nonexistent/tpmrm0".to_owned(),
        ] {
            let start = Instant::now();
            let err = TpmKeyStore::open(TpmConfig::new(&tcti, dir.path().join("tpm"))).unwrap_err();
            assert_unavailable(&err, &tcti);
            assert!(start.elapsed() < Duration::from_secs(5), "{tcti}");
        }
    }

    #[test]
    fn malformed_tcti_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            TpmKeyStore::open(TpmConfig::new("tpm-over-carrier-pigeon", dir.path())).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "got {err:?}");
        assert!(err.to_string().contains("tpm-over-carrier-pigeon"), "{err}");
    }
}

// Where keys live in the TPM, checked with tpm2-tools.
mod placement {
    use super::*;

    #[test]
    fn keys_use_the_key_range_and_never_endorsement_handles() {
        let fx = Fixture::new();
        // Provision EKs where swtpm_setup and vendors put them, and a
        // foreign object at the first key handle, before the store exists.
        fx.tool("tpm2_createek", &["-c", "0x81010001", "-G", "rsa"]);
        fx.tool("tpm2_createek", &["-c", "0x81010016", "-G", "ecc"]);
        fx.flush_transients();
        fx.persist_foreign_object(0x8100_0100);
        let before = fx.persistent_handles();

        let store = fx.open();
        let (a, b) = (label("first"), label("second"));
        store.generate(&a, Algorithm::EcdsaP256Sha256).unwrap();
        store.generate(&b, Algorithm::EcdsaP256Sha256).unwrap();
        let (ha, hb) = (
            store.persistent_handle(&a).unwrap(),
            store.persistent_handle(&b).unwrap(),
        );
        assert_eq!((ha, hb), (0x8100_0101, 0x8100_0102), "first free handles");

        // The store is open and yet tpm2-tools get through: one
        // connection per operation.
        let listed = fx.persistent_handles();
        assert!(listed.contains(&handles::STORAGE_KEY), "{listed:x?}");
        assert!(listed.contains(&ha) && listed.contains(&hb), "{listed:x?}");
        for ek in handles::ENDORSEMENT_KEYS {
            assert!(listed.contains(&ek), "EK {ek:#x} vanished: {listed:x?}");
            assert!(ha != ek && hb != ek);
        }
        assert!(handles::KEYS.contains(&ha) && handles::KEYS.contains(&hb));

        let srk = fx.tool("tpm2_readpublic", &["-c", "0x81000001"]);
        for attr in ["restricted", "decrypt", "fixedtpm", "fixedparent"] {
            assert!(srk.contains(attr), "SRK lacks {attr}: {srk}");
        }
        let key = fx.tool("tpm2_readpublic", &["-c", &format!("{ha:#x}")]);
        for attr in [
            "fixedtpm",
            "fixedparent",
            "sensitivedataorigin",
            "userwithauth",
            "sign",
        ] {
            assert!(key.contains(attr), "key lacks {attr}: {key}");
        }
        assert!(
            !key.contains("decrypt") && !key.contains("restricted"),
            "{key}"
        );

        store.delete(&a).unwrap();
        store.delete(&b).unwrap();
        let mut after = fx.persistent_handles();
        after.retain(|h| *h != handles::STORAGE_KEY);
        assert_eq!(after, before, "delete touched objects that were not ours");
    }

    #[test]
    fn existing_storage_key_is_reused_and_a_wrong_one_refused() {
        let fx = Fixture::new();
        drop(fx.open());
        let srk_name = fx.tool("tpm2_readpublic", &["-c", "0x81000001"]);
        drop(fx.open());
        assert_eq!(
            fx.tool("tpm2_readpublic", &["-c", "0x81000001"]),
            srk_name,
            "reopening replaced the storage key"
        );

        // Someone else's signing key at the SRK handle is not a storage key.
        fx.evict(handles::STORAGE_KEY);
        fx.tool(
            "tpm2_createprimary",
            &[
                "-C",
                "o",
                "-G",
                "ecc",
                "-a",
                "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                "-c",
                "sig.ctx",
            ],
        );
        fx.tool(
            "tpm2_evictcontrol",
            &["-C", "o", "-c", "sig.ctx", "0x81000001"],
        );
        let err = TpmKeyStore::open(fx.config()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
        assert!(err.to_string().contains("0x81000001"), "{err}");
    }
}

// The index file and its cross-checks against the TPM.
mod index {
    use super::*;

    #[test]
    fn corrupt_index_is_named() {
        let fx = Fixture::new();
        let store = fx.open();
        store
            .generate(&label("k"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        drop(store);
        let path = fx.state().join(INDEX_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        for bad in [
            "{ not json".to_owned(),
            good[..good.len() / 2].to_owned(),
            good.replace("0x81000100", "0x81010001"),
            good.replace("\"format\": 1", "\"format\": 9"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let err = TpmKeyStore::open(fx.config()).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err} does not name {}",
                path.display()
            );
        }
    }

    #[test]
    fn generate_is_all_or_nothing() {
        let fx = Fixture::new();
        let store = fx.open();
        // keys::fsio::write_atomic writes `.<name>.tmp-<pid>` first; a
        // directory in its place makes the index write fail even for root.
        let blocker = fx
            .state()
            .join(format!(".{INDEX_FILE}.tmp-{}", std::process::id()));
        std::fs::create_dir(&blocker).unwrap();
        let l = label("doomed");
        let err = store.generate(&l, Algorithm::EcdsaP256Sha256).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "got {err:?}");
        assert_eq!(
            fx.persistent_handles(),
            vec![handles::STORAGE_KEY],
            "the key outlived its failed generate"
        );
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            store.public_key(&l),
            Err(Error::KeyNotFound { .. })
        ));

        std::fs::remove_dir(&blocker).unwrap();
        store.generate(&l, Algorithm::EcdsaP256Sha256).unwrap();
        assert_eq!(store.persistent_handle(&l).unwrap(), 0x8100_0100);
    }

    #[test]
    fn a_replaced_or_missing_key_is_detected() {
        let fx = Fixture::new();
        let store = fx.open();
        let (swapped, gone) = (label("swapped"), label("gone"));
        store
            .generate(&swapped, Algorithm::EcdsaP256Sha256)
            .unwrap();
        store.generate(&gone, Algorithm::EcdsaP256Sha256).unwrap();
        let hs = store.persistent_handle(&swapped).unwrap();
        let hg = store.persistent_handle(&gone).unwrap();

        // Another object takes the swapped key's handle.
        fx.evict(hs);
        fx.persist_foreign_object(hs);
        let err = store.sign(&swapped, b"x").unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "got {err:?}");
        assert!(err.to_string().contains("another object"), "{err}");
        store.delete(&swapped).unwrap();
        assert!(
            fx.persistent_handles().contains(&hs),
            "delete evicted an object that was not ours"
        );

        fx.evict(hg);
        let err = store.public_key(&gone).unwrap_err();
        assert!(err.to_string().contains("missing from the TPM"), "{err}");
        assert!(matches!(store.list(), Err(Error::Corrupt { .. })));
        store.delete(&gone).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}

// Sealed secrets: the TPM, not only our parser, rejects modified blobs.
mod sealing {
    use super::*;

    /// (start, len) of the TPM2B_PUBLIC inside a sealed blob.
    fn public_section(blob: &[u8]) -> (usize, usize) {
        (7, usize::from(u16::from_be_bytes([blob[5], blob[6]])))
    }

    fn assert_rejected_by_tpm(store: &TpmKeyStore, blob: Vec<u8>, what: &str) {
        let err = store
            .unseal(&SealedSecret(blob))
            .expect_err("unseal must fail");
        assert!(matches!(err, Error::UnsealFailed { .. }), "{what}: {err:?}");
        assert!(
            err.to_string().contains("TPM2_Load"),
            "{what} was not caught by the TPM: {err}"
        );
    }

    #[test]
    fn tampering_fails_in_the_tpm() {
        let fx = Fixture::new();
        let store = fx.open();
        let secret = b"disk key 0123456789abcdef";
        let sealed = store.seal(secret).unwrap();
        let (start, len) = public_section(&sealed.0);

        // adminWithPolicy (bit 7 of the attributes' low byte) still passes
        // our structural checks; only the object's name changes.
        let attrs_low_byte = start + 2 + 2 + 2 + 3;
        let mut blob = sealed.0.clone();
        blob[attrs_low_byte] ^= 0x80;
        assert_rejected_by_tpm(&store, blob, "attribute flip");

        let mut blob = sealed.0.clone();
        blob[start + len - 1] ^= 0x01;
        assert_rejected_by_tpm(&store, blob, "unique-digest flip");

        for offset in [start + len + 2, start + len + 20, sealed.0.len() - 1] {
            let mut blob = sealed.0.clone();
            blob[offset] ^= 0x01;
            assert_rejected_by_tpm(&store, blob, &format!("private byte {offset}"));
        }

        assert_eq!(&store.unseal(&sealed).unwrap()[..], secret);
    }

    #[test]
    fn every_byte_flip_and_garbage_is_refused_without_panic() {
        let fx = Fixture::new();
        let store = fx.open();
        let sealed = store.seal(b"k").unwrap();
        for offset in 0..sealed.0.len() {
            let mut blob = sealed.0.clone();
            blob[offset] ^= 0x04;
            let err = store.unseal(&SealedSecret(blob)).unwrap_err();
            assert!(
                matches!(err, Error::UnsealFailed { .. }),
                "byte {offset}: {err:?}"
            );
        }
        for garbage in [&b""[..], b"BWTS", b"BWTS\x01\xff\xff", &[0u8; 300]] {
            assert!(store.unseal(&SealedSecret(garbage.to_vec())).is_err());
        }
    }

    #[test]
    fn oversized_secret_is_invalid_input() {
        let fx = Fixture::new();
        let store = fx.open();
        let err = store
            .seal(&[1u8; SealedSecret::MAX_PLAINTEXT + 1])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "got {err:?}");
        assert!(!err.to_string().contains("\u{1}"));
        let err = store.seal(&[]).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "got {err:?}");
        assert_eq!(&store.unseal(&store.seal(&[0]).unwrap()).unwrap()[..], &[0]);
    }

    /// A TCP relay between the store and swtpm (command and control
    /// ports) that records every byte in both directions: what a probe on
    /// the TPM bus would see.
    struct Relay {
        port: u16,
        wire: Arc<Mutex<Vec<u8>>>,
    }

    impl Relay {
        fn start(target_port: u16) -> Self {
            let port = testkit::free_port_pair();
            let wire = Arc::new(Mutex::new(Vec::new()));
            for offset in [0, 1] {
                let listener =
                    TcpListener::bind(("127.0.0.1", port + offset)).expect("bind relay port");
                let wire = wire.clone();
                std::thread::spawn(move || {
                    for client in listener.incoming() {
                        let Ok(client) = client else { return };
                        let server = TcpStream::connect(("127.0.0.1", target_port + offset))
                            .expect("relay reaches swtpm");
                        for (mut from, mut to) in [
                            (
                                client.try_clone().expect("clone"),
                                server.try_clone().expect("clone"),
                            ),
                            (server, client),
                        ] {
                            let wire = wire.clone();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n @ 1..) = from.read(&mut buf) {
                                    wire.lock().expect("wire log").extend_from_slice(&buf[..n]);
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                });
            }
            Self { port, wire }
        }

        fn saw(&self, needle: &[u8]) -> bool {
            self.wire
                .lock()
                .expect("wire log")
                .windows(needle.len())
                .any(|w| w == needle)
        }
    }

    #[test]
    fn secrets_never_cross_the_wire_in_clear() {
        let fx = Fixture::new();
        let relay = Relay::start(fx.tpm.port());
        let tcti = format!("swtpm:host=127.0.0.1,port={}", relay.port);
        let store = TpmKeyStore::open(TpmConfig::new(tcti, fx.state())).unwrap();
        let secret = b"wire-test secret, never in clear";
        let sealed = store.seal(secret).unwrap();
        assert_eq!(&store.unseal(&sealed).unwrap()[..], secret);

        // Positive control: a digest to sign is not secret and crosses in
        // clear, so the relay does record the command stream.
        let l = label("wire");
        store.generate(&l, Algorithm::EcdsaP256Sha256).unwrap();
        store.sign(&l, b"visible").unwrap();
        assert!(
            relay.saw(&Sha256::digest(b"visible")),
            "the relay recorded no commands"
        );
        for piece in secret.windows(8) {
            assert!(
                !relay.saw(piece),
                "{:?} crossed in clear",
                String::from_utf8_lossy(piece)
            );
        }
    }
}

// What the store says about itself.
mod description {
    use super::*;

    #[test]
    fn info_and_debug_say_what_they_should() {
        let fx = Fixture::new();
        let store = fx.open();
        let info = store.info();
        assert_eq!(info.backend, "tpm2");
        assert!(info.hardware_backed);
        assert_eq!(info.class, keys::CapabilityClass::Enhanced);
        let debug = format!("{store:?}");
        assert!(debug.contains(&fx.tpm.tcti()), "{debug}");
        assert!(debug.contains(&fx.state().display().to_string()), "{debug}");
        assert!(Path::new(&fx.state().join(INDEX_FILE)).exists());
    }
}

// The NV counter behind the update security floor.
mod floor_counter {
    use keys_tpm::TpmCounter;
    use update::anti_rollback::{
        CounterBackedFloor, FileSecurityFloor, MonotonicCounter, SecurityFloor,
    };

    use super::*;

    const INDEX: &str = "0x1800b00";

    impl Fixture {
        fn counter(&self) -> TpmCounter {
            TpmCounter::open_or_define(&self.tpm.tcti()).expect("open the floor counter")
        }

        /// `tpm2_getcap handles-nv-index`, parsed.
        fn nv_indices(&self) -> Vec<u32> {
            self.tool("tpm2_getcap", &["handles-nv-index"])
                .lines()
                .filter_map(|line| line.trim().strip_prefix("- 0x"))
                .map(|hex| u32::from_str_radix(hex, 16).expect("hex index"))
                .collect()
        }

        /// The raw counter, read by tpm2-tools (big-endian UINT64).
        fn raw_counter(&self) -> u64 {
            self.tool(
                "tpm2_nvread",
                &["-C", "o", "-s", "8", "-o", "raw.bin", INDEX],
            );
            let bytes = std::fs::read(self.dir.path().join("raw.bin")).expect("raw.bin");
            u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
        }
    }

    /// The update crate's view of the TPM counter.
    #[derive(Debug)]
    struct Floor(TpmCounter);

    impl MonotonicCounter for Floor {
        fn read(&self) -> update::Result<u64> {
            Ok(self.0.read()?)
        }
        fn increment(&self) -> update::Result<u64> {
            Ok(self.0.increment()?)
        }
    }

    #[test]
    fn defined_once_survives_reopening_and_only_counts_up() {
        let fx = Fixture::new();
        let counter = fx.counter();
        assert_eq!(counter.index(), handles::FLOOR_COUNTER);
        assert_eq!(counter.read().unwrap(), 0, "0 right after binding");
        assert_eq!(fx.raw_counter(), counter.base());
        let mut indices = fx.nv_indices();
        indices.sort_unstable();
        assert_eq!(
            indices,
            [handles::FLOOR_COUNTER, handles::FLOOR_COUNTER_BASE]
        );
        for expected in 1..=3 {
            assert_eq!(counter.increment().unwrap(), expected);
        }
        assert_eq!(fx.raw_counter(), counter.base() + 3, "tpm2_nvread agrees");
        let base = counter.base();
        drop(counter);
        let again = fx.counter();
        assert_eq!(again.base(), base, "the binding is kept");
        assert_eq!(again.read().unwrap(), 3);
        assert_eq!(fx.nv_indices().len(), 2, "nothing defined twice");
        // The keystore on the same TPM is unaffected, and vice versa.
        let store = fx.open();
        store
            .generate(&label("beside-counter"), Algorithm::EcdsaP256Sha256)
            .unwrap();
        assert_eq!(again.increment().unwrap(), 4);
    }

    #[test]
    fn undefining_the_counter_does_not_move_it_back() {
        let fx = Fixture::new();
        let counter = fx.counter();
        for _ in 0..5 {
            counter.increment().unwrap();
        }
        drop(counter);
        // With owner authorization (empty here), the counter can be
        // undefined; the TPM redefines it at its highest value ever.
        fx.tool("tpm2_nvundefine", &["-C", "o", INDEX]);
        let again = fx.counter();
        assert!(
            again.read().unwrap() >= 5,
            "read {} after redefinition",
            again.read().unwrap()
        );
    }

    #[test]
    fn an_index_of_other_software_is_refused_and_left_alone() {
        let fx = Fixture::new();
        fx.tool(
            "tpm2_nvdefine",
            &[
                "-C",
                "o",
                "-s",
                "8",
                "-a",
                "ownerread|ownerwrite|authread",
                INDEX,
            ],
        );
        let err = TpmCounter::open_or_define(&fx.tpm.tcti()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("0x01800b00") && text.contains("other software"),
            "{text}"
        );
        assert_eq!(
            fx.nv_indices(),
            [handles::FLOOR_COUNTER],
            "left alone, base not defined"
        );
    }

    #[test]
    fn a_binding_cut_short_is_finished() {
        let fx = Fixture::new();
        // As if a crash hit right after TPM2_NV_DefineSpace: defined with
        // our attributes, never incremented, no base.
        fx.tool(
            "tpm2_nvdefine",
            &[
                "-C",
                "o",
                "-s",
                "8",
                "-a",
                "ownerread|ownerwrite|nt=counter",
                INDEX,
            ],
        );
        let counter = fx.counter();
        assert_eq!(counter.read().unwrap(), 0);
        assert_eq!(fx.raw_counter(), counter.base());
        assert_eq!(fx.nv_indices().len(), 2);
    }

    #[test]
    fn indices_outside_the_owner_range_are_refused() {
        let fx = Fixture::new();
        for index in [0x0100_0000, 0x01C0_0002, 0x01BF_FFFF, 0x8100_0100] {
            let err = TpmCounter::open_or_define_at(&fx.tpm.tcti(), index).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { .. }),
                "{index:#x}: {err:?}"
            );
        }
        assert!(fx.nv_indices().is_empty());
    }

    #[test]
    fn a_restored_old_floor_file_does_not_lower_the_floor() {
        let fx = Fixture::new();
        let path = fx.dir.path().join("floor.json");
        let floor = CounterBackedFloor::new(FileSecurityFloor::new(&path), Floor(fx.counter()));
        floor.raise(2).unwrap();
        let old = std::fs::read(&path).unwrap();
        floor.raise(6).unwrap();
        assert_eq!(floor.get().unwrap(), 6);
        std::fs::write(&path, &old).unwrap();
        assert_eq!(FileSecurityFloor::new(&path).get().unwrap(), 2);
        assert_eq!(floor.get().unwrap(), 6, "the TPM counter keeps the floor");
        drop(floor);
        // After a restart too, and with the file gone altogether.
        std::fs::remove_file(&path).unwrap();
        let floor = CounterBackedFloor::new(FileSecurityFloor::new(&path), Floor(fx.counter()));
        assert_eq!(floor.get().unwrap(), 6);
        assert_eq!(fx.raw_counter(), floor.counter().0.base() + 6);
        // A release below the floor would be refused by the manifest check;
        // raising to it again changes nothing in the TPM.
        floor.raise(6).unwrap();
        assert_eq!(fx.raw_counter(), floor.counter().0.base() + 6);
    }

    #[test]
    fn a_stopped_tpm_is_an_error_not_a_zero_floor() {
        let mut fx = Fixture::new();
        let path = fx.dir.path().join("floor.json");
        let floor = CounterBackedFloor::new(FileSecurityFloor::new(&path), Floor(fx.counter()));
        floor.raise(1).unwrap();
        fx.tpm.stop();
        let err = floor.get().unwrap_err();
        assert!(
            matches!(err, update::Error::Keys(Error::Unavailable { .. })),
            "{err:?}"
        );
    }
}

// The PCR that receives the start-up integrity measurement.
mod pcr {
    use keys_tpm::pcr;

    use super::*;

    impl Fixture {
        /// PCR `index` of the SHA-256 bank, read by tpm2-tools.
        fn pcrread(&self, index: u8) -> [u8; 32] {
            let out = self.tool("tpm2_pcrread", &[&format!("sha256:{index}")]);
            let value = out
                .lines()
                .find_map(|line| {
                    // "8 : 0x…" or "13: 0x…" (the index is padded).
                    let (pcr, value) = line.split_once(':')?;
                    (pcr.trim() == index.to_string())
                        .then(|| value.trim().strip_prefix("0x"))
                        .flatten()
                })
                .unwrap_or_else(|| panic!("no PCR {index} in tpm2_pcrread output:\n{out}"));
            hex::decode(value.trim())
                .expect("hex PCR value")
                .try_into()
                .expect("32 bytes")
        }
    }

    #[test]
    fn extend_sets_the_pcr_to_the_hash_of_old_and_digest() {
        let fx = Fixture::new();
        let tcti = fx.tpm.tcti();
        let index = pcr::DEFAULT_PCR;
        let before = pcr::read(&tcti, index).unwrap();
        assert_eq!(before, [0; 32], "a fresh TPM's PCR {index} is reset");
        assert_eq!(fx.pcrread(index), before);
        let mut expected = before;
        for digest in [[0x11u8; 32], Sha256::digest(b"second").into()] {
            pcr::extend(&tcti, index, &digest).unwrap();
            expected = Sha256::new()
                .chain_update(expected)
                .chain_update(digest)
                .finalize()
                .into();
            assert_eq!(pcr::read(&tcti, index).unwrap(), expected);
            assert_eq!(fx.pcrread(index), expected, "tpm2_pcrread agrees");
        }
        // The other allowed PCRs were not touched.
        for other in pcr::ALLOWED.filter(|&p| p != index) {
            assert_eq!(fx.pcrread(other), [0; 32], "PCR {other}");
        }
    }

    #[test]
    fn pcrs_outside_the_allowed_range_are_refused() {
        let fx = Fixture::new();
        let tcti = fx.tpm.tcti();
        for index in [0, 7, 16, 17, 23, 24, 255] {
            let err = pcr::extend(&tcti, index, &[1; 32]).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::InvalidInput {
                        what: "PCR index",
                        ..
                    }
                ),
                "PCR {index}: {err:?}"
            );
            assert!(matches!(
                pcr::read(&tcti, index),
                Err(Error::InvalidInput { .. })
            ));
        }
        // Nothing reached the TPM: PCR 16 and 0 are still as reset (16 is
        // zeros, 0 holds whatever swtpm's missing firmware left: zeros).
        assert_eq!(fx.pcrread(16), [0; 32]);
        assert_eq!(fx.pcrread(0), [0; 32]);
        assert!(matches!(
            pcr::extend("nonsense:", 13, &[1; 32]),
            Err(Error::InvalidInput {
                what: "TPM TCTI",
                ..
            })
        ));
    }
}
