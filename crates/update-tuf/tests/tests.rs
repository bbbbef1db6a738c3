//! update-tuf integration tests: a publisher signing with keys in a
//! software keystore, a device client fetching over HTTP from a server on
//! 127.0.0.1, and one test per attack from issue #5.
//!
//! - `support`: keystore fixture and the loopback HTTP server (static
//!   files, overrides, trickle and endless responses).
//! - `happy`: two releases, root rotation, streaming a target.
//! - `attacks`: each attack refused with its own error.
//! - `clock`: the clock set back a year.
//! - `resume`: a download cut mid-way resumes with `Range`; a bounded
//!   range is fetched exactly.
//! - `https`: the same repository through a TLS front on 127.0.0.1; a
//!   server certificate from another CA is refused.

// Test fixtures outside #[test] functions panic on setup failure by design.
#![allow(clippy::unwrap_used)]

mod support {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use keys::{Algorithm, KeyAdmin, KeyRef};
    use keys_soft::{KekProtection, SoftKeyStore};
    use update_tuf::{Limits, RoleSpec, RootSpec};

    pub(crate) const DAY: Duration = Duration::from_secs(86_400);

    /// A software keystore in a temporary directory.
    pub(crate) struct Keys {
        pub(crate) tmp: tempfile::TempDir,
        store: Arc<SoftKeyStore>,
    }

    impl Keys {
        pub(crate) fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let store = Arc::new(
                SoftKeyStore::open(&tmp.path().join("keys"), KekProtection::File).unwrap(),
            );
            Self { tmp, store }
        }

        pub(crate) fn key(&self, label: &str, algorithm: Algorithm) -> KeyRef {
            let label = label.parse().unwrap();
            self.store.generate(&label, algorithm).unwrap();
            KeyRef::new(self.store.clone(), label).unwrap()
        }

        /// One fresh key per role (the timestamp key is Ed25519, the
        /// others ECDSA P-256), threshold 1.
        pub(crate) fn spec(&self, prefix: &str) -> RootSpec {
            let ec = Algorithm::EcdsaP256Sha256;
            RootSpec {
                root: RoleSpec::single(self.key(&format!("{prefix}-root"), ec), 365 * DAY),
                targets: RoleSpec::single(self.key(&format!("{prefix}-targets"), ec), 30 * DAY),
                snapshot: RoleSpec::single(self.key(&format!("{prefix}-snapshot"), ec), 7 * DAY),
                timestamp: RoleSpec::single(
                    self.key(&format!("{prefix}-timestamp"), Algorithm::Ed25519),
                    DAY,
                ),
            }
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.tmp.path().join(name)
        }

        pub(crate) fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
            let p = self.path(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    pub(crate) fn limits() -> Limits {
        Limits {
            min_bytes_per_sec: 64,
            rate_window: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
            ..Limits::default()
        }
    }

    /// What the server answers for one path.
    #[derive(Clone)]
    pub(crate) enum Reply {
        Bytes(Vec<u8>),
        /// The body one byte at a time, `interval` apart.
        Trickle(Vec<u8>, Duration),
        /// 64 KiB chunks without end (bounded at 256 MiB), no length.
        Endless,
        /// Announces the whole body, sends its first `n` bytes, then
        /// drops the connection (a link that fails mid-download).
        Cut(Vec<u8>, usize),
        /// A server that ignores a range's end: `bytes=N-M` answered with
        /// 206 and everything from `N` on, `Content-Range` saying so.
        RestOfBody(Vec<u8>),
    }

    #[derive(Default)]
    struct Routes {
        root: PathBuf,
        overrides: HashMap<String, Reply>,
        /// Answer `Range: bytes=N-` and `bytes=N-M` with 206 (else ignore
        /// it: 200).
        ranges: bool,
        /// Body bytes written so far.
        served: u64,
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1 serving `root` (a published
    /// repository: `/metadata/...`, `/targets/...`) with per-path overrides.
    pub(crate) struct Server {
        addr: SocketAddr,
        routes: Arc<Mutex<Routes>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Server {
        pub(crate) fn start(root: &Path) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let routes = Arc::new(Mutex::new(Routes {
                root: root.to_owned(),
                overrides: HashMap::new(),
                ranges: true,
                served: 0,
            }));
            let stop = Arc::new(AtomicBool::new(false));
            let (r, s) = (routes.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let r = r.clone();
                    std::thread::spawn(move || serve(conn, &r));
                }
            });
            Self {
                addr,
                routes,
                stop,
                thread: Some(thread),
            }
        }

        pub(crate) fn addr(&self) -> SocketAddr {
            self.addr
        }

        pub(crate) fn metadata_url(&self) -> String {
            format!("http://{}/metadata/", self.addr)
        }

        pub(crate) fn targets_url(&self) -> String {
            format!("http://{}/targets/", self.addr)
        }

        pub(crate) fn set(&self, path: &str, reply: Reply) {
            self.routes
                .lock()
                .unwrap()
                .overrides
                .insert(path.to_owned(), reply);
        }

        /// Body bytes served since the last call.
        pub(crate) fn take_served(&self) -> u64 {
            std::mem::take(&mut self.routes.lock().unwrap().served)
        }

        pub(crate) fn honour_ranges(&self, on: bool) {
            self.routes.lock().unwrap().ranges = on;
        }

        pub(crate) fn clear(&self) {
            self.routes.lock().unwrap().overrides.clear();
        }

        pub(crate) fn serve_dir(&self, root: &Path) {
            self.routes.lock().unwrap().root = root.to_owned();
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn serve(conn: TcpStream, routes: &Mutex<Routes>) {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        // `bytes=<from>-[<last>]`.
        let mut range: Option<(usize, Option<usize>)> = None;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("range: bytes=") {
                        range = v.trim().split_once('-').and_then(|(from, last)| {
                            let last = match last {
                                "" => None,
                                l => Some(l.parse().ok()?),
                            };
                            Some((from.parse().ok()?, last))
                        });
                    }
                }
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let count = |n: usize| routes.lock().unwrap().served += n as u64;
        let ranges = routes.lock().unwrap().ranges;
        let reply = {
            let routes = routes.lock().unwrap();
            match routes.overrides.get(&path) {
                Some(r) => Some(r.clone()),
                None => std::fs::read(routes.root.join(path.trim_start_matches('/')))
                    .ok()
                    .map(Reply::Bytes),
            }
        };
        let mut conn = conn;
        match reply {
            None => {
                let _ = conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
            Some(Reply::Bytes(body)) => match range {
                Some((from, last)) if ranges && from < body.len() => {
                    let end = last.map_or(body.len(), |l| (l + 1).min(body.len()));
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        end - from,
                        end - 1,
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    if conn.write_all(&body[from..end]).is_ok() {
                        count(end - from);
                    }
                }
                _ => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    if conn.write_all(&body).is_ok() {
                        count(body.len());
                    }
                }
            },
            Some(Reply::RestOfBody(body)) => {
                let from = range.map_or(0, |(from, _)| from).min(body.len());
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - from,
                    body.len().saturating_sub(1),
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body[from..]);
            }
            Some(Reply::Cut(body, n)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                if conn.write_all(&body[..n]).is_ok() {
                    count(n);
                }
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
            Some(Reply::Trickle(body, interval)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                for b in body {
                    if conn.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(interval);
                }
            }
            Some(Reply::Endless) => {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let chunk = vec![b'A'; 64 * 1024];
                for _ in 0..4096 {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

mod happy {
    use std::io::Read;

    use update_tuf::{Client, Repository, RoleSpec, RootSpec};

    use crate::support::{DAY, Keys, Server, limits};

    // Publish two releases; the device sees the newest, and the bytes it
    // gets are the ones published.
    #[test]
    fn device_follows_two_releases_and_gets_verified_bytes() {
        let k = Keys::new();
        let mut repo = Repository::init(&k.path("work"), k.spec("a")).unwrap();
        let trusted_root = repo.root_json().to_vec();
        let out = k.path("out");
        repo.add_target("manifest.json", &k.file("m1", b"{\"version\":1}"))
            .unwrap();
        repo.sign_and_publish(&out).unwrap();
        let server = Server::start(&out);
        let store = k.path("device");

        let c1 = Client::new(
            &trusted_root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
        )
        .unwrap();
        assert_eq!(c1.targets_version(), 1);
        assert_eq!(
            c1.fetch_target("manifest.json").unwrap(),
            b"{\"version\":1}"
        );
        drop(c1);

        let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        repo.add_target("manifest.json", &k.file("m2", b"{\"version\":2}"))
            .unwrap();
        repo.add_target("image.bin", &k.file("img", &image))
            .unwrap();
        let release = repo.sign_and_publish(&out).unwrap();
        assert_eq!(release.version, 2);

        let c2 = Client::new(
            &trusted_root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
        )
        .unwrap();
        assert_eq!(c2.targets_version(), 2);
        assert_eq!(c2.timestamp_version(), 2);
        let names: Vec<String> = c2.targets().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["image.bin", "manifest.json"]);
        assert_eq!(
            c2.fetch_target("manifest.json").unwrap(),
            b"{\"version\":2}"
        );

        let mut streamed = Vec::new();
        c2.open_target("image.bin")
            .unwrap()
            .read_to_end(&mut streamed)
            .unwrap();
        assert_eq!(streamed, image);
        assert!(matches!(
            c2.fetch_target("missing.bin"),
            Err(update_tuf::Error::TargetNotFound { .. })
        ));
    }

    // A repository whose keys live behind KeyRef: a 2-of-2 targets role
    // and a rotated root with a new root key are accepted by a device
    // provisioned with root version 1, which then keeps version 2.
    #[test]
    fn rotated_root_is_followed_and_kept() {
        let k = Keys::new();
        let spec = k.spec("a");
        let mut repo = Repository::init(&k.path("work"), spec.clone()).unwrap();
        let trusted_root = repo.root_json().to_vec();
        let out = k.path("out");
        repo.add_target("manifest.json", &k.file("m1", b"one"))
            .unwrap();
        repo.sign_and_publish(&out).unwrap();

        let ec = keys::Algorithm::EcdsaP256Sha256;
        let rotated = RootSpec {
            root: RoleSpec {
                keys: vec![
                    k.key("b-root-1", ec),
                    k.key("b-root-2", keys::Algorithm::Ed25519),
                ],
                threshold: 2,
                expires_in: 365 * DAY,
            },
            targets: RoleSpec {
                keys: vec![spec.targets.keys[0].clone(), k.key("b-targets-2", ec)],
                threshold: 2,
                expires_in: 30 * DAY,
            },
            ..spec
        };
        assert_eq!(repo.rotate_root(rotated).unwrap(), 2);
        repo.sign_and_publish(&out).unwrap();

        let server = Server::start(&out);
        let store = k.path("device");
        let client = Client::new(
            &trusted_root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
        )
        .unwrap();
        assert_eq!(client.root_version(), 2);
        assert_eq!(client.targets_version(), 2);
        assert_eq!(client.fetch_target("manifest.json").unwrap(), b"one");
        drop(client);

        // Root 2 is remembered: with 2.root.json gone from the mirror the
        // device still starts from version 2, not the provisioned 1.
        std::fs::remove_file(out.join("metadata/2.root.json")).unwrap();
        let again = Client::new(
            &trusted_root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
        )
        .unwrap();
        assert_eq!(again.root_version(), 2);
    }

    // The publisher works across processes: reopen the working directory
    // with the same keys and publish the next release; the wrong keys or
    // a second init are refused.
    #[test]
    fn reopened_repository_continues_the_release_sequence() {
        let k = Keys::new();
        let spec = k.spec("a");
        let work = k.path("work");
        let out = k.path("out");
        let mut repo = Repository::init(&work, spec.clone()).unwrap();
        let trusted_root = repo.root_json().to_vec();
        repo.add_target("manifest.json", &k.file("m1", b"one"))
            .unwrap();
        repo.sign_and_publish(&out).unwrap();
        drop(repo);

        assert!(matches!(
            Repository::init(&work, spec.clone()),
            Err(update_tuf::Error::InvalidSpec { .. })
        ));
        assert!(matches!(
            Repository::open(&work, k.spec("b")),
            Err(update_tuf::Error::InvalidSpec { .. })
        ));
        let mut repo = Repository::open(&work, spec).unwrap();
        assert_eq!(repo.version(), 1);
        repo.add_target("image.bin", &k.file("img", b"image"))
            .unwrap();
        assert_eq!(repo.sign_and_publish(&out).unwrap().version, 2);

        let server = Server::start(&out);
        let client = Client::new(
            &trusted_root,
            &server.metadata_url(),
            &server.targets_url(),
            &k.path("device"),
            limits(),
        )
        .unwrap();
        assert_eq!(client.targets_version(), 2);
        assert_eq!(client.fetch_target("manifest.json").unwrap(), b"one");
        assert_eq!(client.fetch_target("image.bin").unwrap(), b"image");
    }

    // A threshold above the number of keys is refused when the root is
    // built, not discovered by devices later.
    #[test]
    fn unreachable_threshold_is_refused_at_init() {
        let k = Keys::new();
        let mut spec = k.spec("a");
        spec.targets.threshold = 2;
        assert!(matches!(
            Repository::init(&k.path("work"), spec),
            Err(update_tuf::Error::InvalidSpec { .. })
        ));
    }
}

mod attacks {
    use std::num::NonZeroU64;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use tough::editor::signed::SignedRole;
    use tough::key_source::KeySource;
    use tough::schema::{KeyHolder, Root, Signed, Timestamp};
    use update_tuf::{Client, Clock, Error, KeyRefSigner, Repository, RoleSpec, RootSpec};

    use crate::support::{DAY, Keys, Reply, Server, limits};

    fn client(server: &Server, root: &[u8], store: &Path) -> Result<Client, Error> {
        Client::new(
            root,
            &server.metadata_url(),
            &server.targets_url(),
            store,
            limits(),
        )
    }

    /// A repository with one release holding `manifest.json`.
    fn published(k: &Keys, spec: RootSpec) -> (Repository, Vec<u8>) {
        let mut repo = Repository::init(&k.path("work"), spec).unwrap();
        repo.add_target("manifest.json", &k.file("m1", b"release one"))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        let root = repo.root_json().to_vec();
        (repo, root)
    }

    // Targets metadata signed by a key the trusted root does not name
    // (timestamp and snapshot keys are the genuine ones).
    #[test]
    fn targets_signed_by_untrusted_key() {
        let k = Keys::new();
        let spec = k.spec("a");
        let (_repo, root) = published(&k, spec.clone());

        let evil_spec = RootSpec {
            targets: RoleSpec::single(
                k.key("evil-targets", keys::Algorithm::EcdsaP256Sha256),
                30 * DAY,
            ),
            ..spec
        };
        let evil_dir = k.path("evil");
        let mut evil = Repository::init(&evil_dir.join("work"), evil_spec).unwrap();
        evil.add_target("manifest.json", &k.file("evil-m", b"malware"))
            .unwrap();
        evil.sign_and_publish(&evil_dir.join("out")).unwrap();

        let server = Server::start(&evil_dir.join("out"));
        let err = client(&server, &root, &k.path("device")).unwrap_err();
        assert!(
            matches!(&err, Error::Untrusted { role, .. } if role == "targets"),
            "{err}"
        );
    }

    // Threshold 2 for targets; an attacker holding one targets key (and
    // the online snapshot and timestamp keys) cannot pass one signature.
    #[test]
    fn one_compromised_key_below_threshold() {
        let k = Keys::new();
        let ec = keys::Algorithm::EcdsaP256Sha256;
        let mut spec = k.spec("a");
        let stolen = k.key("a-targets-2", ec);
        spec.targets = RoleSpec {
            keys: vec![spec.targets.keys[0].clone(), stolen.clone()],
            threshold: 2,
            expires_in: 30 * DAY,
        };
        let (_repo, root) = published(&k, spec.clone());
        let server = Server::start(&k.path("out"));
        // The genuine release, signed by both, is accepted.
        client(&server, &root, &k.path("device-ok")).unwrap();

        let evil_spec = RootSpec {
            targets: RoleSpec::single(stolen, 30 * DAY),
            ..spec
        };
        let evil_dir = k.path("evil");
        let mut evil = Repository::init(&evil_dir.join("work"), evil_spec).unwrap();
        evil.add_target("manifest.json", &k.file("evil-m", b"malware"))
            .unwrap();
        evil.sign_and_publish(&evil_dir.join("out")).unwrap();
        server.serve_dir(&evil_dir.join("out"));

        let err = client(&server, &root, &k.path("device")).unwrap_err();
        assert!(
            matches!(&err, Error::Untrusted { role, detail } if role == "targets" && detail.contains("threshold")),
            "{err}"
        );
    }

    // A mirror serving a complete, validly signed repository under another
    // root.
    #[test]
    fn mirror_with_other_root() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let other = k.path("other");
        let mut b = Repository::init(&other.join("work"), k.spec("b")).unwrap();
        b.add_target("manifest.json", &k.file("b-m", b"other"))
            .unwrap();
        b.sign_and_publish(&other.join("out")).unwrap();
        // Give the mirror a 2.root.json too, signed only by its own root.
        b.rotate_root(k.spec("c")).unwrap();
        b.sign_and_publish(&other.join("out")).unwrap();

        let server = Server::start(&other.join("out"));
        let err = client(&server, &root, &k.path("device")).unwrap_err();
        assert!(
            matches!(&err, Error::Untrusted { role, .. } if role == "root"),
            "{err}"
        );
    }

    #[derive(Debug)]
    struct Shifted(Duration, bool);
    impl Clock for Shifted {
        fn now(&self) -> SystemTime {
            if self.1 {
                SystemTime::now() + self.0
            } else {
                SystemTime::now() - self.0
            }
        }
    }

    // A validly signed timestamp whose expiry has passed (signed two days
    // ago with a one-day lifetime) is refused: a freeze attack.
    #[test]
    fn freeze_with_expired_timestamp() {
        let k = Keys::new();
        let mut repo = Repository::init_with_clock(
            &k.path("work"),
            k.spec("a"),
            Arc::new(Shifted(2 * DAY, false)),
        )
        .unwrap();
        repo.add_target("manifest.json", &k.file("m", b"old"))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        let server = Server::start(&k.path("out"));
        let err = client(&server, repo.root_json(), &k.path("device")).unwrap_err();
        assert!(
            matches!(&err, Error::Expired { role } if role == "timestamp"),
            "{err}"
        );
    }

    // The same freeze seen by a device whose clock has moved on: our own
    // expiry check uses the injected clock.
    #[test]
    fn freeze_seen_by_device_clock() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let server = Server::start(&k.path("out"));
        let err = Client::new_with_clock(
            &root,
            &server.metadata_url(),
            &server.targets_url(),
            &k.path("device"),
            limits(),
            Arc::new(Shifted(2 * DAY, true)),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Expired { role } if role == "timestamp"),
            "{err}"
        );
    }

    // Snapshot of release 2 served with targets metadata of release 1
    // under release 2's name.
    #[test]
    fn mix_and_match_snapshot_and_targets() {
        let k = Keys::new();
        // An Ed25519 targets key gives both releases' targets metadata the
        // same length (DER ECDSA signatures vary by a byte or two), so the
        // swap is caught by the snapshot's hash, not by its length.
        let mut spec = k.spec("a");
        spec.targets = RoleSpec::single(k.key("a-targets-ed", keys::Algorithm::Ed25519), 30 * DAY);
        let (mut repo, root) = published(&k, spec);
        repo.add_target("manifest.json", &k.file("m2", b"release two"))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        let server = Server::start(&k.path("out"));
        let old_targets = std::fs::read(k.path("out/metadata/1.targets.json")).unwrap();
        server.set("/metadata/2.targets.json", Reply::Bytes(old_targets));
        let err = client(&server, &root, &k.path("device")).unwrap_err();
        assert!(
            matches!(&err, Error::Inconsistent { role, .. } if role.ends_with("2.targets.json")),
            "{err}"
        );
    }

    /// Re-signs `timestamp.json` at `version` with the timestamp key: what
    /// an attacker holding that key can do.
    fn forge_timestamp(out: &Path, root: &[u8], key: keys::KeyRef, version: u64) -> Vec<u8> {
        let root: Signed<Root> = serde_json::from_slice(root).unwrap();
        let mut ts: Signed<Timestamp> =
            serde_json::from_slice(&std::fs::read(out.join("metadata/timestamp.json")).unwrap())
                .unwrap();
        ts.signed.version = NonZeroU64::new(version).unwrap();
        let sources: Vec<Box<dyn KeySource>> = vec![Box::new(KeyRefSigner::new(key).unwrap())];
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let signed = rt
            .block_on(async {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                SignedRole::new(ts.signed, &KeyHolder::Root(root.signed), &sources, &rng).await
            })
            .unwrap();
        signed.buffer().clone()
    }

    // Fast-forward: a stolen timestamp key pushes the device to a huge
    // version, after which genuine releases look like rollbacks; rotating
    // the timestamp key through a new root recovers.
    #[test]
    fn fast_forward_and_recovery_by_root_rotation() {
        let k = Keys::new();
        let spec = k.spec("a");
        let (mut repo, root) = published(&k, spec.clone());
        let out = k.path("out");
        let server = Server::start(&out);
        let store = k.path("device");

        let forged = forge_timestamp(&out, &root, spec.timestamp.keys[0].clone(), 1 << 40);
        server.set("/metadata/timestamp.json", Reply::Bytes(forged));
        let c = client(&server, &root, &store).unwrap();
        assert_eq!(c.timestamp_version(), 1 << 40, "the attack itself lands");
        drop(c);
        server.clear();

        repo.add_target("manifest.json", &k.file("m2", b"release two"))
            .unwrap();
        repo.sign_and_publish(&out).unwrap();
        let err = client(&server, &root, &store).unwrap_err();
        assert!(
            matches!(&err, Error::Rollback { role, .. } if role == "timestamp"),
            "{err}"
        );

        let rotated = RootSpec {
            timestamp: RoleSpec::single(
                k.key("a-timestamp-2", keys::Algorithm::EcdsaP256Sha256),
                DAY,
            ),
            ..spec
        };
        repo.rotate_root(rotated).unwrap();
        repo.sign_and_publish(&out).unwrap();
        let c = client(&server, &root, &store).unwrap();
        assert_eq!(c.root_version(), 2);
        assert_eq!(c.timestamp_version(), 3);
        assert_eq!(c.fetch_target("manifest.json").unwrap(), b"release two");
    }

    // A target server sending more than the signed length, and a metadata
    // server sending an endless timestamp.json.
    #[test]
    fn endless_data_is_cut_at_the_declared_length() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let server = Server::start(&k.path("out"));
        let c = client(&server, &root, &k.path("device")).unwrap();
        let info = c.target("manifest.json").unwrap();
        let path = format!("/targets/{}.manifest.json", hex::encode(info.sha256));
        server.set(&path, Reply::Endless);
        let started = Instant::now();
        let err = c.fetch_target("manifest.json").unwrap_err();
        assert!(
            matches!(&err, Error::EndlessData { limit, .. } if *limit == info.length),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        server.set("/metadata/timestamp.json", Reply::Endless);
        let err = client(&server, &root, &k.path("device2")).unwrap_err();
        assert!(
            matches!(&err, Error::EndlessData { limit, .. } if *limit == limits().max_timestamp_size),
            "{err}"
        );
    }

    // One byte flipped in a served target: same length, wrong hash.
    #[test]
    fn flipped_byte_in_target_is_refused() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let server = Server::start(&k.path("out"));
        let c = client(&server, &root, &k.path("device")).unwrap();
        let info = c.target("manifest.json").unwrap();
        let mut body = b"release one".to_vec();
        body[3] ^= 1;
        let path = format!("/targets/{}.manifest.json", hex::encode(info.sha256));
        server.set(&path, Reply::Bytes(body));
        let err = c.fetch_target("manifest.json").unwrap_err();
        assert!(matches!(&err, Error::TargetHashMismatch { .. }), "{err}");
        // A short body is refused too, never taken for a complete one.
        server.set(&path, Reply::Bytes(b"release".to_vec()));
        let err = c.fetch_target("manifest.json").unwrap_err();
        assert!(
            matches!(
                &err,
                Error::TargetHashMismatch { .. } | Error::TargetTruncated { .. }
            ),
            "{err}"
        );
    }

    // One byte per second is below the minimum rate: cut after one window,
    // not after the whole body.
    #[test]
    fn slow_retrieval_is_cut_by_minimum_rate() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let server = Server::start(&k.path("out"));
        let body = std::fs::read(k.path("out/metadata/timestamp.json")).unwrap();
        server.set(
            "/metadata/timestamp.json",
            Reply::Trickle(body, Duration::from_secs(1)),
        );
        let started = Instant::now();
        let err = client(&server, &root, &k.path("device")).unwrap_err();
        assert!(matches!(&err, Error::SlowRetrieval { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    // A trickle fast enough for the minimum rate still ends at the
    // deadline.
    #[test]
    fn slow_retrieval_is_cut_by_deadline() {
        let k = Keys::new();
        let (_repo, root) = published(&k, k.spec("a"));
        let server = Server::start(&k.path("out"));
        let c = client(&server, &root, &k.path("device")).unwrap();
        drop(c);
        let body = std::fs::read(k.path("out/metadata/timestamp.json")).unwrap();
        server.set(
            "/metadata/timestamp.json",
            Reply::Trickle(body, Duration::from_millis(10)),
        );
        let mut l = limits();
        l.min_bytes_per_sec = 10;
        l.deadline = Duration::from_secs(2);
        let started = Instant::now();
        let err = Client::new(
            &root,
            &server.metadata_url(),
            &server.targets_url(),
            &k.path("device"),
            l,
        )
        .unwrap_err();
        assert!(matches!(&err, Error::DeadlineExceeded { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}

mod clock {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use update_tuf::{Client, Clock, Error, Repository};

    use crate::support::{Keys, Server, limits};

    #[derive(Debug)]
    struct YearAgo;
    impl Clock for YearAgo {
        fn now(&self) -> SystemTime {
            SystemTime::now() - Duration::from_secs(365 * 86_400)
        }
    }

    fn setup(k: &Keys) -> (Server, Vec<u8>) {
        let mut repo = Repository::init(&k.path("work"), k.spec("a")).unwrap();
        repo.add_target("manifest.json", &k.file("m", b"x"))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        (Server::start(&k.path("out")), repo.root_json().to_vec())
    }

    // A device that has seen current metadata and then finds its clock a
    // year behind refuses before any expiry check trusts that clock.
    #[test]
    fn clock_set_back_a_year_after_a_refresh() {
        let k = Keys::new();
        let (server, root) = setup(&k);
        let store = k.path("device");
        Client::new(
            &root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
        )
        .unwrap();
        // The mirror is gone: only the remembered signing time can refuse.
        server.serve_dir(&k.path("nothing"));
        let err = Client::new_with_clock(
            &root,
            &server.metadata_url(),
            &server.targets_url(),
            &store,
            limits(),
            Arc::new(YearAgo),
        )
        .unwrap_err();
        assert!(matches!(&err, Error::ClockSteppedBack { .. }), "{err}");
    }

    // A fresh device with its clock a year behind sees the signing time in
    // the timestamp metadata and refuses too.
    #[test]
    fn clock_a_year_behind_the_signed_timestamp() {
        let k = Keys::new();
        let (server, root) = setup(&k);
        let err = Client::new_with_clock(
            &root,
            &server.metadata_url(),
            &server.targets_url(),
            &k.path("device"),
            limits(),
            Arc::new(YearAgo),
        )
        .unwrap_err();
        assert!(matches!(&err, Error::ClockSteppedBack { .. }), "{err}");
    }
}

mod https {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use update_tuf::{Client, Error, Repository, SystemClock, TlsRoots};

    use crate::support::{Keys, Server, limits};

    /// A CA and a server certificate for 127.0.0.1 issued by it.
    struct Pki {
        ca_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    fn pki(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        }
    }

    /// Terminates TLS on a loopback port and forwards each connection to
    /// the plain test server: the device sees a real HTTPS mirror.
    fn tls_front(pki: &Pki, backend: SocketAddr) -> SocketAddr {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        addr
    }

    fn published(k: &Keys) -> (Server, Vec<u8>) {
        let mut repo = Repository::init(&k.path("work"), k.spec("h")).unwrap();
        repo.add_target("manifest.json", &k.file("m", b"{\"version\":1}"))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        (Server::start(&k.path("out")), repo.root_json().to_vec())
    }

    fn client(
        front: SocketAddr,
        root: &[u8],
        store: &std::path::Path,
        ca_pem: &str,
    ) -> Result<Client, Error> {
        Client::new_with_tls(
            root,
            &format!("https://{front}/metadata/"),
            &format!("https://{front}/targets/"),
            store,
            limits(),
            Arc::new(SystemClock),
            &TlsRoots::CaPem(ca_pem.as_bytes().to_vec()),
        )
    }

    // The device verifies the repository and fetches a target through
    // TLS, trusting only the configured CA.
    #[test]
    fn device_fetches_through_https() {
        let k = Keys::new();
        let (server, root) = published(&k);
        let pki = pki("mirror");
        let front = tls_front(&pki, server.addr());
        let client = client(front, &root, &k.path("device"), &pki.ca_pem).unwrap();
        assert_eq!(
            client.fetch_target("manifest.json").unwrap(),
            b"{\"version\":1}"
        );
    }

    // A mirror whose certificate chains to another CA is refused at the
    // TLS handshake, before any metadata is read.
    #[test]
    fn server_certificate_from_another_ca_is_refused() {
        let k = Keys::new();
        let (server, root) = published(&k);
        let front = tls_front(&pki("impostor"), server.addr());
        let trusted = pki("mirror");
        let err = client(front, &root, &k.path("device"), &trusted.ca_pem).unwrap_err();
        match &err {
            Error::Tls { url, detail } => {
                assert!(url.starts_with("https://"), "{url}");
                assert!(detail.contains("UnknownIssuer"), "{detail}");
            }
            other => panic!("expected a TLS refusal, got {other:?}"),
        }
        assert!(err.to_string().contains("TLS to https://"), "{err}");
    }

    // A CA file without any certificate is refused before connecting.
    #[test]
    fn empty_ca_file_is_refused() {
        let k = Keys::new();
        let (_server, root) = published(&k);
        let err = client("127.0.0.1:9".parse().unwrap(), &root, &k.path("device"), "").unwrap_err();
        assert!(matches!(err, Error::TlsConfig(_)), "{err:?}");
    }
}

mod resume {
    use std::io::Read;

    use update_tuf::{Client, Error, Repository};

    use crate::support::{Keys, Reply, Server, limits};

    const LEN: usize = 200_000;

    fn image() -> Vec<u8> {
        (0..LEN).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn setup(k: &Keys) -> (Server, Client, String) {
        let mut repo = Repository::init(&k.path("work"), k.spec("r")).unwrap();
        repo.add_target("rel.image", &k.file("img", &image()))
            .unwrap();
        repo.sign_and_publish(&k.path("out")).unwrap();
        let server = Server::start(&k.path("out"));
        let client = Client::new(
            repo.root_json(),
            &server.metadata_url(),
            &server.targets_url(),
            &k.path("device"),
            limits(),
        )
        .unwrap();
        let sha = hex::encode(client.target("rel.image").unwrap().sha256);
        (server, client, format!("/targets/{sha}.rel.image"))
    }

    /// The first attempt: the link drops after 70 000 bytes; returns what
    /// arrived before the failure.
    fn cut_download(server: &Server, client: &Client, path: &str) -> Vec<u8> {
        server.set(path, Reply::Cut(image(), 70_000));
        let mut got = Vec::new();
        let mut reader = client.open_target("rel.image").unwrap();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert!(matches!(
            Error::from_io(err),
            Error::TargetTruncated { .. } | Error::Transport { .. }
        ),);
        assert!(got.len() <= 70_000 && !got.is_empty(), "{}", got.len());
        server.clear();
        server.take_served();
        got
    }

    // The second attempt asks for the rest only: the server serves
    // exactly the missing bytes, and prefix + rest is the signed image.
    #[test]
    fn cut_download_resumes_with_range() {
        let k = Keys::new();
        let (server, client, path) = setup(&k);
        let mut got = cut_download(&server, &client, &path);
        let offset = got.len() as u64;
        let mut reader = client.open_target_from("rel.image", offset).unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(server.take_served(), LEN as u64 - offset);
        assert_eq!(got, image());
    }

    // A server that ignores Range sends everything; the reader drops the
    // prefix it already has and still yields exactly the rest.
    #[test]
    fn server_ignoring_range_is_read_past_the_prefix() {
        let k = Keys::new();
        let (server, client, path) = setup(&k);
        let mut got = cut_download(&server, &client, &path);
        server.honour_ranges(false);
        let offset = got.len() as u64;
        let mut reader = client.open_target_from("rel.image", offset).unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(server.take_served(), LEN as u64);
        assert_eq!(got, image());
    }

    // More than the signed length after the offset is refused.
    #[test]
    fn resumed_download_is_bounded_by_the_signed_length() {
        let k = Keys::new();
        let (server, client, path) = setup(&k);
        let mut longer = image();
        longer.extend_from_slice(&[0u8; 10_000]);
        server.honour_ranges(false);
        server.set(&path, Reply::Bytes(longer));
        let mut got = Vec::new();
        let mut reader = client.open_target_from("rel.image", 1000).unwrap();
        let err = reader.read_to_end(&mut got).unwrap_err();
        assert!(matches!(Error::from_io(err), Error::EndlessData { .. }));
        assert!(got.len() < LEN);
    }

    // A bounded range costs exactly its bytes on the wire: the server is
    // asked for `bytes=50000-59999` and sends those 10 000 bytes only.
    #[test]
    fn bounded_range_is_served_exactly() {
        let k = Keys::new();
        let (server, client, _) = setup(&k);
        server.take_served(); // the metadata
        let mut got = Vec::new();
        let mut reader = client
            .open_target_range("rel.image", 50_000, 60_000)
            .unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(server.take_served(), 10_000);
        assert_eq!(got, image()[50_000..60_000]);
        // The last byte of the target is a range like any other.
        let mut tail = Vec::new();
        let mut reader = client
            .open_target_range("rel.image", LEN as u64 - 1, LEN as u64)
            .unwrap();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, image()[LEN - 1..]);
    }

    // A 206 for another range than the one asked (here: the rest of the
    // target) is refused before any byte is yielded.
    #[test]
    fn bounded_range_with_another_content_range_is_refused() {
        let k = Keys::new();
        let (server, client, path) = setup(&k);
        server.set(&path, Reply::RestOfBody(image()));
        let mut got = Vec::new();
        let mut reader = client.open_target_range("rel.image", 1000, 2000).unwrap();
        let err = Error::from_io(reader.read_to_end(&mut got).unwrap_err());
        assert!(
            matches!(&err, Error::Transport { detail, .. } if detail.contains("Content-Range")),
            "{err}"
        );
        assert!(got.is_empty());
    }

    // A server that ignores Range answers 200 with the whole target: the
    // reader skips the prefix, stops at the range's end and ends cleanly.
    #[test]
    fn server_ignoring_range_is_cut_to_the_bounded_range() {
        let k = Keys::new();
        let (server, client, _) = setup(&k);
        server.honour_ranges(false);
        let mut got = Vec::new();
        let mut reader = client
            .open_target_range("rel.image", 70_000, 90_000)
            .unwrap();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, image()[70_000..90_000]);
    }

    // Empty ranges and ranges past the signed length are refused before
    // any request.
    #[test]
    fn bounded_range_outside_the_target_is_refused() {
        let k = Keys::new();
        let (server, client, _) = setup(&k);
        server.take_served(); // the metadata
        for (start, end) in [(10, 10), (20, 10), (0, LEN as u64 + 1)] {
            let err = client
                .open_target_range("rel.image", start, end)
                .unwrap_err();
            assert!(
                matches!(err, Error::Transport { .. }),
                "{start}..{end}: {err}"
            );
        }
        assert_eq!(server.take_served(), 0);
    }
}
