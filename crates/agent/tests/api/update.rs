#![allow(clippy::unwrap_used, unreachable_pub)]

//! Secure updates through the agent, with real files: slots and a
//! simulated boot loader in a temporary directory, release keys in a
//! software keystore, and a TUF repository published with
//! `update_tuf::Repository` and served over HTTP on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::RunningAgent;
use agent_config::{AgentFile, UpdateRepository, UpdateSection};
use hyper::{Method, StatusCode};
use keys::{Algorithm, KeyAdmin, KeyRef};
use keys_soft::{KekProtection, SoftKeyStore};
use serde_json::{Value, json};
use update::boot::{BootControl, FileBootControl, SlotName};
use update::manifest::{FORMAT, MIN_CHUNK_SIZE, Manifest, SignedManifest, TrustedKeys, chunk_hash};
use update::records::SlotRecords;
use update_tuf::{Repository, RoleSpec, RootSpec};

use crate::support::{self, Client, Device, OWNER_PASSWORD, VIEWER_PASSWORD, assert_error_body};

const HW: &str = "bw-test";
const CHUNK: usize = MIN_CHUNK_SIZE as usize;
/// A release the device may install: version code 2, security version 2.
const GOOD: &str = "2.0.0";
/// The factory release (in slot A at first), published again: once 2.0.0
/// is committed, installing it is a rollback.
const OLD: &str = "1.0.0";
/// A release whose image has one byte flipped in chunk [`FLIPPED_CHUNK`].
const FLIPPED: &str = "3.0.0-flipped";
const FLIPPED_CHUNK: usize = 3;
const OPERATOR_PASSWORD: &str = "seven orange kites drift at dawn";

/// An image of `chunks` full chunks and a short last one.
fn image(chunks: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..chunks * CHUNK + 1000)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

fn manifest(image: &[u8], version: &str, version_code: u64, security_version: u64) -> Manifest {
    Manifest {
        format: FORMAT,
        compatible: HW.into(),
        version: version.into(),
        version_code,
        min_version_code: 0,
        security_version,
        image_size: image.len() as u64,
        chunk_size: MIN_CHUNK_SIZE,
        chunks: image.chunks(CHUNK).map(chunk_hash).collect(),
        created_unix: 1_800_000_000,
    }
}

/// A tiny HTTP/1.1 server on loopback serving the files under a
/// directory (one request per connection, `Range: bytes=N-` and
/// `bytes=N-M` answered with 206), as update-tuf's tests do.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    images: Arc<Mutex<ImageServing>>,
}

/// What the server does with `*.image` files, and how much it sent.
#[derive(Default)]
struct ImageServing {
    /// Drop the next image transfer after this many body bytes.
    cut_after: Option<usize>,
    /// Send image bodies one chunk per this interval (a slow link).
    pace: Option<Duration>,
    /// Image body bytes sent.
    served: u64,
}

impl Server {
    fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let images = Arc::new(Mutex::new(ImageServing::default()));
        let (root, flag, shared) = (root.to_owned(), stop.clone(), images.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, shared) = (root.clone(), shared.clone());
                std::thread::spawn(move || serve(conn, &root, &shared));
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
            images,
        }
    }

    /// Image body bytes served since the last call.
    fn take_served(&self) -> u64 {
        std::mem::take(&mut self.images.lock().unwrap().served)
    }

    fn url(&self, dir: &str) -> String {
        format!("http://{}/{dir}/", self.addr)
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

fn serve(mut conn: TcpStream, root: &Path, images: &Mutex<ImageServing>) {
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
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
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
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    match std::fs::read(root.join(path.trim_start_matches('/'))) {
        Ok(body) => {
            let image = path.ends_with(".image");
            let (cut, pace) = if image {
                let mut serving = images.lock().unwrap();
                (serving.cut_after.take(), serving.pace)
            } else {
                (None, None)
            };
            let (head, part) = match range {
                Some((from, last)) if from < body.len() => {
                    let end = last.map_or(body.len(), |l| (l + 1).min(body.len()));
                    (
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                            end - from,
                            end - 1,
                            body.len()
                        ),
                        &body[from..end],
                    )
                }
                _ => (
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    &body[..],
                ),
            };
            let part = &part[..cut.unwrap_or(part.len()).min(part.len())];
            let _ = conn.write_all(head.as_bytes());
            let sent = match pace {
                None => conn.write_all(part),
                Some(interval) => part.chunks(CHUNK).try_for_each(|piece| {
                    std::thread::sleep(interval);
                    conn.write_all(piece)
                }),
            };
            if sent.is_ok() && image {
                images.lock().unwrap().served += part.len() as u64;
            }
            if cut.is_some() {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
        Err(_) => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

/// A device with A/B slot files, release 1.0.0 installed and committed in
/// slot A (with its signed record), and a TUF repository with releases
/// [`GOOD`] and [`FLIPPED`] served on loopback.
struct Rig {
    slot_a: PathBuf,
    slot_b: PathBuf,
    boot_file: PathBuf,
    key_file: PathBuf,
    root_file: PathBuf,
    base: Vec<u8>,
    good: Vec<u8>,
    flipped: Vec<u8>,
    /// Hex SHA-256 of [`OLD`]'s manifest payload.
    old_digest: String,
    server: Server,
}

impl Rig {
    /// [`Rig::new`] from a test's runtime (the TUF publisher blocks on a
    /// runtime of its own).
    fn new_blocking(device: &Device) -> Self {
        tokio::task::block_in_place(|| Self::new(device, true))
    }

    /// [`Rig::new_blocking`] without the [`FLIPPED`] release: [`GOOD`] is
    /// the newest.
    fn good_only_blocking(device: &Device) -> Self {
        tokio::task::block_in_place(|| Self::new(device, false))
    }

    fn new(device: &Device, with_flipped: bool) -> Self {
        let dir = device.path().join("update-rig");
        std::fs::create_dir_all(&dir).unwrap();
        let keys = Arc::new(SoftKeyStore::open(&dir.join("keys"), KekProtection::File).unwrap());
        let key = |label: &str| {
            let label = label.parse().unwrap();
            keys.generate(&label, Algorithm::EcdsaP256Sha256).unwrap();
            KeyRef::new(keys.clone(), label).unwrap()
        };
        let release_key = key("release");
        let key_file = dir.join("release.pem");
        std::fs::write(
            &key_file,
            identity::x509::to_pem(release_key.public_key().spki_der())
                .replace("CERTIFICATE", "PUBLIC KEY"),
        )
        .unwrap();
        let sign = |m: &Manifest| SignedManifest::sign(m, &[&release_key]).unwrap();

        // Factory state: release 1.0.0 in slot A, committed, recorded.
        let base = image(6, 1);
        let slot_a = dir.join("slot-a.img");
        let slot_b = dir.join("slot-b.img");
        std::fs::write(&slot_a, &base).unwrap();
        let trusted = TrustedKeys::new(&[release_key.public_key().clone()]).unwrap();
        let installed = SignedManifest::verify_installed(
            &sign(&manifest(&base, "1.0.0", 1, 1)),
            &trusted,
            1,
            HW,
        )
        .unwrap();
        SlotRecords::new(&device.state_dir.join(agent::UPDATE_DIR))
            .unwrap()
            .store(SlotName::A, &installed)
            .unwrap();
        let boot_file = dir.join("boot.json");
        FileBootControl::create(&boot_file, SlotName::A).unwrap();

        // The repository: a good release, the factory one again, and one
        // with a flipped byte.
        let day = Duration::from_secs(86_400);
        let spec = RootSpec {
            root: RoleSpec::single(key("tuf-root"), 365 * day),
            targets: RoleSpec::single(key("tuf-targets"), 30 * day),
            snapshot: RoleSpec::single(key("tuf-snapshot"), 7 * day),
            timestamp: RoleSpec::single(key("tuf-timestamp"), day),
        };
        let mut repo = Repository::init(&dir.join("repo-work"), spec).unwrap();
        let root_file = dir.join("root.json");
        std::fs::write(&root_file, repo.root_json()).unwrap();
        let good = image(6, 2);
        let flipped = image(6, 3);
        let mut served = flipped.clone();
        served[FLIPPED_CHUNK * CHUNK + 17] ^= 0x01;
        let mut releases = vec![
            (GOOD, manifest(&good, "2.0.0", 2, 2), &good),
            (OLD, manifest(&base, "1.0.0", 1, 1), &base),
        ];
        if with_flipped {
            releases.push((FLIPPED, manifest(&flipped, "3.0.0", 3, 3), &served));
        }
        for (name, m, img) in releases {
            let manifest_file = dir.join(format!("{name}.manifest.json"));
            std::fs::write(&manifest_file, sign(&m)).unwrap();
            let image_file = dir.join(format!("{name}.image"));
            std::fs::write(&image_file, img).unwrap();
            repo.add_target(&format!("{name}.manifest.json"), &manifest_file)
                .unwrap();
            repo.add_target(&format!("{name}.image"), &image_file)
                .unwrap();
        }
        let out = dir.join("www");
        repo.sign_and_publish(&out).unwrap();
        let server = Server::start(&out);
        Self {
            slot_a,
            slot_b,
            boot_file,
            key_file,
            root_file,
            base,
            good,
            flipped,
            old_digest: hex::encode(installed.digest()),
            server,
        }
    }

    /// The device's boot file with `[update]` pointing at this rig.
    fn file(&self, device: &Device) -> AgentFile {
        let mut file = device.file();
        file.update = Some(UpdateSection {
            compatible: HW.into(),
            slot_a: self.slot_a.clone(),
            slot_b: self.slot_b.clone(),
            boot: format!("file:{}", self.boot_file.display()),
            trusted_keys: vec![self.key_file.clone()],
            threshold: 1,
            repository: Some(UpdateRepository {
                metadata_url: self.server.url("metadata"),
                targets_url: self.server.url("targets"),
                root_file: self.root_file.clone(),
                ca_file: None,
            }),
            booted_slot: None,
            health_checks: Vec::new(),
            restart_command: None,
            measure_pcr: None,
        });
        file.validate().unwrap();
        file
    }

    fn boot(&self) -> FileBootControl {
        FileBootControl::open(&self.boot_file).unwrap()
    }

    fn record(&self, device: &Device, slot: SlotName) -> Option<Vec<u8>> {
        SlotRecords::new(&device.state_dir.join(agent::UPDATE_DIR))
            .unwrap()
            .load(slot)
            .unwrap()
    }
}

/// Starts the agent with `file` and claims the device; the connection is
/// logged in as the owner.
async fn start_claimed(device: &Device, file: AgentFile) -> (RunningAgent, SocketAddr, Client) {
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let owner = support::claimed(addr, device).await;
    (agent, addr, owner)
}

/// Starts the agent on a device claimed before (as after a power-on); a
/// new connection logged in as the owner.
async fn start_as_owner(device: &Device, file: AgentFile) -> (RunningAgent, Client) {
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    let owner = support::session(addr, &device.root(), "owner", OWNER_PASSWORD).await;
    (agent, owner)
}

async fn install(client: &mut Client, release: &str, password: Option<&str>) -> support::Reply {
    let mut body = json!({ "release": release });
    if let Some(p) = password {
        body["current_password"] = json!(p);
    }
    client
        .call(Method::POST, "/api/v1/update/install", Some(body))
        .await
}

async fn update_status(client: &mut Client) -> Value {
    let reply = client
        .call(Method::GET, "/api/v1/update/status", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

async fn create_account(owner: &mut Client, account: &str, role: &str, password: &str) {
    let created = owner
        .call(
            Method::POST,
            "/api/v1/accounts",
            Some(json!({
                "account": account,
                "role": role,
                "password": password,
                "current_password": OWNER_PASSWORD,
            })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}

/// The events the agent recorded (read after it stopped).
fn events(device: &Device) -> Vec<store::eventlog::Exported> {
    let store_dir = device.state_dir.join("store");
    let keystore = device.parts(device.file()).keystore;
    let store = store::Store::open(&store_dir, keystore).unwrap();
    store::eventlog::export(&store_dir, &store).unwrap()
}

/// Issue #5 must-hold: an install requested by a viewer, an operator or an
/// unauthenticated client is refused (401/403/403), even with their own
/// passwords re-entered, and so is the owner without the password; slot B
/// gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_by_viewer_operator_or_stranger_is_refused() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let (agent, addr, mut owner) = start_claimed(&device, rig.file(&device)).await;
    let root = device.root();
    support::create_viewer(&mut owner).await;
    create_account(&mut owner, "operator", "operator", OPERATOR_PASSWORD).await;
    let mut viewer = support::session(addr, &root, "viewer", VIEWER_PASSWORD).await;
    let mut operator = support::session(addr, &root, "operator", OPERATOR_PASSWORD).await;
    let mut stranger = Client::connect(addr, &root).await;

    let reply = install(&mut stranger, GOOD, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
    assert_error_body(&reply);
    let reply = install(&mut viewer, GOOD, Some(VIEWER_PASSWORD)).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "viewer: {:?}",
        reply.body
    );
    assert_eq!(reply.body["error"], "forbidden");
    let reply = install(&mut operator, GOOD, Some(OPERATOR_PASSWORD)).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "operator: {:?}",
        reply.body
    );
    assert_eq!(reply.body["error"], "forbidden");
    let reply = install(&mut owner, GOOD, None).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "owner without password: {:?}",
        reply.body
    );

    // Viewers may read the update status; nothing was written.
    let status = update_status(&mut viewer).await;
    assert_eq!(status["boot"]["trial"], Value::Null, "{status}");
    assert_eq!(status["slots"][1]["release"], Value::Null, "{status}");
    assert_eq!(status["last_install"], Value::Null, "{status}");
    assert!(!rig.slot_b.exists(), "slot B was written");
    assert_eq!(rig.record(&device, SlotName::B), None);
    let notes = support::notifications(&mut owner).await;
    assert!(
        notes.iter().all(|n| n["kind"] != "update_available"),
        "{notes:?}"
    );
    agent.shutdown().await;
}

/// The owner with the password installs a signed release from the TUF
/// repository: 200, slot B holds the image byte for byte, the boot loader
/// tries B once, the user was warned before the interruption; after the
/// simulated boot into B and an agent restart, the start-up check commits
/// B and raises the security floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_installs_a_signed_release_and_the_trial_commits_after_boot() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let file = rig.file(&device);
    let (agent, _, mut owner) = start_claimed(&device, file.clone()).await;

    let before = update_status(&mut owner).await;
    assert_eq!(before["configured"], true);
    assert_eq!(before["fail_safe"], false);
    assert_eq!(before["boot"]["active"], "a");
    assert_eq!(
        before["slots"][0]["release"]["version"], "1.0.0",
        "{before}"
    );
    assert_eq!(
        before["security_floor"], 1,
        "committed release raises the floor at start"
    );

    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["outcome"], "installed");
    assert_eq!(reply.body["version"], "2.0.0");
    assert_eq!(reply.body["slot"], "b");
    assert_eq!(std::fs::read(&rig.slot_b).unwrap(), rig.good);
    assert_eq!(
        std::fs::read(&rig.slot_a).unwrap(),
        rig.base,
        "active slot touched"
    );

    let status = update_status(&mut owner).await;
    assert_eq!(status["boot"]["active"], "a", "{status}");
    assert_eq!(status["boot"]["booted"], "a", "{status}");
    assert_eq!(status["boot"]["trial"]["slot"], "b", "{status}");
    assert_eq!(
        status["slots"][1]["release"]["version"], "2.0.0",
        "{status}"
    );
    assert_eq!(status["slots"][1]["release"]["security_version"], 2);
    assert_eq!(status["last_install"]["release"], GOOD);
    let notes = support::notifications(&mut owner).await;
    let warned = notes
        .iter()
        .find(|n| n["kind"] == "update_available")
        .unwrap_or_else(|| panic!("no update_available notification: {notes:?}"));
    assert_eq!(warned["severity"], "warning");
    assert_eq!(warned["detail"]["version"], "2.0.0");
    agent.shutdown().await;

    // Power-on: the boot loader tries B once.
    assert_eq!(rig.boot().boot().unwrap(), SlotName::B);
    let (agent, mut owner) = start_as_owner(&device, file).await;
    let after = update_status(&mut owner).await;
    assert_eq!(after["boot"]["active"], "b", "{after}");
    assert_eq!(after["boot"]["booted"], "b", "{after}");
    assert_eq!(after["boot"]["trial"], Value::Null, "{after}");
    assert_eq!(after["security_floor"], 2, "{after}");
    assert_eq!(after["fail_safe"], false);
    assert_eq!(rig.boot().state().unwrap().active, SlotName::B);
    // The next power-on stays on B.
    agent.shutdown().await;
    assert_eq!(rig.boot().boot().unwrap(), SlotName::B);

    let events = events(&device);
    let installed = events
        .iter()
        .find(|e| e.event.action == "update.install")
        .expect("install event");
    assert_eq!(installed.event.outcome, store::eventlog::Outcome::Success);
    assert!(
        installed.event.detail.contains(GOOD),
        "{:?}",
        installed.event
    );
    assert_eq!(installed.event.actor.as_deref(), Some("owner"));
    assert!(events.iter().any(|e| e.event.action == "update.commit"));
}

// The link drops after 3.5 chunks of the image: the install fails, the
// 3 whole chunks stay verified in slot B, and the next attempt asks for
// the rest with `Range` (the server counts what it sends) and the slot
// verifies.
#[tokio::test(flavor = "multi_thread")]
async fn image_download_cut_mid_way_resumes_with_range() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let (agent, _, mut owner) = start_claimed(&device, rig.file(&device)).await;

    let cut = 3 * CHUNK + CHUNK / 2;
    rig.server.images.lock().unwrap().cut_after = Some(cut);
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_ne!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(rig.server.take_served(), cut as u64);

    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["outcome"], "installed");
    assert_eq!(
        rig.server.take_served(),
        (rig.good.len() - 3 * CHUNK) as u64,
        "the second attempt fetches only what is not yet in the slot"
    );
    assert_eq!(std::fs::read(&rig.slot_b).unwrap(), rig.good);
    agent.shutdown().await;
}

/// An install started with `Prefer: respond-async` answers 202 at once
/// with the progress route as its Location; polling it (a viewer may)
/// shows the phases and counters only moving forward while the paced
/// download runs, a second install meanwhile is refused with 409, and the
/// outcome ends up in `last_install`, recorded under the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_install_reports_its_progress_until_it_ends() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let (agent, addr, mut owner) = start_claimed(&device, rig.file(&device)).await;
    support::create_viewer(&mut owner).await;
    let mut viewer = support::session(addr, &device.root(), "viewer", VIEWER_PASSWORD).await;

    let idle = viewer
        .call(Method::GET, "/api/v1/update/progress", None)
        .await;
    assert_eq!(idle.status, StatusCode::OK, "{:?}", idle.body);
    assert_eq!(idle.body["installing"], false);
    assert_eq!(idle.body["last_install"], Value::Null);

    rig.server.images.lock().unwrap().pace = Some(Duration::from_millis(150));
    let started = owner
        .raw(
            Method::POST,
            "/api/v1/update/install",
            &[
                ("content-type", "application/json"),
                ("prefer", "respond-async"),
            ],
            serde_json::to_vec(&json!({ "release": GOOD, "current_password": OWNER_PASSWORD }))
                .unwrap(),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    assert_eq!(started.headers["location"], "/api/v1/update/progress");
    assert_eq!(started.headers["preference-applied"], "respond-async");
    assert_eq!(started.body["installing"], true, "{:?}", started.body);
    assert_eq!(started.body["release"], GOOD);

    let second = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{:?}", second.body);

    let phases = [
        "preparing",
        "writing",
        "flushing",
        "verifying_slot",
        "marking",
        "done",
    ];
    let (mut phase, mut done, mut partial) = (0, 0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the install did not end"
        );
        let view = viewer
            .call(Method::GET, "/api/v1/update/progress", None)
            .await;
        assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
        if view.body["installing"] != true {
            break view.body["last_install"].clone();
        }
        let progress = &view.body["progress"];
        let now = phases
            .iter()
            .position(|p| progress["phase"] == *p)
            .unwrap_or_else(|| panic!("unknown phase in {progress}"));
        assert!(now >= phase, "the phase went back: {progress}");
        let chunks = progress["chunks_done"].as_u64().unwrap();
        assert!(chunks >= done, "chunks_done went back: {progress}");
        let total = progress["chunks_total"].as_u64().unwrap();
        partial |= chunks > 0 && chunks < total;
        (phase, done) = (now, chunks);
        tokio::time::sleep(Duration::from_millis(40)).await;
    };
    assert!(partial, "no poll saw the install part-way");
    assert_eq!(last["release"], GOOD, "{last}");
    assert_eq!(last["outcome"], "installed", "{last}");
    assert_eq!(last["slot"], "b");
    assert_eq!(std::fs::read(&rig.slot_b).unwrap(), rig.good);
    agent.shutdown().await;
    let events = events(&device);
    let installed = events
        .iter()
        .find(|e| e.event.action == "update.install")
        .expect("install event");
    assert_eq!(installed.event.outcome, store::eventlog::Outcome::Success);
    assert_eq!(installed.event.actor.as_deref(), Some("owner"));
}

async fn restart(client: &mut Client, password: Option<&str>) -> support::Reply {
    let body = match password {
        Some(p) => json!({ "current_password": p }),
        None => json!({}),
    };
    client
        .call(Method::POST, "/api/v1/update/restart", Some(body))
        .await
}

/// A restart command that appends a line to `marker` (a stand-in for
/// `systemctl reboot` that a test can observe).
fn restart_marker(file: &mut AgentFile, marker: &Path) {
    file.update.as_mut().unwrap().restart_command = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo restarted >> {}", marker.display()),
    ]);
    file.validate().unwrap();
}

/// Whether the restart command ran within `limit`; then gives it and the
/// task that ran it a moment to end (they hold the store open).
async fn restarted_within(marker: &Path, limit: Duration) -> bool {
    let ran = tokio::time::timeout(limit, async {
        while restarts(marker) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ran
}

/// A claimed device whose agent has a restart command that leaves a
/// marker, with `updates` settings `policy` in force.
async fn restart_rig(policy: Value) -> (Device, Rig, PathBuf, RunningAgent, Client) {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let marker = device.state_dir.join("restarted");
    let mut file = rig.file(&device);
    restart_marker(&mut file, &marker);
    let (agent, _, mut owner) = start_claimed(&device, file).await;
    let changed = support::put_settings(&mut owner, json!({ "updates": policy })).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    (device, rig, marker, agent, owner)
}

fn restarts(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// 5.2.7.2 b: the install does not interrupt the device by itself. With
/// `updates.restart` = `confirm` the user is told and the restart waits;
/// an operator cannot confirm it, the owner can (password re-entered),
/// and the restart command then runs once and is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_install_waits_for_the_owners_confirmation() {
    let (device, _rig, marker, agent, mut owner) = restart_rig(json!({"restart": "confirm"})).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    create_account(&mut owner, "operator", "operator", OPERATOR_PASSWORD).await;
    let mut operator = support::session(addr, &device.root(), "operator", OPERATOR_PASSWORD).await;
    let early = restart(&mut owner, Some(OWNER_PASSWORD)).await;
    assert_eq!(
        early.status,
        StatusCode::CONFLICT,
        "nothing installed yet: {:?}",
        early.body
    );

    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let status = update_status(&mut owner).await;
    assert_eq!(status["restart_pending"], true, "{status}");
    assert_eq!(status["restart_configured"], true, "{status}");
    let notes = support::notifications(&mut owner).await;
    let pending = notes
        .iter()
        .find(|n| n["kind"] == "restart_pending")
        .unwrap_or_else(|| panic!("no restart_pending notification: {notes:?}"));
    assert!(
        pending["title"]
            .as_str()
            .unwrap()
            .contains("confirm the restart"),
        "{pending}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(restarts(&marker), 0, "restarted without confirmation");

    let refused = restart(&mut operator, Some(OPERATOR_PASSWORD)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let refused = restart(&mut owner, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(restarts(&marker), 0);

    let accepted = restart(&mut owner, Some(OWNER_PASSWORD)).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    assert!(
        restarted_within(&marker, Duration::from_secs(10)).await,
        "the restart command did not run"
    );
    agent.shutdown().await;
    assert_eq!(restarts(&marker), 1);
    let events = events(&device);
    let restarted: Vec<_> = events
        .iter()
        .filter(|e| e.event.action == "update.restart")
        .collect();
    assert_eq!(restarted.len(), 2, "request and outcome: {restarted:?}");
    assert_eq!(restarted[0].event.actor.as_deref(), Some("owner"));
    assert_eq!(
        restarted[1].event.outcome,
        store::eventlog::Outcome::Success
    );
}

/// With the default `updates.restart` = `automatic`, the user is warned
/// `restart_notice_secs` ahead and the device then restarts on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_restart_comes_after_its_notice() {
    let (device, _rig, marker, agent, mut owner) =
        restart_rig(json!({"restart_notice_secs": 2})).await;
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let installed = std::time::Instant::now();
    let notes = support::notifications(&mut owner).await;
    let pending = notes
        .iter()
        .find(|n| n["kind"] == "restart_pending")
        .unwrap_or_else(|| panic!("no restart_pending notification: {notes:?}"));
    assert!(
        pending["title"]
            .as_str()
            .unwrap()
            .contains("restarts in 2 s"),
        "{pending}"
    );
    assert_eq!(pending["detail"]["restart_in_secs"], 2);
    assert_eq!(restarts(&marker), 0, "restarted before the notice ran out");
    assert!(
        restarted_within(&marker, Duration::from_secs(15)).await,
        "the automatic restart did not happen"
    );
    assert!(installed.elapsed() >= Duration::from_millis(1500));
    agent.shutdown().await;
    assert!(
        events(&device)
            .iter()
            .any(|e| e.event.action == "update.restart"
                && e.event.outcome == store::eventlog::Outcome::Success)
    );
}

/// A metered link: an install that would download more than
/// `updates.data_budget_bytes` is refused before any image byte is
/// fetched or the user is told of an interruption; within the budget it
/// goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_over_the_data_budget_is_refused_before_downloading() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let (agent, _, mut owner) = start_claimed(&device, rig.file(&device)).await;
    let budget = rig.good.len() as u64 - 1;
    let changed = support::put_settings(
        &mut owner,
        json!({"updates": {"data_budget_bytes": budget}}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let refused = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    let message = refused.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("data_budget_bytes") && message.contains(&rig.good.len().to_string()),
        "{message}"
    );
    assert_eq!(rig.server.take_served(), 0, "image bytes fetched");
    assert!(!rig.slot_b.exists(), "slot B was written");
    assert!(
        support::notifications(&mut owner)
            .await
            .iter()
            .all(|n| n["severity"] != "warning"),
        "the user was warned of an install that did not happen"
    );
    let changed = support::put_settings(
        &mut owner,
        json!({"updates": {"data_budget_bytes": rig.good.len()}}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(rig.server.take_served(), rig.good.len() as u64);
    agent.shutdown().await;
}

/// A trial that verifies but fails a configured health check is not
/// committed: the agent reports it (fail-safe, with the check's evidence),
/// the floor stays, and the next power-on returns to slot A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_failing_its_health_check_is_abandoned() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let file = rig.file(&device);
    let (agent, _, mut owner) = start_claimed(&device, file.clone()).await;
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    agent.shutdown().await;

    let mut unhealthy = file.clone();
    unhealthy.update.as_mut().unwrap().health_checks = vec![agent_config::HealthCheckSection {
        name: "broker".into(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo 'broker not listening' >&2; exit 1".into(),
        ],
        timeout_secs: 10,
    }];
    unhealthy.validate().unwrap();
    assert_eq!(rig.boot().boot().unwrap(), SlotName::B);
    let (agent, mut owner) = start_as_owner(&device, unhealthy).await;
    let after = update_status(&mut owner).await;
    assert_eq!(after["fail_safe"], true, "{after}");
    let finding = after["integrity_failure"].as_str().unwrap_or_default();
    assert!(
        finding.contains("`broker` failed") && finding.contains("broker not listening"),
        "{after}"
    );
    assert_eq!(after["security_floor"], 1, "{after}");
    assert_eq!(rig.boot().state().unwrap().active, SlotName::A);
    agent.shutdown().await;
    assert_eq!(rig.boot().boot().unwrap(), SlotName::A);
}

/// A release whose image has one byte flipped (the TUF metadata is
/// consistent with the flipped image, so only the signed manifest's chunk
/// hashes can catch it) is refused with 400 naming the chunk; slot B gets
/// no record and no trial mark, and the bad chunk never reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_with_a_flipped_byte_is_refused_at_its_chunk_and_slot_b_stays_unbootable() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let (agent, _, mut owner) = start_claimed(&device, rig.file(&device)).await;

    let reply = install(&mut owner, FLIPPED, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    assert_eq!(reply.body["error"], "release-refused");
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("chunk {FLIPPED_CHUNK} ")),
        "{message}"
    );
    assert_eq!(
        rig.record(&device, SlotName::B),
        None,
        "slot B has a record"
    );
    assert_eq!(rig.boot().state().unwrap().tried, None, "slot B marked");
    let written = std::fs::read(&rig.slot_b).unwrap_or_default();
    let bad = FLIPPED_CHUNK * CHUNK..(FLIPPED_CHUNK + 1) * CHUNK;
    assert!(
        written.get(bad.clone()) != rig.flipped.get(bad.clone())
            || written.get(bad.clone()).is_none(),
        "chunk {FLIPPED_CHUNK} reached the slot"
    );
    let status = update_status(&mut owner).await;
    assert_eq!(status["last_install"]["outcome"], "failed", "{status}");
    assert_eq!(status["slots"][1]["release"], Value::Null, "{status}");

    // A release the repository does not list: 404; a bad name: 400.
    let reply = install(&mut owner, "9.9.9", Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:?}", reply.body);
    let reply = install(&mut owner, "../etc", Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);

    // The good release still installs afterwards.
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(std::fs::read(&rig.slot_b).unwrap(), rig.good);
    agent.shutdown().await;
    let failed = events(&device)
        .into_iter()
        .find(|e| e.event.action == "update.install")
        .expect("install event");
    assert_eq!(failed.event.outcome, store::eventlog::Outcome::Failure);
    assert!(failed.event.detail.contains(FLIPPED), "{:?}", failed.event);
}

/// Issue #5 must-hold, fail-safe: the running slot's image is corrupted;
/// the agent starts in fail-safe mode (status says so with the finding, a
/// critical integrity_failure notification, an Alert event, every other
/// route 503 `fail-safe`, the maintenance listener closed), and recovers
/// after a valid release is installed, booted and verified at the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_running_slot_enters_fail_safe_until_a_valid_release_is_installed() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let mut corrupted = rig.base.clone();
    corrupted[2 * CHUNK + 5] ^= 0x80;
    std::fs::write(&rig.slot_a, &corrupted).unwrap();
    let mut file = rig.file(&device);
    file.api.maintenance_listen = Some("127.0.0.1:0".parse().unwrap());
    file.interfaces.maintenance_api = true;

    let agent = device.start_with(file.clone()).await;
    assert_eq!(
        agent.local_addr(agent::MAINTENANCE_API).await,
        None,
        "maintenance listener open in fail-safe mode"
    );
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    // Claim and login are on the allow-list.
    let mut owner = support::claimed(addr, &device).await;
    let status = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["fail_safe"], true, "{:?}", status.body);
    let finding = status.body["integrity_failure"].as_str().unwrap();
    assert!(
        finding.contains("slot a differs from its release at chunk 2"),
        "{finding}"
    );
    for (method, path) in [
        (Method::GET, "/api/v1/config"),
        (Method::GET, "/api/v1/accounts"),
        (Method::GET, "/api/v1/interfaces"),
        (Method::GET, "/api/v1/disclosure"),
    ] {
        let reply = owner.call(method.clone(), path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert_eq!(reply.body["error"], "fail-safe", "{method} {path}");
    }
    // The anti-rollback override is not a recovery route.
    let reply = danger_rollback(
        &mut owner,
        OLD,
        Some(OWNER_PASSWORD),
        Some(rig.old_digest.as_str()),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        reply.body
    );
    let update = update_status(&mut owner).await;
    assert_eq!(update["fail_safe"], true);
    let notes = support::notifications(&mut owner).await;
    let alert = notes
        .iter()
        .find(|n| n["kind"] == "integrity_failure")
        .unwrap_or_else(|| panic!("no integrity_failure notification: {notes:?}"));
    assert_eq!(alert["severity"], "critical");
    assert!(
        alert["detail"]["finding"]
            .as_str()
            .unwrap()
            .contains("chunk 2")
    );
    // The document says so too.
    let doc = owner.call(Method::GET, "/api/v1/openapi.json", None).await;
    assert!(doc.body["paths"]["/api/v1/config"]["get"]["responses"]["503"].is_object());
    assert!(doc.body["paths"]["/api/v1/status"]["get"]["responses"]["503"].is_null());

    // Recovery: install a valid release over the recovery channel.
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    agent.shutdown().await;
    let alert_event = events(&device)
        .into_iter()
        .find(|e| e.event.action == "update.integrity")
        .expect("integrity event");
    assert_eq!(alert_event.event.severity, store::eventlog::Severity::Alert);
    assert_eq!(alert_event.event.outcome, store::eventlog::Outcome::Failure);

    assert_eq!(rig.boot().boot().unwrap(), SlotName::B);
    let agent = device.start_with(file).await;
    let addr = agent.local_addr(agent::MANAGEMENT_API).await.unwrap();
    assert!(
        agent.local_addr(agent::MAINTENANCE_API).await.is_some(),
        "maintenance listener closed after recovery"
    );
    let mut owner = support::session(addr, &device.root(), "owner", OWNER_PASSWORD).await;
    let status = owner.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status.body["fail_safe"], false, "{:?}", status.body);
    assert_eq!(status.body["integrity_failure"], Value::Null);
    let config = owner.call(Method::GET, "/api/v1/config", None).await;
    assert_eq!(config.status, StatusCode::OK, "{:?}", config.body);
    let update = update_status(&mut owner).await;
    assert_eq!(update["boot"]["active"], "b", "{update}");
    assert_eq!(update["slots"][1]["release"]["version"], "2.0.0");
    agent.shutdown().await;
}

async fn check(client: &mut Client) -> Value {
    let reply = client
        .call(Method::POST, "/api/v1/update/check", None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

/// The `update_available` notifications raised so far.
async fn available_notes(client: &mut Client) -> Vec<Value> {
    support::notifications(client)
        .await
        .into_iter()
        .filter(|n| n["kind"] == "update_available")
        .collect()
}

/// A maintenance window that is closed now: one hour, two days from
/// today (UTC).
fn closed_window() -> Value {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let today = time::OffsetDateTime::now_utc()
        .weekday()
        .number_days_from_monday();
    json!({ "days": [DAYS[(usize::from(today) + 2) % 7]], "start": "01:00", "end": "02:00" })
}

/// Issue #5 item 6: `POST /api/v1/update/check` finds the newest release
/// that verifies for the device (3.0.0, above the running 1.0.0) and
/// announces it with exactly one `update_available` notification, even
/// when called twice; outside the maintenance window nothing is
/// installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_check_announces_a_newer_release_once_and_waits_for_the_window() {
    let device = Device::provision();
    let rig = Rig::new_blocking(&device);
    let (agent, addr, mut owner) = start_claimed(&device, rig.file(&device)).await;
    let changed =
        support::put_settings(&mut owner, json!({"updates": {"window": closed_window()}})).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);

    for _ in 0..2 {
        let found = check(&mut owner).await;
        assert_eq!(found["newest"]["release"], FLIPPED, "{found}");
        assert_eq!(found["newest"]["version_code"], 3, "{found}");
        assert_eq!(found["installed_version_code"], 1, "{found}");
        assert_eq!(found["available"], true, "{found}");
        assert_eq!(found["automatic_install"], Value::Null, "{found}");
    }
    let notes = available_notes(&mut owner).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["severity"], "info");
    assert_eq!(notes[0]["detail"]["release"], FLIPPED);
    assert_eq!(notes[0]["detail"]["version_code"], 3);

    assert!(!rig.slot_b.exists(), "slot B was written");
    assert_eq!(rig.boot().state().unwrap().tried, None);
    assert_eq!(update_status(&mut owner).await["last_install"], Value::Null);

    // A viewer may not run checks.
    support::create_viewer(&mut owner).await;
    let mut viewer = support::session(addr, &device.root(), "viewer", VIEWER_PASSWORD).await;
    let reply = viewer
        .call(Method::POST, "/api/v1/update/check", None)
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    agent.shutdown().await;
}

/// With `updates.install` = `manual` a check announces the newer release
/// but installs nothing; back on the automatic default, the next check
/// installs it through the engine (slot B, trial boot), recorded with the
/// actor `system`, and does not announce it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_check_installs_nothing_when_install_is_manual_and_installs_when_automatic() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let (agent, _, mut owner) = start_claimed(&device, rig.file(&device)).await;
    let changed =
        support::put_settings(&mut owner, json!({"updates": {"install": "manual"}})).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);

    let found = check(&mut owner).await;
    assert_eq!(found["newest"]["release"], GOOD, "{found}");
    assert_eq!(found["available"], true, "{found}");
    assert_eq!(found["automatic_install"], Value::Null, "{found}");
    assert!(!rig.slot_b.exists(), "slot B was written");
    assert_eq!(rig.boot().state().unwrap().tried, None);
    assert_eq!(rig.record(&device, SlotName::B), None);
    assert_eq!(update_status(&mut owner).await["last_install"], Value::Null);
    assert_eq!(available_notes(&mut owner).await.len(), 1);

    let changed = support::put_settings(&mut owner, json!({})).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let found = check(&mut owner).await;
    assert_eq!(
        found["automatic_install"]["outcome"], "installed",
        "{found}"
    );
    assert_eq!(found["automatic_install"]["slot"], "b", "{found}");
    assert_eq!(std::fs::read(&rig.slot_b).unwrap(), rig.good);
    assert_eq!(
        rig.boot().state().unwrap().tried.map(|(slot, _)| slot),
        Some(SlotName::B)
    );
    // The announcement once, then the warning before the interruption.
    let notes = available_notes(&mut owner).await;
    let severities: Vec<_> = notes.iter().map(|n| n["severity"].clone()).collect();
    assert_eq!(severities, [json!("info"), json!("warning")], "{notes:?}");
    agent.shutdown().await;

    let installed = events(&device)
        .into_iter()
        .find(|e| e.event.action == "update.install")
        .expect("install event");
    assert_eq!(installed.event.outcome, store::eventlog::Outcome::Success);
    assert_eq!(installed.event.actor.as_deref(), Some("system"));
    assert!(
        installed.event.detail.contains(GOOD),
        "{:?}",
        installed.event
    );
}

async fn danger_rollback(
    client: &mut Client,
    release: &str,
    password: Option<&str>,
    acknowledge: Option<&str>,
) -> support::Reply {
    let mut body = json!({ "release": release });
    if let Some(p) = password {
        body["current_password"] = json!(p);
    }
    if let Some(a) = acknowledge {
        body["acknowledge_manifest_sha256"] = json!(a);
    }
    client
        .call(Method::POST, "/api/v1/update/danger_rollback", Some(body))
        .await
}

/// Issue #5 item 5: with 2.0.0 committed (floor 2), the ordinary install
/// of 1.0.0 is refused as a rollback, before and after the override; the
/// owner, password re-entered and the manifest digest acknowledged,
/// installs it through `danger_rollback`; the override is in the event
/// log at `alert` severity with who, which release, its security version
/// and the floor, and raised a critical `security_alert`; the device
/// boots 1.0.0, commits it without fail-safe mode, keeps it across a
/// restart, and the floor stays 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_overrides_anti_rollback_for_one_release_through_the_audited_danger_route() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let file = rig.file(&device);
    let (agent, _, mut owner) = start_claimed(&device, file.clone()).await;
    let reply = install(&mut owner, GOOD, Some(OWNER_PASSWORD)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    agent.shutdown().await;
    assert_eq!(rig.boot().boot().unwrap(), SlotName::B);

    let (agent, mut owner) = start_as_owner(&device, file.clone()).await;
    let status = update_status(&mut owner).await;
    assert_eq!(status["boot"]["active"], "b", "{status}");
    assert_eq!(status["security_floor"], 2, "{status}");

    let refused = install(&mut owner, OLD, Some(OWNER_PASSWORD)).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"], "release-refused");
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("rollback refused"), "{message}");
    // Without the acknowledgement, or with another digest: refused, and
    // the refusal names the digest to acknowledge.
    for acknowledge in [None, Some("00".repeat(32))] {
        let reply = danger_rollback(
            &mut owner,
            OLD,
            Some(OWNER_PASSWORD),
            acknowledge.as_deref(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&rig.old_digest) && message.contains("security version 1"),
            "{message}"
        );
    }
    assert_eq!(rig.boot().state().unwrap().tried, None, "slot A marked");

    let reply = danger_rollback(
        &mut owner,
        OLD,
        Some(OWNER_PASSWORD),
        Some(rig.old_digest.to_uppercase().as_str()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["outcome"], "installed");
    assert_eq!(reply.body["version"], "1.0.0");
    assert_eq!(reply.body["slot"], "a");
    assert_eq!(std::fs::read(&rig.slot_a).unwrap(), rig.base);
    let status = update_status(&mut owner).await;
    assert_eq!(status["boot"]["trial"]["slot"], "a", "{status}");
    assert_eq!(status["security_floor"], 2, "{status}");
    let notes = support::notifications(&mut owner).await;
    let alert = notes
        .iter()
        .find(|n| n["kind"] == "security_alert")
        .unwrap_or_else(|| panic!("no security_alert notification: {notes:?}"));
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["detail"]["manifest_sha256"], rig.old_digest.as_str());
    assert_eq!(alert["detail"]["security_floor"], 2);
    // The grant does not open the ordinary route to the same release.
    let refused = install(&mut owner, OLD, Some(OWNER_PASSWORD)).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    agent.shutdown().await;

    // Power-on: the trial of 1.0.0 verifies below the floor under the
    // waiver and is committed; the floor stays 2.
    assert_eq!(rig.boot().boot().unwrap(), SlotName::A);
    for _ in 0..2 {
        let (agent, mut owner) = start_as_owner(&device, file.clone()).await;
        let after = update_status(&mut owner).await;
        assert_eq!(after["fail_safe"], false, "{after}");
        assert_eq!(after["boot"]["active"], "a", "{after}");
        assert_eq!(after["boot"]["booted"], "a", "{after}");
        assert_eq!(after["boot"]["trial"], Value::Null, "{after}");
        assert_eq!(after["slots"][0]["release"]["version"], "1.0.0", "{after}");
        assert_eq!(after["security_floor"], 2, "{after}");
        agent.shutdown().await;
        // The next power-on stays on A.
        assert_eq!(rig.boot().boot().unwrap(), SlotName::A);
    }

    let events = events(&device);
    let audited = events
        .iter()
        .find(|e| e.event.action == "update.danger_rollback")
        .expect("danger_rollback event");
    assert_eq!(audited.event.severity, store::eventlog::Severity::Alert);
    assert_eq!(audited.event.actor.as_deref(), Some("owner"));
    let detail = &audited.event.detail;
    for part in [
        "release 1.0.0",
        "security version 1",
        "security floor at 2",
        rig.old_digest.as_str(),
    ] {
        assert!(detail.contains(part), "{part:?} missing: {detail}");
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.action == "update.danger_rollback")
            .count(),
        1,
        "refused attempts were recorded as overrides"
    );
    // Both start-ups say that 1.0.0 runs under the waiver: the commit of
    // its trial, then the check of the committed slot.
    for action in ["update.commit", "update.integrity"] {
        let started = events
            .iter()
            .rev()
            .find(|e| e.event.action == action && e.event.detail.contains("release 1.0.0"))
            .unwrap_or_else(|| panic!("no {action} event for 1.0.0"));
        assert!(
            started.event.detail.contains("rollback waiver"),
            "{action}: {}",
            started.event.detail
        );
        assert_eq!(started.event.severity, store::eventlog::Severity::Warning);
    }
}

/// Issue #5 item 5: the override is the owner's alone. A service granted
/// `install-update` (which the ordinary routes accept from it), an
/// operator, a viewer and an unauthenticated client are refused, even
/// with the right digest; so is the owner without the password. Nothing
/// is written, no waiver is stored, nothing is recorded as an override.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danger_rollback_is_refused_to_services_operators_and_the_owner_without_password() {
    let device = Device::provision();
    let rig = Rig::good_only_blocking(&device);
    let anchor = device.path().join("service-ca.pem");
    std::fs::write(&anchor, identity::x509::to_pem(device.root().as_ref())).unwrap();
    let mut file = rig.file(&device);
    file.tls.service_anchors = vec![anchor];
    file.services = vec![agent_config::ServiceEntry {
        identity: "updater-1".to_owned(),
        grants: vec!["install-update".to_owned()],
    }];
    file.validate().unwrap();
    let (agent, addr, mut owner) = start_claimed(&device, file).await;
    let root = device.root();
    support::create_viewer(&mut owner).await;
    create_account(&mut owner, "operator", "operator", OPERATOR_PASSWORD).await;
    let mut viewer = support::session(addr, &root, "viewer", VIEWER_PASSWORD).await;
    let mut operator = support::session(addr, &root, "operator", OPERATOR_PASSWORD).await;
    let mut stranger = Client::connect(addr, &root).await;
    let updater = support::service_identity(&device.ca, device.path(), "updater-1");
    let mut service =
        Client::connect_with(addr, support::client_config(&root, Some(&updater))).await;
    let digest = Some(rig.old_digest.as_str());

    // The service's grant is real: the ordinary routes take it (a check,
    // with installs left to people so that nothing is written).
    let changed =
        support::put_settings(&mut owner, json!({"updates": {"install": "manual"}})).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let checked = service
        .call(Method::POST, "/api/v1/update/check", None)
        .await;
    assert_eq!(checked.status, StatusCode::OK, "{:?}", checked.body);
    let reply = danger_rollback(&mut service, OLD, None, digest).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "service: {:?}",
        reply.body
    );
    assert_error_body(&reply);
    let reply = danger_rollback(&mut stranger, OLD, Some(OWNER_PASSWORD), digest).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
    for (who, client, password) in [
        ("operator", &mut operator, OPERATOR_PASSWORD),
        ("viewer", &mut viewer, VIEWER_PASSWORD),
    ] {
        let reply = danger_rollback(client, OLD, Some(password), digest).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{who}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["error"], "forbidden", "{who}");
    }
    let reply = danger_rollback(&mut owner, OLD, None, digest).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "owner without password: {:?}",
        reply.body
    );

    let status = update_status(&mut owner).await;
    assert_eq!(status["boot"]["trial"], Value::Null, "{status}");
    assert_eq!(status["security_floor"], 1, "{status}");
    assert!(!rig.slot_b.exists(), "slot B was written");
    assert!(
        !device
            .state_dir
            .join(agent::UPDATE_DIR)
            .join(update::waiver::FILE_NAME)
            .exists(),
        "a waiver was stored"
    );
    agent.shutdown().await;
    assert!(
        events(&device)
            .iter()
            .all(|e| e.event.action != "update.danger_rollback"),
        "a refused caller was recorded as overriding anti-rollback"
    );
}
